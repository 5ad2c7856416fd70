"""Keras 3's LSTM as its users deploy it to LiteRT: the stack of ``keras.layers.LSTM`` / ``Bidirectional`` layers that
the ``keras-tensorflow/LSTM`` row runs (backends/runtimes/keras.py), in a functional ``keras.Model``, converted by
``tf.lite.TFLiteConverter.from_keras_model`` with its defaults and run by LiteRT's interpreter (ai_edge_litert).

    litert/keras.layers.LSTM   the converted model: one WHILE loop per layer and direction (the loop body's
                               FULLY_CONNECTED, LOGISTIC, TANH, MUL and ADD ops in subgraphs of their own)

Keras 2 models (tf_keras) convert to TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM; Keras 3's do not: the converter
(TensorFlow 2.21) lowers Keras 3's ``while_loop`` into a WHILE op (tensorflow/tensorflow#126061,
tensorflow/tflite-micro#3674). That loop is what a Keras 3 user ships, so it is judged here as a row of its own; the
fused op is judged by ``litert/UNIDIRECTIONAL_SEQUENCE_LSTM`` (backends/rows/litert.py). Every model is checked to
run one WHILE (or, should a release fuse it, one fused op) per layer and direction in LiteRT's execution plan, and
refused naming its operators otherwise; the operators that ran are recorded in the row's environment.

What is converted is what a user converts: a ``keras.Model`` with inputs x (B, T, I), h0 and c0 (L * D, B, H) (so
nonzero initial states are judged) and, with a mask or lengths, mask (B, T) bool; outputs y (B, T, D * H), h_T, c_T
stacked (L * D, B, H). The batch size is fixed in each model: with an open batch the converter refuses Keras 3's
loop ("'tf.TensorListReserve' op requires element_shape to be static", which TF Select ops would avoid, and LiteRT's
interpreter has no TF kernels; Keras 2's LSTM is refused the same way: tensorflow/tensorflow#62849, #53333). The time
axis is left open, as a sequence model's users need it: one conversion per parameter set, architecture, batch size
and masking (kept in the built object), whatever T. The weights are frozen into the model as constants.

Forward only (LiteRT is an inference runtime) and float32 only: the converter refuses a float64, a bfloat16 and a
mixed_bfloat16 Keras LSTM, and its float16 option only stores the weights in float16 (DEQUANTIZE ops to float32 when
the model loads). LiteRT's interpreter applies its default XNNPACK delegate where it can (DELEGATE in the plan).
Features: Keras' (what Keras lacks is its layout's reasons); masks and lengths convert, and LiteRT runs them. Runs in
its own process: Keras fixes its backend at import, and the converter needs TensorFlow's. Its interpreters come from
the LiteRT runtime (backends/runtimes/litert.py): the model's bytes checked, its threads.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from backends.layouts import keras as layouts
from backends.rows.keras import KerasLSTM
from backends.runtimes.keras import (
    BACKEND_MODULES,
    KERAS_HINT,
    KERAS_TENSORFLOW,
    keras,
    keras_mask,
)
from backends.runtimes.litert import (
    FUSED_LSTM,
    LITERT,
    LOOP,
    NO_CUDA,
    ModelError,
    check_recurrences,
    operator_names,
    plan,
    read_model,
    threads,
)
from backends.runtimes.litert import INSTALL_HINT as LITERT_HINT
from contract.runtime import framework_problem, import_framework
from contract.vocabulary import Device, Dtype
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams

#: The operators a converted Keras LSTM recurs with: Keras 3's loop, or the fused op (Keras 2's conversion).
RECURRENCES = (LOOP, FUSED_LSTM)
CONVERTER = "tf.lite.TFLiteConverter.from_keras_model (defaults)"
#: The signature from_keras_model gives the model's call, its inputs by the keras.Input names.
SIGNATURE = "serving_default"
#: The modules this row imports, in the order availability() names the first one missing: TensorFlow before Keras, which
#: imports it (without it ``import keras`` fails, which would hide TensorFlow's install hint).
NEEDED = (BACKEND_MODULES["tensorflow"], ("keras", KERAS_HINT), ("ai_edge_litert.interpreter", LITERT_HINT))
#: Converted models kept per built parameter set (each conversion takes about a second).
MODELS_KEPT = 8

REASONS = {
    Dtype.FLOAT64: ("TFLiteConverter refuses a float64 Keras LSTM: TFLite's builtin kernels are float32 (\"'tf.Transpose' "
                    "op is neither a custom op nor a flex op ... Some ops are not supported by the native TFLite "
                    "runtime\"; TF Select ops would run them, and LiteRT's interpreter has no TF kernels)"),
    Dtype.FLOAT16: ("LiteRT has no float16 LSTM: the converter's float16 option (target_spec.supported_types = "
                    "[tf.float16]) stores the weights in float16 and dequantizes them to float32 when the model loads "
                    "(DEQUANTIZE ops), so the loop computes in float32"),
    Dtype.BFLOAT16: ("TFLiteConverter refuses a bfloat16 Keras LSTM (\"Unsupported TensorFlow type bfloat16 provided for the "
                     "input type\") and a mixed_bfloat16 one (its loop's TensorListReserve \"requires element_dtype to "
                     "be 1-bit/8-bit/16-bit/32-bit/64-bit integer or 16-bit/32-bit/64-bit float type\")"),
    "gradients": "LiteRT is an inference runtime: it has no gradients",
    Device.CUDA: NO_CUDA,
}


def missing() -> dict[str, str]:
    """Each needed module that does not import here, with why (its own hint, or the real import error)."""
    return {module: problem for module, hint in NEEDED if (problem := framework_problem(module, hint)) is not None}


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def every_operator(content: bytes, where: str = "model") -> dict[str, list[str]]:
    """The operators of every subgraph of a model (name: operators in order), read from its flatbuffer: the WHILE
    loops' bodies are subgraphs that LiteRT's execution plan (the first subgraph's) does not list."""
    model = read_model(content, where)
    found = {}
    for k, graph in enumerate(model.subgraphs):
        name = graph.name.decode() if isinstance(graph.name, bytes) else graph.name
        found[name or f"subgraph {k}"] = [op for op, _ in operator_names(model, k)]
    return found


@dataclass(eq=False)
class ConvertedModel:
    """One converted model in LiteRT's interpreter: its bytes, its signature runner, what ran, how long it took."""

    content: bytes
    interpreter: object
    runner: object
    plan: list[str]  # the execution plan of the first subgraph, by operator name (DELEGATE: XNNPACK's partitions)
    seconds: float  # the conversion

    def run(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, mask: np.ndarray | None):
        """y (B, T, D * H), h_T, c_T (L * D, B, H) from float32 inputs (and a bool mask (B, T))."""
        feeds = {"x": np.ascontiguousarray(x, np.float32), "h0": np.ascontiguousarray(h0, np.float32),
                 "c0": np.ascontiguousarray(c0, np.float32)}
        if mask is not None:
            feeds["mask"] = np.ascontiguousarray(mask, np.bool_)
        out = self.runner(**feeds)
        return tuple(np.array(out[f"output_{k}"]) for k in range(3))


@dataclass(eq=False)
class KerasWeights:
    """One parameter set as the Keras layers' weights (TensorFlow tensors by Keras path), and its converted models,
    one per (batch size, mask, zero_output_for_mask)."""

    weights: dict
    models: OrderedDict = field(default_factory=OrderedDict)


@dataclass(eq=False)
class LiteRtKerasLSTM(KerasLSTM):  # keras-tensorflow/LSTM's layers, converted
    """keras-tensorflow/LSTM's stack converted by TFLiteConverter and run by LiteRT: the Keras row's layout, features
    and refusals; only the call differs."""

    id: str = "litert/keras.layers.LSTM"
    description: str = ("keras.layers.LSTM / Bidirectional (Keras 3 on TensorFlow) converted by "
                        "tf.lite.TFLiteConverter.from_keras_model to WHILE loops, run by LiteRT's interpreter (its own "
                        "process)")
    runtime: object = KERAS_TENSORFLOW
    layout: object = layouts.LSTM
    api: str = "keras.layers.LSTM"
    dtypes: tuple = (Dtype.FLOAT32,)
    devices: tuple = (Device.CPU,)
    policies: dict = field(default_factory=dict)
    gradients: bool = False
    reasons: dict = field(default_factory=lambda: dict(REASONS))
    process_environment: dict = field(default_factory=lambda: {"KERAS_BACKEND": "tensorflow"})
    origin: str = "backends.rows.litert_keras"

    def __post_init__(self):
        super().__post_init__()
        self._ran: set[str] = set()  # every operator of the execution plans of the models run in this process
        self._bodies: set[str] = set()  # the operators of their other subgraphs (the loops' conditions and bodies)

    def _availability(self, device: str) -> str | None:
        if absent := missing():  # the first, in the order of NEEDED; environment() names them all
            return next(iter(absent.values()))
        if (reason := self.runtime.availability(Device.CPU)) is not None:  # Keras' backend in this process
            return reason
        return None if device == Device.CPU else NO_CUDA

    def _environment(self, device: str) -> dict[str, object]:
        """The Keras row's environment (where Keras and TensorFlow import), each needed distribution's version or why it
        is missing, the converter, the interpreter's threads, and the operators that ran."""
        absent = missing()
        keras_side = any(module in absent for module in ("keras", "tensorflow"))
        env: dict[str, object] = {} if keras_side else {**self.runtime.environment(Device.CPU), "api": self.api}
        for module, distribution in (("tensorflow", None), ("keras", None), ("ai_edge_litert.interpreter", "ai-edge-litert")):
            if module in absent:
                env[distribution or module] = f"unavailable: {absent[module]}"
            elif distribution is not None:
                env[distribution] = _version(distribution)
        env.update(converter=CONVERTER, num_threads=threads(),
                   shapes="batch fixed per model (an open batch is refused by the converter), time open")
        if not keras_side and "ai_edge_litert.interpreter" not in absent:
            env.update(self.operators_run())
        return env

    def operators_run(self) -> dict[str, str]:
        """What LiteRT ran in the models of this process (a probe model's, a one-layer LSTM, if none has been run yet:
        the environment is taken before a row's first case): the execution plan's operators, and the loops'."""
        if not self._ran:
            try:
                cell = LSTMParams(W=np.zeros((4, 1, 1), np.float32), U=np.zeros((4, 1, 1), np.float32),
                                  b=np.zeros((4, 1), np.float32))
                with self.runtime.on(Device.CPU):
                    self.converted(LayerParams((cell,)), LayerConfig(), 1)
            except Exception as error:  # the environment never raises: say why instead
                return {"ops_run": f"the probe model failed: {type(error).__name__}: {error}"}
        return {"recurrence": " and ".join(f"{name} (one per layer and direction)" for name in RECURRENCES if name in self._ran),
                "ops_run": ", ".join(sorted(self._ran)) + " (DELEGATE: XNNPACK's partitions)",
                "loop_ops": ", ".join(sorted(self._bodies))}

    def build(self, native, *, params, layer, device, half=None):
        """The weights as TensorFlow tensors (assigned to the stack's variables before each conversion)."""
        return KerasWeights(super().build(native, params=params, layer=layer, device=device, half=half))

    def convert(self, weights: KerasWeights, params, layer, B: int, with_mask: bool, zero_output: bool) -> bytes:
        """The .tflite bytes TFLiteConverter makes of the Keras model holding ``weights`` as ``layer``, for a batch of
        ``B`` and any length: inputs x (B, T, I), h0, c0 (L * D, B, H) and, ``with_mask``, mask (B, T); outputs y,
        h_T, c_T."""
        tf = import_framework("tensorflow", BACKEND_MODULES["tensorflow"][1])
        k = keras()
        K, I, H = len(params.cells), params.input_size, params.hidden_size
        with self.runtime.on(Device.CPU):
            stack = self.stack(layer, zero_output, I, H, "float32", Device.CPU)
            stack.assign(weights.weights)
            inputs = [k.Input(batch_shape=(B, None, I), name="x"), k.Input(batch_shape=(K, B, H), name="h0"),
                      k.Input(batch_shape=(K, B, H), name="c0")]
            if with_mask:
                inputs.append(k.Input(batch_shape=(B, None), dtype="bool", name="mask"))
            outputs = stack.run(*inputs[:3], inputs[3] if with_mask else None)
            model = k.Model(inputs, list(outputs), name="keras_lstm")
        with contextlib.redirect_stdout(io.StringIO()):  # the export's "Saved artifact at ..." listing
            return tf.lite.TFLiteConverter.from_keras_model(model).convert()

    def interpreter(self, content: bytes, layer, where: str, seconds: float = 0.0) -> ConvertedModel:
        """A converted model in LiteRT's interpreter (its bytes checked: ModelError naming ``where``), its execution plan
        checked to recur with one WHILE (or fused op) per layer and direction."""
        interpreter = LITERT.interpreter(content, where)
        check_recurrences(interpreter, content, layer, RECURRENCES, where)
        signatures = interpreter.get_signature_list()
        signature = signatures.get(SIGNATURE, {})
        if not {"x", "h0", "c0"} <= set(signature.get("inputs", ())) or \
                not {f"output_{k}" for k in range(3)} <= set(signature.get("outputs", ())):
            raise ModelError(f"{where}: no signature {SIGNATURE!r} with inputs x, h0, c0 and outputs output_0 .. output_2 "
                             f"(y, h_T, c_T); its signatures are {signatures}")
        ran = plan(interpreter)
        converted = ConvertedModel(bytes(content), interpreter, interpreter.get_signature_runner(SIGNATURE), ran, seconds)
        self._ran.update(ran)
        for graph, ops in list(every_operator(content, where).items())[1:]:
            self._bodies.update(ops)
        return converted

    def model(self, weights: KerasWeights, params, layer, B: int, with_mask: bool, zero_output: bool) -> ConvertedModel:
        """The converted model for a batch of ``B`` (any T), converted and checked once."""
        key = (B, with_mask, zero_output)
        if key not in weights.models:
            start = time.perf_counter()
            content = self.convert(weights, params, layer, B, with_mask, zero_output)
            where = (f"{self.id} model ({layer.num_layers} layer(s), {layer.direction}, B={B}"
                     f"{', mask' if with_mask else ''})")
            weights.models[key] = self.interpreter(content, layer, where, time.perf_counter() - start)
            while len(weights.models) > MODELS_KEPT:
                weights.models.popitem(last=False)
        weights.models.move_to_end(key)
        return weights.models[key]

    def converted(self, params, layer, B: int, *, with_mask: bool = False, zero_output: bool = True) -> ConvertedModel:
        """The model this row runs for ``params`` as ``layer`` at batch ``B`` (for tests and timings)."""
        return self.model(self.built_for(params, layer, Device.CPU), params, layer, B, with_mask, zero_output)

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        mask, zero_output = keras_mask(x.shape[0], lengths, mask, layer.zero_output_for_mask)
        with self.runtime.on(device):
            converted = self.converted(params, layer, x.shape[1], with_mask=mask is not None, zero_output=zero_output)
        y, h_T, c_T = converted.run(x.transpose(1, 0, 2), h0, c0, None if mask is None else mask.T)
        return y.transpose(1, 0, 2), h_T, c_T


ROWS = (LiteRtKerasLSTM(),)

__all__ = ["CONVERTER", "LOOP", "NEEDED", "REASONS", "RECURRENCES", "ROWS", "ConvertedModel", "KerasWeights",
           "LiteRtKerasLSTM", "every_operator", "missing"]
