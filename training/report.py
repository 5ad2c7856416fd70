"""The report: the runs' files in, a Markdown report and PNG plots out, and the exit status.

    report.md      the tables (shared step, non-conformances, own optimizers), the bound, the setup
    loss.png       the loss of every run with the shared step on one axis, and its difference to the reference
    distance.png   every run's parameter distance to the reference (log), with the honest cloud and the bound
    own.png        the same for each framework's own RMSProp
    half.png       mixed precision: each row's distance to the spec's run under its policy, with that policy's bound

The status is 1 when a framework trained with the shared step leaves the bound (or failed), when the
control trained through the contract leaves it, or when a known non-conformance stays within it (the
bound could not see it); likewise in mixed precision, each row against the bound of the policy it declares;
unavailable frameworks are reported with their reason and do not fail the run.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from contract.runtime import cpu_model
from contract.tolerances import EPS32
from training.bound import FACTOR, Bound, Verdict, distances, judge, measure
from training.data import Digits
from training.model import FORGET_BIAS
from training.optimizer import DECAY, EPSILON, INITIAL_MEAN_SQUARE, LEARNING_RATE
from training.runs import HALF_POLICIES, RunSpec
from training.trajectory import Trajectory



@dataclass
class Judged:
    spec: RunSpec
    run: Trajectory
    verdict: Verdict | None = None
    steps: np.ndarray | None = None
    distance: np.ndarray | None = None


@dataclass
class Outcome:
    status: int
    problems: list[str]
    summary: str


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.{digits}e}"


def _ms(info: dict) -> str:
    timing = info.get("timing")
    return "–" if not timing else f"{1000 * timing['median_s']:.1f} ms (min {1000 * timing['min_s']:.1f})"


def _acc(info: dict) -> str:
    a = info.get("test_accuracy")
    return "–" if a is None else f"{100 * a:.1f}%"


def _loss(run: Trajectory) -> str:
    return "–" if run.loss is None or not len(run.loss) else f"{run.loss[-1]:.4f}"


def _mean_tail(loss: np.ndarray, n: int = 10) -> float:
    return float(np.mean(loss[-n:]))


def load_runs(out: Path, specs: list[RunSpec]) -> dict[str, Judged]:
    return {s.id: Judged(s, Trajectory.load(out / "runs" / s.file_name)) for s in specs}


def evaluate(runs: dict[str, Judged]) -> tuple[Bound | None, list[str]]:
    """The bound, and every run's verdict against it; the problems that make the status 1."""
    problems: list[str] = []
    ref = runs.get("spec")
    if ref is None or not ref.run.ok:
        return None, [f"the reference run failed: {ref.run.status if ref else 'missing'}"]
    honest = [j.run for j in runs.values() if j.spec.kind == "variant" and j.run.ok]
    failed_variants = [j.spec.id for j in runs.values() if j.spec.kind == "variant" and not j.run.ok]
    problems += [f"{v}: the honest reordering failed: {runs[v].run.status}" for v in failed_variants]
    if len(honest) < 2:
        return None, problems + ["fewer than two honest reorderings ran: no bound"]
    bound = measure(ref.run, honest)
    for j in runs.values():
        if j.spec.half:  # judged against their policy's runs (evaluate_half)
            continue
        if j.spec.kind in ("reference",) or not j.run.ok:
            if j.run.status.startswith("failed"):
                problems.append(f"{j.spec.id}: {j.run.status}")
            continue
        j.verdict, j.steps, j.distance = judge(j.run, ref.run, bound)
        v = j.verdict
        if j.spec.kind == "shared" and not v.within:
            problems.append(f"{j.spec.id} leaves the bound from step {v.first_step_beyond} (worst {v.worst_ratio:.3g}x the bound at step {v.worst_step})")
        if j.spec.kind == "contract" and j.spec.expect == "conformant" and not v.within:
            problems.append(f"{j.spec.id} (a conformant control) leaves the bound from step {v.first_step_beyond}")
        if j.spec.kind == "contract" and j.spec.expect == "non-conformant" and v.within:
            problems.append(f"{j.spec.id} is a known non-conformance but stays within the bound: the bound cannot see it")
    return bound, problems


def evaluate_half(runs: dict[str, Judged]) -> tuple[dict[str, Bound], list[str]]:
    """Mixed precision: per policy, the bound from the spec's honest runs under it (training/bound.py's, the same
    factor); every row's run judged against the bound of the policy it declares; the problems."""
    bounds, problems = {}, []
    for policy in HALF_POLICIES:
        ref = next((j for j in runs.values() if j.spec.kind == "half-reference" and j.spec.policy == policy), None)
        if ref is None:
            continue
        if not ref.run.ok:
            problems.append(f"{ref.spec.id}: the spec's run under {policy} failed: {ref.run.status}")
            continue
        honest = [j.run for j in runs.values() if j.spec.kind == "half-variant" and j.spec.policy == policy and j.run.ok]
        problems += [f"{j.spec.id}: the honest run failed: {j.run.status}" for j in runs.values()
                     if j.spec.kind == "half-variant" and j.spec.policy == policy and not j.run.ok]
        if len(honest) < 2:
            problems.append(f"fewer than two honest runs under {policy}: no bound")
            continue
        bounds[policy] = measure(ref.run, honest)
    for j in runs.values():
        if j.spec.kind != "half" or not j.run.ok:
            if j.spec.kind == "half" and j.run.status.startswith("failed"):
                problems.append(f"{j.spec.id}: {j.run.status}")
            continue
        policy = j.run.info.get("policy")
        if policy not in bounds:
            problems.append(f"{j.spec.id} declares {policy!r} in {j.spec.half}: no honest runs under it to judge it by")
            continue
        ref = next(r for r in runs.values() if r.spec.kind == "half-reference" and r.spec.policy == policy)
        j.verdict, j.steps, j.distance = judge(j.run, ref.run, bounds[policy])
        v = j.verdict
        if j.spec.expect == "conformant" and not v.within:
            problems.append(f"{j.spec.id} leaves the {policy} bound from step {v.first_step_beyond} "
                            f"(worst {v.worst_ratio:.3g}x the bound at step {v.worst_step})")
        if j.spec.expect == "non-conformant" and v.within:
            problems.append(f"{j.spec.id} is a known non-conformance but stays within the {policy} bound")
    return bounds, problems


def without_forget_bias(run: Trajectory) -> Trajectory:
    """A mixed-precision run's record with the forget bias taken out of b_f again: comparable with float32 runs."""
    params = dict(run.params)
    b = params["b"].astype(np.float64).copy()
    b[:, 1] -= FORGET_BIAS
    params["b"] = b
    return Trajectory(run.run_id, run.status, run.info, run.loss, run.steps, params)


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------

def _colors():
    import matplotlib.pyplot as plt

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def plot_loss(runs: dict[str, Judged], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = runs["spec"].run
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5))
    colors = iter(_colors() * 3)
    steps = np.arange(len(ref.loss))
    left.plot(steps, ref.loss, color="black", lw=2.5, label="spec (reference)")
    variants = [j.run.loss for j in runs.values() if j.spec.kind == "variant" and j.run.ok]
    if variants:
        spread = np.max([np.abs(v - ref.loss) for v in variants], axis=0)
        right.plot(steps, np.where(spread > 0, spread, np.nan), color="0.6", lw=1, label="honest reorderings (largest)")
    for j in runs.values():
        if j.spec.kind not in ("shared", "contract", "float64") or not j.run.ok:
            continue
        style = {"shared": "-", "contract": "--", "float64": ":"}[j.spec.kind]
        color = next(colors)
        left.plot(steps, j.run.loss, style, color=color, lw=1.2, label=j.spec.id)
        diff = np.abs(j.run.loss - ref.loss)
        right.plot(steps, np.where(diff > 0, diff, np.nan), style, color=color, lw=1, label=j.spec.id)
    left.set(xlabel="training step", ylabel="loss (softmax cross-entropy)", title="Loss, shared RMSProp step")
    right.set(xlabel="training step", ylabel="|loss - reference loss|", yscale="log", title="Difference to the spec's loss")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _distance_axis(ax, runs, bound: Bound, kinds, title):
    colors = iter(_colors() * 3)
    keep = bound.steps > 0
    ax.plot(bound.steps[keep], bound.diameter[keep], color="0.6", lw=1, label="honest cloud: largest pairwise distance D_k")
    ax.plot(bound.steps[keep], bound.bound[keep], "k--", lw=2, label=f"bound B_k = {FACTOR:g} x running max of D_k")
    for j in runs.values():
        if j.spec.kind not in kinds or j.verdict is None:
            continue
        k = j.steps > 0
        style = {"shared": "-", "contract": "--", "float64": ":", "own": "-"}[j.spec.kind]
        ax.plot(j.steps[k], j.distance[k], style, marker=".", ms=3, color=next(colors), lw=1.2, label=j.spec.id)
    ax.set(xscale="log", yscale="log", xlabel="training step", ylabel="max over tensors of ||theta - theta_ref|| / ||theta_ref||",
           title=title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_distance(runs, bound: Bound, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5.5))
    _distance_axis(ax, runs, bound, ("shared", "contract", "float64"),
                   "Parameter distance to the spec-trained run (shared RMSProp step)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_half(runs, bounds: dict[str, Bound], path: Path) -> None:
    """Per policy: its honest runs' spread and bound, and each row's distance to the spec's run under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bounds), figsize=(6.5 * len(bounds), 5), squeeze=False)
    for ax, (policy, bound) in zip(axes[0], bounds.items()):
        keep = bound.steps > 0
        ax.plot(bound.steps[keep], bound.diameter[keep], color="0.6", lw=1, label="honest runs: largest pairwise distance")
        ax.plot(bound.steps[keep], bound.bound[keep], "k--", lw=2, label=f"bound: {FACTOR:g} x its running max")
        colors = iter(_colors() * 3)
        for j in runs.values():
            if j.spec.kind == "half" and j.verdict is not None and j.run.info.get("policy") == policy:
                k = j.steps > 0
                style = "--" if j.spec.expect == "non-conformant" else "-"
                ax.plot(j.steps[k], j.distance[k], style, marker=".", ms=3, color=next(colors), lw=1.2, label=j.spec.row)
        ax.set(xscale="log", yscale="log", xlabel="training step", ylabel="distance to the spec's run under the policy",
               title=f"{next(j.spec.half for j in runs.values() if j.spec.half)}: {policy}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_own(runs, bound: Bound, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = runs["spec"].run
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5))
    steps = np.arange(len(ref.loss))
    left.plot(steps, ref.loss, color="black", lw=2.5, label="spec, shared step (ms_0 = 1)")
    colors = iter(_colors() * 3)
    for j in runs.values():
        if j.spec.kind == "own" and j.run.ok:
            left.plot(steps, j.run.loss, color=next(colors), lw=1.2, label=j.spec.id)
    left.set(xlabel="training step", ylabel="loss", title="Loss, each framework's own RMSProp")
    left.legend(fontsize=7)
    _distance_axis(right, runs, bound, ("own",), "Distance to the spec-trained run (own RMSProp)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

def _verdict_text(j: Judged) -> str:
    v = j.verdict
    if v is None:
        return j.run.status
    if v.within:
        return f"within ({v.worst_ratio:.2f} of the bound at worst)"
    return f"**leaves the bound** from step {v.first_step_beyond} ({v.worst_ratio:.3g}x at step {v.worst_step})"


def _largest(j: Judged, bound: Bound) -> str:
    v = j.verdict
    if v is None:
        return "–"
    b = float(bound.at(np.array([v.largest_step]))[0])
    return f"{_fmt(v.largest_distance)} at step {v.largest_step} (bound there {_fmt(b)})"


def _judged_columns(j: Judged) -> str:
    """A judged run's table cells: beyond the bound from step, distance at the end (x bound), final loss, accuracy."""
    if j.verdict is None:
        return f"{j.run.status} | – | – | –"
    v = j.verdict
    first = f"never (within; {v.worst_ratio:.2f} of the bound at worst)" if v.within else str(v.first_step_beyond)
    return (f"{first} | {_fmt(v.final_distance)} ({v.final_ratio:.3g}x; {v.worst_tensor}) | {_loss(j.run)} | "
            f"{_acc(j.run.info)}")


def _half_section(runs: dict[str, Judged], half_bounds: dict[str, Bound], bound: Bound | None, add) -> None:
    """Mixed-precision training: the rows against their policies' bounds, and the spec's half-type runs against the
    float32 run."""
    rows = [j for j in runs.values() if j.spec.kind == "half"]
    references = [j for j in runs.values() if j.spec.kind == "half-reference"]
    if not rows and not references:
        return
    half = next(j.spec.half for j in runs.values() if j.spec.half)
    add(f"## {half} mixed precision")
    add("")
    add(f"The same training with the LSTM in {half}: float32 master weights, rounded to {half} at every step with the "
        f"batch; the LSTM's forward and backward in {half}, under the precision policy the implementation follows "
        f"(spec/precision.py); the head and its loss in float32, the cotangent dh_T rounded to {half}; the gradients "
        f"widened to float32 for the shared step (training/frameworks/precision_model.py). A half type cannot hold "
        f"b_f + 1, so these runs train the model with the forget bias in b_f. Each row is judged against the spec's "
        f"run under the policy it declares, by that policy's bound: {FACTOR:g} x the running maximum of the spread of "
        f"the spec's honest runs under it (other float32 accumulations, the frameworks' placements where the policy "
        f"rounds every operation, each batch's rows in another order), the float32 bound's derivation "
        f"(`training/bound.py`).")
    add("")
    add("| implementation | its policy | expected | beyond the bound from step | distance at the end (x bound) | final loss | test accuracy |")
    add("|---|---|---|---|---|---|---|")
    for j in rows:
        add(f"| {j.spec.row} | {j.run.info.get('policy', '–')} | {j.spec.expect} | {_judged_columns(j)} |")
    add("")
    add(f"Does {half} training stay the same? The spec's own {half} runs against its float32 run (the forget bias "
        f"taken out of b_f again), by the float32 bound, and each policy's own spread:")
    add("")
    add(f"| spec in {half} under | final loss | test accuracy | distance to the float32 run at the end (x the float32 bound) | "
        f"its honest runs' spread at the end (the policy's bound) |")
    add("|---|---|---|---|---|")
    ref32 = runs["spec"]
    for j in references:
        if not j.run.ok:
            add(f"| {j.spec.policy} | – | – | {j.run.status} | – |")
            continue
        policy_bound = half_bounds.get(j.spec.policy)
        spread = "–" if policy_bound is None else f"{_fmt(float(policy_bound.diameter[-1]))} ({_fmt(float(policy_bound.bound[-1]))})"
        if bound is not None and ref32.run.ok:
            v, _, _ = judge(without_forget_bias(j.run), ref32.run, bound)
            to_float32 = f"{_fmt(v.final_distance)} ({v.final_ratio:.3g}x; {v.worst_tensor})"
        else:
            to_float32 = "–"
        add(f"| {j.spec.policy} | {_loss(j.run)} | {_acc(j.run.info)} | {to_float32} | {spread} |")
    add("")
    add(f"For comparison, the float32 spec's final loss is {_loss(ref32.run)} and its test accuracy {_acc(ref32.run.info)}.")
    add("")
    add(f"![{half} rows against their policies' bounds](half.png)")
    add("")


def write_markdown(runs: dict[str, Judged], bound: Bound | None, problems: list[str], digits: Digits, path: Path,
                   meta: dict, half_bounds: dict[str, Bound] | None = None) -> str:
    ref = runs["spec"]
    lines: list[str] = []
    add = lines.append
    shared = [j for j in runs.values() if j.spec.kind == "shared"]
    half_rows = [j for j in runs.values() if j.spec.kind == "half" and j.spec.expect == "conformant"]
    half_within = [j for j in half_rows if j.verdict is not None and j.verdict.within]
    own = [j for j in runs.values() if j.spec.kind == "own"]
    contract = [j for j in runs.values() if j.spec.kind == "contract"]
    available = [j for j in shared if j.run.ok]
    unavailable = [j for j in shared if j.run.status.startswith("unavailable")]
    caught = [j for j in contract if j.spec.expect == "non-conformant" and j.verdict and not j.verdict.within]
    known = [j for j in contract if j.spec.expect == "non-conformant"]
    if problems:
        summary = "FAILED: " + "; ".join(problems)
    else:
        summary = (f"{len(available)} of {len(shared)} frameworks trained with the shared step, all within the rounding bound"
                   f"{'' if not unavailable else f' ({len(unavailable)} unavailable)'}; "
                   f"{len(caught)} of {len(known)} known non-conformances leave it"
                   + (f"; {len(half_within)} of {len(half_rows)} rows trained in mixed precision within their "
                      f"policies' bounds" if half_rows else ""))
    T, I = digits.sequence_shape
    B = digits.batches.shape[1]
    H = ref.run.params["U"].shape[-1] if ref.run.ok else "?"
    steps = digits.steps
    epochs = steps * B / len(digits.x_train)
    add("# Training the tutorials' digit classifier: report")
    add("")
    add(f"{meta['when']}; {meta['mode']} run, {steps} steps; {meta['machine']}, {os.cpu_count()} cores; {meta['seconds']:.0f} s in all"
        f" ({meta.get('jobs', 1)} framework process(es) at a time{'' if meta.get('jobs', 1) == 1 else ': timings shared the cores'}"
        + (f"; load average {meta['load'][0]:.1f} at the start, {meta['load'][1]:.1f} at the end" if "load" in meta else "")
        + ").")
    add("")
    add(f"**{summary}.**")
    add("")
    add(f"Data: scikit-learn's handwritten digits ({len(digits.x_train) + len(digits.x_test)} images of 8 x 8), read row by row "
        f"(T = {T} steps of I = {I} pixels, values / 16), split stratified into {len(digits.x_train)} training and "
        f"{len(digits.x_test)} test images; batches of B = {B} fixed in advance ({epochs:.1f} epochs). Model: the LSTM with "
        f"H = {H}, BasicLSTMCell's forget_bias = 1.0, its last output into a dense layer of 10, softmax cross-entropy "
        f"averaged over the batch; TF1's default initialisation (Glorot-uniform, zero biases), one shared weight set "
        f"(the LSTM in the project's weight format, the dense layer beside it). Shared step: TF1's RMSProp "
        f"(lr = {LEARNING_RATE}, decay = {DECAY}, eps = {EPSILON:g}, mean square initialised to {INITIAL_MEAN_SQUARE:g}) "
        f"in NumPy, float32, the same code for every framework.")
    add("")
    add("## Every framework with the shared optimizer step")
    add("")
    add("Each framework computes the gradient of the same loss on the same batch (its own model and autodiff); one "
        "NumPy RMSProp step applies it. Distance: the largest over W, U, b, Wd, bd of ||theta - theta_ref|| / ||theta_ref||, "
        "against the spec-trained run, at every kept step; bound: see below. Time per step: the framework's own training "
        "step (forward, backward, its own RMSProp) at the tutorials' shape, 28 steps of 28 pixels, B = 128, H = 128, "
        f"synthetic data, median of {meta.get('timing_repeats', '?')} steps after 2 warm-up steps.")
    add("")
    add("| framework | final loss | test accuracy | largest distance to the spec's run (bound there) | verdict | time per step (28x28, B=128, H=128) |")
    add("|---|---|---|---|---|---|")
    add(f"| spec (reference: spec.lstm + NumPy head) | {_loss(ref.run)} | {_acc(ref.run.info)} | 0 (the reference) | – | "
        f"{_ms(ref.run.info)} (spec + shared step) |")
    for j in shared:
        own_run = runs.get(f"{j.spec.id}+own-RMSProp")
        time_text = _ms(own_run.run.info) if own_run and own_run.run.ok else "–"
        if not j.run.ok:
            add(f"| {j.spec.id} | – | – | – | {j.run.status} | {time_text} |")
            continue
        add(f"| {j.spec.id} | {_loss(j.run)} | {_acc(j.run.info)} | {_largest(j, bound)} | {_verdict_text(j)} | {time_text} |")
    float64 = [j for j in runs.values() if j.spec.kind == "float64" and j.verdict is not None]
    for j in float64:
        what = "float32's rounded constants" if j.spec.constants else "exact arithmetic"
        add(f"| {j.spec.id} (for comparison: {what}, not judged) | {_loss(j.run)} | {_acc(j.run.info)} | "
            f"{_largest(j, bound)} | {'within' if j.verdict.within else 'outside'} ({j.verdict.worst_ratio:.2f} of the bound at worst) | – |")
    add("")
    exact = next((j for j in float64 if not j.spec.constants), None)
    rounded = next((j for j in float64 if j.spec.constants), None)
    if exact and rounded:
        add(f"The float64 rows train the spec without rounding anything. With the step's exact constants it comes to "
            f"{exact.verdict.worst_ratio:.2f} of the bound at worst (step {exact.verdict.worst_step}, {exact.verdict.worst_tensor}); "
            f"with the constants a float32 step actually uses (decay 0.9 -> 0.89999998, 1 - decay -> 0.100000001, "
            f"lr -> 0.00100000005) {rounded.verdict.worst_ratio:.2f}. Every float32 run shares that step, so the float32 "
            f"runs are not centred on exact arithmetic: the bound measures their spread, which is what a framework's "
            f"float32 gradients can change, not their common offset from the exact trajectory.")
        add("")
    if bound is not None:
        add("The loss curves coincide: the largest |loss - reference loss| over all steps is "
            + ", ".join(f"{j.spec.id} {_fmt(float(np.max(np.abs(j.run.loss - ref.run.loss))))}" for j in available)
            + " (honest reorderings: "
            + _fmt(float(max(np.max(np.abs(j.run.loss - ref.run.loss)) for j in runs.values() if j.spec.kind == "variant" and j.run.ok)))
            + ").")
        add("")
    add("## What a non-conformance costs")
    add("")
    add("The same training with the LSTM's gradients from an implementation of the suite through the contract "
        "(`forward()` for h_T, the NumPy head's dh_T into `backward()`, dh_seq = 0, dc_T = 0). Their forward passes are "
        "right; only the gradients are wrong, so only training shows the cost.")
    add("")
    add("| implementation | expected | beyond the bound from step | distance at the end (x bound) | final loss | test accuracy |")
    add("|---|---|---|---|---|---|")
    for j in contract:
        add(f"| {j.spec.id} | {j.spec.expect} | {_judged_columns(j)} |")
    add("")
    add(f"For comparison, the spec's own final loss is {_loss(ref.run)} and its test accuracy {_acc(ref.run.info)}.")
    add("")
    _half_section(runs, half_bounds or {}, bound, add)
    add("## Each framework's own RMSProp")
    add("")
    add("The same model, data and initial weights, each framework's RMSProp asked for lr = 0.001 and decay 0.9, every "
        "other setting at its default; reported as it is, not judged.")
    add("")
    add("| framework | its RMSProp | final loss (shared step: same row above) | mean loss, last 10 steps (reference) | test accuracy | distance at the end (x bound) |")
    add("|---|---|---|---|---|---|")
    ref_tail = _mean_tail(ref.run.loss) if ref.run.ok else float("nan")
    for j in own:
        if j.verdict is None:
            add(f"| {j.spec.id} | – | – | – | – | {j.run.status} |")
            continue
        add(f"| {j.spec.id} | {j.run.info.get('optimizer', '')} | {_loss(j.run)} | {_mean_tail(j.run.loss):.4f} ({ref_tail:.4f}) | "
            f"{_acc(j.run.info)} | {_fmt(j.verdict.final_distance)} ({j.verdict.final_ratio:.3g}x; {j.verdict.worst_tensor}) |")
    add("")
    if bound is not None:
        add("## The rounding bound")
        add("")
        add(f"Measured from {len(bound.runs) - 1} honest float32 reorderings of the spec plus the reference "
            f"({', '.join(bound.runs[1:])}): D_k, the largest pairwise distance among them at step k; E_k its running "
            f"maximum; the bound B_k = {FACTOR:g} E_k. Derivation in `training/bound.py`: after a first difference of "
            f"about the gradients' relative rounding error (a few eps32 = {EPS32:.3g}), the runs separate by the independent "
            f"roundings of their updates, a random walk that the descent damps; once the model has learnt its training "
            f"set, RMSProp scales its tiny, cancelling gradients back up and the spread grows exponentially, and the "
            f"bound, measured step by step, grows with it (and stops telling a bug from rounding).")
        add("")
        targets = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1500, 2000, 5000) if t <= bound.steps[-1]]
        picks = sorted({int(bound.steps[np.argmin(np.abs(bound.steps - t))]) for t in targets} | {int(bound.steps[-1])})
        add("| step | " + " | ".join(str(s) for s in picks) + " |")
        add("|---" * (len(picks) + 1) + "|")
        idx = np.searchsorted(bound.steps, picks)
        add("| D_k | " + " | ".join(_fmt(float(bound.diameter[i])) for i in idx) + " |")
        add("| B_k | " + " | ".join(_fmt(float(bound.bound[i])) for i in idx) + " |")
        add("| B_k / eps32 | " + " | ".join(f"{bound.bound[i] / EPS32:.1f}" for i in idx) + " |")
        add("")
        first, last = float(bound.envelope[1]), float(bound.envelope[-1])
        chaotic = last > 100 * first
        add(f"Growth: E_k goes from {_fmt(first)} at step 1 to {_fmt(last)} at step {int(bound.steps[-1])} "
            f"({last / first:.3g}x); a power law fitted over steps >= 10 gives k^{bound.growth_exponent():.2f} "
            + ("(no power law fits: the spread grew exponentially once the model had learnt its training set; see "
               "`training/bound.py`)." if chaotic else "(a random walk of independent roundings would give k^0.5: the descent damps it)."))
        add("")
        add("Each run's gradient at step 0 (the initial weights, the first batch) against the spec's in float64, relative "
            "2-norm error in units of eps32 (the bound's factor assumes a framework's is within about twice a reordering's):")
        add("")
        add("| run | W | U | b | Wd | bd |")
        add("|---|---|---|---|---|---|")
        for j in runs.values():
            g = j.run.info.get("gradient_error_step0") if j.run.ok else None
            if g:
                add(f"| {j.spec.id} | " + " | ".join(f"{g[k] / EPS32:.2f}" for k in ("W", "U", "b", "Wd", "bd")) + " |")
        add("")
    not_ok = [j for j in runs.values() if not j.run.ok]
    if not_ok:
        add("## Runs that did not run")
        add("")
        for j in not_ok:
            add(f"- {j.spec.id}: {j.run.status}")
        add("")
    add("## Plots")
    add("")
    add("![loss of every run with the shared step](loss.png)")
    add("")
    add("![parameter distance to the reference, with the bound](distance.png)")
    add("")
    add("![each framework's own RMSProp](own.png)")
    add("")
    add("## Environment")
    add("")
    seen = set()
    for j in runs.values():
        env = j.run.info.get("environment")
        key = json.dumps(env, sort_keys=True) if env else None
        if env and key not in seen and j.spec.kind in ("reference", "shared", "contract"):
            seen.add(key)
            add(f"- {j.run.info.get('framework')}: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    add(f"- python {platform.python_version()}")
    add("")
    path.write_text("\n".join(lines))
    return summary


def write_report(out: Path, specs: list[RunSpec], meta: dict) -> Outcome:
    runs = load_runs(out, specs)
    digits = Digits.load(out / "inputs" / "digits.safetensors")
    bound, problems = evaluate(runs)
    half_bounds, half_problems = evaluate_half(runs)
    problems += half_problems
    if bound is not None:
        plot_loss(runs, out / "loss.png")
        plot_distance(runs, bound, out / "distance.png")
        plot_own(runs, bound, out / "own.png")
    if half_bounds:
        plot_half(runs, half_bounds, out / "half.png")
    meta = {"machine": cpu_model(), "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **meta}
    summary = write_markdown(runs, bound, problems, digits, out / "report.md", meta, half_bounds)
    return Outcome(1 if problems else 0, problems, summary)


__all__ = ["Outcome", "distances", "evaluate", "evaluate_half", "write_report"]
