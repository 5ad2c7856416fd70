"""How the benchmarks time and judge: FLOP counts, interleaved rounds, rounds sized to a time, and speed targets.

A library module (the benchmark modules and tests import it; bench/conftest.py only wires it into pytest).

FLOP convention (as DeepBench and most LSTM papers): 8 * B * H * (I + H) * T per forward pass (the two matrix
products; elementwise work is not counted); a backward pass counts twice that, forward + backward three times.

Speed targets (an adapter's overhead, a ratio to a native LSTM, the spec's speed) are judged in one place,
:func:`check_target`: every verdict goes to the "speed targets" section of the terminal summary (MISSED in red)
and, for a target a test measured, to its benchmark's extra_info["targets"]. A missed target fails the run only
with --bench-fail-on-target (as pytest-benchmark's --benchmark-compare-fail fails a run on a regression): on a
shared machine a ratio can miss by a few percent for reasons that have nothing to do with the code, so by default
a benchmark run reports and does not fail.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from backends.registry import builtin_rows
from contract.row import Row
from contract.vocabulary import HALF_DTYPES, Device, Dtype

#: name -> (median seconds, FLOPs) of the benchmarks run in this session (measure(), bench/conftest.py).
RESULTS: dict[str, tuple[float, float]] = {}

FAIL_ON_TARGET = "--bench-fail-on-target"


def lstm_flop(T: int, B: int, I: int, H: int) -> float:
    """One forward pass of one LSTM direction over I input features: 8 B H (I + H) T."""
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


@dataclass(frozen=True)
class Rounds:
    """How many timed rounds a configuration gets: as many as fit ``seconds``, at least ``least`` and at most
    ``most`` (a call slower than seconds / least gets ``least``: a median of a few)."""

    seconds: float
    least: int
    most: int

    def count(self, once: float) -> int:
        return int(max(self.least, min(self.most, self.seconds / max(once, 1e-6))))


def time_rounds(benchmark, run: Callable[[], object], rounds: Rounds, once: float) -> float:
    """Time ``run`` (already warmed up; one call took ``once`` seconds) in ``rounds.count(once)`` rounds with
    pytest-benchmark; the median in seconds."""
    benchmark.pedantic(run, rounds=rounds.count(once), iterations=1, warmup_rounds=0)
    return benchmark.stats.stats.median


def timed_call(run: Callable[[], object]) -> float:
    """The seconds one call of ``run`` takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# What a run measures: its rows, devices and dtypes (the options are bench/conftest.py's)
# ---------------------------------------------------------------------------


def bench_rows(config) -> list[Row]:
    """The rows of this run: every built-in one, or those whose id contains a --bench-impl text."""
    wanted = config.getoption("--bench-impl")
    # A compiled row (seconds to minutes of compilation per shape) only when a wanted text names its compiler.
    return [row for row in builtin_rows()
            if (not wanted or any(w in row.id for w in wanted))
            and (not row.compiled or any(w in row.id and ("compile" in w or "export" in w) for w in wanted))]


def bench_devices(config) -> tuple[Device, ...]:
    """The devices of this run (--bench-device): auto is cpu, plus cuda when nvidia-smi is there."""
    choice = config.getoption("--bench-device")
    if choice == "auto":
        return (Device.CPU, Device.CUDA) if shutil.which("nvidia-smi") else (Device.CPU,)
    return (Device(choice),)


def bench_dtypes(config, device: str) -> tuple[Dtype, ...]:
    """--bench-dtype if given; else float32 and the half types (on the CPU only the rows judged in a half type time
    it: bench/test_matrix.py)."""
    chosen = tuple(Dtype(d) for d in config.getoption("--bench-dtype"))
    if chosen:
        return chosen
    return (Dtype.FLOAT32, *HALF_DTYPES)


# ---------------------------------------------------------------------------
# Speed targets
# ---------------------------------------------------------------------------


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


CHECKS = pytest.StashKey[list[TargetCheck]]()
SEPARATE_RUN_TARGETS = pytest.StashKey[dict[str, tuple]]()


def check_target(config, name: str, value: float, *, at_most: float | None = None, at_least: float | None = None,
                 source: str, detail: str = "", benchmark=None) -> TargetCheck:
    """Judge one speed target (exactly one of at_most and at_least): record the verdict for the terminal
    summary and, given the benchmark fixture, in its extra_info["targets"][name]. It never fails the test;
    a missed target fails the run at its end with --bench-fail-on-target (bench/conftest.py)."""
    if (at_most is None) == (at_least is None):
        raise TypeError("check_target: give exactly one of at_most and at_least")
    limit = at_most if at_most is not None else at_least
    check = TargetCheck(name, float(value), float(limit), at_most is not None, source, detail)
    config.stash.setdefault(CHECKS, []).append(check)
    if benchmark is not None:
        benchmark.extra_info.setdefault("targets", {})[name] = {
            "value": check.value, "target": check.target, "verdict": check.verdict, "detail": detail,
        }
    return check


def separate_run_target(config, name: str, numerator: str, denominator: str, *, of: Literal["time", "rate"],
                        at_most: float | None = None, at_least: float | None = None) -> None:
    """A target on the ratio of two separately timed results (measure()'s names), numerator's over
    denominator's median time or FLOP rate. Judged by check_target() at the end of the session, when
    both were timed in it."""
    if of not in ("time", "rate"):
        raise ValueError(f"separate_run_target: of must be 'time' or 'rate', not {of!r}")
    config.stash.setdefault(SEPARATE_RUN_TARGETS, {})[name] = (numerator, denominator, of, at_most, at_least)


def judge_separate_runs(config) -> None:
    """check_target() for every separate-run target whose two results were timed in this session."""
    for name, (numerator, denominator, of, at_most, at_least) in config.stash.get(SEPARATE_RUN_TARGETS, {}).items():
        if numerator not in RESULTS or denominator not in RESULTS:
            continue
        (t_num, flop_num), (t_den, flop_den) = RESULTS[numerator], RESULTS[denominator]
        value = t_num / t_den if of == "time" else (flop_num / t_num) / (flop_den / t_den)
        check_target(config, name, value, at_most=at_most, at_least=at_least, source="separate runs",
                     detail=f"{numerator} {t_num * 1e3:.2f} ms / {denominator} {t_den * 1e3:.2f} ms (medians)")


def target_checks(config) -> list[TargetCheck]:
    """The verdicts of this session so far."""
    return list(config.stash.get(CHECKS, []))


__all__ = [
    "CHECKS", "FAIL_ON_TARGET", "RESULTS", "SEPARATE_RUN_TARGETS", "Rounds", "TargetCheck", "bench_devices", "bench_rows",
    "bench_dtypes", "check_target", "interleaved", "judge_separate_runs", "lstm_flop", "ratio", "separate_run_target",
    "target_checks", "time_rounds", "timed_call",
]
