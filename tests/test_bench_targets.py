"""Speed targets in the benchmarks: a missed one is reported (MISSED in the summary, the benchmark's
extra_info) and fails the run only with --bench-fail-on-target.

Each test runs a tiny pytest session with the benchmarks' pytest wiring (bench/conftest.py, loaded as a plugin) on a
test file that reports made-up ratios through the same helpers (bench/timing.py) as bench/test_*_speed.py; nothing
is really timed.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")

from bench import timing  # noqa: E402

pytest_plugins = ["pytester"]

# The flax ratio that once failed a whole `dev.py bench` on a busy machine, and one that is met.
SPEED_TEST = """
def test_side_by_side(benchmark, speed_target):
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    missed = speed_target("flax adapter / native forward", 1.068, at_most=1.05, detail="medians of 21 interleaved rounds")
    met = speed_target("scan peephole / flax native forward", 1.02, at_most=1.3)
    assert (missed.met, met.met) == (False, True)
    targets = benchmark.extra_info["targets"]
    assert targets["flax adapter / native forward"] == {
        "value": 1.068, "target": "<= 1.05", "verdict": "MISSED", "detail": "medians of 21 interleaved rounds",
    }
    assert targets["scan peephole / flax native forward"]["verdict"] == "met"
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_speed=source)
    return pytester.runpytest_inprocess("-p", "bench.conftest", "-p", "no:cacheprovider", *args)


def test_a_missed_target_is_reported_and_does_not_fail_the_run(pytester):
    result = run(pytester, SPEED_TEST)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*speed targets*",
        "*flax adapter / native forward: 1.068 (target <= 1.05; medians of 21 interleaved rounds): MISSED [[]test_speed.py::test_side_by_side[]]",
        "*scan peephole / flax native forward: 1.020 (target <= 1.3): met*",
        "1 of 2 speed targets MISSED (reported, not failing the run; --bench-fail-on-target fails it)",
    ])


def test_a_missed_target_fails_the_run_when_asked(pytester):
    result = run(pytester, SPEED_TEST, "--bench-fail-on-target")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=1)  # the test measured and passed; the run fails on its verdict
    result.stdout.fnmatch_lines([
        "*flax adapter / native forward: 1.068*MISSED*",
        "1 of 2 speed targets MISSED: failing the run (--bench-fail-on-target)",
    ])


def test_met_targets_pass_with_the_option(pytester):
    result = run(pytester, SPEED_TEST.replace("1.068", "1.01").replace("(False, True)", "(True, True)")
                 .replace('"MISSED", "detail"', '"met", "detail"'), "--bench-fail-on-target")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["2 of 2 speed targets met"])


def test_targets_on_separate_runs_are_judged_at_the_end(pytester, monkeypatch):
    """Ratios of separately timed figures (the spec's share of the matrix-product rate, torch's
    separate-run ratios) go through the same check when the session ends."""
    monkeypatch.setattr(timing, "RESULTS", {"spec forward": (0.2, 1e9), "matrix product": (0.03, 2e9)})
    source = """
from bench.timing import separate_run_target

def test_register(request):
    separate_run_target(request.config, "spec forward rate / matrix-product rate", "spec forward", "matrix product",
                        of="rate", at_least=0.55)
    separate_run_target(request.config, "never timed", "absent", "matrix product", of="time", at_most=1.0)
"""
    quiet = run(pytester, source)
    assert quiet.ret == pytest.ExitCode.OK, quiet.stdout.str()
    quiet.stdout.fnmatch_lines(["*spec forward rate / matrix-product rate: 0.075 (target >= 0.55; *): MISSED [[]separate runs[]]"])
    assert "never timed" not in quiet.stdout.str()
    failing = run(pytester, source, "--bench-fail-on-target")
    assert failing.ret == pytest.ExitCode.TESTS_FAILED, failing.stdout.str()


def test_a_run_without_targets_says_nothing_about_them(pytester):
    result = run(pytester, "def test_nothing():\n    pass\n", "--bench-fail-on-target")
    assert result.ret == pytest.ExitCode.OK
    assert "speed targets" not in result.stdout.str()


@pytest.mark.parametrize(("value", "kwargs", "met"), [
    (1.05, {"at_most": 1.05}, True), (1.0501, {"at_most": 1.05}, False),
    (1.25, {"at_least": 1.25}, True), (1.2499, {"at_least": 1.25}, False),
])
def test_check_target_verdicts(value, kwargs, met):
    check = timing.TargetCheck("r", value, next(iter(kwargs.values())), "at_most" in kwargs, "here")
    assert check.met is met and check.verdict == ("met" if met else "MISSED")


def test_check_target_needs_exactly_one_limit(pytestconfig):
    with pytest.raises(TypeError):
        timing.check_target(pytestconfig, "r", 1.0, source="here")
    with pytest.raises(TypeError):
        timing.check_target(pytestconfig, "r", 1.0, at_most=2.0, at_least=0.5, source="here")
