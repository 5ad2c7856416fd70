"""The comparison helper behind every check's failure message."""

from __future__ import annotations

import numpy as np
import pytest

from contract.compare import assert_close, compare, describe_index


def test_equal_tensors_pass_with_zero_error():
    a = np.arange(24.0).reshape(2, 3, 4)
    result = compare("y", a.copy(), a, atol=0, rtol=0)
    assert result.ok and result.worst_error == 0 and result.worst_ratio == 0


def test_worst_element_is_found_and_located_in_lstm_terms():
    expected = np.zeros((5, 3, 4))
    got = expected.copy()
    got[3, 1, 2] = 1e-3
    got[0, 0, 0] = 1e-4
    result = compare("y", got, expected, atol=1e-6, rtol=0)
    assert not result.ok
    assert result.index == (3, 1, 2)
    assert result.worst_error == pytest.approx(1e-3)
    assert result.worst_ratio == pytest.approx(1000)
    message = result.message("case-x")
    for fragment in ("case-x", "y", "step 3, batch row 1, unit 2", "got 0.001", "expected 0", "1000x", "atol 1e-06"):
        assert fragment in message, (fragment, message)


def test_worst_is_measured_against_the_tolerance_not_in_absolute_terms():
    expected = np.array([100.0, 0.001])
    got = np.array([100.0 + 1e-3, 0.001 + 1e-4])  # larger absolute error, but inside rtol
    result = compare("b", got.reshape(1, 2).repeat(4, 0), expected.reshape(1, 2).repeat(4, 0), atol=1e-6, rtol=1e-4)
    assert result.index[1] == 1


def test_gates_and_peepholes_are_named():
    assert describe_index("W", (1, 2, 0)) == "gate f, unit 2, input 0"
    assert describe_index("grad U", (3, 0, 1)) == "gate o, unit 0, from unit 1"
    assert describe_index("dp", (1, 4)) == "peephole f, unit 4"
    assert describe_index("b", (2, 0)) == "gate g, unit 0"
    assert describe_index("unknown", (1, 2)) == "index (1, 2)"
    assert describe_index("layer 1 direction 0 W", (0, 1, 2)) == "gate i, unit 1, input 2"
    assert describe_index("grad_layer0.forward.p", (2, 3)) == "peephole o, unit 3"


def test_cells_and_directions_are_named_in_a_layers_tensors():
    # One cell: no cell part; one direction: a feature is a unit.
    assert describe_index("h_T", (0, 2, 1), shape=(1, 3, 4)) == "batch row 2, unit 1"
    assert describe_index("h_T", (2, 1)) == "batch row 2, unit 1"  # the cell contract's (B, H)
    assert describe_index("y", (4, 0, 3), shape=(5, 2, 4)) == "step 4, batch row 0, unit 3"
    # Cells l * D + d of a two-layer bidirectional stack; y's features are both directions' units.
    assert describe_index("c0", (3, 0, 1), shape=(4, 2, 5), num_directions=2) == "layer 1 direction 1, batch row 0, unit 1"
    assert describe_index("dy", (0, 1, 6), shape=(3, 2, 8), num_directions=2) == "step 0, batch row 1, direction 1, unit 2"


@pytest.mark.parametrize(
    "got, fragment",
    [
        (np.zeros((2, 3)), "wrong shape"),
        ([[0.0]], "not an array"),
        (np.zeros((3, 2), dtype=np.int64), "wrong dtype"),
    ],
)
def test_uncomparable_results_fail_with_the_reason(got, fragment):
    result = compare("h_T", got, np.zeros((3, 2)), atol=1, rtol=1)
    assert not result.ok and fragment in result.message()


def test_non_finite_results_fail_however_loose_the_tolerance():
    got = np.array([[0.0, np.nan]])
    result = compare("h_T", got, np.zeros((1, 2)), atol=1e9, rtol=1e9)
    assert not result.ok and result.index == (0, 1)


def test_zero_tolerance_means_exact():
    assert not compare("c_T", np.array([[1.0 + 2**-52]]), np.array([[1.0]]), atol=0, rtol=0).ok


def test_assert_close_raises_with_the_message_and_returns_the_comparison():
    with pytest.raises(AssertionError, match=r"h_T: worst error 0.5 at batch row 0, unit 1"):
        assert_close("h_T", np.array([[0.0, 0.5]]), np.zeros((1, 2)), atol=0.1, rtol=0)
    assert assert_close("h_T", np.zeros((1, 2)), np.zeros((1, 2)), atol=0.1, rtol=0).ok
