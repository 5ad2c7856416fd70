"""Keras to ONNX with tf2onnx as an implementation: the stack of ``keras.layers.LSTM`` / ``Bidirectional`` layers
that the ``keras-tensorflow/LSTM`` row runs (backends/keras_lstm.py), converted by tf2onnx and run by ONNX
Runtime. One row:

    tf2onnx/keras-tensorflow+onnxruntime   tf2onnx.convert.from_function over the stack's call

What is converted is what a user converts: the Keras layers holding the weights, called in a ``tf.function``
on (x, h0, c0) and, with a mask or lengths, the mask (B, T), with the batch and time sizes left open (None):
the ONNX model must hold for any batch and any length, as it does for its users. ``from_keras``, tf2onnx's
entry point for Keras models, fails on Keras 3 models (tf2onnx 1.17.0: KeyError 'keras_tensor_...' looking up
the model's output names; onnx/tensorflow-onnx#2448, Keras 3 support is onnx/tensorflow-onnx#2329), so
``from_function`` is the path that works today; it sees the same TensorFlow graph.

tf2onnx rewrites the while loop Keras' TensorFlow backend builds into an ONNX LSTM node where it recognises
the pattern, and into an ONNX Loop where it does not (a mask); either way ONNX Runtime runs it. The weights
are frozen into the model (tf2onnx turns variables into constants), so the model is converted once per
parameter set, architecture and masking, and cached.

Forward only (ONNX Runtime has no LSTM gradient) and float32 only (ONNX Runtime's LSTM kernel rejects
double); the features are Keras' (what Keras lacks is its row's reasons). Runs in its own process: Keras
fixes its backend at import, and this row needs TensorFlow's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from backends.base import Config, NativeCache, framework_problem, import_framework
from backends.keras_lstm import BACKEND_MODULES, KERAS_MISSING, NOT_IN_KERAS, KerasLayer, keras_mask
from spec.layer import LayerConfig

TF2ONNX_HINT = "tf2onnx is not installed (pip install 'lstm-conformance[tf-onnx]')"
ORT_HINT = "onnxruntime is not installed (pip install 'lstm-conformance[onnxruntime]')"
#: tf2onnx 1.17.0's preferred opset, the one its LSTM rewriters are tested at.
OPSET = 15

REASONS = {
    **NOT_IN_KERAS,
    "float64": "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
    "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
    "float16": "ONNX Runtime's LSTM kernel is float32 only",
    "bfloat16": "ONNX Runtime's LSTM kernel is float32 only",
}


def _threads() -> int:
    return int(os.environ.get("LSTMC_THREADS", os.cpu_count() or 1))


@dataclass
class Tf2OnnxExport(KerasLayer):
    """keras-tensorflow/LSTM's stack, through tf2onnx, run by ONNX Runtime: the Keras row's layouts, features
    and declarations; only the call differs."""

    framework: str = "tf2onnx"
    backend: str = "tensorflow"
    api: str = "LSTM"
    dtypes: tuple[str, ...] = ("float32",)
    gradients: bool = False
    unsupported_reasons: dict = field(default_factory=lambda: dict(REASONS))

    def __post_init__(self):
        self._sessions = NativeCache()

    def _needed(self) -> tuple[tuple[str, str], ...]:
        """The modules this row imports, each with what to say when it is not installed."""
        return (("keras", KERAS_MISSING), BACKEND_MODULES[self.backend], ("tf2onnx", TF2ONNX_HINT), ("onnxruntime", ORT_HINT))

    def _missing(self) -> dict[str, str]:
        """Each needed module that does not import here, with why (its own hint, or the real import error)."""
        return {module: problem for module, hint in self._needed() if (problem := framework_problem(module, hint)) is not None}

    def _availability(self, device: str) -> str | None:
        if missing := self._missing():  # the first, in the order of _needed(); environment() names them all
            return next(iter(missing.values()))
        if (reason := super()._availability("cpu")) is not None:  # Keras' backend in this process
            return reason
        ort = import_framework("onnxruntime", ORT_HINT)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "no CUDA execution provider in this onnxruntime build (install onnxruntime-gpu on a machine with a GPU)"
        return None

    def _environment(self, device: str) -> dict[str, object]:
        """The Keras row's environment (where Keras and TensorFlow import), each needed module's version or why
        it is missing ("unavailable: ..."), the converter, and ONNX Runtime's threads and providers."""
        missing = self._missing()
        keras_side = ("keras", self.backend)
        env: dict[str, object] = {} if any(m in missing for m in keras_side) else dict(super()._environment("cpu"))
        for module, hint in self._needed():
            env[module] = f"unavailable: {missing[module]}" if module in missing else import_framework(module, hint).__version__
        env.update(converter="tf2onnx.convert.from_function", opset=OPSET)
        if "onnxruntime" not in missing:
            ort = import_framework("onnxruntime", ORT_HINT)
            env.update(intra_op_threads=_threads(), providers=ort.get_available_providers())
        return env

    # -- convert, then ONNX Runtime ------------------------------------------------------------------

    def export(self, params, layer: LayerConfig, with_mask: bool, zero_output: bool) -> bytes:
        """The serialized ONNX model tf2onnx makes of the Keras stack holding ``params`` as ``layer``: inputs
        x (B, T, I), h0 (L * D, B, P), c0 (L * D, B, H) and, ``with_mask``, mask (B, T) bool; outputs y, h_T, c_T."""
        tf = import_framework("tensorflow", "")
        tf2onnx = import_framework("tf2onnx", TF2ONNX_HINT)
        T, B, K = 1, 1, len(params.cells)
        stack, native, _ = self._prepare(params, np.zeros((T, B, params.input_size), np.float32),
                                         np.zeros((K, B, params.output_size), np.float32),
                                         np.zeros((K, B, params.hidden_size), np.float32), layer, None,
                                         np.ones((T, B), bool) if with_mask else None,
                                         Config("standard", "float32", "cpu"))
        stack.assign(native)

        def model(x, h0, c0, *mask):
            y, h_T, c_T = stack.run(x, tf.unstack(h0), tf.unstack(c0), mask[0] if mask else None)
            return y, tf.stack(h_T), tf.stack(c_T)

        signature = [tf.TensorSpec((None, None, params.input_size), tf.float32, name="x"),
                     tf.TensorSpec((K, None, params.output_size), tf.float32, name="h0"),
                     tf.TensorSpec((K, None, params.hidden_size), tf.float32, name="c0")]
        if with_mask:
            signature.append(tf.TensorSpec((None, None), tf.bool, name="mask"))
        proto, _ = tf2onnx.convert.from_function(tf.function(model), input_signature=signature, opset=OPSET)
        return proto.SerializeToString()

    def session(self, params, layer: LayerConfig, with_mask: bool, zero_output: bool, device: str):
        """An ONNX Runtime session on the converted model (cached per params object, architecture, masking and
        device)."""

        def build():
            ort = import_framework("onnxruntime", ORT_HINT)
            options = ort.SessionOptions()
            options.intra_op_num_threads = _threads()
            providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            converted = LayerConfig(num_layers=layer.num_layers, direction=layer.direction,
                                    forget_bias=layer.forget_bias, zero_output_for_mask=zero_output)
            return ort.InferenceSession(self.export(params, converted, with_mask, zero_output), options, providers=providers)

        architecture = (layer.num_layers, layer.direction, float(layer.forget_bias))
        return self._sessions.get(params, (architecture, with_mask, zero_output, device), build)

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        mask, zero_output = keras_mask(x.shape[0], layer, lengths, mask)
        session = self.session(params, layer, mask is not None, zero_output, config.device)
        values = [np.ascontiguousarray(x.transpose(1, 0, 2)), h0, c0] + ([np.ascontiguousarray(mask.T)] if mask is not None else [])
        feeds = {inp.name: value for inp, value in zip(session.get_inputs(), values, strict=True)}
        y, h_T, c_T = session.run(None, feeds)
        return y.transpose(1, 0, 2), h_T, c_T


IMPLEMENTATIONS = (
    Tf2OnnxExport(
        id="tf2onnx/keras-tensorflow+onnxruntime",
        description="keras.layers.LSTM / Bidirectional on TensorFlow, converted by tf2onnx.convert.from_function, "
        "run by ONNX Runtime (its own process)",
        process_environment={"KERAS_BACKEND": "tensorflow"},
        known_failures=(),
    ),
)
