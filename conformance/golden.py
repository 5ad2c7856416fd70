"""Golden vectors for implementations outside Python, and checking the results they write.

    python -m conformance.golden export DIR          write DIR/manifest.json and DIR/vectors/*.safetensors
    pytest conformance/ --results DIR                check DIR/results/*.safetensors with the suite's verdicts

A vector is one case in one dtype. Its safetensors file holds the inputs in
that dtype (W, U, b, p for peepholes, x, h0, c0, and the cotangents dh_seq,
dh_T, dc_T) and the spec's answers in float64 (h_seq, h_T, c_T and grad_x,
grad_h0, grad_c0, grad_W, grad_U, grad_b, grad_p). Layouts are the canonical
ones (gates i, f, g, o; peepholes i, f, o); manifest.json lists every vector
with its sizes, forget bias and tolerances.

An implementation under test reads each vector, runs, and writes
DIR/results/<id>.safetensors with h_seq, h_T, c_T (and, if it computes
gradients, the grad_* tensors) in the vector's dtype. The suite then checks
those files through the same contract as a Python implementation, with the same
tolerances, failure messages and diagnoses. A vector in the manifest without
its result file, a result file that cannot be read, results in another dtype
than the vector's, and a vector whose inputs no longer match the case the suite
runs (its inputs_sha256 differs from today's) are FAILs, never silent drops; a
case the export did not include (the long ones without --large) is "not
supported" and shows in the matrix as partial coverage. A malformed manifest is
a usage error naming the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from backends.base import DTYPES, VARIANTS, Config, Implementation, NotSupported, ResultError
from conformance.tolerances import TOLERANCES
from spec.cases import CASES_BY_NAME, CaseData, case_set, make_case_data, reference
from spec.params import GATES, PEEPHOLE_GATES, LSTMParams

FORMAT = "lstm-conformance-golden"
FORMAT_VERSION = "1"
OUTPUTS = ("h_seq", "h_T", "c_T")


def vector_id(case_name: str, dtype: str) -> str:
    return f"{case_name}-{dtype}"


def fingerprint(params, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, forget_bias: float) -> str:
    """Identifies a vector by everything that goes into it (how results are matched to what the suite runs):
    a case and its peephole twin share their seed, so x alone would not do."""
    digest = hashlib.sha256(repr(float(forget_bias)).encode())
    for name, value in sorted({**params.tensors(), "x": x, "h0": h0, "c0": c0}.items()):
        digest.update(name.encode() + str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


class GoldenError(Exception):
    """A golden directory or manifest that cannot be used at all: the message names the file and says why."""


def vector_tensors(data: CaseData) -> dict[str, np.ndarray]:
    expected = reference(data)
    tensors = {**data.params.tensors(), **data.inputs(), **data.cotangents(), **expected.outputs}
    tensors.update({f"grad_{name}": value for name, value in expected.gradients.items()})
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


def export(directory: Path, case_names, dtypes=DTYPES) -> Path:
    directory = Path(directory)
    (directory / "vectors").mkdir(parents=True, exist_ok=True)
    vectors = []
    for name in case_names:
        case = CASES_BY_NAME[name]
        for dtype in dtypes:
            data = make_case_data(case, dtype)
            vid = vector_id(case.name, dtype)
            save_file(vector_tensors(data), str(directory / "vectors" / f"{vid}.safetensors"),
                      metadata={"format": FORMAT, "format_version": FORMAT_VERSION, "id": vid})
            vectors.append({
                "id": vid, "file": f"vectors/{vid}.safetensors", "case": case.name, "variant": case.variant, "dtype": dtype,
                "seed": case.seed, "T": case.T, "B": case.B, "I": case.I, "H": case.H, "forget_bias": case.forget_bias,
                "inputs_sha256": fingerprint(data.params, data.x, data.h0, data.c0, case.forget_bias),
            })
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gate_order": ",".join(GATES),
        "peephole_gate_order": ",".join(PEEPHOLE_GATES),
        "layouts": {"W": "(4, H, I)", "U": "(4, H, H)", "b": "(4, H)", "p": "(3, H)", "x": "(T, B, I)", "h0": "(B, H)", "c0": "(B, H)",
                    "dh_seq": "(T, B, H)", "dh_T": "(B, H)", "dc_T": "(B, H)", "h_seq": "(T, B, H)", "h_T": "(B, H)", "c_T": "(B, H)"},
        "equations": "spec/lstm.py (README: The equations); the output gate's peephole sees the new c_t",
        "loss": "gradients are those of sum(dh_seq*h_seq) + sum(dh_T*h_T) + sum(dc_T*c_T)",
        "expected_dtype": "float64 (the spec); inputs are in the vector's dtype",
        "results": "write results/<id>.safetensors with h_seq, h_T, c_T and optionally grad_x, grad_h0, grad_c0, grad_W, "
                   "grad_U, grad_b (grad_p for peephole vectors), in the vector's dtype",
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
        # Vectors by the fingerprint of the inputs the suite runs today: a vector exported from other inputs
        # (an older seed table, an edited manifest) is found under today's fingerprint and fails as stale.
        self._by_fingerprint = {}
        for vector in self.manifest["vectors"]:
            today = _todays_fingerprint(vector)
            self._by_fingerprint[today or vector["inputs_sha256"]] = vector

    def _result(self, params, x, h0, c0, forget_bias) -> tuple[dict, dict[str, np.ndarray]]:
        vector = self._by_fingerprint.get(fingerprint(params, x, h0, c0, forget_bias))
        if vector is None:
            raise NotSupported("this case is not among the exported vectors (export with the same case set, --large, dtypes)")
        if _todays_fingerprint(vector) != vector["inputs_sha256"]:
            raise ResultError(
                f"vector {vector['id']}", "exported from other inputs than the suite runs today", f"inputs_sha256 {_todays_fingerprint(vector)}",
                f"{vector['inputs_sha256']} in the manifest (export the vectors again and rerun the implementation)",
            )
        self._check_vector_file(vector)
        path = self.directory / "results" / f"{vector['id']}.safetensors"
        if not path.is_file():
            raise ResultError(str(path), "missing result file", f"results/{vector['id']}.safetensors, written by the implementation", "no such file")
        try:
            return vector, load_file(str(path))
        except Exception as error:  # a truncated or foreign file: the implementation's fault, named
            raise ResultError(str(path), "unreadable result file", "a safetensors file", f"{type(error).__name__}: {error}") from None

    def _check_vector_file(self, vector: dict) -> None:
        """The vector file the implementation read holds the inputs the manifest names (checked once)."""
        if vector.get("_checked"):
            return
        path = self.directory / vector.get("file", f"vectors/{vector['id']}.safetensors")
        try:
            t = load_file(str(path))
            params = LSTMParams(t["W"], t["U"], t["b"], t.get("p"))
            found = fingerprint(params, t["x"], t["h0"], t["c0"], vector["forget_bias"])
        except Exception as error:
            raise ResultError(str(path), "unreadable vector file", "the exported vector", f"{type(error).__name__}: {error}") from None
        if found != vector["inputs_sha256"]:
            raise ResultError(str(path), "vector file changed since the export", f"inputs_sha256 {vector['inputs_sha256']}", found)
        vector["_checked"] = True

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        _, result = self._result(params, x, h0, c0, forget_bias)
        missing = [name for name in OUTPUTS if name not in result]
        if missing:
            raise ResultError(missing[0], "missing from the result file", f"tensors {list(OUTPUTS)}", f"tensors {sorted(result)}")
        return tuple(result[name] for name in OUTPUTS)

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        vector, result = self._result(params, x, h0, c0, forget_bias)
        grads = {name.removeprefix("grad_"): value for name, value in result.items() if name.startswith("grad_")}
        if not grads:
            raise NotSupported(f"the result file of {vector['id']} has no gradients")
        return grads

    def _availability(self, device: str) -> str | None:
        return None if device == "cpu" else "results files are checked once, under device cpu"

    def _environment(self, device: str) -> dict[str, object]:
        return {"results": str(self.directory), "vectors": len(self.manifest["vectors"])}


def _todays_fingerprint(vector: dict) -> str | None:
    """The fingerprint of the inputs the suite makes today for a vector's case, seed and dtype (None if the
    case no longer exists)."""
    case = CASES_BY_NAME.get(vector["case"])
    if case is None:
        return None
    case = case.with_seed(vector.get("seed", case.seed))
    data = make_case_data(case, vector["dtype"])
    return fingerprint(data.params, data.x, data.h0, data.c0, case.forget_bias)


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
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write golden vectors and their manifest to DIR")
    exporting.add_argument("directory", type=Path)
    exporting.add_argument("--large", action="store_true", help="also the large cases")
    exporting.add_argument("--dtype", choices=("all", *DTYPES), default="all")
    args = parser.parse_args(argv)
    names = [case.name for case in case_set(large=args.large)]
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    path = export(args.directory, names, dtypes)
    print(f"wrote {path} and {len(names) * len(dtypes)} vectors under {args.directory / 'vectors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
