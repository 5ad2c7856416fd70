"""flax nn.RNN(seq_lengths=...) returns, for a row of length 0, the carry after all T steps instead of its initial carry

Checked with flax 0.12.8, jax/jaxlib 0.10.2, numpy 2.4.6 (CPU, float64 with jax_enable_x64).

Expected: nn.RNN(cell, return_carry=True) with seq_lengths documents the carry as "the state of the last valid
element of each sequence". A row of length 0 has no valid element: it should get back the carry it started with
(the initial carry), as TF1's dynamic_rnn(sequence_length) and a Keras layer whose mask covers the whole row do
(lstm-conformance's spec, rule (13): for L_b = 0 the final state is the initial state).

Actual: flax selects carry[seq_lengths - 1] (flax/linen/recurrent.py, _select_last_carry), which for 0 is index
-1: the carry after running the cell over all T steps of padding. With reverse=True the whole row is reversed and
run. Here h comes back 0.78 (forward) and 0.45 (reverse) off the initial state; it equals the carry of the same
RNN run without seq_lengths.

Upstream: none found (searched google/flax issues and pull requests for seq_lengths, length 0, empty sequence,
last carry; the selection dates from the RNN module, google/flax#2604).
"""

import sys

try:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
except ImportError as error:
    print(f"framework missing: {error} (pip install flax)")
    sys.exit(77)

jax.config.update("jax_enable_x64", True)
T, B, I, H = 5, 3, 3, 2
lengths = np.array([5, 2, 0])  # row 2 is empty
rng = np.random.default_rng(0)
x = rng.normal(size=(B, T, I))
c0, h0 = rng.normal(size=(B, H)), rng.uniform(-0.9, 0.9, size=(B, H))

found = False
for reverse in (False, True):
    rnn = nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64), return_carry=True, reverse=reverse, keep_order=True)
    variables = rnn.init(jax.random.key(0), x, initial_carry=(c0, h0))
    (c, h), _ = rnn.apply(variables, x, initial_carry=(c0, h0), seq_lengths=lengths)
    (c_all, h_all), _ = rnn.apply(variables, x, initial_carry=(c0, h0))  # no seq_lengths: all T steps
    off = float(np.max(np.abs(np.asarray(h)[2] - h0[2])))
    same_as_all_steps = np.allclose(np.asarray(h)[2], np.asarray(h_all)[2], rtol=0, atol=1e-12) and np.allclose(
        np.asarray(c)[2], np.asarray(c_all)[2], rtol=0, atol=1e-12)
    print(f"reverse={reverse}: row of length 0: h off the initial h by {off:.3g}; "
          f"equals the carry after all {T} steps: {same_as_all_steps}")
    print(f"  expected h {h0[2]}, got {np.asarray(h)[2]}")
    found |= off > 0.05 and same_as_all_steps

print("REPRODUCED" if found else "NOT REPRODUCED: flax returns the initial carry for rows of length 0 now")
sys.exit(0 if found else 1)
