"""tf2onnx.convert.from_keras fails on a Keras 3 model (an LSTM) with KeyError 'keras_tensor_...'

Checked with tensorflow-cpu 2.21.0, keras 3.15.1, tf2onnx 1.17.0, onnxruntime 1.32.0.

Expected: from_keras, tf2onnx's documented entry point for Keras models ("from_keras (tf-2.0 and
newer)"; its README supports tf-2.x and tests 2.13 to 2.15), converts a
keras.Sequential([Input((7, 5)), LSTM(4, return_sequences=True)]) to ONNX, and ONNX Runtime's output
equals Keras'.

Actual: from_keras raises KeyError: 'keras_tensor_...' (convert.py looks the model's output names up in
a table keyed by the TensorFlow tensors' names, and Keras 3 names its outputs keras_tensor_N), even with
an input_signature. The same model called inside a tf.function and converted with from_function works,
and agrees with Keras to float32 rounding: that is the path the conformance row
tf2onnx/keras-tensorflow+onnxruntime takes. This is a failure to convert, not a wrong answer.

Upstream: onnx/tensorflow-onnx#2448 (open: "KeyError: 'keras_tensor_65' on tf2onnx.convert.from_keras()"),
onnx/tensorflow-onnx#2329 (open: "Tensorflow 2.16 / Keras 3 support").
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import keras
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
except ImportError as error:
    print(f"framework missing: {error} (pip install tensorflow-cpu keras tf2onnx onnxruntime)")
    sys.exit(77)

print(f"tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__}, onnxruntime {ort.__version__}")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((7, 5)), keras.layers.LSTM(4, return_sequences=True)])
x = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
expected = np.asarray(model(x))
signature = [tf.TensorSpec((None, 7, 5), tf.float32, name="x")]


def agreement(proto) -> float:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(np.abs(session.run(None, {session.get_inputs()[0].name: x})[0] - expected).max())


try:
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature)
except KeyError as error:
    print(f"from_keras: KeyError {error}")
    failed = "keras_tensor" in str(error)
else:
    print(f"from_keras converted the model; ONNX Runtime vs Keras: worst error {agreement(proto):.3g}")
    failed = False

proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x)), input_signature=signature)
print(f"from_function: ONNX Runtime vs Keras: worst error {agreement(proto):.3g}")
print("reproduced: from_keras fails on a Keras 3 model" if failed else "NOT reproduced: from_keras works")
sys.exit(0 if failed else 1)
