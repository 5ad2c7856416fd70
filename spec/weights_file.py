"""The shared weight file: one canonical parameter set in safetensors.

A weight file holds the tensors of :class:`spec.params.LSTMParams` under their
names (``W``, ``U``, ``b`` and, for the peephole variant, ``p``) and this
metadata, all strings, as safetensors requires:

    format              "lstm-conformance-weights"
    format_version      "1"
    gate_order          "i,f,g,o"      (axis 0 of W, U, b)
    peephole_gate_order "i,f,o"        (axis 0 of p; peephole variant only)
    variant             "standard" or "peephole"
    input_size          I, in decimal: 1 to 9 ASCII digits, no sign, space or leading zero
    hidden_size         H, likewise

safetensors stores an 8-byte little-endian header length N, N bytes of JSON
(each tensor's dtype, shape and data_offsets, relative to the end of the
header, and the ``__metadata__`` strings) and the raw little-endian buffers.
:func:`load_weights` reads that itself and checks it before reading any
tensor: the header length against the file, the JSON, and each tensor's
offsets against the data, its dtype and shape and its neighbours (packed, as
safetensors requires: no overlap, no gap, nothing after the last tensor).
Then it checks everything above and reads each tensor once, straight into
its array, so loading needs about the file's size in memory. It only ever
looks at bytes: nothing is unpickled or run, and a pickle, a zip archive (as
torch.save writes), a NumPy file or an HDF5 file is named as such. Every
rejection names the file, the tensor (or "header", "file" or metadata key),
what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np
from safetensors.numpy import save_file

from spec.params import GATES, PEEPHOLE_GATES, LSTMParams
from spec.validation import LSTMInputError, format_shape

FORMAT = "lstm-conformance-weights"
FORMAT_VERSION = "1"
VARIANTS = ("standard", "peephole")
# safetensors' names for the dtypes the spec computes in; the file stores them little-endian.
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}
# safetensors' own limit: JSON parsed into Python objects takes many times its size in memory.
_MAX_HEADER = 100_000_000
_SIZE = re.compile(r"[1-9][0-9]{0,8}")
_SIZE_RULE = "a positive integer: 1 to 9 ASCII digits, no sign, space or leading zero"
_NOT_SAFETENSORS = "not a readable safetensors file"
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
# Leading bytes of the files people most often pass by mistake.
_SIGNATURES = (
    *((bytes([0x80, protocol]), f"a pickle (protocol {protocol}), as torch.save wrote before torch 1.6") for protocol in range(2, 6)),
    (b"PK\x03\x04", "a zip archive, as torch.save (since torch 1.6) and numpy.savez write"),
    (b"\x93NUMPY", "a NumPy .npy file, as numpy.save writes"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, as h5py and Keras write"),
)
_CONVERT = (
    "this loader reads safetensors only and never unpickles; convert where you trust the file: "
    "load it with the library that wrote it, then spec.save_weights(path, spec.LSTMParams(W, U, b[, p]))"
)


class WeightFileError(LSTMInputError):
    """A weight file that cannot be used as it is; the message names the file and the tensor or key."""

    def __init__(self, path: str, tensor: str, problem: str, expected: object, actual: object, hint: str = ""):
        self.path = path
        super().__init__(tensor, problem, expected, actual, hint)
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
    try:
        mode = os.stat(where).st_mode
        if not stat.S_ISREG(mode):
            # Checked before opening: opening a FIFO would wait for a writer.
            kind = next((name for is_kind, name in _NOT_REGULAR if is_kind(mode)), "another kind of file")
            raise WeightFileError(where, "file", "cannot read", "a regular file", f"not a regular file: {kind}")
        with open(where, "rb") as stream:
            entries, meta, data_start = _read_header(where, stream, os.fstat(stream.fileno()).st_size)
            sizes = _check_metadata(where, meta)
            _check_layout(where, {n: (e["dtype"], tuple(e["shape"])) for n, e in entries.items()}, sizes)
            tensors = {name: _read_tensor(where, stream, data_start, name, entry) for name, entry in entries.items()}
    except FileNotFoundError:
        raise WeightFileError(where, "file", "cannot read", "an existing safetensors file", "no such file") from None
    except OSError as error:
        raise WeightFileError(where, "file", "cannot read", "a readable file", error.strerror or str(error)) from error
    for name, tensor in tensors.items():
        if not np.isfinite(tensor).all():
            index = tuple(int(k) for k in np.argwhere(~np.isfinite(tensor))[0])
            raise WeightFileError(where, name, "non-finite value", "finite values", f"{tensor[index]!r} at index {index}")
    return LSTMParams(**tensors)


def _read_header(where: str, stream: BinaryIO, size: int) -> tuple[dict[str, dict], dict | None, int]:
    """Read and check the safetensors header; return its tensor entries, its metadata and where the data starts."""
    head = stream.read(9)  # the header length and the header's first byte
    # A safetensors header length can begin with these bytes too (640 is 80 02 00 ...),
    # but then the JSON header follows at byte 8, and it starts with "{".
    foreign = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if foreign and head[8:9] != b"{":
        raise WeightFileError(where, "file", _NOT_SAFETENSORS, "a safetensors file", foreign, _CONVERT)
    if size < 8:
        raise WeightFileError(where, "header", _NOT_SAFETENSORS, "at least the 8 bytes of the header length", f"{size} bytes")
    length = int.from_bytes(head[:8], "little")
    if length > size - 8:
        raise WeightFileError(
            where, "header", f"{_NOT_SAFETENSORS}: header length beyond the file", f"at most {size - 8} bytes (the rest of the file)", f"{length} bytes"
        )
    if length > _MAX_HEADER:
        raise WeightFileError(where, "header", f"{_NOT_SAFETENSORS}: header too large", f"at most {_MAX_HEADER} bytes", f"{length} bytes")
    stream.seek(8)
    try:
        header = json.loads(stream.read(length).decode("utf-8"), object_pairs_hook=_without_duplicates)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WeightFileError(where, "header", f"{_NOT_SAFETENSORS}: malformed JSON", "a JSON object in UTF-8", str(error)) from None
    if not isinstance(header, dict):
        raise WeightFileError(where, "header", f"{_NOT_SAFETENSORS}: malformed JSON", "a JSON object", _show(header))
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise WeightFileError(where, "header", f"{_NOT_SAFETENSORS}: malformed __metadata__", "an object of strings", _show(meta))
    for name, entry in header.items():
        if not _is_entry(entry):
            raise WeightFileError(
                where, name, f"{_NOT_SAFETENSORS}: malformed header entry",
                '{"dtype": "F64", "shape": [...], "data_offsets": [begin, end]} with integers >= 0', _show(entry),
            )
    _check_offsets(where, header, size - 8 - length)
    return header, meta, 8 + length


def _check_offsets(where: str, entries: Mapping[str, dict], data_size: int) -> None:
    # Packed, as safetensors requires: a gap could hide another file in this one, an
    # overlap would let two tensors share bytes, and no tensor reads past the data.
    packed_to, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        found = f"data_offsets [{begin}, {end}]"
        if not begin <= end <= data_size:
            raise WeightFileError(
                where, name, f"{_NOT_SAFETENSORS}: data_offsets out of bounds", f"0 <= begin <= end <= {data_size} (the data's size)", found
            )
        dtype = _DTYPES.get(entry["dtype"])  # other dtypes are rejected later, by name
        if dtype is not None and end - begin != dtype.itemsize * math.prod(entry["shape"]):
            raise WeightFileError(
                where, name, f"{_NOT_SAFETENSORS}: byte size disagrees with dtype and shape",
                f"{dtype.itemsize * math.prod(entry['shape'])} bytes ({entry['dtype']} x {format_shape(entry['shape'])})",
                f"{end - begin} bytes, {found}",
            )
        if begin != packed_to:
            problem = "data overlaps the tensor before it" if begin < packed_to else "gap before its data"
            after = f"the end of {previous!r}" if previous else "the start of the data"
            raise WeightFileError(where, name, f"{_NOT_SAFETENSORS}: {problem}", f"a begin of {packed_to} ({after})", found)
        packed_to, previous = end, name
    if packed_to != data_size:
        raise WeightFileError(
            where, "header", f"{_NOT_SAFETENSORS}: bytes after the last tensor", f"{packed_to} bytes of data (the last tensor's end)", f"{data_size} bytes"
        )


def _read_tensor(where: str, stream: BinaryIO, data_start: int, name: str, entry: Mapping) -> np.ndarray:
    dtype, shape = _DTYPES[entry["dtype"]], tuple(entry["shape"])
    stream.seek(data_start + entry["data_offsets"][0])
    # Straight from the file into the array: no memory map or bytes object beside it.
    tensor = np.fromfile(stream, dtype=dtype, count=math.prod(shape))
    if tensor.size != math.prod(shape):  # the file shrank after its header was checked
        raise WeightFileError(where, name, "cannot read", f"{math.prod(shape)} values", f"{tensor.size} values")
    # The spec computes in native byte order; a no-op on little-endian machines.
    return tensor.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of two equal keys; safetensors forbids them, and readers could disagree on which wins.
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _is_entry(entry: object) -> bool:
    def naturals(value: object) -> bool:
        return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)  # no bools

    return (
        isinstance(entry, dict)
        and isinstance(entry.get("dtype"), str)
        and naturals(entry.get("shape"))
        and naturals(entry.get("data_offsets"))
        and len(entry["data_offsets"]) == 2
    )


def _show(value: object) -> str:
    """repr(value), cut short: a broken or hostile file must not flood the message."""
    if isinstance(value, str) and len(value) > 40:
        return f"a string of {len(value)} characters starting {value[:20]!r}"
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


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
            raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", repr(want), _show(meta.get(key)))
    variant = meta.get("variant")
    if variant not in VARIANTS:
        raise WeightFileError(where, "metadata 'variant'", "wrong or missing value", " or ".join(map(repr, VARIANTS)), _show(variant))
    peephole = variant == "peephole"
    if peephole and meta.get("peephole_gate_order") != ",".join(PEEPHOLE_GATES):
        raise WeightFileError(
            where, "metadata 'peephole_gate_order'", "wrong or missing value", repr(",".join(PEEPHOLE_GATES)), _show(meta.get("peephole_gate_order"))
        )
    sizes = []
    for key in ("input_size", "hidden_size"):
        value = meta.get(key)
        # Not str.isdigit() then int(): isdigit() takes "³", which int() refuses, int() takes
        # signs and spaces, and it refuses more than 4300 digits.
        if value is None or not _SIZE.fullmatch(value):
            raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", _SIZE_RULE, _show(value))
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
    for name, want in shapes.items():  # W first: the others are compared with it
        dtype, shape = layout[name]
        if dtype not in _DTYPES:
            raise WeightFileError(where, name, "unsupported dtype", "F64 or F32", dtype)
        if dtype != file_dtype:
            raise WeightFileError(where, name, "dtype differs from W's", file_dtype, dtype)
        if shape != want:
            raise WeightFileError(where, name, "wrong shape", format_shape(want), format_shape(shape))
