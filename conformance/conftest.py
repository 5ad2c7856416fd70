"""The conformance suite's options, parametrization and report header.

    pytest conformance/                                   every built-in implementation installed here
    pytest conformance/ --backend path/to/impl.py         someone else's (repeatable; module:object works too)
    pytest conformance/ --device cuda --dtype float32     one device, one dtype
    pytest conformance/ -k "torch and peephole"           test ids: implementation-variant-dtype-device-case
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest

from backends.base import DTYPES, Config
from backends.plugin import BackendLoadError, load_backend
from backends.registry import builtin_implementations
from conformance.report import Result, build_matrix, render_text, write_reports
from conformance.runner import COMPARISONS, DIAGNOSES
from spec.cases import CASES_BY_NAME

#: The cases every implementation runs by default, each in both variants.
DEFAULT_CASES = ("small", "T1", "B1", "H1", "I-ne-H", "forget-bias", "saturating", "medium")
#: Opt-in (--large): longer and wider.
LARGE_CASES = ("long",)


def pytest_addoption(parser):
    group = parser.getgroup("lstm-conformance")
    group.addoption("--backend", action="append", default=[], metavar="TARGET",
                    help="run against this implementation instead of the built-in ones: a .py file, a module, "
                         "or module:object (repeatable); 'builtin' adds the built-in ones")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda", "all"),
                    help="auto (default): cpu, plus cuda when a CUDA GPU is visible; all: cpu and cuda")
    group.addoption("--dtype", default="all", choices=("all", *DTYPES), help="float32, float64 or all (default)")
    group.addoption("--large", action="store_true", help="also run the large cases (T=512)")
    group.addoption("--seeds", type=int, default=1, metavar="N",
                    help="run every case with N seeds (its own and the next N-1): the check that verdicts are not flaky")
    group.addoption("--results", action="append", default=[], metavar="DIR",
                    help="check results written by an implementation outside Python for the golden vectors in DIR "
                         "(python -m conformance.golden export DIR); repeatable")
    group.addoption("--report-dir", default="reports", metavar="DIR",
                    help="where the matrix is written as conformance.json and conformance.md (default: reports/)")


def _cuda_visible() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None


def _implementations(config):
    from conformance.golden import ResultsDirectory

    targets = config.getoption("--backend")
    results = []
    for directory in config.getoption("--results"):
        try:
            results.append(ResultsDirectory(directory=directory))
        except (OSError, ValueError) as error:
            raise pytest.UsageError(str(error)) from None
    if not targets:
        return results or builtin_implementations()
    found = list(results)
    for target in targets:
        if target == "builtin":
            found.extend(builtin_implementations())
            continue
        try:
            found.extend(load_backend(target))
        except BackendLoadError as error:
            raise pytest.UsageError(str(error)) from None
    return found


def _devices(config):
    choice = config.getoption("--device")
    if choice == "auto":
        return ("cpu", "cuda") if _cuda_visible() else ("cpu",)
    return ("cpu", "cuda") if choice == "all" else (choice,)


def _dtypes(config):
    choice = config.getoption("--dtype")
    return DTYPES if choice == "all" else (choice,)


def _cases(config):
    names = DEFAULT_CASES + (LARGE_CASES if config.getoption("--large") else ())
    cases = [CASES_BY_NAME[n + suffix] for n in names for suffix in ("", "-peephole")]
    seeds = config.getoption("--seeds")
    if seeds < 1:
        raise pytest.UsageError(f"--seeds must be at least 1, got {seeds}")
    return [case.with_seed(case.seed + k) for case in cases for k in range(seeds)]


def _case_id(case) -> str:
    base = CASES_BY_NAME[case.name]
    return case.name if case.seed == base.seed else f"{case.name}@seed{case.seed}"


def pytest_configure(config):
    config.addinivalue_line("markers", "peephole: cases of the peephole variant")
    config.addinivalue_line("markers", "gradients: gradient comparisons")
    config.addinivalue_line("markers", "gpu: runs on a CUDA device")
    # Loaded here so that a bad --backend stops the run at once with a usage error (exit 4).
    config._lstmc_implementations = _implementations(config)
    config._lstmc_results = []


def implementations(config):
    return config._lstmc_implementations


def pytest_generate_tests(metafunc):
    if "implementation" not in metafunc.fixturenames:
        return
    config = metafunc.config
    params = []
    for impl in implementations(config):
        for device in _devices(config):
            for dtype in _dtypes(config):
                for case in _cases(config):
                    marks = []
                    if case.peephole:
                        marks.append(pytest.mark.peephole)
                    if device == "cuda":
                        marks.append(pytest.mark.gpu)
                    run = Config(variant=case.variant, dtype=dtype, device=device)
                    params.append(pytest.param(impl, run, case, marks=marks, id=f"{impl.id}-{dtype}-{device}-{_case_id(case)}"))
    metafunc.parametrize(("implementation", "run", "case"), params)


def pytest_report_header(config):
    lines = []
    impls = implementations(config)
    lines.append(f"lstm-conformance: devices {', '.join(_devices(config))}; dtypes {', '.join(_dtypes(config))}")
    for impl in impls:
        reason = impl.availability("cpu")
        if reason:
            lines.append(f"  {impl.id}: unavailable: {reason}")
            continue
        env = impl.environment("cpu")
        described = ", ".join(f"{k}={v}" for k, v in env.items())
        lines.append(f"  {impl.id}: {described}")
    return lines


_KINDS = {"test_forward": "outputs", "test_gradients": "gradients"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    kind = _KINDS.get(getattr(item, "originalname", ""))
    callspec = getattr(item, "callspec", None)
    if kind is None or callspec is None or report.when not in ("setup", "call"):
        return report
    if report.when == "setup" and report.passed:
        return report  # the verdict comes with the call
    impl, run, case = callspec.params["implementation"], callspec.params["run"], callspec.params["case"]
    result = Result(impl.id, kind, run.dtype, run.device, _case_id(case), status="FAIL")
    if hasattr(report, "wasxfail"):
        result.status, result.detail = ("known", report.wasxfail.removeprefix("known non-conformance: ")) if report.skipped else ("FAIL", "a known non-conformance passed: remove it from conformance/known_failures.py")
    elif report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        for status in ("not supported", "unavailable"):
            if reason.startswith(status + ": "):
                result.status, result.detail = status, reason[len(status) + 2 :]
    elif report.passed:
        result.status = "pass"
    else:
        failure = [line for line in str(report.longrepr).splitlines() if line.startswith("E ")]
        result.detail = failure[0].removeprefix("E").strip()[:300] if failure else ""
    result.diagnosis = item.stash.get(DIAGNOSES, [])
    comparisons = item.stash.get(COMPARISONS, None)
    if comparisons:
        finite = [c for c in comparisons if np.isfinite(c.worst_error)]
        if finite:
            result.worst_error = max(c.worst_error for c in finite)
            result.worst_ratio = max(c.worst_ratio for c in finite)
    item.config._lstmc_results.append(result)
    return report


def _environment(config) -> dict[str, object]:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "threads (LSTMC_THREADS)": os.environ.get("LSTMC_THREADS", "framework default"),
    }
    for impl in implementations(config):
        if impl.availability("cpu") is None:
            try:
                env[impl.id] = impl.environment("cpu")
            except Exception as error:  # the report must not hide the results
                env[impl.id] = f"environment() failed: {error}"
    return env


def pytest_terminal_summary(terminalreporter, config):
    results = getattr(config, "_lstmc_results", None)
    if not results:
        return
    matrix = build_matrix(results, _environment(config))
    terminalreporter.section("conformance matrix (worst error in eps of the dtype; margin = tolerance / worst error)")
    for line in render_text(matrix).splitlines():
        terminalreporter.write_line(line)
    paths = write_reports(matrix, results, Path(config.getoption("--report-dir")))
    terminalreporter.write_line("written: " + ", ".join(str(p) for p in paths))
