"""The prepared check for a lent GPU: one short run that verifies the rows' CUDA paths, judges the half types on the
GPU, measures TF32, and times the layer shapes, leaving what it found in a few files.

    python3 -m tools.device_check OUT [--device cuda] [--budget SECONDS]

Device time is scarce (a session has about 15 minutes, the machine's start included), so everything runs in one
command, each step in its own process under its own share of the budget; a step that fails or runs out of time is
recorded and the next one runs. The GPU image has torch and jax but no TensorFlow and no CUDA build of ONNX Runtime:
the other rows are unavailable there, with their reasons. Steps:

1. ``machine.json``: the GPU, driver, CUDA, cuDNN, torch's and jax's versions and devices.
2. ``conformance.json`` / ``conformance.md``: ``pytest conformance`` on the device, every dtype (float32, float64,
   bfloat16, float16) and every default case: the layer rows' CUDA paths, and cuDNN's and XLA's half types judged
   by the policy each row declares there (cuDNN: half-storage-float32-accumulation).
3. ``tf32.json``: the float32 columns of ``torch/nn.LSTM`` and ``jax/lax.scan`` on the device with TF32 on
   (``LSTMC_TF32=1``: the frameworks' GPU default, which the suite switches off), each case's worst error beside
   the spec's TF32 evaluation's (:data:`spec.precision.Policy.TF32`, products' operands rounded to 10 bits) and
   the float32 tolerance: whether TF32 is what a float32 GPU LSTM's larger error is.
4. ``bench.json``: the benchmark matrix's quick set on the device (the cell's and Braun's layer shapes), each pass
   checked against the spec before it is timed.
5. ``log.txt``: every step's command, time, exit status and the end of its output.

Six files, under the device tool's limit of eight. Without a GPU (``--device cpu``) the same steps run on the CPU,
which is how the script itself is tested (tests/test_device_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Each step's share of the budget (the machine's start and the transfers are outside it).
SHARES = {"conformance": 0.45, "tf32": 0.2, "bench": 0.3}
TF32_ROWS = ("torch/nn.LSTM", "jax/lax.scan")


class Log:
    def __init__(self, path: Path):
        self.path = path
        path.write_text("")

    def write(self, text: str) -> None:
        with self.path.open("a") as log:
            log.write(text.rstrip() + "\n")
        print(text.rstrip(), flush=True)


def run_step(log: Log, name: str, command: list[str], seconds: float, env: dict | None = None) -> int | None:
    """Run one step in its own process, killed at ``seconds``; its exit status, None when it ran out of time."""
    log.write(f"== {name}: {' '.join(command)} (limit {seconds:.0f} s)")
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as stopped:
        output = (stopped.stdout or b"")[-4000:]
        log.write(f"{name}: out of time after {time.monotonic() - start:.0f} s\n"
                  f"{output.decode(errors='replace') if isinstance(output, bytes) else output}")
        return None
    log.write(f"{name}: exit {done.returncode} in {time.monotonic() - start:.0f} s\n{done.stdout[-4000:]}\n"
              f"{done.stderr[-2000:]}")
    return done.returncode


def machine(device: str) -> dict:
    """What the results depend on: the GPU and its software, or the CPU."""
    found: dict[str, object] = {"device": device, "python": sys.version.split()[0]}
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.max.sm"
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True)
        found["nvidia-smi"] = done.stdout.strip() or done.stderr.strip()
    try:
        import torch

        found["torch"] = torch.__version__
        if torch.cuda.is_available():
            found.update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                         gpu=torch.cuda.get_device_name())
    except ImportError as error:
        found["torch"] = f"not installed: {error}"
    try:
        import jax

        found["jax"] = jax.__version__
        found["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError as error:
        found["jax"] = f"not installed: {error}"
    from contract.runtime import cpu_features, cpu_model

    found.update(cpu=cpu_model(), cpu_features=cpu_features())
    return found


def tf32_expected(case_names: list[str]) -> dict[str, float]:
    """Each case's worst output error (y, h_T, c_T) of the spec's TF32 evaluation against the exact LSTM on the same
    float32 data: what a float32 LSTM whose products are TF32 errs by."""
    from spec.cases import CASES_BY_NAME, make_case_data, widened
    from spec.precision import Accumulation, Evaluation, Policy
    from spec.precision_layer import layer_forward

    expected = {}
    for name in case_names:
        data = widened(make_case_data(CASES_BY_NAME[name], "float32"))
        exact = data.forward()
        got = layer_forward(data.params, data.x, data.h0, data.c0, config=data.layer, lengths=data.lengths,
                            mask=data.mask, dtype="float32", policy=Policy.TF32,
                            evaluation=Evaluation(Accumulation.EXACT))
        expected[name] = max(float(np.max(np.abs(g - e))) for g, e in zip(got, (exact.y, exact.h_T, exact.c_T)))
    return expected


def tf32_summary(report: Path) -> dict:
    """The TF32 run's float32 output results per row and case, beside the spec's TF32 evaluation's worst error."""
    from contract.tolerances import tolerance
    from contract.vocabulary import Kind

    results = [r for r in json.loads(report.read_text())["results"]
               if r["dtype"] == "float32" and r["kind"] == "outputs" and r["implementation"] in TF32_ROWS]
    expected = tf32_expected(sorted({r["case"] for r in results if r["worst_error"] is not None}))
    rows = {}
    for r in results:
        entry = {"status": r["status"], "worst_error": r["worst_error"]}
        if r["case"] in expected and r["worst_error"] is not None:
            entry.update(tf32_evaluation=expected[r["case"]],
                         ratio_to_tf32_evaluation=r["worst_error"] / expected[r["case"]] if expected[r["case"]] else None)
        rows.setdefault(r["implementation"], {})[r["case"]] = entry
    return {"float32_tolerance": tolerance("float32", Kind.OUTPUTS).atol, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tools.device_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder the files go to ($OUT on the device machine)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together (default 480)")
    parser.add_argument("-k", default="torch/ or jax/ or flax/", help="the rows to run (pytest -k; default: those the "
                        "GPU image can run)")
    parser.add_argument("--bench-k", help="the benchmarks to run (pytest -k; default: as -k)")
    parser.add_argument("--workers", type=int, default=4, help="pytest-xdist workers for the conformance step")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "log.txt")
    (out / "machine.json").write_text(json.dumps(machine(args.device), indent=1))
    work = out / "work"  # reports that do not come back whole; removed at the end (the tool returns files only)
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax and torch share the GPU
    statuses = {}

    statuses["conformance"] = run_step(log, "conformance", [
        *pytest, "conformance", "-n", str(args.workers), "--device", args.device, "--dtype", "all", "-k", args.k,
        "--report-dir", str(work / "conformance")], SHARES["conformance"] * args.budget)
    for name in ("conformance.json", "conformance.md"):
        if (work / "conformance" / name).exists():
            shutil.copy(work / "conformance" / name, out / name)

    statuses["tf32"] = run_step(log, "tf32", [
        *pytest, "conformance/test_outputs.py", "--device", args.device, "--dtype", "float32",
        "-k", " or ".join(TF32_ROWS), "--report-dir", str(work / "tf32")], SHARES["tf32"] * args.budget,
        env={"LSTMC_TF32": "1"})
    if (work / "tf32" / "conformance.json").exists():
        (out / "tf32.json").write_text(json.dumps(tf32_summary(work / "tf32" / "conformance.json"), indent=1))

    statuses["bench"] = run_step(log, "bench", [
        *pytest, "bench/test_matrix.py", "--bench-device", args.device, "--bench-set", "quick",
        "--bench-seconds", "0.2", "-k", args.bench_k or args.k, f"--benchmark-json={out / 'bench.json'}"],
        SHARES["bench"] * args.budget)

    shutil.rmtree(work, ignore_errors=True)
    log.write(f"steps: {statuses} (0: passed; 1: some test failed; None: out of time)")
    # The run's own verdict: every step finished and ran tests (a conformance FAIL is data, reported in its files).
    return 0 if all(status in (0, 1) for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
