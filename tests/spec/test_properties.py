"""Properties of the cell's spec (spec.lstm) over random shapes, seeds and variants (hypothesis): cell cases, one
forward layer with or without peepholes and any forget bias, run through spec.lstm directly (checks.one_cell)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from contract.compare import assert_close
from spec import lstm
from spec.cases import Case, make_case_data
from spec.layer import LayerConfig
from spec.params import GATES, LSTMParams
from tests.spec.checks import check_against_onnx_reference, check_directional_derivative, one_cell, run_spec

#: Cell cases (the cell table's streams, as its own cases).
cases = st.builds(
    Case,
    name=st.just("hypothesis"),
    T=st.integers(1, 8),
    B=st.integers(1, 4),
    I=st.integers(1, 6),
    H=st.integers(1, 6),
    layer=st.builds(LayerConfig, peephole=st.booleans(), forget_bias=st.one_of(st.just(0.0), st.just(1.0), st.floats(-3, 3))),
    seed=st.integers(0, 2**32 - 1),
    weight_scale=st.floats(0.1, 8.0),
    cell_streams=st.just(True),
)


def property_gradients(case: Case) -> None:
    check_directional_derivative(make_case_data(case), directions=1)


def property_onnx_reference(case: Case) -> None:
    check_against_onnx_reference(make_case_data(case))


@given(cases)
def test_gradients_match_finite_differences(case):
    property_gradients(case)


@given(cases)
def test_forward_matches_onnx_reference(case):
    property_onnx_reference(case)


@given(cases, st.data())
def test_splitting_the_sequence_changes_nothing(case, data):
    """Running x[:k] and then x[k:] from the state reached equals running x at once."""
    d = one_cell(make_case_data(case))
    k = data.draw(st.integers(1, case.T), label="k")
    whole = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=d.forget_bias)
    first = lstm.forward(d.params, d.x[:k], d.h0, d.c0, forget_bias=d.forget_bias)
    if k < case.T:
        rest = lstm.forward(d.params, d.x[k:], first.h_T, first.c_T, forget_bias=d.forget_bias)
        h_seq, h_T, c_T = np.concatenate([first.h_seq, rest.h_seq]), rest.h_T, rest.c_T
    else:
        h_seq, h_T, c_T = first.h_seq, first.h_T, first.c_T
    # Different matrix-product shapes may round differently: a few ulps, not more.
    for name, got, want in (("h_seq", h_seq, whole.h_seq), ("h_T", h_T, whole.h_T), ("c_T", c_T, whole.c_T)):
        assert_close(name, got, want, atol=1e-14, rtol=1e-14, context=f"split at k={k}")


@given(cases, st.data())
def test_batch_rows_are_independent(case, data):
    d = one_cell(make_case_data(case))
    row = data.draw(st.integers(0, case.B - 1), label="row")
    whole = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=d.forget_bias)
    alone = lstm.forward(
        d.params, d.x[:, row : row + 1].copy(), d.h0[row : row + 1].copy(), d.c0[row : row + 1].copy(), forget_bias=d.forget_bias
    )
    assert_close("h_seq", alone.h_seq[:, 0], whole.h_seq[:, row], atol=1e-14, rtol=1e-14, context=f"row {row} alone")
    assert_close("c_T", alone.c_T[0], whole.c_T[row], atol=1e-14, rtol=1e-14, context=f"row {row} alone")


@given(cases)
def test_zero_peepholes_are_the_standard_lstm(case):
    d = one_cell(make_case_data(case))
    standard = d.params.without_peepholes()
    zero = LSTMParams(standard.W, standard.U, standard.b, np.zeros((3, case.H)))
    a = lstm.forward(standard, d.x, d.h0, d.c0, forget_bias=d.forget_bias)
    b = lstm.forward(zero, d.x, d.h0, d.c0, forget_bias=d.forget_bias)
    assert np.array_equal(a.h_seq, b.h_seq) and np.array_equal(a.c_T, b.c_T)
    ga = lstm.backward(a, d.dh_seq, d.dh_T, d.dc_T)
    gb = lstm.backward(b, d.dh_seq, d.dh_T, d.dc_T)
    for name, value in ga.tensors().items():
        assert_close(f"grad {name}", gb.tensors()[name], value, atol=1e-15, rtol=1e-15, context="p = 0 vs no peepholes")


@given(cases)
def test_forget_bias_is_a_shift_of_b_f(case):
    d = one_cell(make_case_data(case))
    shifted_b = d.params.b.copy()
    shifted_b[GATES.index("f")] += d.forget_bias
    folded = LSTMParams(d.params.W, d.params.U, shifted_b, d.params.p)
    a = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=d.forget_bias)
    b = lstm.forward(folded, d.x, d.h0, d.c0, forget_bias=0.0)
    # (z + b_f) + forget_bias against z + (b_f + forget_bias): one rounding apart per step.
    assert_close("h_seq", a.h_seq, b.h_seq, atol=1e-13, rtol=1e-13, context="forget_bias folded into b_f")


@given(cases)
def test_outputs_are_bounded_and_gates_are_probabilities(case):
    fwd, grads = run_spec(make_case_data(case))
    assert np.all(np.abs(fwd.h_seq) <= 1.0)
    assert np.all((fwd.gates[[0, 1, 3]] >= 0.0) & (fwd.gates[[0, 1, 3]] <= 1.0))
    assert np.all(np.abs(fwd.gates[2]) <= 1.0)
    assert all(np.isfinite(t).all() for t in grads.tensors().values())


@given(cases)
def test_float32_computes_in_float32_and_agrees_with_float64(case):
    d64 = make_case_data(case, np.float64)
    d32 = make_case_data(case, np.float32)  # run_spec runs each one's cell
    f64, g64 = run_spec(d64)
    f32, g32 = run_spec(d32)
    assert f32.dtype == np.float32 and f32.h_seq.dtype == np.float32 and g32.dtype == np.float32
    assert all(t.dtype == np.float32 for t in g32.tensors().values())
    # The float32 data is the float64 data rounded: the two runs differ by float32 rounding,
    # a few eps32 per step through a contractive recurrence (eps32 = 1.2e-7).
    assert_close("h_seq", f32.h_seq, f64.h_seq, atol=5e-5, rtol=5e-5, context="float32 vs float64")
