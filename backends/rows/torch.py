"""PyTorch: ``torch.nn.LSTM`` itself (oneDNN's fused kernel on CPU, cuDNN on GPU) called three ways (time-major with
unsorted packing, ``batch_first=True``, sorted packing); ``torch.nn.LSTMCell`` stepped in a Python loop, directions,
stacks, lengths and masks by the loop as its users write them; and the spec's equations in torch ops, peepholes
included. Layouts: backends/layouts/torch.py; runtime: backends/runtimes/torch.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends.layouts import torch as layouts
from backends.runtimes.torch import TORCH, from_numpy, lstm_cpu_kernels, torch
from contract.row import KnownFailure, Row
from contract.vocabulary import CONFORMANCE_DTYPES, HALF_DTYPES, Device, Dtype, Feature, Kind
from spec.precision import Policy

DEVICES = (Device.CPU, Device.CUDA)
NOT_MASKED = ("torch.nn.LSTM takes no mask of steps (variable lengths only, through pack_padded_sequence)")


def _load(module, state, device: str):
    """``module`` holding ``state`` (strict: a name torch does not have, or lacks, is an error)."""
    t = torch()
    with t.no_grad():
        module.load_state_dict({name: from_numpy(value) for name, value in state.items()})
    if device == Device.CUDA and hasattr(module, "flatten_parameters"):
        module.flatten_parameters()
    return module


def _dtype(params, half):
    return getattr(torch(), str(half or params.dtype.name))


def _module(params, layer, device: str, dtype, batch_first: bool = False):
    """An empty torch.nn.LSTM of these parameters' sizes and this layer's architecture, in ``dtype`` on ``device``."""
    return torch().nn.LSTM(params.input_size, params.hidden_size, num_layers=layer.num_layers,
                           bidirectional=layer.num_directions == 2, proj_size=params.proj_size or 0,
                           batch_first=batch_first, dtype=dtype, device=str(device))


#: What PyTorch's own cell computes in a half type (ATen's lstm_cell, torch ops one by one: every operation's result
#: rounded), measured: bfloat16 bit for bit, float16 within 0.013 ulps on average of half-every-operation.
ATEN_CELL = {Dtype.BFLOAT16: Policy.EVERY_OPERATION, Dtype.FLOAT16: Policy.EVERY_OPERATION}
#: The features for which nn.LSTM takes ATen's cell on the CPU whatever oneDNN supports (RNN.cpp, use_mkldnn).
ATEN_ONLY = frozenset({Feature.LENGTHS, Feature.PROJECTION})


# ---------------------------------------------------------------------------
# torch.nn.LSTM
# ---------------------------------------------------------------------------


def run_lstm(module, x, h0, c0, lengths=None, *, batch_first=False, enforce_sorted=False, total_length=None, t=None):
    """What a user writes around ``torch.nn.LSTM``, from time-major x (T, B, I): lengths (B,) on the CPU go in through
    ``pack_padded_sequence`` and come out through ``pad_packed_sequence`` (zeros past each length); ``enforce_sorted``:
    the caller sorts the batch by decreasing length and undoes it, else torch does. Returns y (T, B, D * P), h_n, c_n
    (L * D, B, .) in the original batch order. ``total_length`` (default T) is for tracing, where T must be a constant;
    ``t``: the torch module, for a compiler that traces the call (backends.runtimes.torch.torch is not traced)."""
    t = t or torch()
    rnn = t.nn.utils.rnn
    total_length = x.shape[0] if total_length is None else total_length
    batch = 0 if batch_first else 1
    if batch_first:
        x = x.transpose(0, 1)
    if lengths is None:
        y, (h_n, c_n) = module(x, (h0, c0))
    else:
        if enforce_sorted:
            order = t.argsort(lengths, descending=True, stable=True)
            on_device = order.to(x.device)
            x, h0, c0, lengths = x.index_select(batch, on_device), h0[:, on_device], c0[:, on_device], lengths[order]
        packed = rnn.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = module(packed, (h0, c0))
        y, _ = rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=total_length)
        if enforce_sorted:
            undo = t.argsort(order).to(x.device)
            y, h_n, c_n = y.index_select(batch, undo), h_n[:, undo], c_n[:, undo]
    return (y.transpose(0, 1) if batch_first else y), h_n, c_n


@dataclass(eq=False)
class TorchLSTM(Row):
    """torch.nn.LSTM, time-major with unsorted packing unless ``batch_first`` or ``enforce_sorted`` say otherwise."""

    id: str = "torch/nn.LSTM"
    description: str = "torch.nn.LSTM (oneDNN on CPU in float32, cuDNN on GPU); two biases, summed"
    runtime: object = TORCH
    layout: object = layouts.NN_LSTM
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION, Feature.LENGTHS})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    reasons: dict = field(default_factory=lambda: {
        Feature.EMPTY_SEQUENCES: "PyTorch refuses sequences of length 0: pack_padded_sequence raises \"Length of all "
                                 "samples has to be greater than 0, but found an element in 'lengths' that is <= 0\"",
        Feature.MASK: NOT_MASKED, Feature.MASK_PREVIOUS_OUTPUT: NOT_MASKED,
    })
    #: batch_first=True: x goes in (B, T, I) and y comes out (B, T, D * P).
    batch_first: bool = False
    #: Lengths: sort the batch by decreasing length, pack with enforce_sorted=True, unsort the results.
    enforce_sorted: bool = False

    def _policy(self, dtype, device, features=frozenset()):
        """By the kernel nn.LSTM takes (backends.runtimes.torch.lstm_cpu_kernels, recorded in the environment):
        oneDNN's fused LSTM and cuDNN store the step's results in half and compute in float32; ATen's cell rounds
        every operation (README, Precision policies). On the CPU, packed sequences and projections always take ATen's
        cell (measured: its bfloat16 answers on packed, lstmp-padded and medium-torch are half-every-operation's bit
        for bit, and outside half-storage's bounds)."""
        if device == Device.CUDA or (lstm_cpu_kernels(torch())[dtype.value] == "oneDNN" and not features & ATEN_ONLY):
            return Policy.HALF_STORAGE
        return ATEN_CELL[dtype]

    def build(self, native, *, params, layer, device, half=None):
        return _load(_module(params, layer, device, _dtype(params, half), self.batch_first), native, device)

    def inputs(self, x, h0, c0, lengths, mask, *, layer, device):
        """lengths stay on the CPU: pack_padded_sequence wants them there."""
        (x, h0, c0), _ = super().inputs(x, h0, c0, None, None, layer=layer, device=device)
        return (x, h0, c0), (None if lengths is None else torch().from_numpy(lengths.copy()), None)

    def call(self, module, x, h0, c0, lengths, mask, *, layer):
        return run_lstm(module, x, h0, c0, lengths, batch_first=self.batch_first, enforce_sorted=self.enforce_sorted)


# ---------------------------------------------------------------------------
# torch.nn.LSTM under torch.autocast
# ---------------------------------------------------------------------------

AUTOCAST_FLOAT16_CRASH = (
    "torch 2.13's float16 autocast around nn.LSTM on a CPU without oneDNN float16 (no AVX-512 FP16, AVX-NE-CONVERT or "
    "AMX-FP16) raises \"could not create a primitive descriptor for the LSTM forward propagation primitive\": oneDNN is "
    "chosen on the float32 input, then autocast casts to float16. Reproducer: "
    "findings/torch_autocast_cpu_float16_lstm_crashes.py; upstream: related pytorch/pytorch#88136, none for float16"
)
AUTOCAST_BFLOAT16_CRASH = (
    "torch 2.13's bfloat16 autocast around nn.LSTM on a CPU without oneDNN bfloat16 (no AVX-512, no AVX-NE-CONVERT: "
    "an AVX2-only EPYC, seen 2026-12-07) raises \"could not create a primitive descriptor for the LSTM forward "
    "propagation primitive\" (pytorch/pytorch#88136; intel/torch-xpu-ops#4066)"
)
AUTOCAST_NOT_REACHED = (
    "torch.autocast reaches nn.LSTM on the CPU only through oneDNN's layer op (KERNEL_CPU(mkldnn_rnn_layer, "
    "lower_precision_fp)), which packed sequences and projections never take: over packed data the LSTM runs in "
    "float32 (its answers come back float32), with proj_size ATen's cell casts only its products, and c_n comes back "
    "float32. Reproducer: findings/torch_autocast_cpu_lstm_packed_or_projected_not_autocast.py; upstream: none found"
)
AUTOCAST_FULL = "torch.autocast computes in a half type: the float32 and float64 nn.LSTM is the row torch/nn.LSTM"
HALF_GRADIENTS = ("torch/nn.LSTM(autocast) is judged forward only: its gradients would be the float32 parameters' "
                  "through autocast's casts, which it does not compute (nn.LSTM's half-type gradients are judged on "
                  "torch/nn.LSTM)")


@dataclass(eq=False)
class TorchAutocastLSTM(TorchLSTM):
    """A float32 torch.nn.LSTM called under ``torch.autocast(device, dtype=half)``: the mixed precision a PyTorch user
    writes. Its parameters hold the suite's half values in float32 (exactly), so autocast's casts are exact."""

    id: str = "torch/nn.LSTM(autocast)"
    description: str = "a float32 torch.nn.LSTM under torch.autocast(dtype=bfloat16 or float16), time-major"
    dtypes: tuple = HALF_DTYPES
    gradients: bool = False
    reasons: dict = field(default_factory=lambda: {
        **TorchLSTM().reasons, Dtype.FLOAT32: AUTOCAST_FULL, Dtype.FLOAT64: AUTOCAST_FULL, "gradients": HALF_GRADIENTS})
    known_failures: tuple = (
        KnownFailure(AUTOCAST_NOT_REACHED, kinds=(Kind.OUTPUTS,), device=Device.CPU, features=(Feature.LENGTHS,)),
        KnownFailure(AUTOCAST_NOT_REACHED, kinds=(Kind.OUTPUTS,), device=Device.CPU, features=(Feature.PROJECTION,)),
        KnownFailure(AUTOCAST_FLOAT16_CRASH, kinds=(Kind.OUTPUTS,), dtype=Dtype.FLOAT16, device=Device.CPU,
                     cpu_lacks=("avx512_fp16", "avx_ne_convert", "amx_fp16")),
        KnownFailure(AUTOCAST_BFLOAT16_CRASH, kinds=(Kind.OUTPUTS,), dtype=Dtype.BFLOAT16, device=Device.CPU,
                     cpu_lacks=("avx512f", "avx_ne_convert")),
    )

    def _policy(self, dtype, device, features=frozenset()):
        """Autocast casts the float32 module's work to the half type and, where it runs at all, oneDNN's fused LSTM
        (cuDNN on a GPU) stores each step's results in half: mixed precision whose casts are exact here, then
        half-storage (README, Precision policies)."""
        return Policy.HALF_STORAGE

    def build(self, native, *, params, layer, device, half=None):
        wide = {name: np.asarray(value, np.float32) for name, value in native.items()}
        module = _load(_module(params, layer, device, torch().float32), wide, device)
        return {"module": module, "dtype": _dtype(params, half)}

    def inputs(self, x, h0, c0, lengths, mask, *, layer, device):
        wide = (np.asarray(a, np.float32) for a in (x, h0, c0))
        return super().inputs(*wide, lengths, mask, layer=layer, device=device)

    def call(self, built, x, h0, c0, lengths, mask, *, layer):
        with torch().autocast(x.device.type, dtype=built["dtype"]):
            return run_lstm(built["module"], x, h0, c0, lengths)


# ---------------------------------------------------------------------------
# torch.nn.LSTMCell, stepped in Python
# ---------------------------------------------------------------------------


def run_direction(cell, x, h, c, steps, keep=None, zero_output=True):
    """One direction of one layer as a user steps torch.nn.LSTMCell: the cell at the time steps ``steps`` (in that
    order), outputs in time order (T, B, P). Where keep[t] (B,) is false a row's state stays as it was and its output
    is zero, or with ``zero_output=False`` its previous output (zero before its first step)."""
    t = torch()
    outputs = [None] * x.shape[0]
    previous = t.zeros_like(h)
    for step in steps:
        h_new, c_new = cell(x[step], (h, c))
        if keep is None:
            h, c = h_new, c_new
            outputs[step] = h
            continue
        run = keep[step][:, None]
        h, c = t.where(run, h_new, h), t.where(run, c_new, c)
        outputs[step] = previous = t.where(run, h_new, t.zeros_like(h) if zero_output else previous)
    return t.stack(outputs), h, c


def run_cells(cells, x, h0, c0, layer, keep=None, zero_output=True):
    """A stack of LSTMCells as a user writes it: cell k = l * D + d; a reverse direction steps T-1 .. 0; layer l + 1
    reads [forward ; reverse] of layer l. Returns y, h_n, c_n as torch.nn.LSTM does."""
    t = torch()
    D, T = layer.num_directions, x.shape[0]
    layer_input, h_n, c_n = x, [], []
    for l in range(layer.num_layers):
        outputs = []
        for d in range(D):
            k = l * D + d
            steps = range(T - 1, -1, -1) if layer.reversed(d) else range(T)
            y, h, c = run_direction(cells[k], layer_input, h0[k], c0[k], steps, keep, zero_output)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = t.cat(outputs, dim=2)
    return layer_input, t.stack(h_n), t.stack(c_n)


@dataclass(eq=False)
class TorchLSTMCell(Row):
    id: str = "torch/nn.LSTMCell"
    description: str = "torch.nn.LSTMCell stepped in a Python loop; directions, stacks, lengths and masks by the loop"
    runtime: object = TORCH
    layout: object = layouts.CELLS
    features: frozenset = frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.LENGTHS,
                                     Feature.EMPTY_SEQUENCES, Feature.MASK, Feature.MASK_PREVIOUS_OUTPUT})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(ATEN_CELL))

    def build(self, native, *, params, layer, device, half=None):
        cells = torch().nn.ModuleList(
            torch().nn.LSTMCell(cell.input_size, cell.hidden_size, dtype=_dtype(params, half), device=str(device))
            for cell in params.cells)
        return _load(cells, native, device)

    def call(self, cells, x, h0, c0, lengths, mask, *, layer):
        if lengths is not None:  # (13): the mask t < L_b, with zero outputs
            keep = torch().arange(x.shape[0], device=x.device)[:, None] < lengths[None, :]
            return run_cells(cells, x, h0, c0, layer, keep, zero_output=True)
        return run_cells(cells, x, h0, c0, layer, mask, zero_output=layer.zero_output_for_mask)


# ---------------------------------------------------------------------------
# torch/peephole: the spec's equations in torch ops
# ---------------------------------------------------------------------------


def peephole_forward(w, x, h0, c0, workspace):
    """Equations (1)-(6) for inference, in place in ``workspace`` (a flat tensor of :func:`workspace_size` elements,
    reused between calls: a fresh allocation of that size costs page faults).

    Feature-major: the state is held transposed, (H, B), and the pre-activations as (4H, B) per step, so that each
    step's product is U (4H, H) @ h^T (H, B): on CPU, MKL runs that shape about 20% faster than h @ U^T for a small
    batch, and the gate blocks i, f, o, g become row ranges. One matrix product projects every step's input; each
    step adds one product with the recurrent weights (in place) and does the elementwise work."""
    t = torch()
    T, B, I = x.shape
    H = h0.shape[1]
    sizes = (4 * H * T * B, T * H * B, 3 * H * B)
    z_flat, h_flat, state_flat = workspace[: sum(sizes)].split(sizes)
    W, U, b, p = w["weight_ih"], w["weight_hh"], w["bias"], w.get("peephole")
    z_all = t.addmm(b[:, None], W, x.reshape(T * B, I).t(), out=z_flat.view(4 * H, T * B)).view(4 * H, T, B)
    hT_seq = h_flat.view(T, H, B)
    cell_a, cell_b, tanh_c = state_flat.view(3, H, B).unbind(0)
    if p is not None:
        p_if, p_o = p[: 2 * H].view(2, H, 1), p[2 * H:, None]
    h, c = h0.t(), c0.t()
    for step in range(T):
        z = z_all[:, step]  # (4H, B): rows i, f, o, g
        z.addmm_(U, h)  # z_t = W x_t + b + U h_{t-1}
        i, f, o, g = z[:H], z[H: 2 * H], z[2 * H: 3 * H], z[3 * H:]
        if p is None:
            z[: 3 * H].sigmoid_()  # (1), (2), (5)
        else:
            z[: 2 * H].view(2, H, B).addcmul_(c[None], p_if)  # i and f peek at c_{t-1}
            z[: 2 * H].sigmoid_()  # (1), (2)
        g.tanh_()  # (3)
        c_new = (cell_a, cell_b)[step % 2]
        t.mul(f, c, out=c_new).addcmul_(i, g)  # (4)
        if p is not None:
            o.addcmul_(c_new, p_o).sigmoid_()  # (5): o peeks at the new c_t
        t.tanh(c_new, out=tanh_c)
        h = t.mul(o, tanh_c, out=hT_seq[step])  # (6)
        c = c_new
    h_seq = hT_seq.transpose(1, 2).contiguous()  # (T, B, H), fresh: the workspace is reused
    return h_seq, h_seq[-1], c.t().contiguous()


def peephole_forward_autograd(w, x, h0, c0, t=None):
    """The same equations out of place, for autograd, batch-major (with autograd the feature-major form measured no
    faster); the steps taken with unbind, whose backward is one stack (indexing would scatter into a zero (T, B, 4H)
    tensor at every step). ``t``: the torch module, for a compiler that traces the call."""
    t = t or torch()
    T, B, I = x.shape
    H = h0.shape[1]
    W, U, b, p = w["weight_ih"], w["weight_hh"], w["bias"], w.get("peephole")
    z_all = t.addmm(b, x.reshape(T * B, I), W.t()).view(T, B, 4 * H)
    if p is not None:
        p_if, p_o = p[: 2 * H].view(2, H), p[2 * H:]
    h, c, hs = h0, c0, []
    for z_x in z_all.unbind(0):
        z = t.addmm(z_x, h, U.t())
        if p is None:
            z_ifo, z_g = z.split([3 * H, H], 1)
            i, f, o = t.sigmoid(z_ifo).chunk(3, 1)
            c = t.addcmul(f * c, i, t.tanh(z_g))
        else:
            z_if, z_o, z_g = z.split([2 * H, H, H], 1)
            i, f = t.sigmoid(t.addcmul(z_if.view(B, 2, H), c[:, None], p_if)).unbind(1)
            c = t.addcmul(f * c, i, t.tanh(z_g))
            o = t.sigmoid(t.addcmul(z_o, c, p_o))
        h = o * t.tanh(c)
        hs.append(h)
    return t.stack(hs), h, c


def workspace_size(T: int, B: int, H: int) -> int:
    """Elements of the forward's workspace: pre-activations (4H, T*B), h for every step (T, H, B), two cell states
    and tanh(c) (H, B each)."""
    return 4 * H * T * B + T * H * B + 3 * H * B


@dataclass(eq=False)
class TorchPeepholeLSTM(Row):
    id: str = "torch/peephole"
    description: str = "the spec's equations in torch ops (one input product, one addmm a step), autograd gradients"
    runtime: object = TORCH
    layout: object = layouts.PEEPHOLE
    features: frozenset = frozenset({Feature.PEEPHOLE})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(ATEN_CELL))

    def __post_init__(self):
        super().__post_init__()
        self._workspaces: dict[tuple, object] = {}

    def _workspace(self, shape, dtype, device):
        """A buffer for the forward's intermediates per (T, B, H, dtype, device), kept up to 256 MiB in all."""
        key = (*shape, dtype, str(device))
        if key not in self._workspaces:
            size = workspace_size(*shape) * dtype.itemsize
            if sum(w.numel() * w.element_size() for w in self._workspaces.values()) + size > 256 << 20:
                self._workspaces.clear()
            self._workspaces[key] = torch().empty(workspace_size(*shape), dtype=dtype, device=device)
        return self._workspaces[key]

    def call(self, weights, x, h0, c0, lengths, mask, *, layer):
        if torch().is_grad_enabled():
            h_seq, h_T, c_T = peephole_forward_autograd(weights, x, h0[0], c0[0])
        else:
            workspace = self._workspace((x.shape[0], x.shape[1], h0.shape[2]), x.dtype, x.device)
            h_seq, h_T, c_T = peephole_forward(weights, x, h0[0], c0[0], workspace)
        return h_seq, h_T[None], c_T[None]


ROWS = (
    TorchLSTM(),
    TorchLSTM(id="torch/nn.LSTM(batch_first)", batch_first=True,
              description="torch.nn.LSTM(batch_first=True): x (B, T, I) in, y (B, T, D*P) out; otherwise torch/nn.LSTM"),
    TorchLSTM(id="torch/nn.LSTM(enforce_sorted)", enforce_sorted=True,
              description="torch.nn.LSTM with lengths packed sorted: the batch sorted by length, enforce_sorted=True, unsorted after"),
    TorchLSTMCell(),
    TorchPeepholeLSTM(),
    TorchAutocastLSTM(),
)
