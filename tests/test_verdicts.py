"""The suite's verdicts cannot be fooled: every path from an implementation's answer to "pass" is attacked
here by a misbehaving plug-in, run through `pytest conformance/` as a user would.

Each test reproduces a way the suite was fooled (or blamed a correct implementation, or lost its report)
and fails without the defence that stops it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conformance.isolation import deadline
from contract.answers import Cotangents
from contract.errors import ResultError, TimedOut
from contract.half_bounds import bound_cases
from contract.loading import load_rows
from spec.cases import case_by_name, case_set, make_case_data
from tests.suite import EXAMPLE, example_with, plugin, run_suite

FLOAT64_FORWARD = ("--dtype", "float64", "-k", "test_outputs")


# ---------------------------------------------------------------------------
# 1. What an implementation receives cannot corrupt anything
# ---------------------------------------------------------------------------


def test_zeroing_the_peepholes_it_was_given_is_a_failure_naming_p(tmp_path):
    # Before: the float64 reference was computed after the call, from the same (now zeroed) arrays: all passed.
    zeroes = example_with(tmp_path, "zero_p", "bad/zeroes-p", {
        "    W, U, b, p = params.W, params.U, params.b, params.p\n":
        "    if params.p is not None:\n        params.p[...] = 0\n    W, U, b, p = params.W, params.U, params.b, params.p\n",
    })
    run = run_suite(tmp_path, "--backend", zeroes, *FLOAT64_FORWARD)
    assert run.returncode == 1, run.output
    results = run.judged("bad/zeroes-p")
    peephole = [r for r in results if r["case"].endswith("peephole")]
    assert peephole and all(r["status"] == "FAIL" and "modified its input layer 0 direction 0 p in place" in r["detail"]
                            for r in peephole)
    assert all(r["status"] == "pass" for r in results if not r["case"].endswith("peephole"))


def test_a_row_that_zeroes_x_in_place_fails_and_cannot_hurt_the_rows_after_it(tmp_path):
    # Before: the zeroed x stayed in the shared case cache, and the next implementation failed its gradients.
    mutate = {"    return grads\n": "    x[...] = 0.0\n    return grads\n",
              "    return h_seq, h_T, c_T\n": "    x[...] = 0.0\n    return h_seq, h_T, c_T\n"}
    before = example_with(tmp_path, "zero_x_before", "bad/zeroes-x-before", mutate)
    after = example_with(tmp_path, "zero_x_after", "bad/zeroes-x-after", mutate)
    # In one process (-n 0): the shared cache is where the harm was done.
    run = run_suite(tmp_path, "--backend", before, "--backend", str(EXAMPLE), "--backend", after, "-n", "0", "-m", "not layer")
    assert run.returncode == 1, run.output
    assert {r["status"] for r in run.judged("example/numpy")} == {"pass"}
    for row in ("bad/zeroes-x-before", "bad/zeroes-x-after"):
        results = run.judged(row)
        assert results and all(r["status"] == "FAIL" and "modified its input x in place" in r["detail"] for r in results), row


def test_writing_its_result_into_the_callers_c0_is_named_as_such_not_as_a_wrong_answer(tmp_path):
    # Before: the reference was computed from the overwritten c0 and the right outputs were "wrong".
    writes = example_with(tmp_path, "writes_c0", "bad/writes-c0", {
        "def forward(params, x, h0, c0, *, forget_bias):\n    h_seq, h_T, c_T, _, _ = _run(params, x, h0, c0, forget_bias)\n":
        "def forward(params, x, h0, c0, *, forget_bias):\n    h_seq, h_T, c_T, _, _ = _run(params, x, h0, c0, forget_bias)\n"
        "    c0[...] = c_T\n",
    })
    run = run_suite(tmp_path, "--backend", writes, *FLOAT64_FORWARD)
    assert run.returncode == 1, run.output
    results = run.judged("bad/writes-c0")
    assert results and all("modified its input c0 in place" in r["detail"] for r in results)
    assert "worst error" not in run.stdout.split("modified its input c0")[0].splitlines()[-1]


# ---------------------------------------------------------------------------
# 2. Wrong answers are failures, not skips; coverage is stated
# ---------------------------------------------------------------------------


def test_computing_float64_only_when_T_is_1_fails_every_other_case(tmp_path):
    # Before: the float32 answers were "not supported" (exit 0) and every cell read "pass".
    lazy = example_with(tmp_path, "float64_when_T1", "bad/float64-only-for-T1", append='''
        _forward = forward

        def forward(params, x, h0, c0, *, forget_bias):
            if x.shape[0] == 1:
                return _forward(params, x, h0, c0, forget_bias=forget_bias)
            low = {name: value.astype(np.float32) for name, value in params.tensors().items()}
            from spec import LSTMParams
            h_seq, h_T, c_T = _forward(LSTMParams(**low), x.astype(np.float32), h0.astype(np.float32), c0.astype(np.float32), forget_bias=forget_bias)
            return h_seq, h_T, c_T
    ''')
    run = run_suite(tmp_path, "--backend", lazy, *FLOAT64_FORWARD)
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.judged("bad/float64-only-for-T1")}
    assert by_case["T1"]["status"] == "pass"
    others = [r for name, r in by_case.items() if not name.startswith("T1")]
    assert others and all(r["status"] == "FAIL" for r in others)
    assert "h_seq: wrong dtype: expected float64, got float32" in by_case["small"]["detail"]
    assert run.cell("bad/float64-only-for-T1", "float64 cpu outputs")["status"] == "FAIL"


def test_not_supported_at_run_time_is_partial_coverage_never_pass(tmp_path):
    picky = example_with(tmp_path, "picky", "odd/only-short", append='''
        _forward = forward

        def forward(params, x, h0, c0, *, forget_bias):
            if x.shape[0] > 5:
                from contract.errors import NotSupported
                raise NotSupported("unavailable: sequences longer than 5 steps")  # a reason that looks like another status
            return _forward(params, x, h0, c0, forget_bias=forget_bias)
    ''')
    run = run_suite(tmp_path, "--backend", picky, *FLOAT64_FORWARD)
    assert run.returncode == 0, run.output
    cell = run.cell("odd/only-short", "float64 cpu outputs")
    long_cases = {"B1", "B1-peephole", "saturating", "saturating-peephole", "medium", "medium-peephole"}
    # The cell's 18 cases and the layer's one case without features ("one-layer"): a plain cell.
    assert cell["status"] == "partial" and cell["denominator"] == 19 and cell["covered"] == 19 - len(long_cases)
    assert "partial 13/19" in run.stdout
    skipped = [r for r in run.results("odd/only-short") if r["status"] != "pass" and not r["declared"]]
    # The verdict travels as data: a reason that starts like another status is still "not supported", intact.
    assert {r["case"] for r in skipped} == long_cases
    assert all(r["status"] == "not supported" and not r["declared"] and r["detail"].startswith("unavailable: ") for r in skipped)


def test_denominators_leave_out_what_an_implementation_declares_it_does_not_do(tmp_path):
    swapped = example_with(tmp_path, "swapped", "bad/swapped-standard-only", {
        'VARIANTS = ("standard", "peephole")': 'VARIANTS = ("standard",)',
        "W, U, b, p = params.W, params.U, params.b, params.p": "W, U, b, p = params.W[[0, 2, 1, 3]], params.U, params.b, params.p",
    })
    run = run_suite(tmp_path, "--backend", swapped, *FLOAT64_FORWARD)
    assert run.returncode == 1
    cell = run.cell("bad/swapped-standard-only", "float64 cpu outputs")
    # The 9 standard cell cases and the layer's plain "one-layer" run; the peephole cases and every layer feature are
    # declared not supported: asked 46, FAIL 10/10 (not "FAIL 10/46", which would read as mostly passing).
    assert (cell["status"], cell["failed"], cell["denominator"], cell["asked"]) == ("FAIL", 10, 10, 46)
    assert "FAIL 10/10" in run.stdout


# ---------------------------------------------------------------------------
# 3. One implementation cannot take the run down
# ---------------------------------------------------------------------------

SEGFAULT_ON_SMALL = '''
    import ctypes
    _forward = forward

    def forward(params, x, h0, c0, *, forget_bias):
        if x.shape == (4, 3, 5):  # the "small" cases only
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        return _forward(params, x, h0, c0, forget_bias=forget_bias)
'''


def test_a_segfault_is_that_rows_failure_and_the_run_and_report_survive(tmp_path):
    # Before: exit 139, no matrix, no report.
    crashing = example_with(tmp_path, "segfaults", "bad/segfaults", append=SEGFAULT_ON_SMALL)
    run = run_suite(tmp_path, "--backend", crashing, "--backend", str(EXAMPLE), *FLOAT64_FORWARD)
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.judged("bad/segfaults")}
    crashing_cases = ("small", "small-peephole", "one-layer")  # x (4, 3, 5), the shape it crashes on
    for case in crashing_cases:
        assert by_case[case]["status"] == "FAIL"
        assert by_case[case]["detail"].startswith("crashed: signal 11 (SIGSEGV"), by_case[case]["detail"]
        assert "segfaults.py" in by_case[case]["detail"] and "in forward" in by_case[case]["detail"]
    assert all(r["status"] == "pass" for name, r in by_case.items() if name not in crashing_cases)
    assert {r["status"] for r in run.judged("example/numpy")} == {"pass"}
    assert "conformance matrix" in run.stdout


def test_a_call_that_sleeps_times_out_and_the_run_goes_on(tmp_path):
    sleepy = example_with(tmp_path, "sleeps", "bad/sleeps", append='''
        import time
        _forward = forward

        def forward(params, x, h0, c0, *, forget_bias):
            if x.shape == (4, 3, 5):
                time.sleep(600)
            return _forward(params, x, h0, c0, forget_bias=forget_bias)
    ''')
    run = run_suite(tmp_path, "--backend", sleepy, "--call-timeout", "1", *FLOAT64_FORWARD)
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("bad/sleeps")}
    assert by_case["small"]["status"] == "FAIL" and by_case["small"]["detail"].startswith("timed out after 1 s")
    assert by_case["T1"]["status"] == "pass"


def test_a_call_that_never_returns_to_python_is_ended_and_reported_as_timed_out(tmp_path):
    # As C code that holds the thread (a kernel that never returns): the time limit's signal never reaches
    # the interpreter, so the hard stop ends the worker, and the controller reports the time-out.
    stuck = example_with(tmp_path, "stuck", "bad/stuck", append='''
        import signal
        import time
        _forward = forward

        def forward(params, x, h0, c0, *, forget_bias):
            if x.shape == (4, 3, 5):
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                time.sleep(600)
            return _forward(params, x, h0, c0, forget_bias=forget_bias)
    ''')
    run = run_suite(tmp_path, "--backend", stuck, "--call-timeout", "1", "--dtype", "float64",
                    "-k", "test_outputs and (small and not peephole or T1)")
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("bad/stuck")}
    assert by_case["small"]["status"] == "FAIL"
    assert by_case["small"]["detail"].startswith("timed out after 1 s: the call did not return to Python"), by_case["small"]["detail"]
    assert by_case["T1"]["status"] == "pass"


def test_a_framework_whose_import_raises_oserror_is_unavailable_with_the_real_error(tmp_path):
    # Before: INTERNALERROR in the report header, even with its tests deselected.
    broken = tmp_path / "site" / "onnxruntime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise OSError('libonnxruntime.so.1: cannot open shared object file')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    run = run_suite(tmp_path, "-k", "onnxruntime and small and not peephole", "--dtype", "float32", env=env)
    assert run.returncode == 0 and "INTERNALERROR" not in run.output, run.output
    (result,) = [r for r in run.results("onnxruntime/LSTM") if r["kind"] == "outputs"]
    assert result["status"] == "unavailable"
    assert "import onnxruntime failed: OSError: libonnxruntime.so.1" in result["detail"]
    assert run.report["environment"]["onnxruntime/LSTM"].startswith("unavailable: import onnxruntime failed: OSError")
    # Its tests deselected, the run neither stumbles over it nor imports it to describe it.
    deselected = run_suite(tmp_path, "-k", "torch/nn.LSTM and small and not peephole", "--dtype", "float64", env=env)
    assert deselected.returncode == 0 and "INTERNALERROR" not in deselected.output, deselected.output
    assert "onnxruntime/LSTM" not in deselected.report["environment"]


# ---------------------------------------------------------------------------
# 4. Scale-out: in-process, one worker and two workers give the same report
# ---------------------------------------------------------------------------


def _matrix_section(stdout: str) -> str:
    lines = stdout.splitlines()
    start = next(k for k, line in enumerate(lines) if "conformance matrix" in line)
    end = next(k for k in range(start, len(lines)) if " rows: " in lines[k])
    return "\n".join(lines[start:end])


def test_serial_and_parallel_runs_report_the_same(tmp_path):
    swapped = example_with(tmp_path, "swapped", "bad/swapped", {
        "W, U, b, p = params.W, params.U, params.b, params.p": "W, U, b, p = params.W[[0, 2, 1, 3]], params.U, params.b, params.p",
    })
    args = ("--backend", str(EXAMPLE), "--backend", swapped, "--backend", "builtin", "-k",
            "example or swapped or (torch/nn.LSTM and not LSTMCell and not batch_first and not enforce_sorted and not autocast)")
    runs = {n: run_suite(tmp_path / f"n{n}", *args, "-n", n) for n in ("0", "1", "2")}
    serial = runs["0"]
    assert serial.returncode == 1 and "FAIL" in serial.stdout
    for n, run in runs.items():
        assert run.returncode == serial.returncode, (n, run.output)
        assert json.loads((run.report_dir / "conformance.json").read_text()) == serial.report, f"-n {n}: JSON differs"
        assert (run.report_dir / "conformance.md").read_text() == (serial.report_dir / "conformance.md").read_text(), n
        assert _matrix_section(run.stdout) == _matrix_section(serial.stdout), n
    # Every test of the three rows has its result, declared "not supported" ones (torch's peepholes, the layer
    # features of these cell-only rows) included: 3 rows x 2 dtypes x 2 kinds x every case.
    # Three rows, two kinds, two full dtypes, every case; and the half types' on the cases of their bounds.
    assert len(serial.report["results"]) == 3 * 2 * 2 * len(case_set()) + 3 * 2 * 2 * len(bound_cases())


# ---------------------------------------------------------------------------
# 5, 6, 7: the contract's entry, diagnoses, usage errors
# ---------------------------------------------------------------------------


def test_gradient_failures_of_a_wrong_forward_say_so_and_name_the_mistake(tmp_path):
    no_tanh = example_with(tmp_path, "no_tanh", "bad/h-without-tanh", {
        "        h = o * np.tanh(c_new)\n": "        h = o * c_new\n",
        "        tc = np.tanh(c)\n": "        tc = c\n",
        "        dc = dc_next + dh * o * (1 - tc**2) + dzo * peep[2]\n": "        dc = dc_next + dh * o + dzo * peep[2]\n",
    })
    run = run_suite(tmp_path, "--backend", no_tanh, "--dtype", "float64", "-k", "small and not peephole")
    assert run.returncode == 1
    (gradients,) = [r for r in run.results("bad/h-without-tanh") if r["kind"] == "gradients"]
    assert "matches the spec if h = o * c, without the tanh" in gradients["diagnosis"]
    assert "the forward is wrong too" in run.stdout and "fix it first" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--seeds", "0"), "--seeds must be at least 1"),
        (("--call-timeout", "-1"), "--call-timeout: must be 0 (no limit) or a positive finite number of seconds, got '-1'"),
        # Before: accepted, then every call of a correct implementation failed ("Invalid value NaN", "timestamp out
        # of range").
        (("--call-timeout", "nan"), "--call-timeout: must be 0 (no limit) or a positive finite number of seconds, got 'nan'"),
        (("--call-timeout", "inf"), "--call-timeout: must be 0 (no limit) or a positive finite number of seconds, got 'inf'"),
        (("--call-timeout", "soon"), "--call-timeout: expected a number of seconds, got 'soon'"),
    ],
    ids=["seeds-0", "negative-timeout", "nan-timeout", "infinite-timeout", "word-timeout"],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    run = run_suite(tmp_path, "--backend", str(EXAMPLE), *args)
    assert run.returncode == 4 and message in run.stderr and "passed" not in run.stdout, run.output


def test_a_report_dir_that_cannot_be_written_is_a_usage_error_before_the_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = run_suite(tmp_path, "--backend", str(EXAMPLE), "--report-dir", str(blocker / "reports"))
    assert run.returncode == 4 and "cannot write there" in run.stderr and "passed" not in run.stdout, run.output


def test_a_plugin_environment_is_recorded_in_the_report(tmp_path):
    described = example_with(tmp_path, "described", "example/described", append='''
        ENVIRONMENT = {"mylib": "1.2.3", "threads": 4}
    ''')
    run = run_suite(tmp_path, "--backend", described, "--dtype", "float64", "-k", "test_outputs and T1 and not peephole")
    assert run.returncode == 0, run.output
    assert run.report["environment"]["example/described"] == {"mylib": "1.2.3", "threads": 4}


def test_a_row_in_its_own_process_runs_there_and_its_crash_is_reported(tmp_path):
    source = f'''
        import os
        import ctypes
        import numpy as np
        from contract.loading import load_rows
        from contract.row import Row
        from contract.vocabulary import Feature

        EXAMPLE = load_rows({str(EXAMPLE)!r})[0]

        class OwnProcess(Row):
            def _availability(self, device):
                # Only true in the child: the row must never run in the suite's own process.
                return None if os.environ.get("LSTMC_TEST_PROCESS") == "on" else "not in its own process"

            def _environment(self, device):
                return {{"pid differs": os.getpid() != int(os.environ["LSTMC_TEST_PARENT"])}}

            def _outputs(self, params, x, h0, c0, **call):
                if x.shape == (4, 3, 5):
                    ctypes.string_at(0)
                return EXAMPLE.forward(params, x, h0, c0, **call)

        ROW = OwnProcess(id="odd/own-process", features={{Feature.PEEPHOLE}}, process_environment={{"LSTMC_TEST_PROCESS": "on"}})
    '''
    path = plugin(tmp_path, "own_process", source)
    run = run_suite(tmp_path, "--backend", path, *FLOAT64_FORWARD, "-n", "0", env={"LSTMC_TEST_PARENT": str(os.getpid())})
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("odd/own-process")}
    assert by_case["T1"]["status"] == "pass"
    # The child died, not the suite's process (-n 0: there is no worker to lose): its signal is the verdict.
    assert by_case["small"]["status"] == "FAIL" and "crashed: signal 11 (SIGSEGV) in its own process" in by_case["small"]["detail"]
    assert run.report["environment"]["odd/own-process"] == {"pid differs": True}


@pytest.mark.parametrize("answer, message", [
    (lambda h, hT, cT: (h.astype(np.float64), hT, cT), "h_seq: wrong dtype: expected float32, got float64"),
    (lambda h, hT, cT: (h, hT.astype(np.int64), cT), "h_T: wrong dtype: expected float32, got int64"),
    (lambda h, hT, cT: (h.tolist(), hT, cT), "h_seq: not a NumPy array"),
    (lambda h, hT, cT: (h, None, cT), "h_T: not a NumPy array: expected numpy.ndarray float32 (3, 4), got NoneType"),
    (lambda h, hT, cT: (h, hT[:, :2], cT), "h_T: wrong shape: expected (3, 4), got (3, 2)"),
    (lambda h, hT, cT: (h, hT, np.full_like(cT, np.nan)), "c_T: non-finite value"),
    (lambda h, hT, cT: (h, hT), "outputs: wrong type: expected (h_seq, h_T, c_T), got a tuple of 2"),
    (lambda h, hT, cT: [h, hT, cT, cT], "outputs: wrong type: expected (h_seq, h_T, c_T), got a list of 4"),
    (lambda h, hT, cT: {"h_seq": h}, "outputs: wrong type: expected (h_seq, h_T, c_T), got dict"),
], ids=["float64-for-float32", "int64", "list", "None", "shape", "nan", "two-outputs", "four-outputs", "dict"])
def test_an_answer_outside_the_contract_is_a_result_error(answer, message):
    # The cell's functions answer in the cell's names and shapes: they are checked in those, before they become the
    # layer's y, h_T and c_T.
    (example,) = load_rows(str(EXAMPLE))
    forward = example.forward_function
    example.forward_function = lambda *args, **kwargs: answer(*forward(*args, **kwargs))
    d = make_case_data(case_by_name("small"), "float32")
    with pytest.raises(ResultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        example.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)


def test_gradients_get_the_same_checks():
    (example,) = load_rows(str(EXAMPLE))
    backward = example.backward_function
    d = make_case_data(case_by_name("small-peephole"), "float64")
    for change, message in (
        (lambda g: {**g, "W": g["W"].astype(np.float32)}, "gradient W: wrong dtype: expected float64, got float32"),
        (lambda g: {k: v for k, v in g.items() if k != "p"}, "gradient p: missing"),
        (lambda g: {**g, "extra": g["b"]}, "gradient extra: unexpected"),
        (lambda g: {**g, "h0": g["h0"][None]}, "gradient h0: wrong shape: expected (3, 4), got (1, 3, 4)"),
    ):
        example.backward_function = lambda *a, change=change, **k: change(backward(*a, **k))
        with pytest.raises(ResultError, match=message.replace("(", r"\(").replace(")", r"\)")):
            example.backward(d.params, d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), layer=d.layer)


def test_a_row_in_its_own_process_that_hangs_is_stopped_and_the_next_call_gets_a_fresh_one(tmp_path):
    path = plugin(tmp_path, "hangs_in_child", f'''
        import os
        import time
        from contract.loading import load_rows
        from contract.row import Row
        from contract.vocabulary import Feature

        EXAMPLE = load_rows({str(EXAMPLE)!r})[0]

        class Hangs(Row):
            def _environment(self, device):
                return {{"pid": os.getpid()}}

            def _outputs(self, params, x, h0, c0, **call):
                if x.shape[0] == 4:
                    time.sleep(600)
                return EXAMPLE.forward(params, x, h0, c0, **call)

        ROW = Hangs(id="odd/hangs-in-child", features={{Feature.PEEPHOLE}}, process_environment={{"LSTMC_TEST_PROCESS": "hangs"}})
    ''')
    (row,) = load_rows(path)
    first_pid = row.environment()["pid"]
    small, t1 = (make_case_data(case_by_name(name)) for name in ("small", "T1"))
    with pytest.raises(TimedOut, match="timed out after 1 s"), deadline(1.0, "odd/hangs-in-child forward"):
        row.forward(small.params, small.x, small.h0, small.c0, layer=small.layer)
    outputs = row.forward(t1.params, t1.x, t1.h0, t1.c0, layer=t1.layer)
    assert outputs.y.shape == t1.x.shape[:2] + (t1.params.hidden_size,)
    assert row.environment()["pid"] not in (first_pid, os.getpid())


# ---------------------------------------------------------------------------
# 4. Runs that end early say so; what an implementation raises is its own failure
# ---------------------------------------------------------------------------

LAYER = str(EXAMPLE.parent / "numpy_layer_lstm.py")


def _layer_plugin(tmp_path, name: str, row_id: str, body: str) -> str:
    """The layer example under another id, its forward_layer doing ``body`` first (``config`` in scope)."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('example_layer', {LAYER!r})\n"
        "example = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(example)\n"
        f"ID = {row_id!r}\n"
        "DTYPES, VARIANTS, LAYER_FEATURES = example.DTYPES, example.VARIANTS, example.LAYER_FEATURES\n"
        "backward_layer = example.backward_layer\n\n\n"
        "def forward_layer(params, x, h0, c0, *, config, lengths, mask):\n"
        f"{body}\n"
        "    return example.forward_layer(params, x, h0, c0, config=config, lengths=lengths, mask=mask)\n"
    )
    return str(path)


def test_keyboard_interrupt_or_exit_inside_a_call_is_that_rows_failure_and_the_run_goes_on(tmp_path):
    # Before: a KeyboardInterrupt raised in one case stopped the run ("node down: keyboard-interrupt", rc 2, 90 of
    # 96 layer tests never run) and the report read like a complete one.
    raising = _layer_plugin(tmp_path, "raises", "bad/raises", """\
    if config.num_layers == 2 and config.direction == "bidirectional":
        raise KeyboardInterrupt
    if config.direction == "reverse":
        raise SystemExit(3)""")
    run = run_suite(tmp_path, "--backend", raising, "-k", "test_outputs and layer")
    assert run.returncode == 1, run.output
    # 28 cases with "layer" in their ids in float32 and float64, and the 24 of them with half bounds in bfloat16 and
    # float16 (no policy defines layer normalization or the projection's bias: spec.precision.defines).
    assert run.report["run"] == {"complete": True, "expected": 104, "judged": 104, "not_run": 0, "ended": ""}
    by_case = {(r["case"], r["dtype"]): r for r in run.results("bad/raises")}
    assert by_case[("stacked-bidirectional", "float32")]["detail"] == "raised KeyboardInterrupt: "
    assert by_case[("reverse", "float64")]["detail"] == "raised SystemExit: 3"
    assert by_case[("one-layer", "float64")]["status"] == "pass" and by_case[("mask-zero", "float32")]["status"] == "pass"
    assert "INCOMPLETE" not in run.stdout


def test_a_real_ctrl_c_ends_the_run_and_its_report_says_it_is_incomplete(tmp_path):
    # The plug-in sends SIGINT to the suite's controller, as a terminal's Ctrl-C would. Before: the report of the
    # 6 tests run read like a complete one, the columns not reached simply absent.
    interrupting = _layer_plugin(tmp_path, "ctrl_c", "bad/ctrl-c", """\
    import os, signal, time
    if config.num_layers == 2 and config.direction == "bidirectional":
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(30)""")
    run = run_suite(tmp_path, "--backend", interrupting, "-m", "layer")
    assert run.returncode == 2, run.output
    state = run.report["run"]
    assert state["complete"] is False and state["ended"] == "interrupted" and state["expected"] == 200
    # 27 cases with layer features (one-layer, the plain cell, is not marked layer) x outputs, gradients, in float32 and
    # float64, and the 23 of them with half bounds in the two half types: (27 x 2 + 23 x 2) x 2
    assert state["not_run"] > 0 and state["judged"] + state["not_run"] == 200
    assert "INCOMPLETE RUN (interrupted)" in run.stdout
    assert (run.report_dir / "conformance.md").read_text().count("INCOMPLETE RUN (interrupted)") == 1
    not_run = [r for r in run.results("bad/ctrl-c") if r["status"] == "not run"]
    assert len(not_run) == state["not_run"]
    # Every selected test has its result, judged or not run: no column is simply absent.
    assert len(run.results("bad/ctrl-c")) == 200 and {r["kind"] for r in not_run} == {"outputs"}
    assert any(cell["not_run"] for cell in run.report["matrix"]["bad/ctrl-c"].values())


def test_a_worker_ended_by_os_exit_says_its_exit_status(tmp_path):
    exiting = example_with(tmp_path, "exits", "bad/exits", append='''
        import os
        _forward = forward

        def forward(params, x, h0, c0, *, forget_bias):
            if x.shape == (4, 3, 5):
                os._exit(3)
            return _forward(params, x, h0, c0, forget_bias=forget_bias)
    ''')
    run = run_suite(tmp_path, "--backend", exiting, *FLOAT64_FORWARD, "-k", "test_outputs and (small or T1) and not peephole")
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("bad/exits")}
    assert by_case["small"]["detail"].startswith("crashed: the worker process exited with status 3"), by_case["small"]
    assert by_case["T1"]["status"] == "pass"


def test_a_failing_test_shows_its_verdict_not_the_suites_traceback(tmp_path):
    # Before: about 90 lines of the suite's own frames (with "During handling of the above exception") came first.
    swapped = example_with(tmp_path, "swapped", "bad/swapped-verdict", {
        "W, U, b, p = params.W, params.U, params.b, params.p": "W, U, b, p = params.W[[0, 2, 1, 3]], params.U, params.b, params.p",
    })
    run = run_suite(tmp_path, "--backend", swapped, "--dtype", "float64", "-k", "test_outputs and small and not peephole")
    assert run.returncode == 1, run.output
    failure = run.stdout.split("= FAILURES =")[1].split("= conformance matrix")[0]
    assert "y: worst error" in failure and "diagnosis:" in failure
    assert "During handling" not in failure and "judge.py" not in failure and len(failure.splitlines()) < 15, failure
    long = run_suite(tmp_path, "--backend", swapped, "--dtype", "float64", "-k", "test_outputs and small and not peephole",
                     "--tb", "long")
    assert "judge.py" in long.stdout  # the traceback when asked for


def test_exit_or_keyboard_interrupt_in_a_row_of_its_own_process_is_its_failure(tmp_path):
    # Before: the child ended (an exception outside `except Exception`) and the call read "crashed: exit status 1".
    path = plugin(tmp_path, "exits_in_child", f'''
        import sys
        from contract.loading import load_rows
        from contract.row import Row
        from contract.vocabulary import Feature

        EXAMPLE = load_rows({str(EXAMPLE)!r})[0]

        class Exits(Row):
            def _outputs(self, params, x, h0, c0, **call):
                if x.shape == (4, 3, 5):
                    sys.exit(3)
                if x.shape == (1, 3, 4):
                    raise KeyboardInterrupt
                return EXAMPLE.forward(params, x, h0, c0, **call)

        ROW = Exits(id="odd/exits-in-child", features={{Feature.PEEPHOLE}}, process_environment={{"LSTMC_TEST_PROCESS": "exits"}})
    ''')
    run = run_suite(tmp_path, "--backend", path, *FLOAT64_FORWARD, "-k", "test_outputs and not peephole and (small or T1 or B1)")
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("odd/exits-in-child")}
    assert by_case["small"]["detail"].startswith("raised RuntimeError: SystemExit: 3 (in its own process)"), by_case["small"]
    assert by_case["T1"]["detail"].startswith("raised RuntimeError: KeyboardInterrupt:  (in its own process)"), by_case["T1"]
    assert by_case["B1"]["status"] == "pass"
