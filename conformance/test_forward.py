"""Every implementation's forward outputs (h for every step, h_T, c_T) against the spec in float64."""

from conformance.diagnose import diagnose_outputs
from conformance.runner import assert_all_close, call, case_data, compare_all, prepare, reference


def test_forward(request, implementation, run, case):
    prepare(request, implementation, run, "outputs")
    data = case_data(case, run.dtype)
    outputs = call(implementation.forward, data.params, data.x, data.h0, data.c0, forget_bias=case.forget_bias, config=run)
    expected, _ = reference(case, run.dtype)
    comparisons = compare_all("outputs", outputs.tensors(), expected, run.dtype)
    assert_all_close(
        request, comparisons, f"{implementation.id} {run.id} {case.name}", lambda: diagnose_outputs(data, outputs.tensors(), run.dtype)
    )
