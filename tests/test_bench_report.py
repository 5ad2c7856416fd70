"""bench/report.py and bench/matrix.py: the table of shapes, the tables, ratios, DeepBench references, regressions and
plots, on results as bench/test_matrix.py writes them and as the layer matrix wrote them before the two were one."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.matrix import SHAPES_BY_NAME, VARIANTS_BY_NAME, bytes_moved, deepbench_ms, flop, roofline_fraction, shapes_in
from spec.layer import LayerConfig


def run_file(path, medians: dict, device="cpu", dtype="float32", error=1e-7, resident=True):
    """A pytest-benchmark JSON as bench/test_matrix.py writes it for the cell's shapes: medians[(impl, shape, pass_)] =
    seconds."""
    benchmarks = []
    for (impl, shape, pass_), median in medians.items():
        s = SHAPES_BY_NAME[shape]
        benchmarks.append({
            "stats": {"median": median},
            "extra_info": {
                "relative_error_vs_spec": error, "device_resident": resident,
                "matrix": True, "implementation": impl, "variant": "standard", "dtype": dtype, "device": device,
                "shape": shape, "pass_": pass_, "gflops": flop(s, pass_) / median / 1e9, "roofline_fraction": 0.5,
                "deepbench_ms": (deepbench_ms(s, pass_) or (None,))[0], "deepbench_source": (deepbench_ms(s, pass_) or (None, None))[1],
            },
        })
    path.write_text(json.dumps({"machine_info": {"node": "test", "cpu": {"brand_raw": "cpu"}}, "benchmarks": benchmarks}))
    return path


SHAPE = "deepbench-H512-B64-T25"
BRAUN = "braun-4x320-T100"


def test_flop_bytes_and_roofline_conventions():
    s = SHAPES_BY_NAME[SHAPE]
    assert flop(s, "forward") == 8 * 64 * 512 * 1024 * 25 and flop(s, "forward+backward") == 3 * flop(s, "forward")
    assert bytes_moved(s, "forward", "float32") == 4 * (4 * 512 * 512 + 25 * 4 * 512 * 512 + 25 * 64 * 1024 + 2 * 64 * 512)
    # Compute-bound when bandwidth is plentiful: the fraction is the rate over the matmul rate.
    assert roofline_fraction(s, "forward", "float32", flop(s, "forward") / 50e9, 100e9, 1e15) == pytest.approx(0.5)
    assert deepbench_ms(s, "forward") == (1.34, "DeepBench V100 fp32 cuDNN 7.6")
    assert deepbench_ms(s, "forward+backward")[0] == pytest.approx(1.34 + 1.26 + 0.44)
    assert deepbench_ms(SHAPES_BY_NAME["mnist-rows"], "forward") is None
    assert {s.name for s in shapes_in("quick")} == {"mnist-rows", SHAPE, BRAUN}
    assert len(shapes_in("full")) == 14
    with pytest.raises(ValueError):
        shapes_in("huge")


def test_a_stack_counts_every_layer_and_direction_and_its_useful_steps():
    """Braun's stack: 8 H (I_l + H) per row-step, layer and direction (layer 0 reads I, the others 2H); the useful steps
    are the lengths' sum, evenly spaced from the shortest to T."""
    s = SHAPES_BY_NAME[BRAUN]
    assert (s.L, s.D, s.layer) == (4, 2, LayerConfig(num_layers=4, direction="bidirectional"))
    per_row_step = 8.0 * 320 * ((123 + 320) + 3 * (640 + 320)) * 2
    assert flop(s, "forward") == per_row_step * 25 * 100 and flop(s, "forward+backward") == 3 * flop(s, "forward")
    assert s.lengths[0] == 50 and s.lengths[-1] == 100 and len(s.lengths) == 25
    variable, padded = VARIANTS_BY_NAME["variable"], VARIANTS_BY_NAME["padded"]
    assert s.row_steps(padded) == 2500 and s.row_steps(variable) == s.useful_row_steps == sum(s.lengths) < 2500
    assert s.variants == (padded, variable) and s.config(variable).zero_output_for_mask
    # Padded and variable lengths share one data; the cell's variants differ by their peepholes.
    assert s.case(padded) == s.case(variable) and s.case(padded).lengths == s.lengths
    mnist = SHAPES_BY_NAME["mnist-rows"]
    assert [v.name for v in mnist.variants] == ["standard", "peephole"]
    assert mnist.case(VARIANTS_BY_NAME["peephole"]).layer == LayerConfig(peephole=True) and mnist.case(VARIANTS_BY_NAME["standard"]).cell_streams
    assert deepbench_ms(s, "forward") is None


def test_table_has_ratios_to_the_fastest_and_the_deepbench_row(tmp_path):
    path = run_file(tmp_path / "a.json", {("a/x", SHAPE, "forward"): 0.010, ("b/y", SHAPE, "forward"): 0.025})
    rows, _ = report.load([path])
    text = report.table(rows, "forward")
    assert "| `a/x` | standard | 10 ms (1.00x, 50% of roofline) |" in text
    assert "25 ms (2.50x" in text
    assert "| *DeepBench, published* |  | 1.34 ms (V100 fp32 cuDNN 7.6) |" in text
    assert "worst relative error 1e-07 (bound 0.0001" in text and "†" not in text


def test_each_dtype_has_its_own_table_and_timing_through_numpy_is_marked(tmp_path):
    fp32 = run_file(tmp_path / "a.json", {("a/x", SHAPE, "forward"): 0.010}, device="cuda")
    bf16 = run_file(tmp_path / "b.json", {("a/x", SHAPE, "forward"): 0.004}, device="cuda", dtype="bfloat16", error=6e-3, resident=False)
    rows, _ = report.load([fp32, bf16])
    assert "10 ms (1.00x" in report.table(rows, "forward", "float32")
    half = report.table(rows, "forward", "bfloat16")
    assert "4 ms † (1.00x" in half and "bound 0.08" in half and "† timed through NumPy" in half
    assert report.table(rows, "forward", "float16") == ""
    text = report.render(rows, [])
    assert text.index("## forward, float32") < text.index("## forward, bfloat16")


def test_columns_follow_the_shape_table_with_cpu_before_gpu(tmp_path):
    cpu = run_file(tmp_path / "c.json", {("a/x", "mnist-rows", "forward"): 0.01, ("a/x", SHAPE, "forward"): 0.02})
    gpu = run_file(tmp_path / "g.json", {("a/x", "mnist-rows", "forward"): 0.001}, device="cuda")
    rows, _ = report.load([cpu, gpu])
    header = report.table(rows, "forward").splitlines()[0]
    assert header.index("mnist-rows cpu") < header.index("mnist-rows cuda") < header.index(f"{SHAPE} cpu")


def test_machine_description_names_what_results_depend_on():
    info = {"lstm_conformance": {
        "cpu_model": "Xeon", "cpu_count": 16, "cpu_isa": {"simd": ["avx2", "avx512f"], "torch_cpu_capability": "AVX512"},
        "gpu": "H100", "cuda": "13.0", "cudnn": 91900, "numpy": "2.5", "blas": "openblas",
        "frameworks": {"torch (cuda)": {"torch": "2.11", "tf32_matmul": False, "tf32_cudnn": False, "threads": 16}},
    }}
    line = report.describe_machine(info)
    assert "CPU Xeon x16; ISA avx2 avx512f, torch dispatches AVX512" in line and "GPU H100, CUDA 13.0, cuDNN 91900" in line
    assert "torch (cuda): torch 2.11, threads 16, tf32_matmul False, tf32_cudnn False" in line


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
    half = run_file(tmp_path / "h.json", {("a/x", SHAPE, "forward"): 0.004}, device="cuda", dtype="float16")
    assert report.main([str(path), str(half), "--plots", str(tmp_path / "plots2")]) == 0
    assert "lstm-forward-float16.png" in {p.name for p in (tmp_path / "plots2").iterdir()}
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "## forward+backward" in (tmp_path / "r.md").read_text()


def test_a_file_without_matrix_results_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": [{"stats": {"median": 1.0}, "extra_info": {}}]}))
    assert report.main([str(tmp_path / "empty.json")]) == 2
    assert "no results of the benchmark matrix (bench/test_matrix.py" in capsys.readouterr().err


def old_layer_run_file(path, medians: dict, device="cpu", error=1e-6, resident=False):
    """A pytest-benchmark JSON as bench/test_layer_matrix.py wrote it before the two matrices were one (the committed
    bench/results/cpu-layer-2026-11-23): medians[(impl, lengths, pass_)] = seconds."""
    benchmarks = [{
        "stats": {"median": median},
        "extra_info": {"layer_matrix": True, "implementation": impl, "device": device, "shape": BRAUN,
                       "lengths": lengths, "how": "padded" if lengths == "padded" else "lengths", "pass_": pass_,
                       "flop": 30.0, "useful_gflops": 10.0 / median, "relative_error_vs_spec": error, "device_resident": resident},
    } for (impl, lengths, pass_), median in medians.items()]
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return path


def layer_run_file(path, medians: dict, device="cpu", dtype="float32", error=1e-6, resident=False):
    """A pytest-benchmark JSON as bench/test_matrix.py writes it for Braun's stack: medians[(impl, variant, pass_)]."""
    s = SHAPES_BY_NAME[BRAUN]
    benchmarks = [{
        "stats": {"median": median},
        "extra_info": {"matrix": True, "implementation": impl, "device": device, "shape": BRAUN, "variant": variant,
                       "how": "padded" if variant == "padded" else "mask", "pass_": pass_, "dtype": dtype,
                       "gflops": flop(s, pass_) / median / 1e9, "useful_gflops": 10.0 / median, "roofline_fraction": 0.1,
                       "relative_error_vs_spec": error, "device_resident": resident},
    } for (impl, variant, pass_), median in medians.items()]
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return path


LAYER_MEDIANS = {
    ("torch/nn.LSTM", "padded", "forward+backward"): 3.0, ("torch/nn.LSTM", "variable", "forward+backward"): 12.0,
    ("onnxruntime/LSTM", "padded", "forward+backward"): 1.0,
    ("torch/nn.LSTM", "padded", "forward"): 1.5,
}


def test_the_layer_table_of_an_earlier_layer_run_puts_padded_beside_variable_lengths(tmp_path):
    results, _ = report.load([old_layer_run_file(tmp_path / "layer.json", LAYER_MEDIANS)])
    assert report.table(results, "forward+backward") == ""  # results with lengths go to the layer's tables only
    text = report.layer_table(results, BRAUN, "forward+backward")
    lines = text.splitlines()
    # Fastest padded first; the ratio is variable over padded; a missing run is "-".
    assert lines[2] == "| `onnxruntime/LSTM` | cpu | 1 s †, 10 useful GFLOP/s | - | - |"
    assert lines[3] == "| `torch/nn.LSTM` | cpu | 3 s †, 3.33 useful GFLOP/s | 12 s † (lengths), 0.833 useful GFLOP/s | 4.00x |"
    assert "worst relative error 1e-06" in text and "† timed through NumPy" in text
    assert report.layer_table(results, "braun-4x320", "forward") == ""
    rendered = report.render(results, [])
    assert "## braun-4x320-T100, forward\n" in rendered and "## braun-4x320-T100, forward+backward\n" in rendered
    assert "## forward, float32" not in rendered


def test_the_one_matrix_writes_what_the_layer_table_reads_and_compares_with_an_earlier_layer_run(tmp_path):
    """A run of the one matrix puts Braun's results in the same table, keyed as the earlier layer runs were, so a
    regression against a committed layer run is found; the cell's shapes of the same run go to their own tables."""
    new = layer_run_file(tmp_path / "new.json", {**LAYER_MEDIANS, ("torch/nn.LSTM", "variable", "forward+backward"): 15.0})
    cell = run_file(tmp_path / "cell.json", {("torch/nn.LSTM", SHAPE, "forward+backward"): 0.1})
    results, _ = report.load([new, cell])
    text = report.layer_table(results, BRAUN, "forward+backward")
    assert "| `torch/nn.LSTM` | cpu | 3 s †, 3.33 useful GFLOP/s | 15 s † (mask), 0.667 useful GFLOP/s | 5.00x |" in text
    assert "`torch/nn.LSTM` | standard | 100 ms" in report.table(results, "forward+backward")
    old, _ = report.load([old_layer_run_file(tmp_path / "old.json", LAYER_MEDIANS)])
    assert report.regressions(results, old, 0.10) == [
        "REGRESSION torch/nn.LSTM variable float32 cpu braun-4x320-T100 forward+backward: 1.2e+04 ms -> 1.5e+04 ms "
        "(1.25x, threshold 1.10x)"]
    assert "## braun-4x320-T100, forward, float16" in report.render(
        report.load([layer_run_file(tmp_path / "half.json", LAYER_MEDIANS, dtype="float16")])[0], [])


def test_layer_regressions_are_flagged_like_the_matrix(tmp_path):
    old, _ = report.load([old_layer_run_file(tmp_path / "old.json", {("torch/nn.LSTM", "variable", "forward"): 1.0})])
    new, _ = report.load([old_layer_run_file(tmp_path / "new.json", {("torch/nn.LSTM", "variable", "forward"): 1.5})])
    flagged = report.regressions(new, old, 0.10)
    assert flagged == ["REGRESSION torch/nn.LSTM variable float32 cpu braun-4x320-T100 forward: 1e+03 ms -> 1.5e+03 ms (1.50x, threshold 1.10x)"]


def test_the_committed_results_are_read():
    """Every committed run (bench/results/) still reads: the cell's tables and the earlier layer runs' tables."""
    from tests.suite import ROOT

    paths = sorted((ROOT / "bench" / "results").rglob("*.json"))
    results, machines = report.load(paths)
    assert len(machines) == len(paths) and any(r.with_lengths for r in results.values())
    text = report.render(results, machines)
    assert "## forward, float32" in text and "## braun-4x320-T100, forward+backward" in text
