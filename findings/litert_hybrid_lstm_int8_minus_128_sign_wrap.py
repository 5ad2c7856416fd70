"""LiteRT's hybrid LSTM on x86 computes an int8 weight of -128 times a negative activation with the wrong sign

Checked with ai-edge-litert 2.3.0 (its flatbuffer schema, ai_edge_litert.schema_py_generated), flatbuffers 25.12.19,
numpy 2.4.6 (x86-64 CPU with SSSE3/SSE4.1/AVX2/AVX-512, one thread).

Expected: a hybrid (dynamic-range: int8 weights, float32 activations) UNIDIRECTIONAL_SEQUENCE_LSTM computes each
gate's x_t product as the exact int32 dot product of its int8 weight rows with the int8-quantized x_t row, scaled:
a weight of -128 is a valid int8 value (the tensor's zero point is 0) and -128 * -127 = +16256.

Actual: on x86 the SIMD dot product (tensor_utils' SSE/AVX2 MatrixBatchVectorMultiplyAccumulate) moves the
activation's sign onto the weight with _mm_sign_epi8 before _mm_maddubs_epi16; sign(-128, negative) is -(-128),
which wraps to -128, so the product is -128 * |a| instead of +128 * |a|. This happens in the columns the SIMD blocks
take (the first 16 * floor(I / 16) here; I = 20); in the scalar tail the product is right. A -128 in input column 0
of the cell gate, against x_t whose column 0 quantizes to -127, changes the pre-activation by 256 * 127 * scales and
the outputs by ~0.8 (they equal a NumPy model of the kernel with the wrapped product to float32 rounding); the same
weight moved to column 19, in the tail, gives the exact answer.

TFLite's own converter never writes -128 (it clamps dynamic-range weights to -127..127, symmetric), so this affects
models quantized by other tools that use the full int8 range, or weights edited by hand.

Upstream: none found (searched tensorflow/tensorflow and google-ai-edge/LiteRT issues for _mm_sign_epi8 -128, hybrid
-128 weight, tensor_utils int8 overflow). The same misuse of _mm_sign_epi8 was reported against ggml:
ggml-org/ggml#1393 ("Potential integer overflows in usage of _mm_sign_epi8").
"""

import platform
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
T, B, I, H = 2, 2, 20, 4  # I = 20: columns 0..15 in a 16-wide SIMD block, 16..19 in the scalar tail
f32 = np.float32
rng = np.random.default_rng(1)
x = rng.normal(0, 0.5, (T, B, I)).astype(f32)
SCALE = {g: f32(0.004) for g in GATES}  # per-tensor weight scales, zero points 0
base = {f"{kind}_to_{g}_weights": rng.integers(-127, 128, (H, I if kind == "input" else H)).astype(np.int8)
        for kind in ("input", "recurrent") for g in GATES}
bias = {g: rng.normal(0, 0.2, H).astype(f32) for g in GATES}


def model(weights) -> bytes:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM (time-major, tanh, no clip), hybrid: int8 weights, float32 x, biases, states."""
    buffers, tensors = [S.BufferT()], []

    def tensor(name, shape, data=None, kind=S.TensorType.FLOAT32, scale=None, variable=False):
        t = S.TensorT()
        t.name, t.shape, t.type, t.isVariable, t.buffer = name, list(shape), kind, variable, 0
        if data is not None:
            buffer = S.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(scale)], [0]
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    inputs = [tensor("x", (T, B, I))]
    for kind in ("input", "recurrent"):
        for g in GATES:
            q = weights[f"{kind}_to_{g}_weights"]
            inputs.append(tensor(f"{kind}_to_{g}_weights", q.shape, q, S.TensorType.INT8, SCALE[g]))
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


def run(weights, xs):
    interpreter = Interpreter(model_content=model(weights), num_threads=1)
    interpreter.allocate_tensors()
    index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    for name in ("output_state", "cell_state"):
        interpreter.set_tensor(index[name], np.zeros((B, H), f32))
    interpreter.set_tensor(index["x"], xs)
    interpreter.invoke()
    return interpreter.get_tensor(index["y"])


def hybrid_reference(weights, xs, wrapped_columns=0):
    """The hybrid kernel in NumPy (lstm_eval.cc LstmStepHybrid, float32): each batch row of x_t and h_{t-1} quantized
    symmetrically to int8 (scale max|row| / 127, halves rounded away from 0), int32 dot products with the int8
    weights, scaled by row scale * weight scale and added to the bias. ``wrapped_columns``: in the first that many
    columns, a weight of -128 times a negative activation a counts as -128 * |a| (the SIMD sign wrap)."""
    def quantize(v):
        top = np.abs(v).max(axis=1, keepdims=True).astype(f32)
        safe = np.where(top > 0, top, f32(1))
        q = np.clip(np.sign(v) * np.floor(np.abs((v * (f32(127) / safe)).astype(f32)) + 0.5), -127, 127)
        return q.astype(np.int64), np.where(top > 0, top / f32(127), f32(1)).astype(f32)

    def dot(q, w):
        w = w.astype(np.int64)
        exact = q @ w.T
        n = wrapped_columns
        wrong = (q[:, None, :n] < 0) & (w[None, :, :n] == -128)  # (batch, row, column)
        return exact - (wrong * 256 * np.abs(q)[:, None, :n]).sum(-1)

    def sigmoid(z):
        return (1 / (1 + np.exp(-z.astype(np.float64)))).astype(f32)

    h, c, ys = np.zeros((B, H), f32), np.zeros((B, H), f32), []
    for t in range(T):
        qx, sx = quantize(xs[t])
        qh, sh = (None, None) if not h.any() else quantize(h)  # the kernel skips an all-zero h
        z = {}
        for g in GATES:
            acc = np.tile(bias[g], (B, 1))
            product = dot(qx, weights[f"input_to_{g}_weights"]).astype(f32) * (sx * SCALE[g]).astype(f32)
            acc = (acc + product).astype(f32)
            if qh is not None:
                acc = (acc + ((qh @ weights[f"recurrent_to_{g}_weights"].T.astype(np.int64)).astype(f32)
                              * (sh * SCALE[g]).astype(f32))).astype(f32)
            z[g] = acc
        i, f, o = sigmoid(z["input"]), sigmoid(z["forget"]), sigmoid(z["output"])
        c = (f * c + i * np.tanh(z["cell"]).astype(f32)).astype(f32)
        h = (o * np.tanh(c)).astype(f32)
        ys.append(h)
    return np.stack(ys)


SIMD_COLUMNS = 16 * (I // 16)
print(f"machine {platform.machine()}; I = {I}: columns 0..{SIMD_COLUMNS - 1} in SIMD blocks, "
      f"{SIMD_COLUMNS}..{I - 1} in the scalar tail")
found = True
for column in (0, I - 1):
    weights = {k: v.copy() for k, v in base.items()}
    weights["input_to_cell_weights"][0, column] = -128
    xs = x.copy()
    xs[:, :, column] = -2.0  # the row's largest |x|: it quantizes to -127
    got = run(weights, xs)
    exact = float(np.abs(got - hybrid_reference(weights, xs)).max())
    wrapped = float(np.abs(got - hybrid_reference(weights, xs, SIMD_COLUMNS)).max())
    where = "SIMD block" if column < SIMD_COLUMNS else "scalar tail"
    print(f"weight -128 at column {column:2d} ({where}), x_t[:, {column}] -> -127: max |LiteRT - exact int8 dot| = "
          f"{exact:.3g}; max |LiteRT - dot with -128 * |a|| = {wrapped:.3g}")
    found &= (exact > 0.05 and wrapped < 1e-5) if column < SIMD_COLUMNS else exact < 1e-5

print("REPRODUCED: -128 times a negative activation has the wrong sign in the SIMD columns" if found else
      "NOT REPRODUCED: LiteRT's hybrid dot product is now exact for -128 (or this machine takes another code path)")
sys.exit(0 if found else 1)
