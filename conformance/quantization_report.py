"""The quantized rows' two verdicts side by side: agreement with the integer reference (the conformance verdict, in
dequantization steps) and the quantization error (the distance from the float spec), per row and case, as a Markdown
table and a plot (reports/quantization.md, reports/quantization.png).

The quantization error is reported, never judged: it is what the scheme costs on that case (int8 weights and
activations quantized per call), the number a user weighs against the speed (bench/), while the verdict says whether
the runtime computes what its scheme says.
"""

from __future__ import annotations

from pathlib import Path

from conformance.report import Result, Status

TITLE = "Quantized rows: the integer reference and the quantization error"


def quantized_results(results: list[Result]) -> list[Result]:
    """The judged results (pass, FAIL, known) of the rows judged against an integer reference: those with a result
    that has a dequantization step."""
    quantized = {r.implementation for r in results if r.step}
    judged = (Status.PASS, Status.FAIL, Status.KNOWN)
    return [r for r in results if r.implementation in quantized and r.status in judged]


def render(results: list[Result]) -> str:
    rows = sorted({r.implementation for r in results}, key=[r.implementation for r in results].index)
    lines = [f"# {TITLE}", "",
             "Each quantized row against the integer reference of its scheme (spec/quantized.py): its worst error in "
             "dequantization steps (the median s_a s_W of the run's products; the tolerance is the float32 outputs "
             "tolerance plus half a step), the steps at which the reference took the row's own activations (float32 "
             "noise on a rounding boundary), and the quantization error: the largest |output - float spec| over y, "
             "h_T and c_T, reported, not judged.", ""]
    for row in rows:
        mine = [r for r in results if r.implementation == row]
        scheme = mine[0].policy or "-"
        lines += [f"## `{row}` ({scheme})", "", "| case | verdict | worst error (steps) | reference took the row's h at | "
                  "quantization error |", "|---|---|---|---|---|"]
        for r in mine:
            steps = "-" if r.worst_error is None or not r.step else f"{r.worst_error / r.step:.3g}"
            error = "-" if r.quantization_error is None else f"{r.quantization_error:.3g}"
            forced = f"{r.forced_steps} step(s)" if r.forced_steps else "-"
            lines.append(f"| {r.case} | {r.status} | {steps} | {forced} | {error} |")
        judged = [r for r in mine if r.status == Status.PASS and r.quantization_error is not None]
        if judged:
            worst = max(judged, key=lambda r: r.quantization_error)
            lines += ["", f"Worst quantization error where it conforms: {worst.quantization_error:.3g} ({worst.case})."]
        lines.append("")
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> Path | None:
    """The quantization error of every row on every case (log scale), or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    measured = [r for r in results if r.quantization_error is not None and r.status == Status.PASS]
    if not measured:
        return None
    cases = sorted({r.case for r in measured}, key=[r.case for r in measured].index)
    rows = sorted({r.implementation for r in measured}, key=[r.implementation for r in measured].index)
    figure, axes = plt.subplots(figsize=(max(8.0, 0.38 * len(cases) + 3), 4.8))
    width = 0.8 / len(rows)
    for k, row in enumerate(rows):
        by_case = {r.case: r.quantization_error for r in measured if r.implementation == row}
        xs = [i + (k - (len(rows) - 1) / 2) * width for i, case in enumerate(cases) if case in by_case]
        axes.bar(xs, [by_case[case] for case in cases if case in by_case], width, label=row)
    axes.set_yscale("log")
    axes.set_xticks(range(len(cases)), cases, rotation=70, ha="right", fontsize=7)
    axes.set_ylabel("max |output - float spec|")
    axes.set_title("Quantization error of each dynamically quantized row (each conforms to its integer reference)",
                   fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write(results: list[Result], directory: Path) -> list[Path]:
    """reports/quantization.md (and .png where matplotlib is installed) when the run judged a quantized row."""
    quantized = quantized_results(results)
    if not quantized:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "quantization.md"
    picture = plot(quantized, directory / "quantization.png")
    text = render(quantized)
    if picture is not None:
        text = text.replace("\n", f"\n\n![quantization error per case]({picture.name})\n", 1)
    markdown.write_text(text)
    return [markdown] + ([picture] if picture is not None else [])
