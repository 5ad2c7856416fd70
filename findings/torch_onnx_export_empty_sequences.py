"""An nn.LSTM exported with its packed sequences takes a length of 0 in ONNX Runtime and returns a zero final state for that row.

Checked with: torch 2.13.0+cpu, onnx 1.23.2, onnxruntime 1.32.0, CPU; the TorchScript exporter
(torch.onnx.export(dynamo=False)); the dynamo exporter cannot export packed sequences at all
(torch_onnx_dynamo_packed_sequence.py).

Expected: for a row of length 0 either the refusal nn.LSTM gives (pack_padded_sequence raises "Length of all
samples has to be greater than 0"), or the state the row started with: an empty sequence runs no step, so h_n
and c_n are h0 and c0 (TF1's dynamic_rnn, Keras with a row masked throughout, this project's spec).

Actual: the exported model (nn.LSTM between pack_padded_sequence and pad_packed_sequence, exported from example
lengths that are all T) takes lengths 3, 0, 6, 1 without complaint; the other rows agree with nn.LSTM (to
float32 rounding), but the empty row's h_n and c_n are exactly 0 in every layer and direction, where h0 and c0
were up to 2.5 and 1.9. The ONNX LSTM node gets the lengths as sequence_lens, and ONNX Runtime zeroes Y_h and
Y_c for a sequence length of 0.

Upstream: ONNX Runtime does this by design (microsoft/onnxruntime#749, "Handle sequence length == 0 for RNN");
the ONNX specification leaves Y_h for a length of 0 undefined (onnx/onnx#1674, closed as stale). No
report against torch.onnx found (searched pytorch/pytorch issues).
"""

import io
import sys
import warnings

try:
    import numpy as np
    import onnx  # noqa: F401  (torch.onnx.export needs it)
    import onnxruntime as ort
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError as error:
    print(f"framework missing: {error.name} is not installed (needs torch, onnx, onnxruntime)")
    sys.exit(77)

warnings.simplefilter("ignore")
torch.manual_seed(0)
T, B, I, H, L, D = 6, 4, 3, 4, 2, 2


class Packed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=L, bidirectional=True)

    def forward(self, x, h0, c0, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h_n, c_n) = self.lstm(packed, (h0, c0))
        y, _ = pad_packed_sequence(out, total_length=T)
        return y, h_n, c_n


model = Packed().eval()
example = (torch.zeros(T, B, I), torch.zeros(L * D, B, H), torch.zeros(L * D, B, H), torch.full((B,), T))
buffer = io.BytesIO()
torch.onnx.export(model, example, buffer, dynamo=False, input_names=["x", "h0", "c0", "lengths"], output_names=["y", "h_n", "c_n"])
session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])

x, h0, c0 = torch.randn(T, B, I), torch.randn(L * D, B, H), torch.randn(L * D, B, H)
lengths = torch.tensor([3, 0, 6, 1])
y, h_n, c_n = session.run(None, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy(), "lengths": lengths.numpy()})

try:
    pack_padded_sequence(x, lengths, enforce_sorted=False)
    refused = "accepted"
except RuntimeError as error:
    refused = f"refused: {error}"
print(f"nn.LSTM's own pack_padded_sequence with lengths {lengths.tolist()}: {refused}")

others = [0, 2, 3]  # the rows of length >= 1, against nn.LSTM itself
with torch.no_grad():
    want = model(x[:, others], h0[:, others], c0[:, others], lengths[others])
agree = max(float(np.max(np.abs(got[..., others, :] - w.numpy()))) for got, w in zip((y, h_n, c_n), want))
print(f"rows of length >= 1: largest difference from nn.LSTM {agree:.3g}")
print(f"row of length 0: y max |.| {np.abs(y[:, 1]).max():.3g}; h_n max |.| {np.abs(h_n[:, 1]).max():.3g} "
      f"(h0 there: {np.abs(h0[:, 1].numpy()).max():.3g}); c_n max |.| {np.abs(c_n[:, 1]).max():.3g} (c0 there: {np.abs(c0[:, 1].numpy()).max():.3g})")

if agree < 1e-5 and not h_n[:, 1].any() and not c_n[:, 1].any() and h0[:, 1].abs().max() > 0.1:
    print("reproduced: the exported model accepts a length of 0 and returns a zero final state for that row")
    sys.exit(0)
print("not reproduced")
sys.exit(1)
