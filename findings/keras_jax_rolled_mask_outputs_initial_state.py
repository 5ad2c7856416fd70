"""Keras 3 on the JAX backend, rolled loop with a mask: masked steps before a row's first unmasked one output h0, not 0

Checked with: Keras 3.15.1, jax/jaxlib 0.10.2, NumPy 2.4.6, CPU, float32.

Expected: a masked step outputs the previous output (zero_output_for_mask=False, the LSTM's default), and
before a row's first unmasked step there is no previous output: zero. Keras' TensorFlow and PyTorch backends,
and the JAX backend's own unrolled loop (unroll=True), output 0 there.

Actual: keras.layers.LSTM (unroll=False) outputs h0 at those steps (exactly h0; a row masked throughout
outputs h0 at every step). keras/src/backend/jax/rnn.py takes "the first state" as the previous output
(output_tm1 = states[0]) where the other backends keep the previous output itself, starting at zeros. The
final states are right.

Upstream: no issue found (searched keras-team/keras issues). The same assumption (output == states[0]) was a
bug of the TensorFlow backend's rnn() in Keras 2: https://github.com/keras-team/keras/issues/11472, fixed by
https://github.com/keras-team/keras/pull/11499.
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
rng = np.random.default_rng(1)
weights = [rng.uniform(-0.5, 0.5, (I, 4 * H)), rng.uniform(-0.5, 0.5, (H, 4 * H)), rng.uniform(-0.5, 0.5, 4 * H)]
x = rng.normal(size=(B, T, I)).astype(np.float32)
h0 = rng.uniform(0.3, 0.9, (B, H)).astype(np.float32)  # nonzero, so that h0 and zero differ
c0 = rng.normal(size=(B, H)).astype(np.float32)
mask = np.array([[False, False, True, True, False],  # two leading masked steps, then a trailing one
                 [False] * T])  # masked throughout

print(f"keras {keras.__version__} (backend {keras.backend.backend()}), jax {jax.__version__}")
outputs = {}
for unroll in (False, True):
    layer = keras.layers.LSTM(H, return_sequences=True, zero_output_for_mask=False, unroll=unroll)
    layer.build((None, T, I))
    layer.set_weights([w.astype(np.float32) for w in weights])
    outputs[unroll] = np.asarray(layer(x, mask=mask, initial_state=[h0, c0]))

leading = np.cumsum(mask, axis=1) == 0  # masked, before the row's first unmasked step
for unroll, y in outputs.items():
    print(f"unroll={unroll}: outputs at the leading masked steps: {np.array2string(y[leading], precision=4)}")
print(f"h0 of the rows: {np.array2string(h0, precision=4)} (expected there: zeros)")

rolled, unrolled = outputs[False], outputs[True]
h0_there = np.broadcast_to(h0[:, None, :], rolled.shape)[leading]
reproduced = np.array_equal(rolled[leading], h0_there) and not np.any(unrolled[leading])
print("REPRODUCED: the rolled loop outputs h0 where the previous output is zero" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
