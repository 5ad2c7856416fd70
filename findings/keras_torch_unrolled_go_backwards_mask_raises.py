"""Keras 3 on the PyTorch backend: unroll=True with go_backwards=True and a mask raises AttributeError

Checked with: Keras 3.15.1, torch 2.13.0+cpu, NumPy 2.4.6, CPU.

Expected: keras.layers.LSTM(unroll=True, go_backwards=True) called with a mask runs the sequence backwards,
carrying the state through masked steps (as unroll=False does on this backend, and both settings do on the
TensorFlow backend).

Actual: AttributeError: 'tuple' object has no attribute 'shape'. The unrolled branch of
keras/src/backend/torch/rnn.py reverses the mask with torch.flip(mask_list, dims=mask_list.shape), where
mask_list is the tuple torch.unbind returned. keras.layers.RNN(keras.layers.LSTMCell(...), unroll=True)
and Bidirectional over either fail the same way; without a mask, or without go_backwards, they run.

Upstream: no issue found (searched keras-team/keras issues).
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

B, T, I, H = 2, 4, 3, 2
rng = np.random.default_rng(3)
x = rng.normal(size=(B, T, I)).astype(np.float32)
mask = np.array([[True, True, True, False], [True, True, False, False]])

print(f"keras {keras.__version__} (backend {keras.backend.backend()}), torch {torch.__version__}")


def call(**options) -> str:
    """What LSTM(**options) does with the mask: "ran", or the innermost error (Keras re-raises it with a note)."""
    layer = keras.layers.LSTM(H, return_sequences=True, **options)
    try:
        layer(x, mask=mask)
    except AttributeError as error:
        while error.__cause__ is not None or error.__context__ is not None:
            error = error.__cause__ or error.__context__
        return f"{type(error).__name__}: {error}"
    return "ran"


results = {}
for unroll, go_backwards in ((False, True), (True, False), (True, True)):
    results[unroll, go_backwards] = call(unroll=unroll, go_backwards=go_backwards)
    print(f"LSTM(unroll={unroll}, go_backwards={go_backwards}) with a mask: {results[unroll, go_backwards]}")

reproduced = (results[False, True] == "ran" and results[True, False] == "ran"
              and results[True, True] == "AttributeError: 'tuple' object has no attribute 'shape'")
print("REPRODUCED: unroll=True with go_backwards and a mask raises" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
