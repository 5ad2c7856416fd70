"""Turn saved benchmark runs into side-by-side tables and plots, and flag regressions.

    python -m bench.report RUN.json [RUN.json ...] [--markdown FILE] [--plots DIR]
    python -m bench.report NEW.json --baseline OLD.json [--threshold 0.10]

RUN.json files are pytest-benchmark's (``--benchmark-json`` or ``--benchmark-save``) from bench/test_matrix.py, and
from bench/test_layer_matrix.py of runs made before the two matrices were one (bench/results/cpu-layer-2026-11-23:
read as the same results, their "lengths" as the variant). Several runs (a CPU machine's and a GPU machine's, say)
are merged, a later file's result replacing an earlier one's for the same configuration.

For the cell's shapes (one forward layer, variants standard and peephole), for each pass and dtype the table has one
row per implementation and variant and one column per shape and device (CPU beside GPU); a cell is the median time,
its ratio to the fastest in that column and its fraction of the roofline; DeepBench's published times for the same
shapes (V100, cuDNN, float32) stand in the last row. Below each table: the worst error against the spec among its
results.

For a shape with variable lengths (Braun's stack), one table per shape, pass and dtype: per implementation and
device, the padded run beside the variable-length run on the same data (packed, sequence lengths or a mask, as the
implementation takes them), each with its useful GFLOP/s (the steps inside each row's length only), and their
ratio: what variable lengths cost (> 1) or save (< 1) in that framework.

A quantized row (its result names its scheme and its float source: ``Row.float_source``) is left out of
those tables (it is checked against its integer reference, not the spec, and a float roofline says little of int8
products): its own table sets each of its results beside its float source's in the same run, shape, variant and
device: both times, their ratio, the quantization error (max |y - spec| on the benchmark's data, the float source's
beside) and its worst error against the integer reference in dequantization steps.

With --baseline, every configuration that is slower than in the baseline by more than the threshold is flagged,
and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.correctness import BOUNDS
from bench.matrix import LENGTH_VARIANTS, PASSES, SHAPES, VARIANTS_BY_NAME
from contract.vocabulary import Dtype

#: The variants of a shape with variable lengths: their results go to the padded-beside-variable tables.
LENGTH_VARIANT_NAMES = tuple(v.name for v in LENGTH_VARIANTS)


@dataclass(frozen=True)
class Result:
    """One timed configuration of a run."""

    implementation: str  # the row's id
    variant: str  # standard / peephole (the cell's shapes), padded / variable (a shape with lengths)
    dtype: str
    device: str
    shape: str
    pass_: str
    median_s: float
    gflops: float  # of the steps computed
    roofline_fraction: float | None = None
    deepbench_ms: float | None = None
    deepbench_source: str | None = None
    relative_error: float | None = None  # against the spec (bench/correctness.py)
    device_resident: bool | None = None  # False: timed through NumPy, transfers included
    how: str | None = None  # how the lengths went in: padded, lengths or mask
    useful_gflops: float | None = None  # of the steps inside each row's length only
    max_abs_error: float | None = None  # max |y - spec| (forward passes)
    quantization: str | None = None  # a quantized row's scheme
    float_source: str | None = None  # the float row it is made from
    steps: float | None = None  # its worst |y - integer reference|, in dequantization steps
    dequantization_step: float | None = None
    forced_steps: int | None = None
    unverified: int = 0  # a quantized result the integer reference could not decide (bench/correctness.py)
    threads: object = None  # the threads the row ran on (quantized rows and their sources)

    @property
    def key(self) -> tuple:
        return (self.implementation, self.variant, self.dtype, self.device, self.shape, self.pass_)

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    @property
    def with_lengths(self) -> bool:
        """Whether it is one of a padded / variable-lengths pair."""
        return self.variant in LENGTH_VARIANT_NAMES


def _result(bench: dict) -> Result | None:
    """The matrix's result in one pytest-benchmark entry, or None for another benchmark's."""
    info, median = bench.get("extra_info", {}), bench["stats"]["median"]
    common = dict(implementation=info.get("implementation"), device=info.get("device"), shape=info.get("shape"),
                  pass_=info.get("pass_"), median_s=median, relative_error=info.get("relative_error_vs_spec"),
                  device_resident=info.get("device_resident"), max_abs_error=info.get("max_abs_error_vs_spec"),
                  quantization=info.get("quantization"), float_source=info.get("float_source"),
                  steps=info.get("worst_steps_vs_integer_reference"), dequantization_step=info.get("dequantization_step"),
                  forced_steps=info.get("forced_steps"), threads=info.get("row_threads"),
                  unverified=info.get("unverified") or 0)
    if info.get("matrix"):
        return Result(**common, variant=info["variant"], dtype=info["dtype"], gflops=info["gflops"],
                      roofline_fraction=info.get("roofline_fraction"), deepbench_ms=info.get("deepbench_ms"),
                      deepbench_source=info.get("deepbench_source"), how=info.get("how"),
                      useful_gflops=info.get("useful_gflops"))
    if info.get("layer_matrix"):  # bench/test_layer_matrix.py, before the matrices were one: float32, no roofline
        return Result(**common, variant=info["lengths"], dtype=info.get("dtype", "float32"),
                      gflops=info["flop"] / median / 1e9, how=info["how"], useful_gflops=info["useful_gflops"])
    return None


def load(paths) -> tuple[dict[tuple, Result], list[dict]]:
    """The matrix's results in ``paths`` (a later file's replacing an earlier one's), and each file's machine."""
    results: dict[tuple, Result] = {}
    machines = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        machines.append({"file": str(path), "description": describe_machine(data.get("machine_info", {}))})
        for bench in data.get("benchmarks", []):
            if (result := _result(bench)) is not None:
                results[result.key] = result
    return results, machines


def describe_machine(info: dict) -> str:
    """One line of what a run's results depend on: CPU and its vector extensions, GPU, CUDA and cuDNN, framework
    versions, TF32, threads."""
    ours = info.get("lstm_conformance") or {}
    parts = [f"CPU {ours.get('cpu_model') or (info.get('cpu') or {}).get('brand_raw', '?')} x{ours.get('cpu_count', '?')}"]
    if isa := ours.get("cpu_isa"):
        capability = f", torch dispatches {isa['torch_cpu_capability']}" if isa.get("torch_cpu_capability") else ""
        parts.append(f"ISA {' '.join(isa.get('simd', [])) or 'no listed vector extension'}{capability}")
    if ours.get("gpu"):
        parts.append(f"GPU {ours['gpu']}, CUDA {ours.get('cuda')}, cuDNN {ours.get('cudnn')}")
    if ours.get("blas"):
        parts.append(f"NumPy {ours.get('numpy')} ({ours['blas']})")
    for framework, env in (ours.get("frameworks") or {}).items():
        if not isinstance(env, dict):
            parts.append(f"{framework}: {env}")
            continue
        keys = ("torch", "tensorflow", "keras", "jax", "flax", "onnxruntime", "onnx", "openvino", "ai-edge-litert",
                "threads", "intra_op_threads", "inference_num_threads", "num_threads", "inference_precision",
                "execution_mode", "tf32", "tf32_matmul", "tf32_cudnn", "matmul_precision", "mkldnn_rnn_fp32_precision",
                "lstm_cpu_kernels")
        parts.append(f"{framework}: " + ", ".join(f"{k} {env[k]}" for k in keys if k in env))
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def table(results: dict[tuple, Result], pass_: str, dtype: str = "float32") -> str:
    """The cell's shapes in one pass and dtype: a row per implementation and variant, a column per shape and device."""
    selected = [r for r in results.values() if r.pass_ == pass_ and r.dtype == dtype and not r.with_lengths and not r.quantized]
    if not selected:
        return ""
    order = {shape.name: k for k, shape in enumerate(SHAPES)}  # bench/matrix.py's order; CPU before GPU
    columns = sorted({(r.shape, r.device) for r in selected}, key=lambda c: (order.get(c[0], len(order)), c[0], c[1] != "cpu", c[1]))
    names = sorted({(r.implementation, r.variant) for r in selected})
    fastest = {c: min(r.median_s for r in selected if (r.shape, r.device) == c) for c in columns}
    header = ["implementation", "variant"] + [f"{shape} {device}" for shape, device in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r.implementation, r.variant, r.shape, r.device): r for r in selected}
    for implementation, variant in names:
        cells = []
        for shape, device in columns:
            r = by_key.get((implementation, variant, shape, device))
            if r is None:
                cells.append("-")
            else:
                roof = f", {r.roofline_fraction:.0%} of roofline" if r.roofline_fraction is not None else ""
                mark = " †" if r.device_resident is False else ""
                cells.append(f"{_duration(r.median_s)}{mark} ({r.median_s / fastest[(shape, device)]:.2f}x{roof})")
        lines.append("| " + " | ".join([f"`{implementation}`", variant] + cells) + " |")
    references = []
    for shape, _device in columns:
        ref = next((r for r in selected if r.shape == shape and r.deepbench_ms is not None), None)
        # Training shapes come from DeepBench's V100 sheet, inference ones from its 1080 Ti sheet.
        references.append(f"{ref.deepbench_ms:.3g} ms ({ref.deepbench_source.removeprefix('DeepBench ')})" if ref else "-")
    if any(ref != "-" for ref in references):
        lines.append("| " + " | ".join(["*DeepBench, published*", ""] + references) + " |")
    errors = [r.relative_error for r in selected if r.relative_error is not None]
    if errors:
        checked = (
            "Every result above was checked against the spec before it was timed: worst relative error "
            f"{max(errors):.2g} (bound {BOUNDS[Dtype(dtype)][0]:g}, bench/correctness.py)."
        )
        lines += ["", checked]
    if any(r.device_resident is False for r in selected):
        lines += ["", "† timed through NumPy (inputs converted and transferred on every call)."]
    return "\n".join(lines)


def layer_table(results: dict[tuple, Result], shape: str, pass_: str, dtype: str = "float32") -> str:
    """Padded beside variable lengths, per implementation and device, fastest padded first."""
    selected = [r for r in results.values()
                if r.shape == shape and r.pass_ == pass_ and r.dtype == dtype and r.with_lengths and not r.quantized]
    if not selected:
        return ""
    by_key = {(r.implementation, r.device, r.variant): r for r in selected}
    names = sorted({(r.implementation, r.device) for r in selected},
                   key=lambda n: (n[1] != "cpu", n[1], by_key[(*n, "padded")].median_s if (*n, "padded") in by_key else float("inf"), n[0]))
    lines = ["| implementation | device | padded | variable lengths | variable / padded |", "|---|---|---|---|---|"]

    def cell(r: Result | None) -> str:
        if r is None:
            return "-"
        mark = " †" if r.device_resident is False else ""
        how = "" if r.how in (None, "padded") else f" ({r.how})"
        return f"{_duration(r.median_s)}{mark}{how}, {r.useful_gflops:.3g} useful GFLOP/s"

    for implementation, device in names:
        padded, variable = by_key.get((implementation, device, "padded")), by_key.get((implementation, device, "variable"))
        ratio = f"{variable.median_s / padded.median_s:.2f}x" if padded and variable else "-"
        lines.append(f"| `{implementation}` | {device} | {cell(padded)} | {cell(variable)} | {ratio} |")
    errors = [r.relative_error for r in selected if r.relative_error is not None]
    if errors:
        lines += ["", "Every result above was checked against the spec before it was timed (the padded runs against the spec "
                  f"with every length T): worst relative error {max(errors):.2g} (bound {BOUNDS[Dtype(dtype)][0]:g})."]
    if any(r.device_resident is False for r in selected):
        lines += ["", "† timed through NumPy (inputs converted and transferred on every call)."]
    return "\n".join(lines)


def quantized_table(results: dict[tuple, Result]) -> str:
    """Each quantized result beside its float source's (same shape, variant, pass, dtype and device, same run): their
    times and ratio, the quantization error and the agreement with the integer reference."""
    selected = [r for r in results.values() if r.quantized]
    if not selected:
        return ""
    order = {shape.name: k for k, shape in enumerate(SHAPES)}
    variants = {name: k for k, name in enumerate(VARIANTS_BY_NAME)}
    selected.sort(key=lambda r: (order.get(r.shape, len(order)), r.shape, r.pass_, r.dtype, r.device != "cpu", r.device,
                                 variants.get(r.variant, len(variants)), r.implementation))
    lines = ["| shape | variant | quantized row (scheme) | time | float source | its time | quantized / float | "
             "quantization error: max \\|y - spec\\| (float source's) | vs integer reference: worst error in steps (step) |",
             "|---|---|---|---|---|---|---|---|---|"]
    threads_differ = False

    def cell(r: Result) -> str:
        mark = " †" if r.device_resident is False else ""
        how = "" if r.how in (None, "padded") else f" ({r.how})"
        return f"{_duration(r.median_s)}{mark}{how}"

    for r in selected:
        source = results.get((r.float_source, r.variant, r.dtype, r.device, r.shape, r.pass_)) if r.float_source else None
        differ = source is not None and None not in (r.threads, source.threads) and r.threads != source.threads
        threads_differ |= differ
        mark = f" ‡ ({r.threads} vs {source.threads} threads)" if differ else ""
        ratio = f"{r.median_s / source.median_s:.2f}x{mark}" if source else "-"
        error = "-" if r.max_abs_error is None else f"{r.max_abs_error:.3g}"
        if source is not None and source.max_abs_error is not None:
            error += f" ({source.max_abs_error:.2g})"
        steps = "-" if r.steps is None else f"{r.steps:.3g} ({r.dequantization_step:.2g})"
        if r.forced_steps:
            steps += f", took the row's h at {r.forced_steps} step(s)"
        if r.unverified:
            steps = (f"**unverified**: {r.steps:.3g} steps off, with {r.unverified} activations below the top layer "
                     "within float32 noise of a rounding boundary (their rounding not observable)")
        shape = r.shape if r.device == "cpu" and len({x.device for x in selected}) == 1 else f"{r.shape} {r.device}"
        if r.pass_ != "forward" or r.dtype != "float32":
            shape += f", {r.pass_}, {r.dtype}"
        lines.append(f"| {shape} | {r.variant} | `{r.implementation}` ({r.quantization}) | {cell(r)} | "
                     + (f"`{r.float_source}` | {cell(source)}" if source else f"`{r.float_source or '?'}` | -")
                     + f" | {ratio} | {error} | {steps} |")
    lines += ["", "Every quantized result above was checked against the integer reference of its scheme before it was "
              "timed (bench/correctness.py: the float32 outputs tolerance plus half a dequantization step, "
              "contract/tolerances.py), its float source's against the spec (as in the tables above)."]
    if any(r.unverified for r in selected):
        lines += ["", "**unverified**: outside that tolerance, but only where activations of a layer below the top, "
                  "within float32 noise of a rounding boundary, can reach (their rounding cannot be observed: only the "
                  "top layer's outputs are), and by no more than the quantization error itself; kept, not verified. "
                  "The conformance suite judges the same rows strictly on its (small) stacked cases."]
    if threads_differ:
        lines += ["", "‡ the two ran on different thread counts (as each row declares them): the ratio is not the "
                  "quantization's alone."]
    if any(r.device_resident is False for r in selected):
        lines += ["", "† timed through NumPy (inputs converted and transferred on every call)."]
    return "\n".join(lines)


def regressions(new: dict[tuple, Result], old: dict[tuple, Result], threshold: float) -> list[str]:
    found = []
    for key, result in sorted(new.items()):
        before = old.get(key)
        if before is not None and result.median_s > before.median_s * (1 + threshold):
            found.append(
                f"REGRESSION {' '.join(key)}: "
                f"{before.median_s * 1e3:.3g} ms -> {result.median_s * 1e3:.3g} ms ({result.median_s / before.median_s:.2f}x, "
                f"threshold {1 + threshold:.2f}x)"
            )
    return found


def plot(results: dict[tuple, Result], directory: Path, columns: int = 4) -> list[Path]:
    """One PNG per pass and dtype of the cell's shapes: GFLOP/s per implementation, a panel per shape (``columns`` to
    a row), CPU and GPU side by side. Every panel of a figure has the same axis, logarithmic when devices differ
    (a GPU and a CPU differ by orders of magnitude), so that bars compare across panels too."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    order = {shape.name: k for k, shape in enumerate(SHAPES)}
    written = []
    for pass_, dtype in ((p, d) for p in PASSES for d in Dtype):
        selected = [r for r in results.values() if r.pass_ == pass_ and r.dtype == dtype and not r.with_lengths
                    and not r.quantized]
        if not selected:
            continue
        shapes = sorted({r.shape for r in selected}, key=lambda name: (order.get(name, len(order)), name))
        labels = sorted({(r.implementation, r.variant) for r in selected})
        devices = sorted({r.device for r in selected})
        ncols = min(columns, len(shapes))
        nrows = math.ceil(len(shapes) / ncols)
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(4.5 * ncols, (0.35 * len(labels) + 1.4) * nrows), squeeze=False, sharex=True, sharey=True
        )
        height = 0.8 / len(devices)
        for ax, shape in zip(axes.flat, shapes):
            for k, device in enumerate(devices):
                values = [
                    next((r.gflops for r in selected if (r.implementation, r.variant, r.shape, r.device) == (*label, shape, device)), 0.0)
                    for label in labels
                ]
                ax.barh([i + k * height for i in range(len(labels))], values, height=height, label=device)
            ax.set_title(f"{shape}, {pass_}, {dtype}", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
        for ax in list(axes.flat)[len(shapes):]:
            ax.set_visible(False)
        if len(devices) > 1:
            smallest = min(r.gflops for r in selected if r.gflops > 0)
            axes.flat[0].set_xscale("log")
            axes.flat[0].set_xlim(left=smallest / 2)
        for ax in axes[-1]:
            ax.set_xlabel("GFLOP/s (8BH(I+H)T per forward" + (", x3 forward+backward)" if pass_ != "forward" else ")"), fontsize=8)
        for row in axes:
            row[0].set_yticks([i + 0.4 - height / 2 for i in range(len(labels))])
            row[0].set_yticklabels([f"{impl} ({variant})" for impl, variant in labels], fontsize=7)
        axes.flat[0].legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        suffix = "" if dtype == "float32" else f"-{dtype}"
        path = directory / f"lstm-{pass_.replace('+', '-')}{suffix}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def render(results: dict[tuple, Result], machines: list[dict]) -> str:
    intro = (
        "Median time per call, its ratio to the fastest in the column and its fraction of the roofline "
        "(min(matrix-product rate, arithmetic intensity x memory bandwidth), both measured in the same run, "
        "in the same dtype). FLOPs: 8BH(I+H)T per forward, x3 forward+backward."
    )
    parts = ["# LSTM benchmarks", "", intro, "", "Runs:"]
    for machine in machines:
        parts.append(f"- `{machine['file']}`: {machine['description']}")
    for pass_ in PASSES:
        for dtype in Dtype:
            text = table(results, pass_, dtype)
            if text:
                parts += ["", f"## {pass_}, {dtype}", "", text]
    with_lengths = [r for r in results.values() if r.with_lengths]
    if with_lengths:
        parts += ["", "# The layer: padded and variable lengths", "",
                  "A stack of bidirectional layers (the shapes with lengths in bench/matrix.py's SHAPES), each "
                  "implementation on the same data padded (every row all T steps) and with each row's own length "
                  "(packed, sequence lengths or a mask, as it takes them). Useful GFLOP/s count only the steps inside "
                  "the lengths (8BH(I+H) per row-step, layer and direction; x3 forward+backward), so the two columns "
                  "compare the work that matters."]
        order = {shape.name: k for k, shape in enumerate(SHAPES)}
        for shape in sorted({r.shape for r in with_lengths}, key=lambda name: (order.get(name, len(order)), name)):
            for pass_ in PASSES:
                for dtype in Dtype:
                    text = layer_table(results, shape, pass_, dtype)
                    if text:
                        suffix = "" if dtype == Dtype.FLOAT32 else f", {dtype}"
                        parts += ["", f"## {shape}, {pass_}{suffix}", "", text]
    text = quantized_table(results)
    if text:
        parts += ["", "# Quantized rows beside their float sources", "",
                  "Each dynamically quantized row (int8 weights, activations quantized as it runs) beside the float row "
                  "it is made from, timed in the same run on the same data: the ratio of their median times (< 1: the "
                  "quantized row is faster), the quantization error (the largest |y - spec| over every step's output, "
                  "what the scheme costs at that shape; the float source's own in brackets) and the worst error "
                  "against the integer reference of its scheme (spec/quantized.py) in dequantization steps (the "
                  "median s_a s_W of its products, in brackets; the check's tolerance is half a step above the "
                  "float32 tolerance).", "", text]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="pytest-benchmark JSON files of bench/test_matrix.py (and of bench/test_layer_matrix.py, "
                             "from before the matrices were one)")
    parser.add_argument("--baseline", type=Path, help="an earlier run to compare with")
    parser.add_argument("--threshold", type=float, default=0.10, help="slower by more than this fraction is a regression (default 0.10)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--plots", type=Path, help="write PNG plots to this directory")
    args = parser.parse_args(argv)
    results, machines = load(args.runs)
    if not results:
        print("no results of the benchmark matrix (bench/test_matrix.py, or bench/test_layer_matrix.py of earlier runs) "
              "in " + ", ".join(map(str, args.runs)), file=sys.stderr)
        return 2
    text = render(results, machines)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.plots:
        for path in plot(results, args.plots):
            print(f"wrote {path}")
    if args.baseline:
        old, _ = load([args.baseline])
        flagged = regressions(results, old, args.threshold)
        for line in flagged:
            print(line)
        if flagged:
            return 1
        print(f"no regression beyond {args.threshold:.0%} against {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
