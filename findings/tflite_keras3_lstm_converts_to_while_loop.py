"""TFLiteConverter turns a Keras 3 LSTM into a WHILE loop, not the fused UNIDIRECTIONAL_SEQUENCE_LSTM a Keras 2 LSTM gets

Checked with tensorflow-cpu 2.21.0, keras 3.15.1, tf-keras 2.21.0, ai-edge-litert 2.3.0.

Expected: tf.lite.TFLiteConverter.from_keras_model converts a keras.layers.LSTM to TFLite's fused LSTM op,
UNIDIRECTIONAL_SEQUENCE_LSTM, as it does the same model built with Keras 2 (tf_keras): the guide "Convert TensorFlow
RNN to TensorFlow Lite" (ai.google.dev/edge/lite/models/rnn) supports "out of the box conversion of Keras LSTM" to the
fused LSTM operations, and recommends it.

Actual: the Keras 3 model converts to a WHILE loop (its body a subgraph of FULLY_CONNECTED, LOGISTIC, TANH, MUL and
ADD ops) and no fused op; the tf_keras model of the same shape converts to UNIDIRECTIONAL_SEQUENCE_LSTM. No converter
path tried brings the fused op back: from_concrete_functions gives a model that LiteRT fails to run (its variables stay
READ_VARIABLE ops that no initializer fills: "read_variable.cc:67 variable != nullptr was not true", with
experimental_enable_resource_variables True or False), and _experimental_lower_tensor_list_ops = False makes the
converter refuse the model (TensorListReserve, TensorListSetItem, TensorListStack need TF Select ops). Both models'
LiteRT answers agree with their Keras to float32 rounding: this is a different deployment (runtimes and delegates that
take the fused op, TFLite Micro, do not get it), not a wrong answer. The conformance row litert/keras.layers.LSTM
judges the loop.

Upstream: tensorflow/tensorflow#126061 ("[LSTM] fused vs non-fused based on the Keras version", closed: redirected to
LiteRT's repository), tensorflow/tflite-micro#3674 (open: the Keras 3 WHILE-loop graph hangs on TFLite Micro),
google-ai-edge/LiteRT#41 (open: "[RNN] TFLite does not appear to be using the UnidirectionalSequenceLSTM", moved from
tensorflow/tensorflow#73254).
"""

import contextlib
import io
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import keras
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
except ImportError as error:
    print(f"framework missing: {error} (pip install tensorflow-cpu keras ai-edge-litert)")
    sys.exit(77)
try:
    import tf_keras
except ImportError:
    tf_keras = None

FUSED, LOOP = "UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"
B, T, I, H = 3, 7, 5, 4
print(f"tensorflow {tf.__version__}, keras {keras.__version__}, "
      f"tf_keras {tf_keras.__version__ if tf_keras else 'not installed'}")
x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)


def converted(converter) -> tuple[list[str], float | None]:
    """The operators LiteRT's execution plan runs, and the worst difference from Keras' answer."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export lists the model's endpoints
        content = converter.convert()
    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    got = next(iter(runner(**{name: x}).values()))
    return [op["op_name"] for op in interpreter._get_ops_details()], got


def report(label, make, expected):
    try:
        ops, got = converted(make())
    except Exception as error:  # the converter's refusal, or LiteRT's failure to run the model
        lines = str(error).strip().splitlines()
        said = next((line for line in lines if line.startswith("TF Select ops")), lines[-1])
        print(f"{label}: failed: {type(error).__name__}: {said[:200]}")
        return None
    print(f"{label}: {ops}; LiteRT vs Keras: worst error {float(np.abs(got - expected).max()):.3g}")
    return ops


keras.utils.set_random_seed(0)
inputs = keras.Input(batch_shape=(B, T, I))
model = keras.Model(inputs, keras.layers.LSTM(H, return_sequences=True)(inputs))
expected = np.asarray(model(x))
keras3 = report("Keras 3, from_keras_model", lambda: tf.lite.TFLiteConverter.from_keras_model(model), expected)


def concrete():
    function = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((B, T, I), tf.float32))
    return tf.lite.TFLiteConverter.from_concrete_functions([function], model)


def unlowered():
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter._experimental_lower_tensor_list_ops = False
    return converter


others = [report("Keras 3, from_concrete_functions", concrete, expected),
          report("Keras 3, _experimental_lower_tensor_list_ops=False", unlowered, expected)]
keras2 = None
if tf_keras is not None:
    tf_keras.utils.set_random_seed(0)
    inputs2 = tf_keras.Input(batch_shape=(B, T, I))
    model2 = tf_keras.Model(inputs2, tf_keras.layers.LSTM(H, return_sequences=True)(inputs2))
    keras2 = report("Keras 2 (tf_keras), from_keras_model", lambda: tf.lite.TFLiteConverter.from_keras_model(model2),
                    model2(x).numpy())

reproduced = (keras3 is not None and LOOP in keras3 and FUSED not in keras3
              and not any(ops is not None and FUSED in ops for ops in others)
              and (keras2 is None or FUSED in keras2))
print("reproduced: Keras 3's LSTM converts to a WHILE loop, not the fused op" if reproduced else
      "NOT reproduced: a Keras 3 conversion gives the fused op (or Keras 2's no longer does)")
sys.exit(0 if reproduced else 1)
