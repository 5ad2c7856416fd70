"""Golden vectors: an external implementation reads them, writes results, and the suite checks those files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conformance.golden import export, fingerprint
from spec import LSTMParams, layer, lstm
from spec.layer import LayerConfig
from spec.params import LayerParams
from tests.suite import run_suite

CASES = ["small", "small-peephole", "forget-bias-peephole"]
LAYER_CASES = ["lstmp-stack", "mask-previous"]


def _layer_result(vector: dict, t: dict) -> dict:
    """A layer vector as an outside program reads it: cells by their names layer<l>.<forward|reverse>.<tensor>."""
    config = LayerConfig(**vector["config"])
    words = {"forward": ("forward",), "reverse": ("reverse",), "bidirectional": ("forward", "reverse")}[config.direction]
    cells = tuple(
        LSTMParams(**{k: t[f"layer{l}.{word}.{k}"] for k in ("W", "U", "b", "p", "W_hr") if f"layer{l}.{word}.{k}" in t})
        for l in range(vector["L"]) for word in words
    )
    params = LayerParams(cells, len(words))
    fwd = layer.forward(params, t["x"], t["h0"], t["c0"], config=config, lengths=t.get("lengths"), mask=t.get("mask"),
                        dtype=vector["dtype"])
    grads = layer.backward(fwd, t["dy"], t["dh_T"], t["dc_T"])
    names = {f"layer {k // len(words)} direction {k % len(words)}": f"layer{k // len(words)}.{words[k % len(words)]}" for k in range(len(cells))}
    result = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T, "grad_x": grads.x, "grad_h0": grads.h0, "grad_c0": grads.c0}
    for name, value in grads.params.tensors().items():
        cell, tensor = name.rsplit(" ", 1)
        result[f"grad_{names[cell]}.{tensor}"] = value
    return result


def external_implementation(directory: Path, corrupt=None, skip=()):
    """What a C++ or Rust program would do: read each vector, compute in its dtype, write results."""
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "results").mkdir(exist_ok=True)
    for vector in manifest["vectors"]:
        if vector["id"] in skip:
            continue
        t = load_file(str(directory / vector["file"]))
        if vector["kind"] == "layer":
            result = _layer_result(vector, t)
        else:
            params = LSTMParams(t["W"], t["U"], t["b"], t.get("p"))
            fwd = lstm.forward(params, t["x"], t["h0"], t["c0"], forget_bias=vector["forget_bias"], dtype=vector["dtype"])
            grads = lstm.backward(fwd, t["dh_seq"], t["dh_T"], t["dc_T"])
            result = {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T, **{f"grad_{k}": v for k, v in grads.tensors().items()}}
        if corrupt:
            corrupt(vector, result)
        save_file({k: np.ascontiguousarray(v) for k, v in result.items()}, str(directory / "results" / f"{vector['id']}.safetensors"))


def suite(directory: Path, report: Path):
    """The suite on the results in ``directory`` for CASES, its report in ``report`` (tmp_path / "report")."""
    return run_suite(report.parent, "--results", str(directory), "-k", " or ".join(f"cpu-{c}]" for c in CASES))


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
    external_implementation(tmp_path / "golden")
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    assert {r["status"] for r in report["results"]} == {"pass"}
    cell = report["matrix"]["results/golden"]["float64 cpu gradients"]
    assert (cell["status"], cell["covered"], cell["denominator"]) == ("pass", 3, 3)


def test_a_missing_result_file_is_a_failure_naming_it(tmp_path):
    # Before: a directory holding 2 of 32 result files read "pass" everywhere, with exit 0.
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden", skip={"small-float32"})
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1, result.stdout[-3000:]
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    missing = [r for r in report["results"] if r["case"] == "small" and r["dtype"] == "float32"]
    assert missing and all(r["status"] == "FAIL" and "small-float32.safetensors: missing result file" in r["detail"] for r in missing)
    assert report["matrix"]["results/golden"]["float32 cpu outputs"]["status"] == "FAIL"


@pytest.mark.parametrize("damage, fragment", [
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "unreadable result file"),
    (lambda path: path.write_bytes(b"not safetensors at all"), "unreadable result file"),
], ids=["truncated", "garbage"])
def test_an_unreadable_result_file_is_a_failure_naming_the_file(tmp_path, damage, fragment):
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden")
    damage(tmp_path / "golden" / "results" / "small-float64.safetensors")
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1, result.stdout[-3000:]
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    damaged = [r for r in report["results"] if r["case"] == "small" and r["dtype"] == "float64"]
    assert damaged and all(r["status"] == "FAIL" and "small-float64.safetensors" in r["detail"] and fragment in r["detail"] for r in damaged)


def test_results_in_another_dtype_than_the_vectors_fail(tmp_path):
    def widen(vector, result):
        if vector["id"] == "small-float32":
            result.update({k: v.astype(np.float64) for k, v in result.items()})

    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden", corrupt=widen)
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    wrong = [r for r in report["results"] if r["case"] == "small" and r["dtype"] == "float32"]
    assert wrong and all(r["status"] == "FAIL" and "wrong dtype: expected float32, got float64" in r["detail"] for r in wrong)


def test_a_vector_exported_from_other_inputs_fails_as_stale(tmp_path):
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden")
    path = tmp_path / "golden" / "manifest.json"
    manifest = json.loads(path.read_text())
    vector = next(v for v in manifest["vectors"] if v["id"] == "small-peephole-float64")
    vector["inputs_sha256"] = "0" * 64  # as an export from an older case table would be
    path.write_text(json.dumps(manifest))
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1
    report = json.loads((tmp_path / "report" / "conformance.json").read_text())
    stale = [r for r in report["results"] if r["case"] == "small-peephole" and r["dtype"] == "float64"]
    assert stale and all(r["status"] == "FAIL" and "exported from other inputs" in r["detail"] for r in stale)


@pytest.mark.parametrize("manifest, fragment", [
    ("{not json", "not a readable JSON manifest"),
    (json.dumps({"format": "lstm-conformance-golden", "format_version": "1"}), "'vectors' must be a non-empty list"),
    (json.dumps({"format": "lstm-conformance-golden", "format_version": "1", "vectors": [{"id": "small-float64", "case": "small",
                 "dtype": "float64", "forget_bias": 0.0}]}), "has no valid 'inputs_sha256'"),
], ids=["not-json", "no-vectors", "no-inputs-sha256"])
def test_a_malformed_manifest_is_a_usage_error_naming_it(tmp_path, manifest, fragment):
    # Before: an INTERNALERROR.
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "manifest.json").write_text(manifest)
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert str(tmp_path / "golden" / "manifest.json") in result.stderr and fragment in result.stderr


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


def test_layer_vectors_pass_when_right_and_fail_with_directions_swapped(tmp_path):
    """Layer vectors (weights under the weight file's version-2 names, lengths or masks, the configuration in the
    manifest) go through the same verdicts: a program that swaps its two directions' outputs fails."""
    def swap_directions(vector, result):
        if vector["id"] == "layer-lstmp-stack-float64":
            P = vector["P"]
            result["y"] = np.concatenate([result["y"][..., P:], result["y"][..., :P]], axis=-1)

    export(tmp_path / "golden", [], layer_case_names=LAYER_CASES)
    external_implementation(tmp_path / "golden", corrupt=swap_directions)
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"), "-k", "test_layer and (" + " or ".join(f"cpu-{c}]" for c in LAYER_CASES) + ")")
    assert run.returncode == 1, run.output
    statuses = {(r["case"], r["dtype"], r["kind"]): r for r in run.report["results"]}
    assert statuses[("lstmp-stack", "float64", "layer outputs")]["status"] == "FAIL"
    assert "y: worst error" in statuses[("lstmp-stack", "float64", "layer outputs")]["detail"]
    others = [r for key, r in statuses.items() if key != ("lstmp-stack", "float64", "layer outputs")]
    assert others and all(r["status"] == "pass" for r in others), [(r["case"], r["kind"], r["detail"]) for r in others if r["status"] != "pass"]


def test_a_wrong_gradient_cannot_hide_behind_the_suites_internal_name(tmp_path):
    # Before: beside a wrong grad_layer0.forward.W, a right "grad_layer 0 direction 0 W" (the suite's internal name)
    # was taken instead, and the run passed.
    def two_names(vector, result):
        if vector["id"] == "layer-lstmp-stack-float64":
            right = result["grad_layer0.forward.W"]
            result["grad_layer 0 direction 0 W"] = right.copy()
            result["grad_layer0.forward.W"] = right * 2.0

    export(tmp_path / "golden", [], layer_case_names=LAYER_CASES)
    external_implementation(tmp_path / "golden", corrupt=two_names)
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"), "-k", "test_layer and float64-cpu-lstmp-stack]")
    assert run.returncode == 1, run.output
    results = run.report["results"]
    assert results and all(r["status"] == "FAIL" for r in results)
    assert all("'grad_layer 0 direction 0 W': unexpected in the result file" in r["detail"] for r in results), results


def test_a_manifest_entry_cannot_take_another_vectors_id_or_be_listed_twice(tmp_path):
    # Before: an entry for "small" renamed "T1-float64" read T1's results for small's inputs (and a second entry for
    # one case replaced the first's).
    export(tmp_path / "golden", ["small", "T1"])
    path = tmp_path / "golden" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["vectors"] = [dict(v, id="T1-float64") if v["id"] == "small-float64" else v for v in manifest["vectors"]
                           if v["id"] != "T1-float64"]
    path.write_text(json.dumps(manifest))
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4 and "has id 'T1-float64'; its case 'small', float64, is vector 'small-float64'" in run.stderr, run.output

    twice = json.loads((tmp_path / "golden" / "manifest.json").read_text())
    export(tmp_path / "golden", ["small", "T1"])
    manifest = json.loads(path.read_text())
    manifest["vectors"].append(dict(manifest["vectors"][0]))
    path.write_text(json.dumps(manifest))
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4 and "vector ids listed more than once: ['small-float32']" in run.stderr, run.output
    assert twice  # the first manifest was read back as written


@pytest.mark.parametrize("make", [
    lambda path: path.mkdir(),
    lambda path: path.symlink_to("/dev/null"),
], ids=["directory", "device"])
def test_a_result_path_that_is_not_a_file_says_what_it_is(tmp_path, make):
    # Before: "no such file" for a directory or a device standing where the result file should be.
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden", skip={"small-float64"})
    make(tmp_path / "golden" / "results" / "small-float64.safetensors")
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 1, result.output
    wrong = [r for r in result.report["results"] if r["case"] == "small" and r["dtype"] == "float64"]
    kind = "a directory" if (tmp_path / "golden" / "results" / "small-float64.safetensors").is_dir() else "a character device"
    assert wrong and all(f"missing result file: expected results/small-float64.safetensors, written by the implementation, "
                         f"got not a regular file ({kind})" in r["detail"] for r in wrong), wrong


def test_a_stray_file_in_results_is_reported(tmp_path):
    # Before: a result for no vector (a typo in its name, a vector dropped from the manifest) was ignored silently.
    export(tmp_path / "golden", CASES)
    external_implementation(tmp_path / "golden")
    (tmp_path / "golden" / "results" / "small-float46.safetensors").write_bytes(b"")
    result = suite(tmp_path / "golden", tmp_path / "report")
    assert result.returncode == 4, result.output
    assert "results/ holds 1 file(s) that are no vector's result: small-float46.safetensors" in result.stderr
