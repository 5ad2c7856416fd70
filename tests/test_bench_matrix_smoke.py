"""bench/test_matrix.py end to end on a small slice: it runs, checks, times and records what the report reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.suite import ROOT, subprocess_environment


def run_matrix(tmp_path, *args: str) -> tuple[list[dict], dict]:
    """bench/test_matrix.py on CPU, quickly, with ``args``: (every result's extra_info, the machine info)."""
    pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "pytest", "bench/test_matrix.py", "-q", "-p", "no:cacheprovider", "--bench-device", "cpu",
               "--bench-seconds", "0.01", f"--benchmark-json={out}", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(out.read_text())
    results = [b["extra_info"] for b in run["benchmarks"]]
    assert results, done.stdout[-2000:]
    return results, run["machine_info"]["lstm_conformance"]


def test_the_matrix_times_checked_results_and_records_them(tmp_path):
    results, machine = run_matrix(tmp_path, "--bench-impl", "onnxruntime/LSTM", "--bench-impl", "jax/lax.scan", "-k", "mnist and not backward")
    assert {r["implementation"] for r in results} <= {"onnxruntime/LSTM", "jax/lax.scan"}
    for r in results:
        assert r["matrix"] and r["dtype"] == "float32" and r["device"] == "cpu" and r["pass_"] == "forward"
        assert 0 < r["relative_error_vs_spec"] < 1e-4 and r["device_resident"] is True
        assert r["gflops"] > 0 and 0 < r["roofline_fraction"] and r["matmul_gflops"] > 0 and r["bandwidth_gbs"] > 0
    assert any(key.endswith("(cpu)") for key in machine["frameworks"])


def test_float64_can_be_timed(tmp_path):
    """--bench-dtype float64 times the float64 pass (it crashed with "params: wrong dtype": the data was float32)."""
    results, _ = run_matrix(tmp_path, "--bench-impl", "jax/lax.scan", "--bench-dtype", "float64", "-k", "mnist and standard")
    assert {r["pass_"] for r in results} == {"forward", "forward+backward"}
    assert all(r["dtype"] == "float64" and r["relative_error_vs_spec"] < 1e-10 for r in results)
