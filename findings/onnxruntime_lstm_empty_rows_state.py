"""ONNX Runtime's LSTM returns zeros as Y_h and Y_c for a row with sequence_lens 0, not its initial state

Checked with onnxruntime 1.32.0, onnx 1.23.2, numpy 2.4.6 (CPU, float32).

Expected: a row whose sequence_lens entry is 0 runs no step, so its final state is the state it started with,
initial_h and initial_c (TF1's dynamic_rnn(sequence_length) and a Keras layer masked throughout do that;
lstm-conformance's spec, rule (13)). Y for that row is zero, as the spec's.

Actual: Y_h and Y_c are exactly zero for that row, in every direction (forward, reverse, bidirectional); the
rows with lengths >= 1 are right. Here initial_h is up to 0.6 and initial_c up to 1.4 in magnitude.

Upstream: not reported as a bug. ONNX's operator text does not say what Y_h is for a length of 0 (onnx/onnx#1674
asked, closed without an answer); ONNX Runtime skips the computation for such rows by design
(microsoft/onnxruntime#749, "Handle sequence length == 0 for RNN") and its reviewers expect zeros there
(microsoft/onnxruntime#28052). Searched microsoft/onnxruntime and onnx/onnx issues for sequence_lens 0, Y_h,
initial state.
"""

import sys

try:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError as error:
    print(f"framework missing: {error} (pip install onnx onnxruntime)")
    sys.exit(77)

T, B, I, H = 5, 4, 3, 2
lengths = np.array([5, 2, 0, 3], np.int32)  # row 2 is empty
rng = np.random.default_rng(0)

found = True
for direction, D in (("forward", 1), ("reverse", 1), ("bidirectional", 2)):
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(name, f32, shape) for name, shape in (
        ("X", [T, B, I]), ("W", [D, 4 * H, I]), ("R", [D, 4 * H, H]), ("B", [D, 8 * H]),
        ("initial_h", [D, B, H]), ("initial_c", [D, B, H]))]
    inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction=direction)
    outputs = [helper.make_tensor_value_info(name, f32, None) for name in ("Y", "Y_h", "Y_c")]
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs), opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        "X": rng.normal(size=(T, B, I)), "W": rng.uniform(-0.6, 0.6, (D, 4 * H, I)), "R": rng.uniform(-0.6, 0.6, (D, 4 * H, H)),
        "B": rng.uniform(-0.5, 0.5, (D, 8 * H)), "initial_h": rng.uniform(-0.9, 0.9, (D, B, H)), "initial_c": rng.normal(size=(D, B, H)),
    }
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    feeds["sequence_lens"] = lengths
    Y, Y_h, Y_c = session.run(None, feeds)
    b = 2
    print(f"{direction}: row {b} (length 0): Y zero: {not Y[:, :, b].any()}; "
          f"Y_h expected initial_h {feeds['initial_h'][:, b].ravel()}, got {Y_h[:, b].ravel()}; "
          f"Y_c expected {feeds['initial_c'][:, b].ravel()}, got {Y_c[:, b].ravel()}")
    found &= not Y[:, :, b].any() and not Y_h[:, b].any() and not Y_c[:, b].any() and bool(feeds["initial_h"][:, b].any())

print("REPRODUCED" if found else "NOT REPRODUCED: ONNX Runtime returns something else than zeros for rows of length 0 now")
sys.exit(0 if found else 1)
