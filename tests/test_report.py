"""The conformance matrix: how results become cells, and the files written."""

from __future__ import annotations

import json

import numpy as np

from conformance.report import Result, RunState, build_matrix, render_markdown, render_text, summarise, summary_line, write_reports

EPS32 = float(np.finfo(np.float32).eps)


def r(status, case="small", kind="outputs", dtype="float32", device="cpu", impl="a/b", **kw):
    return Result(impl, kind, dtype, device, case, status, **kw)


def test_a_cell_passes_with_its_coverage_worst_error_in_eps_and_margin():
    cell = summarise([r("pass", worst_error=2 * EPS32, worst_ratio=0.1), r("pass", "T1", worst_error=5 * EPS32, worst_ratio=0.25)])
    assert cell.status == "pass" and (cell.covered, cell.denominator, cell.asked) == (2, 2, 2)
    assert cell.worst_error_eps == 5.0 and cell.margin == 4.0
    assert cell.text() == "pass 2/2 (5 eps, margin 4x)"


def test_one_failing_case_fails_the_cell_and_counts():
    cell = summarise([r("pass", worst_error=EPS32, worst_ratio=0.5), r("FAIL", "T1", detail="h_seq: worst error ...")])
    assert cell.status == "FAIL" and cell.text() == "FAIL 1/2" and cell.detail.startswith("h_seq")


def test_declared_not_supported_cases_leave_the_denominator():
    # A standard-only implementation failing all its standard cases: FAIL 2/2, not "FAIL 2/4", which reads as half passing.
    results = [r("FAIL", "small"), r("FAIL", "T1"), r("not supported", "small-peephole", declared=True, detail="no peepholes"),
               r("not supported", "T1-peephole", declared=True, detail="no peepholes")]
    cell = summarise(results)
    assert (cell.status, cell.failed, cell.denominator, cell.asked) == ("FAIL", 2, 2, 4) and cell.text() == "FAIL 2/2"


def test_fewer_cases_than_asked_is_partial_never_pass():
    results = [r("pass", worst_error=EPS32, worst_ratio=0.5), r("not supported", "T1", detail="T > 4 only"),
               r("unavailable", "B1", detail="no such device")]
    cell = summarise(results)
    assert cell.status == "partial" and cell.text().startswith("partial 1/3")
    assert "1 not supported: T > 4 only (T1)" in cell.detail and "1 unavailable: no such device (B1)" in cell.detail


def test_declared_and_known_cells_keep_their_reason():
    assert summarise([r("not supported", detail="float32 only", declared=True)]).text() == "not supported"
    known = summarise([r("known", detail="upstream bug"), r("known", "T1", detail="upstream bug")])
    assert known.detail == "upstream bug" and known.text() == "known 2/2"
    # Known in one case, passing in the others: says so (it read "known 3/3", as if every case failed upstream).
    mixed = summarise([r("known", "empty", detail="upstream bug"), r("pass", worst_error=2 * EPS32, worst_ratio=0.1),
                       r("pass", "T1", worst_error=EPS32, worst_ratio=0.05)])
    assert mixed.status == "known" and (mixed.known, mixed.covered) == (1, 3)
    assert mixed.text() == "known 1 + pass 2/3 (2 eps, margin 10x)"
    assert summarise([r("unavailable", detail="no GPU")]).status == "unavailable"


def test_matrix_columns_rows_and_renderings(tmp_path):
    results = [
        r("pass", worst_error=EPS32, worst_ratio=0.1),
        r("not supported", kind="gradients", detail="no gradient", declared=True),
        r("pass", impl="c/d", dtype="float64", worst_error=1e-16, worst_ratio=0.01),
    ]
    matrix = build_matrix(results, {"numpy": "2"})
    assert set(matrix.rows) == {"a/b", "c/d"}
    assert ("outputs", "float32", "cpu") in matrix.columns and ("gradients", "float32", "cpu") in matrix.columns
    text = render_text(matrix)
    assert "not supported" in text and "a/b" in text.splitlines()[2]
    markdown = render_markdown(matrix)
    assert "| `a/b` |" in markdown and "no gradient" in markdown and "`numpy`: 2" in markdown
    json_path, md_path = write_reports(matrix, results, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["matrix"]["a/b"]["float32 cpu outputs"]["status"] == "pass"
    assert len(data["results"]) == 3 and md_path.read_text().startswith("# Conformance matrix")


def test_the_terminal_shows_one_table_per_dtype_and_device_within_its_width():
    long_name = "tensorflow/BlockLSTMV2+registered-gradient"
    results = [r(status, impl=impl, dtype=dtype, kind=kind, worst_error=EPS32, worst_ratio=0.1)
               for impl, status in ((long_name, "pass"), ("a/b", "pass"))
               for dtype in ("float32", "float64") for kind in ("outputs", "gradients")]
    text = render_text(build_matrix(results))
    tables = text.split("\n\n")
    assert [t.splitlines()[0].split()[:2] for t in tables] == [["float32", "cpu"], ["float64", "cpu"]]
    assert all(len(line) <= 120 for line in text.splitlines())
    assert tables[0].splitlines()[0].split()[2:] == ["outputs", "gradients"]
    # Too narrow for two columns: one table per column, each still whole.
    narrow = render_text(build_matrix(results), width=60)
    assert narrow.count("float32 cpu") == 2 and all(len(line) <= 60 + 30 for line in narrow.splitlines())
    assert all(long_name in block for block in narrow.split("\n\n"))


def test_the_summary_line_counts_rows_by_their_worst_cell():
    results = [r("pass", impl="ok/a", worst_error=EPS32, worst_ratio=0.1), r("FAIL", impl="bad/b"),
               r("pass", impl="bad/b", kind="gradients", worst_error=EPS32, worst_ratio=0.1),
               r("known", impl="upstream/c", detail="bug"), r("unavailable", impl="gpu/d", detail="no GPU"),
               r("not supported", impl="gpu/d", kind="gradients", declared=True, detail="none")]
    assert summary_line(build_matrix(results)) == "4 rows: 1 pass, 1 FAIL, 1 known, 1 unavailable"


def test_an_incomplete_run_says_so_first_in_every_report(tmp_path):
    results = [r("pass", worst_error=EPS32, worst_ratio=0.1), r("not run", "T1", detail="not run: the run was interrupted")]
    matrix = build_matrix(results, run=RunState(expected=2, judged=1, ended="interrupted"))
    assert render_text(matrix).splitlines()[0].startswith("INCOMPLETE RUN (interrupted): 1 of 2 selected tests were not run")
    assert matrix.rows["a/b"][("outputs", "float32", "cpu")].text() == "incomplete 1/2 (1 not run)"
    json_path, md_path = write_reports(matrix, results, tmp_path)
    assert json.loads(json_path.read_text())["run"] == {"complete": False, "expected": 2, "judged": 1, "not_run": 1,
                                                        "ended": "interrupted"}
    assert "**INCOMPLETE RUN (interrupted)" in md_path.read_text()
