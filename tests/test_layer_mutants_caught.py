"""The suite's own sensitivity to the layer's mistakes: every layer mutant is caught, through the same --backend
path users use, and every failure it causes is diagnosed with its mistake."""

from __future__ import annotations

import pytest

from backends.base import Config, NotSupported
from conformance import known_layer_bugs
from conformance.mutants import IMPLEMENTATIONS, LAYER_MUTANTS, MUTANTS
from tests.suite import run_suite

#: The mistakes of the project's layer issue, each of which must have a mutant.
REQUIRED = {
    "reverse_outputs_in_processing_order", "directions_swapped", "layer_above_reads_forward_only",
    "final_states_direction_major", "projection_before_tanh", "projection_of_c", "padded_outputs_not_zeroed",
    "final_h_at_T_minus_1", "reverse_starts_at_T_minus_1", "masked_step_updates_state", "clips_swapped",
    "coupled_forget_from_forget_weights",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # float64 only: the mutants compute in whatever dtype they are given (tests/test_layer_diagnose.py covers float32).
    result = run_suite(tmp_path_factory.mktemp("layer-mutants"), "--backend", "conformance.mutants", "--dtype", "float64",
                       "-n", "auto", "-k", "test_layer")
    assert result.returncode == 1, "the suite must fail on the layer mutants:\n" + result.output
    return result.report


def results(report, implementation, kind=None, status=None):
    return [r for r in report["results"] if r["implementation"] == implementation
            and kind in (None, r["kind"]) and status in (None, r["status"])]


def test_the_layer_mutant_table():
    ids = [m.id for m in LAYER_MUTANTS]
    assert len(set(ids)) == len(ids) and all(i.startswith("mutant/layer-") for i in ids)
    assert REQUIRED <= {m.bug for m in LAYER_MUTANTS}
    assert {m.bug for m in LAYER_MUTANTS} <= set(known_layer_bugs.BUGS)
    assert [impl.id for impl in IMPLEMENTATIONS] == [m.id for m in MUTANTS] + ids


def test_layer_mutants_implement_the_layer_only():
    layer_ids = {m.id for m in LAYER_MUTANTS}
    for implementation in IMPLEMENTATIONS:
        if implementation.id in layer_ids:
            with pytest.raises(NotSupported, match="implements the layer only"):
                implementation.check(Config())
        else:
            assert implementation.layer_features is None  # a cell mutant: every layer case is "not supported"


@pytest.mark.parametrize("mutant", LAYER_MUTANTS, ids=lambda m: m.id)
def test_layer_mutant_is_caught_and_diagnosed(report, mutant):
    failures = results(report, mutant.id, status="FAIL")
    assert failures, f"{mutant.id} ({mutant.description}) passed every layer case"
    # Every failure names the mistake: a case it changes is a case it explains.
    for failure in failures:
        assert any(mutant.diagnosis in d for d in failure["diagnosis"]), (
            f"{mutant.id} on {failure['case']} ({failure['kind']}): expected a diagnosis with {mutant.diagnosis!r}, "
            f"got {failure['diagnosis']}"
        )
    # The passing cases are those the mistake does not change: it ran every case (it declares every feature).
    assert not results(report, mutant.id, status="not supported")


@pytest.mark.parametrize("mutant", [m for m in LAYER_MUTANTS if not m.backward_only], ids=lambda m: m.id)
def test_forward_mistakes_fail_outputs_and_gradients(report, mutant):
    assert results(report, mutant.id, "layer outputs", "FAIL")
    assert results(report, mutant.id, "layer gradients", "FAIL")


@pytest.mark.parametrize("mutant", [m for m in LAYER_MUTANTS if m.backward_only], ids=lambda m: m.id)
def test_backward_mistakes_pass_forward_and_fail_gradients(report, mutant):
    assert not results(report, mutant.id, "layer outputs", "FAIL")
    assert results(report, mutant.id, "layer gradients", "FAIL")


def test_cell_mutants_are_not_supported_on_layer_cases(report):
    for mutant in MUTANTS:
        verdicts = results(report, mutant.id)
        assert verdicts and all(r["status"] == "not supported" and r["declared"] for r in verdicts), mutant.id
