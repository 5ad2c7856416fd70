"""JAX: the spec's equations as a ``jax.lax.scan`` (both variants), and flax's two LSTM cells run
through ``flax.linen.RNN`` (standard variant only: flax's cells have no peepholes).

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

from backends.base import Config, Implementation, NotSupported, fold_forget_bias, framework_problem
from backends.timing import HALF_DTYPES, TimedPass, Timing
from spec.params import GATES, LSTMParams

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


@dataclass
class FlaxLSTM(_JaxImplementation):
    framework: str = "flax"
    cell: str = "LSTMCell"
    #: How W and U travel to the device (:data:`PACKINGS`): the one this cell runs fastest with.
    packing: str = "gates"
    variants: tuple[str, ...] = ("standard",)
    unsupported_reasons: dict = field(default_factory=lambda: {"peephole": NO_PEEPHOLES})

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
)
