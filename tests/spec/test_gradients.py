"""The hand-derived backward pass against finite differences, in float64."""

import pytest

from spec.cases import CASES, make_case_data
from tests.spec.checks import check_directional_derivative, check_gradients_by_finite_differences

# Every element of every gradient: affordable on all but the two largest cases.
FULL_FD_CASES = [c for c in CASES if c.T * c.B * (c.I + c.H) + 4 * c.H * (c.I + c.H) <= 2000]
DIRECTIONAL_CASES = [c for c in CASES if c not in FULL_FD_CASES]


def test_case_split_covers_every_case():
    assert {c.name for c in FULL_FD_CASES} | {c.name for c in DIRECTIONAL_CASES} == {c.name for c in CASES}
    assert {"medium", "long", "medium-peephole", "long-peephole"} == {c.name for c in DIRECTIONAL_CASES}


@pytest.mark.parametrize("case", FULL_FD_CASES, ids=lambda c: c.name)
def test_every_gradient_element_matches_central_differences(case):
    check_gradients_by_finite_differences(make_case_data(case))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_directional_derivative_matches_central_difference(case):
    check_directional_derivative(make_case_data(case))
