"""The spec's speed, float64, at B=64, T=25, I=H=512, beside the matrix-product rate and onnx.reference.

    python3 dev.py bench bench/test_spec_speed.py

Targets (judged by bench.timing.check_target; a missed one is reported as MISSED and fails the run
only with --bench-fail-on-target): the spec's forward at 0.55 of the float64 matrix-product rate or
more, and 1.25x onnx.reference's forward speed or more, separately timed and on interleaved rounds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from backends.layouts.onnx import LSTM_NODES, weight_name
from backends.runtimes.onnx import ONNX_REFERENCE, layer_feeds, layer_model
from bench.matrix import BENCH_CASE
from bench.timing import interleaved, lstm_flop, ratio, separate_run_target
from spec import lstm
from spec.cases import make_case_data

CASE = BENCH_CASE
LAYER = CASE.layer
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


class Cell:
    """The case's one cell as spec.lstm takes it (float64): the layer's data without its layer axis."""

    def __init__(self, data):
        self.params, self.x, self.h0, self.c0 = data.params.cells[0], data.x, data.h0[0], data.c0[0]
        self.dy, self.dh_T, self.dc_T = data.dy, data.dh_T[0], data.dc_T[0]

    def forward(self):
        return lstm.forward(self.params, self.x, self.h0, self.c0)


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE)


@pytest.fixture(scope="module")
def cell(data):
    return Cell(data)


@pytest.fixture(scope="module")
def onnx_reference(data):
    """onnx.reference's LSTM on the same data: the ONNX row's graph of one node, evaluated by onnx's reference
    evaluator (NumPy, float64), feeds already in ONNX's layout."""
    if (reason := ONNX_REFERENCE.availability("cpu")) is not None:
        pytest.skip(f"onnx.reference is the side-by-side reference: {reason}")
    model = layer_model(CASE.I, CASE.H, LAYER, np.float64, lengths=False, weight_name=weight_name)
    session = ONNX_REFERENCE.session(model, "cpu")
    feeds = layer_feeds(LSTM_NODES.to_native(data.params, LAYER), data.x, data.h0, data.c0, None)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # its sigmoid overflows harmlessly in saturation
            return session.run(None, feeds)

    return run


def test_matrix_product_rate(measure):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(MATMUL_N, MATMUL_N)), rng.normal(size=(MATMUL_N, MATMUL_N))
    measure("matrix product", lambda: a @ b, flop=2.0 * MATMUL_N**3, rounds=20)


def test_spec_forward(measure, cell):
    measure("spec forward", cell.forward, flop=FLOP)


def test_onnx_reference_forward(measure, onnx_reference):
    measure("onnx.reference forward", onnx_reference, flop=FLOP)


def test_side_by_side_with_onnx_reference(benchmark, speed_target, cell, onnx_reference):
    """The spec's target ratio, measured fairly: the two forwards alternate round by round on the same
    input and the ratio is the median of the per-round ratios, so drifts of a shared machine cancel."""
    medians, times = interleaved({"spec": cell.forward, "onnx.reference": onnx_reference}, rounds=21, warmup=1)
    speedup = ratio(times, "onnx.reference", "spec")
    benchmark.extra_info.update({f"median_s {name}": m for name, m in medians.items()})
    benchmark.extra_info["speedup_over_onnx_reference"] = speedup
    # pytest-benchmark needs one timed call; the figures above are the result.
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    speed_target(
        "spec forward speed-up over onnx.reference (interleaved)", speedup, at_least=SIDE_BY_SIDE_TARGET,
        detail=f"spec {medians['spec'] * 1e3:.1f} ms, onnx.reference {medians['onnx.reference'] * 1e3:.1f} ms (medians)",
    )


def test_spec_backward(measure, cell):
    fwd = cell.forward()
    measure("spec backward", lambda: lstm.backward(fwd, cell.dy, cell.dh_T, cell.dc_T), flop=2 * FLOP)


def test_spec_forward_and_backward(measure, cell):
    def run():
        return lstm.backward(cell.forward(), cell.dy, cell.dh_T, cell.dc_T)

    measure("spec forward+backward", run, flop=3 * FLOP)
