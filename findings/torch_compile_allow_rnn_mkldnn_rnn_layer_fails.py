"""torch.compile of nn.LSTM with allow_rnn=True fails on the CPU when its parameters require gradients and its input
does not (a training step's call)

Checked with torch 2.13.0+cpu (oneDNN), numpy 2.4.6 (CPU, AMD EPYC).

Expected: with torch._dynamo.config.allow_rnn = True, torch.compile(lambda x: lstm(x)) returns what lstm(x) returns,
in inference and in training alike.

Actual: under inference_mode (or no_grad), and with every input requiring gradients, it does (outputs within float32
rounding of eager); called as a training step calls it (the module's parameters require gradients, the input does
not), Inductor's generated code raises "TypeError: expected Tensor() for op: torch.ops.aten.mkldnn_rnn_layer.default":
the compiled graph passes None where oneDNN's workspace tensor is expected.

Upstream: pytorch/pytorch#158007 ("torch.compile cannot compile a model with a basic LSTM, even on latest main",
open); the fix, #185163 ("Handle None in saved tensors for LSTM/RNN backward; enable allow_rnn by default"), is open.
"""

import sys

try:
    import torch
except ImportError as error:
    print(f"framework missing: {error} (pip install torch)")
    sys.exit(77)

torch.manual_seed(0)
lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
x, h0, c0 = torch.randn(5, 3, 3), torch.zeros(4, 3, 4), torch.zeros(4, 3, 4)


def call(x, h0, c0):
    return lstm(x, (h0, c0))[0]


eager = call(x, h0, c0).detach()
with torch._dynamo.config.patch(allow_rnn=True):
    with torch.inference_mode():
        inference = torch.compile(call)(x, h0, c0)
    print(f"inference_mode: max |compiled - eager| = {float((inference - eager).abs().max()):.3g}")
    torch._dynamo.reset()
    try:
        training = torch.compile(call)(x, h0, c0)
        print(f"training call: max |compiled - eager| = {float((training.detach() - eager).abs().max()):.3g}")
        failed = False
    except TypeError as error:
        print(f"training call (parameters require grad, input does not): TypeError: {str(error).splitlines()[0]}")
        failed = "mkldnn_rnn_layer" in str(error)
sys.exit(0 if failed else 1)
