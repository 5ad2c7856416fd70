"""PyTorch: ``torch.nn.LSTM`` itself (cuDNN on a GPU, oneDNN's fused kernel on CPU in float32), and an
LSTM built from torch ops that implements the spec's equations, peepholes included.

torch is imported only inside functions: listing these implementations works without it, and their
rows are then unavailable with the install hint.

Native layouts
    torch/nn.LSTM   ``weight_ih_l0`` (4H, I), ``weight_hh_l0`` (4H, H), ``bias_ih_l0`` and ``bias_hh_l0``
                    (4H each, summed); gates i, f, g, o. b is split exactly in half between the two (so that
                    code dropping one of them fails instead of passing by luck); the forget bias is folded
                    into ``bias_ih_l0``'s f block.
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
from backends.timing import HALF_DTYPES, TimedPass, Timing
from spec.params import GATES, LSTMParams

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
# What both rows share
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


# ---------------------------------------------------------------------------
# torch/nn.LSTM
# ---------------------------------------------------------------------------


@dataclass
class TorchLSTM(_TorchImplementation):
    id: str = "torch/nn.LSTM"
    description: str = "torch.nn.LSTM (oneDNN on CPU in float32, cuDNN on GPU); two biases, summed"
    variants: tuple[str, ...] = ("standard",)
    unsupported_reasons: dict = field(default_factory=lambda: {"peephole": "torch.nn.LSTM has no peepholes"})

    def __post_init__(self):
        self._modules = NativeCache()

    # -- layouts -------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        if params.peephole:
            raise NotSupported(self.unsupported_reasons["peephole"])
        H, I = params.hidden_size, params.input_size
        return {
            "weight_ih_l0": params.W.reshape(4 * H, I).copy(),
            "weight_hh_l0": params.U.reshape(4 * H, H).copy(),
            "bias_ih_l0": fold_forget_bias(params.b * 0.5, forget_bias).reshape(4 * H),
            "bias_hh_l0": (params.b * 0.5).reshape(4 * H),
        }

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        w_ih, w_hh = np.asarray(native["weight_ih_l0"]), np.asarray(native["weight_hh_l0"])
        H4, I = w_ih.shape
        H = H4 // 4
        bias = np.zeros(4 * H, w_ih.dtype)
        for name in ("bias_ih_l0", "bias_hh_l0"):
            if native.get(name) is not None:
                bias = bias + np.asarray(native[name])
        return LSTMParams(w_ih.reshape(4, H, I).copy(), w_hh.reshape(4, H, H).copy(), bias.reshape(4, H))

    # -- running -------------------------------------------------------------

    def module(self, params: LSTMParams, forget_bias: float, dtype: str, device: str):
        """The torch.nn.LSTM holding ``params`` (cached): its parameters require gradients."""

        def build():
            torch = _torch()
            module = torch.nn.LSTM(params.input_size, params.hidden_size, dtype=getattr(torch, dtype), device=device)
            with torch.no_grad():
                for name, value in self.to_native(params, forget_bias).items():
                    getattr(module, name).copy_(torch.from_numpy(value))
            if device == "cuda":
                module.flatten_parameters()
            return module

        return self._modules.get(params, (float(forget_bias), dtype, device), build)

    _native = module

    @staticmethod
    def _forward_tensors(torch, module, x, h0, c0):
        with torch.inference_mode():
            h_seq, (h_T, c_T) = module(x, (h0[None], c0[None]))
        return h_seq, h_T[0], c_T[0]

    @staticmethod
    def _gradient_tensors(torch, module, x, h0, c0, cot) -> dict[str, object]:
        """Gradients by autograd, keyed x, h0, c0 and the module's parameter names."""
        inputs = {name: t.detach().requires_grad_() for name, t in (("x", x), ("h0", h0), ("c0", c0))}
        weights = {name: getattr(module, name) for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
        with torch.enable_grad():
            h_seq, (h_T, c_T) = module(inputs["x"], (inputs["h0"][None], inputs["c0"][None]))
            grads = torch.autograd.grad(
                (h_seq, h_T, c_T),
                (*inputs.values(), *weights.values()),
                grad_outputs=(cot["dh_seq"], cot["dh_T"][None], cot["dc_T"][None]),
            )
        return dict(zip((*inputs, *weights), grads))

    def _canonical_gradients(self, params, g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _check_bias_gradients(g["bias_ih_l0"], g["bias_hh_l0"])
        H, I = params.hidden_size, params.input_size
        return {
            "W": g["weight_ih_l0"].reshape(4, H, I),
            "U": g["weight_hh_l0"].reshape(4, H, H),
            "b": g["bias_ih_l0"].reshape(4, H),
        }


def _check_bias_gradients(d_ih: np.ndarray, d_hh: np.ndarray) -> None:
    """Both biases enter every pre-activation the same way, so their gradients must agree: the
    canonical b's gradient is either one. They may differ only by rounding (separate reductions)."""
    if np.array_equal(d_ih, d_hh):
        return
    eps = float(np.finfo(d_ih.dtype).eps)
    scale = max(float(np.max(np.abs(d_ih))), 1.0)
    worst = float(np.max(np.abs(d_ih - d_hh)))
    if worst > 64 * eps * scale:
        raise AssertionError(f"torch.nn.LSTM: the gradients of bias_ih_l0 and bias_hh_l0 differ by up to {worst:.3g}; they must be equal")


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


IMPLEMENTATIONS = (TorchLSTM(), TorchPeepholeLSTM())
