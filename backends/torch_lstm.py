"""PyTorch: ``torch.nn.LSTM`` itself (cuDNN on a GPU, oneDNN's fused kernel on CPU in float32), called three
ways (time-major with unsorted packing, ``batch_first=True``, sorted packing); ``torch.nn.LSTMCell`` stepped in
a Python loop; and an LSTM built from torch ops that implements the spec's equations, peepholes included.

torch is imported only inside functions: listing these implementations works without it, and their
rows are then unavailable with the install hint.

Native layouts (:func:`cell_state`: one copy for every torch row; gates i, f, g, o)
    torch/nn.LSTM   the module's state_dict: ``weight_ih_l{l}`` (4H, I; D*P for l >= 1), ``weight_hh_l{l}``
                    (4H, P), ``bias_ih_l{l}`` and ``bias_hh_l{l}`` (4H each, summed), ``weight_hr_l{l}`` (P, H)
                    with a projection; ``_reverse`` appended for direction 1. b is split exactly in half
                    between the two biases (so that code dropping one of them fails instead of passing by
                    luck); the forget bias is folded into ``bias_ih``'s f block. The cell contract uses
                    layer 0's names.
    torch/nn.LSTMCell  one cell: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as above; a layer: the
                    state_dict of a ``torch.nn.ModuleList`` of cells, cell k = l * D + d: ``{k}.weight_ih``, ...
    torch/peephole  ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias`` (4H, forget bias folded),
                    ``peephole`` (3H, gates i, f, o; only for the peephole variant). Rows are in the
                    gate order **i, f, o, g** (:data:`PEEPHOLE_ORDER`): the three sigmoid gates are
                    adjacent, so one sigmoid covers them.

Numerics (:func:`configure`, applied before every run and reported by ``environment()``): on CUDA,
TF32 is off for matrix products and for cuDNN; the CPU thread count is ``LSTMC_THREADS`` when that is
set, else torch's default.

Parameters are converted once per ``LSTMParams`` object, forget bias, dtype and device, and cached
(weakly keyed by the params object, which is treated as immutable, like the frozen dataclass it is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from backends.base import (
    Config,
    Implementation,
    NativeCache,
    NotSupported,
    cpu_model,
    fold_forget_bias,
    framework_problem,
    import_framework,
)
from backends.config import layer_features
from backends.timing import HALF_DTYPES, TimedPass, Timing
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams

INSTALL_HINT = "torch is not installed (pip install 'lstm-conformance[torch]')"

#: The gate order of torch/peephole's native layout, and the canonical gate each row block holds.
PEEPHOLE_ORDER = ("i", "f", "o", "g")
_TO_PEEPHOLE_ORDER = [GATES.index(g) for g in PEEPHOLE_ORDER]  # canonical blocks in native order
_FROM_PEEPHOLE_ORDER = [PEEPHOLE_ORDER.index(g) for g in GATES]  # native blocks in canonical order


# ---------------------------------------------------------------------------
# torch, devices, numerics
# ---------------------------------------------------------------------------


def _torch():
    return import_framework("torch", INSTALL_HINT)


def _availability(device: str) -> str | None:
    if (problem := framework_problem("torch", INSTALL_HINT)) is not None:
        return problem
    torch = _torch()
    if device == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"no CUDA: this torch ({torch.__version__}) is a CPU-only build"
        return "no CUDA device visible to torch (torch.cuda.is_available() is False)"
    return None


def _threads_wanted() -> int | None:
    value = os.environ.get("LSTMC_THREADS")
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"LSTMC_THREADS must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"LSTMC_THREADS must be a positive integer, got {value!r}")
    return threads


def _cudnn_wanted() -> bool | None:
    """LSTMC_CUDNN=0 runs torch.nn.LSTM on PyTorch's own CUDA kernels instead of cuDNN's (to tell
    the two apart); 1 or unset leaves cuDNN on."""
    value = os.environ.get("LSTMC_CUDNN")
    if value is None or value == "":
        return None
    if value not in ("0", "1"):
        raise ValueError(f"LSTMC_CUDNN must be 0 or 1, got {value!r}")
    return value == "1"


def configure(device: str) -> None:
    """Set the numerics every run depends on: threads (LSTMC_THREADS), and on CUDA TF32 off and cuDNN
    on unless LSTMC_CUDNN=0."""
    torch = _torch()
    threads = _threads_wanted()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        cudnn = _cudnn_wanted()
        if cudnn is not None:
            torch.backends.cudnn.enabled = cudnn


def _environment(device: str) -> dict[str, object]:
    if (reason := _availability(device)) is not None:
        return {"unavailable": reason}
    torch = _torch()
    configure(device)
    env: dict[str, object] = {
        "torch": torch.__version__,
        "device": cpu_model() if device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "threads_env": os.environ.get("LSTMC_THREADS"),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    # torch >= 2.9 also has per-backend fp32_precision settings ("none" inherits from the level above,
    # "ieee" is full float32, "tf32" allows TF32); the legacy flags above set them, but record them too.
    precision = {}
    for name, getter in (
        ("generic", lambda: torch.backends.fp32_precision),
        ("cuda.matmul", lambda: torch.backends.cuda.matmul.fp32_precision),
        ("cudnn.rnn", lambda: torch.backends.cudnn.rnn.fp32_precision),
    ):
        try:
            precision[name] = getter()
        except AttributeError:
            pass
    if precision:
        env["fp32_precision"] = precision
    if device == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["cudnn_enabled"] = torch.backends.cudnn.enabled
    else:
        env["mkldnn"] = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    return env


def _tensor(torch, array: np.ndarray, device: str):
    """A NumPy array as a tensor: shared memory on CPU (copied only if read-only), copied to a GPU."""
    if not array.flags.writeable:
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor if device == "cpu" else tensor.to(device)


def _host(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _synchronize(torch, device: str) -> None:
    """Wait for the device: CUDA kernels run asynchronously, CPU ops have finished when they return."""
    if device == "cuda":
        torch.cuda.synchronize()


def _timed_pass(torch, timing: Timing, x, h0, c0, cotangents, forward, gradients) -> TimedPass:
    """A TimedPass over tensors uploaded (and rounded to ``timing.dtype``) once: ``forward(x, h0, c0)``
    returns (h_seq, h_T, c_T), ``gradients(x, h0, c0, cotangents)`` a dict with "x", "h0" and "c0"."""
    dtype, device = getattr(torch, timing.dtype), timing.device
    x, h0, c0 = (_tensor(torch, a, device).to(dtype) for a in (x, h0, c0))
    last: dict[str, object] = {}
    if timing.gradients:
        cot = {k: _tensor(torch, v, device).to(dtype) for k, v in cotangents.items()}

        def run():
            grads = gradients(x, h0, c0, cot)
            _synchronize(torch, device)
            last.update((k, grads[k]) for k in ("x", "h0", "c0"))
    else:

        def run():
            last["h_seq"] = forward(x, h0, c0)[0]
            _synchronize(torch, device)

    def result():
        return {k: v.detach().to("cpu", torch.float64).numpy() for k, v in last.items()}

    return TimedPass(run, result, resident=True)


# ---------------------------------------------------------------------------
# torch's layout of one cell, under the names each module gives it
# ---------------------------------------------------------------------------


def lstm_names(layer: int, direction: int):
    """torch.nn.LSTM's names for cell (layer, direction): weight_ih -> weight_ih_l1_reverse."""
    return lambda tensor: f"{tensor}_l{layer}{'_reverse' if direction else ''}"


def cell_names(tensor: str) -> str:
    """torch.nn.LSTMCell's names: its own state_dict."""
    return tensor


def cell_list_names(k: int):
    """The names in a torch.nn.ModuleList of LSTMCells, cell k = l * D + d: weight_ih -> 3.weight_ih."""
    return lambda tensor: f"{k}.{tensor}"


def cell_state(cell: LSTMParams, forget_bias: float, names) -> dict[str, np.ndarray]:
    """One cell in torch's layout, keyed ``names(tensor)``: W (4H, I), U (4H, P), two biases, W_hr (P, H).
    b is split exactly in half between the biases (code that drops one of them then fails instead of passing
    by luck); the forget bias goes into bias_ih's f block (torch has no forget bias)."""
    H = cell.hidden_size
    state = {
        names("weight_ih"): cell.W.reshape(4 * H, cell.input_size).copy(),
        names("weight_hh"): cell.U.reshape(4 * H, cell.output_size).copy(),
        names("bias_ih"): fold_forget_bias(cell.b * 0.5, forget_bias).reshape(4 * H),
        names("bias_hh"): (cell.b * 0.5).reshape(4 * H),
    }
    if cell.W_hr is not None:
        state[names("weight_hr")] = cell.W_hr.copy()
    return state


def cell_from_state(state: Mapping[str, object], names) -> LSTMParams:
    """The canonical cell from torch's tensors: the two biases summed (a module built with bias=False has none)."""
    w_ih, w_hh = np.asarray(state[names("weight_ih")]), np.asarray(state[names("weight_hh")])
    H = w_ih.shape[0] // 4
    bias = np.zeros(4 * H, w_ih.dtype)
    for name in ("bias_ih", "bias_hh"):
        if state.get(names(name)) is not None:
            bias = bias + np.asarray(state[names(name)])
    w_hr = state.get(names("weight_hr"))
    return LSTMParams(
        w_ih.reshape(4, H, -1).copy(), w_hh.reshape(4, H, -1).copy(), bias.reshape(4, H),
        W_hr=None if w_hr is None else np.asarray(w_hr).copy(),
    )


def cell_gradients(grads: Mapping[str, np.ndarray], cell: LSTMParams, names) -> dict[str, np.ndarray]:
    """A cell's canonical gradients from autograd's, keyed as :func:`cell_state` names them: b's is either bias's."""
    _check_bias_gradients(grads, names("bias_ih"), names("bias_hh"))
    out = {
        "W": grads[names("weight_ih")].reshape(cell.W.shape),
        "U": grads[names("weight_hh")].reshape(cell.U.shape),
        "b": grads[names("bias_ih")].reshape(cell.b.shape),
    }
    if cell.W_hr is not None:
        out["W_hr"] = grads[names("weight_hr")]
    return out


def _check_bias_gradients(grads: Mapping[str, np.ndarray], ih: str, hh: str) -> None:
    """Both biases enter every pre-activation the same way, so their gradients must agree: the
    canonical b's gradient is either one. They may differ only by rounding (separate reductions)."""
    d_ih, d_hh = grads[ih], grads[hh]
    if np.array_equal(d_ih, d_hh):
        return
    eps = float(np.finfo(d_ih.dtype).eps)
    scale = max(float(np.max(np.abs(d_ih))), 1.0)
    worst = float(np.max(np.abs(d_ih - d_hh)))
    if worst > 64 * eps * scale:
        raise AssertionError(f"torch: the gradients of {ih} and {hh} differ by up to {worst:.3g}; they must be equal")


def _load(torch, module, state: Mapping[str, np.ndarray], device: str):
    """``module`` holding ``state`` (strict: a name that torch does not have, or lacks, is an error)."""
    with torch.no_grad():
        module.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    if device == "cuda" and hasattr(module, "flatten_parameters"):
        module.flatten_parameters()
    return module


def _layer_cells(params: LayerParams):
    """(k, l, d, cell) for every cell, k = l * D + d."""
    D = params.num_directions
    return [(k, k // D, k % D, cell) for k, cell in enumerate(params.cells)]


# ---------------------------------------------------------------------------
# What every row shares
# ---------------------------------------------------------------------------


@dataclass
class _TorchImplementation(Implementation):
    """forward, backward and timed passes around each row's own pieces: ``_native`` (its parameters on a
    device, cached), ``_forward_tensors``, ``_gradient_tensors`` (keyed x, h0, c0
    and the native parameter names) and ``_canonical_gradients`` (those in the canonical layout)."""

    framework: str = "torch"
    devices: tuple[str, ...] = ("cpu", "cuda")
    timing_dtypes: tuple[str, ...] = HALF_DTYPES

    def _availability(self, device: str) -> str | None:
        return _availability(device)

    def _environment(self, device: str) -> dict[str, object]:
        return _environment(device)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        configure(config.device)
        torch, dev = _torch(), config.device
        native = self._native(params, forget_bias, config.dtype, dev)
        h_seq, h_T, c_T = self._forward_tensors(torch, native, *(_tensor(torch, a, dev) for a in (x, h0, c0)))
        return _host(h_seq), _host(h_T), _host(c_T)

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        configure(config.device)
        torch, dev = _torch(), config.device
        native = self._native(params, forget_bias, config.dtype, dev)
        cot = {k: _tensor(torch, v, dev) for k, v in cotangents.items()}
        grads = self._gradient_tensors(torch, native, *(_tensor(torch, a, dev) for a in (x, h0, c0)), cot)
        g = {name: _host(t) for name, t in grads.items()}
        return {"x": g["x"], "h0": g["h0"], "c0": g["c0"], **self._canonical_gradients(params, g)}

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        configure(timing.device)
        torch = _torch()
        native = self._native(params, forget_bias, timing.dtype, timing.device)
        return _timed_pass(
            torch, timing, x, h0, c0, cotangents,
            lambda *a: self._forward_tensors(torch, native, *a),
            lambda *a: self._gradient_tensors(torch, native, *a),
        )


@dataclass
class _TorchLayerImplementation(_TorchImplementation):
    """The layer contract around a row's ``layer_module`` (a module holding :meth:`to_native_layer`'s tensors,
    cached), ``_run_layer`` (the row's call) and ``_layer_names`` (how the module names cell k's tensors)."""

    def _layer_arguments(self, torch, device, x, h0, c0, lengths, mask):
        """The layer's inputs as tensors: lengths stay on the CPU (pack_padded_sequence wants them there)."""
        tensors = [_tensor(torch, a, device) for a in (x, h0, c0)]
        lengths = None if lengths is None else _tensor(torch, lengths, "cpu")
        mask = None if mask is None else _tensor(torch, mask, device)
        return tensors, lengths, mask

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        configure(config.device)
        torch = _torch()
        module = self.layer_module(params, layer, config.dtype, config.device)
        (x, h0, c0), lengths, mask = self._layer_arguments(torch, config.device, x, h0, c0, lengths, mask)
        with torch.inference_mode():
            y, h_n, c_n = self._run_layer(torch, module, x, h0, c0, lengths, mask, layer)
        return _host(y), _host(h_n), _host(c_n)

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        configure(config.device)
        torch = _torch()
        module = self.layer_module(params, layer, config.dtype, config.device)
        tensors, lengths, mask = self._layer_arguments(torch, config.device, x, h0, c0, lengths, mask)
        inputs = {name: t.detach().requires_grad_() for name, t in zip(("x", "h0", "c0"), tensors)}
        weights = dict(module.named_parameters())
        cot = [_tensor(torch, cotangents[name], config.device) for name in ("dy", "dh_T", "dc_T")]
        with torch.enable_grad():
            outputs = self._run_layer(torch, module, *inputs.values(), lengths, mask, layer)
            grads = torch.autograd.grad(outputs, (*inputs.values(), *weights.values()), grad_outputs=cot)
        g = {name: _host(t) for name, t in zip((*inputs, *weights), grads)}
        answer = {"x": g["x"], "h0": g["h0"], "c0": g["c0"]}
        for k, l, d, cell in _layer_cells(params):
            for tensor, value in cell_gradients(g, cell, self._layer_names(k, l, d)).items():
                answer[f"{params.cell_name(k)} {tensor}"] = value
        return answer

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """The state_dict of the module :meth:`layer_module` builds (NumPy arrays), the forget bias folded."""
        self._check_expressible(layer, params.peephole)
        state = {}
        for k, l, d, cell in _layer_cells(params):
            state.update(cell_state(cell, layer.forget_bias, self._layer_names(k, l, d)))
        return state

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        self._check_expressible(layer, layer.peephole)
        D = layer.num_directions
        cells = [cell_from_state(native, self._layer_names(l * D + d, l, d)) for l in range(layer.num_layers) for d in range(D)]
        return LayerParams(tuple(cells), D)

    def _check_expressible(self, layer: LayerConfig, peephole: bool) -> None:
        """NotSupported, with the row's reason, for what its modules cannot hold or run."""
        if peephole:
            raise NotSupported(self.unsupported_reasons["peephole"])
        for feature in layer_features(layer):
            if feature not in (self.layer_features or ()):
                raise NotSupported(self.unsupported_reasons[feature])

    def layer_module(self, params: LayerParams, layer: LayerConfig, dtype: str, device: str):
        """The module running ``params`` as ``layer`` (cached): its parameters require gradients."""

        def build():
            torch = _torch()
            return _load(torch, self._new_layer_module(torch, params, layer, getattr(torch, dtype), device),
                         self.to_native_layer(params, layer), device)

        return self._modules.get(params, (layer, dtype, device), build)


# ---------------------------------------------------------------------------
# torch/nn.LSTM, and two more ways people call it
# ---------------------------------------------------------------------------


def run_lstm(torch, module, x, h0, c0, lengths=None, *, batch_first=False, enforce_sorted=False, total_length=None):
    """What a user writes around ``torch.nn.LSTM``, from time-major x (T, B, I): lengths (B,) on the CPU go in
    through ``pack_padded_sequence`` and come out through ``pad_packed_sequence`` (zeros past each length);
    ``enforce_sorted``: the caller sorts the batch by decreasing length and undoes it, else torch does
    (``enforce_sorted=False``). Returns y (T, B, D * P), h_n, c_n (L * D, B, .), in the original batch order.
    ``total_length`` (default T) is for tracing, where T must be a constant."""
    rnn = torch.nn.utils.rnn
    total_length = x.shape[0] if total_length is None else total_length
    batch = 0 if batch_first else 1
    if batch_first:
        x = x.transpose(0, 1)
    if lengths is None:
        y, (h_n, c_n) = module(x, (h0, c0))
    else:
        if enforce_sorted:
            order = torch.argsort(lengths, descending=True, stable=True)
            on_device = order.to(x.device)
            x, h0, c0, lengths = x.index_select(batch, on_device), h0[:, on_device], c0[:, on_device], lengths[order]
        packed = rnn.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = module(packed, (h0, c0))
        y, _ = rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=total_length)
        if enforce_sorted:
            undo = torch.argsort(order).to(x.device)
            y, h_n, c_n = y.index_select(batch, undo), h_n[:, undo], c_n[:, undo]
    return (y.transpose(0, 1) if batch_first else y), h_n, c_n


#: What torch.nn.LSTM does not have, as its users would be told.
NN_LSTM_REASONS = {
    "peephole": "torch.nn.LSTM has no peepholes",
    "reverse": "torch.nn.LSTM has no reverse-only direction: bidirectional=True runs both directions",
    "empty_sequences": "PyTorch refuses sequences of length 0: pack_padded_sequence raises \"Length of all samples "
                       "has to be greater than 0, but found an element in 'lengths' that is <= 0\"",
    "mask": "torch.nn.LSTM takes no mask of steps (variable lengths only, through pack_padded_sequence)",
    "mask_previous_output": "torch.nn.LSTM takes no mask of steps (variable lengths only, through pack_padded_sequence)",
    "cell_clip": "torch.nn.LSTM has no cell clip",
    "gate_clip": "torch.nn.LSTM has no gate clip",
    "proj_clip": "torch.nn.LSTM has no clip on the projection",
    "coupled": "torch.nn.LSTM has no coupled input and forget gates",
}
NN_LSTM_FEATURES = ("stacked", "bidirectional", "projection", "lengths")


@dataclass
class TorchLSTM(_TorchLayerImplementation):
    """torch.nn.LSTM, called time-major with unsorted packing (``enforce_sorted=False``) unless ``batch_first``
    or ``enforce_sorted`` say otherwise: the rows for those two calls share all of this."""

    id: str = "torch/nn.LSTM"
    description: str = "torch.nn.LSTM (oneDNN on CPU in float32, cuDNN on GPU); two biases, summed"
    variants: tuple[str, ...] = ("standard",)
    layer_features: tuple[str, ...] | None = NN_LSTM_FEATURES
    unsupported_reasons: dict = field(default_factory=lambda: dict(NN_LSTM_REASONS))
    #: batch_first=True: x goes in (B, T, I) and y comes out (B, T, D * P).
    batch_first: bool = False
    #: Lengths: sort the batch by decreasing length, pack with enforce_sorted=True, unsort the results.
    enforce_sorted: bool = False

    def __post_init__(self):
        self._modules = NativeCache()

    # -- layouts -------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        if params.peephole:
            raise NotSupported(self.unsupported_reasons["peephole"])
        return cell_state(params, forget_bias, lstm_names(0, 0))

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        return cell_from_state(native, lstm_names(0, 0))

    @staticmethod
    def _layer_names(k: int, layer: int, direction: int):
        return lstm_names(layer, direction)

    # -- running -------------------------------------------------------------

    def module(self, params: LSTMParams, forget_bias: float, dtype: str, device: str):
        """The torch.nn.LSTM holding ``params`` (cached): its parameters require gradients."""

        def build():
            torch = _torch()
            module = torch.nn.LSTM(params.input_size, params.hidden_size, batch_first=self.batch_first,
                                   dtype=getattr(torch, dtype), device=device)
            return _load(torch, module, self.to_native(params, forget_bias), device)

        return self._modules.get(params, (float(forget_bias), dtype, device), build)

    _native = module

    def _new_layer_module(self, torch, params: LayerParams, layer: LayerConfig, dtype, device):
        return torch.nn.LSTM(
            params.input_size, params.hidden_size, num_layers=layer.num_layers, bidirectional=layer.num_directions == 2,
            proj_size=params.proj_size or 0, batch_first=self.batch_first, dtype=dtype, device=device,
        )

    def _run(self, torch, module, x, h0, c0, lengths=None):
        return run_lstm(torch, module, x, h0, c0, lengths, batch_first=self.batch_first, enforce_sorted=self.enforce_sorted)

    def _run_layer(self, torch, module, x, h0, c0, lengths, mask, layer):
        return self._run(torch, module, x, h0, c0, lengths)

    def _forward_tensors(self, torch, module, x, h0, c0):
        with torch.inference_mode():
            h_seq, h_T, c_T = self._run(torch, module, x, h0[None], c0[None])
        return h_seq, h_T[0], c_T[0]

    def _gradient_tensors(self, torch, module, x, h0, c0, cot) -> dict[str, object]:
        """Gradients by autograd, keyed x, h0, c0 and the module's parameter names."""
        inputs = {name: t.detach().requires_grad_() for name, t in (("x", x), ("h0", h0), ("c0", c0))}
        weights = dict(module.named_parameters())
        with torch.enable_grad():
            h_seq, h_T, c_T = self._run(torch, module, inputs["x"], inputs["h0"][None], inputs["c0"][None])
            grads = torch.autograd.grad(
                (h_seq, h_T, c_T),
                (*inputs.values(), *weights.values()),
                grad_outputs=(cot["dh_seq"], cot["dh_T"][None], cot["dc_T"][None]),
            )
        return dict(zip((*inputs, *weights), grads))

    def _canonical_gradients(self, params, g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return cell_gradients(g, params, lstm_names(0, 0))


# ---------------------------------------------------------------------------
# torch/nn.LSTMCell
# ---------------------------------------------------------------------------


def run_direction(torch, cell, x, h, c, steps, keep=None, zero_output=True):
    """One direction of one layer, as a user steps torch.nn.LSTMCell: the cell at time steps ``steps`` (in that
    order), outputs in time order (T, B, P). Where keep[t] (B,) is false a row's state stays as it was and its
    output is zero, or with ``zero_output=False`` its previous output (zero before its first step)."""
    outputs = [None] * x.shape[0]
    previous = torch.zeros_like(h)
    for t in steps:
        h_new, c_new = cell(x[t], (h, c))
        if keep is None:
            h, c = h_new, c_new
            outputs[t] = h
            continue
        run = keep[t][:, None]
        h, c = torch.where(run, h_new, h), torch.where(run, c_new, c)
        outputs[t] = previous = torch.where(run, h_new, torch.zeros_like(h) if zero_output else previous)
    return torch.stack(outputs), h, c


def run_cells(torch, cells, x, h0, c0, layer: LayerConfig, keep=None, zero_output=True):
    """A stack of LSTMCells as a user writes it: cell k = l * D + d; a reverse direction steps T-1 .. 0;
    layer l + 1 reads [forward ; reverse] of layer l. Returns y, h_n, c_n as torch.nn.LSTM does."""
    D, T = layer.num_directions, x.shape[0]
    layer_input, h_n, c_n = x, [], []
    for l in range(layer.num_layers):
        outputs = []
        for d in range(D):
            k = l * D + d
            steps = range(T - 1, -1, -1) if layer.reversed(d) else range(T)
            y, h, c = run_direction(torch, cells[k], layer_input, h0[k], c0[k], steps, keep, zero_output)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=2)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


CELL_REASONS = {
    "peephole": "torch.nn.LSTMCell has no peepholes",
    "projection": "torch.nn.LSTMCell has no projection (proj_size is torch.nn.LSTM's only)",
    "proj_clip": "torch.nn.LSTMCell has no projection (proj_size is torch.nn.LSTM's only)",
    "cell_clip": "torch.nn.LSTMCell has no cell clip",
    "gate_clip": "torch.nn.LSTMCell has no gate clip",
    "coupled": "torch.nn.LSTMCell has no coupled input and forget gates",
}


@dataclass
class TorchLSTMCell(_TorchLayerImplementation):
    """torch.nn.LSTMCell (ATen's lstm_cell, not nn.LSTM's kernel) stepped in a Python loop; directions, stacks,
    lengths and masks are that loop's, written as its users write them (:func:`run_cells`)."""

    id: str = "torch/nn.LSTMCell"
    description: str = "torch.nn.LSTMCell stepped in a Python loop; directions, stacks, lengths and masks by the loop"
    variants: tuple[str, ...] = ("standard",)
    layer_features: tuple[str, ...] | None = (
        "stacked", "reverse", "bidirectional", "lengths", "empty_sequences", "mask", "mask_previous_output",
    )
    unsupported_reasons: dict = field(default_factory=lambda: dict(CELL_REASONS))

    def __post_init__(self):
        self._modules = NativeCache()

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        if params.peephole:
            raise NotSupported(self.unsupported_reasons["peephole"])
        return cell_state(params, forget_bias, cell_names)

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        return cell_from_state(native, cell_names)

    @staticmethod
    def _layer_names(k: int, layer: int, direction: int):
        return cell_list_names(k)

    def cell(self, params: LSTMParams, forget_bias: float, dtype: str, device: str):
        """The torch.nn.LSTMCell holding ``params`` (cached)."""

        def build():
            torch = _torch()
            module = torch.nn.LSTMCell(params.input_size, params.hidden_size, dtype=getattr(torch, dtype), device=device)
            return _load(torch, module, self.to_native(params, forget_bias), device)

        return self._modules.get(params, (float(forget_bias), dtype, device), build)

    _native = cell

    def _new_layer_module(self, torch, params: LayerParams, layer: LayerConfig, dtype, device):
        return torch.nn.ModuleList(
            torch.nn.LSTMCell(cell.input_size, cell.hidden_size, dtype=dtype, device=device) for cell in params.cells
        )

    def _run_layer(self, torch, cells, x, h0, c0, lengths, mask, layer):
        if lengths is not None:  # (13): the mask t < L_b, zero outputs
            keep = torch.arange(x.shape[0])[:, None] < lengths[None, :]
            return run_cells(torch, cells, x, h0, c0, layer, keep.to(x.device), zero_output=True)
        return run_cells(torch, cells, x, h0, c0, layer, mask, zero_output=layer.zero_output_for_mask)

    @staticmethod
    def _forward_tensors(torch, cell, x, h0, c0):
        with torch.inference_mode():
            h_seq, h_T, c_T = run_direction(torch, cell, x, h0, c0, range(x.shape[0]))
        return h_seq, h_T, c_T

    @staticmethod
    def _gradient_tensors(torch, cell, x, h0, c0, cot) -> dict[str, object]:
        inputs = {name: t.detach().requires_grad_() for name, t in (("x", x), ("h0", h0), ("c0", c0))}
        weights = dict(cell.named_parameters())
        with torch.enable_grad():
            outputs = run_direction(torch, cell, *inputs.values(), range(x.shape[0]))
            grads = torch.autograd.grad(outputs, (*inputs.values(), *weights.values()),
                                        grad_outputs=(cot["dh_seq"], cot["dh_T"], cot["dc_T"]))
        return dict(zip((*inputs, *weights), grads))

    def _canonical_gradients(self, params, g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return cell_gradients(g, params, cell_names)


# ---------------------------------------------------------------------------
# torch/peephole
# ---------------------------------------------------------------------------


@dataclass
class _PeepholeWeights:
    """torch/peephole's parameters on one device, in its native layout (rows i, f, o, g)."""

    W: object  # (4H, I)
    U: object  # (4H, H)
    b: object  # (4H,), forget bias folded
    p: object | None  # (3H,), gates i, f, o


def _workspace_size(T: int, B: int, H: int) -> int:
    """Elements of forward()'s workspace: gate pre-activations (4H, T*B), h for every step (T, H, B),
    two cell states and tanh(c) (H, B each)."""
    return 4 * H * T * B + T * H * B + 3 * H * B


def _peephole_forward(torch, w: _PeepholeWeights, x, h0, c0, workspace=None):
    """Equations (1)-(6) of the spec, for inference: in place in preallocated buffers.

    It runs feature-major: the state is held transposed, (H, B), and the pre-activations as
    (4H, B) per step, so that each step's product is U (4H, H) @ h^T (H, B). On CPU, MKL runs
    that shape about 20% faster than h @ U^T (B, 4H) for a small batch, and the gate blocks
    i, f, o, g become row ranges. One matrix product projects every step's input; each step adds
    one product with the recurrent weights (in place) and does the elementwise work.
    ``workspace``, if given, is a flat tensor of :func:`_workspace_size` elements, reused
    between calls (a fresh allocation of that size costs page faults).
    """
    T, B, I = x.shape
    H = h0.shape[1]
    if workspace is None:
        workspace = x.new_empty(_workspace_size(T, B, H))
    sizes = (4 * H * T * B, T * H * B, 3 * H * B)
    z_flat, h_flat, state_flat = workspace[: sum(sizes)].split(sizes)
    # W x_t + b for every step at once: column block t of (4H, T*B).
    z_all = torch.addmm(w.b[:, None], w.W, x.reshape(T * B, I).t(), out=z_flat.view(4 * H, T * B)).view(4 * H, T, B)
    hT_seq = h_flat.view(T, H, B)
    cell_a, cell_b, tanh_c = state_flat.view(3, H, B).unbind(0)
    cells = (cell_a, cell_b)
    if w.p is not None:
        p_if, p_o = w.p[: 2 * H].view(2, H, 1), w.p[2 * H :, None]
    h, c = h0.t(), c0.t()
    for t in range(T):
        z = z_all[:, t]  # (4H, B): rows i, f, o, g
        z.addmm_(w.U, h)  # z_t = W x_t + b + U h_{t-1}
        i, f, o, g = z[:H], z[H : 2 * H], z[2 * H : 3 * H], z[3 * H :]
        if w.p is None:
            z[: 3 * H].sigmoid_()  # (1), (2), (5)
        else:
            z_if = z[: 2 * H]
            z_if.view(2, H, B).addcmul_(c[None], p_if)  # i and f peek at c_{t-1}
            z_if.sigmoid_()  # (1), (2)
        g.tanh_()  # (3)
        c_new = cells[t % 2]
        torch.mul(f, c, out=c_new).addcmul_(i, g)  # (4)
        if w.p is not None:
            o.addcmul_(c_new, p_o).sigmoid_()  # (5): o peeks at the new c_t
        torch.tanh(c_new, out=tanh_c)
        h = torch.mul(o, tanh_c, out=hT_seq[t])  # (6)
        c = c_new
    h_seq = hT_seq.transpose(1, 2).contiguous()  # (T, B, H), fresh: the workspace is reused
    return h_seq, h_seq[-1], c.t().contiguous()


def _peephole_forward_autograd(torch, w: _PeepholeWeights, x, h0, c0):
    """The same equations out of place, for autograd: the graph its gradients come from.

    Batch-major (h is (B, H)): with autograd the feature-major form of :func:`_peephole_forward`
    measured no faster. The steps are taken with unbind, whose backward is one stack, rather than
    by indexing, whose backward would scatter into a zero (T, B, 4H) tensor at every step.
    """
    T, B, I = x.shape
    H = h0.shape[1]
    z_all = torch.addmm(w.b, x.reshape(T * B, I), w.W.t()).view(T, B, 4 * H)
    U_t = w.U.t()
    if w.p is not None:
        p_if, p_o = w.p[: 2 * H].view(2, H), w.p[2 * H :]
    h, c = h0, c0
    hs = []
    for z_x in z_all.unbind(0):
        z = torch.addmm(z_x, h, U_t)
        if w.p is None:
            z_ifo, z_g = z.split([3 * H, H], 1)
            i, f, o = torch.sigmoid(z_ifo).chunk(3, 1)
            g = torch.tanh(z_g)
            c = torch.addcmul(f * c, i, g)
        else:
            z_if, z_o, z_g = z.split([2 * H, H, H], 1)
            i, f = torch.sigmoid(torch.addcmul(z_if.view(B, 2, H), c[:, None], p_if)).unbind(1)
            g = torch.tanh(z_g)
            c = torch.addcmul(f * c, i, g)
            o = torch.sigmoid(torch.addcmul(z_o, c, p_o))
        h = o * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs), h, c


@dataclass
class TorchPeepholeLSTM(_TorchImplementation):
    id: str = "torch/peephole"
    description: str = "the spec's equations in torch ops (one input product, one addmm a step), autograd gradients"

    def __post_init__(self):
        self._weights = NativeCache()
        self._workspaces: dict[tuple, object] = {}

    def _workspace(self, torch, shape: tuple[int, int, int], dtype, device):
        """A reused buffer for forward()'s intermediates, one per (T, B, H, torch dtype, device), kept up
        to a total of 256 MiB (beyond that the kept ones are dropped). Not for concurrent calls."""
        key = (*shape, dtype, str(device))
        if key not in self._workspaces:
            size = _workspace_size(*shape) * dtype.itemsize
            if sum(w.numel() * w.element_size() for w in self._workspaces.values()) + size > 256 << 20:
                self._workspaces.clear()
            self._workspaces[key] = torch.empty(_workspace_size(*shape), dtype=dtype, device=device)
        return self._workspaces[key]

    # -- layouts -------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        H, I = params.hidden_size, params.input_size
        native = {
            "weight_ih": params.W[_TO_PEEPHOLE_ORDER].reshape(4 * H, I),
            "weight_hh": params.U[_TO_PEEPHOLE_ORDER].reshape(4 * H, H),
            "bias": fold_forget_bias(params.b, forget_bias)[_TO_PEEPHOLE_ORDER].reshape(4 * H),
        }
        if params.p is not None:
            native["peephole"] = params.p.reshape(3 * H).copy()
        return native

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        w_ih, w_hh, bias = (np.asarray(native[k]) for k in ("weight_ih", "weight_hh", "bias"))
        H4, I = w_ih.shape
        H = H4 // 4
        p = native.get("peephole")
        return LSTMParams(
            w_ih.reshape(4, H, I)[_FROM_PEEPHOLE_ORDER],
            w_hh.reshape(4, H, H)[_FROM_PEEPHOLE_ORDER],
            bias.reshape(4, H)[_FROM_PEEPHOLE_ORDER],
            None if p is None else np.asarray(p).reshape(3, H).copy(),
        )

    # -- running -------------------------------------------------------------

    def weights(self, params: LSTMParams, forget_bias: float, dtype: str, device: str) -> _PeepholeWeights:
        """The native parameters as tensors on ``device`` (cached)."""

        def build():
            torch = _torch()
            native = self.to_native(params, forget_bias)
            t = {k: torch.from_numpy(v).to(device=device, dtype=getattr(torch, dtype)) for k, v in native.items()}
            return _PeepholeWeights(t["weight_ih"], t["weight_hh"], t["bias"], t.get("peephole"))

        return self._weights.get(params, (float(forget_bias), dtype, device), build)

    _native = weights

    def _forward_tensors(self, torch, w: _PeepholeWeights, x, h0, c0):
        workspace = self._workspace(torch, (x.shape[0], x.shape[1], h0.shape[1]), x.dtype, x.device)
        with torch.inference_mode():
            return _peephole_forward(torch, w, x, h0, c0, workspace)

    @staticmethod
    def _gradient_tensors(torch, cached: _PeepholeWeights, x, h0, c0, cot) -> dict[str, object]:
        """Gradients by autograd through :func:`_peephole_forward_autograd`, keyed x, h0, c0, W, U, b, p
        (W, U, b in the native row order)."""
        inputs = {name: t.detach().requires_grad_() for name, t in (("x", x), ("h0", h0), ("c0", c0))}
        leaves = {
            name: None if value is None else value.detach().requires_grad_()
            for name, value in (("W", cached.W), ("U", cached.U), ("b", cached.b), ("p", cached.p))
        }
        w = _PeepholeWeights(**leaves)
        wrt = {**inputs, **{k: v for k, v in leaves.items() if v is not None}}
        with torch.enable_grad():
            h_seq, h_T, c_T = _peephole_forward_autograd(torch, w, inputs["x"], inputs["h0"], inputs["c0"])
            grads = torch.autograd.grad((h_seq, h_T, c_T), tuple(wrt.values()), grad_outputs=(cot["dh_seq"], cot["dh_T"], cot["dc_T"]))
        return dict(zip(wrt, grads))

    def _canonical_gradients(self, params, g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        H, I = params.hidden_size, params.input_size
        out = {
            "W": g["W"].reshape(4, H, I)[_FROM_PEEPHOLE_ORDER],
            "U": g["U"].reshape(4, H, H)[_FROM_PEEPHOLE_ORDER],
            "b": g["b"].reshape(4, H)[_FROM_PEEPHOLE_ORDER],
        }
        if "p" in g:
            out["p"] = g["p"].reshape(3, H)
        return out


IMPLEMENTATIONS = (
    TorchLSTM(),
    TorchLSTM(id="torch/nn.LSTM(batch_first)", batch_first=True,
              description="torch.nn.LSTM(batch_first=True): x (B, T, I) in, y (B, T, D*P) out; otherwise torch/nn.LSTM"),
    TorchLSTM(id="torch/nn.LSTM(enforce_sorted)", enforce_sorted=True,
              description="torch.nn.LSTM with lengths packed sorted: the batch sorted by length, enforce_sorted=True, unsorted after"),
    TorchLSTMCell(),
    TorchPeepholeLSTM(),
)
