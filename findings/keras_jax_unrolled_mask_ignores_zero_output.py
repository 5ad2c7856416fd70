"""Keras 3 on the JAX backend, unrolled loop (unroll=True): zero_output_for_mask=True is ignored

Checked with: Keras 3.15.1, jax/jaxlib 0.10.2, NumPy 2.4.6, CPU, float32.

Expected: with zero_output_for_mask=True every masked step outputs zeros (what keras.layers.Bidirectional
forces on its layers when return_sequences=True, and what padding needs). The JAX backend's rolled loop
(unroll=False) and Keras' TensorFlow backend output zeros there.

Actual: with unroll=True, masked steps after a row's first unmasked step output the previous output (the
output of the last unmasked step), as with zero_output_for_mask=False; before the first unmasked step they
are zero. The unrolled branch of keras/src/backend/jax/rnn.py never reads zero_output_for_mask. The states
are right. keras.layers.RNN(keras.layers.LSTMCell(...), unroll=True) does the same.

Upstream: no issue found (searched keras-team/keras issues).
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"  # Keras reads it at its first import

try:
    import jax
    import keras
    import numpy as np
except ImportError as error:
    print(f"this reproducer needs keras and jax: {error}")
    sys.exit(77)

B, T, I, H = 2, 5, 3, 2
rng = np.random.default_rng(2)
weights = [rng.uniform(-0.5, 0.5, (I, 4 * H)).astype(np.float32), rng.uniform(-0.5, 0.5, (H, 4 * H)).astype(np.float32),
           rng.uniform(-0.5, 0.5, 4 * H).astype(np.float32)]
x = rng.normal(size=(B, T, I)).astype(np.float32)
mask = np.array([[True, True, False, True, False],  # an interior and a trailing gap
                 [True, True, True, False, False]])  # padding: length 3

print(f"keras {keras.__version__} (backend {keras.backend.backend()}), jax {jax.__version__}")
outputs = {}
for unroll in (False, True):
    layer = keras.layers.LSTM(H, return_sequences=True, zero_output_for_mask=True, unroll=unroll)
    layer.build((None, T, I))
    layer.set_weights(weights)
    outputs[unroll] = np.asarray(layer(x, mask=mask))

for unroll, y in outputs.items():
    print(f"unroll={unroll}: largest |output| at masked steps: {np.abs(y[~mask]).max():.4f} (expected 0)")
rolled, unrolled = outputs[False], outputs[True]
previous = np.concatenate([np.zeros_like(unrolled[:, :1]), unrolled[:, :-1]], axis=1)  # the output one step earlier
reproduced = (not np.any(rolled[~mask]) and np.abs(unrolled[~mask]).max() > 0.01
              and np.array_equal(unrolled[~mask], previous[~mask]))
print("REPRODUCED: unroll=True outputs the previous output at masked steps" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
