"""LiteRT's hybrid LSTM runs a weight tensor quantized per channel as if its scale were 0: its product vanishes

Checked with ai-edge-litert 2.3.0 (its flatbuffer schema, ai_edge_litert.schema_py_generated), flatbuffers 25.12.19,
numpy 2.4.6 (x86-64 CPU, one thread).

Expected: a hybrid (dynamic-range: int8 weights, float32 activations) UNIDIRECTIONAL_SEQUENCE_LSTM whose
input_to_forget_weights carries per-channel quantization (one scale per output row, quantized_dimension 0, zero
points 0) is either refused when the interpreter is prepared, or run with those scales: W_f = q[r, :] * scale[r].

Actual: the model is accepted and runs without a message, and the forget gate's input product is zero: the outputs
equal (to float32 rounding, ~1e-7) a NumPy model of the hybrid kernel with that tensor's scale set to 0, and differ
from the same model with the per-channel scales by ~0.2. The kernel takes a weight's scale from the tensor's legacy
per-tensor field (lstm_eval.cc, GetTensorScale: tensor->params.scale), which the interpreter sets only for a tensor
with exactly one scale; for a per-channel tensor it stays 0. LiteRT's hybrid FULLY_CONNECTED and CONV_2D have
per-channel paths; the LSTM kernel has none and does not check for per-channel weights either.

Upstream: none found (searched tensorflow/tensorflow and google-ai-edge/LiteRT issues for per-channel hybrid LSTM,
UNIDIRECTIONAL_SEQUENCE_LSTM per-channel scale). The same silent fallback in TFLite Micro's FULLY_CONNECTED was fixed
by refusing per-channel weights: tensorflow/tflite-micro#2602 ("Fail per-channel quantized FullyConnected layers").
"""

import sys

try:
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as S
    from ai_edge_litert.interpreter import Interpreter
except ImportError as error:
    print(f"framework missing: {error} (pip install ai-edge-litert flatbuffers numpy)")
    sys.exit(77)

GATES = ("input", "forget", "cell", "output")  # TFLite's gate order
T, B, I, H = 3, 2, 5, 4
f32 = np.float32
rng = np.random.default_rng(0)
W = {g: rng.normal(0, 0.6, (H, I)).astype(f32) for g in GATES}
R = {g: rng.normal(0, 0.6, (H, H)).astype(f32) for g in GATES}
bias = {g: rng.normal(0, 0.2, H).astype(f32) for g in GATES}
x = rng.normal(0, 1.5, (T, B, I)).astype(f32)


def per_tensor(w):
    """TFLite's dynamic-range scheme: scale = max|w| / 127, q = round(w / scale)."""
    scale = f32(np.abs(w).max() / 127)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), np.array([scale], f32)


def per_channel(w):
    """One symmetric scale per output row (quantized_dimension 0), as TFLite's converter writes for FULLY_CONNECTED."""
    scale = (np.abs(w).max(axis=1) / 127).astype(f32)
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale


quantized = {f"input_to_{g}_weights": (per_channel if g == "forget" else per_tensor)(W[g]) for g in GATES}
quantized.update({f"recurrent_to_{g}_weights": per_tensor(R[g]) for g in GATES})


def model() -> bytes:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM (time-major, tanh, no clip), hybrid: int8 weights, float32 x, biases, states."""
    buffers, tensors = [S.BufferT()], []

    def tensor(name, shape, data=None, kind=S.TensorType.FLOAT32, scales=None, variable=False):
        t = S.TensorT()
        t.name, t.shape, t.type, t.isVariable, t.buffer = name, list(shape), kind, variable, 0
        if data is not None:
            buffer = S.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        if scales is not None:
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = [float(s) for s in scales], [0] * len(scales), 0
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    inputs = [tensor("x", (T, B, I))]
    for name in [f"input_to_{g}_weights" for g in GATES] + [f"recurrent_to_{g}_weights" for g in GATES]:
        q, scales = quantized[name]
        inputs.append(tensor(name, q.shape, q, S.TensorType.INT8, scales))
    inputs += [-1] * 3  # no peepholes
    inputs += [tensor(f"{g}_gate_bias", (H,), bias[g]) for g in GATES]
    inputs += [-1, -1]  # no projection
    inputs += [tensor("output_state", (B, H), variable=True), tensor("cell_state", (B, H), variable=True)]
    inputs += [-1] * 4  # no layer normalization
    out = tensor("y", (T, B, H))
    options = S.UnidirectionalSequenceLSTMOptionsT()
    options.fusedActivationFunction, options.timeMajor = S.ActivationFunctionType.TANH, True
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [out]
    op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.UnidirectionalSequenceLSTMOptions, options
    graph = S.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs, graph.name = tensors, [op], [0], [out], "main"
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    code.version = 2  # hybrid
    m = S.ModelT()
    m.version, m.description, m.subgraphs, m.buffers, m.operatorCodes = 3, "hybrid lstm", [graph], buffers, [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def hybrid_reference(forget_scale):
    """The hybrid kernel in NumPy (lstm_eval.cc LstmStepHybrid, float32): each batch row of x_t and h_{t-1} quantized
    symmetrically to int8 (scale max|row| / 127, halves rounded away from 0), exact int32 dot products with the int8
    weights, scaled by row scale * weight scale and added to the bias. ``forget_scale``: input_to_forget_weights'
    scale, a scalar (0) or one per output row."""
    def quantize(v):
        top = np.abs(v).max(axis=1, keepdims=True).astype(f32)
        safe = np.where(top > 0, top, f32(1))
        q = np.clip(np.sign(v) * np.floor(np.abs((v * (f32(127) / safe)).astype(f32)) + 0.5), -127, 127)
        return q.astype(np.int64), np.where(top > 0, top / f32(127), f32(1)).astype(f32)

    def sigmoid(z):
        return (1 / (1 + np.exp(-z.astype(np.float64)))).astype(f32)

    h, c, ys = np.zeros((B, H), f32), np.zeros((B, H), f32), []
    for t in range(T):
        qx, sx = quantize(x[t])
        qh, sh = (None, None) if not h.any() else quantize(h)  # the kernel skips an all-zero h
        z = {}
        for g in GATES:
            acc = np.tile(bias[g], (B, 1))
            wq, ws = quantized[f"input_to_{g}_weights"]
            ws = np.broadcast_to(forget_scale if g == "forget" else ws[0], (H,)).astype(f32)
            acc = (acc + ((qx @ wq.T.astype(np.int64)).astype(f32) * (sx * ws[None, :]).astype(f32))).astype(f32)
            if qh is not None:
                rq, rs = quantized[f"recurrent_to_{g}_weights"]
                acc = (acc + ((qh @ rq.T.astype(np.int64)).astype(f32) * (sh * rs[0]).astype(f32))).astype(f32)
            z[g] = acc
        i, f, o = sigmoid(z["input"]), sigmoid(z["forget"]), sigmoid(z["output"])
        c = (f * c + i * np.tanh(z["cell"]).astype(f32)).astype(f32)
        h = (o * np.tanh(c)).astype(f32)
        ys.append(h)
    return np.stack(ys)


def run():
    interpreter = Interpreter(model_content=model(), num_threads=1)
    interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_tensor_details()}
    index = {name: d["index"] for name, d in details.items()}
    for name in ("output_state", "cell_state"):
        interpreter.set_tensor(index[name], np.zeros((B, H), f32))
    interpreter.set_tensor(index["x"], x)
    interpreter.invoke()
    return interpreter.get_tensor(index["y"]), details["input_to_forget_weights"]["quantization_parameters"]


# control: every weight per tensor, the NumPy model of the kernel agrees
per_channel_forget = quantized["input_to_forget_weights"]
quantized["input_to_forget_weights"] = per_tensor(W["forget"])
control = float(np.abs(run()[0] - hybrid_reference(quantized["input_to_forget_weights"][1][0])).max())
print(f"control, all weights per tensor: max |LiteRT - NumPy hybrid| = {control:.3g}")
quantized["input_to_forget_weights"] = per_channel_forget
try:
    got, stored = run()
except Exception as error:  # a refusal is one of the expected answers
    print(f"NOT REPRODUCED: LiteRT refuses the per-channel LSTM weights: {error}")
    sys.exit(1)
print(f"input_to_forget_weights stored with {len(stored['scales'])} scales "
      f"[{', '.join(f'{s:.5f}' for s in stored['scales'])}], quantized_dimension {stored['quantized_dimension']}: "
      f"the model was accepted")

as_zero = float(np.abs(got - hybrid_reference(f32(0))).max())
as_per_channel = float(np.abs(got - hybrid_reference(quantized["input_to_forget_weights"][1])).max())
print(f"max |LiteRT - NumPy hybrid, per-channel scales|     = {as_per_channel:.3g}  (expected ~0)")
print(f"max |LiteRT - NumPy hybrid, forget weights scale 0| = {as_zero:.3g}")
found = control < 1e-5 and as_zero < 1e-5 and as_per_channel > 1e-2
print("REPRODUCED: the per-channel weights were run with scale 0" if found else
      "NOT REPRODUCED: LiteRT now refuses per-channel LSTM weights or dequantizes them per channel")
sys.exit(0 if found else 1)
