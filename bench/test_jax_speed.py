"""JAX on the CPU, float32, B=64, T=25, I=H=512: the flax adapter's overhead and the lax.scan LSTM's speed.

    .venv/bin/python -m pytest bench/test_jax_speed.py -p no:cacheprovider

Requirements (judged by test_side_by_side through bench.timing.check_target, on medians of
interleaved rounds, so that the drifts of a shared machine hit every contender alike; a missed one is
reported as MISSED and fails the run only with --bench-fail-on-target):

- the flax/OptimizedLSTMCell row (canonical NumPy in, NumPy out) adds at most 5% to flax's
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

from backends.layouts.flax import CELL  # noqa: E402
from backends.registry import row_by_id  # noqa: E402
from backends.runtimes.jax import MATMUL_PRECISION, linen  # noqa: E402
from bench.matrix import BENCH_CASE  # noqa: E402
from bench.timing import interleaved, lstm_flop  # noqa: E402
from contract.answers import Cotangents  # noqa: E402
from spec.cases import make_case_data  # noqa: E402
from spec.layer import LayerConfig  # noqa: E402

CASE = BENCH_CASE
STANDARD, PEEPHOLE = LayerConfig(), LayerConfig(peephole=True)
PEEPHOLE_CASE = replace(CASE, name="bench-peephole", layer=PEEPHOLE)
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
DTYPE = "float32"

ADAPTER_OVERHEAD_MAX = 1.05
SCAN_RATIO_MAX = 1.3
SIDE_BY_SIDE_ROUNDS = 21

FLAX = row_by_id("flax/OptimizedLSTMCell")
SCAN = row_by_id("jax/lax.scan")


def _warm(fn, times=2):
    for _ in range(times):
        fn()
    return fn


def native_flax(hidden_size: int):
    """flax's OptimizedLSTMCell in nn.RNN as a flax user runs it, jitted: (tree, x, h0, c0) -> (y, h_T, c_T)."""
    nn = linen()
    rnn = nn.RNN(nn.OptimizedLSTMCell(features=hidden_size), time_major=True, return_carry=True)

    def forward(tree, x, h0, c0):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            (c_T, h_T), y = rnn.apply({"params": {"cell": tree}}, x, initial_carry=(c0, h0))
        return y, h_T, c_T

    return forward


@pytest.fixture(scope="module")
def runs():
    """name -> a function that runs one timed call, compiled and warmed up."""
    if (reason := FLAX.availability("cpu")) is not None:
        pytest.skip(f"unavailable: {reason}")
    data = make_case_data(CASE, DTYPE)
    peep = make_case_data(PEEPHOLE_CASE, DTYPE)
    native_forward = native_flax(CASE.H)

    # flax as a flax user runs it: the native tree and the inputs already on the device.
    cpu = jax.devices("cpu")[0]
    tree, x, h0, c0 = jax.device_put((CELL.to_native(data.params, STANDARD), data.x, data.h0[0], data.c0[0]), cpu)
    cts = jax.device_put((data.dy, data.dh_T[0], data.dc_T[0]), cpu)

    @jax.jit
    def native_gradients(tree, x, h0, c0, cts):
        return jax.vjp(native_forward, tree, x, h0, c0)[1](cts)

    jitted_forward = jax.jit(native_forward)
    peep_cotangents = Cotangents(peep.dy, peep.dh_T, peep.dc_T)
    return {
        "flax native forward": _warm(lambda: jax.block_until_ready(jitted_forward(tree, x, h0, c0))),
        "flax native forward+backward": _warm(lambda: jax.block_until_ready(native_gradients(tree, x, h0, c0, cts))),
        "flax adapter forward": _warm(lambda: FLAX.forward(data.params, data.x, data.h0, data.c0, layer=STANDARD)),
        "scan peephole forward": _warm(lambda: SCAN.forward(peep.params, peep.x, peep.h0, peep.c0, layer=PEEPHOLE)),
        "scan peephole forward+backward": _warm(
            lambda: SCAN.backward(peep.params, peep.x, peep.h0, peep.c0, peep_cotangents, layer=PEEPHOLE)
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
