"""The spec's sigmoid and tanh: within a few ulp of exact values, with no overflow anywhere.

References come from Python's decimal module at 60 significant digits
(Decimal.exp is correctly rounded), so they are exact for these purposes.
"""

from __future__ import annotations

import math
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest

from spec.lstm import sigmoid

# exp, one addition and one division, each within half an ulp, plus exp's own error.
SIGMOID_MAX_ULP = 3
# np.tanh is the C library's, correctly rounded or nearly.
TANH_MAX_ULP = 2


def exact_sigmoid(z: float) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return 1 / (1 + (-Decimal(z)).exp())


def exact_tanh(z: float) -> Decimal:
    with localcontext() as ctx:
        # exp(2z) - 1 cancels for tiny z: carry as many more digits as z has leading zeros.
        ctx.prec = 60 + max(0, -Decimal(z).adjusted()) if z else 60
        e = (2 * Decimal(z)).exp()
        return (e - 1) / (e + 1)


def ulp_error(got: float, exact: Decimal, dtype) -> float:
    """|got - exact| in units of the last place of exact rounded to dtype."""
    rounded = np.dtype(dtype).type(float(exact))
    unit = float(np.spacing(np.abs(rounded))) if rounded != 0 else float(np.finfo(dtype).smallest_subnormal)
    return float(abs(Decimal(float(got)) - exact) / Decimal(unit))


def sample_points(dtype) -> np.ndarray:
    rng = np.random.default_rng(2000)
    spreads = [1e-12, 1e-6, 1e-3, 0.1, 1.0, 3.0, 10.0, 30.0, 200.0]
    points = np.concatenate([rng.normal(0, s, 400) for s in spreads])
    edges = [0.0, -0.0, 1e-300, -1e-300, 36.0, 37.0, 38.0, -36.0, -40.0, -700.0, -708.0, -740.0, -745.0, -800.0, 800.0]
    if dtype == np.float32:
        edges = [e for e in edges if abs(e) < 1e30]
        edges += [-87.0, -88.7, -103.0, -104.0, 88.7, 89.0]
    return np.concatenate([points, edges]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_sigmoid_is_within_a_few_ulp_everywhere(dtype):
    z = sample_points(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, underflow or invalid-value warnings
        s = sigmoid(z)
    assert s.dtype == dtype
    errors = [ulp_error(g, exact_sigmoid(float(x)), dtype) for g, x in zip(s, z)]
    worst = int(np.argmax(errors))
    assert errors[worst] <= SIGMOID_MAX_ULP, f"sigmoid({z[worst]!r}) = {s[worst]!r}: {errors[worst]:.2f} ulp from exact"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_tanh_is_within_a_few_ulp_everywhere(dtype):
    z = sample_points(dtype)
    t = np.tanh(z)
    errors = [ulp_error(g, exact_tanh(float(x)), dtype) for g, x in zip(t, z)]
    worst = int(np.argmax(errors))
    assert errors[worst] <= TANH_MAX_ULP, f"tanh({z[worst]!r}) = {t[worst]!r}: {errors[worst]:.2f} ulp from exact"


def test_sigmoid_writes_into_out_and_leaves_its_input_alone():
    z = np.array([-800.0, -3.0, 0.0, 2.0, 800.0])
    before = z.copy()
    out = np.empty_like(z)
    assert sigmoid(z, out=out) is out
    assert np.array_equal(z, before)
    assert out[0] == 0.0 and out[2] == 0.5 and out[4] == 1.0
    assert sigmoid(z, out=z) is z and np.array_equal(z, out)


def test_ulp_error_helper_counts_units_in_the_last_place():
    one = Decimal(1)
    assert ulp_error(1.0, one, np.float64) == 0
    assert ulp_error(1.0 + 2 * math.ulp(1.0), one, np.float64) == pytest.approx(2.0)
    assert ulp_error(float(np.float32(1) + 3 * np.spacing(np.float32(1))), one, np.float32) == pytest.approx(3.0)
