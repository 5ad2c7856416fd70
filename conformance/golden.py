"""Golden vectors for implementations outside Python, and checking the results they write.

    python -m conformance.golden export DIR          write DIR/manifest.json and DIR/vectors/*.safetensors
    pytest conformance/ --results DIR                check DIR/results/*.safetensors with the suite's verdicts

A vector is one case in one dtype, of the cell (spec/lstm.py) or of the layer
(spec/layer.py). A cell vector's safetensors file holds the inputs in that
dtype (W, U, b, p for peepholes, x, h0, c0, and the cotangents dh_seq, dh_T,
dc_T) and the spec's answers in float64 (h_seq, h_T, c_T and grad_x, grad_h0,
grad_c0, grad_W, grad_U, grad_b, grad_p). A layer vector holds every cell's
weights under the weight file's version-2 names (layer<l>.<forward|reverse>.W,
U, b, p, W_hr), x, h0 (L*D, B, P), c0 (L*D, B, H), the sequence lengths or the
mask when the case has them, the cotangents dy, dh_T, dc_T, and the spec's y,
h_T, c_T, grad_x, grad_h0, grad_c0 and grad_<weight name>; its manifest entry
carries the layer's configuration (directions, layers, projection, clips,
coupled gates, forget bias, zero_output_for_mask). Layouts are the canonical
ones (gates i, f, g, o; peepholes i, f, o); manifest.json lists every vector
with its sizes and the tolerances.

An implementation under test reads each vector, runs, and writes
DIR/results/<id>.safetensors with the outputs (and, if it computes gradients,
the grad_* tensors) in the vector's dtype. The suite then checks those files
through the same contract as a Python implementation, with the same
tolerances, failure messages and diagnoses. A vector in the manifest without
its result file, a result file that cannot be read, results in another dtype
than the vector's, and a vector whose inputs no longer match the case the suite
runs (its inputs_sha256 differs from today's, or its file was edited) are
FAILs, never silent drops; a case the export did not include (the long ones
without --large) is "not supported" and shows in the matrix as partial
coverage. A malformed manifest is a usage error naming the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from backends.base import DTYPES, LAYER_FEATURES, VARIANTS, Config, Implementation, NotSupported, ResultError
from conformance.tolerances import TOLERANCES
from spec.cases import CASES_BY_NAME, CaseData, case_set, make_case_data, reference
from spec.layer_cases import LAYER_CASES_BY_NAME, LayerCaseData, layer_case_set, make_layer_case_data
from spec.layer_cases import reference as layer_reference
from spec.params import GATES, PEEPHOLE_GATES, LSTMParams
from spec.weights_file import layer_tensor_names

FORMAT = "lstm-conformance-golden"
FORMAT_VERSION = "1"
OUTPUTS = ("h_seq", "h_T", "c_T")
LAYER_OUTPUTS = ("y", "h_T", "c_T")
KINDS = ("cell", "layer")


class GoldenError(Exception):
    """A golden directory or manifest that cannot be used at all: the message names the file and says why."""


def vector_id(case_name: str, dtype: str, kind: str = "cell") -> str:
    return f"{case_name}-{dtype}" if kind == "cell" else f"layer-{case_name}-{dtype}"


def fingerprint(params, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, forget_bias: float, *, layer=None, lengths=None, mask=None) -> str:
    """Identifies a vector by everything that goes into it (how results are matched to what the suite runs):
    a case and its peephole twin share their seed, so x alone would not do; a layer case adds its
    configuration and its lengths or mask."""
    digest = hashlib.sha256(repr(float(forget_bias)).encode())
    if layer is not None:
        digest.update(repr(dataclasses.astuple(layer)).encode())
    arrays = {**params.tensors(), "x": x, "h0": h0, "c0": c0}
    arrays.update({name: value for name, value in (("lengths", lengths), ("mask", mask)) if value is not None})
    for name, value in sorted(arrays.items()):
        digest.update(name.encode() + str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def data_fingerprint(data: CaseData | LayerCaseData) -> str:
    if isinstance(data, LayerCaseData):
        config = data.config
        return fingerprint(data.params, data.x, data.h0, data.c0, config.forget_bias, layer=config, lengths=data.lengths, mask=data.mask)
    return fingerprint(data.params, data.x, data.h0, data.c0, data.forget_bias)


def _file_names(data: CaseData | LayerCaseData) -> dict[str, str]:
    """The suite's name of every parameter tensor -> its name in a vector file."""
    if isinstance(data, LayerCaseData):
        return layer_tensor_names(data.params, data.config.direction)
    return {name: name for name in data.params.tensors()}


def vector_tensors(data: CaseData | LayerCaseData) -> dict[str, np.ndarray]:
    """A vector's file: the inputs in their dtype, the spec's answers in float64 (module docstring)."""
    names = _file_names(data)
    expected = layer_reference(data) if isinstance(data, LayerCaseData) else reference(data)
    tensors = {names[name]: value for name, value in data.params.tensors().items()}
    tensors.update({**data.inputs(), **data.cotangents(), **expected.outputs})
    for extra in ("lengths", "mask"):
        if getattr(data, extra, None) is not None:
            tensors[extra] = getattr(data, extra)
    tensors.update({f"grad_{names.get(name, name)}": value for name, value in expected.gradients.items()})
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


def _vector_entry(data: CaseData | LayerCaseData, dtype: str) -> dict:
    case = data.case
    if isinstance(data, LayerCaseData):
        vid = vector_id(case.name, dtype, "layer")
        entry = {"id": vid, "kind": "layer", "case": case.name, "variant": "peephole" if case.config.peephole else "standard",
                 "dtype": dtype, "seed": case.seed, "T": case.T, "B": case.B, "I": case.I, "H": case.H, "P": case.P,
                 "L": case.L, "D": case.D, "forget_bias": case.config.forget_bias, "config": dataclasses.asdict(case.config),
                 "lengths": None if data.lengths is None else data.lengths.tolist(), "mask": data.mask is not None}
    else:
        vid = vector_id(case.name, dtype)
        entry = {"id": vid, "kind": "cell", "case": case.name, "variant": case.variant, "dtype": dtype, "seed": case.seed,
                 "T": case.T, "B": case.B, "I": case.I, "H": case.H, "forget_bias": case.forget_bias}
    return {**entry, "file": f"vectors/{vid}.safetensors", "inputs_sha256": data_fingerprint(data)}


def export(directory: Path, case_names, dtypes=DTYPES, layer_case_names=()) -> Path:
    """Write the vectors of the named cell and layer cases in every dtype, and the manifest."""
    directory = Path(directory)
    (directory / "vectors").mkdir(parents=True, exist_ok=True)
    vectors = []
    datas = [make_case_data(CASES_BY_NAME[name], dtype) for name in case_names for dtype in dtypes]
    datas += [make_layer_case_data(LAYER_CASES_BY_NAME[name], dtype) for name in layer_case_names for dtype in dtypes]
    for data in datas:
        entry = _vector_entry(data, str(data.x.dtype))
        save_file(vector_tensors(data), str(directory / entry["file"]),
                  metadata={"format": FORMAT, "format_version": FORMAT_VERSION, "id": entry["id"]})
        vectors.append(entry)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gate_order": ",".join(GATES),
        "peephole_gate_order": ",".join(PEEPHOLE_GATES),
        "layouts": {"W": "(4, H, I)", "U": "(4, H, H)", "b": "(4, H)", "p": "(3, H)", "x": "(T, B, I)", "h0": "(B, H)", "c0": "(B, H)",
                    "dh_seq": "(T, B, H)", "dh_T": "(B, H)", "dc_T": "(B, H)", "h_seq": "(T, B, H)", "h_T": "(B, H)", "c_T": "(B, H)"},
        "layer_layouts": {"layer<l>.<forward|reverse>.W": "(4, H, I) in layer 0, (4, H, D*P) above", "U": "(4, H, P)",
                          "b": "(4, H)", "p": "(3, H)", "W_hr": "(P, H)", "x": "(T, B, I)", "h0, h_T, dh_T": "(L*D, B, P)",
                          "c0, c_T, dc_T": "(L*D, B, H)", "y, dy": "(T, B, D*P), forward direction first",
                          "lengths": "(B,) int64", "mask": "(T, B) bool", "cells": "row l*D + d of h0/c0: layer l, direction d"},
        "equations": "spec/lstm.py and spec/layer.py (README: The equations); the output gate's peephole sees the new c_t",
        "loss": "cell: gradients of sum(dh_seq*h_seq) + sum(dh_T*h_T) + sum(dc_T*c_T); layer: of sum(dy*y) + sum(dh_T*h_T) + sum(dc_T*c_T)",
        "expected_dtype": "float64 (the spec); inputs are in the vector's dtype",
        "results": "write results/<id>.safetensors in the vector's dtype: a cell vector's h_seq, h_T, c_T and optionally grad_x, "
                   "grad_h0, grad_c0, grad_W, grad_U, grad_b (grad_p for peephole vectors); a layer vector's y, h_T, c_T and "
                   "optionally grad_x, grad_h0, grad_c0 and grad_<weight name> for every weight tensor of the vector",
        "tolerances": {f"{dtype} {kind}": {"atol": t.atol, "rtol": t.rtol, "reason": t.reason} for (dtype, kind), t in TOLERANCES.items()},
        "vectors": vectors,
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


@dataclass
class ResultsDirectory(Implementation):
    """An implementation whose answers are files written by another program (see the module docstring)."""

    directory: Path = Path(".")
    manifest: dict = field(default_factory=dict)

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.manifest = read_manifest(self.directory / "manifest.json")
        self.id = self.id or f"results/{self.directory.name}"
        self.description = f"results written by an external implementation in {self.directory}"
        self.variants, self.dtypes = VARIANTS, DTYPES
        # Which cases it covers is the manifest's business: a case without a vector is "not supported" at run time.
        self.layer_features = tuple(LAYER_FEATURES)
        # Vectors by the fingerprint of the inputs the suite runs today: a vector exported from other inputs
        # (an older seed table, an edited manifest) is found under today's fingerprint and fails as stale.
        self._by_fingerprint = {}
        self._today: dict[str, tuple[CaseData | LayerCaseData | None, str | None]] = {}
        for vector in self.manifest["vectors"]:
            data = _todays_data(vector)
            today = None if data is None else data_fingerprint(data)
            self._today[vector["id"]] = (data, today)
            key = today or vector["inputs_sha256"]
            if key in self._by_fingerprint:  # two entries for one case: one would hide the other's results
                raise GoldenError(f"{self.directory / 'manifest.json'}: vectors {self._by_fingerprint[key]['id']!r} and "
                                  f"{vector['id']!r} are the same case and dtype; each vector is listed once")
            self._by_fingerprint[key] = vector
        self._check_results_directory()

    def _check_results_directory(self) -> None:
        """Everything in results/ must be a vector's result file: a stray file (a result for no vector, a name
        mistyped, a vector dropped from the manifest) is a usage error naming it, never silently ignored."""
        results = self.directory / "results"
        if not results.is_dir():
            return  # every vector then fails as missing its result file
        expected = {f"{vector['id']}.safetensors" for vector in self.manifest["vectors"]}
        stray = sorted(entry.name for entry in results.iterdir() if entry.name not in expected)
        if stray:
            raise GoldenError(f"--results {self.directory}: results/ holds {len(stray)} file(s) that are no vector's result: "
                              f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''} (results/<vector id>.safetensors, "
                              "for the ids in manifest.json; move the others away)")

    def _result(self, data_fingerprint_: str) -> tuple[dict, CaseData | LayerCaseData, dict[str, np.ndarray]]:
        vector = self._by_fingerprint.get(data_fingerprint_)
        if vector is None:
            raise NotSupported("this case is not among the exported vectors (export with the same case set, --large, dtypes)")
        data, today = self._today[vector["id"]]
        if today != vector["inputs_sha256"]:
            raise ResultError(
                f"vector {vector['id']}", "exported from other inputs than the suite runs today", f"inputs_sha256 {today}",
                f"{vector['inputs_sha256']} in the manifest (export the vectors again and rerun the implementation)",
            )
        self._check_vector_file(vector, data)
        path = self.directory / "results" / f"{vector['id']}.safetensors"
        if not path.is_file():
            found = "no such file" if not path.exists() else f"not a regular file ({_file_kind(path)})"
            raise ResultError(str(path), "missing result file", f"results/{vector['id']}.safetensors, written by the implementation", found)
        try:
            return vector, data, load_file(str(path))
        except Exception as error:  # a truncated or foreign file: the implementation's fault, named
            raise ResultError(str(path), "unreadable result file", "a safetensors file", f"{type(error).__name__}: {error}") from None

    def _check_vector_file(self, vector: dict, data: CaseData | LayerCaseData) -> None:
        """The vector file the implementation read holds the inputs the manifest names (checked once)."""
        if vector.get("_checked"):
            return
        path = self.directory / vector.get("file", f"vectors/{vector['id']}.safetensors")
        try:
            t = load_file(str(path))
            params = data.params.with_tensors({name: t[file_name] for name, file_name in _file_names(data).items()}) \
                if isinstance(data, LayerCaseData) else LSTMParams(t["W"], t["U"], t["b"], t.get("p"))
            found = dataclasses.replace(data, params=params, x=t["x"], h0=t["h0"], c0=t["c0"],
                                        **{k: t[k] for k in ("lengths", "mask") if k in t})
            found_fingerprint = data_fingerprint(found)
        except Exception as error:
            raise ResultError(str(path), "unreadable vector file", "the exported vector", f"{type(error).__name__}: {error}") from None
        if found_fingerprint != vector["inputs_sha256"]:
            raise ResultError(str(path), "vector file changed since the export", f"inputs_sha256 {vector['inputs_sha256']}", found_fingerprint)
        vector["_checked"] = True

    @staticmethod
    def _documented(result: dict[str, np.ndarray], outputs: tuple[str, ...], names: dict[str, str]) -> dict[str, str]:
        """{file name: the suite's name} of every gradient a result file may hold (grad_x, grad_h0, grad_c0 and
        grad_<documented weight name>); any other tensor in the file is a ResultError naming it: a second name
        for one tensor (the suite's internal one beside the documented one) could otherwise hide a wrong value."""
        grads = {f"grad_{name}": name for name in ("x", "h0", "c0")}
        grads.update({f"grad_{file_name}": name for name, file_name in names.items()})
        unexpected = sorted(set(result) - set(outputs) - set(grads))
        if unexpected:
            raise ResultError(f"tensor {unexpected[0]!r}", "unexpected in the result file",
                              f"only {list(outputs)} and grad_ + {sorted(n.removeprefix('grad_') for n in grads)}",
                              f"tensors {sorted(result)}")
        return grads

    @classmethod
    def _outputs(cls, vector: dict, result: dict[str, np.ndarray], names: tuple[str, ...], weights: dict[str, str]):
        cls._documented(result, names, weights)
        missing = [name for name in names if name not in result]
        if missing:
            raise ResultError(missing[0], "missing from the result file", f"tensors {list(names)}", f"tensors {sorted(result)}")
        return tuple(result[name] for name in names)

    @classmethod
    def _gradients(cls, vector: dict, result: dict[str, np.ndarray], outputs: tuple[str, ...], names: dict[str, str]) -> dict[str, np.ndarray]:
        """The grad_* tensors of a result file under the suite's names (what the contract then checks)."""
        documented = cls._documented(result, outputs, names)
        grads = {documented[name]: value for name, value in result.items() if name in documented}
        if not grads:
            raise NotSupported(f"the result file of {vector['id']} has no gradients")
        return grads

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        vector, data, result = self._result(fingerprint(params, x, h0, c0, forget_bias))
        return self._outputs(vector, result, OUTPUTS, _file_names(data))

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        vector, data, result = self._result(fingerprint(params, x, h0, c0, forget_bias))
        return self._gradients(vector, result, OUTPUTS, _file_names(data))

    def _layer_result(self, params, x, h0, c0, layer, lengths, mask):
        return self._result(fingerprint(params, x, h0, c0, layer.forget_bias, layer=layer, lengths=lengths, mask=mask))

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        vector, data, result = self._layer_result(params, x, h0, c0, layer, lengths, mask)
        return self._outputs(vector, result, LAYER_OUTPUTS, _file_names(data))

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        vector, data, result = self._layer_result(params, x, h0, c0, layer, lengths, mask)
        return self._gradients(vector, result, LAYER_OUTPUTS, _file_names(data))

    def _availability(self, device: str) -> str | None:
        return None if device == "cpu" else "results files are checked once, under device cpu"

    def _environment(self, device: str) -> dict[str, object]:
        return {"results": str(self.directory), "vectors": len(self.manifest["vectors"])}


def _file_kind(path: Path) -> str:
    """What a path that is not a regular file is, for a message."""
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _todays_data(vector: dict) -> CaseData | LayerCaseData | None:
    """The data the suite makes today for a vector's case, seed and dtype (None if the case no longer exists)."""
    layer = vector.get("kind", "cell") == "layer"
    case = (LAYER_CASES_BY_NAME if layer else CASES_BY_NAME).get(vector["case"])
    if case is None:
        return None
    case = case.with_seed(vector.get("seed", case.seed))
    return make_layer_case_data(case, vector["dtype"]) if layer else make_case_data(case, vector["dtype"])


_VECTOR_FIELDS = {"id": str, "case": str, "dtype": str, "inputs_sha256": str, "forget_bias": (int, float)}


def read_manifest(path: Path) -> dict:
    """The manifest of a golden directory, checked; GoldenError naming the file and what is wrong."""
    if not path.is_file():
        raise GoldenError(f"--results {path.parent}: no manifest.json (export one with python -m conformance.golden export DIR)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise GoldenError(f"{path}: not a readable JSON manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise GoldenError(f"{path}: not a {FORMAT} manifest of version {FORMAT_VERSION}")
    vectors = manifest.get("vectors")
    if not isinstance(vectors, list) or not vectors:
        raise GoldenError(f"{path}: 'vectors' must be a non-empty list of vectors, got {type(vectors).__name__}")
    for k, vector in enumerate(vectors):
        if not isinstance(vector, dict):
            raise GoldenError(f"{path}: vectors[{k}] is not an object")
        for name, kind in _VECTOR_FIELDS.items():
            if not isinstance(vector.get(name), kind) or isinstance(vector.get(name), bool):
                raise GoldenError(f"{path}: vectors[{k}] ({vector.get('id', '?')}) has no valid {name!r} (got {vector.get(name)!r})")
        if vector["dtype"] not in DTYPES:
            raise GoldenError(f"{path}: vectors[{k}] ({vector['id']}) has dtype {vector['dtype']!r}, not one of {DTYPES}")
        if vector.get("kind", "cell") not in KINDS:
            raise GoldenError(f"{path}: vectors[{k}] ({vector['id']}) has kind {vector.get('kind')!r}, not one of {KINDS}")
        # An entry's id names its result file: one that is not its case's would read another vector's results.
        expected_id = vector_id(vector["case"], vector["dtype"], vector.get("kind", "cell"))
        if vector["id"] != expected_id:
            raise GoldenError(f"{path}: vectors[{k}] has id {vector['id']!r}; its case {vector['case']!r}, "
                              f"{vector['dtype']}, is vector {expected_id!r}")
    ids = [vector["id"] for vector in vectors]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise GoldenError(f"{path}: vector ids listed more than once: {repeated}")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write golden vectors and their manifest to DIR")
    exporting.add_argument("directory", type=Path)
    exporting.add_argument("--large", action="store_true", help="also the large cases")
    exporting.add_argument("--dtype", choices=("all", *DTYPES), default="all")
    exporting.add_argument("--no-layers", action="store_true", help="only the cell's vectors, not the layer's")
    args = parser.parse_args(argv)
    names = [case.name for case in case_set(large=args.large)]
    layer_names = [] if args.no_layers else [case.name for case in layer_case_set()]
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    path = export(args.directory, names, dtypes, layer_names)
    print(f"wrote {path} and {(len(names) + len(layer_names)) * len(dtypes)} vectors under {args.directory / 'vectors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
