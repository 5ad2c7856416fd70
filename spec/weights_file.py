"""The shared weight file: one canonical parameter set in safetensors.

A weight file holds the tensors of :class:`spec.params.LSTMParams` under their
names (``W``, ``U``, ``b`` and, for the peephole variant, ``p``) and this
metadata, all strings, as safetensors requires:

    format              "lstm-conformance-weights"
    format_version      "1"
    gate_order          "i,f,g,o"      (axis 0 of W, U, b)
    peephole_gate_order "i,f,o"        (axis 0 of p; peephole variant only)
    variant             "standard" or "peephole"
    input_size          I, in decimal
    hidden_size         H, in decimal

safetensors stores a JSON header and raw little-endian buffers: loading runs
no code and unpickles nothing. :func:`load_weights` checks everything above
and rejects a file with an error naming the tensor, what was expected and
what was found.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from spec.params import GATES, PEEPHOLE_GATES, LSTMParams
from spec.validation import LSTMInputError, format_shape

FORMAT = "lstm-conformance-weights"
FORMAT_VERSION = "1"
VARIANTS = ("standard", "peephole")
# safetensors' names for the dtypes the spec computes in.
_DTYPES = {"F64": np.dtype(np.float64), "F32": np.dtype(np.float32)}


class WeightFileError(LSTMInputError):
    """A weight file that cannot be used as it is; the message names the file and the tensor or key."""

    def __init__(self, path: str, tensor: str, problem: str, expected: object, actual: object):
        self.path = path
        super().__init__(tensor, problem, expected, actual)
        self.args = (f"{path}: {self.args[0]}",)


def metadata_for(params: LSTMParams) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gate_order": ",".join(GATES),
        "variant": params.variant,
        "input_size": str(params.input_size),
        "hidden_size": str(params.hidden_size),
    }
    if params.peephole:
        meta["peephole_gate_order"] = ",".join(PEEPHOLE_GATES)
    return meta


def save_weights(path: str | os.PathLike, params: LSTMParams) -> None:
    """Write ``params`` to ``path`` in the format above."""
    if not isinstance(params, LSTMParams):
        raise LSTMInputError("params", "wrong type", "spec.LSTMParams", type(params).__name__)
    tensors = {name: np.ascontiguousarray(t) for name, t in params.tensors().items()}
    save_file(tensors, os.fspath(path), metadata=metadata_for(params))


def load_weights(path: str | os.PathLike) -> LSTMParams:
    """Read and validate a weight file; see the module docstring for what is checked."""
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise WeightFileError(where, "file", "cannot read", "an existing safetensors file", "no such file")
    try:
        with safe_open(where, framework="np") as handle:
            meta = handle.metadata()
            names = set(handle.keys())
            layout = {n: (handle.get_slice(n).get_dtype(), tuple(handle.get_slice(n).get_shape())) for n in names}
            sizes = _check_metadata(where, meta)
            _check_layout(where, layout, sizes)
            tensors = {n: handle.get_tensor(n) for n in names}
    except SafetensorError as error:
        raise WeightFileError(where, "file", "not a readable safetensors file", "a safetensors header", str(error)) from error
    for name, tensor in tensors.items():
        if not np.isfinite(tensor).all():
            index = tuple(int(k) for k in np.argwhere(~np.isfinite(tensor))[0])
            raise WeightFileError(where, name, "non-finite value", "finite values", f"{tensor[index]!r} at index {index}")
    return LSTMParams(**tensors)


def _check_metadata(where: str, meta: Mapping[str, str] | None) -> tuple[int, int, bool]:
    """Check the metadata; return (I, H, peephole)."""
    meta = dict(meta or {})
    expected = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gate_order": ",".join(GATES),
    }
    for key, want in expected.items():
        if meta.get(key) != want:
            raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", repr(want), repr(meta.get(key)))
    variant = meta.get("variant")
    if variant not in VARIANTS:
        raise WeightFileError(where, "metadata 'variant'", "wrong or missing value", " or ".join(map(repr, VARIANTS)), repr(variant))
    peephole = variant == "peephole"
    if peephole and meta.get("peephole_gate_order") != ",".join(PEEPHOLE_GATES):
        raise WeightFileError(
            where, "metadata 'peephole_gate_order'", "wrong or missing value", repr(",".join(PEEPHOLE_GATES)), repr(meta.get("peephole_gate_order"))
        )
    sizes = []
    for key in ("input_size", "hidden_size"):
        value = meta.get(key)
        if value is None or not value.isdigit() or int(value) < 1:
            raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", "a positive integer", repr(value))
        sizes.append(int(value))
    return sizes[0], sizes[1], peephole


def _check_layout(where: str, layout: Mapping[str, tuple[str, tuple[int, ...]]], sizes: tuple[int, int, bool]) -> None:
    I, H, peephole = sizes
    shapes = {"W": (4, H, I), "U": (4, H, H), "b": (4, H)}
    if peephole:
        shapes["p"] = (3, H)
    missing = sorted(set(shapes) - set(layout))
    if missing:
        raise WeightFileError(where, missing[0], "missing tensor", f"tensors {sorted(shapes)}", f"tensors {sorted(layout)}")
    unexpected = sorted(set(layout) - set(shapes))
    if unexpected:
        raise WeightFileError(where, unexpected[0], "unexpected tensor", f"tensors {sorted(shapes)}", f"tensors {sorted(layout)}")
    file_dtype = layout["W"][0]
    for name in shapes:  # W first: the others are compared with it
        dtype, shape = layout[name]
        if dtype not in _DTYPES:
            raise WeightFileError(where, name, "unsupported dtype", "F64 or F32", dtype)
        if dtype != file_dtype:
            raise WeightFileError(where, name, "dtype differs from W's", file_dtype, dtype)
        if shape != shapes[name]:
            raise WeightFileError(where, name, "wrong shape", format_shape(shapes[name]), format_shape(shape))
