"""Benchmark plumbing: FLOP counts on every result, what the figures depend on, and the spec's targets.

FLOP convention (as DeepBench and most LSTM papers): 8 * B * H * (I + H) * T
per forward pass (the two matrix products; elementwise work is not counted);
a backward pass counts twice that, forward + backward three times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import pytest

from backends.base import TIMING_DTYPES, cpu_model

#: name -> (median seconds, FLOPs) of the benchmarks run in this session.
RESULTS: dict[str, tuple[float, float]] = {}

#: Medians and ratio of the interleaved spec / onnx.reference rounds (test_side_by_side_with_onnx_reference).
SIDE_BY_SIDE: dict[str, float] = {}

#: The spec's speed targets (issue 2): (numerator, denominator, minimum ratio, what it means).
SPEC_TARGETS = (
    ("spec forward", "matrix product", 0.55, "of the float64 matrix-product rate"),
    ("spec forward", "onnx.reference forward", 1.25, "x onnx.reference's speed (separate runs)"),
)
SIDE_BY_SIDE_TARGET = 1.25


def lstm_flop(T: int, B: int, I: int, H: int) -> float:
    return 8.0 * B * H * (I + H) * T


def interleaved(runs: dict[str, Callable[[], object]], rounds: int = 31, warmup: int = 2) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Time several calls side by side: each round runs every call once, starting one further along the
    list each round (so none always follows the same one; with two calls the order alternates), so a
    slow spell of a shared machine hits all of a round's calls. Returns the medians and the per-round
    times; compare two calls by the median of their per-round ratios (see ratio())."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for k in range(rounds):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}, times


def ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of time[numerator] / time[denominator]."""
    return float(np.median(np.array(times[numerator]) / np.array(times[denominator])))


@pytest.fixture
def measure(benchmark):
    """measure(name, fn, flop=...): time fn with pytest-benchmark and record its median and FLOP rate."""

    def run(name, fn, *, flop, rounds=15, warmup_rounds=2):
        benchmark.extra_info["flop"] = flop
        benchmark.extra_info["flop_convention"] = "8*B*H*(I+H)*T per forward; backward 2x"
        result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        stats = getattr(benchmark, "stats", None)
        if stats is not None and stats.stats.rounds:
            median = stats.stats.median
            benchmark.extra_info["gflops_at_median"] = flop / median / 1e9
            RESULTS[name] = (median, flop)
        return result

    return run


def pytest_addoption(parser):
    group = parser.getgroup("lstm-conformance benchmarks")
    group.addoption("--bench-set", default="quick", choices=("quick", "full"),
                    help="the matrix's shapes: quick (MNIST rows and one DeepBench shape; default) or full")
    group.addoption("--bench-impl", action="append", default=[], metavar="TEXT",
                    help="only implementations whose id contains TEXT (repeatable)")
    group.addoption("--bench-device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto (default): cpu, plus cuda when a CUDA GPU is visible")
    group.addoption("--bench-dtype", action="append", default=[], choices=TIMING_DTYPES,
                    help="time in this dtype (repeatable); default: float32, and float16 and bfloat16 on a GPU")
    group.addoption("--bench-seconds", type=float, default=2.0, metavar="S",
                    help="time spent measuring each configuration beyond its warm-up (rounds = S / one call, "
                         "between 5 and 200; default 2)")


def bench_devices(config) -> tuple[str, ...]:
    """The devices of this run (--bench-device): auto is cpu, plus cuda when nvidia-smi is there."""
    import shutil

    choice = config.getoption("--bench-device")
    if choice == "auto":
        return ("cpu", "cuda") if shutil.which("nvidia-smi") else ("cpu",)
    return (choice,)


def _gpu_info() -> dict[str, object]:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return {"gpu": None}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return {"gpu": f"nvidia-smi failed: {error}"}
    info: dict[str, object] = {"gpu": out}
    try:
        import torch

        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
    except ImportError:
        pass
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    from backends.registry import builtin_implementations

    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    frameworks = {}
    for device in bench_devices(config):
        for impl in builtin_implementations():
            key = f"{impl.framework} ({device})"
            if impl.availability(device) is None and key not in frameworks:
                try:
                    frameworks[key] = impl.environment(device)
                except Exception as error:  # the machine info must not stop a benchmark run
                    frameworks[key] = f"environment() failed: {error}"
    machine_info["lstm_conformance"] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "numpy": np.__version__,
        "blas": f"{blas.get('name')} {blas.get('version')}",
        "onnx": _version("onnx"),
        "frameworks": frameworks,  # versions, TF32 state and threads, as each adapter records them
        **_gpu_info(),
    }


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("FLOP rates (medians)")
    for name, (median, flop) in RESULTS.items():
        write(f"  {name:<32} {median * 1e3:9.2f} ms  {flop / median / 1e9:7.1f} GFLOP/s")
    rate = {name: flop / median for name, (median, flop) in RESULTS.items()}
    for numerator, denominator, minimum, meaning in SPEC_TARGETS:
        if numerator in rate and denominator in rate:
            ratio = rate[numerator] / rate[denominator]
            verdict = "met" if ratio >= minimum else "MISSED"
            write(f"  {numerator}: {ratio:.2f} {meaning} (target >= {minimum}): {verdict}")
    if SIDE_BY_SIDE:
        ratio = SIDE_BY_SIDE["ratio"]
        verdict = "met" if ratio >= SIDE_BY_SIDE_TARGET else "MISSED"
        write(
            f"  spec forward vs onnx.reference, interleaved rounds: {SIDE_BY_SIDE['spec'] * 1e3:.1f} ms vs "
            f"{SIDE_BY_SIDE['onnx.reference'] * 1e3:.1f} ms (medians): {ratio:.2f}x (target >= {SIDE_BY_SIDE_TARGET}): {verdict}"
        )
