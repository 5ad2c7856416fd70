"""JAX: the spec's equations as a ``jax.lax.scan`` (both variants), flax's two LSTM cells run
through ``flax.linen.RNN`` (standard variant only: flax's cells have no peepholes), and
``jax.experimental.rnn``'s LSTM (``lstm_ref`` and the cuDNN ``lstm``).

- ``jax/lax.scan``: equations (1)-(6) of :mod:`spec.lstm` under ``jax.jit``: one matrix product
  for the input projection of all steps, then a scan over the recurrence; the canonical
  parameters are used as they are (no native layout). Gradients by ``jax.vjp``.
- ``flax/LSTMCell`` and ``flax/OptimizedLSTMCell``: ``flax.linen.RNN(cell, time_major=True,
  return_carry=True)``. Native layout (one tree for both cells)::

      {"ii": {"kernel": (I, H)}, "if": ..., "ig": ..., "io": ...,                  W_k transposed
       "hi": {"kernel": (H, H), "bias": (H,)}, "hf": ..., "hg": ..., "ho": ...}   U_k transposed, b_k

  the carry is (c, h); a forget bias is folded into ``hf``'s bias. The adapter builds that tree
  inside its jitted function (the same :func:`flax_tree` as ``to_native``) from transposed views
  of W and U that device_put transposes as it copies (:data:`PACKINGS`). Gradients by ``jax.vjp``
  with respect to the inputs and that tree, mapped back to the canonical layout.
- The layer (spec/layer.py) on the flax rows: a stack as a flax user writes it (:func:`_flax_stack`),
  one ``nn.RNN`` per layer (``reverse=True, keep_order=True`` for a reverse direction) or one
  ``nn.Bidirectional``, ``seq_lengths`` for lengths; tree ``{"layers_<l>": {"cell": ...}}`` or
  ``{"layers_<l>": {"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}}``
  (:func:`flax_layer_tree`). Known failures, narrowed: padded outputs are not zeroed (lengths; flax
  documents it) and rows of length 0 return the carry after all T steps (empty_sequences).
- ``jax/rnn.lstm_ref`` and ``jax/rnn.lstm``: ``jax.experimental.rnn``'s own LSTM, ``num_layers``,
  ``bidirectional``, ``seq_lengths`` (int32), x batch-major; native layout rnn.lstm's flat weight
  vector (:func:`rnn_flat_weights`; gates i, f, g, o, two half biases). ``lstm`` is cuDNN only: on a
  CPU it is unavailable with the error it raises there; its CUDA path has not been run by this
  project. Known failure, narrowed: rows of length 0 return the state after all T steps.
  Both layer adapters take jax.vjp through the layout, with respect to the canonical W, U, b.

Numerics: every matrix product is traced under ``jax.default_matmul_precision("highest")``
(and the lax.scan one also passes ``precision=HIGHEST``), so no TF32 or bf16 pass is used on a
GPU. float64 needs jax's x64 mode: it is switched on (globally, ``jax_enable_x64``) at the first
float64 request, and every output's dtype is checked rather than trusted, since jax without x64
silently computes float64 requests in float32.

jax and flax are imported inside the functions: importing this module needs neither.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends.base import (
    CellThroughLayer,
    Config,
    Implementation,
    KnownFailure,
    NotSupported,
    fold_forget_bias,
    framework_problem,
)
from backends.timing import HALF_DTYPES, TimedPass, Timing
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams

MATMUL_PRECISION = "highest"
JAX_MISSING = "jax is not installed (pip install 'lstm-conformance[jax]')"
FLAX_MISSING = "flax is not installed (pip install 'lstm-conformance[jax]')"
NO_PEEPHOLES = "flax's LSTM cells have no peepholes"

#: The flax tree's module names for gate k: the input kernel and the recurrent kernel (with the bias).
INPUT_NAMES = tuple("i" + k for k in GATES)  # ii, if, ig, io
HIDDEN_NAMES = tuple("h" + k for k in GATES)  # hi, hf, hg, ho


# ---------------------------------------------------------------------------
# jax: availability, x64, devices
# ---------------------------------------------------------------------------


def _jax_reason() -> str | None:
    return framework_problem("jax", JAX_MISSING)


def _flax_reason() -> str | None:
    return framework_problem("flax.linen", FLAX_MISSING)


def _platform(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


@cache
def _device_reason(device: str) -> str | None:
    import jax

    try:
        jax.devices(_platform(device))
    except RuntimeError as error:
        if device == "cuda":
            return f"jax sees no GPU ({error}); install jax[cuda12] on a machine with a CUDA GPU"
        return f"jax has no CPU backend ({error})"
    return None


def _jax_device(device: str):
    import jax

    return jax.devices(_platform(device))[0]


def _x64_enabled() -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def _require_x64(dtype: str) -> None:
    """float64 needs jax's x64 mode: switch it on at the first float64 request (it is global)."""
    if dtype == "float64" and not _x64_enabled():
        import jax

        jax.config.update("jax_enable_x64", True)


def _to_numpy(array) -> np.ndarray:
    """A jax result as NumPy (zero-copy on the CPU); its dtype is checked by the contract, not trusted."""
    return np.asarray(array)


def _environment(device: str, *, with_flax: bool) -> dict[str, object]:
    import jax
    import jaxlib

    env: dict[str, object] = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    if with_flax:
        try:
            import flax

            env["flax"] = flax.__version__
        except ImportError:
            env["flax"] = None
    reason = _device_reason(device)
    if reason is None:
        d = _jax_device(device)
        env["device"] = f"{d.platform}: {d.device_kind}"
        if device == "cpu":
            env["cpu_count"] = os.cpu_count()
    else:
        env["device"] = f"unavailable: {reason}"
    env["default_backend"] = jax.default_backend()
    env["x64"] = "on" if _x64_enabled() else "off (switched on at the first float64 run)"
    env["matmul_precision"] = MATMUL_PRECISION
    if os.environ.get("XLA_FLAGS"):
        env["XLA_FLAGS"] = os.environ["XLA_FLAGS"]
    return env


def _timed_pass(timing: Timing, fn, args, pick, *, keep: int = 0) -> TimedPass:
    """A TimedPass of ``fn(*args)`` on device arrays rounded to ``timing.dtype`` (once, on the device),
    except the first ``keep`` arguments; each run blocks until the whole result is ready; ``pick``
    maps a result to the layout-free arrays."""
    import jax

    if timing.dtype != timing.source_dtype:
        args = (*args[:keep], *jax.tree.map(lambda a: a.astype(timing.dtype), args[keep:]))
    last = {}

    def run():
        last["out"] = jax.block_until_ready(fn(*args))

    def result():
        return {k: np.asarray(v).astype(np.float64) for k, v in pick(last["out"]).items()}

    return TimedPass(run, result, resident=True)


@dataclass
class _JaxImplementation(Implementation):
    framework: str = "jax"
    devices: tuple[str, ...] = ("cpu", "cuda")
    timing_dtypes: tuple[str, ...] = HALF_DTYPES

    def _availability(self, device: str) -> str | None:
        return _jax_reason() or _device_reason(device)

    @staticmethod
    def _prepare(config: Config):
        """Switch x64 on for float64; the jax device to run on."""
        _require_x64(config.dtype)
        return _jax_device(config.device)

    def _environment(self, device: str) -> dict[str, object]:
        return _environment(device, with_flax=False)


# ---------------------------------------------------------------------------
# jax/lax.scan: the spec's equations
# ---------------------------------------------------------------------------


def _scan_lstm(x, h0, c0, W, U, b, p, forget_bias):
    """Equations (1)-(6) over x (T, B, I), canonical parameters; returns (h_seq, h_T, c_T)."""
    import jax
    from jax import lax

    highest = lax.Precision.HIGHEST
    T, B, I = x.shape
    H = U.shape[1]
    contract_last = (((1,), (1,)), ((), ()))
    # z = W x_t + b for all steps at once: (T*B, I) x (4H, I)^T, gates i, f, g, o along the last axis.
    bias = b.at[GATES.index("f")].add(forget_bias).reshape(4 * H)
    xw = lax.dot_general(x.reshape(T * B, I), W.reshape(4 * H, I), contract_last, precision=highest) + bias
    xw = xw.reshape(T, B, 4 * H)
    U_all = U.reshape(4 * H, H)
    p_i, p_f, p_o = (None, None, None) if p is None else (p[0], p[1], p[2])

    def step(carry, z):
        h, c = carry
        z = z + lax.dot_general(h, U_all, contract_last, precision=highest)  # + U h_{t-1}
        z_i, z_f, z_g, z_o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        if p is not None:
            z_i = z_i + p_i * c
            z_f = z_f + p_f * c
        i = jax.nn.sigmoid(z_i)  # (1)
        f = jax.nn.sigmoid(z_f)  # (2)
        g = jax.numpy.tanh(z_g)  # (3)
        c_new = f * c + i * g  # (4)
        if p is not None:
            z_o = z_o + p_o * c_new  # the output gate peeks at the NEW cell state
        o = jax.nn.sigmoid(z_o)  # (5)
        h_new = o * jax.numpy.tanh(c_new)  # (6)
        return (h_new, c_new), h_new

    (h_T, c_T), h_seq = lax.scan(step, (h0, c0), xw)
    return h_seq, h_T, c_T


@cache
def _scan_functions():
    """The jitted forward and vjp (jax.jit keeps one compilation per shape, dtype, device and variant)."""
    import jax

    def forward(x, h0, c0, W, U, b, p, forget_bias):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            return _scan_lstm(x, h0, c0, W, U, b, p, forget_bias)

    def gradients(x, h0, c0, W, U, b, p, forget_bias, cotangents):
        _, pullback = jax.vjp(lambda *args: forward(*args, forget_bias), x, h0, c0, W, U, b, p)
        return pullback(cotangents)

    return jax.jit(forward), jax.jit(gradients)


@dataclass
class JaxScanLSTM(_JaxImplementation):
    id: str = "jax/lax.scan"
    description: str = "the spec's equations as jax.lax.scan under jax.jit (one input projection, scan over the recurrence)"

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        """The canonical layout is this implementation's own (the forget bias is an argument)."""
        native: dict[str, object] = {k: v.copy() for k, v in params.tensors().items()}
        native["forget_bias"] = float(forget_bias)
        return native

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        p = native.get("p")
        b = fold_forget_bias(np.asarray(native["b"]), float(native.get("forget_bias", 0.0)))
        return LSTMParams(np.array(native["W"]), np.array(native["U"]), b, None if p is None else np.array(p))

    def _arguments(self, params, x, h0, c0, forget_bias, config, device):
        import jax

        dtype = np.dtype(config.dtype)
        args = (x, h0, c0, params.W, params.U, params.b, params.p, np.asarray(forget_bias, dtype))
        return jax.device_put(args, device)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        device = self._prepare(config)
        forward, _ = _scan_functions()
        return tuple(map(_to_numpy, forward(*self._arguments(params, x, h0, c0, forget_bias, config, device))))

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        import jax

        device = self._prepare(config)
        _, gradients = _scan_functions()
        cts = jax.device_put((cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"]), device)
        grads = gradients(*self._arguments(params, x, h0, c0, forget_bias, config, device), cts)
        names = ("x", "h0", "c0", "W", "U", "b", "p")
        return {n: _to_numpy(g) for n, g in zip(names, grads) if g is not None}

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        import jax

        source = timing.source_config
        device = self._prepare(source)
        forward, gradients = _scan_functions()
        args = self._arguments(params, x, h0, c0, forget_bias, source, device)
        if not timing.gradients:
            return _timed_pass(timing, forward, args, lambda out: {"h_seq": out[0]})
        cts = jax.device_put((cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"]), device)
        return _timed_pass(timing, gradients, (*args, cts), lambda out: dict(zip(("x", "h0", "c0"), out[:3])))


# ---------------------------------------------------------------------------
# flax.linen LSTMCell / OptimizedLSTMCell through nn.RNN
# ---------------------------------------------------------------------------


#: How W and U travel to the device for the flax cells, as NumPy views of the canonical arrays that
#: device_put transposes while it copies (in one tiled pass: cheaper than a NumPy transpose, or than
#: XLA's transposes after a plain copy):
#:   "gates"         W_in (4, I, H), U_in (4, H, H): each gate's matrix transposed; kernel k = W_in[k]
#:   "concatenated"  W_in (I, 4H), U_in (H, 4H): the gates side by side; kernel k = W_in[:, kH:(k+1)H].
#:                   OptimizedLSTMCell concatenates its kernels into exactly this, so XLA drops the
#:                   concatenation (the canonical layout is already gate-stacked).
PACKINGS = ("gates", "concatenated")


def packed(W: np.ndarray, U: np.ndarray, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """W_in, U_in for a packing: views of the canonical W (4,H,I) and U (4,H,H), no copy."""
    if packing == "gates":
        return W.transpose(0, 2, 1), U.transpose(0, 2, 1)
    four_h = W.shape[0] * W.shape[1]
    return W.reshape(four_h, W.shape[2]).T, U.reshape(four_h, U.shape[2]).T


def unpacked(W_in, U_in, packing: str):
    """The inverse of :func:`packed` (NumPy or jax arrays): canonical W (4,H,I), U (4,H,H)."""
    if packing == "gates":
        return W_in.transpose(0, 2, 1), U_in.transpose(0, 2, 1)
    H = U_in.shape[0]
    return W_in.T.reshape(4, H, W_in.shape[0]), U_in.T.reshape(4, H, H)


def flax_tree(W_in, U_in, b, packing: str = "gates") -> dict[str, dict[str, object]]:
    """The flax cells' parameter tree from packed W_in, U_in (:data:`PACKINGS`) and b (4,H) with any
    forget bias folded. Works on NumPy and on traced jax arrays alike: the one definition of the
    layout serves :meth:`FlaxLSTM.to_native` and the jitted functions."""
    H = b.shape[-1]
    if packing == "gates":
        kernel = lambda K, k: K[k]  # noqa: E731
    else:
        kernel = lambda K, k: K[:, k * H : (k + 1) * H]  # noqa: E731
    tree: dict[str, dict[str, object]] = {}
    for k, (input_name, hidden_name) in enumerate(zip(INPUT_NAMES, HIDDEN_NAMES)):
        tree[input_name] = {"kernel": kernel(W_in, k)}
        tree[hidden_name] = {"kernel": kernel(U_in, k), "bias": b[k]}
    return tree


def packed_from_flax_tree(tree: Mapping[str, Mapping[str, object]], packing: str, xp):
    """W_in, U_in, b from a flax cell tree or from its gradient (``xp`` is numpy or jax.numpy): the
    inverse of :func:`flax_tree`."""
    join = xp.stack if packing == "gates" else lambda arrays: xp.concatenate(arrays, axis=1)
    W_in = join([xp.asarray(tree[n]["kernel"]) for n in INPUT_NAMES])
    U_in = join([xp.asarray(tree[n]["kernel"]) for n in HIDDEN_NAMES])
    b = xp.stack([xp.asarray(tree[n]["bias"]) for n in HIDDEN_NAMES])
    return W_in, U_in, b


@cache
def _flax_functions(cell_name: str, hidden_size: int, dtype: str, packing: str):
    """Jitted functions of nn.RNN(cell) for one cell class, hidden size, dtype and packing (jax.jit
    keeps one compilation per shape and device): native_forward(tree, x, h0, c0) on a native tree,
    as a flax user runs it; forward and gradients take (W_in, U_in, b, x, h0, c0) and build that
    tree on the device."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    # In a half type the cells compute in it and keep their parameters in float32 (flax's mixed
    # precision): with param_dtype a half type, apply() fails even when given every parameter, since
    # flax traces the orthogonal initializer to check shapes and qr has no half kernel (flax 0.12.10).
    param_dtype = jnp.float32 if dtype in HALF_DTYPES else jnp.dtype(dtype)
    cell = getattr(nn, cell_name)(features=hidden_size, dtype=jnp.dtype(dtype), param_dtype=param_dtype)
    rnn = nn.RNN(cell, time_major=True, return_carry=True)

    def native_forward(tree, x, h0, c0):
        """flax's LSTM on the native tree: (h_seq, h_T, c_T); the carry is (c, h)."""
        with jax.default_matmul_precision(MATMUL_PRECISION):
            (c_T, h_T), h_seq = rnn.apply({"params": {"cell": tree}}, x, initial_carry=(c0, h0))
        return h_seq, h_T, c_T

    def forward(W_in, U_in, b, x, h0, c0):
        return native_forward(flax_tree(W_in, U_in, b, packing), x, h0, c0)

    def gradients(W_in, U_in, b, x, h0, c0, cotangents):
        # The vjp is taken with respect to the native tree (and the inputs), then mapped back.
        _, pullback = jax.vjp(native_forward, flax_tree(W_in, U_in, b, packing), x, h0, c0)
        d_tree, dx, dh0, dc0 = pullback(cotangents)
        dW_in, dU_in, db = packed_from_flax_tree(d_tree, packing, jnp)
        dW, dU = unpacked(dW_in, dU_in, packing)
        return {"x": dx, "h0": dh0, "c0": dc0, "W": dW, "U": dU, "b": db}

    return jax.jit(native_forward), jax.jit(forward), jax.jit(gradients)


# ---------------------------------------------------------------------------
# The layer (spec/layer.py), shared by the flax and jax.experimental.rnn rows
# ---------------------------------------------------------------------------


def folded_cells(params: LayerParams, forget_bias: float) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Every cell's (W, U, b), canonical, with the forget bias folded into b_f: neither flax nor
    jax.experimental.rnn has an attribute for it. The jitted functions take these and build the native
    layout on the device, so that jax.vjp differentiates through the layout too: the gradients come back
    with respect to W, U and b, and a layout that duplicates a tensor (rnn's two half biases) is
    differentiated correctly rather than inverted."""
    return tuple((cell.W, cell.U, fold_forget_bias(cell.b, forget_bias)) for cell in params.cells)


def layer_gradients(params: LayerParams, d_cells, dx, dh0, dc0) -> dict[str, np.ndarray]:
    """The gradients keyed as the contract names them: x, h0, c0, 'layer l direction d W' (U, b)."""
    grads = {"x": _to_numpy(dx), "h0": _to_numpy(dh0), "c0": _to_numpy(dc0)}
    for k, (dW, dU, db) in enumerate(d_cells):
        name = params.cell_name(k)
        grads.update({f"{name} W": _to_numpy(dW), f"{name} U": _to_numpy(dU), f"{name} b": _to_numpy(db)})
    return grads


def _lengths32(lengths: np.ndarray | None) -> np.ndarray | None:
    """Sequence lengths as int32: jax.experimental.rnn refuses anything else, and int32 is what flax's
    seq_lengths is without x64."""
    return None if lengths is None else np.asarray(lengths, np.int32)


def _cells_or_refuse(params: LayerParams, layer: LayerConfig, reasons: Mapping[str, str]):
    """What these layouts cannot hold is refused with the row's own reason (peepholes, a projection)."""
    if params.peephole:
        raise NotSupported(reasons["peephole"])
    if layer.proj_size is not None or params.proj_size is not None:
        raise NotSupported(reasons["projection"])


def _timed_layer_pass(timing: Timing, forward, gradients, args, cotangents, device) -> TimedPass:
    """A device-resident layer pass (the layer's benchmark): the arguments went to the device once; each run is
    one jitted call, its result y (forward) or the gradients of x, h0, c0."""
    import jax

    if timing.dtype in HALF_DTYPES:
        raise NotSupported("the JAX rows time their layer in float32 and float64 (the half types: the cell only)")
    if not timing.gradients:
        return _timed_pass(timing, forward, args, lambda out: {"y": out[0]})
    cts = jax.device_put((cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"]), device)
    return _timed_pass(timing, gradients, (*args, cts), lambda out: dict(zip(("x", "h0", "c0"), out[1:4])))


def _numpy_tree(tree):
    """A nested dict of arrays as C-contiguous NumPy copies (what to_native_layer hands out)."""
    if isinstance(tree, Mapping):
        return {name: _numpy_tree(value) for name, value in tree.items()}
    return np.array(tree, order="C")


# ---------------------------------------------------------------------------
# flax: nn.RNN and nn.Bidirectional, stacked as a flax user writes it
# ---------------------------------------------------------------------------

FLAX_LAYER_REASONS = {
    "peephole": NO_PEEPHOLES,
    "projection": "flax's LSTM cells have no projection (LSTMP)",
    "proj_clip": "flax's LSTM cells have no projection, so no proj_clip",
    "cell_clip": "flax's LSTM cells have no cell clip",
    "gate_clip": "flax's LSTM cells have no gate clip",
    "coupled": "flax's LSTM cells have no coupled input and forget gates",
    "mask": "flax's nn.RNN takes seq_lengths (one length per row), not a mask of steps",
    "mask_previous_output": "flax's nn.RNN takes seq_lengths (one length per row), not a mask of steps",
}
FLAX_EMPTY_ROWS = (
    "flax 0.12.8 nn.RNN(seq_lengths=...) returns, for a row of length 0, the carry after all T steps (it picks "
    "carry[seq_lengths - 1], index -1; reversed: the whole row reversed), not the initial state; and, as in every "
    "case with lengths, padded steps' outputs are not zeroed. Reproducer: findings/flax_rnn_empty_rows_carry.py; "
    "upstream: none found (google/flax issues searched)"
)
FLAX_PADDED_OUTPUTS = (
    "flax 0.12.8 nn.RNN(seq_lengths=...) does not zero padded steps' outputs (documented: 'The output elements "
    "corresponding to padding elements are NOT zeroed out'): the cell runs on through the padding and those outputs "
    "stay, where the spec (PyTorch's pad_packed_sequence, ONNX, TF1) has zeros; their cotangents then reach the "
    "gradients. Reproducer: findings/flax_rnn_padded_outputs_not_zeroed.py; upstream: documented behaviour, no issue"
)


def flax_layer_tree(cells, num_layers: int, direction: str) -> dict[str, dict]:
    """The parameter tree of :func:`_flax_stack`'s module from every cell's (W, U, b) (b with any forget bias
    folded): 'layers_l' holds {'cell': ...} for one direction, {'forward_rnn': {'cell': ...}, 'backward_rnn':
    {'cell': ...}} for nn.Bidirectional; each cell tree is :func:`flax_tree`'s. NumPy or traced arrays alike."""
    D = 2 if direction == "bidirectional" else 1
    trees = [flax_tree(*packed(W, U, "gates"), b, "gates") for W, U, b in cells]
    tree = {}
    for l in range(num_layers):
        if D == 1:
            tree[f"layers_{l}"] = {"cell": trees[l]}
        else:
            tree[f"layers_{l}"] = {"forward_rnn": {"cell": trees[2 * l]}, "backward_rnn": {"cell": trees[2 * l + 1]}}
    return tree


def flax_layer_cells(tree: Mapping[str, Mapping], num_layers: int, direction: str, xp) -> list:
    """The inverse of :func:`flax_layer_tree`: every cell's (W, U, b), cell k = l * D + d."""
    cells = []
    for l in range(num_layers):
        layer = tree[f"layers_{l}"]
        cell_trees = [layer["cell"]] if direction != "bidirectional" else [layer["forward_rnn"]["cell"], layer["backward_rnn"]["cell"]]
        for cell_tree in cell_trees:
            W_in, U_in, b = packed_from_flax_tree(cell_tree, "gates", xp)
            cells.append((*unpacked(W_in, U_in, "gates"), b))
    return cells


@cache
def _flax_stack(cell_name: str, hidden_size: int, num_layers: int, direction: str, dtype: str):
    """The flax module a user writes for this layer: one nn.RNN per layer (reverse=True, keep_order=True for a
    reverse direction, so that its outputs come back in the original time order; keep_order=False, flax's
    default, would return them in processing order) or one nn.Bidirectional per layer, each layer reading the
    one below. The layers are made in setup(), so the tree is named by layer (made inline in a compact
    __call__, the cells would be adopted by the stack itself as LSTMCell_0, LSTMCell_1, ...)."""
    import flax.linen as nn
    import jax.numpy as jnp

    def rnn(**options):
        cell = getattr(nn, cell_name)(features=hidden_size, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        return nn.RNN(cell, time_major=True, return_carry=True, **options)

    def make_layer():
        if direction == "bidirectional":
            return nn.Bidirectional(rnn(), rnn(), time_major=True, return_carry=True)
        return rnn(reverse=direction == "reverse", keep_order=True)

    class LSTMStack(nn.Module):
        def setup(self):
            self.layers = [make_layer() for _ in range(num_layers)]

        def __call__(self, x, initial_carry, seq_lengths):
            carries = []
            for layer, carry in zip(self.layers, initial_carry):
                carry, x = layer(x, initial_carry=carry, seq_lengths=seq_lengths)
                carries.append(carry)
            return carries, x

    return LSTMStack()


def _flax_carries(h0, c0, num_layers: int, D: int) -> list:
    """The spec's initial states (L * D, B, .) as the stack's carries: (c, h) per direction, and
    ((c_fw, h_fw), (c_bw, h_bw)) for nn.Bidirectional."""
    cells = [(c0[k], h0[k]) for k in range(num_layers * D)]
    return [cells[l] if D == 1 else (cells[2 * l], cells[2 * l + 1]) for l in range(num_layers)]


def _flax_final_states(carries, D: int):
    """The stack's final carries as the spec's h_T, c_T (L * D, B, .), layer-major."""
    import jax.numpy as jnp

    cells = [cell for carry in carries for cell in ((carry,) if D == 1 else carry)]
    return jnp.stack([h for _, h in cells]), jnp.stack([c for c, _ in cells])


@cache
def _flax_layer_functions(cell_name: str, hidden_size: int, num_layers: int, direction: str, dtype: str):
    """Jitted native_forward(tree, x, h0, c0, lengths) (the module on its own tree, as a flax user runs it),
    forward(cells, x, h0, c0, lengths) and gradients(cells, x, h0, c0, lengths, cotangents): the same through
    :func:`flax_layer_tree`, gradients by jax.vjp with respect to the cells' W, U, b and the inputs."""
    import jax

    stack = _flax_stack(cell_name, hidden_size, num_layers, direction, dtype)
    D = 2 if direction == "bidirectional" else 1

    def native_forward(tree, x, h0, c0, lengths):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            carries, y = stack.apply({"params": tree}, x, _flax_carries(h0, c0, num_layers, D), lengths)
        return (y, *_flax_final_states(carries, D))

    def forward(cells, x, h0, c0, lengths):
        return native_forward(flax_layer_tree(cells, num_layers, direction), x, h0, c0, lengths)

    def gradients(cells, x, h0, c0, lengths, cotangents):
        _, pullback = jax.vjp(lambda *args: forward(*args, lengths), cells, x, h0, c0)
        return pullback(cotangents)

    return jax.jit(native_forward), jax.jit(forward), jax.jit(gradients)


@dataclass
class FlaxLSTM(_JaxImplementation):
    framework: str = "flax"
    cell: str = "LSTMCell"
    #: How W and U travel to the device (:data:`PACKINGS`): the one this cell runs fastest with.
    packing: str = "gates"
    variants: tuple[str, ...] = ("standard",)
    unsupported_reasons: dict = field(default_factory=lambda: dict(FLAX_LAYER_REASONS))
    layer_features: tuple[str, ...] | None = ("stacked", "reverse", "bidirectional", "lengths", "empty_sequences")
    known_failures: tuple[KnownFailure, ...] = tuple(
        KnownFailure(kind, reason, features=features)
        for features, reason in ((("empty_sequences",), FLAX_EMPTY_ROWS), (("lengths",), FLAX_PADDED_OUTPUTS))
        for kind in ("layer outputs", "layer gradients")
    )

    def _availability(self, device: str) -> str | None:
        return _jax_reason() or _flax_reason() or _device_reason(device)

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        if params.peephole:
            raise NotSupported(NO_PEEPHOLES)
        W_in, U_in = packed(params.W, params.U, "gates")
        tree = flax_tree(W_in, U_in, fold_forget_bias(params.b, forget_bias), "gates")
        return {name: {k: np.array(v, order="C") for k, v in leaves.items()} for name, leaves in tree.items()}

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        W_in, U_in, b = packed_from_flax_tree(native, "gates", np)
        W, U = unpacked(W_in, U_in, "gates")
        return LSTMParams(np.ascontiguousarray(W), np.ascontiguousarray(U), b)

    def native_functions(self, hidden_size: int, dtype: str):
        """(native_forward, forward, gradients), jitted; see :func:`_flax_functions`."""
        return _flax_functions(self.cell, hidden_size, dtype, self.packing)

    def _arguments(self, params, x, h0, c0, forget_bias, device):
        """The device arrays for forward and gradients: packed W and U (transposed by device_put
        as it copies), b with the forget bias folded, the inputs."""
        import jax

        if params.peephole:
            raise NotSupported(NO_PEEPHOLES)
        W_in, U_in = packed(params.W, params.U, self.packing)
        return jax.device_put((W_in, U_in, fold_forget_bias(params.b, forget_bias), x, h0, c0), device)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        device = self._prepare(config)
        _, forward, _ = self.native_functions(params.hidden_size, config.dtype)
        return tuple(map(_to_numpy, forward(*self._arguments(params, x, h0, c0, forget_bias, device))))

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        import jax

        device = self._prepare(config)
        _, _, gradients = self.native_functions(params.hidden_size, config.dtype)
        cts = jax.device_put((cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"]), device)
        grads = gradients(*self._arguments(params, x, h0, c0, forget_bias, device), cts)
        return {n: _to_numpy(g) for n, g in grads.items()}

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        import jax

        device = self._prepare(timing.source_config)
        _, forward, gradients = self.native_functions(params.hidden_size, timing.dtype)
        args = self._arguments(params, x, h0, c0, forget_bias, device)
        # W_in, U_in and b stay in float32 (param_dtype, above); the inputs are rounded.
        if not timing.gradients:
            return _timed_pass(timing, forward, args, lambda out: {"h_seq": out[0]}, keep=3)
        cts = jax.device_put((cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"]), device)
        return _timed_pass(timing, gradients, (*args, cts), lambda out: {k: out[k] for k in ("x", "h0", "c0")}, keep=3)

    def _environment(self, device: str) -> dict[str, object]:
        return _environment(device, with_flax=True)

    # -- the layer: nn.RNN / nn.Bidirectional, a loop of layers --------------------------------

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """The stack module's parameter tree (:func:`flax_layer_tree`), the forget bias folded into 'hf'."""
        _cells_or_refuse(params, layer, self.unsupported_reasons)
        return _numpy_tree(flax_layer_tree(folded_cells(params, layer.forget_bias), layer.num_layers, layer.direction))

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        cells = flax_layer_cells(native, layer.num_layers, layer.direction, np)
        return LayerParams(tuple(LSTMParams(*(np.ascontiguousarray(t) for t in cell)) for cell in cells), layer.num_directions)

    def layer_functions(self, params: LayerParams, layer: LayerConfig, dtype: str):
        """(native_forward, forward, gradients), jitted; see :func:`_flax_layer_functions`."""
        return _flax_layer_functions(self.cell, params.hidden_size, layer.num_layers, layer.direction, dtype)

    def _layer_arguments(self, params, x, h0, c0, layer, lengths, device):
        import jax

        _cells_or_refuse(params, layer, self.unsupported_reasons)
        return jax.device_put((folded_cells(params, layer.forget_bias), x, h0, c0, _lengths32(lengths)), device)

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        device = self._prepare(config)
        _, forward, _ = self.layer_functions(params, layer, config.dtype)
        return tuple(map(_to_numpy, forward(*self._layer_arguments(params, x, h0, c0, layer, lengths, device))))

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        import jax

        device = self._prepare(config)
        _, _, gradients = self.layer_functions(params, layer, config.dtype)
        cts = jax.device_put((cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"]), device)
        d_cells, dx, dh0, dc0 = gradients(*self._layer_arguments(params, x, h0, c0, layer, lengths, device), cts)
        return layer_gradients(params, d_cells, dx, dh0, dc0)

    def _timed_layer_pass(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, timing: Timing) -> TimedPass:
        device = self._prepare(timing.source_config)
        _, forward, gradients = self.layer_functions(params, layer, timing.source_dtype)
        args = self._layer_arguments(params, x, h0, c0, layer, lengths, device)
        return _timed_layer_pass(timing, forward, gradients, args, cotangents, device)


# ---------------------------------------------------------------------------
# jax.experimental.rnn: lstm_ref (any device) and lstm (cuDNN)
# ---------------------------------------------------------------------------

RNN_NO_PEEPHOLES = "jax.experimental.rnn's LSTM has no peepholes"
RNN_LAYER_REASONS = {
    "peephole": RNN_NO_PEEPHOLES,
    "reverse": "jax.experimental.rnn has no reverse-only direction (bidirectional=True or forward only)",
    "projection": "jax.experimental.rnn's LSTM has no projection (LSTMP)",
    "proj_clip": "jax.experimental.rnn's LSTM has no projection, so no proj_clip",
    "cell_clip": "jax.experimental.rnn's LSTM has no cell clip",
    "gate_clip": "jax.experimental.rnn's LSTM has no gate clip",
    "coupled": "jax.experimental.rnn's LSTM has no coupled input and forget gates",
    "mask": "jax.experimental.rnn takes seq_lengths (one length per row), not a mask of steps",
    "mask_previous_output": "jax.experimental.rnn takes seq_lengths (one length per row), not a mask of steps",
}
RNN_EMPTY_ROWS = (
    "jax 0.10.2 jax.experimental.rnn.lstm_ref returns, for a row of seq_lengths 0, h_n and c_n after all T steps "
    "run unmasked (it picks carry[seq_lengths - 1], index -1), not the initial state (its outputs there are zeros, "
    "as the spec's). Reproducer: findings/jax_rnn_lstm_ref_empty_rows_state.py; upstream: none found (jax-ml/jax "
    "searched; the selection comes from jax-ml/jax#15169)"
)


def rnn_flat_weights(cells, xp):
    """jax.experimental.rnn's flat weight vector from every cell's (W, U, b) (b with any forget bias folded), as
    jax/experimental/rnn.py documents cuDNN's packing: for each pseudo-layer k = l * D + d (forward, then
    reverse), W_ih (4H, in) then W_hh (4H, H), row-major; then for each, b_ih then b_hh (4H). Gates i, f, g, o
    (PyTorch's: the canonical W (4, H, in) is W_ih row by row). b is split into two equal halves (exact in
    binary), so that an implementation dropping one of the two biases cannot pass by luck. NumPy or traced."""
    weights = [w for W, U, _ in cells for w in (W.reshape(-1), U.reshape(-1))]
    biases = [half for _, _, b in cells for half in (b.reshape(-1) * 0.5, b.reshape(-1) * 0.5)]
    return xp.concatenate(weights + biases)


def rnn_cells(native: Mapping[str, object]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The inverse of :func:`rnn_flat_weights`, through jax's own unpack_lstm_weights: every cell's (W, U, b),
    b = b_ih + b_hh. ``native`` holds rnn.lstm's arguments: weights, input_size, hidden_size, num_layers,
    bidirectional."""
    from jax.experimental import rnn

    I, H, L, bidirectional = (native[k] for k in ("input_size", "hidden_size", "num_layers", "bidirectional"))
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(np.asarray(native["weights"]), I, H, L, bidirectional)
    return [
        (np.array(W_ih[k]).reshape(4, H, -1), np.array(W_hh[k]).reshape(4, H, H), (b_ih[k] + b_hh[k]).reshape(4, H))
        for k in range(L * (2 if bidirectional else 1))
    ]


@cache
def _rnn_functions(function: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool):
    """Jitted forward(cells, x, h0, c0, lengths) and gradients(..., cotangents) of rnn.lstm_ref or rnn.lstm on
    the time-major x of the contract (the API is batch-major: x (B, T, I), y (B, T, D * H)); h0, c0 and the final
    states are (L * D, B, H), layer-major, as the spec's. Gradients by jax.vjp through rnn_flat_weights."""
    import jax
    from jax import lax
    from jax.experimental import rnn

    shape = (input_size, hidden_size, num_layers)

    def forward(cells, x, h0, c0, lengths):
        flat = rnn_flat_weights(cells, jax.numpy)
        with jax.default_matmul_precision(MATMUL_PRECISION):
            if function == "lstm_ref":
                weights = rnn.unpack_lstm_weights(flat, *shape, bidirectional)
                y, h_n, c_n = rnn.lstm_ref(x.transpose(1, 0, 2), h0, c0, *weights, lengths, *shape, 0.0, bidirectional)
            else:  # cuDNN: precision HIGHEST keeps TF32 off (rnn._lstm_cudnn_allow_tf32)
                y, h_n, c_n = rnn.lstm(x.transpose(1, 0, 2), h0, c0, flat, lengths, *shape, 0.0, bidirectional,
                                       precision=lax.Precision.HIGHEST)
        return y.transpose(1, 0, 2), h_n, c_n

    def gradients(cells, x, h0, c0, lengths, cotangents):
        _, pullback = jax.vjp(lambda *args: forward(*args, lengths), cells, x, h0, c0)
        return pullback(cotangents)

    return jax.jit(forward), jax.jit(gradients)


@cache
def _cudnn_problem(device: str) -> str | None:
    """Why rnn.lstm (cuDNN) cannot run on ``device`` here, found by running it once on one step: on a CPU
    jaxlib it fails while tracing (jaxlib's gpu_rnn stub has no kernels), which is the reason reported."""
    import jax

    forward, _ = _rnn_functions("lstm", 1, 1, 1, False)
    one = np.ones((1, 1, 1), np.float32)
    cells = ((np.ones((4, 1, 1), np.float32), np.ones((4, 1, 1), np.float32), np.ones((4, 1), np.float32)),)
    try:
        jax.block_until_ready(forward(*jax.device_put((cells, one, one, one, np.ones(1, np.int32)), _jax_device(device))))
    except Exception as error:  # whatever it raises is the reason: an AttributeError from the stub on a CPU
        return (f"jax.experimental.rnn.lstm is cuDNN's LSTM (GPU only): on {device} it fails while tracing: "
                f"{type(error).__name__}: {error}")
    return None


@dataclass
class JaxRnnLSTM(CellThroughLayer, _JaxImplementation):
    """jax.experimental.rnn's LSTM: ``function`` "lstm_ref" (jax ops, any device) or "lstm" (cuDNN). Native
    layout: rnn.lstm's own arguments, {"weights": the flat vector (:func:`rnn_flat_weights`), "input_size",
    "hidden_size", "num_layers", "bidirectional"}. The cell contract runs as a one-layer forward layer with every
    length T."""

    function: str = "lstm_ref"
    variants: tuple[str, ...] = ("standard",)
    timing_dtypes: tuple[str, ...] = ()
    unsupported_reasons: dict = field(default_factory=lambda: dict(RNN_LAYER_REASONS))
    layer_features: tuple[str, ...] | None = ("stacked", "bidirectional", "lengths", "empty_sequences")
    known_failures: tuple[KnownFailure, ...] = tuple(
        KnownFailure(kind, RNN_EMPTY_ROWS, features=("empty_sequences",)) for kind in ("layer outputs", "layer gradients")
    )

    def _availability(self, device: str) -> str | None:
        problem = _jax_reason() or _device_reason(device)
        if problem is None and self.function == "lstm":
            problem = _cudnn_problem(device)
        return problem

    def _environment(self, device: str) -> dict[str, object]:
        return {**_environment(device, with_flax=False), "function": f"jax.experimental.rnn.{self.function}"}

    # -- layout ----------------------------------------------------------------------------------

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        _cells_or_refuse(params, layer, self.unsupported_reasons)
        if layer.direction == "reverse":
            raise NotSupported(self.unsupported_reasons["reverse"])
        return {
            "weights": rnn_flat_weights(folded_cells(params, layer.forget_bias), np),
            "input_size": params.input_size,
            "hidden_size": params.hidden_size,
            "num_layers": layer.num_layers,
            "bidirectional": layer.direction == "bidirectional",
        }

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        return LayerParams(tuple(LSTMParams(*cell) for cell in rnn_cells(native)), layer.num_directions)

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return self.to_native_layer(LayerParams((params,)), LayerConfig(forget_bias=forget_bias))

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        return self.from_native_layer(native, LayerConfig()).cells[0]

    # -- the calls -------------------------------------------------------------------------------

    def _functions(self, params: LayerParams, layer: LayerConfig):
        _cells_or_refuse(params, layer, self.unsupported_reasons)
        shape = (params.input_size, params.hidden_size, layer.num_layers, layer.direction == "bidirectional")
        return _rnn_functions(self.function, *shape)

    def _arguments(self, params: LayerParams, x, h0, c0, layer: LayerConfig, lengths, device):
        """The device arrays; without lengths every row runs all T steps (seq_lengths is not optional)."""
        import jax

        T, B = x.shape[:2]
        lengths = np.full(B, T, np.int32) if lengths is None else _lengths32(lengths)
        return jax.device_put((folded_cells(params, layer.forget_bias), x, h0, c0, lengths), device)

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        device = self._prepare(config)
        forward, _ = self._functions(params, layer)
        return tuple(map(_to_numpy, forward(*self._arguments(params, x, h0, c0, layer, lengths, device))))

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        import jax

        device = self._prepare(config)
        _, gradients = self._functions(params, layer)
        cts = jax.device_put((cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"]), device)
        d_cells, dx, dh0, dc0 = gradients(*self._arguments(params, x, h0, c0, layer, lengths, device), cts)
        return layer_gradients(params, d_cells, dx, dh0, dc0)

    def _timed_layer_pass(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, timing: Timing) -> TimedPass:
        device = self._prepare(timing.source_config)
        forward, gradients = self._functions(params, layer)
        args = self._arguments(params, x, h0, c0, layer, lengths, device)
        return _timed_layer_pass(timing, forward, gradients, args, cotangents, device)



IMPLEMENTATIONS = (
    JaxScanLSTM(),
    FlaxLSTM(
        id="flax/LSTMCell",
        cell="LSTMCell",
        description="flax.linen.LSTMCell through flax.linen.RNN (time-major, initial carry (c0, h0))",
    ),
    FlaxLSTM(
        id="flax/OptimizedLSTMCell",
        cell="OptimizedLSTMCell",
        packing="concatenated",
        description="flax.linen.OptimizedLSTMCell (one matrix product per step for all four gates) through flax.linen.RNN",
    ),
    JaxRnnLSTM(
        id="jax/rnn.lstm_ref",
        function="lstm_ref",
        description="jax.experimental.rnn.lstm_ref (jax ops; num_layers, bidirectional, seq_lengths)",
    ),
    JaxRnnLSTM(
        id="jax/rnn.lstm",
        function="lstm",
        dtypes=("float32",),
        devices=("cpu", "cuda"),
        unsupported_reasons={**RNN_LAYER_REASONS, "float64": "jax.experimental.rnn.lstm (cuDNN) is float32 only "
                             "(its docstring: 'TODO: Add support for input and weight dtypes other than float32')"},
        description="jax.experimental.rnn.lstm: cuDNN's LSTM (GPU only), the same arguments as lstm_ref",
    ),
)
