"""torch.onnx.export(dynamo=True) cannot export nn.LSTM over pack_padded_sequence: torch.export fails on data-dependent lengths.

Checked with: torch 2.13.0+cpu, onnxscript 0.7.2 (onnx-ir 1.1.0), onnx 1.23.2, CPU.

Expected: an ONNX model that takes the sequence lengths as an input (ONNX's LSTM has sequence_lens), as the
TorchScript exporter (dynamo=False) writes for the same module; its model runs in ONNX Runtime and agrees with
nn.LSTM for lengths other than the example's.

Actual: torch.onnx.export(dynamo=True) stops at step 1 (torch.export) with TorchExportError, caused by
GuardOnDataDependentSymNode: "Could not extract specialized integer from data-dependent expression u0"
(pack_padded_sequence's batch_sizes depend on the lengths' values). Unsorted (enforce_sorted=False) and sorted
packing fail alike; the TorchScript exporter exports both.

Upstream: pytorch/pytorch#112044 ("pack_padded_sequence/pad_packed_sequence support in dynamo", open); a
proposed fix, pytorch/pytorch#186527 (closed), is not in torch 2.13.
"""

import io
import sys
import warnings

try:
    import onnx  # noqa: F401  (torch.onnx.export needs it)
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError as error:
    print(f"framework missing: {error.name} is not installed (needs torch, onnx, onnxscript)")
    sys.exit(77)
try:
    import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
except ImportError:
    print("framework missing: onnxscript is not installed (torch.onnx.export(dynamo=True) needs it)")
    sys.exit(77)

warnings.simplefilter("ignore")
T, B = 6, 4


class Packed(torch.nn.Module):
    def __init__(self, enforce_sorted: bool):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, bidirectional=True)
        self.enforce_sorted = enforce_sorted

    def forward(self, x, lengths, h0, c0):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=self.enforce_sorted)
        out, (h_n, c_n) = self.lstm(packed, (h0, c0))
        y, _ = pad_packed_sequence(out, total_length=T)
        return y, h_n, c_n


def export(enforce_sorted: bool, dynamo: bool) -> str | None:
    """None when the export succeeds, else the exporter's error."""
    lengths = torch.tensor([6, 4, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 4])
    example = (torch.randn(T, B, 3), lengths, torch.zeros(2, B, 4), torch.zeros(2, B, 4))
    try:
        torch.onnx.export(Packed(enforce_sorted).eval(), example, None if dynamo else io.BytesIO(), dynamo=dynamo, verbose=False)
    except Exception as error:
        cause = error.__cause__ or error
        return f"{type(error).__name__} ({type(cause).__name__}: {str(cause).splitlines()[0][:160]})"
    return None


reproduced = True
for enforce_sorted in (False, True):
    torchscript, dynamo = export(enforce_sorted, dynamo=False), export(enforce_sorted, dynamo=True)
    print(f"enforce_sorted={enforce_sorted}: TorchScript exporter: {torchscript or 'exported'}; dynamo exporter: {dynamo or 'exported'}")
    reproduced &= torchscript is None and dynamo is not None and "data-dependent" in dynamo
if reproduced:
    print("reproduced: the dynamo exporter refuses pack_padded_sequence, the TorchScript exporter exports it")
    sys.exit(0)
print("not reproduced")
sys.exit(1)
