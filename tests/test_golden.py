"""Golden vectors: an external implementation reads them, writes results, and the suite checks those files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from conformance.golden import export, fingerprint
from spec import LSTMParams, lstm

ROOT = Path(__file__).resolve().parents[1]
CASES = ["small", "small-peephole", "forget-bias-peephole"]


def external_implementation(directory: Path, corrupt=None, skip=()):
    """What a C++ or Rust program would do: read each vector, compute in its dtype, write results."""
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "results").mkdir(exist_ok=True)
    for vector in manifest["vectors"]:
        if vector["id"] in skip:
            continue
        t = load_file(str(directory / vector["file"]))
        params = LSTMParams(t["W"], t["U"], t["b"], t.get("p"))
        fwd = lstm.forward(params, t["x"], t["h0"], t["c0"], forget_bias=vector["forget_bias"], dtype=vector["dtype"])
        grads = lstm.backward(fwd, t["dh_seq"], t["dh_T"], t["dc_T"])
        result = {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T, **{f"grad_{k}": v for k, v in grads.tensors().items()}}
        if corrupt:
            corrupt(vector, result)
        save_file({k: np.ascontiguousarray(v) for k, v in result.items()}, str(directory / "results" / f"{vector['id']}.safetensors"))


def suite(directory: Path, report: Path):
    env = {k: v for k, v in os.environ.items() if k != "LSTMC_REQUIRE_PASSES"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--results", str(directory),
         "--report-dir", str(report), "-k", " or ".join(f"cpu-{c}]" for c in CASES)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )


def test_export_writes_vectors_and_a_manifest(tmp_path):
    manifest = json.loads(export(tmp_path, CASES).read_text())
    assert manifest["gate_order"] == "i,f,g,o" and len(manifest["vectors"]) == 6
    assert manifest["tolerances"]["float32 outputs"]["atol"] > 0
    vector = next(v for v in manifest["vectors"] if v["id"] == "small-peephole-float32")
    tensors = load_file(str(tmp_path / vector["file"]))
    assert tensors["x"].dtype == np.float32 and tensors["h_seq"].dtype == np.float64
    assert tensors["W"].shape == (4, vector["H"], vector["I"]) and "p" in tensors and "grad_p" in tensors
    params = LSTMParams(tensors["W"], tensors["U"], tensors["b"], tensors["p"])
    assert fingerprint(params, tensors["x"], tensors["h0"], tensors["c0"], vector["forget_bias"]) == vector["inputs_sha256"]
    ids = [v["inputs_sha256"] for v in manifest["vectors"]]
    assert len(set(ids)) == len(ids), "a case and its peephole twin share x: the fingerprint must tell them apart"


def test_results_of_a_correct_external_implementation_pass(tmp_path):
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden", skip={"small-float32"})
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    statuses = {(r["case"], r["dtype"], r["kind"]): r["status"] for r in report["results"]}
    assert statuses[("small", "float64", "gradients")] == "pass"
    assert statuses[("small", "float32", "outputs")] == "not supported"  # no result file written for it


def test_wrong_results_fail_with_the_same_diagnosis(tmp_path):
    def swap_f_g(vector, result):
        if vector["case"] == "small-peephole":
            params = None  # recompute with the f and g blocks exchanged, as a buggy loader would
            t = load_file(str(tmp_path / "golden" / vector["file"]))
            order = [0, 2, 1, 3]
            params = LSTMParams(t["W"][order], t["U"][order], t["b"][order], t["p"])
            fwd = lstm.forward(params, t["x"], t["h0"], t["c0"], dtype=vector["dtype"])
            result.update(h_seq=fwd.h_seq, h_T=fwd.h_T, c_T=fwd.c_T)

    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden", corrupt=swap_f_g)
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1
    assert "diagnosis: matches the spec if gates f and g are swapped" in result.stdout


def test_a_directory_without_manifest_is_a_usage_error(tmp_path):
    result = suite(tmp_path, tmp_path / "report")
    assert result.returncode == 4 and "no manifest.json" in result.stderr
