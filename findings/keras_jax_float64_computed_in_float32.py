"""Keras 3 on the JAX backend computes a float64 LSTM in float32, even with jax_enable_x64 on

Checked with: Keras 3.15.1, jax/jaxlib 0.10.2, NumPy 2.4.6, CPU, JAX_ENABLE_X64=1.

Expected: keras.layers.LSTM(dtype="float64") with float64 weights, inputs and initial state computes in
float64: its outputs agree with a float64 NumPy LSTM to about 1e-16 (on Keras' TensorFlow backend: 1e-16).

Actual: the outputs are float64 arrays that carry float32 rounding, a few 1e-8 off the float64 answer (here 6e-8).
keras.ops.tanh casts its input to keras.backend.result_type(x.dtype, float), and result_type maps float64
to float32 on every backend but TensorFlow (BIT64_TO_BIT32_DTYPE in keras/src/backend/common/dtypes.py,
"to be aligned with JAX's default behavior", whatever jax_enable_x64 says): keras.ops.tanh of a float64
array returns float32. The same holds for keras.layers.RNN(keras.layers.LSTMCell(...)), rolled or unrolled.

Upstream: no issue found for float64 layers on the JAX backend (searched keras-team/keras issues). The
mapping came with https://github.com/keras-team/keras/pull/21604; https://github.com/keras-team/keras/pull/21693
("Fixes float64 type promotion issue") restored float64 for the TensorFlow backend only.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"  # Keras reads it at its first import
os.environ["JAX_ENABLE_X64"] = "1"  # without it jax itself truncates float64 to float32

try:
    import jax
    import keras
    import numpy as np
except ImportError as error:
    print(f"this reproducer needs keras and jax: {error}")
    sys.exit(77)

B, T, I, H = 3, 5, 4, 3
rng = np.random.default_rng(0)
kernel, recurrent_kernel, bias = rng.uniform(-0.5, 0.5, (I, 4 * H)), rng.uniform(-0.5, 0.5, (H, 4 * H)), rng.uniform(-0.5, 0.5, 4 * H)
x, h0, c0 = rng.normal(size=(B, T, I)), rng.uniform(-0.9, 0.9, (B, H)), rng.normal(size=(B, H))


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


print(f"keras {keras.__version__} (backend {keras.backend.backend()}), jax {jax.__version__}, "
      f"jax_enable_x64={jax.config.read('jax_enable_x64')}")
tanh_dtype = str(keras.ops.tanh(np.zeros(2, np.float64)).dtype)
print(f"keras.ops.tanh(float64 array).dtype = {tanh_dtype}; "
      f"keras.backend.result_type('float64', float) = {keras.backend.result_type('float64', float)}")

layer = keras.layers.LSTM(H, return_sequences=True, dtype="float64")
layer.build((None, T, I))
layer.set_weights([kernel, recurrent_kernel, bias])
y = np.asarray(layer(x, initial_state=[h0, c0]))
error = float(np.max(np.abs(y - numpy_lstm(x, h0, c0))))
print(f"LSTM(dtype='float64'): output dtype {y.dtype}, max |keras - float64 NumPy LSTM| = {error:.3g} "
      f"(float64 would be about 1e-16, float32 about 1e-8)")

reproduced = tanh_dtype == "float32" and y.dtype == np.float64 and 1e-10 < error < 1e-5
print("REPRODUCED: the float64 layer computes in float32" if reproduced else "NOT REPRODUCED: the layer computes in float64")
sys.exit(0 if reproduced else 1)
