"""The suite's own sensitivity: every mutant is caught, through the same --backend path users use,
and the suite's diagnosis names its bug."""

from __future__ import annotations


import pytest

from conformance.mutants import MUTANTS
from tests.suite import run_suite

BACKWARD_ONLY = {"mutant/peepholes-dropped-from-dc", "mutant/bias-gradient-wrong-gate",
                 "mutant/dc-ignores-downstream", "mutant/last-step-missing-from-gradient"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # float64 only: the mutants compute in whatever dtype they are given, and their verdicts do not depend on it.
    result = run_suite(tmp_path_factory.mktemp("mutants"), "--backend", "conformance.mutants", "--dtype", "float64", "-n", "auto",
                       "-k", "not test_layer")  # the layer mutants: tests/test_layer_mutants_caught.py
    assert result.returncode == 1, "the suite must fail on the mutants:\n" + result.output
    return result.report


def failed(report, mutant_id, kind=None):
    return [r for r in report["results"] if r["implementation"] == mutant_id and r["status"] == "FAIL" and kind in (None, r["kind"])]


def test_the_mutant_table_has_every_bug_of_the_issue():
    ids = {m.id for m in MUTANTS}
    assert len(ids) == len(MUTANTS) == 17
    assert {f"mutant/gates-{a}-{b}-swapped" for a, b in ("if", "ig", "io", "fg", "fo", "go")} <= ids


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_mutant_is_caught_and_diagnosed(report, mutant):
    failures = failed(report, mutant.id)
    assert failures, f"{mutant.id} ({mutant.description}) passed the whole suite"
    diagnoses = {d for r in failures for d in r["diagnosis"]}
    assert any(mutant.diagnosis in d for d in diagnoses), f"{mutant.id}: expected a diagnosis with {mutant.diagnosis!r}, got {sorted(diagnoses)}"


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.id in BACKWARD_ONLY], ids=lambda m: m.id)
def test_backward_bugs_pass_forward_and_fail_gradients(report, mutant):
    assert not failed(report, mutant.id, "outputs")
    assert failed(report, mutant.id, "gradients")
