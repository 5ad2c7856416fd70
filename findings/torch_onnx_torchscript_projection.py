"""torch.onnx.export(dynamo=False) refuses nn.LSTM(proj_size=P): "Unsupported: ONNX export of operator LSTM, LSTMs with projections".

Checked with: torch 2.13.0+cpu, onnx 1.23.2, CPU.

Expected: an ONNX model computing nn.LSTM(input_size=3, hidden_size=4, proj_size=2) (ONNX's LSTM operator has
no projection, but the projection is a MatMul after each step, which an exporter can write as a loop or
per-step nodes).

Actual: the TorchScript exporter raises torch.onnx.errors.SymbolicValueError: "Unsupported: ONNX export of
operator LSTM, LSTMs with projections. Please feel free to request support or submit a pull request on
PyTorch GitHub". Without proj_size the same module exports and runs. (The dynamo exporter, torch 2.13's
default, does not refuse it but writes a wrong model: torch_onnx_dynamo_projection.py.)

Upstream: none found as an issue in pytorch/pytorch; the refusal has stood since projections were added
(pytorch/pytorch#47725); users work around it by re-implementing LSTMP in Python before exporting
(k2-fsa/icefall#621).
"""

import io
import sys
import warnings

try:
    import onnx  # noqa: F401  (torch.onnx.export needs it)
    import torch
except ImportError as error:
    print(f"framework missing: {error.name} is not installed (needs torch and onnx)")
    sys.exit(77)

warnings.simplefilter("ignore")
x = torch.randn(5, 2, 3)


def export(proj_size: int) -> str | None:
    """None when the export succeeds, else the exporter's message."""
    lstm = torch.nn.LSTM(3, 4, proj_size=proj_size).eval()
    try:
        torch.onnx.export(lstm, (x,), io.BytesIO(), dynamo=False)
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return None


plain, projected = export(0), export(2)
print(f"nn.LSTM(3, 4): {'exported' if plain is None else plain}")
print(f"nn.LSTM(3, 4, proj_size=2): {'exported' if projected is None else projected}")
if plain is None and projected is not None and "LSTMs with projections" in projected:
    print("reproduced: the TorchScript exporter refuses LSTMs with projections")
    sys.exit(0)
print("not reproduced")
sys.exit(1)
