"""JAX on the CPU, float32, B=64, T=25, I=H=512: the flax adapter's overhead and the lax.scan LSTM's speed.

    .venv/bin/python -m pytest bench/test_jax_speed.py -p no:cacheprovider

Requirements (judged by test_side_by_side through bench.conftest.check_target, on medians of
interleaved rounds, so that the drifts of a shared machine hit every contender alike; a missed one is
reported as MISSED and fails the run only with --bench-fail-on-target):

- the flax/OptimizedLSTMCell adapter (canonical NumPy in, NumPy out) adds at most 5% to flax's
  OptimizedLSTMCell run natively (jitted nn.RNN apply on a native tree already on the device);
- jax/lax.scan, peephole variant, is within 1.3x of that native flax LSTM (which has no
  peepholes), forward and forward+backward.

Every timed call waits for its result (block_until_ready, or NumPy outputs); compilation happens
in the fixtures, before any timing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("jax", reason="the JAX benchmarks need jax: pip install 'lstm-conformance[jax]'")
pytest.importorskip("flax", reason="the JAX benchmarks need flax: pip install 'lstm-conformance[jax]'")

import jax  # noqa: E402

from backends.base import Config  # noqa: E402
from backends.jax_lstm import IMPLEMENTATIONS  # noqa: E402
from bench.conftest import interleaved, lstm_flop  # noqa: E402
from bench.matrix import BENCH_CASE  # noqa: E402
from spec.cases import make_case_data  # noqa: E402

CASE = BENCH_CASE
PEEPHOLE_CASE = replace(BENCH_CASE, name="bench-peephole", peephole=True)
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
DTYPE = "float32"
STANDARD = Config("standard", DTYPE, "cpu")
PEEPHOLE = Config("peephole", DTYPE, "cpu")

ADAPTER_OVERHEAD_MAX = 1.05
SCAN_RATIO_MAX = 1.3
SIDE_BY_SIDE_ROUNDS = 21

IMPL = {impl.id: impl for impl in IMPLEMENTATIONS}
FLAX = IMPL["flax/OptimizedLSTMCell"]
SCAN = IMPL["jax/lax.scan"]


def _warm(fn, times=2):
    for _ in range(times):
        fn()
    return fn


@pytest.fixture(scope="module")
def runs():
    """name -> a function that runs one timed call, compiled and warmed up."""
    if (reason := FLAX.availability("cpu")) is not None:
        pytest.skip(f"unavailable: {reason}")
    data = make_case_data(CASE, DTYPE)
    peep = make_case_data(PEEPHOLE_CASE, DTYPE)
    native_forward, _, _ = FLAX.native_functions(CASE.H, DTYPE)

    # flax as a flax user runs it: the native tree and the inputs already on the device.
    cpu = jax.devices("cpu")[0]
    tree, x, h0, c0 = jax.device_put((FLAX.to_native(data.params), data.x, data.h0, data.c0), cpu)
    cts = jax.device_put((data.dh_seq, data.dh_T, data.dc_T), cpu)

    @jax.jit
    def native_gradients(tree, x, h0, c0, cts):
        return jax.vjp(native_forward, tree, x, h0, c0)[1](cts)

    fb = data.forget_bias
    return {
        "flax native forward": _warm(lambda: jax.block_until_ready(native_forward(tree, x, h0, c0))),
        "flax native forward+backward": _warm(lambda: jax.block_until_ready(native_gradients(tree, x, h0, c0, cts))),
        "flax adapter forward": _warm(
            lambda: FLAX.forward(data.params, data.x, data.h0, data.c0, forget_bias=fb, config=STANDARD)
        ),
        "scan peephole forward": _warm(
            lambda: SCAN.forward(peep.params, peep.x, peep.h0, peep.c0, forget_bias=fb, config=PEEPHOLE)
        ),
        "scan peephole forward+backward": _warm(
            lambda: SCAN.backward(peep.params, peep.x, peep.h0, peep.c0, peep.cotangents(), forget_bias=fb, config=PEEPHOLE)
        ),
    }


def test_flax_native_forward(measure, runs):
    measure("flax OptimizedLSTMCell native forward", runs["flax native forward"], flop=FLOP)


def test_flax_adapter_forward(measure, runs):
    measure("flax/OptimizedLSTMCell adapter forward", runs["flax adapter forward"], flop=FLOP)


def test_flax_native_forward_backward(measure, runs):
    measure("flax OptimizedLSTMCell native forward+backward", runs["flax native forward+backward"], flop=3 * FLOP)


def test_scan_peephole_forward(measure, runs):
    measure("jax/lax.scan peephole forward", runs["scan peephole forward"], flop=FLOP)


def test_scan_peephole_forward_backward(measure, runs):
    measure("jax/lax.scan peephole forward+backward", runs["scan peephole forward+backward"], flop=3 * FLOP)


def test_side_by_side(benchmark, speed_target, runs):
    """The requirements, measured fairly: all contenders alternate round by round; medians of 21 rounds."""
    median, _ = interleaved(runs, rounds=SIDE_BY_SIDE_ROUNDS, warmup=0)  # the runs fixture warmed them up
    ratios = {
        "flax adapter / native forward": (median["flax adapter forward"] / median["flax native forward"], ADAPTER_OVERHEAD_MAX),
        "scan peephole / flax native forward": (median["scan peephole forward"] / median["flax native forward"], SCAN_RATIO_MAX),
        "scan peephole / flax native forward+backward": (
            median["scan peephole forward+backward"] / median["flax native forward+backward"],
            SCAN_RATIO_MAX,
        ),
    }
    benchmark.extra_info.update({f"median_ms {name}": m * 1e3 for name, m in median.items()})
    benchmark.extra_info.update({f"ratio {name}": r for name, (r, _) in ratios.items()})
    lines = [f"{name:<32} {m * 1e3:8.2f} ms (median of {SIDE_BY_SIDE_ROUNDS} interleaved rounds)" for name, m in median.items()]
    lines += [f"{name:<46} {r:.3f} (requirement <= {limit})" for name, (r, limit) in ratios.items()]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # pytest-benchmark needs one timed call
    for name, (r, limit) in ratios.items():
        speed_target(name, r, at_most=limit, detail=f"medians of {SIDE_BY_SIDE_ROUNDS} interleaved rounds")
