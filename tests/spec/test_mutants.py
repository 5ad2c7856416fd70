"""Meta-tests: every check that proves the spec must fail when the spec is broken.

Each mutant plants one bug seen in real LSTM code into ``spec.lstm``. Each
check is then run against it. The table below says which checks must catch
which mutants, and the test requires exactly that: a check that stops
catching a mutant fails, and so does one that catches a mutant it is
documented to be blind to (for instance onnx's node cases, whose constant
weights cannot see a gate permutation), so the table stays true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from spec import lstm
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

_step, _hidden = lstm.step, lstm.hidden
_output_gate_backward, _cell_backward = lstm.output_gate_backward, lstm.cell_backward
_peeking_gate_backward = lstm.peeking_gate_backward


def _output_gate_peeks_at_c_prev(z, c_prev, p, forget_bias, c, tanh_c, h):
    p_i, p_f, p_o = (None, None, None) if p is None else p
    i = lstm.peeking_gate(z[0], p_i, c_prev)
    f = lstm.peeking_gate(z[1], p_f, c_prev, forget_bias)
    g = lstm.candidate(z[2])
    lstm.cell(f, c_prev, i, g, out=c)
    o = lstm.output_gate(z[3], p_o, c_prev)  # the bug: c_{t-1} instead of c_t
    lstm.hidden(o, c, tanh_c, out=h)


def _gates_f_and_g_swapped(z, c_prev, p, forget_bias, c, tanh_c, h):
    z[[1, 2]] = z[[2, 1]]
    _step(z, c_prev, p, forget_bias, c, tanh_c, h)


def _peepholes_i_and_f_swapped(z, c_prev, p, forget_bias, c, tanh_c, h):
    _step(z, c_prev, None if p is None else p[[1, 0, 2]], forget_bias, c, tanh_c, h)


def _forget_bias_dropped(z, c_prev, p, forget_bias, c, tanh_c, h):
    _step(z, c_prev, p, 0.0, c, tanh_c, h)


def _h_without_tanh(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    return np.multiply(o, c, out=out)


def _p_o_dropped_from_dc(do, o, p_o, c):
    dz, _, dp = _output_gate_backward(do, o, p_o, c)
    return dz, 0.0, dp


def _peepholes_dropped_from_dc(d_gate, gate, p_k, c_peek):
    dz, _, dp = _peeking_gate_backward(d_gate, gate, p_k, c_peek)
    return dz, 0.0, dp


def _dc_prev_ignores_f(dc, f, c_prev, i, g):
    df, _, di, dg = _cell_backward(dc, f, c_prev, i, g)
    return df, dc, di, dg


def _tanh_derivative_wrong(dg, g):
    return dg * (1.0 - g)


@dataclass(frozen=True)
class Mutant:
    name: str
    function: str  # the function of spec.lstm it replaces
    replacement: Callable
    pass_: str  # "forward" or "backward": which pass the bug is in


MUTANTS = (
    Mutant("o-peeks-c_prev", "step", _output_gate_peeks_at_c_prev, "forward"),
    Mutant("gates-f-g-swapped", "step", _gates_f_and_g_swapped, "forward"),
    Mutant("peepholes-i-f-swapped", "step", _peepholes_i_and_f_swapped, "forward"),
    Mutant("forget-bias-dropped", "step", _forget_bias_dropped, "forward"),
    Mutant("h-without-tanh", "hidden", _h_without_tanh, "forward"),
    Mutant("p_o-dropped-from-dc_t", "output_gate_backward", _p_o_dropped_from_dc, "backward"),
    Mutant("peepholes-dropped-from-dc", "peeking_gate_backward", _peepholes_dropped_from_dc, "backward"),
    Mutant("dc_prev-ignores-f", "cell_backward", _dc_prev_ignores_f, "backward"),
    Mutant("tanh-derivative-wrong", "candidate_backward", _tanh_derivative_wrong, "backward"),
)
ALL = {m.name for m in MUTANTS}
FORWARD = {m.name for m in MUTANTS if m.pass_ == "forward"}

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
    "finite-differences": ALL - {"forget-bias-dropped"},
    "directional": ALL - {"forget-bias-dropped"},
    "property-gradients": ALL - {"forget-bias-dropped"},
    # References check outputs only: every forward bug, no backward bug.
    "onnx-reference": FORWARD,
    "property-onnx-reference": FORWARD,
    # Constant weights make every gate alike, T=1 and zero forget bias hide the rest.
    "onnx-node-cases": {"o-peeks-c_prev", "h-without-tanh"},
}


def test_every_mutant_is_caught_by_some_check_and_every_check_catches_something():
    assert set().union(*CATCHES.values()) == ALL
    assert all(CATCHES[check] for check in CHECKS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_check_against_mutant(check, mutant, monkeypatch):
    monkeypatch.setattr(lstm, mutant.function, mutant.replacement)
    assert_caught_as_documented(check, mutant.name, CHECKS[check], mutant.name in CATCHES[check])
