"""Running one implementation on one case and comparing with the spec: shared by the forward and gradient tests."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import pytest

from backends.base import Config, Implementation, NotSupported, Unavailable
from conformance.compare import Comparison, compare
from conformance.known_failures import known_failure
from conformance.tolerances import tolerance
from spec import lstm
from spec.cases import Case, CaseData, make_case_data


@lru_cache(maxsize=64)
def case_data(case: Case, dtype: str) -> CaseData:
    return make_case_data(case, dtype)


@lru_cache(maxsize=64)
def reference(case: Case, dtype: str):
    """The spec's forward outputs and gradients in float64 on the case's data in ``dtype`` (widened exactly)."""
    data = case_data(case, dtype)
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    params = data.params.astype(np.float64)
    fwd = lstm.forward(params, wide(data.x), wide(data.h0), wide(data.c0), forget_bias=case.forget_bias)
    grads = lstm.backward(fwd, wide(data.dh_seq), wide(data.dh_T), wide(data.dc_T))
    return {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors()


def prepare(request, implementation: Implementation, run: Config, kind: str) -> None:
    """Skip what cannot run here or is not supported (with the reason); mark known failures."""
    reason = implementation.availability(run.device)
    if reason is not None:
        pytest.skip(f"unavailable: {reason}")
    try:
        implementation.check(run, gradients=kind == "gradients")
    except NotSupported as error:
        pytest.skip(f"not supported: {error}")
    known = known_failure(implementation.id, kind, run.variant, run.dtype, run.device)
    if known is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"known non-conformance: {known}"))


def call(function, *args, **kwargs):
    """Call an implementation; what it finds out only at run time that it cannot do is 'not supported'."""
    try:
        return function(*args, **kwargs)
    except NotSupported as error:
        pytest.skip(f"not supported: {error}")
    except Unavailable as error:
        pytest.skip(f"unavailable: {error}")


def compare_all(kind: str, got: dict, expected: dict, dtype: str) -> list[Comparison]:
    tol = tolerance(dtype, kind)
    missing = sorted(set(expected) - set(got))
    if missing:
        raise AssertionError(f"{kind}: the implementation returned no {', '.join(missing)} (returned {sorted(got)})")
    return [compare(name, got[name], expected[name], atol=tol.atol, rtol=tol.rtol) for name in expected]


COMPARISONS = pytest.StashKey[list]()
DIAGNOSES = pytest.StashKey[list]()


def assert_all_close(request, comparisons: list[Comparison], context: str, diagnose: Callable[[], list[str]] | None = None) -> None:
    """Record the comparisons on the test (for the matrix), then fail with every tensor that is out of
    tolerance and the known mistakes, if any, that reproduce the result."""
    request.node.stash[COMPARISONS] = comparisons
    failures = [c for c in comparisons if not c.ok]
    if not failures:
        return
    diagnoses = diagnose() if diagnose is not None else []
    request.node.stash[DIAGNOSES] = diagnoses
    lines = [c.message(context) for c in failures]
    lines += [f"diagnosis: {d}" for d in diagnoses] or ["diagnosis: none of the known mistakes reproduces this result"]
    raise AssertionError("\n".join(lines))
