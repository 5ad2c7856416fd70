"""The benchmark matrix: implementation x device x shape x pass x variant x dtype.

    python3 dev.py bench bench/test_matrix.py                       the quick set, every installed backend
    python3 dev.py bench bench/test_matrix.py --bench-set full --benchmark-save=full
    python -m bench.report .benchmarks/*/0001_full.json --plots bench/results/plots

float32 everywhere; float16 and bfloat16 on a GPU, for the implementations that run in them
(``--bench-dtype`` chooses). Each configuration is timed through the adapter's
:meth:`~backends.base.Implementation.timed_pass`: the weights and inputs are uploaded (and rounded to
a half type) once, outside the timed region, and every timed call ends when the device has finished
(CUDA synchronised, jax blocked until ready, TensorFlow's results materialised). Warm-up calls keep
compilation, tracing, graph building and autotuning out of the numbers. Before its time is kept, the
result of the last warm-up call is checked against the spec (bench/correctness.py). Every result
carries, in pytest-benchmark's extra_info: GFLOP/s and time steps per second at the median, the
fraction of the roofline measured in the same run for that device and dtype, the error against the
spec, whether the inputs stayed on the device, and DeepBench's published time for the shape where
there is one (see bench/matrix.py for the conventions).
"""

from __future__ import annotations

import os
import time
from functools import cache, lru_cache

import numpy as np
import pytest

from backends.base import NotSupported, Unavailable
from backends.registry import builtin_implementations
from backends.timing import HALF_DTYPES, Timing
from bench import correctness
from bench.conftest import bench_devices
from bench.matrix import (
    bytes_moved,
    deepbench_ms,
    flop,
    roofline_fraction,
    shapes_in,
    time_rounds,
)
from spec.cases import Case, make_case_data


def _dtypes(config, device: str) -> tuple[str, ...]:
    """--bench-dtype if given; else float32, and on a GPU the half types too."""
    chosen = tuple(config.getoption("--bench-dtype"))
    if chosen:
        return chosen
    return ("float32", *HALF_DTYPES) if device == "cuda" else ("float32",)


def pytest_generate_tests(metafunc):
    if "impl" not in metafunc.fixturenames:
        return
    config = metafunc.config
    wanted = config.getoption("--bench-impl")
    impls = [impl for impl in builtin_implementations() if not wanted or any(w in impl.id for w in wanted)]
    params = []
    # Shape-major, so that consecutive configurations share the spec's reference result.
    for shape in shapes_in(config.getoption("--bench-set")):
        for pass_ in shape.passes:
            for variant in ("standard", "peephole"):
                for device in bench_devices(config):
                    for dtype in _dtypes(config, device):
                        for impl in impls:
                            params.append(pytest.param(
                                impl, device, shape, pass_, variant, dtype,
                                id=f"{impl.id}-{device}-{shape.name}-{pass_}-{variant}-{dtype}",
                                marks=_known_wrong(impl, pass_, variant, dtype, device),
                            ))
    metafunc.parametrize(("impl", "device", "shape", "pass_", "variant", "dtype"), params)


def _known_wrong(impl, pass_: str, variant: str, dtype: str, device: str):
    """A known non-conformance (declared with its implementation) computes a wrong answer, which the
    correctness check refuses to time: a strict xfail, so a fix upstream shows up here too."""
    kind = "gradients" if pass_ == "forward+backward" else "outputs"
    timing = Timing(variant=variant, dtype=dtype, device=device, gradients=kind == "gradients")
    reason = impl.known_failure(kind, timing.source_config)
    if reason is None:
        return ()
    return pytest.mark.xfail(reason=f"known non-conformance, not timed: {reason}", raises=AssertionError, strict=True)


@lru_cache(maxsize=8)
def _data(shape, variant, dtype):
    """The shape's data in the dtype the timed pass starts from (float32 for a half pass)."""
    case = Case(shape.name, T=shape.T, B=shape.B, I=shape.I, H=shape.H, peephole=variant == "peephole", seed=2024)
    return make_case_data(case, dtype)


@cache
def roofline(device: str, dtype: str) -> tuple[float, float] | None:
    """(matrix-product FLOP/s in ``dtype``, memory bandwidth in bytes/s) on ``device``, measured now;
    None where it cannot be measured (a half type on the CPU without torch)."""
    # Large enough to reach the device's rates: an 8192^3 product and a 1 GiB copy on a GPU.
    n, big = (8192, 2**28) if device == "cuda" else (2048, 2**24)
    try:
        import torch
    except ImportError:
        torch = None
    if device == "cuda" or dtype in HALF_DTYPES:
        if torch is None:
            return None
        torch.backends.cuda.matmul.allow_tf32 = False
        generator = torch.Generator(device).manual_seed(0)
        a = torch.randn(n, n, device=device, generator=generator).to(getattr(torch, dtype))
        src = torch.randn(big, device=device, generator=generator)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        matmul_seconds = _median_seconds(lambda: (a @ a, sync()))
        return 2.0 * n**3 / matmul_seconds, 2 * 4 * big / _median_seconds(lambda: (src.clone(), sync()))
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    src = np.random.default_rng(1).standard_normal(big).astype(np.float32)
    dst = np.empty_like(src)
    matmul_seconds = _median_seconds(lambda: a @ a)
    if torch is not None:  # the machine's rate is the fastest product here: torch's BLAS may beat NumPy's
        t = torch.from_numpy(a)
        matmul_seconds = min(matmul_seconds, _median_seconds(lambda: t @ t))
    # A copy reads and writes every byte.
    return 2.0 * n**3 / matmul_seconds, 2 * 4 * big / _median_seconds(lambda: np.copyto(dst, src))


def _median_seconds(run) -> float:
    """The median of 7 timed calls, after one untimed."""
    run()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def test_lstm(benchmark, request, impl, device, shape, pass_, variant, dtype):
    reason = impl.availability(device)
    if reason:
        pytest.skip(f"unavailable: {reason}")
    gradients = pass_ == "forward+backward"
    timing = Timing(variant=variant, dtype=dtype, device=device, gradients=gradients)
    try:
        impl.check_timing(timing)
    except NotSupported as error:
        pytest.skip(f"not supported: {error}")
    d = _data(shape, variant, timing.source_dtype)
    try:
        timed = impl.timed_pass(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, timing=timing)
        for _ in range(2):  # warm-up: traces, compilation, weight conversion, autotuning
            timed.run()
    except (NotSupported, Unavailable) as error:
        pytest.skip(f"not supported: {error}")
    error = correctness.check(timed.result(), correctness.reference(d, gradients), dtype)
    median = time_rounds(benchmark, timed.run, request.config.getoption("--bench-seconds"), least=5, most=200)
    measured = roofline(device, dtype)
    matmul_rate, bandwidth = measured if measured else (None, None)
    reference = deepbench_ms(shape, pass_)
    benchmark.extra_info.update(
        matrix=True, implementation=impl.id, device=device, shape=shape.name, pass_=pass_, variant=variant, dtype=dtype,
        B=shape.B, T=shape.T, I=shape.I, H=shape.H,
        flop=flop(shape, pass_), bytes=bytes_moved(shape, pass_, dtype),
        gflops=flop(shape, pass_) / median / 1e9, steps_per_s=shape.T / median,
        roofline_fraction=roofline_fraction(shape, pass_, dtype, median, matmul_rate, bandwidth) if measured else None,
        matmul_gflops=matmul_rate / 1e9 if measured else None, bandwidth_gbs=bandwidth / 1e9 if measured else None,
        relative_error_vs_spec=error, device_resident=timed.resident,
        deepbench_ms=reference[0] if reference else None, deepbench_source=reference[1] if reference else None,
        threads=os.environ.get("LSTMC_THREADS", "framework default"),
    )

