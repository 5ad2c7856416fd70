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
from backends.config import layer_features
from conformance.compare import Comparison, compare, describe_index
from conformance.diagnose import diagnose_gradients, diagnose_layer, diagnose_outputs
from conformance.isolation import deadline, user_interrupted
from conformance.report import Result
from conformance.tolerances import tolerance
from spec.cases import Case, CaseData, Reference, make_case_data, reference
from spec.layer_cases import LayerCase, LayerCaseData, make_layer_case_data
from spec.layer_cases import reference as layer_reference
from spec.params import LayerParams, LSTMParams

RESULT = pytest.StashKey[Result]()
KNOWN = pytest.StashKey[str]()  # the upstream reason of a known non-conformance, for its "known" verdict
KINDS = ("outputs", "gradients", "layer outputs", "layer gradients")
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


def named_arrays(data: CaseData | LayerCaseData) -> dict[str, np.ndarray]:
    """Everything an implementation receives, by name: every parameter tensor, the inputs, the cotangents
    (and a layer case's lengths or mask)."""
    named = {**data.params.tensors(), **data.inputs(), **data.cotangents()}
    for name in ("lengths", "mask"):
        if getattr(data, name, None) is not None:
            named[name] = getattr(data, name)
    return named


@lru_cache(maxsize=256)
def pristine(case: Case | LayerCase, dtype: str) -> tuple[CaseData | LayerCaseData, Reference]:
    """The case's data in ``dtype`` and the spec's float64 answer on it, both read-only, the answer computed
    before any implementation has seen the data."""
    if isinstance(case, LayerCase):
        data = make_layer_case_data(case, dtype)
        expected = layer_reference(data)
    else:
        data = make_case_data(case, dtype)
        expected = reference(data)
    for array in (*named_arrays(data).values(), *expected.outputs.values(), *expected.gradients.values()):
        _frozen(array)
    return data, expected


def private_copy(data: CaseData | LayerCaseData) -> CaseData | LayerCaseData:
    """Writable copies of everything an implementation receives: what it does to them reaches nothing else."""
    copies = {name: value.copy() for name, value in named_arrays(data).items()}
    if isinstance(data.params, LayerParams):
        params = data.params.with_tensors(copies)
    else:
        params = LSTMParams(**{k: copies[k] for k in data.params.tensors()})
    fields = {k: copies[k] for k in (*data.inputs(), *data.cotangents(), "lengths", "mask") if k in copies}
    return replace(data, params=params, **fields)


def modified_inputs(given: CaseData | LayerCaseData, original: CaseData | LayerCaseData) -> str | None:
    """How the implementation changed what it was given, or None: the first tensor that differs and where."""
    before_all = named_arrays(original)
    directions = getattr(original.params, "num_directions", None)  # a layer's states: index by cell
    for name, now in named_arrays(given).items():
        before = before_all[name]
        if not np.array_equal(now, before):
            same = now == before
            if np.issubdtype(now.dtype, np.floating):
                same |= np.isnan(now) & np.isnan(before)
            index = tuple(int(k) for k in np.argwhere(~same)[0])
            return (
                f"modified its input {name} in place: at {describe_index(name, index, directions)} it now holds "
                f"{now[index]!r}, the suite gave {before[index]!r} (inputs are the caller's; copy before writing)"
            )
    return None


# ---------------------------------------------------------------------------
# What a test asks of an implementation: the cell contract, or the layer contract
# ---------------------------------------------------------------------------


def _declared(implementation: Implementation, run: Config, case, data, gradients: bool) -> None:
    """Raise NotSupported if the implementation declares that it does not do this case."""
    if isinstance(case, LayerCase):
        implementation.check_layer(run, case.config, data.lengths, data.mask, gradients=gradients)
    else:
        implementation.check(run, gradients=gradients)


def _call(implementation: Implementation, run: Config, case, given, gradients: bool) -> dict[str, np.ndarray]:
    """The implementation's answer through the contract's entry points, as named tensors."""
    if isinstance(case, LayerCase):
        options = dict(layer=case.config, lengths=given.lengths, mask=given.mask, config=run)
        if gradients:
            return implementation.backward_layer(given.params, given.x, given.h0, given.c0, given.cotangents(), **options)
        return implementation.forward_layer(given.params, given.x, given.h0, given.c0, **options).tensors()
    if gradients:
        return implementation.backward(given.params, given.x, given.h0, given.c0, given.cotangents(), forget_bias=case.forget_bias, config=run)
    return implementation.forward(given.params, given.x, given.h0, given.c0, forget_bias=case.forget_bias, config=run).tensors()


def _diagnose(case, data, got, want, dtype: str, gradients: bool) -> list[str]:
    if isinstance(case, LayerCase):
        return diagnose_layer(data, got, want, dtype, gradients)
    return diagnose_gradients(data, got, want, dtype) if gradients else diagnose_outputs(data, got, dtype)


def _comparisons(case, got, want, kind: str, dtype: str) -> list[Comparison]:
    tol = tolerance(dtype, kind)
    directions = case.config.num_directions if isinstance(case, LayerCase) else None
    return [compare(name, got[name], want[name], atol=tol.atol, rtol=tol.rtol, num_directions=directions) for name in want]


# ---------------------------------------------------------------------------
# A verdict
# ---------------------------------------------------------------------------


def new_result(implementation: Implementation, kind: str, run: Config, case_name: str) -> Result:
    """The record a test fills in; created before the test runs (see conftest.py)."""
    return Result(implementation.id, kind, run.dtype, run.device, case_name, status="FAIL", detail=UNFINISHED)


class Verdict(AssertionError):
    """A FAIL the judge reached: its message is the whole verdict (what was compared, the worst error, where, the
    tolerance, the diagnosis), so the test report shows it alone unless --tb asks for the traceback."""


def fail(result: Result, context: str, message: str) -> None:
    """Record the FAIL (its first line as the detail) and fail the test with the whole message."""
    result.status, result.detail = "FAIL", message.splitlines()[0][:500]
    raise Verdict(f"{context}: {message}") from None


def raised(error: BaseException) -> str:
    """What an implementation raised, as a verdict's words."""
    return f"raised {type(error).__name__}: {error}"


def skip(result: Result, status: str, reason: str, *, declared: bool = False) -> None:
    result.status, result.detail, result.declared = status, reason, declared
    pytest.skip(f"{status}: {reason}")


def judge(request, implementation: Implementation, run: Config, case: Case | LayerCase, kind: str) -> None:
    """Run ``implementation`` on ``case`` and record the verdict (module docstring)."""
    result = request.node.stash[RESULT]
    gradients = kind.endswith("gradients")
    if (reason := implementation.availability(run.device)) is not None:
        skip(result, "unavailable", reason)
    data, expected = pristine(case, run.dtype)
    try:
        _declared(implementation, run, case, data, gradients)
    except NotSupported as error:
        skip(result, "not supported", str(error), declared=True)
    features = layer_features(case.config, data.lengths, data.mask) if isinstance(case, LayerCase) else ()
    if (known := implementation.known_failure(kind, run, features, case.name)) is not None:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"known non-conformance: {known}"))
        request.node.stash[KNOWN] = known

    given = private_copy(data)
    timeout = request.config.getoption("--call-timeout")
    context = f"{implementation.id} {run.id} {case.name}"
    try:
        with deadline(timeout, f"{implementation.id} {'backward' if gradients else 'forward'}"):
            got = _call(implementation, run, case, given, gradients)
    except NotSupported as error:
        skip(result, "not supported", str(error))
    except Unavailable as error:
        skip(result, "unavailable", str(error))
    except (ResultError, Crashed, TimedOut) as error:
        fail(result, context, str(error))
    except (KeyboardInterrupt, SystemExit) as error:
        # Raised inside the call by the implementation (sys.exit(), a KeyboardInterrupt of its own): its failure,
        # not the end of the run. A real Ctrl-C still ends the run.
        if isinstance(error, KeyboardInterrupt) and user_interrupted():
            raise
        fail(result, context, raised(error))
    except Exception as error:  # whatever the implementation raises is its failure, with its message
        fail(result, context, raised(error))
    if (change := modified_inputs(given, data)) is not None:
        fail(result, context, change)

    want = expected.gradients if gradients else expected.outputs
    comparisons = _comparisons(case, got, want, kind, run.dtype)
    finite = [c for c in comparisons if np.isfinite(c.worst_error)]
    if finite:
        result.worst_error = max(c.worst_error for c in finite)
        result.worst_ratio = max(c.worst_ratio for c in finite)
    failures = [c for c in comparisons if not c.ok]
    if not failures:
        result.status, result.detail = "pass", ""
        return
    result.diagnosis = _diagnose(case, data, got, want, run.dtype, gradients)
    lines = [c.message() for c in failures]
    lines += [f"diagnosis: {d}" for d in result.diagnosis] or ["diagnosis: none of the known mistakes reproduces this result"]
    if gradients and (note := _forward_also_wrong(implementation, run, case, data, expected, kind, timeout)):
        lines.append(note)
    fail(result, context, "\n".join(lines))


def _forward_also_wrong(implementation, run, case, data, expected, kind, timeout) -> str | None:
    """When gradients fail, whether the same case's outputs fail too: then the forward is the first thing to fix."""
    given = private_copy(data)
    try:
        with deadline(timeout, f"{implementation.id} forward"):
            outputs = _call(implementation, run, case, given, gradients=False)
    except KeyboardInterrupt:
        if user_interrupted():
            raise
        return None
    except (Exception, SystemExit):  # NotSupported, or a failure its own outputs test reports
        return None
    wrong = [c for c in _comparisons(case, outputs, expected.outputs, kind.replace("gradients", "outputs"), run.dtype) if not c.ok]
    if not wrong:
        return None
    worst = max(wrong, key=lambda c: c.worst_ratio)
    return (
        f"the forward is wrong too ({worst.name}: worst error {worst.worst_error:.3g} at {worst.where}): "
        "fix it first, the gradients of a wrong forward cannot match"
    )


__all__ = ["KINDS", "KNOWN", "RESULT", "UNFINISHED", "Comparison", "Verdict", "case_id", "judge", "modified_inputs", "new_result",
           "pristine", "private_copy"]
