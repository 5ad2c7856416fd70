"""The layer spec's speed, float64: two bidirectional layers at B=64, T=25, I=H=512, beside the matrix-product rate.

    python3 dev.py bench bench/test_layer_speed.py

FLOPs: 8 * B * H * (I_l + H) * T per direction per layer, I_l the layer's input width (I for layer 0,
2H for layer 1 here); a backward pass counts twice that. Target (judged by bench.timing.check_target
through the speed_target fixture; a missed one is reported as MISSED and fails the run only with --bench-fail-on-target):
the layer's forward at half the float64 matrix-product rate or more, measured on interleaved rounds
(each round times the matrix product, the forward and the backward once), so that a slow spell of
this shared machine hits all three. The backward's rate is reported beside it, without a target.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.timing import interleaved, lstm_flop, ratio
from spec import layer
from spec.cases import BENCH_LAYER_CASE, make_case_data

CASE = BENCH_LAYER_CASE
MATMUL_N = 1024
MATMUL_FLOP = 2.0 * MATMUL_N**3
TARGET = 0.5  # of the float64 matrix-product rate


def layer_flop(case) -> float:
    """One forward pass of the whole layer stack: every direction of every layer."""
    widths = [case.I] + [case.D * case.P] * (case.L - 1)
    return sum(case.D * lstm_flop(case.T, case.B, width, case.H) for width in widths)


FLOP = layer_flop(CASE)


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE)


def test_layer_forward(measure, data):
    measure("layer forward", lambda: data.forward(), flop=FLOP, rounds=5)


def test_layer_backward(measure, data):
    fwd = data.forward()
    measure("layer backward", lambda: layer.backward(fwd, data.dy, data.dh_T, data.dc_T), flop=2 * FLOP, rounds=5)


def test_layer_rates_against_the_matrix_product(benchmark, speed_target, data):
    """The target, measured fairly: rate ratios from the median over interleaved rounds."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(MATMUL_N, MATMUL_N)), rng.normal(size=(MATMUL_N, MATMUL_N))
    fwd = data.forward()
    medians, times = interleaved(
        {
            "matrix product": lambda: a @ b,
            "layer forward": lambda: data.forward(),
            "layer backward": lambda: layer.backward(fwd, data.dy, data.dh_T, data.dc_T),
        },
        rounds=7,
        warmup=1,
    )
    # rate(x) / rate(matmul) = (FLOP_x / t_x) / (FLOP_mm / t_mm): the per-round time ratio, scaled.
    forward_share = ratio(times, "matrix product", "layer forward") * FLOP / MATMUL_FLOP
    backward_share = ratio(times, "matrix product", "layer backward") * 2 * FLOP / MATMUL_FLOP
    gflops = {
        "matrix product": MATMUL_FLOP / medians["matrix product"] / 1e9,
        "layer forward": FLOP / medians["layer forward"] / 1e9,
        "layer backward": 2 * FLOP / medians["layer backward"] / 1e9,
    }
    benchmark.extra_info.update({f"median_s {name}": m for name, m in medians.items()})
    benchmark.extra_info.update({f"gflops {name}": g for name, g in gflops.items()})
    benchmark.extra_info["forward rate / matrix-product rate"] = forward_share
    benchmark.extra_info["backward rate / matrix-product rate"] = backward_share
    print(
        f"\nlayer (L=2, bidirectional, B={CASE.B}, T={CASE.T}, I=H={CASE.H}, float64), interleaved medians: "
        + ", ".join(f"{name} {medians[name] * 1e3:.1f} ms = {gflops[name]:.1f} GFLOP/s" for name in medians)
        + f"; forward {forward_share:.2f} and backward {backward_share:.2f} of the matrix-product rate"
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # pytest-benchmark needs one timed call
    speed_target(
        "layer forward rate / float64 matrix-product rate (interleaved)", forward_share, at_least=TARGET,
        detail=f"forward {gflops['layer forward']:.1f} GFLOP/s, matrix product {gflops['matrix product']:.1f} GFLOP/s; "
               f"backward {gflops['layer backward']:.1f} GFLOP/s ({backward_share:.2f} of it)",
    )
