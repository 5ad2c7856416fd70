"""Golden vectors for implementations outside Python: exporting them (the format is contract/vectors.py; checking the
results an implementation wrote is backends/rows/results.py, through ``pytest conformance/ --results DIR``).

    python -m conformance.golden export DIR          write DIR/manifest.json and DIR/vectors/<case>-<dtype>.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contract.half_bounds import bound_cases
from contract.tensor_files import save_file
from contract.tolerances import TOLERANCES
from contract.vectors import FORMAT, FORMAT_VERSION, vector_entry, vector_tensors
from contract.vocabulary import CONFORMANCE_DTYPES, Dtype
from spec.cases import CASES_BY_NAME, case_set, is_cell, make_case_data, reference
from spec.params import GATES, PEEPHOLE_GATES
from spec.precision import Policy

LAYOUTS = {
    "layer<l>.<forward|reverse>.W": "(4, H, I) in layer 0, (4, H, D*P) above", "U": "(4, H, P)", "b": "(4, H)", "p": "(3, H)",
    "W_hr": "(P, H)", "x": "(T, B, I)", "h0, h_T, dh_T": "(L*D, B, P)", "c0, c_T, dc_T": "(L*D, B, H)",
    "y, dy": "(T, B, D*P), forward direction first", "lengths": "(B,) int64", "mask": "(T, B) bool",
    "cells": "row l*D + d of h0/c0/h_T/c_T: layer l, direction d; the cell is the case of one layer, one direction",
}


#: What a half-type vector asks of its results (contract/half_bounds.py, backends/rows/results.py).
HALF_RESULTS = (
    "bfloat16 and float16 vectors (the plain-cell cases): write y, h_T, c_T and optionally the gradients in the "
    "vector's half type (bfloat16 as safetensors' BF16; under mixed-precision the weights' gradients may be float32) "
    "and name the precision policy the implementation follows in the file's metadata, {'policy': ...}, one of "
    + ", ".join(p.value for p in Policy if p is not Policy.TF32) + "; they are judged by that policy's derived "
    "bounds (contract/half_bounds.json), per statistic of the error in ulps")


def export(directory: Path, case_names, dtypes=CONFORMANCE_DTYPES) -> Path:
    """Write the vectors of the named cases in every dtype, and the manifest; in a half type, only the cases its
    bounds are derived for."""
    directory = Path(directory)
    (directory / "vectors").mkdir(parents=True, exist_ok=True)
    vectors = []
    for name in case_names:
        for dtype in dtypes:
            half = Dtype(dtype).half
            if half and name not in bound_cases():
                continue
            data = make_case_data(CASES_BY_NAME[name], str(dtype))
            expected = reference(data)
            entry = vector_entry(data)
            save_file(vector_tensors(data, expected.outputs, expected.gradients), str(directory / entry["file"]),
                      metadata={"format": FORMAT, "format_version": FORMAT_VERSION, "id": entry["id"]})
            vectors.append(entry)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gate_order": ",".join(GATES),
        "peephole_gate_order": ",".join(PEEPHOLE_GATES),
        "layouts": LAYOUTS,
        "equations": "spec/lstm.py and spec/layer.py (README: The equations); the output gate's peephole sees the new c_t",
        "loss": "gradients of sum(dy*y) + sum(dh_T*h_T) + sum(dc_T*c_T)",
        "expected_dtype": "float64 (the spec); inputs are in the vector's dtype",
        "results": "write results/<id>.safetensors in the vector's dtype: y, h_T, c_T and optionally grad_x, grad_h0, grad_c0 "
                   "and grad_<weight name> for every weight tensor of the vector; no other tensor",
        "half_types": HALF_RESULTS,
        "tolerances": {f"{dtype} {kind}": {"atol": t.atol, "rtol": t.rtol, "reason": t.reason} for (dtype, kind), t in TOLERANCES.items()},
        "vectors": vectors,
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write golden vectors and their manifest to DIR")
    exporting.add_argument("directory", type=Path)
    exporting.add_argument("--large", action="store_true", help="also the large cases")
    exporting.add_argument("--dtype", choices=("all", *map(str, CONFORMANCE_DTYPES)), default="all")
    exporting.add_argument("--no-layers", action="store_true", help="only the plain-cell cases (one forward layer, no "
                           "lengths or mask)")
    args = parser.parse_args(argv)
    names = [case.name for case in case_set(large=args.large) if is_cell(case) or not args.no_layers]
    dtypes = CONFORMANCE_DTYPES if args.dtype == "all" else (args.dtype,)
    path = export(args.directory, names, dtypes)
    print(f"wrote {path} and {len(json.loads(path.read_text())['vectors'])} vectors under {args.directory / 'vectors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
