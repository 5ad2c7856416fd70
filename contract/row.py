"""A row of the conformance matrix: an implementation of the LSTM layer, its declarations, its layout and its call.

The entry points (:meth:`Row.forward`, :meth:`Row.backward`, :meth:`Row.timed_pass`, and
:meth:`Row.check`, :meth:`Row.availability`, :meth:`Row.environment`) belong to this class, and always run
the same sequence:

    1. what the row declares: dtype, device, gradients, and every feature the case uses, refused with the
       layout's reason when its parameters cannot express it, else with the row's      -> NotSupported
    2. availability here (framework importable, device present)                         -> Unavailable
    3. the inputs (contract.answers.check_inputs): the spec's rules, one dtype          -> LSTMInputError
    4. the call: by default the layout to native (NumPy, cached per parameter values), the row's
       ``build`` (to the device, into a module or a session), the inputs to the device, the row's
       ``call`` run by its runtime, back to NumPy; gradients by the runtime's own autodiff of the
       same call, mapped back through the layout's transpose
    5. the answer (contract.answers): every tensor a finite NumPy array of the parameters' dtype and
       the right shape, every gradient present and no other                             -> ResultError

A row supplies ``call`` (and, where the framework needs it, ``build`` and ``inputs``); a framework whose
calls do not fit a function of tensors (a TF1 session, a results file) overrides the call-level hooks
``_outputs`` / ``_gradients`` instead. A subclass that overrides an entry point is refused when it is
defined. "Not supported" only ever comes from a declaration or from a raised
:class:`contract.errors.NotSupported`; ``availability()`` and ``environment()`` never raise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from contract.answers import (
    Cotangents,
    Gradients,
    Outputs,
    check_inputs,
    checked_gradients,
    checked_outputs,
)
from contract.errors import NotSupported, Unavailable
from contract.layout import CANONICAL, Layout
from contract.runtime import ISA_FLAGS, NUMPY, Runtime, cpu_features
from contract.timing import TimedPass, Timing, through_numpy
from contract.vocabulary import (
    ARCHITECTURE,
    FULL_DTYPES,
    Device,
    Dtype,
    Feature,
    Kind,
    features_of,
    in_order,
)
from spec.layer import LayerConfig
from spec.params import LayerParams
from spec.precision import Policy, check_policy_dtype
from spec.validation import LSTMInputError, cast


@dataclass(frozen=True)
class KnownFailure:
    """A documented non-conformance, with its upstream reason: the suite runs it as a strict xfail (one that starts
    passing fails the run), the benchmark refuses to time it. ``None`` in dtype or device means every one; it is
    narrowed to the cases that use all of ``features`` (where the upstream bug lives, e.g. empty_sequences) and,
    where a feature is too coarse, to the named ``cases``; and, for a failure that depends on the machine, to CPUs
    that lack every one of ``cpu_lacks`` (contract.runtime.ISA_FLAGS names: oneDNN refusing float16 on a CPU
    without "avx512_fp16", "avx_ne_convert" or "amx_fp16") or that have every one of ``cpu_has`` (a result measured
    on that machine kind only: XLA's half-type reductions, whose order follows the CPU's vector width), so that its
    strict xfail never turns red on the other machine kind."""

    reason: str
    kinds: tuple[Kind, ...] = (Kind.OUTPUTS, Kind.GRADIENTS)
    dtype: Dtype | None = None
    device: Device | None = None
    features: frozenset = frozenset()
    cases: tuple[str, ...] | None = None
    cpu_lacks: tuple[str, ...] = ()
    cpu_has: tuple[str, ...] = ()

    def __post_init__(self):
        for field_name in ("cpu_lacks", "cpu_has"):
            unknown = [flag for flag in getattr(self, field_name) if flag not in ISA_FLAGS]
            if unknown:
                raise ValueError(f"KnownFailure.{field_name}: unknown CPU feature {unknown[0]!r}; the features are "
                                 f"{', '.join(ISA_FLAGS)}")
        object.__setattr__(self, "kinds", tuple(Kind.parse(k, "KnownFailure.kinds") for k in self.kinds))
        object.__setattr__(self, "features", frozenset(Feature.parse(f, "KnownFailure.features") for f in self.features))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", Dtype.parse(self.dtype, "KnownFailure.dtype"))
        if self.device is not None:
            object.__setattr__(self, "device", Device.parse(self.device, "KnownFailure.device"))

    def applies(self, kind, dtype, device, features=frozenset(), case: str | None = None) -> bool:
        return (
            kind in self.kinds
            and self.dtype in (None, dtype)
            and self.device in (None, device)
            and self.features <= set(features)
            and (self.cases is None or case in self.cases)
            and (not self.cpu_lacks or (device == Device.CPU and not set(self.cpu_lacks) & set(cpu_features())))
            and (not self.cpu_has or (device == Device.CPU and set(self.cpu_has) <= set(cpu_features())))
        )


#: The entry points, which only Row defines.
_ENTRY_POINTS = ("refusal", "check", "policy", "availability", "environment", "forward", "backward", "timed_pass",
                 "quantized_parameters")
#: Converted and built parameters kept per row (the suite's cases are small; benchmarks reuse one set).
_BUILDS_KEPT = 16


def parameters_key(params: LayerParams) -> str:
    """A parameter set by value (structure, dtypes, shapes and bytes): every call of the suite gets its own copy of
    the same data, and a conversion made for one serves the next."""
    digest = hashlib.sha1(f"{len(params.cells)} {params.num_directions}".encode())
    for name, tensor in params.tensors().items():
        digest.update(f"{name} {tensor.dtype} {tensor.shape}".encode())
        digest.update(np.ascontiguousarray(tensor).tobytes())  # not .data: a memoryview refuses ml_dtypes
    return digest.hexdigest()


@dataclass(eq=False)
class Row:
    """Base class of rows: declare what it runs, name its runtime and layout, supply ``call``."""

    #: Stable: it names the matrix row and the test ids.
    id: str = ""
    description: str = ""
    runtime: Runtime = NUMPY
    layout: Layout = CANONICAL
    #: Every feature it runs (contract.vocabulary.Feature): the architecture ones must be ones its layout holds.
    features: frozenset = frozenset()
    dtypes: tuple[Dtype, ...] = FULL_DTYPES
    devices: tuple[Device, ...] = (Device.CPU,)
    gradients: bool = True
    #: The precision policy (spec.precision.Policy) it follows in each half type of ``dtypes``, by which the suite
    #: judges it there: {"bfloat16": "half-storage-float32-accumulation"}. One that depends on the machine (which kernel
    #: the framework takes) is the row's ``_policy`` hook.
    policies: Mapping[str, str] = field(default_factory=dict)
    #: Half types its timed passes run in without being judged there (no policy declared), beyond ``dtypes``.
    half_timing: tuple[Dtype, ...] = ()
    #: Why it does not do a dtype, a device, a feature (beyond its layout's reasons) or "gradients".
    reasons: Mapping[str, str] = field(default_factory=dict)
    #: Combinations of features it runs each alone but not together, each with the reason (Keras' Bidirectional cannot
    #: output the previous output at masked steps): a case that uses every feature of one is refused.
    combinations: Mapping[frozenset, str] = field(default_factory=dict)
    known_failures: tuple[KnownFailure, ...] = ()
    #: Whether its call unrolls the time loop into one graph (static_rnn, unroll=True): its graph, compile time and
    #: memory grow with T x layers x directions, which the benchmarks' shape sets bound (bench/matrix.py).
    unrolled: bool = False
    #: Environment variables it needs set before its framework is imported: it then runs in a process of its
    #: own that has them (contract.remote), wherever this process's differ.
    process_environment: Mapping[str, str] = field(default_factory=dict)
    #: Where it comes from (a module, module:object or a .py path): how a process of its own loads it again.
    origin: str = ""
    #: A dynamically quantized row's scheme (spec.quantized.Scheme): its float32 answers are judged against the
    #: integer reference of that scheme on the integers, scales and zero points its own model holds (``quantized``),
    #: and their distance from the float spec is reported beside (the quantization error).
    quantization: object = None
    #: A quantized row's float row (its id): the model it quantizes, which the benchmarks time beside it.
    float_source: str = ""
    #: Whether it compiles per shape (torch.compile, torch.export, XLA): seconds to minutes per case, so the suite runs
    #: it when asked (``--compiled``), not by default.
    compiled: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for entry in _ENTRY_POINTS:
            if entry in cls.__dict__:
                raise TypeError(f"{cls.__name__} overrides {entry}(): Row runs the contract's checks around it; "
                                "supply call() (or the hooks _outputs, _gradients, _availability, _environment) instead")

    def __post_init__(self):
        self._adopt_class_attributes()
        self.features = frozenset(Feature.parse(f, f"{self.id} features") for f in self.features)
        self.dtypes = tuple(Dtype.parse(d, f"{self.id} dtypes") for d in self.dtypes)
        self.devices = tuple(Device.parse(d, f"{self.id} devices") for d in self.devices)
        self.half_timing = tuple(Dtype.parse(d, f"{self.id} half_timing") for d in self.half_timing)
        self.policies = self._checked_policies(self.policies)
        self.combinations = {frozenset(Feature.parse(f, f"{self.id} combinations") for f in combination): reason
                             for combination, reason in self.combinations.items()}
        if self.quantization is not None and (self.dtypes != (Dtype.FLOAT32,) or self.gradients):
            raise ValueError(f"{self.id} declares a quantization scheme: its answers are float32 outputs judged against "
                             "the integer reference, so it declares dtypes=('float32',) and gradients=False")
        beyond = (self.features & ARCHITECTURE) - self.layout.holds
        if beyond:
            raise ValueError(f"{self.id} declares {in_order(beyond)}, which its layout {self.layout.name} cannot hold")
        self._available: dict[str, str | None] = {}
        self._builds: OrderedDict = OrderedDict()
        self._keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._functions: dict = {}

    def _adopt_class_attributes(self) -> None:
        """A subclass may declare with plain class attributes (``id = "mine/lstm"``) instead of as a dataclass: the
        generated __init__ would otherwise put Row's defaults over them."""
        for f in dataclasses.fields(Row):
            declared = inspect.getattr_static(type(self), f.name, dataclasses.MISSING)
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            if declared is dataclasses.MISSING or declared is default or isinstance(declared, dataclasses.Field):
                continue
            value = getattr(self, f.name)
            unchanged = value == default if f.default_factory is dataclasses.MISSING else value == f.default_factory()
            if unchanged:
                setattr(self, f.name, declared)

    def _checked_policies(self, policies: Mapping) -> dict[Dtype, Policy]:
        """Every half type of ``dtypes`` with a policy that holds it, and no policy for anything else."""
        checked = {}
        for dtype, policy in dict(policies).items():
            dtype = Dtype.parse(dtype, f"{self.id} policies")
            if not dtype.half:
                raise ValueError(f"{self.id} policies: {dtype} is judged by the spec's tolerances, not by a precision "
                                 "policy; policies name half types only")
            if dtype not in self.dtypes:
                raise ValueError(f"{self.id} policies: a policy for {dtype}, which it does not declare in dtypes")
            try:
                checked[dtype] = check_policy_dtype(policy, dtype)
            except ValueError as error:
                raise ValueError(f"{self.id} policies[{dtype.value!r}]: {error}") from None
        unstated = [d for d in self.dtypes if d.half and d not in checked and type(self)._policy is Row._policy]
        if unstated:
            raise ValueError(f"{self.id} declares {unstated[0]} without the precision policy it follows there: "
                             f"policies={{{unstated[0].value!r}: ...}}, one of {', '.join(p.value for p in Policy if unstated[0].value in p.dtypes)}")
        return checked

    # -- declarations --------------------------------------------------------------------------------------

    def refusal(self, *, dtype, device, layer: LayerConfig, lengths=None, mask=None, gradients: bool = False,
                timed: bool = False) -> str | None:
        """Why this row declares it does not run this case (dtype, device, features, gradients), or None. A half type
        it only times (``half_timing``) is run for a ``timed`` pass, and refused as unjudged otherwise."""
        dtype = Dtype(str(dtype))
        if dtype.half and dtype not in self.dtypes and dtype in self.half_timing and not timed:
            return self.reasons.get(dtype, f"{self.id} declares no precision policy for {dtype}: its {dtype} passes "
                                           "are timed by the benchmarks, not judged")
        checks = ((dtype, self.dtypes + self.half_timing if timed else self.dtypes, "dtype"),
                  (Device(str(device)), self.devices, "device"))
        for value, supported, what in checks:
            if value not in supported:
                return self.reasons.get(value, f"{self.id} does not support {what} {value}")
        if gradients and not self.gradients:
            return self.reasons.get("gradients", f"{self.id} computes no gradients")
        used = features_of(layer, lengths, mask)
        for feature in in_order(used):
            if feature in ARCHITECTURE and feature not in self.layout.holds:
                return self.layout.reasons[feature]
            if feature not in self.features:
                return self.reasons.get(feature, f"{self.id} does not support {feature.meaning}")
        for combination, reason in self.combinations.items():
            if set(combination) <= used:
                return reason
        return None

    def check(self, *, dtype, device, layer: LayerConfig, lengths=None, mask=None, gradients: bool = False,
              timed: bool = False) -> None:
        """Raise NotSupported with the reason if the row declares that it does not run this case."""
        reason = self.refusal(dtype=dtype, device=device, layer=layer, lengths=lengths, mask=mask, gradients=gradients,
                              timed=timed)
        if reason is not None:
            raise NotSupported(reason)

    def policy(self, dtype, device: str = Device.CPU, features=frozenset()) -> Policy | None:
        """The precision policy it follows in the half type ``dtype`` on ``device`` (None for float32 and float64), on a
        case that uses ``features``: what the suite judges its answers by there."""
        dtype = Dtype.parse(dtype, "dtype")
        return self._policy(dtype, Device.parse(device, "device"), frozenset(features)) if dtype.half else None

    def known_failure(self, kind, *, dtype, device, features=frozenset(), case: str | None = None) -> str | None:
        """The upstream reason if this kind of result on this case is a documented non-conformance."""
        for known in self.known_failures:
            if known.applies(kind, dtype, device, features, case):
                return known.reason
        return None

    # -- entry points ---------------------------------------------------------------------------------------

    def availability(self, device: str = Device.CPU) -> str | None:
        """None if the row can run on ``device`` here, else why not. Never raises; asked once per device."""
        if device not in self._available:
            try:
                self._available[device] = self._availability(device)
            except Exception as error:  # a broken framework is a reason, not a crash of the suite
                self._available[device] = f"checking availability failed: {type(error).__name__}: {error}"
        return self._available[device]

    def environment(self, device: str = Device.CPU) -> dict[str, object]:
        """Versions, device name, TF32 and thread settings: recorded beside every result. Never raises."""
        try:
            return dict(self._environment(device))
        except Exception as error:
            return {"environment() failed": f"{type(error).__name__}: {error}"}

    def forward(self, params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, layer: LayerConfig,
                lengths: np.ndarray | None = None, mask: np.ndarray | None = None, device: str = Device.CPU) -> Outputs:
        """y, h_T and c_T of the layer ``layer`` (spec/layer.py) on these inputs, checked: see the module docstring."""
        self._enter(params, x, h0, c0, layer, lengths, mask, device, None)
        answer = self._outputs(params, x, h0, c0, layer=layer, lengths=lengths, mask=mask, device=device)
        return checked_outputs(answer, params, layer, x)

    def backward(self, params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, cotangents: Cotangents, *,
                 layer: LayerConfig, lengths: np.ndarray | None = None, mask: np.ndarray | None = None,
                 device: str = Device.CPU) -> Gradients:
        """The gradients of <dy, y> + <dh_T, h_T> + <dc_T, c_T> by the row's own autodiff, checked."""
        self._enter(params, x, h0, c0, layer, lengths, mask, device, cotangents)
        answer = self._gradients(params, x, h0, c0, cotangents, layer=layer, lengths=lengths, mask=mask, device=device)
        mixed = self.policy(params.dtype.name, device) is Policy.MIXED  # float32 parameters: float32 gradients
        return checked_gradients(answer, params, x, parameters_dtype=np.float32 if mixed else None)

    def quantized_parameters(self, params: LayerParams, *, layer: LayerConfig, device: str = Device.CPU):
        """A quantized row's weights as its model holds them (spec.quantized.QuantizedLayer: integers, scales, zero
        points, read back from what ``build`` made of ``params``), for the integer reference."""
        if self.quantization is None:
            raise NotSupported(f"{self.id} is not a quantized row: it declares no quantization scheme")
        if (reason := self.availability(device)) is not None:
            raise Unavailable(reason)
        with self.runtime.on(device):
            self.runtime.prepare(device)
            return self.quantized(self.built_for(params, layer, device), params=params, layer=layer)

    def timed_pass(self, params: LayerParams, x, h0, c0, cotangents: Cotangents | None, *, layer: LayerConfig,
                   lengths=None, mask=None, timing: Timing) -> TimedPass:
        """A pass to time from NumPy inputs in ``timing.source_dtype``: the row's device-resident pass (inputs
        converted, and rounded to a half type, once), or through forward() and backward() on every run."""
        self.check(dtype=timing.dtype, device=timing.device, layer=layer, lengths=lengths, mask=mask, gradients=timing.gradients,
                   timed=True)
        self._enter(params, x, h0, c0, layer, lengths, mask, timing.device, cotangents if timing.gradients else None,
                    declared=False)
        timed = self._timed(params, x, h0, c0, cotangents, layer=layer, lengths=lengths, mask=mask, timing=timing)
        if timed is not None:
            return timed
        if timing.half:
            if timing.dtype not in self.dtypes:
                raise NotSupported(f"{self.id} declares {timing.dtype} but gives no device-resident pass that runs it")
            # Judged in the half type: the data rounded once, as the suite rounds it, then through NumPy as any pass
            # of a row with its own hooks.
            params, x, h0, c0 = params.astype(timing.dtype), *(cast(a, timing.dtype, n) for a, n in ((x, "x"), (h0, "h0"), (c0, "c0")))
            if cotangents is not None:
                cotangents = Cotangents(*(cast(a, timing.dtype, n) for a, n in zip(
                    (cotangents.dy, cotangents.dh_T, cotangents.dc_T), ("dy", "dh_T", "dc_T"))))
        options = dict(layer=layer, lengths=lengths, mask=mask, device=timing.device)
        return through_numpy(lambda: self.forward(params, x, h0, c0, **options),
                             lambda: self.backward(params, x, h0, c0, cotangents, **options), timing.gradients)

    def _enter(self, params, x, h0, c0, layer, lengths, mask, device, cotangents, *, declared: bool = True) -> None:
        """Steps 1 to 3."""
        if not isinstance(params, LayerParams):
            raise LSTMInputError("params", "wrong type", "spec.LayerParams", type(params).__name__)
        if declared:
            self.check(dtype=params.dtype.name, device=device, layer=layer, lengths=lengths, mask=mask,
                       gradients=cotangents is not None)
        if (reason := self.availability(device)) is not None:
            raise Unavailable(reason)
        check_inputs(params, x, h0, c0, layer=layer, lengths=lengths, mask=mask, cotangents=cotangents)

    # -- call-level hooks: the generic path, or a row's own --------------------------------------------------

    def _availability(self, device: str) -> str | None:
        return self.runtime.availability(device)

    def _policy(self, dtype: Dtype, device: Device, features: frozenset = frozenset()) -> Policy | None:
        """The policy declared for ``dtype``; a row whose framework picks its kernel by machine or by the case's
        features decides here."""
        return self.policies.get(dtype)

    def _environment(self, device: str) -> Mapping[str, object]:
        """The runtime's environment; where the row is unavailable, what of it can still be said, and why."""
        reason = self.availability(device)
        try:
            environment = dict(self.runtime.environment(device))
        except Exception:
            if reason is None:
                raise
            environment = {}
        return environment if reason is None else {**environment, "unavailable": reason}

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        """(y, h_T, c_T) as NumPy arrays (or an Outputs)."""
        runtime = self.runtime
        with runtime.on(device):
            runtime.prepare(device)
            built = self.built_for(params, layer, device)
            inputs, extra = self.inputs(x, h0, c0, lengths, mask, layer=layer, device=device)
            y, h_T, c_T = runtime.run(self._function(layer), built, *inputs, *extra)
            return tuple(self.outputs_to_numpy(y, h_T, c_T, layer=layer))

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device) -> Gradients:
        """The gradients by the runtime's autodiff of the same call, mapped back through the layout's transpose."""
        runtime = self.runtime
        with runtime.on(device):
            runtime.prepare(device)
            built = self.built_for(params, layer, device)
            inputs, extra = self.inputs(x, h0, c0, lengths, mask, layer=layer, device=device)
            cot = self.cotangents_to_device(cotangents, layer=layer, device=device)
            native, dx, dh0, dc0 = self.vjp(built, inputs, cot, extra, layer=layer)
            native = runtime.tree_to_numpy(native)
            dx, dh0, dc0 = self.input_gradients_to_numpy(dx, dh0, dc0, layer=layer)
        return Gradients(dx, dh0, dc0, self.layout.gradient(native, params, layer))

    def _timed(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, timing: Timing) -> TimedPass | None:
        """A device-resident pass through the generic path; None (timed through NumPy) for a row with its own hooks."""
        if type(self)._outputs is not Row._outputs:
            return None
        runtime, device = self.runtime, timing.device
        with runtime.on(device):
            runtime.prepare(device)
            built = self.built_for(params, layer, device, half=timing.dtype if timing.half else None)
            inputs, extra = self.inputs(x, h0, c0, lengths, mask, layer=layer, device=device)
            function = self._function(layer)
            if timing.half:
                inputs = tuple(runtime.cast(t, timing.dtype) for t in inputs)
            last = {}
            if timing.gradients:
                cot = self.cotangents_to_device(cotangents, layer=layer, device=device)
                if timing.half:
                    cot = tuple(runtime.cast(t, timing.dtype) for t in cot)

                def run():
                    with runtime.on(device):
                        _, dx, dh0, dc0 = self.vjp(built, inputs, cot, extra, layer=layer)
                        runtime.synchronize(device)
                    last.update(x=dx, h0=dh0, c0=dc0)

                def result():
                    dx, dh0, dc0 = self.input_gradients_to_numpy(last["x"], last["h0"], last["c0"], layer=layer)
                    return {"x": dx.astype(np.float64), "h0": dh0.astype(np.float64), "c0": dc0.astype(np.float64)}
            else:

                def run():
                    with runtime.on(device):
                        last["out"] = runtime.run(function, built, *inputs, *extra)
                        runtime.synchronize(device)

                def result():
                    y, _, _ = self.outputs_to_numpy(*last["out"], layer=layer)
                    return {"y": y.astype(np.float64)}

        return TimedPass(run, result, resident=runtime.resident(device))

    # -- the generic path's pieces ------------------------------------------------------------------------------

    def build(self, native: Mapping[str, object], *, params: LayerParams, layer: LayerConfig, device: str, half=None):
        """What ``call`` takes as its parameters, from the layout's native arrays (a flat or nested mapping): by default
        each on the device (rounded to ``half`` for a half-type timed pass), attributes as they are."""
        built = self.runtime.tree_to_device(native, device)
        return built if half is None else _cast_tree(self.runtime, built, native, half)

    def inputs(self, x, h0, c0, lengths, mask, *, layer: LayerConfig, device: str) -> tuple[tuple, tuple]:
        """((x, h0, c0), (lengths, mask)) as ``call`` takes them: by default every array on the device."""
        to = lambda a: None if a is None else self.runtime.to_device(a, device)  # noqa: E731
        return (to(x), to(h0), to(c0)), (to(lengths), to(mask))

    def cotangents_to_device(self, cotangents: Cotangents, *, layer: LayerConfig, device: str) -> tuple:
        return tuple(self.runtime.to_device(a, device) for a in (cotangents.dy, cotangents.dh_T, cotangents.dc_T))

    def outputs_to_numpy(self, y, h_T, c_T, *, layer: LayerConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.runtime.to_numpy(t) for t in (y, h_T, c_T))

    def input_gradients_to_numpy(self, dx, dh0, dc0, *, layer: LayerConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.runtime.to_numpy(t) for t in (dx, dh0, dc0))

    def quantized(self, built, *, params: LayerParams, layer: LayerConfig):
        """A quantized row's hook: spec.quantized.QuantizedLayer read from ``built`` (its model), never re-derived."""
        raise NotImplementedError(f"{type(self).__name__} declares a quantization scheme but supplies no quantized()")

    def call(self, built, x, h0, c0, lengths, mask, *, layer: LayerConfig):
        """The framework's own call: (y, h_T, c_T) as framework tensors."""
        raise NotImplementedError(f"{type(self).__name__} supplies no call()")

    def vjp(self, built, inputs: tuple, cotangents: tuple, extra: tuple, *, layer: LayerConfig):
        """The framework's gradients of ``call``: (the native parameters' gradients, dx, dh0, dc0). By default its
        runtime's autodiff; a row whose gradients come from elsewhere (an explicit gradient op) says so here, and
        its timed gradient pass follows."""
        return self.runtime.vjp(self._function(layer), built, inputs, cotangents, extra)

    def _function(self, layer: LayerConfig):
        """``call`` with the layer bound: one function object per layer, so that a compiling runtime keeps one
        compilation per shape."""
        if layer not in self._functions:
            self._functions[layer] = _Bound(self, layer)
        return self._functions[layer]

    def built_for(self, params: LayerParams, layer: LayerConfig, device: str, half=None):
        """``build`` of the layout's native parameters, kept per parameter values, layer, device (and half type)."""
        key = self._keys.get(params)
        if key is None:
            key = self._keys[params] = parameters_key(params)
        cache_key = (key, layer, str(device), half)
        if cache_key in self._builds:
            self._builds.move_to_end(cache_key)
            return self._builds[cache_key]
        built = self.build(self.layout.to_native(params, layer), params=params, layer=layer, device=device, half=half)
        self._builds[cache_key] = built
        while len(self._builds) > _BUILDS_KEPT:
            self._builds.popitem(last=False)
        return built


def _cast_tree(runtime: Runtime, built, native, half):
    """``built`` with every tensor that came from an array rounded to ``half``."""
    if isinstance(native, Mapping):
        return {name: _cast_tree(runtime, built[name], value, half) for name, value in native.items()}
    return runtime.cast(built, half) if isinstance(native, np.ndarray) else built


@dataclass(frozen=True, eq=False)
class _Bound:
    """A row's call with its layer bound (hashable by identity: a compiling runtime keys its cache by it)."""

    row: Row
    layer: LayerConfig

    def __call__(self, built, x, h0, c0, lengths=None, mask=None):
        return self.row.call(built, x, h0, c0, lengths, mask, layer=self.layer)


__all__ = ["KnownFailure", "Row", "parameters_key"]
