"""The runs, and the one mechanism that runs them: a child process per framework group.

Each group runs in a process of its own, started with the environment its framework needs
(:data:`GROUP_ENVIRONMENT`): TF1's cells need ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported
and Keras 3 needs it unset; JAX's float64 switch is process-wide and must stay off. The parent writes
the shared inputs (the data with its batch schedule, the initial weights) into ``OUT/inputs``, starts

    python -m training.digits --child GROUP --runs ID,ID,... --out OUT

and collects one safetensors file per run from ``OUT/runs`` (training/trajectory.py). The child
reports progress as lines ``PROGRESS <run> <steps done>`` on its original stdout; everything else it or
its frameworks print goes to ``OUT/logs/<group>.log``. A run that fails is written as failed with its
error and the child goes on; a child that dies leaves its runs without files, which the parent reports
with the exit status and the log.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import CLASSES, HIDDEN, Digits, tutorial_batch
from training.model import ModelParams, initial_params, load_initial
from training.trajectory import Recorder, Trajectory, recorded_steps

ROOT = Path(__file__).resolve().parents[1]

#: Environment changes per group: None removes the variable. NumPy's OpenBLAS runs on one thread: the
#: spec's products are small, and with two threads on a busy 2-core machine its spinning threads made a
#: step ten times slower (measured: 396 ms median against 32 ms on one thread).
GROUP_ENVIRONMENT: dict[str, dict[str, str | None]] = {
    "numpy": {"OPENBLAS_NUM_THREADS": "1"},
    "torch": {},
    "tensorflow": {"TF_USE_LEGACY_KERAS": None, "KERAS_BACKEND": "tensorflow"},
    "jax": {"JAX_ENABLE_X64": None},
    "tf1": {"TF_USE_LEGACY_KERAS": "1"},
}
#: The order the groups run in: the reference and the bound first.
GROUPS = tuple(GROUP_ENVIRONMENT)


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``kind``: reference, variant (an honest reordering of the spec), float64
    (the spec in float64), shared (a framework's gradients, the shared step), own (a framework's own
    optimizer), contract (a row of the suite, ``row``, through forward()/backward(), the shared step).
    ``expect`` for contract runs: "conformant" (a control) or "non-conformant". In mixed precision
    (``half``, training/frameworks/precision_model.py): half-reference (the spec under ``policy``),
    half-variant (the same, one of its equally valid ``evaluation`` s, or the batch rows reordered by
    ``seed``), half (a row of the suite through the contract, judged against the runs of the policy it
    declares)."""

    id: str
    kind: str
    group: str
    framework: str  # the framework's id (training/frameworks)
    ordering: str = ""
    seed: int = 0
    row: str = ""  # contract runs: the row's id (backends.registry, or a mutant of conformance.mutants)
    expect: str = ""
    timed: bool = False
    constants: str = ""  # float64 runs: the dtype the optimizer's constants are rounded to ("": the run's own)
    half: str = ""  # mixed-precision runs: the half type the LSTM computes in
    policy: str = ""  # half-reference and half-variant runs: the precision policy (spec.precision.Policy)
    evaluation: str = ""  # half-variant runs: a name of precision_model.EVALUATIONS ("": the reference's)

    @property
    def file_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9.-]+", "_", self.id) + ".safetensors"


#: The frameworks whose model is built in training/frameworks, by short name -> (module, class, group).
FRAMEWORKS = {
    "torch": ("training.frameworks.torch_model", "TorchModel", "torch"),
    "keras": ("training.frameworks.keras_model", "KerasModel", "tensorflow"),
    "flax": ("training.frameworks.flax_model", "FlaxModel", "jax"),
    "tf1": ("training.frameworks.tf1_model", "TF1Model", "tf1"),
}
FRAMEWORK_IDS = {"torch": "torch/nn.LSTM", "keras": "keras/LSTM", "flax": "flax/LSTMCell", "tf1": "tf1/BasicLSTMCell"}
#: The honest reorderings the bound is measured with (training/frameworks/spec_model.py).
REORDERINGS = (("batch-order", 1), ("batch-order", 2), ("batch-order", 3), ("unit-order", 1), ("unit-order", 2),
               ("unit-order", 3), ("input-order", 1), ("float64-gradient", 1))
#: Rows trained through the contract: a control that conforms, and known non-conformances.
CONTRACT_RUNS = (
    ("tensorflow/BlockLSTMV2+BlockLSTMGradV2", "tensorflow", "conformant"),
    ("tensorflow/BlockLSTMV2+registered-gradient", "tensorflow", "non-conformant"),
    ("mutant/dc-ignores-downstream", "numpy", "non-conformant"),
    ("mutant/bias-gradient-wrong-gate", "numpy", "non-conformant"),
)


#: The half type mixed-precision training runs in, and the policies whose honest runs are measured in it (every
#: one a row below may declare: torch's nn.LSTM follows half-storage where oneDNN runs bfloat16, every-operation
#: elsewhere).
HALF = "bfloat16"
HALF_POLICIES = ("mixed-precision", "half-every-operation", "half-storage-float32-accumulation")
#: The reorderings of the honest half-type runs, beside the evaluations (precision_model.evaluations_of).
HALF_REORDERINGS = (("batch-order", 1), ("batch-order", 2), ("unit-order", 1), ("input-order", 1))
#: Rows trained in mixed precision through the contract, each judged against the runs of the policy it declares;
#: a gate swap in half as the known non-conformance the bound must see.
HALF_RUNS = (
    ("torch/nn.LSTM", "torch", "conformant"),
    ("jax/lax.scan", "jax", "conformant"),
    ("flax/OptimizedLSTMCell", "jax", "conformant"),
    ("keras-jax/LSTM", "jax", "conformant"),
    ("keras-torch/LSTM", "torch", "conformant"),
    ("keras-tensorflow/LSTM", "tensorflow", "conformant"),
    ("half-mutant/gates-f-g-swapped", "numpy", "non-conformant"),
)


def half_runs() -> list[RunSpec]:
    from spec.precision import Policy
    from training.frameworks.precision_model import evaluations_of

    runs = []
    for policy in HALF_POLICIES:
        base = f"spec/{HALF}/{policy}"
        runs.append(RunSpec(base, "half-reference", "numpy", "precision", half=HALF, policy=policy))
        runs += [RunSpec(f"{base}/{e}", "half-variant", "numpy", "precision", half=HALF, policy=policy, evaluation=e)
                 for e in evaluations_of(Policy(policy))]
        runs += [RunSpec(f"{base}/{o}-{s}", "half-variant", "numpy", "precision", o, s, half=HALF, policy=policy)
                 for o, s in HALF_REORDERINGS]
    runs += [RunSpec(f"contract:{row}@{HALF}", "half", group, "contract", row=row, expect=expect, half=HALF)
             for row, group, expect in HALF_RUNS]
    return runs


def all_runs(frameworks=tuple(FRAMEWORKS), non_conformance: bool = True, half: bool = True) -> list[RunSpec]:
    runs = [RunSpec("spec", "reference", "numpy", "spec", timed=True)]
    runs += [RunSpec(f"spec/{o}-{s}" if o != "float64-gradient" else f"spec/{o}", "variant", "numpy", "spec", o, s)
             for o, s in REORDERINGS]
    runs.append(RunSpec("spec/float64", "float64", "numpy", "spec"))
    runs.append(RunSpec("spec/float64+float32-constants", "float64", "numpy", "spec", constants="float32"))
    for name in frameworks:
        fid, group = FRAMEWORK_IDS[name], FRAMEWORKS[name][2]
        runs.append(RunSpec(fid, "shared", group, name))
        runs.append(RunSpec(f"{fid}+own-RMSProp", "own", group, name, timed=True))
    if non_conformance:
        for row, group, expect in CONTRACT_RUNS:
            runs.append(RunSpec(f"contract:{row}", "contract", group, "contract", row=row, expect=expect))
    if half:
        runs += half_runs()
    return runs


# ---------------------------------------------------------------------------
# The parent's side
# ---------------------------------------------------------------------------


def child_environment(group: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in GROUP_ENVIRONMENT[group].items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def start_group(group: str, runs: list[RunSpec], out: Path, timing_repeats: int) -> subprocess.Popen:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log = open(out / "logs" / f"{group}.log", "w")  # noqa: SIM115 - the child writes it until finish_group closes it
    command = [sys.executable, "-m", "training.digits", "--child", group, "--runs", ",".join(r.id for r in runs),
               "--out", str(out), "--timing-repeats", str(timing_repeats)]
    process = subprocess.Popen(command, cwd=ROOT, env=child_environment(group), stdout=subprocess.PIPE, stderr=log,
                               text=True, bufsize=1)
    process.log = log  # closed by finish_group
    return process


def finish_group(group: str, process: subprocess.Popen, runs: list[RunSpec], out: Path) -> None:
    """Wait for the child; runs it left without a file are failed, with its exit status and its log's end."""
    code = process.wait()
    process.log.close()
    for run in runs:
        path = out / "runs" / run.file_name
        if not path.exists():
            tail = (out / "logs" / f"{group}.log").read_text(errors="replace").strip().splitlines()[-5:]
            reason = f"failed: the {group} process exited with status {code} before this run was written; log: " + " | ".join(tail)
            Trajectory(run.id, reason, {"kind": run.kind, "group": group}).save(path)


# ---------------------------------------------------------------------------
# The child's side
# ---------------------------------------------------------------------------


def _framework(spec: RunSpec):
    if spec.kind in ("reference", "float64"):
        from training.frameworks.spec_model import SpecModel

        return SpecModel()
    if spec.kind == "variant":
        from training.frameworks.spec_model import Reordered

        return Reordered(id=spec.id, ordering=spec.ordering, seed=spec.seed)
    if spec.kind in ("contract", "half"):
        from training.frameworks.contract_model import ContractModel

        return ContractModel(row_id=spec.row, group=spec.group, half=spec.half)
    if spec.kind in ("half-reference", "half-variant"):
        from training.frameworks.precision_model import PolicyModel

        return PolicyModel(id=spec.id, policy=spec.policy, half=spec.half, evaluation=spec.evaluation,
                           ordering=spec.ordering, seed=spec.seed)
    import importlib

    module, cls, _ = FRAMEWORKS[spec.framework]
    return getattr(importlib.import_module(module), cls)()


def gradient_errors(framework, params: ModelParams, digits: Digits) -> dict[str, float]:
    """The relative 2-norm error of each gradient on the first batch against the spec in float64."""
    from training.frameworks.spec_model import spec_loss_and_gradients

    x, y = digits.batch(0)
    _, exact = spec_loss_and_gradients(params.astype(np.float64), x.astype(np.float64), y)
    _, got = framework.loss_and_gradients(params, x, y)
    return {k: float(np.linalg.norm(got.tensors()[k].astype(np.float64) - e) / np.linalg.norm(e))
            for k, e in exact.tensors().items()}


def time_steps(framework, repeats: int) -> dict[str, object]:
    """The framework's own training step at the tutorials' shape (T = I = 28, B = H = 128), synthetic data:
    warm-up steps (tracing, compilation) first, then the median of ``repeats`` timed steps."""
    x, y = tutorial_batch()
    trainer = framework.trainer(initial_params(x.shape[2], HIDDEN, CLASSES, seed=1))
    for _ in range(2):
        trainer.step(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.step(x, y)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def execute(spec: RunSpec, out: Path, timing_repeats: int, progress) -> Trajectory:
    """Run one training run in this process and return its record."""
    from training import head
    from training.frameworks.spec_model import SharedStepTrainer

    digits = Digits.load(out / "inputs" / "digits.safetensors")
    params = load_initial(out / "inputs")
    framework = _framework(spec)
    info: dict[str, object] = {"kind": spec.kind, "group": spec.group, "framework": framework.id,
                               "description": framework.description, "expect": spec.expect}
    if (reason := framework.availability()) is not None:
        return Trajectory(spec.id, f"unavailable: {reason}", info)
    info["environment"] = framework.environment()
    dtype = np.float64 if spec.kind == "float64" else np.float32
    params = params.astype(dtype)
    if spec.half:  # mixed precision: the model's forget bias in b_f (precision_model), float32 master weights
        from training.frameworks.precision_model import forget_bias_folded

        params = forget_bias_folded(params)
        info["half"] = spec.half
        info["policy"] = info["environment"].get("policy", spec.policy)
    if spec.kind == "own":
        info["optimizer"] = framework.own_optimizer
        trainer = framework.trainer(params)
    else:
        info["optimizer"] = "the shared NumPy RMSProp step (training/optimizer.py)"
        if spec.kind != "float64" and not spec.half:
            info["gradient_error_step0"] = gradient_errors(framework, params, digits)
        trainer = SharedStepTrainer(params, framework.loss_and_gradients, constants=spec.constants or None)
    recorder = Recorder(recorded_steps(digits.steps))
    recorder.params(0, trainer.params())
    start = time.perf_counter()
    for step in range(digits.steps):
        x, y = digits.batch(step)
        recorder.losses.append(trainer.step(x.astype(dtype), y))
        if recorder.wants(step + 1):
            recorder.params(step + 1, trainer.params())
        progress(step + 1)
    info["seconds_per_step_digits"] = (time.perf_counter() - start) / digits.steps
    final = trainer.params()
    x_test, y_test = digits.test_set()
    info["test_accuracy"] = head.accuracy(framework.logits(final, x_test.astype(dtype)), y_test)
    if spec.timed and timing_repeats > 0:
        info["timing"] = time_steps(framework, timing_repeats)
    return recorder.trajectory(spec.id, info)


def child_main(group: str, run_ids: list[str], out: Path, timing_repeats: int) -> int:
    """The child: run each of ``run_ids`` (all of ``group``) and write its file."""
    # Progress goes to the real stdout; anything else printed here (frameworks' banners) goes to stderr, the log.
    progress_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    by_id = {r.id: r for r in all_runs()}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for run_id in run_ids:
        spec = by_id[run_id]
        last = [0.0]

        def progress(done, run_id=run_id, last=last):
            # Every step would flood the pipe for fast runs: report each step's count, at most every 0.1 s.
            now = time.monotonic()
            if now - last[0] > 0.1:
                last[0] = now
                progress_stream.write(f"PROGRESS {run_id} {done}\n")

        try:
            trajectory = execute(spec, out, timing_repeats, progress)
        except Exception as error:  # noqa: BLE001 - one failed run is reported, the others go on
            traceback.print_exc()
            trajectory = Trajectory(run_id, f"failed: {type(error).__name__}: {error}", {"kind": spec.kind, "group": group})
        trajectory.save(out / "runs" / spec.file_name)
        progress_stream.write(f"DONE {run_id}\n")
    return 0


def read_progress(process: subprocess.Popen, on_progress) -> None:
    """Forward the child's progress lines (run id, steps done) to ``on_progress`` until it closes stdout."""
    for line in process.stdout:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "PROGRESS":
            on_progress(parts[1], int(parts[2]))
        elif len(parts) == 2 and parts[0] == "DONE":
            on_progress(parts[1], None)

