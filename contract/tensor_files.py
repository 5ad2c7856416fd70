"""safetensors with bfloat16, for NumPy: the one encoding of arrays in the project's files and frames.

safetensors' NumPy API has no bfloat16 (NumPy has none; ``safetensors.numpy.save`` raises ``KeyError: 'BF16'``),
while the format itself has had the BF16 dtype from the start and every other reader (safetensors.torch, the Rust
and C++ loaders a kernel author uses) reads it. So a bfloat16 array, an ``ml_dtypes.bfloat16`` array in NumPy, is
written as what it is: its raw 16-bit patterns, under the header dtype ``BF16``. Mechanically, the array goes to
safetensors as a uint16 view and the header's dtype is then set to BF16; reading reverses both. Every other dtype
is safetensors' own, untouched. Nothing is pickled, and a file's header is checked before any tensor is read.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load as _load
from safetensors.numpy import save as _save

__all__ = ["load", "load_file", "load_metadata", "save", "save_file"]

_HEADER_LENGTH = struct.Struct("<Q")


def _bfloat16() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _is_bfloat16(array: np.ndarray) -> bool:
    return array.dtype.name == "bfloat16"


def _split(data: bytes) -> tuple[dict, bytes]:
    if len(data) < _HEADER_LENGTH.size:
        raise ValueError(f"not a safetensors file: {len(data)} bytes, shorter than its header's length")
    (length,) = _HEADER_LENGTH.unpack_from(data)
    if length > len(data) - _HEADER_LENGTH.size:
        raise ValueError(f"not a safetensors file: its header claims {length} bytes of {len(data)}")
    header = json.loads(data[_HEADER_LENGTH.size:_HEADER_LENGTH.size + length])
    return header, data[_HEADER_LENGTH.size + length:]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes, padding the header with spaces
    return _HEADER_LENGTH.pack(len(text)) + text + body


def save(arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes of ``arrays``; bfloat16 ones under the dtype BF16."""
    halves = {name for name, array in arrays.items() if _is_bfloat16(np.asarray(array))}
    plain = {name: (np.asarray(a).view(np.uint16) if name in halves else a) for name, a in arrays.items()}
    data = _save(plain, metadata=metadata)
    if not halves:
        return data
    header, body = _split(data)
    for name in halves:
        header[name]["dtype"] = "BF16"
    return _join(header, body)


def load(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of safetensors bytes; BF16 tensors as ``ml_dtypes.bfloat16`` arrays."""
    header, body = _split(data)
    halves = {name for name, entry in header.items() if name != "__metadata__" and entry.get("dtype") == "BF16"}
    if not halves:
        return _load(data)
    for name in halves:
        header[name]["dtype"] = "U16"
    arrays = _load(_join(header, body))
    for name in halves:
        arrays[name] = arrays[name].view(_bfloat16())
    return arrays


def load_metadata(path: str | Path) -> dict[str, str]:
    """A file's ``__metadata__`` (empty if it has none), from its header alone."""
    with open(path, "rb") as file:
        head = file.read(_HEADER_LENGTH.size)
        if len(head) < _HEADER_LENGTH.size:
            raise ValueError(f"not a safetensors file: {len(head)} bytes, shorter than its header's length")
        (length,) = _HEADER_LENGTH.unpack(head)
        text = file.read(min(length, 100_000_000))
    if len(text) < length:
        raise ValueError(f"not a safetensors file: its header claims {length} bytes, the file has {len(text)} after it")
    metadata = json.loads(text).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"__metadata__ must be an object of strings, got {type(metadata).__name__}")
    return metadata


def save_file(arrays: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    Path(path).write_bytes(save(arrays, metadata))


def load_file(path: str | Path) -> dict[str, np.ndarray]:
    return load(Path(path).read_bytes())
