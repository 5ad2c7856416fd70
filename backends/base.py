"""The adapter contract: what an implementation of the LSTM gives the conformance suite.

An implementation is one row of the conformance matrix (a framework's native
LSTM, or an LSTM built from its ops). It converts the canonical parameters
(:class:`spec.LSTMParams`, gates i, f, g, o) to its native layout and back,
runs forward on NumPy inputs and returns NumPy outputs, and computes the
gradients of those outputs with its own autodiff, returned in the canonical
layout. What it cannot do it declares, and the suite reports "not supported".

Third parties implement the same contract (see README, "Testing your own
implementation"); :mod:`backends.plugin` loads them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spec.params import GATES, LSTMParams
from spec.validation import LSTMInputError, check_tensor

VARIANTS = ("standard", "peephole")
DTYPES = ("float32", "float64")
#: What a benchmark may time a pass in: the conformance dtypes, and the half types an adapter declares
#: in ``timing_dtypes`` (on GPUs). The spec has no half types: half runs are timed, not judged.
HALF_DTYPES = ("float16", "bfloat16")
TIMING_DTYPES = DTYPES + HALF_DTYPES
DEVICES = ("cpu", "cuda")
GRADIENT_NAMES = ("x", "h0", "c0", "W", "U", "b", "p")


class NotSupported(Exception):
    """The implementation does not do this (a dtype, a device, peepholes, gradients); the message says what."""


class Unavailable(Exception):
    """The implementation could do this, but not here: its framework is not installed, or there is no GPU."""


@dataclass(frozen=True)
class Outputs:
    h_seq: np.ndarray  # (T, B, H)
    h_T: np.ndarray  # (B, H)
    c_T: np.ndarray  # (B, H)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"h_seq": self.h_seq, "h_T": self.h_T, "c_T": self.c_T}


@dataclass(frozen=True)
class Config:
    variant: str = "standard"
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self):
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("dtype", self.dtype, DTYPES), ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.dtype}-{self.device}"


@dataclass(frozen=True)
class Timing:
    """What a benchmark times: one pass (forward, or forward+backward when ``gradients``) in ``dtype``
    (:data:`TIMING_DTYPES`) on ``device``."""

    variant: str = "standard"
    dtype: str = "float32"
    device: str = "cpu"
    gradients: bool = False

    def __post_init__(self):
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("dtype", self.dtype, TIMING_DTYPES), ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")

    @property
    def source_dtype(self) -> str:
        """The dtype of the NumPy inputs: the pass's own, or float32 for a half pass (rounded on upload)."""
        return "float32" if self.dtype in HALF_DTYPES else self.dtype


@dataclass
class TimedPass:
    """One pass, ready to be timed.

    ``run()`` does the pass and returns once the device has finished it (CUDA synchronised, jax
    blocked until ready, TensorFlow's results materialised). ``result()`` gives what the last run
    computed that needs no native layout, as float64 NumPy arrays: ``h_seq`` for a forward pass, the
    gradients ``x``, ``h0`` and ``c0`` for forward+backward; the benchmark checks it against the spec,
    so that a wrong answer is never timed. ``resident`` says whether the inputs stay on the device
    between runs (True) or every run goes through NumPy, conversions and transfers included (False).
    """

    run: Callable[[], None]
    result: Callable[[], dict[str, np.ndarray]]
    resident: bool


@dataclass
class Implementation:
    """Base class for implementations: declare what you support, override the methods.

    ``id`` is stable (it names the matrix row and the test ids); ``framework``
    names the package whose absence makes the row unavailable.
    """

    id: str = ""
    framework: str = ""
    description: str = ""
    variants: tuple[str, ...] = VARIANTS
    dtypes: tuple[str, ...] = DTYPES
    devices: tuple[str, ...] = ("cpu",)
    gradients: bool = True
    #: Half types (:data:`HALF_DTYPES`) that :meth:`timed_pass` runs in, beyond ``dtypes``.
    timing_dtypes: tuple[str, ...] = ()
    #: Why a variant, dtype, device or gradients are unsupported, for the report.
    unsupported_reasons: Mapping[str, str] = field(default_factory=dict)

    # -- what it can do -----------------------------------------------------

    def availability(self, device: str = "cpu") -> str | None:
        """None if the implementation can run on ``device`` here, else why not (skipped, with that reason)."""
        return None

    def check(self, config: Config, *, gradients: bool = False) -> None:
        """Raise NotSupported if this implementation does not do ``config`` (or its gradients)."""
        for kind, value, supported in (
            ("variant", config.variant, self.variants),
            ("dtype", config.dtype, self.dtypes),
            ("device", config.device, self.devices),
        ):
            if value not in supported:
                reason = self.unsupported_reasons.get(value, f"{self.id} does not support {kind} {value}")
                raise NotSupported(reason)
        if gradients and not self.gradients:
            raise NotSupported(self.unsupported_reasons.get("gradients", f"{self.id} computes no gradients"))

    # -- layouts -------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        """The parameters in the framework's layout (NumPy arrays, plus any attributes such as a forget bias)."""
        raise NotImplementedError

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        """Canonical parameters from the native layout; a native forget bias is folded into b_f."""
        raise NotImplementedError

    # -- running -------------------------------------------------------------

    def forward(self, params: LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, forget_bias: float, config: Config) -> Outputs:
        raise NotImplementedError

    def backward(
        self,
        params: LSTMParams,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        cotangents: Mapping[str, np.ndarray],
        *,
        forget_bias: float,
        config: Config,
    ) -> dict[str, np.ndarray]:
        """Gradients of sum <dh_seq, h_seq> + <dh_T, h_T> + <dc_T, c_T> with respect to
        x, h0, c0, W, U, b (and p), in the canonical layout, by the framework's own autodiff."""
        raise NotImplementedError

    # -- timing --------------------------------------------------------------

    def check_timing(self, timing: Timing) -> None:
        """Raise NotSupported if :meth:`timed_pass` cannot time ``timing``."""
        if timing.dtype in HALF_DTYPES and timing.dtype not in self.timing_dtypes:
            raise NotSupported(self.unsupported_reasons.get(timing.dtype, f"{self.id} does not run in {timing.dtype}"))
        # A half pass is supported where its float32 pass is (variant, device, gradients).
        self.check(Config(timing.variant, timing.source_dtype, timing.device), gradients=timing.gradients)

    def timed_pass(
        self,
        params: LSTMParams,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        cotangents: Mapping[str, np.ndarray] | None,
        *,
        forget_bias: float,
        timing: Timing,
    ) -> TimedPass:
        """A pass to time. The inputs are in ``timing.source_dtype``; an adapter that overrides this keeps
        them on the device, converted (and rounded to a half type) once, here. This default goes through
        :meth:`forward` and :meth:`backward` on every run: NumPy in and out, conversions included."""
        self.check_timing(timing)
        if timing.dtype in HALF_DTYPES:
            raise NotSupported(f"{self.id} declares {timing.dtype} but does not override timed_pass()")
        config = Config(timing.variant, timing.dtype, timing.device)
        last: dict[str, np.ndarray] = {}
        if timing.gradients:
            if cotangents is None:
                raise ValueError("a forward+backward pass needs cotangents")

            def run():
                grads = self.backward(params, x, h0, c0, cotangents, forget_bias=forget_bias, config=config)
                last.update({k: grads[k] for k in ("x", "h0", "c0")})
        else:

            def run():
                last["h_seq"] = self.forward(params, x, h0, c0, forget_bias=forget_bias, config=config).h_seq

        return TimedPass(run, lambda: {k: np.asarray(v, np.float64) for k, v in last.items()}, resident=False)

    # -- what results depend on ----------------------------------------------

    def environment(self, device: str = "cpu") -> dict[str, object]:
        """Versions, device name, TF32 and thread settings: recorded beside every result."""
        return {}


class NativeCache:
    """Converted weights per parameter set: the suite and the benchmarks call an adapter many times with
    the same LSTMParams object, and converting (and uploading) them each time would be measured as the
    adapter's overhead. Keyed weakly by the params object, then by whatever else the conversion depends
    on (forget bias, dtype, device)."""

    def __init__(self):
        self._by_params: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, params: LSTMParams, key: tuple, make: Callable[[], object]):
        per_params = self._by_params.setdefault(params, {})
        if key not in per_params:
            per_params[key] = make()
        return per_params[key]


def check_inputs(
    params: LSTMParams, x, h0, c0, dtype: str, cotangents: Mapping[str, np.ndarray] | None = None
) -> None:
    """Everything must already be in the requested dtype and in shape: frameworks would cast silently
    (or broadcast), so adapters check before handing anything over."""
    want = np.dtype(dtype)
    if params.dtype != want:
        raise LSTMInputError("params", "wrong dtype", want.name, params.dtype.name, "nothing is cast; use params.astype(...)")
    H, I = params.hidden_size, params.input_size
    check_tensor("x", x, ("T", "B", I), want)
    T, B = x.shape[:2]
    check_tensor("h0", h0, (B, H), want)
    check_tensor("c0", c0, (B, H), want)
    if cotangents is not None:
        check_tensor("dh_seq", cotangents["dh_seq"], (T, B, H), want)
        check_tensor("dh_T", cotangents["dh_T"], (B, H), want)
        check_tensor("dc_T", cotangents["dc_T"], (B, H), want)


def check_timing_inputs(params: LSTMParams, x, h0, c0, cotangents, timing: Timing) -> None:
    """check_inputs for a timed pass: the NumPy inputs are in ``timing.source_dtype``."""
    check_inputs(params, x, h0, c0, timing.source_dtype, cotangents if timing.gradients else None)


def cpu_model() -> str:
    """The CPU's name, for the environment recorded beside results."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def fold_forget_bias(b: np.ndarray, forget_bias: float) -> np.ndarray:
    """b with the forget bias added to the f block (canonical layout): how every layout without
    a forget-bias attribute carries one."""
    out = b.copy()
    out[GATES.index("f")] += forget_bias
    return out


def checked_outputs(h_seq, h_T, c_T, dtype: str, to_numpy: Callable = np.asarray) -> Outputs:
    """Outputs from a framework's results: each converted to NumPy by ``to_numpy`` and required to be
    in ``dtype`` (:func:`require_dtype`)."""
    named = (("h_seq", h_seq), ("h_T", h_T), ("c_T", c_T))
    return Outputs(*(require_dtype(name, to_numpy(value), dtype) for name, value in named))


def require_dtype(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """An adapter's output must come back in the dtype it was asked for; a framework that computed in
    another one (a silent downcast) is caught here rather than trusted."""
    if array.dtype != np.dtype(dtype):
        raise NotSupported(f"{name} came back as {array.dtype}, not the requested {dtype}: the framework did not compute in {dtype}")
    return array
