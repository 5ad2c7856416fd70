"""Golden vectors: an external implementation reads them, writes results, and the suite checks those files.

The external implementation here is the spec itself, as an outside program would run it: it reads each vector's
file by the documented names, computes in the vector's dtype, and writes results/<id>.safetensors. One run of the
suite judges results damaged in many ways at once, each in its own vector, so that every verdict is checked
against what was done to that vector alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conformance.golden import export
from contract import tensor_files
from contract.vectors import CHANGED_IN_VERSION_2, fingerprint
from contract.vocabulary import FULL_DTYPES
from spec import LSTMParams, layer
from spec.cases import case_by_name, make_case_data
from spec.layer import LayerConfig
from spec.params import LayerParams
from tests.suite import run_suite

CASES = ["small", "small-peephole", "forget-bias-peephole", "T1", "B1", "lstmp-stack", "mask-previous"]


def spec_result(vector: dict, t: dict) -> dict:
    """A vector as an outside program reads it (cells by their names layer<l>.<forward|reverse>.<tensor>) and the
    results it writes: y, h_T, c_T and every grad_ tensor, in the vector's dtype."""
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
    result = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T, "grad_x": grads.x, "grad_h0": grads.h0, "grad_c0": grads.c0}
    D = len(words)
    for k, cell in enumerate(grads.params.cells):
        for tensor, value in cell.tensors().items():
            result[f"grad_layer{k // D}.{words[k % D]}.{tensor}"] = value
    return result


def external_implementation(directory: Path, corrupt=None, skip=()):
    """What a C++ or Rust program would do: read each vector, compute in its dtype, write results."""
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "results").mkdir(exist_ok=True)
    for vector in manifest["vectors"]:
        if vector["id"] in skip:
            continue
        result = spec_result(vector, load_file(str(directory / vector["file"])))
        if corrupt:
            corrupt(vector, result, directory)
        save_file({k: np.ascontiguousarray(v) for k, v in result.items()}, str(directory / "results" / f"{vector['id']}.safetensors"))


def test_export_writes_vectors_of_one_kind_and_a_manifest(tmp_path):
    manifest = json.loads(export(tmp_path, ["small-peephole", "lstmp-stack"]).read_text())
    # Every dtype of each case: the half types too, the cell's and the layer's (the bounds' cases).
    assert manifest["format_version"] == "2" and manifest["gate_order"] == "i,f,g,o" and len(manifest["vectors"]) == 8
    halves = [v for v in manifest["vectors"] if v["dtype"] in ("bfloat16", "float16")]
    assert [v["id"] for v in halves] == ["small-peephole-bfloat16", "small-peephole-float16", "lstmp-stack-bfloat16",
                                        "lstmp-stack-float16"]
    half_tensors = tensor_files.load_file(str(tmp_path / halves[0]["file"]))  # BF16: safetensors.numpy cannot
    assert half_tensors["x"].dtype.name == "bfloat16" and "y" in half_tensors
    assert "grad_x" in half_tensors and half_tensors["grad_x"].dtype.name == "float64" and "policy" in manifest["half_types"]
    assert manifest["tolerances"]["float32 outputs"]["atol"] > 0
    vector = next(v for v in manifest["vectors"] if v["id"] == "small-peephole-float32")
    tensors = load_file(str(tmp_path / vector["file"]))
    # The cell is the one-layer case: its tensors under the layer's names and shapes.
    assert tensors["x"].dtype == np.float32 and tensors["y"].dtype == np.float64
    assert tensors["layer0.forward.W"].shape == (4, vector["H"], vector["I"]) and "layer0.forward.p" in tensors
    assert tensors["h0"].shape == (1, vector["B"], vector["H"]) and "grad_layer0.forward.p" in tensors
    assert fingerprint(make_case_data(case_by_name("small-peephole"), "float32")) == vector["inputs_sha256"]
    ids = [v["inputs_sha256"] for v in manifest["vectors"]]
    assert len(set(ids)) == len(ids), "a case and its peephole twin share x: the fingerprint must tell them apart"


def test_results_of_a_correct_external_implementation_pass(tmp_path):
    export(tmp_path / "golden", CASES, FULL_DTYPES)
    external_implementation(tmp_path / "golden")
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"), "-k", " or ".join(f"cpu-{c}]" for c in CASES))
    assert run.returncode == 0, run.output
    assert {r["status"] for r in run.report["results"] if r["dtype"] in ("float32", "float64")} == {"pass"}
    cell = run.report["matrix"]["results/golden"]["float64 cpu gradients"]
    assert (cell["status"], cell["covered"], cell["denominator"]) == ("pass", len(CASES), len(CASES))


def _damage(vector, result, directory):
    """Each vector damaged its own way (the first element of each tensor it names, or the whole file)."""
    vid = vector["id"]
    if vid == "small-float64":  # a truncated file, written after this returns: see below
        pass
    elif vid == "small-float32":  # results in float64 for a float32 vector
        result.update({k: v.astype(np.float64) for k, v in result.items()})
    elif vid == "small-peephole-float64":  # f and g exchanged when loading the weights, as a buggy program does
        t = load_file(str(directory / vector["file"]))
        order = [0, 2, 1, 3]
        cell = LSTMParams(t["layer0.forward.W"][order], t["layer0.forward.U"][order], t["layer0.forward.b"][order], t["layer0.forward.p"])
        fwd = layer.forward(LayerParams((cell,)), t["x"], t["h0"], t["c0"], config=LayerConfig(**vector["config"]))
        result.update(y=fwd.y, h_T=fwd.h_T, c_T=fwd.c_T)
    elif vid == "lstmp-stack-float64":  # the two directions' outputs exchanged
        P = vector["P"]
        result["y"] = np.concatenate([result["y"][..., P:], result["y"][..., :P]], axis=-1)
    elif vid == "mask-previous-float64":  # a wrong gradient hidden behind the suite's internal name for it
        right = result["grad_layer0.forward.W"]
        result["grad_layer 0 direction 0 W"] = right.copy()
        result["grad_layer0.forward.W"] = right * 2.0


def test_damaged_results_fail_each_with_its_own_verdict(tmp_path):
    golden = tmp_path / "golden"
    export(golden, CASES, FULL_DTYPES)
    external_implementation(golden, corrupt=_damage, skip={"T1-float64"})
    path = golden / "results" / "small-float64.safetensors"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (golden / "results" / "T1-float32.safetensors").unlink()
    (golden / "results" / "T1-float32.safetensors").mkdir()  # a directory where the file should be
    (golden / "results" / "B1-float32.safetensors").unlink()
    (golden / "results" / "B1-float32.safetensors").symlink_to("/dev/null")  # a device
    manifest = json.loads((golden / "manifest.json").read_text())
    for vector in manifest["vectors"]:
        if vector["id"] == "B1-float64":
            vector["inputs_sha256"] = "0" * 64  # as an export from an older case table would be
    (golden / "manifest.json").write_text(json.dumps(manifest))

    run = run_suite(tmp_path, "--results", str(golden), "-k", " or ".join(f"cpu-{c}]" for c in CASES))
    assert run.returncode == 1, run.output
    verdicts = {}
    for r in run.report["results"]:
        verdicts.setdefault((r["case"], r["dtype"]), []).append(r)

    def every(case, dtype, fragment, kinds=("outputs", "gradients")):
        found = [r for r in verdicts[(case, dtype)] if r["kind"] in kinds]
        assert found and all(r["status"] == "FAIL" and fragment in r["detail"] for r in found), (case, dtype, found)

    every("small", "float64", "small-float64.safetensors: unreadable result file")
    every("small", "float32", "wrong dtype: expected float32, got float64")
    every("T1", "float64", "T1-float64.safetensors: missing result file")
    every("T1", "float32", "got not a regular file (a directory)")
    every("B1", "float32", "got not a regular file (a character device)")
    every("B1", "float64", "exported from other inputs")
    every("lstmp-stack", "float64", "y: worst error", kinds=("outputs",))
    every("mask-previous", "float64", "'grad_layer 0 direction 0 W': unexpected in the result file")
    wrong_gates = [r for r in verdicts[("small-peephole", "float64")] if r["kind"] == "outputs"]
    assert "matches the spec if gates f and g are swapped" in wrong_gates[0]["diagnosis"]
    untouched = [r for key, results in verdicts.items() for r in results
                 if key in {("forget-bias-peephole", "float32"), ("forget-bias-peephole", "float64"), ("lstmp-stack", "float32")}]
    assert untouched and all(r["status"] == "pass" for r in untouched)
    assert all(r["status"] == "pass" for r in verdicts[("lstmp-stack", "float64")] if r["kind"] == "gradients")


@pytest.mark.parametrize("manifest, fragment", [
    ("{not json", "not a readable JSON manifest"),
    (json.dumps({"format": "lstm-conformance-golden", "format_version": "2"}), "'vectors' must be a non-empty list"),
    (json.dumps({"format": "lstm-conformance-golden", "format_version": "2", "vectors": [{"id": "small-float64", "case": "small",
                 "dtype": "float64"}]}), "has no valid 'inputs_sha256'"),
    # Before the tables were one: refused with what changed, not misread.
    (json.dumps({"format": "lstm-conformance-golden", "format_version": "1", "vectors": []}), CHANGED_IN_VERSION_2[:60]),
], ids=["not-json", "no-vectors", "no-inputs-sha256", "version-1"])
def test_a_malformed_or_old_manifest_is_a_usage_error_naming_it(tmp_path, manifest, fragment):
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "manifest.json").write_text(manifest)
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4, run.output
    assert str(tmp_path / "golden" / "manifest.json") in run.stderr and fragment in run.stderr


def test_a_directory_without_manifest_is_a_usage_error(tmp_path):
    run = run_suite(tmp_path, "--results", str(tmp_path))
    assert run.returncode == 4 and "no manifest.json" in run.stderr


def test_a_manifest_entry_cannot_take_another_vectors_id_or_be_listed_twice(tmp_path):
    # An entry for "small" renamed "T1-float64" would read T1's results for small's inputs (and a second entry for one
    # case would replace the first's).
    export(tmp_path / "golden", ["small", "T1"], FULL_DTYPES)
    path = tmp_path / "golden" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["vectors"] = [dict(v, id="T1-float64") if v["id"] == "small-float64" else v for v in manifest["vectors"]
                           if v["id"] != "T1-float64"]
    path.write_text(json.dumps(manifest))
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4 and "has id 'T1-float64'; its case 'small', float64, is vector 'small-float64'" in run.stderr, run.output

    export(tmp_path / "golden", ["small", "T1"], FULL_DTYPES)
    manifest = json.loads(path.read_text())
    manifest["vectors"].append(dict(manifest["vectors"][0]))
    path.write_text(json.dumps(manifest))
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4 and "vector ids listed more than once: ['small-float32']" in run.stderr, run.output


def test_a_stray_file_in_results_is_reported(tmp_path):
    # A result for no vector (a typo in its name, a vector dropped from the manifest) is not ignored.
    export(tmp_path / "golden", ["small"], FULL_DTYPES)
    external_implementation(tmp_path / "golden")
    (tmp_path / "golden" / "results" / "small-float46.safetensors").write_bytes(b"")
    run = run_suite(tmp_path, "--results", str(tmp_path / "golden"))
    assert run.returncode == 4, run.output
    assert "results/ holds 1 file(s) that are no vector's result: small-float46.safetensors" in run.stderr
