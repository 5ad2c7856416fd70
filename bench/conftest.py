"""Benchmark plumbing: FLOP counts on every result, what the figures depend on, and speed targets.

FLOP convention (as DeepBench and most LSTM papers): 8 * B * H * (I + H) * T
per forward pass (the two matrix products; elementwise work is not counted);
a backward pass counts twice that, forward + backward three times.

Speed targets (an adapter's overhead, a ratio to a native LSTM, the spec's speed) are judged in one
place, check_target(): every verdict goes to the "speed targets" section of the terminal summary
(MISSED in red) and, for a target a test measured, to its benchmark's extra_info["targets"]. A missed
target fails the run only with --bench-fail-on-target (as pytest-benchmark's --benchmark-compare-fail
fails a run on a regression): on a shared machine a ratio can miss by a few percent for reasons that
have nothing to do with the code, so by default a benchmark run reports and does not fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from backends.base import cpu_model
from backends.timing import TIMING_DTYPES

#: name -> (median seconds, FLOPs) of the benchmarks run in this session.
RESULTS: dict[str, tuple[float, float]] = {}

FAIL_ON_TARGET = "--bench-fail-on-target"


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


@dataclass(frozen=True)
class TargetCheck:
    """One verdict: value (a ratio) against its target, at most or at least limit."""

    name: str
    value: float
    limit: float
    at_most: bool
    source: str  # the test that measured it, or "separate runs"
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def verdict(self) -> str:
        return "met" if self.met else "MISSED"

    @property
    def target(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}"

    def line(self) -> str:
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.name}: {self.value:.3f} (target {self.target}{detail}): {self.verdict} [{self.source}]"


_CHECKS = pytest.StashKey[list[TargetCheck]]()
_SEPARATE_RUN_TARGETS = pytest.StashKey[dict[str, tuple]]()


def check_target(config, name: str, value: float, *, at_most: float | None = None, at_least: float | None = None,
                 source: str, detail: str = "", benchmark=None) -> TargetCheck:
    """Judge one speed target (exactly one of at_most and at_least): record the verdict for the terminal
    summary and, given the benchmark fixture, in its extra_info["targets"][name]. It never fails the test;
    a missed target fails the run at its end with --bench-fail-on-target (pytest_sessionfinish)."""
    if (at_most is None) == (at_least is None):
        raise TypeError("check_target: give exactly one of at_most and at_least")
    limit = at_most if at_most is not None else at_least
    check = TargetCheck(name, float(value), float(limit), at_most is not None, source, detail)
    config.stash.setdefault(_CHECKS, []).append(check)
    if benchmark is not None:
        benchmark.extra_info.setdefault("targets", {})[name] = {
            "value": check.value, "target": check.target, "verdict": check.verdict, "detail": detail,
        }
    return check


@pytest.fixture
def speed_target(request, benchmark):
    """speed_target(name, value, at_most=... or at_least=..., detail=""): check_target() for a target this
    test measured, recorded in its benchmark's extra_info. Returns the TargetCheck."""

    def check(name: str, value: float, **kwargs) -> TargetCheck:
        return check_target(request.config, name, value, source=request.node.nodeid, benchmark=benchmark, **kwargs)

    return check


def separate_run_target(config, name: str, numerator: str, denominator: str, *, of: Literal["time", "rate"],
                        at_most: float | None = None, at_least: float | None = None) -> None:
    """A target on the ratio of two separately timed results (measure()'s names), numerator's over
    denominator's median time or FLOP rate. Judged by check_target() at the end of the session, when
    both were timed in it."""
    if of not in ("time", "rate"):
        raise ValueError(f"separate_run_target: of must be 'time' or 'rate', not {of!r}")
    config.stash.setdefault(_SEPARATE_RUN_TARGETS, {})[name] = (numerator, denominator, of, at_most, at_least)


def _judge_separate_runs(config) -> None:
    for name, (numerator, denominator, of, at_most, at_least) in config.stash.get(_SEPARATE_RUN_TARGETS, {}).items():
        if numerator not in RESULTS or denominator not in RESULTS:
            continue
        (t_num, flop_num), (t_den, flop_den) = RESULTS[numerator], RESULTS[denominator]
        value = t_num / t_den if of == "time" else (flop_num / t_num) / (flop_den / t_den)
        check_target(config, name, value, at_most=at_most, at_least=at_least, source="separate runs",
                     detail=f"{numerator} {t_num * 1e3:.2f} ms / {denominator} {t_den * 1e3:.2f} ms (medians)")


def target_checks(config) -> list[TargetCheck]:
    """The verdicts of this session so far."""
    return list(config.stash.get(_CHECKS, []))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    _judge_separate_runs(session.config)
    missed = [c for c in target_checks(session.config) if not c.met]
    if missed and session.config.getoption(FAIL_ON_TARGET) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    group.addoption(FAIL_ON_TARGET, action="store_true", default=False,
                    help="fail the run when a speed target (adapter overhead, speed ratio) is missed; without it a "
                         "missed target is reported as MISSED in the summary and the benchmark's extra_info only")


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
