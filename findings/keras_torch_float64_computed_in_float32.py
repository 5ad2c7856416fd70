"""Keras 3 on the PyTorch backend computes a float64 LSTM in float32 in its generic loop: RNN(LSTMCell), a masked LSTM

Checked with: Keras 3.15.1, torch 2.13.0+cpu, NumPy 2.4.6, CPU.

Expected: a float64 LSTM (dtype="float64", float64 weights, inputs and states) computes in float64: its
outputs agree with a float64 NumPy LSTM to about 1e-16, with or without a mask, through keras.layers.LSTM
or keras.layers.RNN(keras.layers.LSTMCell) (on Keras' TensorFlow backend: 1e-16 in every case).

Actual: keras.layers.LSTM without a mask runs the backend's own lstm() and is float64 (about 1e-16), but
RNN(LSTMCell(...)) and LSTM with a mask run LSTMCell.call step by step, whose keras.ops.matmul casts float64
operands to keras.backend.result_type("float64", "float64"), which is float32 on every backend but
TensorFlow (BIT64_TO_BIT32_DTYPE in keras/src/backend/common/dtypes.py): the outputs are float64 arrays
that carry float32 rounding, a few 1e-8 off.

Upstream: no issue found for float64 layers on the PyTorch backend (searched keras-team/keras issues). The
mapping came with https://github.com/keras-team/keras/pull/21604; https://github.com/keras-team/keras/pull/21693
("Fixes float64 type promotion issue") restored float64 for the TensorFlow backend only.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "torch"  # Keras reads it at its first import

try:
    import keras
    import numpy as np
    import torch
except ImportError as error:
    print(f"this reproducer needs keras and torch: {error}")
    sys.exit(77)

B, T, I, H = 3, 5, 4, 3
rng = np.random.default_rng(0)
kernel, recurrent_kernel, bias = rng.uniform(-0.5, 0.5, (I, 4 * H)), rng.uniform(-0.5, 0.5, (H, 4 * H)), rng.uniform(-0.5, 0.5, 4 * H)
x, h0, c0 = rng.normal(size=(B, T, I)), rng.uniform(-0.9, 0.9, (B, H)), rng.normal(size=(B, H))
mask = np.ones((B, T), bool)  # every step runs: the answer is the unmasked LSTM's


def numpy_lstm(x, h, c):
    """The LSTM in float64, Keras' layout: kernel (I, 4H), recurrent_kernel (H, 4H), gates i, f, g, o."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ys = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1)


def error(layer, **call) -> float:
    layer.build((None, T, I))
    layer.set_weights([kernel, recurrent_kernel, bias])
    y = keras.ops.convert_to_numpy(layer(x, initial_state=[h0, c0], **call))
    assert y.dtype == np.float64, y.dtype
    return float(np.max(np.abs(y - expected)))


print(f"keras {keras.__version__} (backend {keras.backend.backend()}), torch {torch.__version__}")
expected = numpy_lstm(x, h0, c0)
matmul_dtype = keras.ops.matmul(np.ones((2, 2)), np.ones((2, 2))).dtype
print(f"keras.ops.matmul(float64, float64).dtype = {matmul_dtype}")
errors = {
    "LSTM, no mask": error(keras.layers.LSTM(H, return_sequences=True, dtype="float64")),
    "LSTM, an all-true mask": error(keras.layers.LSTM(H, return_sequences=True, dtype="float64"), mask=mask),
    "RNN(LSTMCell)": error(keras.layers.RNN(keras.layers.LSTMCell(H, dtype="float64"), return_sequences=True, dtype="float64")),
}
for name, value in errors.items():
    print(f"{name}: max |keras - float64 NumPy LSTM| = {value:.3g} (float64: about 1e-16, float32: about 1e-8)")

reproduced = (matmul_dtype == torch.float32 and errors["LSTM, no mask"] < 1e-13
              and all(1e-10 < errors[k] < 1e-5 for k in ("LSTM, an all-true mask", "RNN(LSTMCell)")))
print("REPRODUCED: the generic loop computes float64 in float32" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
