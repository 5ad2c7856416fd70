"""Every implementation's gradients (x, h0, c0, W, U, b, p) against the spec's backward pass in float64."""

import pytest

from conformance.runner import judge


@pytest.mark.gradients
def test_gradients(request, implementation, run, case):
    judge(request, implementation, run, case, "gradients")
