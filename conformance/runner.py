"""Judging one implementation on one case: the one path from an implementation's answer to a verdict.

:func:`judge` does, for every test, in this order:

1. the verdict's record (:class:`conformance.report.Result`) exists before anything runs, so that a
   skip, a failure, a crash or a time-out always leaves one (the controller reads it as data);
2. "unavailable" and declared "not supported" are skips with the implementation's own reasons;
   a documented non-conformance becomes a strict xfail;
3. the case's data and the spec's answer come from :func:`pristine`: computed once, before any
   implementation sees the data, and read-only; the implementation gets its own writable copy;
4. the call, under a time limit (:class:`conformance.isolation.deadline`), through the contract's
   entry points (backends/base.py), which check the inputs and the answer;
5. an implementation that changed any of its inputs fails ("modified its input x in place"), even
   when its answer is right;
6. every tensor against the spec, with the tolerance of the dtype; a failure says where, and which
   known mistakes reproduce it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

from backends.base import Config, Crashed, Implementation, NotSupported, ResultError, TimedOut, Unavailable
from conformance.compare import Comparison, compare, describe_index
from conformance.diagnose import diagnose_gradients, diagnose_outputs
from conformance.isolation import deadline
from conformance.report import Result
from conformance.tolerances import tolerance
from spec.cases import Case, CaseData, Reference, reference
from spec.cases import make_case_data
from spec.params import LSTMParams

RESULT = pytest.StashKey[Result]()
KNOWN = pytest.StashKey[str]()  # the upstream reason of a known non-conformance, for its "known" verdict
KINDS = ("outputs", "gradients")
#: A result's detail until the test has decided: a test that stops anywhere else is reported with its exception.
UNFINISHED = "the test did not finish"


def case_id(case: Case, base_seed: int) -> str:
    """A case's name in test ids and reports: ``small``, or ``small@seed3`` for another seed than its own."""
    return case.name if case.seed == base_seed else f"{case.name}@seed{case.seed}"


# ---------------------------------------------------------------------------
# The data: pristine, read-only, its reference computed first
# ---------------------------------------------------------------------------


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@lru_cache(maxsize=128)
def pristine(case: Case, dtype: str) -> tuple[CaseData, Reference]:
    """The case's data in ``dtype`` and the spec's float64 answer on it, both read-only, the answer computed
    before any implementation has seen the data."""
    data = make_case_data(case, dtype)
    expected = reference(data)
    for array in (*data.params.tensors().values(), *data.inputs().values(), *data.cotangents().values(),
                  *expected.outputs.values(), *expected.gradients.values()):
        _frozen(array)
    return data, expected


def private_copy(data: CaseData) -> CaseData:
    """Writable copies of everything an implementation receives: what it does to them reaches nothing else."""
    params = LSTMParams(**{k: v.copy() for k, v in data.params.tensors().items()})
    arrays = {k: v.copy() for k, v in {**data.inputs(), **data.cotangents()}.items()}
    return replace(data, params=params, **arrays)


def modified_inputs(given: CaseData, original: CaseData) -> str | None:
    """How the implementation changed what it was given, or None: the first tensor that differs and where."""
    pairs = [*zip(given.params.tensors().items(), original.params.tensors().values())]
    pairs += [*zip({**given.inputs(), **given.cotangents()}.items(), {**original.inputs(), **original.cotangents()}.values())]
    for (name, now), before in pairs:
        if not np.array_equal(now, before):
            index = tuple(int(k) for k in np.argwhere(~((now == before) | (np.isnan(now) & np.isnan(before))))[0])
            return (
                f"modified its input {name} in place: at {describe_index(name, index)} it now holds "
                f"{now[index]!r}, the suite gave {before[index]!r} (inputs are the caller's; copy before writing)"
            )
    return None


# ---------------------------------------------------------------------------
# A verdict
# ---------------------------------------------------------------------------


def new_result(implementation: Implementation, kind: str, run: Config, case_name: str) -> Result:
    """The record a test fills in; created before the test runs (see conftest.py)."""
    return Result(implementation.id, kind, run.dtype, run.device, case_name, status="FAIL", detail=UNFINISHED)


def fail(result: Result, context: str, message: str) -> None:
    """Record the FAIL (its first line as the detail) and fail the test with the whole message."""
    result.status, result.detail = "FAIL", message.splitlines()[0][:500]
    raise AssertionError(f"{context}: {message}")


def skip(result: Result, status: str, reason: str, *, declared: bool = False) -> None:
    result.status, result.detail, result.declared = status, reason, declared
    pytest.skip(f"{status}: {reason}")


def judge(request, implementation: Implementation, run: Config, case: Case, kind: str) -> None:
    """Run ``implementation`` on ``case`` and record the verdict (module docstring)."""
    result = request.node.stash[RESULT]
    gradients = kind == "gradients"
    if (reason := implementation.availability(run.device)) is not None:
        skip(result, "unavailable", reason)
    try:
        implementation.check(run, gradients=gradients)
    except NotSupported as error:
        skip(result, "not supported", str(error), declared=True)
    if (known := implementation.known_failure(kind, run)) is not None:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"known non-conformance: {known}"))
        request.node.stash[KNOWN] = known

    data, expected = pristine(case, run.dtype)
    given = private_copy(data)
    timeout = request.config.getoption("--call-timeout")
    what = f"{implementation.id} {'backward' if gradients else 'forward'}"
    context = f"{implementation.id} {run.id} {case.name}"
    try:
        with deadline(timeout, what):
            if gradients:
                got = implementation.backward(
                    given.params, given.x, given.h0, given.c0, given.cotangents(), forget_bias=case.forget_bias, config=run
                )
            else:
                got = implementation.forward(given.params, given.x, given.h0, given.c0, forget_bias=case.forget_bias, config=run).tensors()
    except NotSupported as error:
        skip(result, "not supported", str(error))
    except Unavailable as error:
        skip(result, "unavailable", str(error))
    except (ResultError, Crashed, TimedOut) as error:
        fail(result, context, str(error))
    except Exception as error:  # whatever the implementation raises is its failure, with its message
        fail(result, context, f"raised {type(error).__name__}: {error}")
    if (change := modified_inputs(given, data)) is not None:
        fail(result, context, change)

    want = expected.gradients if gradients else expected.outputs
    tol = tolerance(run.dtype, kind)
    comparisons = [compare(name, got[name], want[name], atol=tol.atol, rtol=tol.rtol) for name in want]
    finite = [c for c in comparisons if np.isfinite(c.worst_error)]
    if finite:
        result.worst_error = max(c.worst_error for c in finite)
        result.worst_ratio = max(c.worst_ratio for c in finite)
    failures = [c for c in comparisons if not c.ok]
    if not failures:
        result.status, result.detail = "pass", ""
        return
    if gradients:
        result.diagnosis = diagnose_gradients(data, got, want, run.dtype)
        forward_note = _forward_also_wrong(implementation, run, case, data, expected, timeout)
    else:
        result.diagnosis = diagnose_outputs(data, got, run.dtype)
        forward_note = None
    lines = [c.message() for c in failures]
    lines += [f"diagnosis: {d}" for d in result.diagnosis] or ["diagnosis: none of the known mistakes reproduces this result"]
    if forward_note:
        lines.append(forward_note)
    fail(result, context, "\n".join(lines))


def _forward_also_wrong(implementation, run, case, data, expected, timeout) -> str | None:
    """When gradients fail, whether the same case's outputs fail too: then the forward is the first thing to fix."""
    given = private_copy(data)
    try:
        with deadline(timeout, f"{implementation.id} forward"):
            outputs = implementation.forward(given.params, given.x, given.h0, given.c0, forget_bias=case.forget_bias, config=run)
    except Exception:  # NotSupported, or a failure its own outputs test reports
        return None
    tol = tolerance(run.dtype, "outputs")
    wrong = [c for c in (compare(n, v, expected.outputs[n], atol=tol.atol, rtol=tol.rtol) for n, v in outputs.tensors().items()) if not c.ok]
    if not wrong:
        return None
    worst = max(wrong, key=lambda c: c.worst_ratio)
    return (
        f"the forward is wrong too ({worst.name}: worst error {worst.worst_error:.3g} at {worst.where}): "
        "fix it first, the gradients of a wrong forward cannot match"
    )


__all__ = ["KINDS", "KNOWN", "RESULT", "UNFINISHED", "Comparison", "case_id", "judge", "modified_inputs", "new_result", "pristine", "private_copy"]
