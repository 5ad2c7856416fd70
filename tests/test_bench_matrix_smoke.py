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


def run_layer_matrix(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """bench/test_layer_matrix.py on CPU, quick set, with ``args``: (the run, every result's extra_info)."""
    pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")
    out = tmp_path / "layer.json"
    command = [sys.executable, "-m", "pytest", "bench/test_layer_matrix.py", "-q", "-rs", "-p", "no:cacheprovider",
               "--bench-device", "cpu", "--bench-seconds", "0.01", f"--benchmark-json={out}", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if not out.exists():  # pytest-benchmark writes no file when nothing was timed
        return done, []
    return done, [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]


def test_the_layer_matrix_times_padded_and_variable_lengths_on_the_same_data(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    _, results = run_layer_matrix(tmp_path, "--bench-impl", "onnxruntime/LSTM", "-k", "not batch-major and not backward")
    assert {(r["lengths"], r["how"]) for r in results} == {("padded", "padded"), ("variable", "lengths")}
    padded, variable = sorted(results, key=lambda r: r["lengths"])
    for r in results:
        assert r["layer_matrix"] and r["implementation"] == "onnxruntime/LSTM" and r["L"] == 4 and r["directions"] == 2
        assert 0 < r["relative_error_vs_spec"] < 1e-4 and r["useful_gflops"] > 0
    assert padded["row_steps"] == padded["B"] * padded["T"] > variable["row_steps"]


def test_a_known_non_conformance_of_the_layer_is_skipped_not_timed(tmp_path):
    """keras-jax/RNN+LSTMCell+unroll is known wrong for a bidirectional layer over a mask: the variable-length run (a
    4-layer bidirectional stack, masked) must be skipped by the features it uses, not timed (and failed)."""
    pytest.importorskip("keras", reason="needs keras")
    pytest.importorskip("jax", reason="needs jax")
    done, results = run_layer_matrix(tmp_path, "--bench-impl", "keras-jax/RNN", "-k", "variable and not backward")
    assert results == [] and "known non-conformance: not timed" in done.stdout, done.stdout[-3000:]
