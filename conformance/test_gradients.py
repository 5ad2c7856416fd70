"""Every implementation's gradients (x, h0, c0, W, U, b, p) against the spec's backward pass in float64."""

import pytest

from conformance.diagnose import diagnose_gradients
from conformance.runner import assert_all_close, call, case_data, compare_all, prepare, reference


@pytest.mark.gradients
def test_gradients(request, implementation, run, case):
    prepare(request, implementation, run, "gradients")
    data = case_data(case, run.dtype)
    grads = call(
        implementation.backward, data.params, data.x, data.h0, data.c0, data.cotangents(), forget_bias=case.forget_bias, config=run
    )
    _, expected = reference(case, run.dtype)
    comparisons = compare_all("gradients", grads, expected, run.dtype)
    assert_all_close(
        request, comparisons, f"{implementation.id} {run.id} {case.name}", lambda: diagnose_gradients(data, grads, expected, run.dtype)
    )
