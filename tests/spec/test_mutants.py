"""Meta-tests: every check that proves the spec must fail when the spec is broken.

Each mutant is a mistake of the catalogue (conformance/mistakes.py) that a plain cell shows, planted into
``spec.lstm`` (its ``plant``). Each check is then run against it. The table below says which checks must catch
which mutants, and the test requires exactly that: a check that stops catching a mutant fails, and so does one
that catches a mutant it is documented to be blind to (for instance onnx's node cases, whose constant weights
cannot see a gate permutation), so the table stays true.
"""

from __future__ import annotations

import pytest

from conformance.mistakes import Pass, planted
from spec.cases import case_by_name, make_case_data
from tests.spec import test_properties
from tests.spec.checks import (
    assert_caught_as_documented,
    check_against_onnx_reference,
    check_directional_derivative,
    check_gradients_by_finite_differences,
    check_onnx_node_case,
    onnx_lstm_node_cases,
    property_on_cases,
)
from tests.spec.test_onnx_reference import IN_SCOPE

#: The catalogue's planted mistakes that a plain cell shows (the layer's: test_layer_mutants.py).
MUTANTS = tuple(mistake for mistake in planted() if mistake.needs.plain_cell)
ALL = {m.name for m in MUTANTS}
FORWARD = {m.name for m in MUTANTS if m.pass_ is Pass.FORWARD}

# A case that exercises every term: peepholes, a forget bias, several steps and rows.
META_CASE = "forget-bias-peephole"


def _node_cases():
    for name in IN_SCOPE:
        check_onnx_node_case(onnx_lstm_node_cases()[name])


# The cases every property is run on here (checks.property_on_cases says why not hypothesis' draws):
# peepholes or not, one step, one row, a forget bias, saturating gates, I != H.
PROPERTY_CASES = tuple(case_by_name(name) for name in (
    "small", "T1-peephole", "B1-peephole", "I-ne-H-peephole", "forget-bias-peephole", "saturating-peephole"))


def _property(body):
    return property_on_cases(test_properties.cases, body, PROPERTY_CASES)


CHECKS = {
    "finite-differences": lambda: check_gradients_by_finite_differences(make_case_data(case_by_name(META_CASE))),
    "directional": lambda: check_directional_derivative(make_case_data(case_by_name("medium-peephole"))),
    "onnx-reference": lambda: check_against_onnx_reference(make_case_data(case_by_name(META_CASE))),
    "onnx-node-cases": _node_cases,
    "property-gradients": _property(test_properties.property_gradients),
    "property-onnx-reference": _property(test_properties.property_onnx_reference),
}

#: Which mutants each check must catch (and, by omission, which it is documented not to).
CATCHES = {
    # A forward bug that the backward pass follows (the forget bias enters only
    # through the saved activations) leaves forward and backward consistent:
    # gradient checks cannot see it, the references can.
    "finite-differences": ALL - {"forget-bias-missing"},
    "directional": ALL - {"forget-bias-missing"},
    "property-gradients": ALL - {"forget-bias-missing"},
    # References check outputs only: every forward bug, no backward bug.
    "onnx-reference": FORWARD,
    "property-onnx-reference": FORWARD,
    # Constant weights make every gate alike, T=1 and zero forget bias hide the rest.
    "onnx-node-cases": {"o-peeks-c_prev", "h-without-tanh"},
}


def test_every_mutant_is_caught_by_some_check_and_every_check_catches_something():
    assert set().union(*CATCHES.values()) == ALL
    assert set(CATCHES) == set(CHECKS), f"checks without a CATCHES entry: {set(CHECKS) - set(CATCHES)}"
    assert all(CATCHES[check] for check in CHECKS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_check_against_mutant(check, mutant, monkeypatch):
    for patch in mutant.plant:
        monkeypatch.setattr(patch.target, patch.attribute, patch.replacement)
    assert_caught_as_documented(check, mutant.name, CHECKS[check], mutant.name in CATCHES[check])
