"""Judging one implementation on one case: the one path from an implementation's answer to a verdict.

:func:`judge` does, for every test, in this order:

1. the verdict's record (:class:`conformance.report.Result`) exists before anything runs, so that a skip, a
   failure, a crash or a time-out always leaves one (the controller reads it as data);
2. "unavailable" and declared "not supported" are skips with the row's own reasons; a documented
   non-conformance becomes a strict xfail;
3. the case's data and the spec's answer come from :func:`pristine`: computed once, before any implementation
   sees the data, and read-only; the implementation gets its own writable copy;
4. the call, under a time limit (:class:`conformance.isolation.deadline`), through the row's entry points
   (contract/row.py), which check the inputs and the answer;
5. an implementation that changed any of its inputs fails ("modified its input x in place"), even when its
   answer is right;
6. every tensor against the spec, with the tolerance of the dtype and kind; a failure says where, and which
   known mistakes reproduce it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

from conformance.diagnose import diagnose
from conformance.isolation import deadline, user_interrupted
from conformance.report import Result, Status
from contract.answers import Cotangents
from contract.compare import Comparison, compare, describe_index
from contract.errors import Crashed, NotSupported, ResultError, TimedOut, Unavailable
from contract.half_bounds import HalfComparison, compare_half
from contract.quantization import against_integer_reference, integer_reference
from contract.row import Row
from contract.tolerances import tolerance
from contract.vocabulary import Dtype, Kind, features_of
from spec.cases import Case, CaseData, Reference, make_case_data, reference
from spec.precision import Policy
from spec.validation import LSTMInputError

RESULT = pytest.StashKey[Result]()
KNOWN = pytest.StashKey[str]()  # the upstream reason of a known non-conformance, for its "known" verdict
#: A result's detail until the test has decided: a test that stops anywhere else is reported with its exception.
UNFINISHED = "the test did not finish"


def case_id(case: Case, base_seed: int) -> str:
    """A case's name in test ids and reports: ``small``, or ``small@seed3`` for another seed than its own."""
    return case.name if case.seed == base_seed else f"{case.name}@seed{case.seed}"


# ---------------------------------------------------------------------------
# The data: pristine, read-only, its reference computed first
# ---------------------------------------------------------------------------


def named_arrays(data: CaseData) -> dict[str, np.ndarray]:
    """Everything an implementation receives, by name: every parameter tensor, the inputs, the cotangents, the
    lengths or the mask."""
    named = {**data.params.tensors(), **data.inputs(), **data.cotangents()}
    named.update({name: getattr(data, name) for name in ("lengths", "mask") if getattr(data, name) is not None})
    return named


@lru_cache(maxsize=256)
def pristine(case: Case, dtype: str) -> tuple[CaseData, Reference]:
    """The case's data in ``dtype`` and the spec's float64 answer on it, both read-only, the answer computed before
    any implementation has seen the data."""
    data = make_case_data(case, dtype)
    expected = reference(data)
    for array in (*named_arrays(data).values(), *expected.outputs.values(), *expected.gradients.values()):
        array.flags.writeable = False
    return data, expected


def private_copy(data: CaseData) -> CaseData:
    """Writable copies of everything an implementation receives: what it does to them reaches nothing else."""
    copies = {name: value.copy() for name, value in named_arrays(data).items()}
    fields = {k: copies[k] for k in (*data.inputs(), *data.cotangents(), "lengths", "mask") if k in copies}
    return replace(data, params=data.params.with_tensors(copies), **fields)


def modified_inputs(given: CaseData, original: CaseData) -> str | None:
    """How the implementation changed what it was given, or None: the first tensor that differs and where."""
    before_all = named_arrays(original)
    for name, now in named_arrays(given).items():
        before = before_all[name]
        if not np.array_equal(now, before):
            same = now == before
            if np.issubdtype(now.dtype, np.floating):
                same |= np.isnan(now) & np.isnan(before)
            index = tuple(int(k) for k in np.argwhere(~same)[0])
            where = describe_index(name, index, now.shape, original.case.D)
            return (f"modified its input {name} in place: at {where} it now holds {now[index]!r}, the suite gave "
                    f"{before[index]!r} (inputs are the caller's; copy before writing)")
    return None


def call(row: Row, kind: Kind, data: CaseData, device: str) -> dict[str, np.ndarray]:
    """The row's answer through its entry points, as named tensors."""
    options = dict(layer=data.layer, lengths=data.lengths, mask=data.mask, device=device)
    if kind == Kind.GRADIENTS:
        cotangents = Cotangents(data.dy, data.dh_T, data.dc_T)
        return row.backward(data.params, data.x, data.h0, data.c0, cotangents, **options).tensors()
    return row.forward(data.params, data.x, data.h0, data.c0, **options).tensors()


def comparisons(case: Case, got, want, kind: Kind, dtype: str, policy: Policy | None = None) -> list[Comparison | HalfComparison]:
    """Every tensor against the spec: by the dtype's tolerance, or in a half type by the bounds of ``policy``."""
    if Dtype(dtype).half:
        return [compare_half(name, got[name], want[name], half=str(dtype), policy=policy, case=case.name,
                             num_directions=case.D) for name in want]
    tol = tolerance(dtype, kind)
    return [compare(name, got[name], want[name], atol=tol.atol, rtol=tol.rtol, num_directions=case.D) for name in want]


# ---------------------------------------------------------------------------
# A verdict
# ---------------------------------------------------------------------------


def new_result(row: Row, kind: Kind, dtype: str, device: str, case_name: str) -> Result:
    """The record a test fills in; created before the test runs (see conftest.py)."""
    return Result(row.id, str(kind), str(dtype), str(device), case_name, status=Status.FAIL.value, detail=UNFINISHED)


class Verdict(AssertionError):
    """A FAIL the judge reached: its message is the whole verdict (what was compared, the worst error, where, the
    tolerance, the diagnosis), so the test report shows it alone unless --tb asks for the traceback."""


def fail(result: Result, context: str, message: str) -> None:
    """Record the FAIL (its first line as the detail) and fail the test with the whole message."""
    result.status, result.detail = Status.FAIL.value, message.splitlines()[0][:500]
    raise Verdict(f"{context}: {message}") from None


def skip(result: Result, status: Status, reason: str, *, declared: bool = False) -> None:
    result.status, result.detail, result.declared = status.value, reason, declared
    pytest.skip(f"{status.value}: {reason}")


def raised(error: BaseException) -> str:
    """What an implementation raised, as a verdict's words."""
    return f"raised {type(error).__name__}: {error}"


def judge(request, row: Row, kind: Kind, dtype: str, device: str, case: Case) -> None:
    """Run ``row`` on ``case`` and record the verdict (module docstring)."""
    result = request.node.stash[RESULT]
    gradients = kind == Kind.GRADIENTS
    if (reason := row.availability(device)) is not None:
        skip(result, Status.UNAVAILABLE, reason)
    data, expected = pristine(case, dtype)
    refusal = row.refusal(dtype=dtype, device=device, layer=case.layer, lengths=data.lengths, mask=data.mask, gradients=gradients)
    if refusal is not None:
        skip(result, Status.NOT_SUPPORTED, refusal, declared=True)
    features = features_of(case.layer, data.lengths, data.mask)
    if (known := row.known_failure(kind, dtype=dtype, device=device, features=features, case=case.name)) is not None:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"known non-conformance: {known}"))
        request.node.stash[KNOWN] = known

    given = private_copy(data)
    timeout = request.config.getoption("--call-timeout")
    context = f"{row.id} {dtype}-{device} {case.name}"
    try:
        with deadline(timeout, f"{row.id} {'backward' if gradients else 'forward'}"):
            got = call(row, kind, given, device)
    except NotSupported as error:
        skip(result, Status.NOT_SUPPORTED, str(error))
    except Unavailable as error:
        skip(result, Status.UNAVAILABLE, str(error))
    except (ResultError, Crashed, TimedOut) as error:
        fail(result, context, str(error))
    except (KeyboardInterrupt, SystemExit) as error:
        # Raised inside the call by the implementation (sys.exit(), a KeyboardInterrupt of its own): its failure, not
        # the end of the run. A real Ctrl-C still ends the run.
        if isinstance(error, KeyboardInterrupt) and user_interrupted():
            raise
        fail(result, context, raised(error))
    except Exception as error:  # whatever the implementation raises is its failure, with its message
        fail(result, context, raised(error))
    if (change := modified_inputs(given, data)) is not None:
        fail(result, context, change)

    if row.quantization is not None:
        return judge_quantized(result, row, context, case, data, expected, got, device)
    want = expected.gradients if gradients else expected.outputs
    policy = row.policy(dtype, device, features_of(case.layer, data.lengths, data.mask))
    result.policy = None if policy is None else policy.value
    compared = comparisons(case, got, want, kind, dtype, policy)
    finite = [c for c in compared if np.isfinite(c.worst_error)]
    if finite:
        result.worst_error = max(c.worst_error for c in finite)
        result.worst_ratio = max(c.worst_ratio for c in finite)
    failures = [c for c in compared if not c.ok]
    if not failures:
        result.status, result.detail = Status.PASS.value, ""
        return
    result.diagnosis = diagnose(data, got, want, dtype, kind, policy)
    lines = [c.message() for c in failures]
    lines += [f"diagnosis: {d}" for d in result.diagnosis] or ["diagnosis: none of the known mistakes reproduces this result"]
    if gradients and (note := forward_also_wrong(row, dtype, device, case, data, expected, timeout)):
        lines.append(note)
    fail(result, context, "\n".join(lines))


def judge_quantized(result: Result, row: Row, context: str, case: Case, data: CaseData, expected: Reference,
                    got: dict[str, np.ndarray], device: str) -> None:
    """A quantized row's verdict: its outputs against the integer reference of its scheme (spec/quantized.py) on the
    integers, scales and zero points its own model holds, which must quantize the case's weights; the distance from
    the float spec (the quantization error) recorded beside."""
    scheme = row.quantization
    result.policy = scheme.name
    try:
        run = integer_reference(row, data.params, data.x, data.h0, data.c0, layer=data.layer, lengths=data.lengths,
                                mask=data.mask, device=device, observed_y=got["y"])
    except LSTMInputError as error:
        fail(result, context, f"its model's quantized weights: {error}")
    except Exception as error:
        fail(result, context, f"reading its model's quantized weights {raised(error)}")
    result.step = run.step
    result.forced_steps = len(run.forced)
    result.quantization_error = max(float(np.abs(got[name].astype(np.float64) - expected.outputs[name]).max())
                                    for name in expected.outputs)
    compared = against_integer_reference(got, run, case.D)
    result.worst_error = max(c.worst_error for c in compared)
    result.worst_ratio = max(c.worst_ratio for c in compared)
    failures = [c for c in compared if not c.ok]
    if not failures:
        result.status, result.detail = Status.PASS.value, forced_note(run)
        return
    lines = [f"against the integer reference of {scheme.name} (dequantization step {run.step:.3g}): {c.message()}"
             for c in failures]
    if run.forced:
        lines.append(forced_note(run))
    if run.ambiguous:
        lines.append(f"(the reference could not follow the row on {run.ambiguous} activation(s) below the top layer "
                     "within float32 noise of a rounding boundary: their rounding is not observed)")
    fail(result, context, "\n".join(lines))


def forced_note(run) -> str:
    """What the reference took from the implementation (spec.quantized's forcing), or nothing."""
    if not run.forced:
        return ""
    worst = max(run.forced, key=lambda f: f.difference / f.step_size)
    return (f"the integer reference took the implementation's own h at {len(run.forced)} step(s) where float32 noise "
            f"quantized it apart ({sum(f.levels for f in run.forced)} activation(s) one level apart; at most "
            f"{worst.difference:.3g}, {worst.difference / worst.step_size:.2g} of the quantization step, cell "
            f"{worst.cell} step {worst.step})")


def forward_also_wrong(row: Row, dtype, device, case: Case, data: CaseData, expected: Reference, timeout) -> str | None:
    """When gradients fail, whether the same case's outputs fail too: then the forward is the first thing to fix."""
    try:
        with deadline(timeout, f"{row.id} forward"):
            outputs = call(row, Kind.OUTPUTS, private_copy(data), device)
    except KeyboardInterrupt:
        if user_interrupted():
            raise
        return None
    except (Exception, SystemExit):  # NotSupported, or a failure its own outputs test reports
        return None
    policy = row.policy(dtype, device, features_of(case.layer, data.lengths, data.mask))
    wrong = [c for c in comparisons(case, outputs, expected.outputs, Kind.OUTPUTS, dtype, policy) if not c.ok]
    if not wrong:
        return None
    worst = max(wrong, key=lambda c: c.worst_ratio)
    return (f"the forward is wrong too ({worst.name}: worst error {worst.worst_error:.3g} at {worst.where}): "
            "fix it first, the gradients of a wrong forward cannot match")


__all__ = ["KNOWN", "RESULT", "UNFINISHED", "Verdict", "case_id", "judge", "modified_inputs", "new_result", "pristine",
           "private_copy"]
