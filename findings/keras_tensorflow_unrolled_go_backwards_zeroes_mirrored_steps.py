"""Keras 3 on the TensorFlow backend: unroll=True, go_backwards=True and a mask zero the wrong steps (zero_output_for_mask)

Checked with: Keras 3.15.1, tensorflow-cpu 2.21.0, NumPy 2.4.6, CPU, float32.

Expected: with zero_output_for_mask=True every masked step outputs zeros and every unmasked step its own
output; go_backwards returns the outputs in processing order (y[s] is the output after x[T-1-s]), so the
zeros are where the reversed mask is False. The rolled loop (unroll=False) does exactly that, and it is what
keras.layers.Bidirectional (which forces zero_output_for_mask=True) needs from its backward layer.

Actual: with unroll=True the outputs are zeroed where the mask in time order is False. A row with mask
[1, 1, 1, 0, 0] (length 3) gets its last two outputs (after x1 and x0, both unmasked) zeroed; a row with mask
[0, 1, 1, 1, 1] gets its first output (after x4, unmasked) zeroed, and its last (x0, masked) keeps the
previous output. The unrolled branch of keras/src/backend/tensorflow/rnn.py reverses mask_list for the loop
but zeroes `outputs` with the unreversed `mask` after it.
keras.layers.RNN(keras.layers.LSTMCell(...), unroll=True) and Bidirectional over it do the same. The final
states are right. (The PyTorch backend has the same code after its loop, but fails earlier: see
keras_torch_unrolled_go_backwards_mask_raises.py.)

Upstream: no issue found (searched keras-team/keras issues); related, for Keras 2's go_backwards and
zero_output_for_mask: https://github.com/keras-team/keras/issues/17596.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"  # Keras reads it at its first import
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras
    import numpy as np
    import tensorflow as tf
except ImportError as error:
    print(f"this reproducer needs keras and tensorflow: {error}")
    sys.exit(77)

B, T, I, H = 2, 5, 3, 2
rng = np.random.default_rng(4)
weights = [rng.uniform(-0.5, 0.5, (I, 4 * H)).astype(np.float32), rng.uniform(-0.5, 0.5, (H, 4 * H)).astype(np.float32),
           rng.uniform(-0.5, 0.5, 4 * H).astype(np.float32)]
x = rng.normal(size=(B, T, I)).astype(np.float32)
mask = np.array([[True, True, True, False, False],  # length 3
                 [False, True, True, True, True]])  # a leading gap

print(f"keras {keras.__version__} (backend {keras.backend.backend()}), tensorflow {tf.__version__}")
outputs = {}
for unroll in (False, True):
    layer = keras.layers.LSTM(H, return_sequences=True, go_backwards=True, zero_output_for_mask=True, unroll=unroll)
    layer.build((None, T, I))
    layer.set_weights(weights)
    outputs[unroll] = np.asarray(layer(x, mask=mask))

processing_mask = mask[:, ::-1]  # go_backwards: output s belongs to step T-1-s
for unroll, y in outputs.items():
    zero_steps = (np.abs(y).max(axis=2) == 0).astype(int)
    print(f"unroll={unroll}: outputs that are zero, per row, in processing order: {zero_steps.tolist()}")
print(f"expected (where the reversed mask is False):                 {(~processing_mask).astype(int).tolist()}")

rolled, unrolled = outputs[False], outputs[True]
reproduced = (not np.any(rolled[~processing_mask]) and np.all(np.abs(rolled[processing_mask]).max(axis=-1) > 0)
              and not np.any(unrolled[~mask]) and np.abs(unrolled[~processing_mask]).max() > 0.01)
print("REPRODUCED: unroll=True zeroes the outputs with the mask in time order" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
