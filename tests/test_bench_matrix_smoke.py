"""bench/test_matrix.py end to end on small slices: it runs, checks, times and records what the report reads, for the
cell's shapes and for Braun's stack padded and with variable lengths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.suite import ROOT, subprocess_environment


def run_matrix(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict], dict]:
    """bench/test_matrix.py on CPU, quickly, with ``args``: (the run, every result's extra_info, the machine info)."""
    pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install 'lstm-conformance[bench]'")
    out = tmp_path / "run.json"
    out.unlink(missing_ok=True)  # an earlier run's results are not this run's
    command = [sys.executable, "-m", "pytest", "bench/test_matrix.py", "-q", "-rs", "-p", "no:cacheprovider",
               "--bench-device", "cpu", "--bench-seconds", "0.01", f"--benchmark-json={out}", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False, env=subprocess_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if not out.exists():  # pytest-benchmark writes no file when nothing was timed
        return done, [], {}
    run = json.loads(out.read_text())
    return done, [b["extra_info"] for b in run["benchmarks"]], run["machine_info"]["lstm_conformance"]


def test_the_matrix_times_checked_results_and_records_them(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'lstm-conformance[onnxruntime]'")
    pytest.importorskip("jax", reason="needs jax: pip install 'lstm-conformance[jax]'")
    _, results, machine = run_matrix(tmp_path, "--bench-impl", "onnxruntime/LSTM", "--bench-impl", "jax/lax.scan",
                                     "-k", "mnist and not backward and not batch-major and float32")
    assert {(r["implementation"], r["variant"]) for r in results} == {
        (row, variant) for row in ("onnxruntime/LSTM", "jax/lax.scan") for variant in ("standard", "peephole")}
    for r in results:
        assert r["matrix"] and r["dtype"] == "float32" and r["device"] == "cpu" and r["pass_"] == "forward"
        assert (r["L"], r["directions"], r["how"], r["row_steps"]) == (1, 1, "padded", 128 * 28)
        assert 0 < r["relative_error_vs_spec"] < 1e-4 and r["device_resident"] is True and r["first_call_s"] > 0
        assert r["gflops"] == r["useful_gflops"] > 0 and 0 < r["roofline_fraction"] and r["matmul_gflops"] > 0 and r["bandwidth_gbs"] > 0
    # What the results depend on: the frameworks of the rows timed (and only those), the CPU's vector extensions.
    assert set(machine["frameworks"]) == {"onnxruntime (cpu)", "jax (cpu)"}
    assert machine["frameworks"]["jax (cpu)"]["matmul_precision"] == "highest"
    assert isinstance(machine["cpu_isa"]["simd"], list) and machine["threads_env"].keys() >= {"LSTMC_THREADS", "OMP_NUM_THREADS"}


def test_half_types_are_timed_on_the_cpu_after_their_policy_s_check(tmp_path):
    """A row judged in a half type times it on the CPU too, once its outputs on the case medium passed the bounds of
    the policy it declares (tests/test_bench_correctness.py: and not when they do not)."""
    pytest.importorskip("jax", reason="needs jax: pip install 'lstm-conformance[jax]'")
    done, results, _ = run_matrix(tmp_path, "--bench-impl", "jax/lax.scan", "-k", "mnist and standard and not backward")
    assert {(r["implementation"], r["dtype"]) for r in results} == {
        ("jax/lax.scan", dtype) for dtype in ("float32", "float16", "bfloat16")}
    for r in results:
        assert 0 < r["relative_error_vs_spec"] < (1e-4 if r["dtype"] == "float32" else 2e-2), r


def test_float64_can_be_timed(tmp_path):
    """--bench-dtype float64 times the float64 pass (it crashed with "params: wrong dtype": the data was float32)."""
    pytest.importorskip("jax", reason="needs jax: pip install 'lstm-conformance[jax]'")
    _, results, _ = run_matrix(tmp_path, "--bench-impl", "jax/lax.scan", "--bench-dtype", "float64", "-k", "mnist and standard")
    assert {r["pass_"] for r in results} == {"forward", "forward+backward"}
    assert all(r["dtype"] == "float64" and r["relative_error_vs_spec"] < 1e-10 for r in results)


def test_the_stack_is_timed_padded_and_with_variable_lengths_on_the_same_data(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'lstm-conformance[onnxruntime]'")
    done, results, _ = run_matrix(tmp_path, "--bench-impl", "onnxruntime/LSTM", "-k", "braun and not batch-major and not backward")
    assert {(r["variant"], r["how"]) for r in results} == {("padded", "padded"), ("variable", "lengths")}
    padded, variable = sorted(results, key=lambda r: r["variant"])
    for r in results:
        assert r["matrix"] and r["implementation"] == "onnxruntime/LSTM" and r["L"] == 4 and r["directions"] == 2
        assert 0 < r["relative_error_vs_spec"] < 1e-4 and r["useful_gflops"] > 0
    assert padded["row_steps"] == padded["B"] * padded["T"] > variable["row_steps"]
    assert padded["gflops"] > padded["useful_gflops"] and variable["gflops"] == pytest.approx(variable["useful_gflops"])
    # onnxruntime/LSTM computes no gradients: the forward+backward runs are skipped with its reason, never timed.
    done, results, _ = run_matrix(tmp_path, "--bench-impl", "onnxruntime/LSTM", "-k", "braun and not batch-major and backward")
    assert results == [] and "ONNX Runtime registers no gradient for LSTM" in done.stdout, done.stdout[-3000:]


def test_a_known_non_conformance_is_skipped_not_timed(tmp_path):
    """flax's nn.RNN(seq_lengths=...) is known not to zero padded steps' outputs: the variable-length run of Braun's
    stack must be skipped by the features it uses (lengths), with the reason, not timed (and failed); the padded run
    of the same row is timed."""
    pytest.importorskip("flax", reason="needs flax: pip install 'lstm-conformance[jax]'")
    done, results, _ = run_matrix(tmp_path, "--bench-impl", "flax/OptimizedLSTMCell", "-k", "braun and not backward and float32")
    assert [r["variant"] for r in results] == ["padded"], done.stdout[-3000:]
    assert "known non-conformance, not timed: flax 0.12.8 nn.RNN(seq_lengths=...) does not zero" in done.stdout


def test_rows_that_unroll_their_loop_are_timed_on_the_cells_shapes_and_not_on_braun_s_stack():
    """An unrolled graph of Braun's stack (T=100 x 4 layers x 2 directions) took minutes and gigabytes to build, or was
    killed for memory: those rows are declared, and the matrix times them on every shape but the stacks."""
    from backends.registry import builtin_rows
    from bench.matrix import SHAPES, unrolled_too_long

    assert {row.id for row in builtin_rows() if row.unrolled} == {
        "tensorflow-tf1/BasicLSTMCell+static_rnn", "keras-tensorflow/RNN+LSTMCell+unroll", "keras-jax/RNN+LSTMCell+unroll",
        "keras-torch/RNN+LSTMCell+unroll"}
    for shape in SHAPES:
        reason = unrolled_too_long(shape)
        assert (reason is None) == (shape.layer.num_layers == 1), shape.name
    assert "100 steps x 4 layers x 2 directions = 800 cells" in unrolled_too_long(SHAPES[[s.name for s in SHAPES].index("braun-4x320-T100")])
