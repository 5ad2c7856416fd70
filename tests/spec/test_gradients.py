"""The hand-derived backward passes against finite differences, in float64, on every case: the cell's
(spec.lstm.backward, on the cell cases, run directly) and the layer's (spec.layer.backward over spec.lstm.backward,
on every case, the cell cases as one-layer data)."""

import pytest

from spec.cases import CASES, is_cell, make_case_data
from tests.spec.checks import (
    check_directional_derivative,
    check_gradients_by_finite_differences,
    check_layer_directional_derivative,
    check_layer_gradients_by_finite_differences,
)

# Every element of every gradient on the small cases (each size edge, each feature alone, then combined); the larger
# ones get the directional check, which every case gets too.
DIRECTIONAL_ONLY = {"medium", "medium-peephole", "long", "long-peephole", "medium-combined", "medium-torch"}
FULL_FD_CASES = [c for c in CASES if c.name not in DIRECTIONAL_ONLY]


def test_the_split_covers_every_case():
    assert {c.name for c in CASES} - {c.name for c in FULL_FD_CASES} == DIRECTIONAL_ONLY


@pytest.mark.parametrize("case", FULL_FD_CASES, ids=lambda c: c.name)
def test_every_gradient_element_matches_central_differences(case):
    data = make_case_data(case)
    if is_cell(case):
        check_gradients_by_finite_differences(data)
    check_layer_gradients_by_finite_differences(data)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_directional_derivative_matches_central_difference(case):
    data = make_case_data(case)
    if is_cell(case):
        check_directional_derivative(data)
    check_layer_directional_derivative(data)
