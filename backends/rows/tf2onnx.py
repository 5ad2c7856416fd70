"""Keras to ONNX with tf2onnx as an implementation: the stack of ``keras.layers.LSTM`` / ``Bidirectional`` layers that
the ``keras-tensorflow/LSTM`` row runs (backends/runtimes/keras.py), converted by tf2onnx and run by ONNX Runtime.

What is converted is what a user converts: the Keras layers holding the weights, called in a ``tf.function`` on
(x, h0, c0) and, with a mask or lengths, the mask (B, T), with the batch and time sizes left open (None): the ONNX
model must hold for any batch and any length, as it does for its users. ``from_keras``, tf2onnx's entry point for
Keras models, fails on Keras 3 models (tf2onnx 1.17.0: KeyError 'keras_tensor_...' looking up the model's output
names; onnx/tensorflow-onnx#2448, Keras 3 support is onnx/tensorflow-onnx#2329), so ``from_function`` is the path that
works today; it sees the same TensorFlow graph.

tf2onnx rewrites the while loop Keras' TensorFlow backend builds into an ONNX LSTM node where it recognises the
pattern, and into an ONNX Loop where it does not (a mask); either way ONNX Runtime runs it. The weights are frozen
into the model (tf2onnx turns variables into constants), so the model is converted once per parameter values,
architecture and masking, and its session kept.

Forward only (ONNX Runtime has no LSTM gradient) and float32 only (ONNX Runtime's LSTM kernel rejects double); the
features are Keras' (what Keras lacks is its layout's reasons). Runs in its own process: Keras fixes its backend at
import, and this row needs TensorFlow's; its ONNX Runtime sessions come from the ONNX rows' runtime
(backends/runtimes/onnxruntime.py), the one place that sets their threads and providers.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from backends.layouts import keras as layouts
from backends.runtimes.keras import BACKEND_MODULES, INITIALIZERS, KERAS_HINT, KERAS_TENSORFLOW, KerasRow, keras_mask
from backends.runtimes.onnxruntime import INSTALL_HINT as ORT_HINT
from backends.runtimes.onnxruntime import NO_CUDA_PROVIDER, ONNXRUNTIME, OPTIMIZATIONS, intra_op_threads, onnxruntime
from contract.row import parameters_key
from contract.runtime import framework_problem, import_framework
from contract.vocabulary import Device, Dtype

TF2ONNX_HINT = "tf2onnx is not installed (pip install 'lstm-conformance[tf-onnx]')"
#: tf2onnx 1.17.0's preferred opset, the one its LSTM rewriters are tested at.
OPSET = 15
#: The modules this row imports, in the order availability() names the first one missing: TensorFlow before Keras, which
#: imports it (without it ``import keras`` fails, which would hide TensorFlow's install hint).
NEEDED = (BACKEND_MODULES["tensorflow"], ("keras", KERAS_HINT), ("tf2onnx", TF2ONNX_HINT), ("onnxruntime", ORT_HINT))
#: Converted models kept (each conversion takes seconds).
SESSIONS_KEPT = 8


def providers() -> list[str]:
    return onnxruntime().get_available_providers()


def missing() -> dict[str, str]:
    """Each needed module that does not import here, with why (its own hint, or the real import error)."""
    return {module: problem for module, hint in NEEDED if (problem := framework_problem(module, hint)) is not None}


@dataclass(eq=False)
class Tf2OnnxExport(KerasRow):
    """keras-tensorflow/LSTM's stack through tf2onnx, run by ONNX Runtime: the Keras row's layout, features and
    refusals; only the call differs."""

    id: str = "tf2onnx/keras-tensorflow+onnxruntime"
    description: str = ("keras.layers.LSTM / Bidirectional on TensorFlow, converted by tf2onnx.convert.from_function, "
                        "run by ONNX Runtime (its own process)")
    runtime: object = KERAS_TENSORFLOW
    layout: object = layouts.LSTM
    api: str = "keras.layers.LSTM"
    dtypes: tuple = (Dtype.FLOAT32,)
    policies: dict = field(default_factory=dict)
    gradients: bool = False
    #: ONNX Runtime's graph optimisations on the converted model (backends.runtimes.onnxruntime.OPTIMIZATIONS).
    optimization: str = "all"
    reasons: dict = field(default_factory=lambda: {
        Dtype.FLOAT64: "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
        "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
        Dtype.FLOAT16: "ONNX Runtime's LSTM kernel is float32 only",
        Dtype.BFLOAT16: "ONNX Runtime's LSTM kernel is float32 only",
    })
    process_environment: dict = field(default_factory=lambda: {"KERAS_BACKEND": "tensorflow"})
    origin: str = "backends.rows.tf2onnx"

    def __post_init__(self):
        super().__post_init__()
        self._sessions: OrderedDict = OrderedDict()

    def recurrent(self, keras, name, units, options):
        return keras.layers.LSTM(units, name=name, **options, **INITIALIZERS)  # keras-tensorflow/LSTM's layer

    def _availability(self, device: str) -> str | None:
        if absent := missing():  # the first, in the order of NEEDED; environment() names them all
            return next(iter(absent.values()))
        if (reason := self.runtime.availability(Device.CPU)) is not None:  # Keras' backend in this process
            return reason
        if device == Device.CUDA and "CUDAExecutionProvider" not in providers():
            return NO_CUDA_PROVIDER
        return None

    def _environment(self, device: str) -> dict[str, object]:
        """The Keras row's environment (where Keras and TensorFlow import), each needed module's version or why it is
        missing ("unavailable: ..."), the converter, and ONNX Runtime's threads and providers."""
        absent = missing()
        keras_side = any(module in absent for module in ("keras", "tensorflow"))
        env: dict[str, object] = {} if keras_side else {**self.runtime.environment(Device.CPU), "api": self.api}
        for module, hint in NEEDED:
            env[module] = f"unavailable: {absent[module]}" if module in absent else import_framework(module, hint).__version__
        env.update(converter="tf2onnx.convert.from_function", opset=OPSET,
                   graph_optimization_level=OPTIMIZATIONS[self.optimization])
        if "onnxruntime" not in absent:
            env.update(intra_op_threads=intra_op_threads(), providers=providers())
        return env

    def export(self, params, layer, with_mask: bool, zero_output: bool) -> bytes:
        """The serialized ONNX model tf2onnx makes of the Keras stack holding ``params`` as ``layer``: inputs x (B, T, I),
        h0 (L * D, B, P), c0 (L * D, B, H) and, ``with_mask``, mask (B, T) bool; outputs y, h_T, c_T."""
        tf = import_framework("tensorflow", BACKEND_MODULES["tensorflow"][1])
        tf2onnx = import_framework("tf2onnx", TF2ONNX_HINT)
        K = len(params.cells)
        with self.runtime.on(Device.CPU):
            stack = self.stack(layer, zero_output, params.input_size, params.hidden_size, "float32", Device.CPU)
            stack.assign(self.built_for(params, layer, Device.CPU))

        def model(x, h0, c0, *mask):
            return stack.run(x, tf.unstack(h0), tf.unstack(c0), mask[0] if mask else None)

        signature = [tf.TensorSpec((None, None, params.input_size), tf.float32, name="x"),
                     tf.TensorSpec((K, None, params.output_size), tf.float32, name="h0"),
                     tf.TensorSpec((K, None, params.hidden_size), tf.float32, name="c0")]
        if with_mask:
            signature.append(tf.TensorSpec((None, None), tf.bool, name="mask"))
        proto, _ = tf2onnx.convert.from_function(tf.function(model), input_signature=signature, opset=OPSET)
        return proto.SerializeToString()

    def session(self, params, layer, with_mask: bool, zero_output: bool, device: str):
        """An ONNX Runtime session on the converted model, kept per parameter values, architecture, masking and device."""
        key = (parameters_key(params), layer.num_layers, layer.direction, float(layer.forget_bias), with_mask, zero_output,
               str(device))
        if key not in self._sessions:
            self._sessions[key] = ONNXRUNTIME.session(self.export(params, layer, with_mask, zero_output), device,
                                                      optimization=self.optimization)
            while len(self._sessions) > SESSIONS_KEPT:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        return self._sessions[key]

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        mask, zero_output = keras_mask(x.shape[0], lengths, mask, layer.zero_output_for_mask)
        session = self.session(params, layer, mask is not None, zero_output, device)
        values = [np.ascontiguousarray(x.transpose(1, 0, 2)), h0, c0]
        if mask is not None:
            values.append(np.ascontiguousarray(mask.T))
        y, h_T, c_T = session.run(None, {inp.name: value for inp, value in zip(session.get_inputs(), values, strict=True)})
        return y.transpose(1, 0, 2), h_T, c_T


ROWS = (
    Tf2OnnxExport(),
    Tf2OnnxExport(id="tf2onnx/keras-tensorflow+onnxruntime(unoptimized)", optimization="none",
                  description="keras-tensorflow/LSTM converted by tf2onnx, run by ONNX Runtime with its graph "
                              "optimisations off (ORT_DISABLE_ALL)"),
)
