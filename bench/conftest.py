"""The benchmarks' pytest wiring: options, the ``measure`` and ``speed_target`` fixtures, what every result depends
on (machine info), and the summary at the end of a run. What they use lives in bench/timing.py (FLOP counts,
interleaved rounds, speed targets): test modules import that, never this file.

A missed speed target is reported (MISSED in the "speed targets" section, the benchmark's extra_info) and fails the
run only with --bench-fail-on-target (bench/timing.py says why).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from backends.runtimes.torch import TORCH, torch
from bench.timing import (
    FAIL_ON_TARGET,
    RESULTS,
    TargetCheck,
    bench_devices,
    bench_rows,
    check_target,
    judge_separate_runs,
    target_checks,
)
from contract.runtime import cpu_features, cpu_model
from contract.vocabulary import Device, Dtype


@pytest.fixture
def measure(benchmark):
    """measure(name, fn, flop=...): time fn with pytest-benchmark and record its median and FLOP rate."""

    def run(name, fn, *, flop, rounds=11, warmup_rounds=1):
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


@pytest.fixture
def speed_target(request, benchmark):
    """speed_target(name, value, at_most=... or at_least=..., detail=""): check_target() for a target this
    test measured, recorded in its benchmark's extra_info. Returns the TargetCheck."""

    def check(name: str, value: float, **kwargs) -> TargetCheck:
        return check_target(request.config, name, value, source=request.node.nodeid, benchmark=benchmark, **kwargs)

    return check


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    judge_separate_runs(session.config)
    missed = [c for c in target_checks(session.config) if not c.met]
    if missed and session.config.getoption(FAIL_ON_TARGET) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser):
    group = parser.getgroup("lstm-conformance benchmarks")
    group.addoption("--bench-set", default="quick", choices=("quick", "full"),
                    help="the matrix's shapes: quick (MNIST rows, one DeepBench shape, Braun's stack at T=100; default) "
                         "or full")
    group.addoption("--bench-impl", action="append", default=[], metavar="TEXT",
                    help="only rows whose id contains TEXT (repeatable): the matrix times them, the machine info records "
                         "their frameworks")
    group.addoption("--bench-device", default="auto", choices=("auto", *Device),
                    help="auto (default): cpu, plus cuda when a CUDA GPU is visible")
    group.addoption("--bench-dtype", action="append", default=[], choices=tuple(Dtype),
                    help="time in this dtype (repeatable); default: float32, and float16 and bfloat16 on a GPU")
    group.addoption("--bench-seconds", type=float, default=0.5, metavar="S",
                    help="time spent measuring each configuration of the matrix beyond its two warm-up calls (rounds "
                         "= S / one call, between 3 and 100; default 0.5)")
    group.addoption(FAIL_ON_TARGET, action="store_true", default=False,
                    help="fail the run when a speed target (adapter overhead, speed ratio) is missed; without it a "
                         "missed target is reported as MISSED in the summary and the benchmark's extra_info only")


def _gpu_info() -> dict[str, object]:
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
    if TORCH.availability(Device.CUDA) is None:
        t = torch()
        info.update(cuda=t.version.cuda, cudnn=t.backends.cudnn.version())
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    frameworks = {}
    for device in bench_devices(config):
        for row in bench_rows(config):
            key = f"{row.runtime.name} ({device})"
            if key not in frameworks and row.availability(device) is None:
                # Versions, TF32 state and threads, as each runtime records them; never raises.
                frameworks[key] = row.environment(device)
    machine_info["lstm_conformance"] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": _cpu_isa(),
        "threads_env": {k: os.environ.get(k) for k in ("LSTMC_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS")},
        "numpy": np.__version__,
        "blas": f"{blas.get('name')} {blas.get('version')}",
        "onnx": _version("onnx"),
        "frameworks": frameworks,
        **_gpu_info(),
    }


def _cpu_isa() -> dict[str, object]:
    """The CPU's vector extensions, and the level torch dispatches its CPU kernels at."""
    isa: dict[str, object] = {"simd": cpu_features()}
    if TORCH.availability(Device.CPU) is None:
        isa["torch_cpu_capability"] = torch().backends.cpu.get_cpu_capability()
    return isa


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's table, next to the run's last line
def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    if RESULTS:
        terminalreporter.section("FLOP rates (medians)")
        for name, (median, flop) in RESULTS.items():
            write(f"  {name:<32} {median * 1e3:9.2f} ms  {flop / median / 1e9:7.1f} GFLOP/s")
    checks = target_checks(terminalreporter.config)
    if not checks:
        return
    terminalreporter.section("speed targets")
    for check in checks:
        write(f"  {check.line()}", red=not check.met, bold=not check.met)
    missed = [check for check in checks if not check.met]
    if not missed:
        write(f"{len(checks)} of {len(checks)} speed targets met", green=True)
    elif terminalreporter.config.getoption(FAIL_ON_TARGET):
        write(f"{len(missed)} of {len(checks)} speed targets MISSED: failing the run ({FAIL_ON_TARGET})", red=True, bold=True)
    else:
        write(f"{len(missed)} of {len(checks)} speed targets MISSED (reported, not failing the run; "
              f"{FAIL_ON_TARGET} fails it)", yellow=True, bold=True)
