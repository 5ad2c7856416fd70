"""OpenVINO's ONNX frontend silently drops LSTM's peepholes (P) and ignores input_forget

Checked with openvino 2026.4.1, onnx 1.23.2, numpy 2.4.6 (CPU plugin, inference precision f32).

Expected: an ONNX LSTM node with a peephole input P computes i, f and o with the peephole terms (ONNX's
operator text: it = f(Xt*Wi + Ht-1*Ri + Pi (.) Ct-1 + Wbi + Rbi), ...); one with input_forget=1 couples the
gates (ONNX Runtime computes f = 1 - i). A runtime that cannot do either should refuse the model.

Actual: the model reads and compiles without a warning, and the answers are those of the same node without P,
and without input_forget: the frontend (src/frontends/onnx/frontend/src/op/lstm.cpp) reads P and input_forget,
then builds LSTMSequence-5, which has neither (LSTMSequence-1 had both). With P as a graph input, that input
disappears from the compiled model ("Port for tensor name P was not found" when it is fed).

Upstream: none found (searched openvinotoolkit/openvino issues for LSTM peepholes, P, input_forget). Related:
the same frontend ignores LSTM's layout attribute, openvinotoolkit/openvino#37820 (open; PR #38183).
"""

import sys

try:
    import numpy as np
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper
except ImportError as error:
    print(f"framework missing: {error} (pip install openvino onnx)")
    sys.exit(77)

T, B, I, H = 5, 3, 4, 3
rng = np.random.default_rng(0)
f32 = TensorProto.FLOAT
W = rng.uniform(-0.6, 0.6, (1, 4 * H, I)).astype(np.float32)
R = rng.uniform(-0.6, 0.6, (1, 4 * H, H)).astype(np.float32)
Bias = rng.uniform(-0.5, 0.5, (1, 8 * H)).astype(np.float32)
P = rng.uniform(-0.9, 0.9, (1, 3 * H)).astype(np.float32)
x = rng.normal(size=(T, B, I)).astype(np.float32)
h0 = rng.uniform(-0.9, 0.9, (1, B, H)).astype(np.float32)
c0 = rng.normal(size=(1, B, H)).astype(np.float32)


def run(with_p: bool, input_forget: int):
    """The node's Y from OpenVINO, its weights constants (initializers), as in a deployed model."""
    inputs = ["X", "W", "R", "B", "", "initial_h", "initial_c"] + (["P"] if with_p else [])
    node = helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=H, input_forget=input_forget)
    weights = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bias, "B"), (P, "P"))][: 4 if with_p else 3]
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info(n, f32, s) for n, s in (("X", [T, B, I]), ("initial_h", [1, B, H]),
                                                                               ("initial_c", [1, B, H]))],
        [helper.make_tensor_value_info(n, f32, None) for n in ("Y", "Y_h", "Y_c")], initializer=weights)
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model=model.SerializeToString(), weights=b""), "CPU",
                                  {ov.properties.hint.inference_precision: ov.Type.f32})
    return np.array(compiled.create_infer_request().infer({"X": x, "initial_h": h0, "initial_c": c0})[compiled.output(0)])


def reference(with_p: bool, coupled: bool):
    """ONNX's LSTM (gates i, o, f, c; P = i, o, f) in float64."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    Wi, Wo, Wf, Wc = np.split(W[0].astype(np.float64), 4)
    Ri, Ro, Rf, Rc = np.split(R[0].astype(np.float64), 4)
    b = Bias[0, : 4 * H].astype(np.float64) + Bias[0, 4 * H:]
    bi, bo, bf, bc = np.split(b, 4)
    pi, po, pf = np.split(P[0].astype(np.float64), 3) if with_p else (0, 0, 0)
    h, c, ys = h0[0].astype(np.float64), c0[0].astype(np.float64), []
    for t in range(T):
        xt = x[t].astype(np.float64)
        i = sig(xt @ Wi.T + h @ Ri.T + pi * c + bi)
        f = 1 - i if coupled else sig(xt @ Wf.T + h @ Rf.T + pf * c + bf)
        c = f * c + i * np.tanh(xt @ Wc.T + h @ Rc.T + bc)
        h = sig(xt @ Wo.T + h @ Ro.T + po * c + bo) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)[:, None]


found = True
for what, got, want, as_if in (
    ("P (peepholes)", run(True, 0), reference(True, False), reference(False, False)),
    ("input_forget=1", run(False, 1), reference(False, True), reference(False, False)),
):
    error, ignored = float(np.abs(got - want).max()), float(np.abs(got - as_if).max())
    print(f"{what}: worst error {error:.3g} against ONNX's LSTM; {ignored:.3g} against the same node without it")
    found &= error > 1e-2 and ignored < 1e-5

print("REPRODUCED" if found else "NOT REPRODUCED: OpenVINO now computes P and input_forget (or refuses them)")
sys.exit(0 if found else 1)
