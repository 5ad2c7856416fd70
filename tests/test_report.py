"""The conformance matrix: how results become cells, and the files written."""

from __future__ import annotations

import json

import numpy as np

from conformance.report import Result, build_matrix, render_markdown, render_text, summarise, write_reports

EPS32 = float(np.finfo(np.float32).eps)


def r(status, case="small", kind="outputs", dtype="float32", device="cpu", impl="a/b", **kw):
    return Result(impl, kind, dtype, device, case, status, **kw)


def test_a_cell_passes_with_its_worst_error_in_eps_and_margin():
    cell = summarise([r("pass", worst_error=2 * EPS32, worst_ratio=0.1), r("pass", "T1", worst_error=5 * EPS32, worst_ratio=0.25)])
    assert cell.status == "pass" and cell.cases == 2
    assert cell.worst_error_eps == 5.0 and cell.margin == 4.0
    assert cell.text() == "pass (5 eps, margin 4x)"


def test_one_failing_case_fails_the_cell_and_counts():
    cell = summarise([r("pass", worst_error=EPS32, worst_ratio=0.5), r("FAIL", "T1", detail="h_seq: worst error ...")])
    assert cell.status == "FAIL" and cell.text() == "FAIL (1/2 cases)" and cell.detail.startswith("h_seq")


def test_declared_and_known_cells_keep_their_reason():
    assert summarise([r("not supported", detail="float32 only")]).text() == "not supported"
    assert summarise([r("known", detail="upstream bug")]).detail == "upstream bug"
    assert summarise([r("unavailable", detail="no GPU")]).status == "unavailable"


def test_matrix_columns_rows_and_renderings(tmp_path):
    results = [
        r("pass", worst_error=EPS32, worst_ratio=0.1),
        r("not supported", kind="gradients", detail="no gradient"),
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
