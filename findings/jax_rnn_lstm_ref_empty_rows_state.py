"""jax.experimental.rnn.lstm_ref returns, for a row of length 0, the state after all T steps instead of its initial state

Checked with jax/jaxlib 0.10.2, numpy 2.4.6 (CPU, float64 with jax_enable_x64).

Expected: with seq_lengths, row b runs steps 0 .. L_b - 1 and h_n, c_n are its state after the last of them; a
row of length 0 runs no step, so h_n, c_n should be h_0, c_0 (TF1's dynamic_rnn(sequence_length), a Keras layer
masked throughout; lstm-conformance's spec, rule (13)). lstm_ref's outputs for that row are zeros, as expected.

Actual: lstm_ref selects carry[seq_lengths - 1] (jax/experimental/rnn.py, _select_last_carry), which for 0 is
index -1: the state after running the cell over all T steps unmasked (the reverse direction over the whole row
reversed; a layer above over the zero outputs below). Here h_n is 0.38 to 0.97 off h_0 in every one of the four
cells of a two-layer bidirectional LSTM, c_n 0.68 to 0.84 off c_0.

Upstream: none found (searched jax-ml/jax issues and pull requests for lstm_ref, seq_lengths, zero length; the
selection came with jax-ml/jax#15169, "Correctly handle seq_lengths in lstm_ref"). The cuDNN path (rnn.lstm) needs
a GPU and was not checked.
"""

import sys

try:
    import jax
    import numpy as np
    from jax.experimental import rnn
except ImportError as error:
    print(f"framework missing: {error} (pip install jax)")
    sys.exit(77)

jax.config.update("jax_enable_x64", True)
B, T, I, H, L, bidirectional = 4, 5, 3, 2, 2, True
D = 2
lengths = np.array([5, 2, 0, 3], np.int32)  # row 2 is empty
rng = np.random.default_rng(0)
x = rng.normal(size=(B, T, I))
h0 = rng.uniform(-0.9, 0.9, size=(L * D, B, H))
c0 = rng.normal(size=(L * D, B, H))
weights = rng.uniform(-0.6, 0.6, size=rnn.get_num_params_in_lstm(I, H, L, bidirectional))
W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, I, H, L, bidirectional)

y, h_n, c_n = (np.asarray(a) for a in rnn.lstm_ref(x, h0, c0, W_ih, W_hh, b_ih, b_hh, lengths, I, H, L, 0.0, bidirectional))
full = np.full(B, T, np.int32)  # every row runs all T steps
_, h_all, c_all = (np.asarray(a) for a in rnn.lstm_ref(x, h0, c0, W_ih, W_hh, b_ih, b_hh, full, I, H, L, 0.0, bidirectional))

b = 2
print(f"row {b} has length 0; its outputs are zero: {not y[b].any()}")  # y is batch-major (B, T, D * H)
found = not y[b].any()
for k in range(L * D):
    off_h = float(np.abs(h_n[k, b] - h0[k, b]).max())
    off_c = float(np.abs(c_n[k, b] - c0[k, b]).max())
    # Layer 0 of the all-T run saw the same inputs; above it, the row's input differs (zeros vs outputs).
    after_all = np.allclose(h_n[k, b], h_all[k, b], rtol=0, atol=1e-12) if k < D else None
    print(f"cell {k}: h_n expected h_0 {h0[k, b]}, got {h_n[k, b]} (off {off_h:.3g}); c_n off c_0 by {off_c:.3g}"
          + ("" if after_all is None else f"; equals the state after all {T} steps: {after_all}"))
    found &= off_h > 0.05 and after_all is not False

print("REPRODUCED" if found else "NOT REPRODUCED: lstm_ref returns the initial state for rows of length 0 now")
sys.exit(0 if found else 1)
