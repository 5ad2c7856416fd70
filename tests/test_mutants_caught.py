"""The suite's own sensitivity: every mutant (a mistake of the catalogue, conformance/mistakes.py) is caught through
the same --backend path users use, and every failure it causes is diagnosed as its mistake, in the catalogue's
words. One run of the suite judges every mutant."""

from __future__ import annotations

import pytest

from conformance.mistakes import BACKWARD, FORWARD
from conformance.mutants import MUTANTS, ROWS, mutant_id
from spec.cases import CASES_BY_NAME, is_cell
from tests.suite import run_suite

#: The mistakes of the project's issues, each of which must have a mutant: every swap of two gates, and the layer's.
REQUIRED = {
    *(f"gates-{a}-{b}-swapped" for a, b in ("if", "ig", "io", "fg", "fo", "go")),
    "forget-bias-missing", "h-without-tanh", "o-peeks-c_prev", "reverse-outputs-in-processing-order",
    "directions-swapped", "layer-above-reads-forward-only", "final-states-direction-major", "projection-before-tanh",
    "projection-of-c", "padded-outputs-not-zeroed", "final-h-at-T-1", "reverse-starts-at-T-1",
    "masked-step-updates-state", "clips-swapped", "coupled-forget-from-forget-weights",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # float64 only: the mutants compute in whatever dtype they are given (tests/test_diagnose.py covers float32).
    result = run_suite(tmp_path_factory.mktemp("mutants"), "--backend", "conformance.mutants", "--dtype", "float64",
                       "-n", "auto")
    assert result.returncode == 1, "the suite must fail on the mutants:\n" + result.output
    return result.report


def results(report, mistake, kind=None, status=None):
    return [r for r in report["results"] if r["implementation"] == mutant_id(mistake)
            and kind in (None, r["kind"]) and status in (None, r["status"])]


def test_the_mutants_are_the_catalogues():
    assert [row.id for row in ROWS] == [f"mutant/{m.name}" for m in MUTANTS]
    assert REQUIRED <= {m.name for m in MUTANTS}


@pytest.mark.parametrize("mistake", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught_and_diagnosed(report, mistake):
    failures = results(report, mistake, status="FAIL")
    assert failures, f"{mutant_id(mistake)} ({mistake.description}) passed the whole suite"
    # Every failure names the mistake: a case it changes is a case it explains.
    phrase = f"matches the spec if {mistake.description}"
    for failure in failures:
        assert any(d.startswith(phrase) for d in failure["diagnosis"]), (
            f"{mutant_id(mistake)} on {failure['case']} ({failure['kind']}): expected a diagnosis starting {phrase!r}, "
            f"got {failure['diagnosis']}"
        )


@pytest.mark.parametrize("mistake", MUTANTS, ids=lambda m: m.name)
def test_a_mutant_fails_in_the_pass_of_its_mistake(report, mistake):
    """A forward mistake fails outputs and gradients; a backward one passes every forward test."""
    assert results(report, mistake, "gradients", "FAIL")
    if mistake.pass_ is FORWARD:
        assert results(report, mistake, "outputs", "FAIL")
    else:
        assert mistake.pass_ is BACKWARD and not results(report, mistake, "outputs", "FAIL")


@pytest.mark.parametrize("mistake", MUTANTS, ids=lambda m: m.name)
def test_a_mutant_runs_every_case_its_mistake_is_about(report, mistake):
    """A mistake a plain cell shows is a mutant of the plain cell: every other case is 'not supported', declared.
    The others declare every feature and run every case."""
    for result in results(report, mistake):
        plain = is_cell(CASES_BY_NAME[result["case"]])
        if mistake.needs.plain_cell and not plain:
            assert result["status"] == "not supported" and result["declared"], result
        else:
            assert result["status"] in ("pass", "FAIL"), result
