"""torch.compile of a model with nn.LSTM compiles nothing and runs the LSTM eagerly, without a word

Checked with torch 2.13.0+cpu, numpy 2.4.6 (CPU, AMD EPYC).

Expected: torch.compile(model) of a Linear -> LSTM -> Linear model compiles the model (an Inductor graph for the LSTM,
or at least for the Linear layers around a graph break), or says that it cannot.

Actual: with torch._dynamo.config.allow_rnn at its default (False), Dynamo refuses to trace the LSTM ("Attempted to
wrap RNN, GRU, or LSTM"), cannot resume after that graph break, and skips the whole frame: a counting backend is
called 0 times, the model runs eagerly (its answers are eager's, bit for bit), no warning is printed. Over packed
sequences, pack_padded_sequence is never traced either, even with allow_rnn (a graph break; Unsupported with
fullgraph=True). With allow_rnn=True and no packing, one graph is compiled.

Upstream: pytorch/pytorch#141184 ("Dynamo graph break on RNN/LSTM doesn't resume the function correctly", open),
#149909 (open), #185163 (open: allow_rnn by default); packed sequences: #108096 (skipped by design, a workaround for
#93501), #162375, #186553 (open).
"""

import sys

try:
    import torch
except ImportError as error:
    print(f"framework missing: {error} (pip install torch)")
    sys.exit(77)

torch.manual_seed(0)
calls = []


def counting_backend(graph, example_inputs):
    calls.append(len(graph.graph.nodes))
    return graph.forward


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.lstm, self.out = torch.nn.Linear(6, 8), torch.nn.LSTM(8, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.lstm(self.inp(x))
        return self.out(y)


model = Model().eval()
x = torch.randn(5, 2, 6)
with torch.no_grad():
    eager = model(x)
    compiled = torch.compile(model, backend=counting_backend)(x)
shipped = len(calls)
print(f"allow_rnn={torch._dynamo.config.allow_rnn} (default): graphs compiled {shipped}; "
      f"max |compiled - eager| = {float((compiled - eager).abs().max()):.3g}")
torch._dynamo.reset()
calls.clear()
with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
    torch.compile(model, backend=counting_backend)(x)
print(f"allow_rnn=True: graphs compiled {len(calls)}")
torch._dynamo.reset()
packed_refused = False
lstm = torch.nn.LSTM(6, 4)


def packed_call(x, lengths):
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    y, _ = lstm(packed)
    return torch.nn.utils.rnn.pad_packed_sequence(y)[0]


with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
    try:
        torch.compile(packed_call, fullgraph=True, backend=counting_backend)(x, torch.tensor([5, 3]))
    except Exception as error:  # torch._dynamo.exc.Unsupported
        packed_refused = True
        print(f"packed, allow_rnn=True, fullgraph=True: {type(error).__name__}: {str(error).splitlines()[0]}")
reproduced = shipped == 0 and packed_refused
sys.exit(0 if reproduced else 1)
