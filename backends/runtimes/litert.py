"""LiteRT (TFLite) as a runtime: the fused-LSTM models this project builds with TFLite's flatbuffer schema, and
LiteRT's interpreter to run any ``.tflite`` model. ``ai_edge_litert`` (its Interpreter and the schema's generated
code, ``ai_edge_litert.schema_py_generated``, with ``flatbuffers``) is imported only when a model is built or run.

The model of a stack (:func:`layer_model`), one per parameter set and shape (T, B): the weights are constant
buffers, as in every model a user deploys, and each layer and direction is one ``UNIDIRECTIONAL_SEQUENCE_LSTM``
(version 1: float32), time-major:

    x (T, B, I) -> [REVERSE_V2 on time, for a reverse direction] -> the op -> [REVERSE_V2 back]
                -> CONCATENATION of the directions on the last axis (forward first) -> the next layer, or y

The op's states are *variable* tensors (the kernel refuses others): h_0 and c_0 are written into them before each
run (:meth:`FusedModel.run`), and after it they hold the final states h_T, c_T, read back from them (a reverse
direction's hold the state after x_0, as the spec's (10) says). The op has no sequence lengths and no mask.

Hostile input: :func:`read_model` checks what it is given before LiteRT sees it: bytes, TFLite's file identifier
("TFL3" at offset 4), a flatbuffer that parses, and names other formats (ONNX, OpenVINO IR, safetensors, a pickle)
that are passed for one; LiteRT's own refusals are re-raised naming the model. :func:`fused_lstm_ops` finds the
fused LSTM ops of any model and refuses an op version the spec does not know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from backends.layouts.tflite import INPUTS, direction_words, weight_name
from contract.runtime import NumpyRuntime, framework_problem, import_framework, threads_wanted
from contract.vocabulary import Device
from spec.layer import LayerConfig
from spec.weights_file import foreign_format

INSTALL_HINT = "ai-edge-litert is not installed (pip install 'lstm-conformance[litert]')"
FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
#: What TFLite's converter makes of Keras 3's LSTM: a loop whose body is the cell's ops.
LOOP = "WHILE"
#: The op versions whose computation the spec knows: version 1 is the float32 kernel; version 2 its hybrid kernel (int8
#: weights, activations quantized per batch row as it runs: spec/quantized.py); 3 and above are the hybrid kernel
#: with asymmetric activations and the integer kernels, which nothing here judges.
KNOWN_VERSIONS = {1: "float32", 2: "hybrid: int8 weights, float32 activations quantized per batch row"}
IDENTIFIER = b"TFL3"
NO_CUDA = ("LiteRT runs on the CPU here: its GPU delegates are OpenCL/WebGPU ones for mobile and desktop GPUs, and "
           "its fused LSTM runs on the CPU kernels (XNNPACK does not take it)")


class ModelError(ValueError):
    """A model that is not a LiteRT model, or not one this project can run or read, with what was read."""


def schema():
    import_framework("flatbuffers", INSTALL_HINT)
    return import_framework("ai_edge_litert.schema_py_generated", INSTALL_HINT)


def interpreter_module():
    return import_framework("ai_edge_litert.interpreter", INSTALL_HINT)


def threads() -> int:
    """The interpreter's threads: LSTMC_THREADS, else one per CPU."""
    return threads_wanted() or os.cpu_count() or 1


def _describe(content: bytes) -> str:
    return f"{len(content)} bytes starting {content[:16]!r}"


def read_model(content: object, where: str = "model"):
    """The parsed model (the schema's object API, ``ModelT``) of ``content``, a ``.tflite`` file's bytes, checked:
    ModelError naming ``where``, what was expected and what was read otherwise."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ModelError(f"{where}: expected the bytes of a .tflite file, got {type(content).__name__}")
    content = bytes(content)
    if len(content) < 8 or content[4:8] != IDENTIFIER:
        known = foreign_format(content[:9]) or _other_format(content)
        what = f"a {known}" if known else _describe(content)
        raise ModelError(f"{where}: not a LiteRT (TFLite) model: expected the file identifier {IDENTIFIER!r} at byte 4, "
                         f"got {what}")
    S = schema()
    try:
        if not S.Model.ModelBufferHasIdentifier(content, 0):
            raise ValueError("no TFL3 identifier")
        model = S.ModelT.InitFromPackedBuf(content, 0)
    except Exception as error:  # a flatbuffer cut short reads out of range (struct.error, IndexError, ...)
        raise ModelError(f"{where}: a truncated or corrupt TFLite flatbuffer ({_describe(content)}): "
                         f"{type(error).__name__}: {error}") from None
    if not model.subgraphs:
        raise ModelError(f"{where}: a TFLite model without a subgraph ({_describe(content)})")
    _check_references(model, len(content), where)
    return model


def _check_references(model, size: int, where: str) -> None:
    """Every index the model's operators and tensors hold points at something it has (a flatbuffer can be complete
    and still name tensor 10**6), and every buffer stored outside the flatbuffer (models over 2 GB) lies in the file."""
    buffers, codes = model.buffers or [], model.operatorCodes or []
    for k, buffer in enumerate(buffers):
        offset, length = getattr(buffer, "offset", 0) or 0, getattr(buffer, "size", 0) or 0
        if offset and offset + length > size:
            raise ModelError(f"{where}: buffer {k} lies at bytes {offset} .. {offset + length}, beyond the file's "
                             f"{size} bytes")
    for g, graph in enumerate(model.subgraphs):
        tensors = graph.tensors or []
        for t, tensor in enumerate(tensors):
            if tensor.shape is None and tensor.buffer and buffers[tensor.buffer].data is not None:
                raise ModelError(f"{where}: subgraph {g} tensor {t} holds data but has no shape")
            if not 0 <= tensor.buffer < max(len(buffers), 1):
                raise ModelError(f"{where}: subgraph {g} tensor {t} names buffer {tensor.buffer}, of {len(buffers)}")
        for o, op in enumerate(graph.operators or ()):
            if not 0 <= op.opcodeIndex < len(codes):
                raise ModelError(f"{where}: subgraph {g} operator {o} names operator code {op.opcodeIndex}, of "
                                 f"{len(codes)}")
            for role, indices in (("input", op.inputs), ("output", op.outputs)):
                bad = [int(i) for i in (indices if indices is not None else ()) if not -1 <= int(i) < len(tensors)]
                if bad:
                    raise ModelError(f"{where}: subgraph {g} operator {o} names {role} tensor {bad[0]}, of "
                                     f"{len(tensors)}")


def _other_format(content: bytes) -> str | None:
    """The model formats people pass for a .tflite, by their first bytes."""
    head = content.lstrip()[:64]
    if head.startswith(b"<?xml") or head.startswith(b"<net"):
        return "an XML file (an OpenVINO IR's .xml?)"
    if content[:1] == b"\x08" and b"\x12" in content[:16]:
        return "protobuf data (an ONNX model?)"
    return None


def operator_names(model, subgraph: int = 0) -> list[tuple[str, int]]:
    """Every operator of a subgraph (the first: the model's main graph) as (builtin name, version), in the model's
    order; a loop's body is a subgraph of its own."""
    S = schema()
    names = {value: name for name, value in vars(S.BuiltinOperator).items() if not name.startswith("_")}
    codes = model.operatorCodes or []
    found = []
    for op in model.subgraphs[subgraph].operators or ():
        code = codes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        found.append((names.get(builtin, f"builtin {builtin}"), code.version))
    return found


def fused_lstm_ops(model, where: str = "model", versions: Mapping[int, str] = KNOWN_VERSIONS) -> list:
    """The model's UNIDIRECTIONAL_SEQUENCE_LSTM operators (the schema's OperatorT), each of one of ``versions``;
    ModelError where there is none (an LSTM converted to a loop of other ops) or one of another version."""
    ops = model.subgraphs[0].operators or ()
    names = operator_names(model)
    fused = [op for op, (name, _) in zip(ops, names) if name == FUSED_LSTM]
    if not fused:
        listed = ", ".join(sorted({name for name, _ in names})) or "no operators"
        raise ModelError(f"{where}: no {FUSED_LSTM} operator (the fused LSTM); the model's operators are: {listed}")
    for name, version in names:
        if name == FUSED_LSTM and version not in versions:
            raise ModelError(f"{where}: {FUSED_LSTM} version {version}, which the spec does not know: it knows version "
                             f"{', '.join(f'{v} ({kind})' for v, kind in versions.items())}; the op's other versions "
                             "are LiteRT's hybrid and integer kernels")
    tensors = model.subgraphs[0].tensors or []
    for k, op in enumerate(fused):
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else ())]
        if len(inputs) != len(INPUTS):
            raise ModelError(f"{where}: {FUSED_LSTM} #{k} has {len(inputs)} inputs, expected the op's {len(INPUTS)}")
        for name in ("input", "output_state", "cell_state"):
            index = inputs[INPUTS.index(name)]
            if index < 0:
                raise ModelError(f"{where}: {FUSED_LSTM} #{k} has no {name} (input {INPUTS.index(name)} is absent)")
            if name != "input" and not tensors[index].isVariable:
                raise ModelError(f"{where}: {FUSED_LSTM} #{k}'s {name} is not a variable tensor, as the op requires")
    return fused


class _Graph:
    """The tensors, buffers and operators of one subgraph under construction."""

    def __init__(self, S):
        self.S = S
        self.buffers = [S.BufferT()]  # buffer 0: empty, the convention for tensors without data
        self.tensors, self.operators, self.codes, self.index = [], [], [], {}

    def tensor(self, name: str, shape, data: np.ndarray | None = None, *, variable: bool = False,
               dtype=np.float32, scale: float | None = None) -> int:
        """A tensor (float32, int32, or int8 with its per-tensor ``scale`` and zero point 0), its data a buffer."""
        S = self.S
        t = S.TensorT()
        t.name, t.shape, t.isVariable = name, [int(n) for n in shape], variable
        t.type = {np.dtype(np.int32): S.TensorType.INT32, np.dtype(np.int8): S.TensorType.INT8}.get(
            np.dtype(dtype), S.TensorType.FLOAT32)
        if scale is not None:
            t.quantization = S.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [float(scale)], [0]
        t.buffer = 0
        if data is not None:
            buffer = S.BufferT()
            # A NumPy vector of bytes: the schema's Pack writes it in one piece (a bytes object, byte by byte).
            buffer.data = np.frombuffer(np.ascontiguousarray(data, dtype).tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def op(self, builtin: str, inputs, outputs, options_type: str | None = None, options=None) -> None:
        S = self.S
        code_value = getattr(S.BuiltinOperator, builtin)
        if code_value not in self.codes:
            self.codes.append(code_value)
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes.index(code_value), list(inputs), list(outputs)
        if options_type is not None:
            op.builtinOptionsType, op.builtinOptions = getattr(S.BuiltinOptions, options_type), options
        self.operators.append(op)

    def reverse_time(self, source: int, name: str, shape) -> int:
        axis = self.index.get("time axis")
        if axis is None:
            axis = self.tensor("time axis", (1,), np.array([0], np.int32), dtype=np.int32)
        out = self.tensor(name, shape)
        self.op("REVERSE_V2", [source, axis], [out])
        return out

    def model(self, inputs, outputs, description: str, versions: Mapping[int, int] | None = None) -> bytes:
        """The model's bytes; ``versions``: an operator's version by its builtin code (1 otherwise)."""
        S = self.S
        flatbuffers = import_framework("flatbuffers", INSTALL_HINT)
        graph = S.SubGraphT()
        graph.tensors, graph.operators, graph.inputs, graph.outputs = self.tensors, self.operators, inputs, outputs
        graph.name = "main"
        model = S.ModelT()
        model.version, model.description, model.subgraphs, model.buffers = 3, description, [graph], self.buffers
        model.operatorCodes = []
        for value in self.codes:
            code = S.OperatorCodeT()
            # deprecated_builtin_code is an int8: codes above 127 keep the placeholder there (the schema's rule).
            code.builtinCode, code.deprecatedBuiltinCode = value, min(value, 127)
            code.version = (versions or {}).get(value, 1)
            model.operatorCodes.append(code)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
        return bytes(builder.Output())


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, float]:
    """TFLite's converter's dynamic-range weights: symmetric, per tensor, s = max|w| / 127, q = round(w / s) within
    -127..127 (never -128: the hybrid kernel's SIMD products get -128 wrong, findings/litert_hybrid_lstm_int8_minus_128_sign_wrap.py)."""
    w = np.asarray(w, np.float32)
    top = float(np.max(np.abs(w), initial=0.0))
    scale = top / 127.0 if top > 0 else 1.0
    return np.clip(np.round(w / np.float32(scale)), -127, 127).astype(np.int8), scale


def layer_model(native: Mapping[str, np.ndarray], layer: LayerConfig, *, input_size: int, hidden_size: int,
                output_size: int, T: int, B: int, description: str = "lstm-conformance fused LSTM",
                hybrid: bool = False) -> bytes:
    """The .tflite bytes of the stack whose op inputs ``native`` holds (backends/layouts/tflite.py's names, float32),
    configured as ``layer`` (cell_clip and proj_clip as the ops' options), for x of shape (T, B, I). ``hybrid``: every
    weight matrix and peephole int8 (:func:`quantize_weights`), the op's version 2 (LiteRT's hybrid kernel)."""
    S = schema()
    graph = _Graph(S)
    I, H, P, D = input_size, hidden_size, output_size, layer.num_directions
    x = graph.tensor("x", (T, B, I))
    layer_input, width = x, I
    for l in range(layer.num_layers):
        outputs = []
        for word in direction_words(layer):
            reverse = layer.reversed(direction_words(layer).index(word))
            prefix = weight_name(l, word, "")
            source = graph.reverse_time(layer_input, f"{prefix}input reversed", (T, B, width)) if reverse else layer_input
            inputs = []
            for name in INPUTS:
                if name == "input":
                    inputs.append(source)
                elif name == "output_state":
                    inputs.append(graph.tensor(prefix + name, (B, P), variable=True))
                elif name == "cell_state":
                    inputs.append(graph.tensor(prefix + name, (B, H), variable=True))
                elif prefix + name in native and hybrid and name in HYBRID_INT8:
                    q, scale = quantize_weights(native[prefix + name])
                    inputs.append(graph.tensor(prefix + name, q.shape, q, dtype=np.int8, scale=scale))
                elif prefix + name in native:
                    value = np.asarray(native[prefix + name], np.float32)
                    inputs.append(graph.tensor(prefix + name, value.shape, value))
                else:
                    inputs.append(-1)  # an absent optional input
            out = graph.tensor(f"{prefix}output", (T, B, P))
            options = S.UnidirectionalSequenceLSTMOptionsT()
            options.fusedActivationFunction = S.ActivationFunctionType.TANH
            options.cellClip = float(layer.cell_clip or 0.0)  # 0: no clip (TFLite's convention)
            options.projClip = float(layer.proj_clip or 0.0)
            options.timeMajor = True
            graph.op(FUSED_LSTM, inputs, [out], "UnidirectionalSequenceLSTMOptions", options)
            outputs.append(graph.reverse_time(out, f"{prefix}output in time order", (T, B, P)) if reverse else out)
        width = D * P
        if D == 1:
            layer_input = outputs[0]
        else:
            joined = graph.tensor(f"layer{l}.output", (T, B, width))
            options = S.ConcatenationOptionsT()
            options.axis = 2
            graph.op("CONCATENATION", outputs, [joined], "ConcatenationOptions", options)
            layer_input = joined
    versions = {getattr(S.BuiltinOperator, FUSED_LSTM): 2} if hybrid else None
    return graph.model([x], [layer_input], description, versions)


#: The op inputs a hybrid fused LSTM holds in int8 (the kernel reads them as int8 when the weights are): every weight
#: matrix, the peepholes and the projection; biases and layer normalization stay float32.
HYBRID_INT8 = tuple(name for name in INPUTS if name.endswith("_weights"))


def int8_tensors(interpreter, names) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The int8 tensors of a model among ``names``: (integers, scales, zero points) as its flatbuffer holds them."""
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["name"] in names and detail["dtype"] == np.int8:
            parameters = detail["quantization_parameters"]
            found[detail["name"]] = (interpreter.get_tensor(detail["index"]).copy(), np.asarray(parameters["scales"]),
                                     np.asarray(parameters["zero_points"]))
    return found


@dataclass(eq=False)
class FusedModel:
    """A fused-LSTM model in an interpreter, and where its input, output and state variables are."""

    content: bytes
    interpreter: object
    x: int
    y: int
    states: tuple[tuple[int, int], ...]  # (h, c) variable tensors per cell, cell k = l * D + d

    def ops_run(self) -> list[str]:
        """The operators of the interpreter's execution plan: what runs, by name."""
        return plan(self.interpreter)

    def run(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """y (T, B, D * P), h_T (L * D, B, P), c_T (L * D, B, H) from float32 inputs."""
        it = self.interpreter
        shape = tuple(it.get_input_details()[0]["shape"])
        if x.ndim != 3 or x.shape[1:] != shape[1:]:  # the model's B is fixed: its state variables are (B, .)
            raise ModelError(f"x: this model runs x of shape (T, {shape[1]}, {shape[2]}) (its batch size is fixed by "
                             f"its state variables), got {tuple(x.shape)}")
        if x.shape[0] != shape[0]:  # another T
            it.resize_tensor_input(self.x, list(x.shape))
            it.allocate_tensors()
        if len(h0) != len(self.states) or len(c0) != len(self.states):
            raise ModelError(f"h0, c0: one state per layer and direction, {len(self.states)}, got {len(h0)} and {len(c0)}")
        for (h, c), h_k, c_k in zip(self.states, h0, c0, strict=True):
            it.set_tensor(h, np.ascontiguousarray(h_k, np.float32))
            it.set_tensor(c, np.ascontiguousarray(c_k, np.float32))
        it.set_tensor(self.x, np.ascontiguousarray(x, np.float32))
        it.invoke()
        y = it.get_tensor(self.y).copy()
        h_T = np.stack([it.get_tensor(h).copy() for h, _ in self.states])
        c_T = np.stack([it.get_tensor(c).copy() for _, c in self.states])
        return y, h_T, c_T


def plan(interpreter) -> list[str]:
    """The operators of an interpreter's execution plan, by name: what runs (LiteRT's only account of it is the
    interpreter's private _get_ops_details)."""
    return [op["op_name"] for op in interpreter._get_ops_details()]


def check_recurrences(interpreter, content: bytes, layer: LayerConfig, kinds: tuple[str, ...], where: str) -> dict:
    """That the execution plan recurs once per layer and direction with the ops ``kinds`` (the fused op, a WHILE
    loop): their counts; ModelError naming ``where`` and what ran otherwise."""
    ran = plan(interpreter)
    found = {name: ran.count(name) for name in kinds if name in ran}
    expected = layer.num_layers * layer.num_directions
    if not found:
        listed = ", ".join(sorted({name for name, _ in operator_names(read_model(content, where))}))
        raise ModelError(f"{where}: no {' or '.join(kinds)} in LiteRT's execution plan ({ran}); the model's operators "
                         f"are: {listed}")
    if sum(found.values()) != expected:
        raise ModelError(f"{where}: {found} in LiteRT's execution plan, expected {expected} (one per layer and "
                         f"direction): {ran}")
    return found


class LiteRt(NumpyRuntime):
    name = "litert"

    def availability(self, device: str) -> str | None:
        if (problem := framework_problem("ai_edge_litert.interpreter", INSTALL_HINT)) is not None:
            return problem
        return None if device == Device.CPU else NO_CUDA

    def environment(self, device: str) -> dict[str, object]:
        from importlib.metadata import version

        return {"ai-edge-litert": version("ai-edge-litert"), "flatbuffers": version("flatbuffers"),
                "num_threads": threads(), "op": f"{FUSED_LSTM} version 1 (float32 kernel)"}

    def interpreter(self, content: bytes, where: str = "model"):
        """LiteRT's Interpreter of a checked model, its tensors allocated; its refusal re-raised naming the model."""
        read_model(content, where)
        try:
            interpreter = interpreter_module().Interpreter(model_content=bytes(content), num_threads=threads())
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{where}: LiteRT refused the model: {error}") from None
        return interpreter

    def fused(self, content: bytes, layer: LayerConfig, where: str = "model") -> FusedModel:
        """A :func:`layer_model` in an interpreter, its fused LSTM ops checked to be in the plan that runs."""
        interpreter = self.interpreter(content, where)
        index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
        names = [weight_name(l, word, state) for l in range(layer.num_layers) for word in direction_words(layer)
                 for state in ("output_state", "cell_state")]
        missing = [name for name in ["x", *names] if name not in index]
        if missing:
            raise ModelError(f"{where}: no tensor {missing[0]!r}: a model of this project's fused LSTM names its input x "
                             f"and each op's state variables layer<l>.<forward|reverse>.output_state / .cell_state, "
                             f"{layer.num_layers} layer(s) {layer.direction}")
        states = tuple((index[weight_name(l, word, "output_state")], index[weight_name(l, word, "cell_state")])
                       for l in range(layer.num_layers) for word in direction_words(layer))
        check_recurrences(interpreter, content, layer, (FUSED_LSTM,), where)
        return FusedModel(bytes(content), interpreter, index["x"], interpreter.get_output_details()[0]["index"], states)


LITERT = LiteRt()

__all__ = ["FUSED_LSTM", "HYBRID_INT8", "INSTALL_HINT", "KNOWN_VERSIONS", "int8_tensors", "quantize_weights", "LITERT", "LOOP", "FusedModel", "LiteRt", "ModelError",
           "check_recurrences", "fused_lstm_ops", "layer_model", "operator_names", "plan", "read_model", "schema"]
