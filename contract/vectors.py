"""Golden vectors: the contract for implementations outside Python, as files.

    python -m conformance.golden export DIR          writes DIR/manifest.json and DIR/vectors/<id>.safetensors
    pytest conformance/ --results DIR                checks DIR/results/<id>.safetensors (backends/rows/results.py)

A vector is one case in one dtype: the LSTM layer of spec/layer.py (the cell is its one-layer case). Its
safetensors file holds the inputs in that dtype: every cell's weights under the weight file's version-2 names
(``layer<l>.<forward|reverse>.W``, ``U``, ``b``, ``p``, ``W_hr``), x (T, B, I), h0 (L*D, B, P), c0 (L*D, B, H),
the lengths or the mask when the case has them, the cotangents dy, dh_T, dc_T; and the spec's answers in
float64: y, h_T, c_T, grad_x, grad_h0, grad_c0 and ``grad_<weight name>``. Its manifest entry carries the layer's
configuration. A results file holds y, h_T, c_T and, optionally, every ``grad_`` tensor, in the vector's dtype:
one documented name per tensor, nothing else.

Format version 2 (this one) has one kind of vector. Version 1 kept the cell's vectors apart (W, h0 (B, H), h_seq,
grad_W, ...) and named the layer's ``layer-<case>-<dtype>``: a version-1 manifest is refused with what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from contract.vocabulary import CONFORMANCE_DTYPES
from spec.cases import CASES_BY_NAME, CaseData, RENAMED_LAYER_CASES
from spec.weights_file import layer_tensor_names

FORMAT = "lstm-conformance-golden"
FORMAT_VERSION = "2"
OUTPUTS = ("y", "h_T", "c_T")
INPUT_GRADIENTS = ("x", "h0", "c0")
CHANGED_IN_VERSION_2 = (
    "format version 2 has one kind of vector, the layer's (the cell is its one-layer case): a cell vector's W is now "
    "layer0.forward.W (U, b, p alike), h0 and c0 are (1, B, H), dh_seq is dy, its results are y (was h_seq), h_T and "
    "c_T (1, B, H) and grad_layer0.forward.W (was grad_W); layer vectors lost their 'layer-' prefix "
    "(layer-lstmp-stack-float64 is lstmp-stack-float64) and the layer case 'medium' is now "
    f"{RENAMED_LAYER_CASES['medium']!r}: export the vectors again (python -m conformance.golden export DIR) and run "
    "your implementation on them"
)


class GoldenError(Exception):
    """A golden directory or manifest that cannot be used at all: the message names the file and says why."""


def vector_id(case_name: str, dtype: str) -> str:
    return f"{case_name}-{dtype}"


def fingerprint(data: CaseData) -> str:
    """Identifies a vector by everything that goes into it (how results are matched to what the suite runs): the
    layer's configuration, every parameter, the inputs and the lengths or mask."""
    digest = hashlib.sha256(repr(dataclasses.astuple(data.layer)).encode())
    arrays = {**data.params.tensors(), **data.inputs()}
    arrays.update({name: value for name, value in (("lengths", data.lengths), ("mask", data.mask)) if value is not None})
    for name, value in sorted(arrays.items()):
        digest.update(name.encode() + str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def weight_names(data: CaseData) -> dict[str, str]:
    """The suite's name of every parameter tensor ('layer 0 direction 0 W') -> its name in vector files ('layer0.forward.W')."""
    return layer_tensor_names(data.params, data.layer.direction)


def gradient_names(data: CaseData) -> dict[str, str]:
    """The suite's name of every gradient (contract.answers.Gradients.tensors) -> its name in a results file."""
    names = {name: f"grad_{name}" for name in INPUT_GRADIENTS}
    names.update({name: f"grad_{file_name}" for name, file_name in weight_names(data).items()})
    return names


def vector_tensors(data: CaseData, outputs: dict[str, np.ndarray], gradients: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A vector's file: the inputs in their dtype, the spec's answers (``outputs``, ``gradients``: float64, by the suite's
    names) under the file's names."""
    names = weight_names(data)
    tensors = {names[name]: value for name, value in data.params.tensors().items()}
    tensors.update({**data.inputs(), **data.cotangents(), **outputs})
    tensors.update({name: getattr(data, name) for name in ("lengths", "mask") if getattr(data, name) is not None})
    file_names = gradient_names(data)
    tensors.update({file_names[name]: value for name, value in gradients.items()})
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


def vector_entry(data: CaseData) -> dict:
    case, dtype = data.case, str(data.x.dtype)
    vid = vector_id(case.name, dtype)
    return {"id": vid, "case": case.name, "dtype": dtype, "seed": case.seed, "T": case.T, "B": case.B, "I": case.I,
            "H": case.H, "P": case.P, "L": case.L, "D": case.D, "config": dataclasses.asdict(case.layer),
            "lengths": None if data.lengths is None else data.lengths.tolist(), "mask": data.mask is not None,
            "file": f"vectors/{vid}.safetensors", "inputs_sha256": fingerprint(data)}


_VECTOR_FIELDS = {"id": str, "case": str, "dtype": str, "inputs_sha256": str}


def read_manifest(path: Path) -> dict:
    """The manifest of a golden directory, checked; GoldenError naming the file and what is wrong."""
    if not path.is_file():
        raise GoldenError(f"--results {path.parent}: no manifest.json (export one with python -m conformance.golden export DIR)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise GoldenError(f"{path}: not a readable JSON manifest ({error})") from None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT and manifest.get("format_version") == "1":
        raise GoldenError(f"{path}: a manifest of format version 1; this suite reads version {FORMAT_VERSION}: {CHANGED_IN_VERSION_2}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise GoldenError(f"{path}: not a {FORMAT} manifest of version {FORMAT_VERSION}")
    vectors = manifest.get("vectors")
    if not isinstance(vectors, list) or not vectors:
        raise GoldenError(f"{path}: 'vectors' must be a non-empty list of vectors, got {type(vectors).__name__}")
    for k, vector in enumerate(vectors):
        if not isinstance(vector, dict):
            raise GoldenError(f"{path}: vectors[{k}] is not an object")
        for name, kind in _VECTOR_FIELDS.items():
            if not isinstance(vector.get(name), kind):
                raise GoldenError(f"{path}: vectors[{k}] ({vector.get('id', '?')}) has no valid {name!r} (got {vector.get(name)!r})")
        if vector["dtype"] not in CONFORMANCE_DTYPES:
            raise GoldenError(f"{path}: vectors[{k}] ({vector['id']}) has dtype {vector['dtype']!r}, not one of "
                              f"{[str(d) for d in CONFORMANCE_DTYPES]}")
        # An entry's id names its result file: one that is not its case's would read another vector's results.
        expected_id = vector_id(vector["case"], vector["dtype"])
        if vector["id"] != expected_id:
            raise GoldenError(f"{path}: vectors[{k}] has id {vector['id']!r}; its case {vector['case']!r}, "
                              f"{vector['dtype']}, is vector {expected_id!r}")
        if vector["case"] not in CASES_BY_NAME:
            raise GoldenError(f"{path}: vectors[{k}] ({vector['id']}) is of case {vector['case']!r}, which the suite does "
                              f"not have (the cases are {sorted(CASES_BY_NAME)})")
    ids = [vector["id"] for vector in vectors]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise GoldenError(f"{path}: vector ids listed more than once: {repeated}")
    return manifest


__all__ = [
    "CHANGED_IN_VERSION_2", "FORMAT", "FORMAT_VERSION", "GoldenError", "INPUT_GRADIENTS", "OUTPUTS", "fingerprint",
    "gradient_names", "read_manifest", "vector_entry", "vector_id", "vector_tensors", "weight_names",
]
