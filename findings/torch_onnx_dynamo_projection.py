"""torch.onnx.export(dynamo=True) writes nn.LSTM(proj_size=P) as an ONNX LSTM of hidden_size P that ONNX Runtime refuses.

Checked with: torch 2.13.0+cpu, onnxscript 0.7.2 (onnx-ir 1.1.0), onnx 1.23.2, onnxruntime 1.32.0, CPU.

Expected: the exported model computes what nn.LSTM(input_size=3, hidden_size=4, proj_size=2) computes (an LSTM
of hidden size 4 whose h is projected by weight_hr_l0 to 2 units), or the export refuses, as the TorchScript
exporter does ("LSTMs with projections" unsupported).

Actual: the export succeeds and writes an ONNX LSTM node with hidden_size = 2 (= proj_size), weights cut to
4 * 2 = 8 rows (W (1, 8, 3) for weight_ih_l0's 16 rows) and no trace of weight_hr_l0. onnxscript's torchlib
``aten_lstm`` (which torch 2.13's dynamo exporter uses for aten::lstm) takes the hidden size from initial_h's
last axis, which is P with a projection, and assumes four tensors per direction (weight_hr makes five).
ONNX Runtime then refuses the model: one layer loads but fails to run ("Input initial_c must have shape
{1,2,2}. Actual:{1,2,4}"); with two layers or bidirectional it fails to load (a Concat shape inference error).

Upstream: none found (searched pytorch/pytorch and microsoft/onnxscript issues for LSTM proj_size / projection
with the dynamo exporter; aten_lstm came with microsoft/onnxscript#2674, which does not mention projections).
"""

import sys
import warnings

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
except ImportError as error:
    print(f"framework missing: {error.name} is not installed (needs torch, onnx, onnxruntime, onnxscript)")
    sys.exit(77)
try:
    import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
except ImportError:
    print("framework missing: onnxscript is not installed (torch.onnx.export(dynamo=True) needs it)")
    sys.exit(77)

warnings.simplefilter("ignore")
torch.manual_seed(0)
T, B, I, H, P = 5, 2, 3, 4, 2


def check(num_layers: int, bidirectional: bool) -> bool:
    """True when the exported model is wrong: an LSTM node of hidden_size P, or ORT refuses or disagrees."""
    D = 2 if bidirectional else 1
    lstm = torch.nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, proj_size=P).eval()
    x, h0, c0 = torch.randn(T, B, I), torch.randn(num_layers * D, B, P), torch.randn(num_layers * D, B, H)
    program = torch.onnx.export(lstm, (x, (h0, c0)), dynamo=True, verbose=False,
                                input_names=["x", "h0", "c0"], output_names=["y", "h_n", "c_n"])
    model = program.model_proto
    sizes = [onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "LSTM"
             for a in n.attribute if a.name == "hidden_size"]
    label = f"num_layers={num_layers}, bidirectional={bidirectional}"
    print(f"{label}: exported ONNX LSTM nodes with hidden_size {sizes} (nn.LSTM: hidden_size {H}, proj_size {P})")
    with torch.no_grad():
        want = [t.numpy() for t in (lambda y, s: (y, *s))(*lstm(x, (h0, c0)))]
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
    except Exception as error:  # what ONNX Runtime says about the model
        print(f"  ONNX Runtime refuses it: {str(error).splitlines()[0][:200]}")
        return True
    worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
    print(f"  ONNX Runtime ran it; largest difference from nn.LSTM: {worst:.3g}")
    return P in sizes or worst > 1e-4


results = [check(1, False), check(2, True)]
if all(results):
    print("reproduced: the dynamo exporter writes nn.LSTM(proj_size) as a model ONNX Runtime cannot run correctly")
    sys.exit(0)
print("not reproduced: the exported model is right")
sys.exit(1)
