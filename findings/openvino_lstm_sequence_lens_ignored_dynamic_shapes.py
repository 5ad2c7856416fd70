"""OpenVINO's CPU plugin ignores LSTM sequence lengths when the model's shapes are dynamic

Checked with openvino 2026.4.1, onnx 1.23.2, numpy 2.4.6 (CPU plugin, inference precision f32; AMD EPYC).

Expected: an ONNX LSTM with sequence_lens [5, 2, 1, 4] and T = 5 stops each row at its length: Y is zero past it
and Y_h, Y_c are the state at its last step (ONNX Runtime does this; so does PyTorch's pack_padded_sequence).

Actual: with the weights constant (as in any exported model) and T and B symbolic in the model (as torch.onnx.export
and ov.convert_model leave them), the CPU plugin keeps its fused RNN node (runtime layer type RNNSeq), which runs
every row for all T steps: the answers equal those without sequence_lens, rows 1 to 3 are wrong by up to ~1. Reshaped
to static shapes, the plugin decomposes the LSTMSequence into a TensorIterator and the lengths are honoured (though a
row of length 0 then gets zeros as its final state, as in ONNX Runtime). ov.convert_model of torch.nn.LSTM over
pack_padded_sequence ends in the same LSTMSequence with lengths, and the same wrong answers.

Upstream: none found (searched openvinotoolkit/openvino issues for LSTMSequence sequence lengths, seq_len, dynamic
shapes). openvinotoolkit/openvino#10710 ("[CPU] Disabled sequences decomposition for dynamic case": the plugin's
check of seq_len cannot be made with dynamic shapes, so the sequence is no longer decomposed) is where it comes from.
"""

import sys

try:
    import numpy as np
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper
except ImportError as error:
    print(f"framework missing: {error} (pip install openvino onnx)")
    sys.exit(77)

T, B, I, H = 5, 4, 3, 4
lengths = np.array([5, 2, 1, 4], np.int32)
rng = np.random.default_rng(0)
W = rng.uniform(-0.6, 0.6, (1, 4 * H, I)).astype(np.float32)
R = rng.uniform(-0.6, 0.6, (1, 4 * H, H)).astype(np.float32)
Bias = rng.uniform(-0.5, 0.5, (1, 8 * H)).astype(np.float32)
x = rng.normal(size=(T, B, I)).astype(np.float32)
h0 = rng.uniform(-0.9, 0.9, (1, B, H)).astype(np.float32)
c0 = rng.normal(size=(1, B, H)).astype(np.float32)

f32 = TensorProto.FLOAT
node = helper.make_node("LSTM", ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
                        hidden_size=H)
inputs = [helper.make_tensor_value_info("X", f32, ["T", "B", I]),
          helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]),
          helper.make_tensor_value_info("initial_h", f32, [1, "B", H]), helper.make_tensor_value_info("initial_c", f32, [1, "B", H])]
outputs = [helper.make_tensor_value_info(n, f32, None) for n in ("Y", "Y_h", "Y_c")]
weights = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bias, "B"))]
opsets = [helper.make_opsetid("", 14)]
model = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs, initializer=weights), opset_imports=opsets,
                          ir_version=helper.find_min_ir_version_for(opsets)).SerializeToString()
feeds = {"X": x, "sequence_lens": lengths, "initial_h": h0, "initial_c": c0}


def reference(lens):
    """ONNX's LSTM (gates i, o, f, c) in float64, each row stopped at its length."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    Wi, Wo, Wf, Wc = np.split(W[0].astype(np.float64), 4)
    Ri, Ro, Rf, Rc = np.split(R[0].astype(np.float64), 4)
    bi, bo, bf, bc = np.split(Bias[0, : 4 * H].astype(np.float64) + Bias[0, 4 * H:], 4)
    h, c, Y = h0[0].astype(np.float64), c0[0].astype(np.float64), np.zeros((T, 1, B, H))
    for t in range(T):
        xt, run = x[t].astype(np.float64), (t < lens)[:, None]
        i, f, o = (sig(xt @ Wg.T + h @ Rg.T + bg) for Wg, Rg, bg in ((Wi, Ri, bi), (Wf, Rf, bf), (Wo, Ro, bo)))
        c_new = f * c + i * np.tanh(xt @ Wc.T + h @ Rc.T + bc)
        h_new = o * np.tanh(c_new)
        h, c = np.where(run, h_new, h), np.where(run, c_new, c)
        Y[t, 0] = np.where(run, h_new, 0)
    return Y, h[None], c[None]


core = ov.Core()
config = {ov.properties.hint.inference_precision: ov.Type.f32}
want, all_steps = reference(lengths), reference(np.full(B, T))
found = True
for shapes in ("dynamic", "static"):
    m = core.read_model(model=model, weights=b"")
    if shapes == "static":
        m.reshape({name: list(value.shape) for name, value in feeds.items()})
    compiled = core.compile_model(m, "CPU", config)
    kernel = sorted({op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}
                    & {"RNNSeq", "TensorIterator"})
    result = compiled.create_infer_request().infer(feeds)
    got = [np.array(result[compiled.output(k)]) for k in range(3)]
    error = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    as_if = max(float(np.abs(g - w).max()) for g, w in zip(got, all_steps))
    print(f"{shapes} shapes ({', '.join(kernel)}): worst error {error:.3g} against the lengths {lengths.tolist()}; "
          f"{as_if:.3g} against every row running all {T} steps")
    found &= (error > 1e-2 and as_if < 1e-5) if shapes == "dynamic" else error < 1e-5

print("REPRODUCED" if found else "NOT REPRODUCED: OpenVINO now honours sequence lengths with dynamic shapes")
sys.exit(0 if found else 1)
