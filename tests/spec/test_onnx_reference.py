"""The cell's forward pass (spec.lstm) against independent implementations from the onnx package: onnx.reference's
LSTM operator on every cell case, and onnx's own node cases (run through the layer, one node being one layer).
The layer's cases against onnx.reference are test_layer_references.py's."""

import numpy as np
import pytest

from spec.cases import CASES, is_cell, make_case_data
from tests.spec.checks import check_against_onnx_reference, check_onnx_node_case, onnx_case_scope, onnx_lstm_node_cases


@pytest.mark.parametrize("case", [c for c in CASES if is_cell(c)], ids=lambda c: c.name)
def test_forward_matches_onnx_reference_evaluator(case):
    check_against_onnx_reference(make_case_data(case))


# The node cases onnx 1.23 defines for LSTM, split by what the spec models: since the spec has the layer
# (spec/layer.py), reverse and bidirectional are in scope; only custom activations would not be.
IN_SCOPE = ("test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise")
DIRECTIONS = ("test_lstm_reverse", "test_lstm_bidirectional")


def test_every_onnx_lstm_node_case_is_classified():
    """A case added by a later onnx release must be looked at, not silently ignored."""
    cases = onnx_lstm_node_cases()
    assert set(cases) == set(IN_SCOPE) | set(DIRECTIONS), f"onnx's LSTM node cases changed: {sorted(cases)}"
    for name in (*IN_SCOPE, *DIRECTIONS):
        assert onnx_case_scope(cases[name]) is None, f"{name}: expected in scope, but {onnx_case_scope(cases[name])}"


@pytest.mark.parametrize("name", IN_SCOPE + DIRECTIONS)
def test_onnx_node_case(name):
    check_onnx_node_case(onnx_lstm_node_cases()[name])


def test_onnx_node_cases_are_weak_on_their_own():
    """Why the project's own cases exist: onnx's use one repeated value per weight tensor.

    Under such weights every gate sees the same pre-activation, so a gate
    permutation or an i/f peephole swap changes nothing; the meta-tests show
    it (test_mutants.py). This test pins the fact down.
    """
    for name in IN_SCOPE:
        case = onnx_lstm_node_cases()[name]
        feeds = dict(zip([i.name for i in case.model.graph.input], case.data_sets[0][0]))
        for tensor in ("W", "R", "P"):
            if tensor in feeds:
                assert np.unique(feeds[tensor]).size == 1, f"{name}: {tensor} is no longer constant"
