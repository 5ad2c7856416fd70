"""How close an implementation must come to the spec: one table per dtype, for outputs and for gradients.

The same table judges every case, the cell's (one layer) and the layer's (stacks of up to 3 layers of cells:
layer l's output carries its cells' rounding into layer l + 1 as input error, which the next cell passes on,
contracting in time, so L layers err at most about L times a cell). It is part of the contract: the suite,
the porting command's proof, the benchmarks' correctness check and the training runs all read it.

Every comparison is elementwise, |got - spec| <= atol + rtol * |spec|, with
the spec computed in float64 on the same data (float32 data widened exactly),
so the error measured is the implementation's own rounding. No tolerance
scales with the problem's size: one table covers every case the suite runs.

Where the error comes from (eps = the dtype's machine epsilon, n = I + H):

- A pre-activation z = W x_t + U h_{t-1} + b sums n products. Its rounding
  error is at most about n * eps * sum |w v| and, with errors of random sign,
  typically sqrt(n) * eps * |terms|; which order the BLAS kernel sums in
  changes the error, not its size.
- sigma' <= 1/4 and tanh' <= 1: the gates carry the pre-activations' errors,
  not more.
- The cell state c_t = f_t c_{t-1} + i_t g_t carries its error forward times
  f_t < 1: the errors of past steps decay unless the forget gates saturate at
  1, where they add up, at worst linearly in T. h_t = o_t tanh(c_t) inherits
  c_t's error.
- Gradients run the recurrence backwards and then sum over all T * B steps
  and rows (dW, dU, db), so they carry a further factor of about sqrt(T * B).

Measured (conformance/ --seeds 20 --large: every built-in implementation,
every case including T = 512, 20 seeds each; see ``MEASURED``): on the
default cases the worst errors are below 20 eps for outputs and a few hundred
eps for gradients; 512 steps multiply them by 10 to 30, as the model above
predicts. Every tolerance sits at least 14x above the worst error of the
default cases (and 3x above the worst of the long ones), and orders of
magnitude below what any mutant (conformance/mutants.py) produces: the
smallest of them moves a result by about 1e-3.

The cases keep float32 well conditioned on purpose: the saturating case
scales W and b, not the recurrent and peephole weights, which would amplify
rounding at every step (spec/cases.py, Case.weight_scale).

TF32: NVIDIA GPUs from Ampere on may compute float32 matrix products with 10
mantissa bits (unit roundoff 2^-11 = 4.9e-4), about 4000 times eps32.
Outputs would then be off by around 1e-3, which fails the float32 tolerance by
two orders of magnitude: the adapters switch TF32 off and the report records
that it is off. An implementation that must use TF32 needs its own table.

Half types (bfloat16, float16) are not judged by a tolerance of this table but by the bounds of the precision policy
a row declares, derived per case from the policy's equally valid evaluations: contract/half_bounds.py (the
derivation and its reasoning) and contract/half_bounds.json (the table, re-derived by ``python -m
contract.half_bounds``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    reason: str


EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float64", "outputs"): Tolerance(
        atol=1e-13,
        rtol=1e-13,
        reason="float64 implementations differ from the spec only in the order of their roundings: "
        "at most 17 eps64 on the default cases and 450 eps64 (1e-13 near |c| = 1) after 512 steps; "
        "the margin is 34x and 80x, and a float64 request computed in float32 misses by a million",
    ),
    ("float64", "gradients"): Tolerance(
        atol=1e-12,
        rtol=1e-12,
        reason="gradients run the recurrence backwards and sum over T * B: at most 210 eps64 on the "
        "default cases and 1200 eps64 after 512 steps; margins 21x and 17x",
    ),
    ("float32", "outputs"): Tolerance(
        atol=2e-5,
        rtol=2e-5,
        reason="float32 rounds at eps32 = 1.2e-7 per operation: at most 14 eps32 on the default cases and "
        "410 eps32 on |c| > 1 after 512 steps; margins 14x and 33x",
    ),
    ("float32", "gradients"): Tolerance(
        atol=2e-4,
        rtol=2e-4,
        reason="float32 gradients of T * B summed steps: at most 380 eps32 on the default cases (margin 26x) "
        "and 2900 eps32 after 512 steps (margin 3.1x, the tightest of the table)",
    ),
}

#: Measured on the layer's cases (2026-11-23): float32, the spec computing in float32 on the rounded data against
#: float64, every layer case with 20 seeds (it rounds in the same order as float64: frameworks add their own orders,
#: as the cell's sweep measured); float64, PyTorch's nn.LSTM against the spec (projection, stacks, bidirectional,
#: packed sequences). The cell's bound holds there with the margins below.
LAYER_MEASURED = {
    ("float32", "outputs"): "1.8 eps32 worst (margin 112x)",
    ("float32", "gradients"): "10 eps32 worst (margin 169x)",
    ("float64", "outputs"): "2.8e-16 worst against PyTorch (margin 357x)",
    ("float64", "gradients"): "4.4e-15 worst against PyTorch (margin 227x)",
}

TOLERANCES = {key: Tolerance(t.atol, t.rtol, f"{t.reason}; on the layer's cases {LAYER_MEASURED[key]}")
              for key, t in TOLERANCES.items()}

#: The sweep behind the reasons above: python -m pytest conformance --seeds 20 --large (2026-11-22,
#: every built-in implementation on CPU, 7920 passing comparisons): (dtype, kind, cases) ->
#: (worst absolute error, smallest margin = tolerance / error at the worst element).
MEASURED: dict[tuple[str, str, str], tuple[float, float]] = {
    ("float32", "outputs", "default"): (1.7e-06, 14.0),
    ("float32", "outputs", "large"): (4.9e-05, 32.7),
    ("float32", "gradients", "default"): (4.6e-05, 25.6),
    ("float32", "gradients", "large"): (3.5e-04, 3.1),
    ("float64", "outputs", "default"): (3.7e-15, 34.4),
    ("float64", "outputs", "large"): (9.9e-14, 80.3),
    ("float64", "gradients", "default"): (4.7e-14, 21.2),
    ("float64", "gradients", "large"): (2.6e-13, 16.8),
}


#: A dynamically quantized row against the integer reference of its scheme (spec.quantized), on its float32 outputs:
#: the float32 table's tolerance for the float arithmetic both do (gates, cell state, bias), plus ``QUANTIZED_STEPS``
#: dequantization steps (the median s_a s_W of the run's products) for the integer side, where both must agree exactly:
#: one activation quantized one level apart moves a pre-activation by |W_q| steps (64 on average for int8 weights).
QUANTIZED_STEPS = 0.5
QUANTIZED_REASON = ("the float32 outputs tolerance for the float arithmetic, plus half a dequantization step (the median "
                    "s_a s_W of the run's products): the integer products must agree exactly, and one activation one "
                    "level apart moves a pre-activation by |W_q| steps; measured (2026-12-07, the four quantized rows "
                    "on every case they run): at most 0.034 steps, the smallest margin 151x")


def quantized_tolerance(step: float) -> Tolerance:
    """The tolerance of a quantized row's outputs whose products' median dequantization step is ``step``."""
    base = TOLERANCES[("float32", "outputs")]
    return Tolerance(base.atol + QUANTIZED_STEPS * step, base.rtol, QUANTIZED_REASON)


def tolerance(dtype: str, kind: str) -> Tolerance:
    try:
        return TOLERANCES[(str(dtype), str(kind))]
    except KeyError:
        raise KeyError(f"no tolerance for dtype {dtype!r}, {kind!r}; the table has {sorted(TOLERANCES)}") from None
