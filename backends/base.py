"""The adapter contract: what an implementation of the LSTM gives the conformance suite, enforced in one place.

An implementation is one row of the conformance matrix (a framework's native
LSTM, an LSTM built from its ops, someone else's code). Its entry points,
:meth:`Implementation.forward`, :meth:`~Implementation.backward` and
:meth:`~Implementation.timed_pass`, belong to this base class and always run the
same sequence:

    1. the declared support check (variant, dtype, device, gradients)   -> NotSupported
    2. availability here (framework importable, device present)           -> Unavailable
    3. the inputs: parameters of the run's dtype and variant, x, h0, c0
       (and cotangents) of that dtype and of consistent shapes, finite     -> LSTMInputError
    4. the adapter's own hook (``_forward``, ``_backward``, ``_timed_pass``):
       layout conversion and the framework's own call
    5. the answer: every tensor a finite NumPy array of the requested dtype
       and shape, every gradient present and no other                      -> ResultError

Adapters supply only hooks; a subclass that overrides an entry point is refused
when it is defined. "Not supported" only ever comes from what an
implementation declares (step 1) or raises as :class:`NotSupported` from its
hook; an answer in another dtype, shape or type is a :class:`ResultError`, a
failure, never a skip. ``availability()`` and ``environment()`` never raise:
whatever goes wrong in them (an import that fails with an OSError, say) is
reported as the reason, so one broken framework cannot take a report down.

A row that needs a process of its own (Keras fixes its backend at its first
import, JAX's float64 switch is process-wide) says so in
``process_environment``; its hooks then run in a child process with those
environment variables (:mod:`backends.process`).
"""

from __future__ import annotations

import importlib
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from backends.config import (
    DEVICES,
    DTYPES,
    GRADIENT_NAMES,
    LAYER_FEATURES,
    VARIANTS,
    Config,
    check_choices,
    layer_features,
)
from backends.timing import HALF_DTYPES, TimedPass, Timing, through_numpy
from spec import layer as spec_layer
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams, require_params
from spec.validation import LSTMInputError, check_tensor, format_shape

__all__ = [
    "DEVICES", "DTYPES", "GRADIENT_NAMES", "LAYER_FEATURES", "VARIANTS", "Config", "Crashed", "Implementation", "LayerOutputs", "TimedOut", "KnownFailure", "NativeCache",
    "NotSupported", "Outputs", "ResultError", "Unavailable", "check_choices", "check_inputs", "cpu_model",
    "fold_forget_bias", "framework_problem", "import_framework",
]


class NotSupported(Exception):
    """The implementation does not do this (a dtype, a device, peepholes, gradients); the message says what."""


class Unavailable(Exception):
    """The implementation could do this, but not here: its framework is missing or broken, or there is no GPU."""


class Crashed(Exception):
    """The implementation's process died during the call (a fatal signal, an exit); the message says how."""


class TimedOut(Exception):
    """The call did not return within its time limit; the message says which."""


class ResultError(Exception):
    """An implementation's answer is not what the contract asks for: not an array, another dtype or shape,
    non-finite, a gradient missing or unexpected. Always a failure: ``tensor``, ``problem``, ``expected``
    and ``actual`` say what."""

    def __init__(self, tensor: str, problem: str, expected: object, actual: object):
        self.tensor, self.problem, self.expected, self.actual = tensor, problem, expected, actual
        super().__init__(f"{tensor}: {problem}: expected {expected}, got {actual}")


@dataclass(frozen=True)
class Outputs:
    h_seq: np.ndarray  # (T, B, H)
    h_T: np.ndarray  # (B, H)
    c_T: np.ndarray  # (B, H)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"h_seq": self.h_seq, "h_T": self.h_T, "c_T": self.c_T}


@dataclass(frozen=True)
class LayerOutputs:
    y: np.ndarray  # (T, B, D * P): the top layer's outputs, every direction, forward first
    h_T: np.ndarray  # (L * D, B, P): every cell's final h, cell l * D + d
    c_T: np.ndarray  # (L * D, B, H)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"y": self.y, "h_T": self.h_T, "c_T": self.c_T}


@dataclass(frozen=True)
class KnownFailure:
    """A documented non-conformance of one implementation, with its upstream reason: the suite runs it as a
    strict xfail (one that starts passing fails the run), the benchmark refuses to time it. ``None`` in
    variant, dtype or device means every one. For layer cases it can be narrowed to the cases that use all of
    ``features`` (backends.config.LAYER_FEATURES: where the upstream bug lives, e.g. "empty_sequences") and,
    where a feature is too coarse, to the named ``cases``."""

    kind: str  # "outputs", "gradients", "layer outputs" or "layer gradients"
    reason: str
    variant: str | None = None
    dtype: str | None = None
    device: str | None = None
    features: tuple[str, ...] = ()
    cases: tuple[str, ...] | None = None

    def __post_init__(self):
        unknown = set(self.features) - set(LAYER_FEATURES)
        if unknown:
            raise ValueError(f"KnownFailure.features: unknown {sorted(unknown)}; the features are {list(LAYER_FEATURES)}")

    def applies(self, kind: str, variant: str, dtype: str, device: str, features: tuple[str, ...] = (), case: str | None = None) -> bool:
        return (
            self.kind == kind
            and all(want in (None, got) for want, got in ((self.variant, variant), (self.dtype, dtype), (self.device, device)))
            and set(self.features) <= set(features)
            and (self.cases is None or case in self.cases)
        )


#: The entry points, which only this class defines; subclasses supply the hooks named beside them.
_ENTRY_POINTS = {
    "forward": "_forward",
    "backward": "_backward",
    "timed_pass": "_timed_pass",
    "availability": "_availability",
    "environment": "_environment",
    "forward_layer": "_forward_layer",
    "backward_layer": "_backward_layer",
    "timed_layer_pass": "_timed_layer_pass",
}


@dataclass
class Implementation:
    """Base class for implementations: declare what you support, supply the hooks.

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
    #: Half types (:data:`backends.timing.HALF_DTYPES`) that :meth:`timed_pass` runs in, beyond ``dtypes``.
    timing_dtypes: tuple[str, ...] = ()
    #: Why a variant, dtype, device or gradients are unsupported, for the report.
    unsupported_reasons: Mapping[str, str] = field(default_factory=dict)
    #: The layer features (:data:`backends.config.LAYER_FEATURES`) that its layer entry points run; None: it
    #: implements the cell contract only (every layer case is then "not supported").
    layer_features: tuple[str, ...] | None = None
    #: Documented non-conformances, each with its upstream reason.
    known_failures: tuple[KnownFailure, ...] = ()
    #: Environment variables this row needs set before its framework is imported; when they differ from this
    #: process's, the hooks run in a child process that has them (backends/process.py).
    process_environment: Mapping[str, str] = field(default_factory=dict)
    #: Where the row comes from (a module, ``module:object`` or a .py path): how a child process finds it again.
    origin: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for entry, hook in _ENTRY_POINTS.items():
            if entry in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {entry}(): the base class runs the contract's checks around it; "
                    f"supply the hook {hook}() instead"
                )

    # -- what it declares ------------------------------------------------------

    def check(self, config: Config, *, gradients: bool = False) -> None:
        """Raise NotSupported if this implementation declares that it does not do ``config`` (or its gradients)
        with the cell contract (:meth:`forward`, :meth:`backward`)."""
        self._check_declared(config, gradients)

    def _check_declared(self, config: Config, gradients: bool) -> None:
        """What cell and layer cases share: variant, dtype, device, gradients."""
        for kind, value, supported in (
            ("variant", config.variant, self.variants),
            ("dtype", config.dtype, self.dtypes),
            ("device", config.device, self.devices),
        ):
            if value not in supported:
                raise NotSupported(self.unsupported_reasons.get(value, f"{self.id} does not support {kind} {value}"))
        if gradients and not self.gradients:
            raise NotSupported(self.unsupported_reasons.get("gradients", f"{self.id} computes no gradients"))

    def check_timing(self, timing: Timing) -> None:
        """Raise NotSupported if :meth:`timed_pass` cannot time ``timing``."""
        if timing.dtype in HALF_DTYPES and timing.dtype not in self.timing_dtypes:
            raise NotSupported(self.unsupported_reasons.get(timing.dtype, f"{self.id} does not run in {timing.dtype}"))
        # A half pass is supported where its float32 pass is (variant, device, gradients).
        self.check(timing.source_config, gradients=timing.gradients)

    def check_layer(self, config: Config, layer: LayerConfig, lengths=None, mask=None, *, gradients: bool = False) -> None:
        """Raise NotSupported if this implementation declares that it does not run this layer case."""
        if self.layer_features is None:
            raise NotSupported(self.unsupported_reasons.get("layer", f"{self.id} implements the LSTM cell, not the layer API"))
        self._check_declared(config, gradients)
        for feature in layer_features(layer, lengths, mask):
            if feature not in self.layer_features:
                raise NotSupported(self.unsupported_reasons.get(feature, f"{self.id} does not support {LAYER_FEATURES[feature]}"))

    def known_failure(self, kind: str, config: Config, features: tuple[str, ...] = (), case: str | None = None) -> str | None:
        """The upstream reason if ``kind`` of ``config`` (for a layer case: with these features, this case's name)
        is a known non-conformance."""
        for known in self.known_failures:
            if known.applies(kind, config.variant, config.dtype, config.device, features, case):
                return known.reason
        return None

    # -- entry points: the contract, in this order, for every implementation ------------------------

    def availability(self, device: str = "cpu") -> str | None:
        """None if the implementation can run on ``device`` here, else why not. Never raises."""
        try:
            if self._separate_process():
                from backends import process

                return process.call(self, "availability", device=device)
            return self._availability(device)
        except Exception as error:  # a broken framework is a reason, not a crash of the suite
            return f"checking availability failed: {type(error).__name__}: {error}"

    def environment(self, device: str = "cpu") -> dict[str, object]:
        """Versions, device name, TF32 and thread settings: recorded beside every result. Never raises."""
        try:
            if self._separate_process():
                from backends import process

                return process.call(self, "environment", device=device)
            return dict(self._environment(device))
        except Exception as error:
            return {"environment() failed": f"{type(error).__name__}: {error}"}

    def forward(self, params: LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, forget_bias: float, config: Config) -> Outputs:
        """h for every step, h_T and c_T, checked: see the module docstring."""
        self._enter(config, False, params, x, h0, c0, None)
        if self._separate_process():
            from backends import process

            answer = process.call(self, "forward", params=params, x=x, h0=h0, c0=c0, forget_bias=forget_bias, config=config)
        else:
            answer = self._forward(params, x, h0, c0, forget_bias=forget_bias, config=config)
        return checked_outputs(answer, params, x, config.dtype)

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
        """Gradients of sum <dh_seq, h_seq> + <dh_T, h_T> + <dc_T, c_T> with respect to x, h0, c0, W, U, b
        (and p), in the canonical layout, by the implementation's own autodiff; checked."""
        self._enter(config, True, params, x, h0, c0, cotangents)
        if self._separate_process():
            from backends import process

            answer = process.call(
                self, "backward", params=params, x=x, h0=h0, c0=c0, cotangents=cotangents, forget_bias=forget_bias, config=config
            )
        else:
            answer = self._backward(params, x, h0, c0, cotangents, forget_bias=forget_bias, config=config)
        return checked_gradients(answer, params, x, config.dtype)

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
        """A pass to time, from NumPy inputs in ``timing.source_dtype``. The hook keeps them on the device,
        converted (and rounded to a half type) once; without a hook (or in a separate process) the pass goes
        through :meth:`forward` and :meth:`backward` on every run, conversions and checks included."""
        self.check_timing(timing)
        source = timing.source_config
        self._enter(source, timing.gradients, params, x, h0, c0, cotangents if timing.gradients else None, declared=False)
        timed = None if self._separate_process() else self._timed_pass(params, x, h0, c0, cotangents, forget_bias=forget_bias, timing=timing)
        if timed is not None:
            return timed
        if timing.dtype in HALF_DTYPES:
            raise NotSupported(f"{self.id} declares {timing.dtype} but supplies no _timed_pass() that runs it")
        return through_numpy(
            lambda: self.forward(params, x, h0, c0, forget_bias=forget_bias, config=source),
            lambda: self.backward(params, x, h0, c0, cotangents, forget_bias=forget_bias, config=source),
            timing,
            cotangents,
        )

    def forward_layer(
        self, params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *,
        layer: LayerConfig, lengths: np.ndarray | None = None, mask: np.ndarray | None = None, config: Config,
    ) -> LayerOutputs:
        """A stack of LSTM layers (spec/layer.py): y, h_T, c_T for x (T, B, I), h0 (L * D, B, P), c0 (L * D, B, H)
        and ``lengths`` (B,) or ``mask`` (T, B); checked like :meth:`forward`."""
        self._enter_layer(config, False, params, x, h0, c0, layer, lengths, mask, None)
        arguments = dict(params=params, x=x, h0=h0, c0=c0, layer=layer, lengths=lengths, mask=mask, config=config)
        if self._separate_process():
            from backends import process

            answer = process.call(self, "forward_layer", **arguments)
        else:
            answer = self._forward_layer(**arguments)
        return checked_layer_outputs(answer, params, layer, x, config.dtype)

    def backward_layer(
        self, params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, cotangents: Mapping[str, np.ndarray], *,
        layer: LayerConfig, lengths: np.ndarray | None = None, mask: np.ndarray | None = None, config: Config,
    ) -> dict[str, np.ndarray]:
        """Gradients of <dy, y> + <dh_T, h_T> + <dc_T, c_T> with respect to x, h0, c0 and every cell's W, U, b
        (p, W_hr), keyed as ``LayerParams.tensors()`` names them ("layer 1 direction 0 W"); checked."""
        self._enter_layer(config, True, params, x, h0, c0, layer, lengths, mask, cotangents)
        arguments = dict(params=params, x=x, h0=h0, c0=c0, cotangents=cotangents, layer=layer, lengths=lengths, mask=mask, config=config)
        if self._separate_process():
            from backends import process

            answer = process.call(self, "backward_layer", **arguments)
        else:
            answer = self._backward_layer(**arguments)
        return checked_layer_gradients(answer, params, x, config.dtype)

    def timed_layer_pass(
        self, params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, cotangents: Mapping[str, np.ndarray] | None, *,
        layer: LayerConfig, lengths: np.ndarray | None = None, mask: np.ndarray | None = None, timing: Timing,
    ) -> TimedPass:
        """A layer pass to time (:meth:`timed_pass` for :meth:`forward_layer`): the hook's device-resident pass,
        or through forward_layer()/backward_layer() on every run (NumPy in and out; reports mark it). Its
        result is y (forward) or the gradients of x, h0, c0 (forward+backward)."""
        if timing.dtype in HALF_DTYPES and timing.dtype not in self.timing_dtypes:
            raise NotSupported(self.unsupported_reasons.get(timing.dtype, f"{self.id} does not run in {timing.dtype}"))
        source = timing.source_config
        self._enter_layer(source, timing.gradients, params, x, h0, c0, layer, lengths, mask, cotangents if timing.gradients else None)
        options = dict(layer=layer, lengths=lengths, mask=mask)
        timed = None if self._separate_process() else self._timed_layer_pass(params, x, h0, c0, cotangents, timing=timing, **options)
        if timed is not None:
            return timed
        if timing.dtype in HALF_DTYPES:
            raise NotSupported(f"{self.id} declares {timing.dtype} but supplies no _timed_layer_pass() that runs it")
        return through_numpy(
            lambda: self.forward_layer(params, x, h0, c0, config=source, **options),
            lambda: self.backward_layer(params, x, h0, c0, cotangents, config=source, **options),
            timing,
            cotangents,
            output="y",
        )

    # -- hooks: what an adapter supplies ---------------------------------------------------------

    def _availability(self, device: str) -> str | None:
        return None

    def _environment(self, device: str) -> Mapping[str, object]:
        return {}

    def _forward(self, params, x, h0, c0, *, forget_bias: float, config: Config):
        """The framework's forward pass: (h_seq, h_T, c_T) as NumPy arrays (or an :class:`Outputs`)."""
        raise NotImplementedError(f"{type(self).__name__} supplies no _forward()")

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias: float, config: Config) -> Mapping[str, np.ndarray]:
        """The framework's gradients, keyed x, h0, c0, W, U, b (and p), canonical layout, as NumPy arrays."""
        raise NotImplementedError(f"{type(self).__name__} supplies no _backward()")

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias: float, timing: Timing) -> TimedPass | None:
        """A device-resident pass, or None to be timed through forward() and backward()."""
        return None

    def _timed_layer_pass(self, params, x, h0, c0, cotangents, *, layer: LayerConfig, lengths, mask, timing: Timing) -> TimedPass | None:
        """A device-resident layer pass, or None to be timed through forward_layer() and backward_layer()."""
        return None

    def _forward_layer(self, params, x, h0, c0, *, layer: LayerConfig, lengths, mask, config: Config):
        """The framework's layer: (y, h_T, c_T) as NumPy arrays (or a :class:`LayerOutputs`)."""
        raise NotImplementedError(f"{type(self).__name__} supplies no _forward_layer()")

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer: LayerConfig, lengths, mask, config: Config):
        """The framework's layer gradients, keyed x, h0, c0 and LayerParams.tensors() names, as NumPy arrays."""
        raise NotImplementedError(f"{type(self).__name__} supplies no _backward_layer()")

    # -- layouts ---------------------------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        """The parameters in the framework's layout (NumPy arrays, plus any attributes such as a forget bias)."""
        raise NotImplementedError

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        """Canonical parameters from the native layout; a native forget bias is folded into b_f."""
        raise NotImplementedError

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """A layer's parameters in what the framework's layer API loads (a state_dict, a Keras layer's weights, a
        flax tree, ONNX initializers), by native name; a forget bias folded where the layout has no attribute for
        it. What the layout cannot express (a projection in Keras, peepholes in PyTorch) raises NotSupported with
        the reason. The one copy of the row's layer layout: the adapter and the porting command use it."""
        raise NotImplementedError(f"{type(self).__name__} has no layer layout")

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        """Canonical LayerParams from the native layout of a layer configured as ``layer`` (its architecture:
        layers, directions, projection, peepholes; a native forget bias is folded into b_f)."""
        raise NotImplementedError(f"{type(self).__name__} has no layer layout")

    # -- the sequence's common steps ---------------------------------------------------------------

    def _enter(self, config, gradients, params, x, h0, c0, cotangents, *, declared: bool = True) -> None:
        """Steps 1 to 3 of the contract."""
        if declared:
            self.check(config, gradients=gradients)
        if (reason := self.availability(config.device)) is not None:
            raise Unavailable(reason)
        check_inputs(params, x, h0, c0, config.dtype, cotangents, variant=config.variant)

    def _enter_layer(self, config, gradients, params, x, h0, c0, layer, lengths, mask, cotangents) -> None:
        """Steps 1 to 3 of the contract for a layer case: the inputs are checked by the spec's own rules."""
        self.check_layer(config, layer, lengths, mask, gradients=gradients)
        if (reason := self.availability(config.device)) is not None:
            raise Unavailable(reason)
        spec_layer.check_inputs(params, x, h0, c0, config=layer, lengths=lengths, mask=mask, dtype=config.dtype)
        if params.peephole != (config.variant == "peephole"):
            raise LSTMInputError("params", "wrong variant", config.variant, "peephole" if params.peephole else "standard")
        if cotangents is not None:
            T, B = x.shape[:2]
            shapes = {"dy": (T, B, layer.num_directions * params.output_size), "dh_T": h0.shape, "dc_T": c0.shape}
            for name, shape in shapes.items():
                if name not in cotangents:
                    raise LSTMInputError("cotangents", "missing tensor", name, sorted(cotangents))
                check_tensor(name, cotangents[name], shape, np.dtype(config.dtype))

    def _separate_process(self) -> bool:
        return any(os.environ.get(name) != value for name, value in self.process_environment.items())


class CellThroughLayer:
    """The cell hooks for a row whose framework's API is the layer: the cell is its layer with one forward
    cell, no lengths and no mask, and the cell's gradients are that cell's. Listed before the row's base."""

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        y, h_T, c_T = self._forward_layer(LayerParams((params,)), x, h0[None], c0[None], lengths=None, mask=None,
                                          layer=LayerConfig(peephole=params.peephole, forget_bias=forget_bias), config=config)
        return y, h_T[0], c_T[0]

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        one = LayerParams((params,))
        layer_cotangents = {"dy": cotangents["dh_seq"], "dh_T": cotangents["dh_T"][None], "dc_T": cotangents["dc_T"][None]}
        grads = self._backward_layer(one, x, h0[None], c0[None], layer_cotangents, lengths=None, mask=None,
                                     layer=LayerConfig(peephole=params.peephole, forget_bias=forget_bias), config=config)
        prefix = f"{one.cell_name(0)} "
        return {"x": grads["x"], "h0": grads["h0"][0], "c0": grads["c0"][0],
                **{name.removeprefix(prefix): g for name, g in grads.items() if name.startswith(prefix)}}


# ---------------------------------------------------------------------------
# Inputs and answers
# ---------------------------------------------------------------------------


def check_inputs(
    params: LSTMParams, x, h0, c0, dtype: str, cotangents: Mapping[str, np.ndarray] | None = None, *, variant: str | None = None
) -> None:
    """Everything must already be in the requested dtype and in shape, and finite: frameworks would cast
    silently (or broadcast), so nothing reaches a hook unchecked."""
    require_params(params)
    want = np.dtype(dtype)
    if params.dtype != want:
        raise LSTMInputError("params", "wrong dtype", want.name, params.dtype.name, "nothing is cast; use params.astype(...)")
    if variant is not None and params.variant != variant:
        raise LSTMInputError("params", "wrong variant", variant, params.variant)
    H, I = params.hidden_size, params.input_size
    check_tensor("x", x, ("T", "B", I), want)
    T, B = x.shape[:2]
    check_tensor("h0", h0, (B, H), want)
    check_tensor("c0", c0, (B, H), want)
    if cotangents is not None:
        for name, shape in (("dh_seq", (T, B, H)), ("dh_T", (B, H)), ("dc_T", (B, H))):
            if name not in cotangents:
                raise LSTMInputError("cotangents", "missing tensor", name, sorted(cotangents))
            check_tensor(name, cotangents[name], shape, want)


def check_answer(name: str, value: object, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """One tensor of an answer: a NumPy array of exactly ``dtype`` and ``shape``, every value finite."""
    if not isinstance(value, np.ndarray):
        raise ResultError(name, "not a NumPy array", f"numpy.ndarray {dtype} {format_shape(shape)}", type(value).__name__)
    if value.dtype != np.dtype(dtype):
        raise ResultError(name, "wrong dtype", dtype, value.dtype.name)
    if value.shape != tuple(shape):
        raise ResultError(name, "wrong shape", format_shape(shape), format_shape(value.shape))
    finite = np.isfinite(value)
    if not finite.all():
        index = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise ResultError(name, "non-finite value", "finite values", f"{value[index]!r} at index {index}")
    return value


def _described(answer: object) -> str:
    """What came back instead of a 3-tuple: its type, and its length if it is a sequence ("a tuple of 2")."""
    if isinstance(answer, (tuple, list)):
        return f"a {type(answer).__name__} of {len(answer)}"
    return type(answer).__name__


def checked_outputs(answer: object, params: LSTMParams, x: np.ndarray, dtype: str) -> Outputs:
    """Step 5 for a forward pass: (h_seq, h_T, c_T) in ``dtype`` and in shape."""
    if isinstance(answer, Outputs):
        answer = (answer.h_seq, answer.h_T, answer.c_T)
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise ResultError("outputs", "wrong type", "(h_seq, h_T, c_T)", _described(answer))
    T, B, H = x.shape[0], x.shape[1], params.hidden_size
    shapes = {"h_seq": (T, B, H), "h_T": (B, H), "c_T": (B, H)}
    return Outputs(*(check_answer(name, value, shapes[name], dtype) for name, value in zip(shapes, answer)))


def checked_gradients(answer: object, params: LSTMParams, x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Step 5 for a backward pass: exactly the gradients of this variant, each in ``dtype`` and in shape."""
    T, B, I, H = x.shape[0], x.shape[1], params.input_size, params.hidden_size
    shapes = {"x": (T, B, I), "h0": (B, H), "c0": (B, H), "W": (4, H, I), "U": (4, H, H), "b": (4, H)}
    if params.peephole:
        shapes["p"] = (3, H)
    return _checked_gradient_dict(answer, shapes, f"gradients {list(shapes)}", dtype)


def _checked_gradient_dict(answer: object, shapes: dict[str, tuple[int, ...]], expected: str, dtype: str) -> dict[str, np.ndarray]:
    """Exactly the gradients named in ``shapes`` (``expected`` says them in an error), each in dtype and shape."""
    if not isinstance(answer, Mapping):
        raise ResultError("gradients", "wrong type", "a dict of gradients", type(answer).__name__)
    missing = [name for name in shapes if name not in answer]
    if missing:
        raise ResultError(f"gradient {missing[0]}", "missing", expected, f"gradients {list(answer)}")
    unexpected = [name for name in answer if name not in shapes]
    if unexpected:
        raise ResultError(f"gradient {unexpected[0]}", "unexpected", expected, f"gradients {list(answer)}")
    return {name: check_answer(f"gradient {name}", answer[name], shape, dtype) for name, shape in shapes.items()}


def checked_layer_outputs(answer: object, params: LayerParams, layer: LayerConfig, x: np.ndarray, dtype: str) -> LayerOutputs:
    """Step 5 for a layer's forward pass: (y, h_T, c_T) in ``dtype`` and in shape."""
    if isinstance(answer, LayerOutputs):
        answer = (answer.y, answer.h_T, answer.c_T)
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise ResultError("outputs", "wrong type", "(y, h_T, c_T)", _described(answer))
    T, B = x.shape[:2]
    LD, P, H = len(params.cells), params.output_size, params.hidden_size
    shapes = {"y": (T, B, layer.num_directions * P), "h_T": (LD, B, P), "c_T": (LD, B, H)}
    return LayerOutputs(*(check_answer(name, value, shapes[name], dtype) for name, value in zip(shapes, answer)))


def checked_layer_gradients(answer: object, params: LayerParams, x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Step 5 for a layer's backward pass: exactly x, h0, c0 and every cell's tensors, each in dtype and shape."""
    B, LD = x.shape[1], len(params.cells)
    shapes = {"x": x.shape, "h0": (LD, B, params.output_size), "c0": (LD, B, params.hidden_size)}
    shapes.update({name: t.shape for name, t in params.tensors().items()})
    return _checked_gradient_dict(answer, shapes, f"{len(shapes)} gradients: x, h0, c0 and {list(params.tensors())}", dtype)


# ---------------------------------------------------------------------------
# What adapters share
# ---------------------------------------------------------------------------


def import_framework(module: str, install_hint: str):
    """Import a framework for an adapter, or raise Unavailable saying why: "not installed" (with the hint)
    only when the module itself is missing; any other failure (a broken CUDA library's OSError, an
    ImportError inside the package) with the real error."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            raise Unavailable(install_hint) from None
        raise Unavailable(f"import {module} failed: {type(error).__name__}: {error}") from error
    except Exception as error:
        raise Unavailable(f"import {module} failed: {type(error).__name__}: {error}") from error


def framework_problem(module: str, install_hint: str) -> str | None:
    """None if ``module`` imports, else why not (:func:`import_framework`'s reason)."""
    try:
        import_framework(module, install_hint)
    except Unavailable as error:
        return str(error)
    return None


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
