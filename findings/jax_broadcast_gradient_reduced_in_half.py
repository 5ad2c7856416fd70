"""JAX's gradient of a broadcast (a bias's gradient) sums in the half type: float16 and bfloat16 reductions accumulate
in the half type, where jnp.sum and every dot accumulate in float32

Checked with: jax 0.10.2, jaxlib 0.10.2 (CPU), ml_dtypes, numpy 2.4.6, Python 3.11.

Expected: the cotangent of b in x + b (x of shape (N, K), b of shape (K,)) is the sum of the output's cotangent over
the N rows, accumulated in float32 and rounded once to the half type, as jnp.sum does with the same half operands
(jax upcasts half reductions for computation), and as every dot does (float32 accumulation on this CPU).

Actual: the transpose of broadcast_in_dim is lax.reduce_sum in the operand's type (allowed by the default
jax_allow_f16_reductions = True), so the bias gradient accumulates in float16 / bfloat16: on N = 200 rows of normal
values it differs from the float32 sum rounded once at most of the K = 128 columns, and its worst error is several
times that of the correctly rounded sum. In an LSTM this is the gradient of b summed over every step and batch row
(jax/lax.scan's input projection x W + b): on the suite's 25-step float16 case its bias gradient leaves
half-every-operation's bounds (mean 3.0 ulps, bound 2.9), and the spec under that policy with this one sum in
float16 reproduces its statistics (mean 2.7, worst 29 ulps against 30.7).

Upstream: related, not this rule: jax-ml/jax#27496 (gradient reductions in half precision under data parallelism,
open), jax-ml/jax#38885 (jnp.max's VJP sums in bfloat16; names the jax_allow_f16_reductions check in
_reduce_sum_dtype_rule); none found for the broadcast transpose itself (searched jax-ml/jax issues, 2026-12-07).
"""

import sys

try:
    import jax
    import jax.numpy as jnp
    import ml_dtypes
    import numpy as np
except ImportError as error:
    print(f"this reproducer needs jax: {error}")
    sys.exit(77)

N, K = 200, 128
rng = np.random.default_rng(0)
print(f"jax {jax.__version__}")
reproduced = True
for dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)):
    x = rng.standard_normal((N, K)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    ct = rng.standard_normal((N, K)).astype(dtype)
    bias_gradient = jax.jit(lambda b, x=x, ct=ct: jax.vjp(lambda b: x + b, b)[1](ct)[0])
    got = np.asarray(bias_gradient(b)).astype(np.float64)
    exact = ct.astype(np.float64).sum(axis=0)
    float32_sum = exact.astype(np.float32).astype(dtype).astype(np.float64)  # the exact sum, rounded once
    jnp_sum = np.asarray(jax.jit(lambda c: jnp.sum(c, axis=0))(ct)).astype(np.float64)
    differ = int(np.count_nonzero(got != float32_sum))
    worst, worst_rounded = np.abs(got - exact).max(), np.abs(float32_sum - exact).max()
    print(f"{dtype.name}: the bias gradient differs from the sum rounded once at {differ} of {K} columns; worst error "
          f"{worst:.3g} (rounded once: {worst_rounded:.3g}); jnp.sum differs at "
          f"{int(np.count_nonzero(jnp_sum != float32_sum))}")
    reproduced &= differ > K // 4 and worst > 2 * worst_rounded
print("REPRODUCED: jax sums a broadcast's gradient in the half type" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
