"""The layer's hand-derived backward pass (spec.layer.backward over spec.lstm.backward) against finite differences."""

import pytest

from spec.layer_cases import LAYER_CASES, make_layer_case_data
from tests.spec.checks import (
    check_layer_directional_derivative,
    check_layer_gradients_by_finite_differences,
)

# Every element of every gradient on the small cases (each feature alone, then combined); the larger ones
# get the directional check, which every case gets too.
DIRECTIONAL_ONLY = {"medium", "medium-torch"}
FULL_FD_CASES = [c for c in LAYER_CASES if c.name not in DIRECTIONAL_ONLY]


def test_the_split_covers_every_case():
    assert {c.name for c in LAYER_CASES} - {c.name for c in FULL_FD_CASES} == DIRECTIONAL_ONLY


@pytest.mark.parametrize("case", FULL_FD_CASES, ids=lambda c: c.name)
def test_every_gradient_element_matches_central_differences(case):
    check_layer_gradients_by_finite_differences(make_layer_case_data(case))


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_directional_derivative_matches_central_difference(case):
    check_layer_directional_derivative(make_layer_case_data(case))
