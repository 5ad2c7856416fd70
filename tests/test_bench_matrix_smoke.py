"""bench/test_matrix.py end to end on a small slice: it runs, checks, times and records what the report reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.suite import subprocess_environment

ROOT = Path(__file__).resolve().parents[1]


def test_the_matrix_times_checked_results_and_records_them(tmp_path):
    pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")
    out = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "pytest", "bench/test_matrix.py", "-q", "-p", "no:cacheprovider",
        "--bench-device", "cpu", "--bench-impl", "onnxruntime/LSTM", "--bench-impl", "jax/lax.scan",
        "--bench-seconds", "0.01", "-k", "mnist and not backward", f"--benchmark-json={out}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    ran = {(r["implementation"], r["variant"]) for r in results}
    assert ran, done.stdout[-2000:]
    assert {impl for impl, _ in ran} <= {"onnxruntime/LSTM", "jax/lax.scan"}
    for r in results:
        assert r["matrix"] and r["dtype"] == "float32" and r["device"] == "cpu" and r["pass_"] == "forward"
        assert 0 < r["relative_error_vs_spec"] < 1e-4 and r["device_resident"] is True
        assert r["gflops"] > 0 and 0 < r["roofline_fraction"] and r["matmul_gflops"] > 0 and r["bandwidth_gbs"] > 0
    machine = json.loads(out.read_text())["machine_info"]["lstm_conformance"]
    assert any(key.endswith("(cpu)") for key in machine["frameworks"])


def test_float64_can_be_timed(tmp_path):
    """--bench-dtype float64 times the float64 pass (it crashed with "params: wrong dtype": the data was float32)."""
    pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")
    out = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "pytest", "bench/test_matrix.py", "-q", "-p", "no:cacheprovider",
        "--bench-device", "cpu", "--bench-impl", "jax/lax.scan", "--bench-dtype", "float64",
        "--bench-seconds", "0.01", "-k", "mnist and standard", f"--benchmark-json={out}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    assert {r["pass_"] for r in results} == {"forward", "forward+backward"}
    assert all(r["dtype"] == "float64" and r["relative_error_vs_spec"] < 1e-10 for r in results)
