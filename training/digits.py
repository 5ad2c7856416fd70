"""Train the tutorials' row-by-row digit classifier identically in every framework, and report.

    python -m training.digits                 the full run (500 steps), report in reports/training/
    python -m training.digits --quick         a few dozen steps (what the test suite runs)
    python3 dev.py train [--quick] [...]      the same, after dev.py's setup

Options: --steps N, --out DIR, --frameworks torch,keras,flax,tf1 (default: all; the spec always
runs), --no-non-conformance (skip the runs through the contract), --no-half (skip the bfloat16
mixed-precision runs: the spec under each precision policy and the rows through the contract), --timing-repeats N (timed steps at
the tutorials' shape per framework; 0 skips timing), --jobs N (framework processes at once).

It writes OUT/report.md, OUT/loss.png, OUT/distance.png, OUT/own.png, OUT/half.png, the shared inputs in
OUT/inputs/ (the digits and batch schedule, the initial weights: lstm.safetensors in the project's
weight format and dense.safetensors) and each process's log in OUT/logs/; with --keep-runs also one
file per run in OUT/runs/ (the loss at every step, the parameters at the kept steps).

Exit status: 0 when every framework that ran stayed within the rounding bound; 1 when a framework
leaves it (training/report.py says exactly when); 2 on a usage error (argparse's: an unknown option,
a value out of range, an empty or unknown --frameworks, an --out that is or lies below a file), with
one line naming the option, what it must be and what was given, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from training.runs import FRAMEWORKS, GROUPS, ROOT, all_runs, child_main

FULL_STEPS = 500
QUICK_STEPS = 30
MAX_SEED = 2**32 - 1
EXIT_STATUS = ("exit status: 0 when every framework stayed within the rounding bound, 1 when one left it "
               "(training/report.py), 2 on a usage error")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.digits", description=__doc__.split("\n\n")[0],
                                     epilog=EXIT_STATUS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps and few timed steps (the tests' mode)")
    parser.add_argument("--steps", type=int, help=f"training steps (default {FULL_STEPS}; {QUICK_STEPS} with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "training", help="output folder (default reports/training)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated, at least one of: " + ", ".join(FRAMEWORKS) + " (default: all)")
    parser.add_argument("--no-non-conformance", action="store_true", help="skip the runs through the contract")
    parser.add_argument("--no-half", action="store_true", help="skip the bfloat16 mixed-precision runs")
    parser.add_argument("--timing-repeats", type=int, help="timed steps per framework (default 20; 3 with --quick; 0: none)")
    parser.add_argument("--jobs", type=int, default=1, help="framework processes at once (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the batches and the initial weights")
    parser.add_argument("--keep-runs", action="store_true", help="keep OUT/runs/ (each run's losses and kept parameters, "
                        "about 10 MB a run) after the report")
    # The child's side (started by the parent, not by hand).
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else FULL_STEPS
    if args.timing_repeats is None:
        args.timing_repeats = 3 if args.quick else 20
    for option, value, least in (("--steps", args.steps, 1), ("--jobs", args.jobs, 1),
                                 ("--timing-repeats", args.timing_repeats, 0)):
        if value < least:
            parser.error(f"{option} must be at least {least}; got {value}")
    if not 0 <= args.seed <= MAX_SEED:  # scikit-learn's split takes a seed of 32 bits
        parser.error(f"--seed must be from 0 to {MAX_SEED}; got {args.seed}")
    # Nothing trained is not a pass: an empty list is refused like an unknown name (the spec always runs).
    names = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    known = ", ".join(FRAMEWORKS)
    if not names:
        parser.error(f"--frameworks must name at least one of {known}; got {args.frameworks.strip()!r}")
    unknown = [f for f in names if f not in FRAMEWORKS]
    if unknown:
        parser.error(f"--frameworks must be comma-separated names from {known}; got unknown {', '.join(map(repr, unknown))}")
    args.frameworks = ",".join(dict.fromkeys(names))  # in order, each once
    # The output folder, or the first part of it that exists, must be a folder (a file there would end in
    # NotADirectoryError or FileExistsError once the inputs are written).
    for part in (args.out, *args.out.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "" if part == args.out else f", below {part}"
                parser.error(f"--out must be a folder or a path to make one; got {args.out}{where}, which is not a folder")
            break
    return args


def prepare(out: Path, steps: int, seed: int) -> None:
    """The shared inputs: data with its batch schedule, and the initial weights."""
    from training.data import CLASSES, HIDDEN, make_digits
    from training.model import initial_params, save_initial

    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    digits = make_digits(steps, seed=seed)
    digits.save(inputs / "digits.safetensors")
    save_initial(inputs, initial_params(digits.sequence_shape[1], HIDDEN, CLASSES, seed=seed))


def run_all(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.report import write_report
    from training.runs import finish_group, read_progress, start_group

    out = args.out.resolve()
    frameworks = tuple(f for f in args.frameworks.split(",") if f)
    specs = all_runs(frameworks, non_conformance=not args.no_non_conformance, half=not args.no_half)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    prepare(out, args.steps, args.seed)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for spec in specs:
        (out / "runs" / spec.file_name).unlink(missing_ok=True)
    groups = [(g, [s for s in specs if s.group == g]) for g in GROUPS]
    groups = [(g, runs) for g, runs in groups if runs]

    bar = tqdm(total=args.steps * len(specs), unit="step", desc="training", dynamic_ncols=True, mininterval=0.5)
    done: dict[str, int] = {}
    lock = threading.Lock()

    def on_progress(run_id: str, steps_done: int | None):
        with lock:
            steps_done = args.steps if steps_done is None else steps_done
            bar.update(steps_done - done.get(run_id, 0))
            done[run_id] = steps_done
            bar.set_postfix_str(run_id, refresh=False)

    def run_group(group, runs):
        process = start_group(group, runs, out, args.timing_repeats)
        read_progress(process, on_progress)
        finish_group(group, process, runs, out)
        for run in runs:  # runs that never reported (unavailable, failed) count as done
            on_progress(run.id, None)

    pending = list(groups)
    active: list[threading.Thread] = []
    while pending or active:
        while pending and len(active) < max(1, args.jobs):
            thread = threading.Thread(target=run_group, args=pending.pop(0))
            thread.start()
            active.append(thread)
        active[0].join(0.2)
        active = [t for t in active if t.is_alive()]
    bar.close()

    mode = "quick" if args.quick else "full"
    meta = {"mode": mode, "seconds": time.perf_counter() - start, "jobs": args.jobs, "timing_repeats": args.timing_repeats,
            "load": (load_before, os.getloadavg()[0])}
    outcome = write_report(out, specs, meta)
    if not args.keep_runs:
        for spec in specs:
            (out / "runs" / spec.file_name).unlink(missing_ok=True)
    print(outcome.summary)
    for problem in outcome.problems:
        print("  -", problem, file=sys.stderr)
    print(f"report: {out / 'report.md'}; plots: {out / 'loss.png'}, {out / 'distance.png'}, {out / 'own.png'}")
    return outcome.status


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child_main(args.child, args.runs.split(","), args.out.resolve(), args.timing_repeats)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
