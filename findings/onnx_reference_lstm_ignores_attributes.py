"""onnx.reference's LSTM silently ignores sequence_lens, clip and input_forget

Checked with onnx 1.23.2, numpy 2.4.6 (ReferenceEvaluator, float64, opset 14).

Expected: ONNX's LSTM operator defines sequence_lens ("optional tensor specifying lengths of the sequences in a
batch": steps past a row's length are not computed, Y is zero there, Y_h is the state at the row's last step),
clip ("Cell clip threshold ... applied to the input of activations") and input_forget ("Couple the input and
forget gates if 1": f = 1 - i). Each changes the outputs on this data by more than 0.05 (computed below by a
small NumPy LSTM written from the operator's equations; ONNX Runtime agrees on all three, reading clip as a clip
of the gates' pre-activations, and its cell-state reading differs from the no-clip answer too).

Actual: with each of them, onnx.reference's Y, Y_h and Y_c are bit-identical to those of the same graph without
it, and no warning is given. Its kernel (onnx/reference/ops/op_lstm.py) takes the three and marks them unused
("# noqa: ARG002", "TODO: support overridden attributes"). So onnx.reference cannot serve as the reference for
these three features of its own operator.

Upstream: none found (searched onnx/onnx issues and pull requests for the reference evaluator's LSTM,
sequence_lens, clip, input_forget).
"""

import sys
import warnings

try:
    import numpy as np
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
except ImportError as error:
    print(f"framework missing: {error} (pip install onnx)")
    sys.exit(77)

T, B, I, H = 5, 4, 3, 2
rng = np.random.default_rng(0)
feeds = {
    "X": rng.normal(size=(T, B, I)), "W": rng.uniform(-1.2, 1.2, (1, 4 * H, I)), "R": rng.uniform(-0.7, 0.7, (1, 4 * H, H)),
    "B": rng.uniform(-1.0, 1.0, (1, 8 * H)), "initial_h": rng.uniform(-0.9, 0.9, (1, B, H)), "initial_c": rng.normal(size=(1, B, H)),
}
LENGTHS = np.array([5, 2, 0, 3], np.int32)


def reference(sequence_lens=False, **attributes):
    names = ["X", "W", "R", "B", "sequence_lens" if sequence_lens else "", "initial_h", "initial_c"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, list(feeds[n].shape)) for n in feeds]
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], hidden_size=H, **attributes)
    outputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in ("Y", "Y_h", "Y_c")]
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs), opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    run = dict(feeds, **({"sequence_lens": LENGTHS} if sequence_lens else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its sigmoid's exp may overflow to inf (giving 0, correctly)
        return ReferenceEvaluator(model).run(None, run)


def numpy_lstm(lengths=None, clip=None, input_forget=False):
    """ONNX's equations (gates i, o, f, c; B = [Wb, Rb]), with the three features; Y (T, 1, B, H)."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    limit = (lambda z: z) if clip is None else (lambda z: np.clip(z, -clip, clip))
    W, R, Bias = feeds["W"][0], feeds["R"][0], feeds["B"][0, : 4 * H] + feeds["B"][0, 4 * H :]
    h, c = feeds["initial_h"][0].copy(), feeds["initial_c"][0].copy()
    lengths = np.full(B, T) if lengths is None else lengths
    Y = np.zeros((T, 1, B, H))
    for t in range(T):
        z = feeds["X"][t] @ W.T + h @ R.T + Bias
        i, o, f, g = (limit(z[:, k * H : (k + 1) * H]) for k in range(4))
        i, o, g = sigmoid(i), sigmoid(o), np.tanh(g)
        f = 1 - i if input_forget else sigmoid(f)
        c_new = f * c + i * g
        h_new = o * np.tanh(limit(c_new))  # "applied to the input of activations": h's input too
        run = (t < lengths)[:, None]
        h, c = np.where(run, h_new, h), np.where(run, c_new, c)
        Y[t, 0] = np.where(run, h_new, 0.0)
    return Y, h[None], c[None]


without = reference()
found = True
for name, node_options, spec_options in (
    ("sequence_lens", {"sequence_lens": True}, {"lengths": LENGTHS}),
    ("clip", {"clip": 0.5}, {"clip": 0.5}),
    ("input_forget", {"input_forget": 1}, {"input_forget": True}),
):
    got = reference(**node_options)
    ignored = all(np.array_equal(a, b) for a, b in zip(got, without))
    expected = numpy_lstm(**spec_options)
    effect = float(np.abs(expected[0] - numpy_lstm()[0]).max())
    error = float(np.abs(got[0] - expected[0]).max())
    print(f"{name}: outputs identical to the graph without it: {ignored}; the attribute changes Y by {effect:.3g}; "
          f"onnx.reference's Y is off the expected Y by {error:.3g}")
    found &= ignored and effect > 0.05 and error > 0.05

assert np.allclose(numpy_lstm()[0], without[0], rtol=0, atol=1e-12), "the NumPy LSTM here disagrees with onnx.reference"
print("REPRODUCED" if found else "NOT REPRODUCED: onnx.reference reads at least one of sequence_lens, clip, input_forget now")
sys.exit(0 if found else 1)
