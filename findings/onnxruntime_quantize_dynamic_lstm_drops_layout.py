"""onnxruntime.quantization.quantize_dynamic drops an LSTM's layout=1: the quantized model reads batch-major X as time-major

Checked with onnxruntime 1.32.0, onnx 1.23.2, numpy 2.4.6 (CPU, float32, opset 14, weight_type QInt8).

Expected: an ONNX LSTM with layout=1 takes X as (batch, seq, input) and gives Y as (batch, seq, dirs, hidden). Its
dynamically quantized model computes the same function up to quantization error (here ~1e-2), or quantize_dynamic
refuses the node (ORT's own float LSTM refuses layout=1: "layout_ == 0 was false").

Actual: quantize_dynamic makes a com.microsoft DynamicQuantizeLSTM without the layout attribute (it drops it
whatever its value), so the quantized model reads the batch-major X (B=3, T=4, I) as time-major (T=3, B=4, I): it
runs without an error, returns Y of shape (3, 1, 4, H) instead of (3, 4, 1, H), and its values are those of the
LSTM over the misread X (to 3e-3, quantization error) and off by 0.32 from the batch-major LSTM's. (The only
sign: ORT logs a warning at load that the shape it infers for Y, {3,1,4,6}, and the {3,4,1,6} recorded in the model
differ.)

Upstream: the drop is the fix of microsoft/onnxruntime#15465 ("Error Unrecognized attribute: layout for operator
DynamicQuantizeLSTM"), microsoft/onnxruntime#20160, which skips the attribute in
onnxruntime/python/tools/quantization/operators/lstm.py without checking that it is 0; no report of the wrong
results found (searched microsoft/onnxruntime issues for quantize_dynamic LSTM layout, batch_first, DynamicQuantizeLSTM
layout).
"""

import logging
import os
import sys
import tempfile

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
except ImportError as error:
    print(f"framework missing: {error} (pip install onnxruntime onnx)")
    sys.exit(77)

logging.disable(logging.WARNING)  # quantize_dynamic's advice on pre-processing
ort.set_default_logger_severity(4)  # the refusal below is printed once, by this script
B, T, I, H = 3, 4, 5, 6
rng = np.random.default_rng(0)
W = rng.uniform(-0.6, 0.6, (1, 4 * H, I)).astype(np.float32)
R = rng.uniform(-0.6, 0.6, (1, 4 * H, H)).astype(np.float32)
Bias = rng.uniform(-0.3, 0.3, (1, 8 * H)).astype(np.float32)
x = rng.normal(size=(B, T, I)).astype(np.float32)  # batch-major, as layout=1 says

f32 = TensorProto.FLOAT
node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H, layout=1)
graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("X", f32, [B, T, I])],
                          [helper.make_tensor_value_info("Y", f32, None)],
                          initializer=[numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bias, "B"))])
opsets = [helper.make_opsetid("", 14)]
model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def lstm(xs):
    """ONNX's LSTM (gates i, o, f, c), float64, time-major xs (T, B, I) -> Y (T, B, H), zero initial state."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    Wi, Wo, Wf, Wc = np.split(W[0].astype(np.float64), 4)
    Ri, Ro, Rf, Rc = np.split(R[0].astype(np.float64), 4)
    bi, bo, bf, bc = np.split(Bias[0, :4 * H].astype(np.float64) + Bias[0, 4 * H:], 4)
    h = c = np.zeros((xs.shape[1], H))
    ys = []
    for xt in xs.astype(np.float64):
        i, f, o = (sig(xt @ Wg.T + h @ Rg.T + bg) for Wg, Rg, bg in ((Wi, Ri, bi), (Wf, Rf, bf), (Wo, Ro, bo)))
        c = f * c + i * np.tanh(xt @ Wc.T + h @ Rc.T + bc)
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys)


options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
with tempfile.TemporaryDirectory() as folder:
    source, target = os.path.join(folder, "lstm.onnx"), os.path.join(folder, "lstm.quant.onnx")
    onnx.save(model, source)
    try:
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        print("ORT's float LSTM accepts layout=1")
    except Exception as error:
        reason = str(error).split("LSTMBase(const onnxruntime::OpKernelInfo&) ")[-1].split(" If you need")[0]
        print(f"ORT's float LSTM refuses layout=1: {reason}")
    quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    quantized = onnx.load(target)
    op = next(n for n in quantized.graph.node if n.op_type.endswith("LSTM"))
    attributes = {a.name: helper.get_attribute_value(a) for a in op.attribute}
    print(f"quantize_dynamic made {op.op_type} with attributes {attributes}")
    try:
        y = ort.InferenceSession(target, options, providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    except Exception as error:  # a refusal at load or run is one of the expected answers
        print(f"NOT REPRODUCED: the quantized model refuses to run: {error}")
        sys.exit(1)

batch_major = lstm(x.transpose(1, 0, 2)).transpose(1, 0, 2)[:, :, None, :]  # (B, T, 1, H), layout=1's Y
misread = lstm(x)[:, None]  # x (B, T, I) read as time-major (T'=B, B'=T, I) -> Y (B, 1, T, H)
print(f"X {x.shape} (batch, seq, input); quantized Y {y.shape}; layout=1's Y {batch_major.shape}")
if y.shape != misread.shape:
    print(f"NOT REPRODUCED: the quantized model's Y has shape {y.shape}")
    sys.exit(1)
right = float(np.abs(y[:, 0] - batch_major[:, :, 0]).max())
wrong = float(np.abs(y - misread).max())
print(f"max |quantized Y - float LSTM over X batch-major (layout=1)|     = {right:.3g}  (expected: quantization error)")
print(f"max |quantized Y - float LSTM over X misread as time-major|      = {wrong:.3g}")
found = "layout" not in attributes and wrong < 0.05 and right > 0.1
print("REPRODUCED: the quantized LSTM ignores layout=1" if found else
      "NOT REPRODUCED: quantize_dynamic now keeps or refuses layout=1")
sys.exit(0 if found else 1)
