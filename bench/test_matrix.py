"""The benchmark matrix: implementation x device x shape x pass x variant, float32.

    python3 dev.py bench bench/test_matrix.py                       the quick set, every installed backend
    python3 dev.py bench bench/test_matrix.py --bench-set full --benchmark-save=full
    python -m bench.report .benchmarks/*/0001_full.json --plots bench/results/plots

Each result is timed through the implementation's adapter (NumPy in, NumPy out: on a GPU that
includes moving the inputs and results, which also synchronises the device inside the timed
region), after warm-up calls that keep compilation, tracing and graph building out of the numbers.
Every result carries, in pytest-benchmark's extra_info: GFLOP/s and time steps per second at the
median, the fraction of the roofline measured in the same run, and DeepBench's published time for
the shape where there is one (see bench/matrix.py for the conventions).
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

import numpy as np
import pytest

from backends.base import Config, NotSupported, Unavailable
from backends.registry import builtin_implementations
from bench.matrix import bytes_moved, deepbench_ms, flop, roofline_fraction, shapes_in
from spec.cases import Case, make_case_data

DTYPE = "float32"
#: Time spent measuring one configuration, beyond its warm-up: rounds = this / one call's time.
SECONDS_PER_RESULT = 2.0


def _devices(config):
    import shutil

    choice = config.getoption("--bench-device")
    if choice == "auto":
        return ("cpu", "cuda") if shutil.which("nvidia-smi") else ("cpu",)
    return (choice,)


def pytest_generate_tests(metafunc):
    if "impl" not in metafunc.fixturenames:
        return
    config = metafunc.config
    wanted = config.getoption("--bench-impl")
    params = []
    for impl in builtin_implementations():
        if wanted and not any(w in impl.id for w in wanted):
            continue
        for device in _devices(config):
            for shape in shapes_in(config.getoption("--bench-set")):
                for pass_ in shape.passes:
                    for variant in ("standard", "peephole"):
                        params.append(pytest.param(impl, device, shape, pass_, variant, id=f"{impl.id}-{device}-{shape.name}-{pass_}-{variant}"))
    metafunc.parametrize(("impl", "device", "shape", "pass_", "variant"), params)


@lru_cache(maxsize=8)
def _data(shape, variant):
    case = Case(shape.name, T=shape.T, B=shape.B, I=shape.I, H=shape.H, peephole=variant == "peephole", seed=2024)
    return make_case_data(case, DTYPE)


@lru_cache(maxsize=None)
def roofline(device: str) -> tuple[float, float]:
    """(float32 matrix-product FLOP/s, memory bandwidth in bytes/s) on ``device``, measured now."""
    n, big = 2048, 64 * 2**20 // 4
    if device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device="cuda")
        src = torch.randn(big, device="cuda")

        def matmul():
            a @ a
            torch.cuda.synchronize()

        def copy():
            src.clone()
            torch.cuda.synchronize()
    else:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        src = np.random.default_rng(1).standard_normal(big).astype(np.float32)
        dst = np.empty_like(src)
        matmul = lambda: a @ a  # noqa: E731
        copy = lambda: np.copyto(dst, src)  # noqa: E731
    best = {}
    for name, run in (("matmul", matmul), ("copy", copy)):
        run()
        times = []
        for _ in range(7):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        best[name] = float(np.median(times))
    return 2.0 * n**3 / best["matmul"], 2 * 4 * big / best["copy"]  # a copy reads and writes every byte


def test_lstm(benchmark, impl, device, shape, pass_, variant):
    reason = impl.availability(device)
    if reason:
        pytest.skip(f"unavailable: {reason}")
    run_config = Config(variant=variant, dtype=DTYPE, device=device)
    try:
        impl.check(run_config, gradients=pass_ == "forward+backward")
    except NotSupported as error:
        pytest.skip(f"not supported: {error}")
    d = _data(shape, variant)
    if pass_ == "forward":
        def run():
            return impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=run_config)
    else:  # backward() runs the forward pass itself (the framework's autodiff needs it): one call is both
        def run():
            return impl.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=run_config)
    try:
        for _ in range(2):  # warm-up: traces, compilation, weight conversion, autotuning
            run()
    except (NotSupported, Unavailable) as error:
        pytest.skip(f"not supported: {error}")
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    rounds = int(max(3, min(30, SECONDS_PER_RESULT / max(once, 1e-6))))
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    matmul_rate, bandwidth = roofline(device)
    reference = deepbench_ms(shape, pass_)
    benchmark.extra_info.update(
        matrix=True, implementation=impl.id, device=device, shape=shape.name, pass_=pass_, variant=variant, dtype=DTYPE,
        B=shape.B, T=shape.T, I=shape.I, H=shape.H,
        flop=flop(shape, pass_), bytes=bytes_moved(shape, pass_, DTYPE),
        gflops=flop(shape, pass_) / median / 1e9, steps_per_s=shape.T / median,
        roofline_fraction=roofline_fraction(shape, pass_, DTYPE, median, matmul_rate, bandwidth),
        matmul_gflops=matmul_rate / 1e9, bandwidth_gbs=bandwidth / 1e9,
        deepbench_ms=reference[0] if reference else None, deepbench_source=reference[1] if reference else None,
        threads=os.environ.get("LSTMC_THREADS", "framework default"),
    )
