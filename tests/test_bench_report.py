"""bench/report.py and bench/matrix.py: the tables, ratios, DeepBench references, regressions and plots."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.matrix import SHAPES_BY_NAME, bytes_moved, deepbench_ms, flop, roofline_fraction, shapes_in


def run_file(path, medians: dict, device="cpu"):
    """A pytest-benchmark JSON as bench/test_matrix.py writes it: medians[(impl, shape, pass_)] = seconds."""
    benchmarks = []
    for (impl, shape, pass_), median in medians.items():
        s = SHAPES_BY_NAME[shape]
        benchmarks.append({
            "stats": {"median": median},
            "extra_info": {
                "matrix": True, "implementation": impl, "variant": "standard", "dtype": "float32", "device": device,
                "shape": shape, "pass_": pass_, "gflops": flop(s, pass_) / median / 1e9, "roofline_fraction": 0.5,
                "deepbench_ms": (deepbench_ms(s, pass_) or (None,))[0], "deepbench_source": (deepbench_ms(s, pass_) or (None, None))[1],
            },
        })
    path.write_text(json.dumps({"machine_info": {"node": "test", "cpu": {"brand_raw": "cpu"}}, "benchmarks": benchmarks}))
    return path


SHAPE = "deepbench-H512-B64-T25"


def test_flop_bytes_and_roofline_conventions():
    s = SHAPES_BY_NAME[SHAPE]
    assert flop(s, "forward") == 8 * 64 * 512 * 1024 * 25 and flop(s, "forward+backward") == 3 * flop(s, "forward")
    assert bytes_moved(s, "forward", "float32") == 4 * (4 * 512 * 512 + 25 * 4 * 512 * 512 + 25 * 64 * 1024 + 2 * 64 * 512)
    # Compute-bound when bandwidth is plentiful: the fraction is the rate over the matmul rate.
    assert roofline_fraction(s, "forward", "float32", flop(s, "forward") / 50e9, 100e9, 1e15) == pytest.approx(0.5)
    assert deepbench_ms(s, "forward") == (1.34, "DeepBench V100 fp32 cuDNN 7.6")
    assert deepbench_ms(s, "forward+backward")[0] == pytest.approx(1.34 + 1.26 + 0.44)
    assert deepbench_ms(SHAPES_BY_NAME["mnist-rows"], "forward") is None
    assert {s.name for s in shapes_in("quick")} == {"mnist-rows", SHAPE}
    assert len(shapes_in("full")) == 12
    with pytest.raises(ValueError):
        shapes_in("huge")


def test_table_has_ratios_to_the_fastest_and_the_deepbench_row(tmp_path):
    path = run_file(tmp_path / "a.json", {("a/x", SHAPE, "forward"): 0.010, ("b/y", SHAPE, "forward"): 0.025})
    rows, _ = report.load([path])
    text = report.table(rows, "forward")
    assert "| `a/x` | standard | 10 ms (1.00x, 50% of roofline) |" in text
    assert "25 ms (2.50x" in text
    assert "*DeepBench V100 fp32 cuDNN 7.6*" in text and "1.34 ms" in text


def test_cpu_and_gpu_runs_are_merged_side_by_side(tmp_path):
    cpu = run_file(tmp_path / "cpu.json", {("a/x", SHAPE, "forward"): 0.010})
    gpu = run_file(tmp_path / "gpu.json", {("a/x", SHAPE, "forward"): 0.002}, device="cuda")
    rows, machines = report.load([cpu, gpu])
    header = report.table(rows, "forward").splitlines()[0]
    assert header.index(f"{SHAPE} cpu") < header.index(f"{SHAPE} cuda") and len(machines) == 2


def test_regressions_beyond_the_threshold_are_flagged_and_fail_the_command(tmp_path, capsys):
    old = run_file(tmp_path / "old.json", {("a/x", SHAPE, "forward"): 0.010, ("b/y", SHAPE, "forward"): 0.010})
    new = run_file(tmp_path / "new.json", {("a/x", SHAPE, "forward"): 0.0125, ("b/y", SHAPE, "forward"): 0.0105})
    assert report.main([str(new), "--baseline", str(old), "--threshold", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION a/x" in out and "1.25x" in out and "REGRESSION b/y" not in out
    assert report.main([str(new), "--baseline", str(old), "--threshold", "0.3"]) == 0


def test_plots_and_markdown_are_written(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'lstm-conformance[bench]'")
    path = run_file(tmp_path / "a.json", {("a/x", SHAPE, "forward"): 0.01, ("a/x", SHAPE, "forward+backward"): 0.03})
    assert report.main([str(path), "--plots", str(tmp_path / "plots"), "--markdown", str(tmp_path / "r.md")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["lstm-forward-backward.png", "lstm-forward.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "## forward+backward" in (tmp_path / "r.md").read_text()


def test_a_file_without_matrix_results_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": []}))
    assert report.main([str(tmp_path / "empty.json")]) == 2
