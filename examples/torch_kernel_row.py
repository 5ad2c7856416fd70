"""A row for your own kernel: the contract's full form, a ``contract.row.Row`` subclass.

    pytest conformance/ --backend examples/torch_kernel_row.py

``my_lstm`` below stands for your kernel (a CUDA or Triton kernel behind a torch op, say): here it is a plain
loop of torch ops over PyTorch's weight layout, so that the example runs anywhere torch does. The row declares
what it runs and names a layout and a runtime the project already has; it writes only its call. The base class
does the rest: the declared-support and input checks, the canonical weights to ``nn.LSTM``'s state_dict
(``backends/layouts/torch.py``, cached), every tensor to the device, the call, gradients by torch's autograd of
the same call, mapped back to the canonical parameters, and the answer's checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.layouts.torch import NN_LSTM
from backends.runtimes.torch import TORCH, torch
from contract.row import Row
from contract.vocabulary import Device, Feature


def my_lstm(weights, x, h0, c0, num_layers):
    """Your kernel: a stacked forward LSTM on ``nn.LSTM``'s weights (gates i, f, g, o; two biases), x (T, B, I),
    h0 and c0 (L, B, H). Returns y (T, B, H), h_T and c_T (L, B, H)."""
    t = torch()
    h_T, c_T = [], []
    for layer in range(num_layers):
        w_ih, w_hh = weights[f"weight_ih_l{layer}"], weights[f"weight_hh_l{layer}"]
        bias = weights[f"bias_ih_l{layer}"] + weights[f"bias_hh_l{layer}"]
        h, c, ys = h0[layer], c0[layer], []
        for x_t in x:
            i, f, g, o = (x_t @ w_ih.T + h @ w_hh.T + bias).chunk(4, dim=-1)
            c = t.sigmoid(f) * c + t.sigmoid(i) * t.tanh(g)
            h = t.sigmoid(o) * t.tanh(c)
            ys.append(h)
        x = t.stack(ys)
        h_T.append(h)
        c_T.append(c)
    return x, t.stack(h_T), t.stack(c_T)


@dataclass(eq=False)
class MyKernel(Row):
    id: str = "example/torch-kernel"
    description: str = "a stacked LSTM in torch ops on nn.LSTM's weights, standing in for your kernel"
    runtime: object = TORCH
    layout: object = NN_LSTM
    features: frozenset = frozenset({Feature.STACKED})
    devices: tuple = (Device.CPU, Device.CUDA)

    def call(self, weights, x, h0, c0, lengths, mask, *, layer):
        return my_lstm(weights, x, h0, c0, layer.num_layers)


ROWS = [MyKernel()]
