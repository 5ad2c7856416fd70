"""flax nn.RNN(seq_lengths=...) leaves the outputs at padded steps non-zero (documented)

Checked with flax 0.12.8, jax/jaxlib 0.10.2, numpy 2.4.6 (CPU, float64 with jax_enable_x64).

Expected: with sequence lengths, the steps t >= L_b of row b are padding: the LSTM layers of PyTorch
(pad_packed_sequence's padding_value, 0 by default), ONNX (Y is zero there), TF1's dynamic_rnn(sequence_length)
and jax.experimental.rnn.lstm_ref output zeros there (lstm-conformance's spec, rule (13)); the valid steps and the
final carry are those of the row run alone on its prefix.

Actual: flax runs the cell on through the padding inputs and keeps those outputs (forward: it consumes x_L .. x_{T-1}
after the row; reverse=True: x_{T-1} .. x_L after x_0), each at the position of the input it consumed. Its
docstring says so: "The output elements corresponding to padding elements are NOT zeroed out". The valid steps
and the carry of rows with L_b >= 1 are right. A model ported from PyTorch or ONNX gets different outputs past
each length, and any loss or layer that reads them (a pooling over time, a masked loss that relies on zeros)
differs; their cotangents reach the gradients.

Upstream: documented behaviour (flax.linen.RNN's docstring, since google/flax#2604); no issue asks to change it
(searched google/flax issues for seq_lengths, padding, zeroed).
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
lengths = np.array([5, 2, 3])
rng = np.random.default_rng(0)
x = rng.normal(size=(B, T, I))
carry = (rng.normal(size=(B, H)), rng.uniform(-0.9, 0.9, size=(B, H)))
padded = np.arange(T)[None, :] >= lengths[:, None]  # (B, T)

found = False
for reverse in (False, True):
    rnn = nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64), reverse=reverse, keep_order=True)
    variables = rnn.init(jax.random.key(0), x, initial_carry=carry)
    y = np.asarray(rnn.apply(variables, x, initial_carry=carry, seq_lengths=lengths))
    # The valid steps are right: row b alone on its prefix.
    valid_ok = all(
        np.allclose(y[b, : lengths[b]], np.asarray(rnn.apply(variables, x[b : b + 1, : lengths[b]],
                                                             initial_carry=(carry[0][b : b + 1], carry[1][b : b + 1])))[0],
                    rtol=0, atol=1e-12)
        for b in range(B)
    )
    largest = float(np.abs(y[padded]).max())
    print(f"reverse={reverse}: valid steps as the rows run alone: {valid_ok}; "
          f"padded steps: expected 0, largest |output| {largest:.3g}")
    found |= valid_ok and largest > 0.05

print("REPRODUCED" if found else "NOT REPRODUCED: flax zeroes the outputs at padded steps now")
sys.exit(0 if found else 1)
