"""Every implementation's gradients (x, h0, c0 and every cell's W, U, b, p, W_hr) against the spec's backward pass in
float64, on every case."""

import pytest

from contract.vocabulary import Kind
from conformance.judge import judge


@pytest.mark.gradients
def test_gradients(request, row, dtype, device, case):
    judge(request, row, Kind.GRADIENTS, dtype, device, case)
