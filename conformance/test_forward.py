"""Every implementation's forward outputs (h for every step, h_T, c_T) against the spec in float64."""

from conformance.runner import judge


def test_forward(request, implementation, run, case):
    judge(request, implementation, run, case, "outputs")
