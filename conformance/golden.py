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
those files exactly as it checks a Python implementation, with the same
tolerances, failure messages and diagnoses. A vector with no result file is
reported "not supported".
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

from backends.base import DTYPES, VARIANTS, Config, Implementation, NotSupported, Outputs
from conformance.tolerances import TOLERANCES
from spec import lstm
from spec.cases import CASES_BY_NAME, CaseData, make_case_data
from spec.params import GATES, PEEPHOLE_GATES

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


def vector_tensors(data: CaseData) -> dict[str, np.ndarray]:
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    params64 = data.params.astype(np.float64)
    fwd = lstm.forward(params64, wide(data.x), wide(data.h0), wide(data.c0), forget_bias=data.forget_bias)
    grads = lstm.backward(fwd, wide(data.dh_seq), wide(data.dh_T), wide(data.dc_T))
    tensors = {**data.params.tensors(), **data.inputs(), **data.cotangents()}
    tensors.update({"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T})
    tensors.update({f"grad_{name}": value for name, value in grads.tensors().items()})
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
                "T": case.T, "B": case.B, "I": case.I, "H": case.H, "forget_bias": case.forget_bias,
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
    framework: str = ""
    manifest: dict = field(default_factory=dict)

    def __post_init__(self):
        self.directory = Path(self.directory)
        path = self.directory / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"--results {self.directory}: no manifest.json (export one with python -m conformance.golden export DIR)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a {FORMAT} manifest of version {FORMAT_VERSION}")
        self.id = self.id or f"results/{self.directory.name}"
        self.description = f"results written by an external implementation in {self.directory}"
        self.variants, self.dtypes = VARIANTS, DTYPES
        self._by_fingerprint = {v["inputs_sha256"]: v for v in self.manifest["vectors"]}

    def _result(self, params, x, h0, c0, forget_bias) -> tuple[dict, dict[str, np.ndarray]]:
        vector = self._by_fingerprint.get(fingerprint(params, x, h0, c0, forget_bias))
        if vector is None:
            raise NotSupported("this case is not among the exported vectors")
        path = self.directory / "results" / f"{vector['id']}.safetensors"
        if not path.is_file():
            raise NotSupported(f"no result file {path.relative_to(self.directory)}")
        return vector, load_file(str(path))

    def forward(self, params, x, h0, c0, *, forget_bias, config: Config) -> Outputs:
        _, result = self._result(params, x, h0, c0, forget_bias)
        missing = [name for name in OUTPUTS if name not in result]
        if missing:
            raise AssertionError(f"{self.id}: result file lacks {', '.join(missing)}")
        return Outputs(*(result[name] for name in OUTPUTS))

    def backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        vector, result = self._result(params, x, h0, c0, forget_bias)
        grads = {name.removeprefix("grad_"): value for name, value in result.items() if name.startswith("grad_")}
        if not grads:
            raise NotSupported(f"the result file of {vector['id']} has no gradients")
        return grads

    def availability(self, device: str = "cpu") -> str | None:
        return None if device == "cpu" else "results files are checked once, under device cpu"

    def environment(self, device: str = "cpu") -> dict[str, object]:
        return {"results": str(self.directory), "vectors": len(self.manifest["vectors"])}


def main(argv=None) -> int:
    from conformance.conftest import DEFAULT_CASES, LARGE_CASES

    parser = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write golden vectors and their manifest to DIR")
    exporting.add_argument("directory", type=Path)
    exporting.add_argument("--large", action="store_true", help="also the large cases")
    exporting.add_argument("--dtype", choices=("all", *DTYPES), default="all")
    args = parser.parse_args(argv)
    names = [n + s for n in DEFAULT_CASES + (LARGE_CASES if args.large else ()) for s in ("", "-peephole")]
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    path = export(args.directory, names, dtypes)
    print(f"wrote {path} and {len(names) * len(dtypes)} vectors under {args.directory / 'vectors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
