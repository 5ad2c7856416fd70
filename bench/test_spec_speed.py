"""The spec's speed, float64, at B=64, T=25, I=H=512, beside the matrix-product rate and onnx.reference.

    python3 dev.py bench bench/test_spec_speed.py

Targets (judged by bench.conftest.check_target; a missed one is reported as MISSED and fails the run
only with --bench-fail-on-target): the spec's forward at 0.55 of the float64 matrix-product rate or
more, and 1.25x onnx.reference's forward speed or more, separately timed and on interleaved rounds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bench.conftest import interleaved, lstm_flop, ratio, separate_run_target
from spec import lstm
from bench.matrix import BENCH_CASE
from spec.cases import make_case_data

CASE = BENCH_CASE
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
MATMUL_N = 1024

#: The spec's targets on separately timed results: (name, numerator, denominator, minimum FLOP-rate ratio).
SEPARATE_RUN_TARGETS = (
    ("spec forward rate / float64 matrix-product rate", "spec forward", "matrix product", 0.55),
    ("spec forward speed-up over onnx.reference (separate runs)", "spec forward", "onnx.reference forward", 1.25),
)
#: The same speed-up, on interleaved rounds (test_side_by_side_with_onnx_reference).
SIDE_BY_SIDE_TARGET = 1.25


@pytest.fixture(scope="module", autouse=True)
def targets(request):
    for name, numerator, denominator, minimum in SEPARATE_RUN_TARGETS:
        separate_run_target(request.config, name, numerator, denominator, of="rate", at_least=minimum)


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE)


def test_matrix_product_rate(measure):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(MATMUL_N, MATMUL_N)), rng.normal(size=(MATMUL_N, MATMUL_N))
    measure("matrix product", lambda: a @ b, flop=2.0 * MATMUL_N**3, rounds=20)


def test_spec_forward(measure, data):
    measure("spec forward", lambda: lstm.forward(data.params, data.x, data.h0, data.c0), flop=FLOP)


def test_onnx_reference_forward(measure, data):
    pytest.importorskip("onnx", reason="onnx.reference is the side-by-side reference; pip install onnx")
    from backends.onnx_lstm import ReferenceLSTM

    reference = ReferenceLSTM(data.params)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # its sigmoid overflows harmlessly in saturation
            return reference(data.x, data.h0, data.c0)

    measure("onnx.reference forward", run, flop=FLOP)


def test_side_by_side_with_onnx_reference(benchmark, speed_target, data):
    """The spec's target ratio, measured fairly: the two forwards alternate round by round on the same
    input and the ratio is the median of the per-round ratios, so drifts of a shared machine cancel."""
    pytest.importorskip("onnx", reason="onnx.reference is the side-by-side reference; pip install onnx")
    from backends.onnx_lstm import ReferenceLSTM

    reference = ReferenceLSTM(data.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its sigmoid overflows harmlessly in saturation
        medians, times = interleaved(
            {
                "spec": lambda: lstm.forward(data.params, data.x, data.h0, data.c0),
                "onnx.reference": lambda: reference(data.x, data.h0, data.c0),
            },
            rounds=21,
        )
    speedup = ratio(times, "onnx.reference", "spec")
    benchmark.extra_info.update({f"median_s {name}": m for name, m in medians.items()})
    benchmark.extra_info["speedup_over_onnx_reference"] = speedup
    # pytest-benchmark needs one timed call; the figures above are the result.
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    speed_target(
        "spec forward speed-up over onnx.reference (interleaved)", speedup, at_least=SIDE_BY_SIDE_TARGET,
        detail=f"spec {medians['spec'] * 1e3:.1f} ms, onnx.reference {medians['onnx.reference'] * 1e3:.1f} ms (medians)",
    )


def test_spec_backward(measure, data):
    fwd = lstm.forward(data.params, data.x, data.h0, data.c0)
    measure("spec backward", lambda: lstm.backward(fwd, data.dh_seq, data.dh_T, data.dc_T), flop=2 * FLOP)


def test_spec_forward_and_backward(measure, data):
    def run():
        fwd = lstm.forward(data.params, data.x, data.h0, data.c0)
        return lstm.backward(fwd, data.dh_seq, data.dh_T, data.dc_T)

    measure("spec forward+backward", run, flop=3 * FLOP)
