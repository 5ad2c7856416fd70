"""The conformance suite's options, parametrization, worker processes and report.

    pytest conformance/                                   every built-in implementation installed here
    pytest conformance/ --backend path/to/impl.py         someone else's (repeatable; module:object works too)
    pytest conformance/ --device cuda --dtype float32     one device, one dtype
    pytest conformance/ -k "torch and peephole"           test ids: implementation-dtype-device-case
    pytest conformance/ -n auto                           one worker per core (pytest-xdist); same report

Tests run in pytest-xdist worker processes (one unless ``-n`` says otherwise; ``-n 0`` runs in this process,
without the protection, for debuggers): an implementation that crashes or hangs fails its own tests and nothing
else (conformance/isolation.py). Workers steal work (``--dist worksteal``): each starts on whole rows, where a row's
compiled functions, graphs, sessions and processes serve every case of a shape. Every test's verdict travels to
the controller as data (a Result on the test report's user_properties); the controller assembles the matrix,
sorted into the order of a serial run, so ``-n 0``, the default and ``-n auto`` print and write the same report.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from backends.registry import builtin_rows
from backends.rows.results import GoldenError, ResultsDirectory
from conformance import isolation, quantization_report
from conformance.judge import KNOWN, RESULT, UNFINISHED, Verdict, case_id, new_result
from conformance.report import (
    Result,
    RunState,
    Status,
    build_matrix,
    render_text,
    summary_line,
    write_reports,
)
from contract.half_bounds import bound_cases
from contract.loading import BackendLoadError, load_rows
from contract.runtime import cpu_features, cpu_model
from contract.vocabulary import CONFORMANCE_DTYPES, Device, Dtype, Kind
from spec.cases import CASES_BY_NAME, Case, case_set, is_cell

#: Which test function judges which kind of result.
TEST_KINDS = {"test_outputs": Kind.OUTPUTS, "test_gradients": Kind.GRADIENTS}
RESULT_PROPERTY = "lstmc_result"
ENVIRONMENT_PROPERTY = "lstmc_environment"
_SENT = pytest.StashKey[set]()


def pytest_addoption(parser):
    group = parser.getgroup("lstm-conformance")
    group.addoption("--backend", action="append", default=[], metavar="TARGET",
                    help="run against this implementation instead of the built-in ones: a .py file, a module, "
                         "or module:object (repeatable); 'builtin' adds the built-in ones")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda", "all"),
                    help="auto (default): cpu, plus cuda when a CUDA GPU is visible; all: cpu and cuda")
    group.addoption("--dtype", default="all", choices=("all", *map(str, CONFORMANCE_DTYPES)),
                    help="float32, float64, bfloat16, float16 or all (default); a half type is judged by the precision "
                         "policy its row declares, on the cases its bounds are derived for (contract/half_bounds.py)")
    group.addoption("--large", action="store_true", help="also run the large cases (T=512)")
    group.addoption("--compiled", action="store_true",
                    help="also run the compiled rows (torch.compile, torch.export): each compiles per case, minutes a row")
    group.addoption("--seeds", type=int, default=1, metavar="N",
                    help="run every case with N seeds (its own and the next N-1): the check that verdicts are not flaky")
    group.addoption("--results", action="append", default=[], metavar="DIR",
                    help="check results written by an implementation outside Python for the golden vectors in DIR "
                         "(python -m conformance.golden export DIR); repeatable")
    group.addoption("--report-dir", default="reports", metavar="DIR",
                    help="where the matrix is written as conformance.json and conformance.md (default: reports/)")
    group.addoption("--call-timeout", type=_seconds, default=isolation.DEFAULT_CALL_TIMEOUT, metavar="S",
                    help=f"seconds one implementation call may take before it fails as timed out (default "
                         f"{isolation.DEFAULT_CALL_TIMEOUT:g}; 0: no limit)")


def _seconds(text: str) -> float:
    """--call-timeout: a finite number of seconds, 0 (no limit) or more; anything else is a usage error now, not a
    failure of every implementation later (NaN and infinity reach the timers)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or a positive finite number of seconds, got {text!r}")
    return seconds


# ---------------------------------------------------------------------------
# What the run asks for
# ---------------------------------------------------------------------------


def _cuda_visible() -> bool:
    return shutil.which("nvidia-smi") is not None


def _rows(config):
    targets = config.getoption("--backend")
    results = []
    for directory in config.getoption("--results"):
        try:
            results.append(ResultsDirectory(directory=directory))
        except GoldenError as error:
            raise pytest.UsageError(str(error)) from None
    if not targets:
        built = [row for row in builtin_rows() if config.getoption("--compiled") or not row.compiled]
        return results or built
    found = list(results)
    for target in targets:
        if target == "builtin":
            found.extend(row for row in builtin_rows() if config.getoption("--compiled") or not row.compiled)
            continue
        try:
            found.extend(load_rows(target))
        except BackendLoadError as error:
            raise pytest.UsageError(str(error)) from None
    ids = [row.id for row in found]
    if len(set(ids)) != len(ids):
        raise pytest.UsageError(f"implementation ids must be unique in a run; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    return found


def _devices(config) -> tuple[Device, ...]:
    choice = config.getoption("--device")
    if choice == "auto":
        return (Device.CPU, Device.CUDA) if _cuda_visible() else (Device.CPU,)
    return (Device.CPU, Device.CUDA) if choice == "all" else (Device(choice),)


def _dtypes(config):
    choice = config.getoption("--dtype")
    return CONFORMANCE_DTYPES if choice == "all" else (choice,)


def _cases(config):
    seeds = config.getoption("--seeds")
    return [case.with_seed(case.seed + k) for case in case_set(large=config.getoption("--large")) for k in range(seeds)]


def _case_id(case) -> str:
    return case_id(case, CASES_BY_NAME[case.name].seed)


def _in_column(dtype, kind: Kind, case) -> bool:
    """Whether the matrix judges ``kind`` on ``case`` in ``dtype``. A half type's outputs and gradients are judged on the
    cases whose bounds the committed table holds (every case of the default set, each with its own seed:
    contract/half_bounds.py); another seed, or the large cases, have no derived bound, and are not asked."""
    if not Dtype(dtype).half:
        return True
    return case.name in bound_cases() and case.seed == CASES_BY_NAME[case.name].seed


def _matrix(config, kind: Kind):
    """(row, dtype, device, case) of every test of ``kind`` the run can have, in the order of a serial run."""
    for row in rows(config):
        for device in _devices(config):
            for dtype in _dtypes(config):
                for case in _cases(config):
                    if _in_column(dtype, kind, case):
                        yield row, dtype, device, case


def rows(config):
    return config._lstmc_rows


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


# ---------------------------------------------------------------------------
# Configuration: usage errors first, then the worker processes
# ---------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "peephole: cases with peepholes")
    config.addinivalue_line("markers", "gradients: gradient comparisons")
    config.addinivalue_line("markers", "gpu: runs on a CUDA device")
    config.addinivalue_line("markers", "layer: cases with layer features (stacks, directions, projection, clips, lengths, masks)")
    if config.getoption("--seeds") < 1:
        raise pytest.UsageError(f"--seeds must be at least 1, got {config.getoption('--seeds')}")
    # Loaded here so that a bad --backend stops the run at once with a usage error (exit 4).
    config._lstmc_rows = _rows(config)
    isolation.watch_interrupts()
    if _is_worker(config):
        isolation.start_worker(config.workerinput["lstmc_crash_dir"], config.workerinput["workerid"])
        return
    _check_report_dir(Path(config.getoption("--report-dir")))
    _isolate_in_workers(config)
    config.pluginmanager.register(Controller(config), "lstm-conformance-controller")


def _check_report_dir(directory: Path) -> None:
    """A report directory that cannot be written is a usage error now, not a traceback after the whole run."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        raise pytest.UsageError(f"--report-dir {directory}: cannot write there ({error.strerror or error})") from None


def _isolate_in_workers(config) -> None:
    """Run the tests in a pytest-xdist worker unless told otherwise (-n N, -n 0, -p no:xdist, --pdb), scheduled by
    work stealing unless --dist says otherwise: each worker starts on one contiguous share of the tests (whole rows,
    so a row's compiled functions, graphs, sessions and processes serve its cases in one worker) and takes tests from
    the others' ends when it runs out. (--dist loadgroup would keep rows whole too, but pytest-xdist does not give the
    work of a crashed worker to its replacement there: the run would wait for ever.)"""
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("collectonly"):
        return
    option = config.option
    if option.numprocesses is None and option.dist == "no" and not option.tx and not (
        config.getoption("usepdb") or config.getoption("trace", False)
    ):
        option.numprocesses, option.dist, option.tx = 1, "load", ["popen"]
    explicit = any(arg == "--dist" or arg.startswith("--dist=") for arg in config.invocation_params.args)
    if option.dist == "load" and not explicit:
        option.dist = "worksteal"
    if option.dist != "no" and option.maxworkerrestart is None:
        # Every crash of an implementation costs a worker; allow one per test of the run (xdist's default, 4 per
        # worker, would stop the run at the fifth crash), and a few more for the workers themselves.
        tests = sum(1 for kind in TEST_KINDS.values() for _ in _matrix(config, kind))
        option.maxworkerrestart = str(tests + 4 * max(1, len(option.tx or ()), int(option.numprocesses or 1)))


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    if "row" not in metafunc.fixturenames:
        return
    params = []
    for row, dtype, device, case in _matrix(metafunc.config, TEST_KINDS[metafunc.function.__name__]):
        marks = []
        if case.layer.peephole:
            marks.append(pytest.mark.peephole)
        if not is_cell(case):
            marks.append(pytest.mark.layer)
        if device == Device.CUDA:
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(row, str(dtype), str(device), case, marks=marks,
                                   id=f"{row.id}-{dtype}-{device}-{_case_id(case)}"))
    metafunc.parametrize(("row", "dtype", "device", "case"), params)


def _test_key(nodeid: str) -> tuple[str, str]:
    """(test function, parameter id) of a test id such as conformance/test_outputs.py::test_outputs[torch/nn.LSTM-...]
    (with pytest-xdist's @group suffix gone)."""
    name = nodeid.split("::", 1)[-1]
    function, _, parameters = name.partition("[")
    return function, parameters.rsplit("]", 1)[0]


def _conformance_test(item) -> tuple[Kind, object, str, str, object] | None:
    kind = TEST_KINDS.get(getattr(item, "originalname", ""))
    callspec = getattr(item, "callspec", None)
    if kind is None or callspec is None or not isinstance(callspec.params.get("case"), Case):
        return None  # not a conformance test, or the empty set of a kind this run asks nothing of (--dtype bfloat16)
    return kind, callspec.params["row"], callspec.params["dtype"], callspec.params["device"], callspec.params["case"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Every conformance test has its result before it runs, so that whatever happens leaves one."""
    test = _conformance_test(item)
    if test is None:
        return
    kind, row, dtype, device, case = test
    result = item.stash[RESULT] = new_result(row, kind, dtype, device, _case_id(case))
    if _is_worker(item.config):
        inputs = item.config.workerinput
        isolation.note_current(inputs["lstmc_crash_dir"], inputs["workerid"], item.nodeid, result.as_dict(),
                               item.config.getoption("--call-timeout"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    result = item.stash.get(RESULT, None)
    if result is None or report.when not in ("setup", "call") or (report.when == "setup" and report.passed):
        return report
    if hasattr(report, "wasxfail"):  # a known non-conformance failed as documented
        result.status, result.detail = Status.KNOWN.value, item.stash[KNOWN]
    elif report.failed and result.status == Status.PASS:  # a strict xfail that passed
        result.status, result.detail = Status.FAIL.value, "a known non-conformance passed: remove it from the row's known_failures"
    elif report.failed and result.detail == UNFINISHED:
        # Something outside the judgement failed (a fixture, the suite itself): say what, from the exception.
        error = call.excinfo.value if call.excinfo is not None else None
        result.status, result.detail = Status.FAIL.value, f"{type(error).__name__}: {error}" if error is not None else "the test failed"
    if report.when == "call" or report.skipped:
        _attach_environment(item, report)
    if report.failed and call.excinfo is not None and isinstance(call.excinfo.value, Verdict) and item.config.option.tbstyle == "auto":
        # The verdict says everything (what, worst error, where, tolerance, diagnosis); the suite's own frames would
        # only bury it. --tb=long (or short, native) asks for them.
        report.longrepr = str(call.excinfo.value)
    report.user_properties.append((RESULT_PROPERTY, result.as_dict()))
    return report


def _attach_environment(item, report) -> None:
    """The first report of each row from this process carries that row's environment (taken here, where the row's
    framework is imported to run it anyway), as plain data."""
    row, device = item.callspec.params["row"], item.callspec.params["device"]
    sent = item.config.stash.setdefault(_SENT, set())
    if row.id in sent:
        return
    sent.add(row.id)
    reason = row.availability(device)
    environment = f"unavailable: {reason}" if reason else row.environment(device)
    report.user_properties.append((ENVIRONMENT_PROPERTY, {row.id: json.loads(json.dumps(environment, default=str))}))


def installed_versions() -> dict[str, str]:
    """The versions of the frameworks installed here, read from their metadata (nothing is imported)."""
    found = {}
    for name in ("torch", "tensorflow-cpu", "tensorflow", "tf-keras", "keras", "jax", "jaxlib", "flax", "onnx", "onnxruntime",
                 "onnxscript", "tf2onnx"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------------------
# The controller: results from every worker, crashes, the header and the report
# ---------------------------------------------------------------------------


class Controller:
    """Collects every test's result (from this process or from xdist workers), turns a worker's death into its test's
    result, and writes the matrix once, in the order of a serial run."""

    def __init__(self, config):
        self.config = config
        self.results: list[Result] = []
        self.environments: dict[str, object] = {}
        self.crash_dir = tempfile.mkdtemp(prefix="lstmc-workers-")
        order = {
            "kind": {str(k): n for n, k in enumerate(Kind)},
            "implementation": {row.id: n for n, row in enumerate(rows(config))},
            "device": {str(d): n for n, d in enumerate(_devices(config))},
            "dtype": {str(d): n for n, d in enumerate(_dtypes(config))},
        }
        cases = {_case_id(c): n for n, c in enumerate(_cases(config))}

        def sort_key(r: Result) -> tuple[int, ...]:
            # A serial run's order: test_outputs' items, then test_gradients'; each by row, device, dtype, case.
            fields = tuple(order[field].get(getattr(r, field), len(order[field])) for field in order)
            return (*fields, cases.get(r.case, len(cases)))

        self.sort_key = sort_key
        # Every conformance test this run can have, by (test function, parameter id): the selected ones (the
        # collection, after -k and deselection) are what a complete run judges; the rest of a run cut short is
        # "not run" in the report, never silently absent.
        self.tests = {
            (function, f"{row.id}-{dtype}-{device}-{_case_id(case)}"): (row, kind, str(dtype), str(device), case)
            for function, kind in TEST_KINDS.items() for row, dtype, device, case in _matrix(config, kind)
        }
        self.selected: list[tuple[str, str]] | None = None

    def _select(self, nodeids) -> None:
        if self.selected is None:  # every worker collects the same tests; the first says which
            keys = (_test_key(nodeid) for nodeid in nodeids)
            self.selected = [key for key in keys if key in self.tests]

    def pytest_collection_finish(self, session):
        if session.items:  # this process collected (no workers)
            self._select(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self._select(ids)

    def _not_run(self, exitstatus) -> tuple[list[Result], RunState | None]:
        """A "not run" result for every selected test without a verdict, and the run's state."""
        if self.selected is None:
            return [], None
        judged = {(r.implementation, r.kind, r.dtype, r.device, r.case) for r in self.results}
        ended = {pytest.ExitCode.INTERRUPTED: "interrupted"}.get(exitstatus, "")
        missing = []
        for key in self.selected:
            row, kind, dtype, device, case = self.tests[key]
            if (row.id, str(kind), dtype, device, _case_id(case)) not in judged:
                missing.append(Result(row.id, str(kind), dtype, device, _case_id(case), status=Status.NOT_RUN.value,
                                      detail=f"not run: the run {ended or 'ended'} before this test"))
        if missing and not ended:
            ended = f"ended early, exit status {int(exitstatus)}"
        return missing, RunState(expected=len(self.selected), judged=len(self.selected) - len(missing), ended=ended)

    def pytest_runtest_logreport(self, report):
        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                self.results.append(Result(**value))
            elif name == ENVIRONMENT_PROPERTY:
                for row_id, environment in value.items():
                    self.environments.setdefault(row_id, environment)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        node.workerinput["lstmc_crash_dir"] = self.crash_dir

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem, report, sched):
        status = isolation.worker_exit_status(report.node)
        result, how = isolation.crash_result(self.crash_dir, report.node.workerinput["workerid"], crashitem, status)
        report.longrepr = f"{report.longrepr}\n{how}"
        if result is not None:
            result.update(status=Status.FAIL.value, detail=how, declared=False)
            report.user_properties.append((RESULT_PROPERTY, result))

    def environment(self) -> dict[str, object]:
        """What the results depend on: this machine and run, then each row's own environment as the process that ran
        its tests recorded it (where its framework was imported anyway), in the rows' order."""
        env: dict[str, object] = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": f"{cpu_model()} ({', '.join(cpu_features()) or 'no ISA flags read'})",
            "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "threads (LSTMC_THREADS)": os.environ.get("LSTMC_THREADS", "framework default"),
            "call timeout (s)": self.config.getoption("--call-timeout"),
        }
        for row in rows(self.config):
            if row.id in self.environments:
                env[row.id] = self.environments[row.id]
        return env

    def pytest_report_header(self, config):
        devices, dtypes = ", ".join(map(str, _devices(config))), ", ".join(map(str, _dtypes(config)))
        versions = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
        return [f"lstm-conformance: devices {devices}; dtypes {dtypes}; call timeout {config.getoption('--call-timeout'):g} s; "
                f"{len(rows(config))} rows (each row's environment is in the report)",
                f"  {cpu_model()} ({', '.join(cpu_features()) or 'no ISA flags read'}); {versions}"]

    def pytest_terminal_summary(self, terminalreporter, exitstatus):
        if self.config.option.collectonly:
            return
        not_run, run = self._not_run(exitstatus)
        if not self.results and not not_run:
            return
        results = sorted(self.results + not_run, key=self.sort_key)
        matrix = build_matrix(results, self.environment(), run)
        terminalreporter.section("conformance matrix (cases covered; worst error in eps of the dtype, margin = tolerance / worst error)")
        width = max(80, shutil.get_terminal_size((120, 24)).columns)
        for line in render_text(matrix, width).splitlines():
            terminalreporter.write_line(line)
        directory = Path(self.config.getoption("--report-dir"))
        paths = write_reports(matrix, results, directory)
        quantized = quantization_report.write(results, directory)
        terminalreporter.write_line("")
        also = f"; the quantized rows: {quantized[0]}" if quantized else ""
        terminalreporter.write_line(f"{summary_line(matrix)}; report: {paths[1]} (and {paths[0].name}){also}; skip reasons: -rs")

    def pytest_unconfigure(self, config):
        shutil.rmtree(self.crash_dir, ignore_errors=True)
