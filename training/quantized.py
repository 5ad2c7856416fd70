"""The training-side view of dynamic quantization: the tutorials' digit classifier, trained in float, its LSTM
quantized by each runtime, evaluated on the test set.

    python -m training.quantized              train the spec's run (500 steps, seed 0), then run every quantized row
    python -m training.quantized --from OUT   the spec's run kept by python -m training.digits --keep-runs --out OUT
    python -m training.quantized --quick      a few training steps and test images (what the test suite runs)

Options: --out DIR (default reports/training), --steps N, --seed N, --samples N (the first N test images; default all),
--rows ID,ID (default: every built-in row with a quantization scheme).

The float model is the spec's reference run of ``python -m training.digits`` (the same inputs, the same code:
training.runs.execute), so its test accuracy is the report's. Each quantized row then runs the model's LSTM on the
test images through the contract (``forward()`` from the float32 weights: the row's runtime quantizes them as it
would any model), and the same float head turns its last output into logits. Reported per row, never judged:

- test accuracy, and how many predictions differ from the float model's;
- the per-step output error: for each step t (the digit's rows), max and mean |y_t(row) - y_t(float spec)| over the
  test images and units, the quantization error as it builds up along the sequence;
- whether the row computes what its scheme says on these inputs: its outputs against the integer reference
  (spec.quantized) on the integers, scales and zero points its model holds, the worst error in dequantization steps,
  judged by contract.tolerances.quantized_tolerance as the conformance suite judges it.

It writes OUT/quantized.md and OUT/quantized.png. Exit status: 0 when every row that ran matches its integer reference,
1 when one does not (or failed), 2 on a usage error; a row whose framework is missing is reported with its reason.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from backends.registry import builtin_rows, row_by_id
from contract.quantization import against_integer_reference, integer_reference
from contract.runtime import cpu_model
from contract.vocabulary import Device
from spec import layer as spec_layer
from spec.params import LayerParams
from training import head
from training.data import Digits
from training.frameworks import LAYER
from training.model import ModelParams
from training.runs import ROOT, RunSpec
from training.trajectory import Trajectory

#: The spec's reference run, as training.runs.all_runs names it (its file under OUT/runs with --keep-runs).
REFERENCE = RunSpec("spec", "reference", "numpy", "spec")
#: --quick: enough steps to leave chance level behind and enough images for an accuracy, in seconds.
QUICK_SAMPLES = 64


@dataclass
class RowResult:
    """One quantized row on the test set; ``status`` "ok", or why it did not run."""

    id: str
    status: str = "ok"
    scheme: str = ""
    accuracy: float | None = None
    flipped: int | None = None  # test predictions that differ from the float model's
    step_max: np.ndarray | None = None  # (T,): max over images and units of |y_t - y_t(float spec)|
    step_mean: np.ndarray | None = None  # (T,): the mean of the same
    step: float | None = None  # the median dequantization step of the integer reference's products
    worst_steps: float | None = None  # the worst |output - integer reference| in dequantization steps
    matches: bool | None = None  # within quantized_tolerance on y, h_T and c_T
    forced: int = 0  # steps where the reference took the row's own h (spec.quantized's forcing)
    where: str = ""  # where the worst disagreement is, when it does not match
    environment: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """The float model and every row on the same test images."""

    accuracy: float  # the float spec's
    samples: int
    rows: list[RowResult]
    training: dict  # how the float model was made: steps, seed, final loss, source


def trained(source: Path | None, steps: int, seed: int) -> tuple[ModelParams, Digits, dict]:
    """The float model and its data: the spec's kept run under ``source`` (python -m training.digits --keep-runs), or
    the same run trained here through training.runs.execute, the function python -m training.digits runs it with."""
    from training.digits import prepare
    from training.runs import execute

    if source is not None:
        run = Trajectory.load(source / "runs" / REFERENCE.file_name)
        digits = Digits.load(source / "inputs" / "digits.safetensors")
        origin = f"the spec's run kept in {source}"
    else:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency, installed with the digits

        # One BLAS thread, as the spec's process runs (training.runs.GROUP_ENVIRONMENT: two spinning threads on a
        # busy machine made a step ten times slower).
        with tempfile.TemporaryDirectory() as folder, threadpool_limits(1, "blas"):
            prepare(Path(folder), steps, seed)
            run = execute(REFERENCE, Path(folder), 0, lambda done: None)
            digits = Digits.load(Path(folder) / "inputs" / "digits.safetensors")
        origin = f"the spec's run trained here (training.runs.execute, seed {seed})"
    if not run.ok:
        raise RuntimeError(f"the spec's training run: {run.status}")
    final = ModelParams.from_tensors({k: v[-1] for k, v in run.params.items()})  # the last kept step is the last step
    return final, digits, {"origin": origin, "steps": int(run.steps[-1]), "loss": float(run.loss[-1]),
                           "hidden": final.lstm.hidden_size, "float_accuracy": run.info.get("test_accuracy")}


def quantized_rows(ids: list[str] | None = None):
    return [row_by_id(i) for i in ids] if ids else [r for r in builtin_rows() if r.quantization is not None]


def evaluate_row(row, params: LayerParams, model: ModelParams, x: np.ndarray, y: np.ndarray, float_y: np.ndarray,
                 float_predictions: np.ndarray) -> RowResult:
    result = RowResult(row.id)
    if (reason := row.availability(Device.CPU)) is not None:
        result.status = f"unavailable: {reason}"
        return result
    if (reason := row.refusal(dtype="float32", device=Device.CPU, layer=LAYER)) is not None:
        result.status = f"refuses the model's LSTM: {reason}"
        return result
    result.scheme, result.environment = row.quantization.name, row.environment(Device.CPU)
    zeros = np.zeros((1, x.shape[1], model.lstm.hidden_size), np.float32)
    try:
        out = row.forward(params, x, zeros, zeros, layer=LAYER, device=Device.CPU)
        # The conformance verdict on these inputs, as conformance/judge.py reaches it (its observed outputs included).
        reference = integer_reference(row, params, x, zeros, zeros, layer=LAYER, device=Device.CPU, observed_y=out.y)
    except Exception as error:  # noqa: BLE001 - a row that fails is reported, the others still run
        result.status = f"failed: {type(error).__name__}: {error}"
        return result
    logits = out.h_T[0].astype(np.float32) @ model.Wd.T + model.bd
    result.accuracy = head.accuracy(logits, y)
    result.flipped = int(np.sum(np.argmax(logits, axis=1) != float_predictions))
    error = np.abs(out.y.astype(np.float64) - float_y)  # (T, N, H)
    result.step_max, result.step_mean = error.max(axis=(1, 2)), error.mean(axis=(1, 2))
    compared = against_integer_reference(out.tensors(), reference)
    worst = max(compared, key=lambda c: c.worst_ratio)
    result.step, result.forced = reference.step, len(reference.forced)
    result.worst_steps = max(c.worst_error for c in compared) / reference.step
    result.matches = all(c.ok for c in compared)
    if not result.matches:
        result.where = f"{worst.name} at {worst.index} ({worst.worst_ratio:.3g}x the tolerance)"
    return result


def evaluate(model: ModelParams, digits: Digits, rows, samples: int | None = None, training: dict | None = None,
             progress=lambda row_id: None) -> Evaluation:
    x, y = digits.test_set()
    x, y = x[:, :samples], y[:samples]
    params = LayerParams((model.lstm,))
    zeros = np.zeros((1, x.shape[1], model.lstm.hidden_size), np.float32)
    # The float model in float32, as it was trained and tested (training.frameworks.spec_model.spec_logits).
    float_run = spec_layer.forward(params, x, zeros, zeros, config=LAYER, dtype=np.float32)
    float_logits = float_run.h_T[0] @ model.Wd.T + model.bd
    results = []
    for row in rows:
        progress(row.id)
        results.append(evaluate_row(row, params, model, x, y, float_run.y.astype(np.float64),
                                    np.argmax(float_logits, axis=1)))
    return Evaluation(head.accuracy(float_logits, y), len(y), results, training or {})


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def plot(evaluation: Evaluation, path: Path) -> Path | None:
    """Per row, the max (solid) and mean (dashed) |y_t - y_t(float spec)| at each step t, log scale; None without
    matplotlib."""
    measured = [r for r in evaluation.rows if r.step_max is not None]
    if not measured:
        return None
    try:  # the tables are the report; without matplotlib (pip install 'lstm-conformance[train]') there is no plot
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    figure, axes = plt.subplots(figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, color in zip(measured, colors * 2):
        steps = np.arange(1, len(r.step_max) + 1)
        axes.plot(steps, r.step_max, "-", marker="o", ms=4, color=color, label=f"{r.id}: max")
        axes.plot(steps, r.step_mean, "--", marker=".", ms=3, color=color, label="mean")
    axes.set(yscale="log", xlabel="step t (the digit's row)", ylabel="|y_t(row) - y_t(float spec)|",
             xticks=np.arange(1, len(measured[0].step_max) + 1))
    axes.set_title(f"Quantization error along the sequence, the trained digit classifier, {evaluation.samples} test "
                   "images", fontsize=9)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def render(evaluation: Evaluation, meta: dict, picture: Path | None) -> str:
    e, t = evaluation, evaluation.training
    ran = [r for r in e.rows if r.status == "ok"]
    lines = ["# Training report: the digit classifier, dynamically quantized by each runtime", "",
             f"{meta['when']}; {meta['mode']}; {meta['machine']}; {meta['seconds']:.0f} s in all.", "",
             f"The float model: {t.get('origin', '')}, {t.get('steps')} steps of the shared RMSProp step (final loss "
             f"{t.get('loss', float('nan')):.4f}, test accuracy {_pct(t.get('float_accuracy'))} on the whole test set); "
             "see report.md for how it trains. Each row below runs the model's LSTM "
             f"(H = {t.get('hidden')}, forget bias {LAYER.forget_bias:g}, carried as the row's layout carries it) on "
             f"{e.samples} test images through the contract, from the float32 weights, which its runtime quantizes as it "
             "quantizes any model (int8 weights, activations quantized per call from their own range); the same float "
             "head turns h_T into logits. Reported, not judged: the accuracy and the quantization error are what the "
             "scheme costs this model. Judged: whether the row computes what its scheme says (its integer reference, "
             "spec/quantized.py, on the integers its model holds; tolerance: the float32 outputs tolerance plus half a "
             "dequantization step, as in the conformance suite).", "",
             "| model | scheme | test accuracy | predictions that differ from the float model's | "
             "against its integer reference (worst, in dequantization steps) |",
             "|---|---|---|---|---|",
             f"| float spec (float32) | – | {_pct(e.accuracy)} | – | – |"]
    for r in e.rows:
        if r.status != "ok":
            lines.append(f"| {r.id} | – | – | – | {r.status} |")
            continue
        verdict = "matches" if r.matches else f"**does not match**: {r.where}"
        forced = f"; took the row's own h at {r.forced} step(s)" if r.forced else ""
        lines.append(f"| {r.id} | {r.scheme} | {_pct(r.accuracy)} | {r.flipped} of {e.samples} | "
                     f"{verdict} ({r.worst_steps:.3g} steps of {r.step:.3g}{forced}) |")
    if ran:
        T = len(ran[0].step_max)
        lines += ["", "## The output error along the sequence", "",
                  "max |y_t(row) - y_t(float spec)| over the test images and units at each step t (mean in brackets): "
                  "y_t is the LSTM's output after the digit's first t rows; y_T is the h_T the head reads.", "",
                  "| row | " + " | ".join(f"t = {k}" for k in range(1, T + 1)) + " |",
                  "|---" * (T + 1) + "|"]
        for r in ran:
            cells = (f"{m:.2e} ({a:.1e})" for m, a in zip(r.step_max, r.step_mean))
            lines.append(f"| {r.id} | " + " | ".join(cells) + " |")
    if picture is not None:
        lines += ["", f"![the output error per step, each row]({picture.name})"]
    lines += ["", "## Environment", ""]
    lines += [f"- {r.id}: " + ", ".join(f"{k} {v}" for k, v in r.environment.items()) for r in ran]
    lines += [f"- numpy {np.__version__}, python {platform.python_version()}", ""]
    return "\n".join(lines)


def write(evaluation: Evaluation, out: Path, meta: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    picture = plot(evaluation, out / "quantized.png")
    (out / "quantized.md").write_text(render(evaluation, meta, picture))
    return out / "quantized.md"


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    from training.digits import FULL_STEPS, MAX_SEED, QUICK_STEPS

    parser = argparse.ArgumentParser(prog="python -m training.quantized", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "training",
                        help="output folder (default reports/training)")
    parser.add_argument("--from", dest="source", type=Path,
                        help="a python -m training.digits --keep-runs output folder: its spec run, not a new one")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_STEPS} steps, the first {QUICK_SAMPLES} test images")
    parser.add_argument("--steps", type=int, help=f"training steps (default {FULL_STEPS}; {QUICK_STEPS} with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the batches and the initial weights")
    parser.add_argument("--samples", type=int, help="the first N test images (default all; "
                        f"{QUICK_SAMPLES} with --quick)")
    parser.add_argument("--rows", help="comma-separated row ids (default: every quantized row)")
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else FULL_STEPS)
    args.samples = args.samples if args.samples is not None else (QUICK_SAMPLES if args.quick else None)
    for option, value in (("--steps", args.steps), ("--samples", args.samples)):
        if value is not None and value < 1:
            parser.error(f"{option} must be at least 1; got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must be from 0 to {MAX_SEED}; got {args.seed}")
    if args.source is not None and not (args.source / "runs" / REFERENCE.file_name).is_file():
        parser.error(f"--from must be a python -m training.digits --keep-runs folder; {args.source} has no "
                     f"runs/{REFERENCE.file_name}")
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    if args.rows:
        known = [r.id for r in quantized_rows()]
        unknown = [r for r in args.rows if r not in known]
        if unknown:
            parser.error(f"--rows must name quantized rows ({', '.join(known)}); got {', '.join(map(repr, unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    print(f"training the float model ({args.steps} steps)" if args.source is None else f"reading {args.source}",
          flush=True)
    model, digits, training = trained(args.source, args.steps, args.seed)
    evaluation = evaluate(model, digits, quantized_rows(args.rows), args.samples, training,
                          progress=lambda row_id: print(f"running {row_id}", flush=True))
    meta = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": cpu_model(),
            "mode": "quick run" if args.quick else "full run", "seconds": time.perf_counter() - start}
    path = write(evaluation, args.out.resolve(), meta)
    print(f"float spec: {_pct(evaluation.accuracy)} on {evaluation.samples} test images")
    for r in evaluation.rows:
        print(f"  {r.id}: " + (r.status if r.status != "ok" else
              f"{_pct(r.accuracy)}, max |y_T - float| {r.step_max[-1]:.2e}, integer reference "
              f"{'matches' if r.matches else 'DOES NOT MATCH'} ({r.worst_steps:.3g} steps)"))
    print(f"report: {path}")
    return 0 if all(r.matches or r.status.startswith(("unavailable", "refuses")) for r in evaluation.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
