"""The shared weight file: canonical parameters in safetensors.

Version 1 holds one cell, :class:`spec.params.LSTMParams`, under the names
``W``, ``U``, ``b`` and, for the peephole variant, ``p``. Version 2 holds a
stack of layers and directions, :class:`spec.params.LayerParams`: every cell's
tensors under ``layer<l>.<forward|reverse>.<tensor>``, where l counts from 0
(decimal, no leading zero), the middle word says which way that cell runs in
time, and the tensor is ``W``, ``U``, ``b``, ``p`` (peephole variant),
``W_hr`` (projection), ``b_hr`` (the projection's bias) or ``ln`` (layer
normalization's coefficients). A bidirectional layer l has ``layer<l>.forward.*``
(direction 0 of :class:`LayerParams`) and ``layer<l>.reverse.*`` (direction 1);
a reverse-only stack has only ``layer<l>.reverse.*``, so the names say what
the metadata say. Shapes, with P = proj_size (P = H without a projection) and
D the number of directions:

    W     (4, H, I) in layer 0, (4, H, D * P) in layers >= 1 (all directions of the layer below, forward first)
    U     (4, H, P)
    b     (4, H)
    p     (3, H)      peephole variant only
    W_hr  (P, H)      with a projection only
    b_hr  (P,)        with proj_bias "1" only
    ln    (4, H)      with layer_norm "1" only (gates i, f, g, o)

The metadata, all strings, as safetensors requires (version 2 adds the last seven):

    format               "lstm-conformance-weights"
    format_version       "1" or "2"
    gate_order           "i,f,g,o"      (axis 0 of W, U, b)
    peephole_gate_order  "i,f,o"        (axis 0 of p; peephole variant only)
    variant              "standard" or "peephole"
    input_size           I, in decimal: 1 to 9 ASCII digits, no sign, space or leading zero
    hidden_size          H, likewise
    proj_size            P, likewise, or "none" without a projection
    num_layers           L, likewise
    direction            "forward", "reverse" or "bidirectional"
    num_directions       D: "2" for "bidirectional", else "1" (redundant, so that a port can size its arrays)
    coupled_input_forget "1" with coupled input and forget gates (f = 1 - i, ONNX's input_forget), else "0"
    layer_norm           "1" with layer normalization of the gates (ln), else "0"; absent reads as "0"
    proj_bias            "1" with a projection bias (b_hr; needs a projection), else "0"; absent reads as "0"
                         (the last two came after the first version-2 files, which hold neither)

With coupled gates the forget gate's own weights (index 1 on axis 0 of W, U,
b and p) take no part in the computation; the file holds them as they were
given (so a round trip is exact) and the loader asks only that they be finite.
A version-1 file is one forward layer without coupled gates.

The file holds weights and what their layout needs, nothing else: forget_bias,
cell_clip, gate_clip, proj_clip and zero_output_for_mask are run-time settings
of the layer (:class:`spec.layer.LayerConfig`), given when it runs
(:meth:`LayerWeights.config`). Other metadata keys are ignored.

safetensors stores an 8-byte little-endian header length N, N bytes of JSON
(each tensor's dtype, shape and data_offsets, relative to the end of the
header, and the ``__metadata__`` strings) and the raw little-endian buffers.
The loaders read that themselves and check it before reading any tensor: the
header length against the file, the JSON, and each tensor's offsets against
the data, its dtype and shape and its neighbours (packed, as safetensors
requires: no overlap, no gap, nothing after the last tensor). Then they check
everything above (for version 2, num_layers and direction against the tensor
names before listing the names they expect) and read each tensor once,
straight into its array, so loading needs about the file's size in memory.
They only ever look at bytes: nothing is unpickled or run, and a pickle, a zip
archive (as torch.save writes), a NumPy file or an HDF5 file is named as such.
Every rejection names the file, the tensor (or "header", "file" or metadata
key), what was expected and what was found.

:func:`save_weights` and :func:`load_weights` write and read version 1;
:func:`save_layer_weights` writes version 2, and :func:`load_layer_weights`
reads both.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, format_shape

FORMAT = "lstm-conformance-weights"
FORMAT_VERSION = "1"  # one cell
LAYER_FORMAT_VERSION = "2"  # a stack of layers and directions
VARIANTS = ("standard", "peephole")
#: The cells of a layer by the way they run, in the order of LayerParams' directions d = 0, 1.
DIRECTION_WORDS = {"forward": ("forward",), "reverse": ("reverse",), "bidirectional": ("forward", "reverse")}
# A version-2 tensor name; the layer index is strict like the sizes, so that one cell has one name.
_CELL_TENSOR = re.compile(r"layer(0|[1-9][0-9]{0,8})\.(forward|reverse)\.(W|U|b|p|W_hr|b_hr|ln)")
_NAME_RULE = "names layer<l>.<forward|reverse>.<W|U|b|p|W_hr|b_hr|ln>"
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
    "load it with the library that wrote it, then spec.save_weights(path, spec.LSTMParams(W, U, b[, p])), "
    "or for a stack spec.save_layer_weights(path, spec.LayerParams(cells, D), direction=...)"
)
_Found = TypeVar("_Found")


class WeightFileError(LSTMInputError):
    """A weight file that cannot be used as it is; the message names the file and the tensor or key."""

    def __init__(self, path: str, tensor: str, problem: str, expected: object, actual: object, hint: str = ""):
        self.path = path
        # A tensor's name comes from the file and can be megabytes long: the message shows it cut short.
        shown = tensor if len(tensor) <= 80 else f"{tensor[:40]}... ({len(tensor)} characters)"
        super().__init__(shown, problem, expected, actual, hint)
        self.tensor = tensor
        self.args = (f"{path}: {self.args[0]}",)


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """What a version-2 file holds: a stack's weights and the two settings that say how they run."""

    params: LayerParams
    direction: str  # "forward", "reverse" or "bidirectional"
    coupled_input_forget: bool = False

    def config(self, **settings: object) -> LayerConfig:
        """The layer's configuration: its architecture from the file, the run-time ``settings``
        (forget_bias, cell_clip, gate_clip, proj_clip, zero_output_for_mask) from the caller."""
        return LayerConfig(
            num_layers=self.params.num_layers,
            direction=self.direction,
            proj_size=self.params.proj_size,
            peephole=self.params.peephole,
            coupled_input_forget=self.coupled_input_forget,
            layer_norm=self.params.layer_norm,
            proj_bias=self.params.proj_bias,
            **settings,
        )


def metadata_for(params: LSTMParams) -> dict[str, str]:
    """The metadata of a version-1 file of ``params``."""
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


def layer_metadata_for(params: LayerParams, direction: str, coupled_input_forget: bool) -> dict[str, str]:
    """The metadata of a version-2 file of ``params``."""
    meta = {
        "format": FORMAT,
        "format_version": LAYER_FORMAT_VERSION,
        "gate_order": ",".join(GATES),
        "variant": "peephole" if params.peephole else "standard",
        "input_size": str(params.input_size),
        "hidden_size": str(params.hidden_size),
        "proj_size": "none" if params.proj_size is None else str(params.proj_size),
        "num_layers": str(params.num_layers),
        "direction": direction,
        "num_directions": str(params.num_directions),
        "coupled_input_forget": "1" if coupled_input_forget else "0",
        "layer_norm": "1" if params.layer_norm else "0",
        "proj_bias": "1" if params.proj_bias else "0",
    }
    if params.peephole:
        meta["peephole_gate_order"] = ",".join(PEEPHOLE_GATES)
    return meta


def cell_tensor_name(layer: int, word: str, tensor: str) -> str:
    """A version-2 tensor name: cell_tensor_name(1, "reverse", "W") is "layer1.reverse.W"."""
    return f"layer{layer}.{word}.{tensor}"


def save_weights(path: str | os.PathLike, params: LSTMParams) -> None:
    """Write one cell, ``params``, to ``path`` as a version-1 file."""
    if not isinstance(params, LSTMParams):
        raise LSTMInputError("params", "wrong type", "spec.LSTMParams", type(params).__name__)
    if params.ln is not None:
        raise LSTMInputError(
            "params.ln", "no layer normalization in a version-1 file", "None", f"an array of shape {format_shape(params.ln.shape)}",
            "write a one-layer stack: spec.save_layer_weights(path, spec.LayerParams((params,)), direction='forward')",
        )
    if params.W_hr is not None:
        # Version 1 has no projection: refuse here rather than write a file that load_weights refuses.
        raise LSTMInputError(
            "params.W_hr", "no projection in a version-1 file", "None", f"an array of shape {format_shape(params.W_hr.shape)}",
            "write a one-layer stack: spec.save_layer_weights(path, spec.LayerParams((params,)), direction='forward')",
        )
    tensors = {name: np.ascontiguousarray(t) for name, t in params.tensors().items()}
    _save(path, tensors, metadata_for(params))


def save_layer_weights(
    path: str | os.PathLike, params: LayerParams, *, direction: str, coupled_input_forget: bool = False
) -> None:
    """Write a stack, ``params``, to ``path`` as a version-2 file.

    ``direction`` says which way each cell runs (LayerParams holds only how many directions there
    are), and ``coupled_input_forget`` whether its forget gate is 1 - i; both are in the file.
    """
    if not isinstance(params, LayerParams):
        raise LSTMInputError("params", "wrong type", "spec.LayerParams", type(params).__name__)
    words = DIRECTION_WORDS.get(direction) if isinstance(direction, str) else None
    if words is None:
        raise LSTMInputError("direction", "invalid value", " or ".join(map(repr, DIRECTION_WORDS)), _show(direction))
    D = params.num_directions
    if len(words) != D:
        fitting = " or ".join(repr(name) for name, w in DIRECTION_WORDS.items() if len(w) == D)
        raise LSTMInputError("direction", "disagrees with params.num_directions", f"{fitting} (num_directions = {D})", repr(direction))
    if not isinstance(coupled_input_forget, (bool, np.bool_)):
        raise LSTMInputError("coupled_input_forget", "wrong type", "True or False", _show(coupled_input_forget))
    named = params.tensors()
    tensors = {file_name: np.ascontiguousarray(named[name]) for name, file_name in layer_tensor_names(params, direction).items()}
    _save(path, tensors, layer_metadata_for(params, direction, bool(coupled_input_forget)))


def _save(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """safetensors' save_file, with a target it cannot write named: save_file writes a temporary file beside
    the target and renames it, so its own error names that temporary file (or no file at all)."""
    where = os.fspath(path)
    folder = os.path.dirname(where) or "."
    if os.path.isdir(where):
        raise WeightFileError(where, "file", "cannot write", "a path to a file", "a directory")
    if not os.path.isdir(folder):
        found = f"{folder} is not a directory" if os.path.exists(folder) else f"no such directory: {folder}"
        raise WeightFileError(where, "file", "cannot write", "a file in an existing directory", found)
    try:
        save_file(tensors, where, metadata=metadata)
    except SafetensorError as error:  # e.g. permission denied, a full disk
        reason = re.sub(r' at path ".*"$', "", str(error))
        raise WeightFileError(where, "file", "cannot write", "a writable file", reason) from None


def layer_tensor_names(params: LayerParams, direction: str) -> dict[str, str]:
    """Each tensor's name in LayerParams.tensors() ("layer 1 direction 0 W") -> its version-2 name
    ("layer1.forward.W"), cell by cell: the one mapping between the two (golden vectors use it too)."""
    words, D = DIRECTION_WORDS[direction], params.num_directions
    return {
        f"{params.cell_name(k)} {name}": cell_tensor_name(k // D, words[k % D], name)
        for k, cell in enumerate(params.cells)
        for name in cell.tensors()
    }


def load_weights(path: str | os.PathLike) -> LSTMParams:
    """Read and validate a version-1 file (one cell); see the module docstring for what is checked."""
    _, tensors = _load(path, _check_cell_file)
    return LSTMParams(**tensors)


def load_layer_weights(path: str | os.PathLike) -> LayerWeights:
    """Read and validate a version-2 file, or a version-1 file as one forward layer without coupled gates."""
    stack, tensors = _load(path, _check_any_file)
    if stack is None:
        return LayerWeights(LayerParams((LSTMParams(**tensors),)), "forward", False)
    return LayerWeights(stack.params(tensors), stack.direction, stack.coupled)


def _load(path: str | os.PathLike, check: Callable[[str, dict[str, str], dict], _Found]) -> tuple[_Found, dict[str, np.ndarray]]:
    """Check the file's header, then ``check(where, metadata, layout)``, then read each tensor once.

    ``layout`` maps each tensor's name to its (safetensors dtype, shape); what ``check`` returns comes back.
    """
    where = os.fspath(path)
    try:
        mode = os.stat(where).st_mode
        if not stat.S_ISREG(mode):
            # Checked before opening: opening a FIFO would wait for a writer.
            kind = next((name for is_kind, name in _NOT_REGULAR if is_kind(mode)), "another kind of file")
            raise WeightFileError(where, "file", "cannot read", "a regular file", f"not a regular file: {kind}")
        with open(where, "rb") as stream:
            entries, meta, data_start = _read_header(where, stream, os.fstat(stream.fileno()).st_size)
            found = check(where, dict(meta or {}), {n: (e["dtype"], tuple(e["shape"])) for n, e in entries.items()})
            tensors = {name: _read_tensor(where, stream, data_start, name, entry) for name, entry in entries.items()}
    except FileNotFoundError:
        raise WeightFileError(where, "file", "cannot read", "an existing safetensors file", "no such file") from None
    except OSError as error:
        raise WeightFileError(where, "file", "cannot read", "a readable file", error.strerror or str(error)) from error
    for name, tensor in tensors.items():
        if not np.isfinite(tensor).all():
            index = tuple(int(k) for k in np.argwhere(~np.isfinite(tensor))[0])
            raise WeightFileError(where, name, "non-finite value", "finite values", f"{tensor[index]!r} at index {index}")
    return found, tensors


def foreign_format(head: bytes) -> str | None:
    """What a file's first 9 bytes say it is, among the files people most often pass for safetensors (a pickle,
    a zip archive as torch.save writes, a NumPy file, an HDF5 file), or None. Only bytes are looked at: the
    one recogniser of this loader and of the porting command (tools/port.py)."""
    # A safetensors header length can begin with these bytes too (640 is 80 02 00 ...),
    # but then the JSON header follows at byte 8, and it starts with "{".
    if head[8:9] == b"{":
        return None
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _read_header(where: str, stream: BinaryIO, size: int) -> tuple[dict[str, dict], dict | None, int]:
    """Read and check the safetensors header; return its tensor entries, its metadata and where the data starts."""
    head = stream.read(9)  # the header length and the header's first byte
    foreign = foreign_format(head)
    if foreign:
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


@dataclass(frozen=True)
class _Common:
    """What the metadata of either version say."""

    version: str
    I: int
    H: int
    peephole: bool


@dataclass(frozen=True)
class _Stack:
    """What the metadata of a version-2 file say."""

    I: int
    H: int
    P: int | None  # None without a projection
    peephole: bool
    L: int
    direction: str
    coupled: bool
    layer_norm: bool = False
    proj_bias: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        return DIRECTION_WORDS[self.direction]

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("W", "U", "b") + (("p",) if self.peephole else ()) + (("W_hr",) if self.P is not None else ())
                + (("ln",) if self.layer_norm else ()) + (("b_hr",) if self.proj_bias else ()))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, cell by cell; W_hr before U, as it fixes U's width P."""
        H, D, P = self.H, len(self.words), self.P or self.H
        shapes = {}
        for l in range(self.L):
            cell = {"W": (4, H, self.I if l == 0 else D * P), "W_hr": (P, H), "U": (4, H, P), "b": (4, H), "p": (3, H),
                    "ln": (4, H), "b_hr": (P,)}
            for word in self.words:
                shapes.update({cell_tensor_name(l, word, kind): shape for kind, shape in cell.items() if kind in self.kinds})
        return shapes

    def describe(self) -> str:
        """The tensors expected, and the metadata that say so."""
        variant = "peephole" if self.peephole else "standard"
        proj_size = "none" if self.P is None else str(self.P)
        return (
            f"{', '.join(self.kinds)} of each cell, layers 0 to {self.L - 1}, {' and '.join(self.words)}, as the metadata say "
            f"(variant {variant!r}, proj_size {proj_size!r}, num_layers '{self.L}', direction {self.direction!r}, "
            f"layer_norm '{int(self.layer_norm)}', proj_bias '{int(self.proj_bias)}')"
        )

    def sizes(self) -> str:
        """Where the expected shapes come from, for a wrong shape's message."""
        P = f"proj_size P = {self.P}" if self.P else f"P = H = {self.H} (no projection)"
        below = f"; layers >= 1 read D * P = {len(self.words) * (self.P or self.H)}" if self.L > 1 else ""
        return f"sizes from the metadata: input_size I = {self.I}, hidden_size H = {self.H}, {P}{below}"

    def params(self, tensors: Mapping[str, np.ndarray]) -> LayerParams:
        cells = tuple(
            LSTMParams(**{kind: tensors[cell_tensor_name(l, word, kind)] for kind in self.kinds})
            for l in range(self.L)
            for word in self.words
        )
        return LayerParams(cells, len(self.words))


def _check_cell_file(where: str, meta: Mapping[str, str], layout: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """load_weights: version 1 only."""
    _check_cell_layout(where, layout, _check_common(where, meta, (FORMAT_VERSION,)))


def _check_any_file(where: str, meta: Mapping[str, str], layout: Mapping[str, tuple[str, tuple[int, ...]]]) -> _Stack | None:
    """load_layer_weights: version 2, or version 1 (then None)."""
    common = _check_common(where, meta, (FORMAT_VERSION, LAYER_FORMAT_VERSION))
    if common.version == FORMAT_VERSION:
        _check_cell_layout(where, layout, common)
        return None
    stack = _check_stack_metadata(where, meta, common)
    _check_stack_layout(where, layout, stack)
    return stack


def _check_common(where: str, meta: Mapping[str, str], versions: tuple[str, ...]) -> _Common:
    """The metadata both versions share, checked in this order."""
    _choice(where, meta, "format", (FORMAT,))
    hint = "a version-2 file holds a stack of layers: read it with spec.load_layer_weights" if meta.get("format_version") == LAYER_FORMAT_VERSION else ""
    version = _choice(where, meta, "format_version", versions, hint)
    _choice(where, meta, "gate_order", (",".join(GATES),))
    peephole = _choice(where, meta, "variant", VARIANTS) == "peephole"
    if peephole:
        _choice(where, meta, "peephole_gate_order", (",".join(PEEPHOLE_GATES),))
    return _Common(version, _size(where, meta, "input_size"), _size(where, meta, "hidden_size"), peephole)


def _check_stack_metadata(where: str, meta: Mapping[str, str], common: _Common) -> _Stack:
    P = _size(where, meta, "proj_size", none=True)
    L = _size(where, meta, "num_layers")
    direction = _choice(where, meta, "direction", tuple(DIRECTION_WORDS))
    D = len(DIRECTION_WORDS[direction])
    _choice(where, meta, "num_directions", (str(D),), f"as metadata 'direction' is {direction!r}")
    coupled = _choice(where, meta, "coupled_input_forget", ("0", "1")) == "1"
    # Absent in the files written before the two features: "0".
    layer_norm = _choice(where, {"layer_norm": "0", **meta}, "layer_norm", ("0", "1")) == "1"
    proj_bias = _choice(where, {"proj_bias": "0", **meta}, "proj_bias", ("0", "1")) == "1"
    if proj_bias and P is None:
        raise WeightFileError(where, "metadata 'proj_bias'", "a projection bias without a projection",
                              "'0' (proj_size is 'none')", repr("1"))
    return _Stack(common.I, common.H, P, common.peephole, L, direction, coupled, layer_norm, proj_bias)


def _choice(where: str, meta: Mapping[str, str], key: str, allowed: tuple[str, ...], hint: str = "") -> str:
    value = meta.get(key)
    if value not in allowed:
        raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", " or ".join(map(repr, allowed)), _show(value), hint)
    return value


def _size(where: str, meta: Mapping[str, str], key: str, *, none: bool = False) -> int | None:
    """A strict positive integer; with ``none``, "none" is allowed too (and read as None)."""
    value = meta.get(key)
    if none and value == "none":
        return None
    # Not str.isdigit() then int(): isdigit() takes "³", which int() refuses, int() takes
    # signs and spaces, and it refuses more than 4300 digits.
    if value is None or not _SIZE.fullmatch(value):
        raise WeightFileError(where, f"metadata '{key}'", "wrong or missing value", ("'none' or " if none else "") + _SIZE_RULE, _show(value))
    return int(value)


def _check_cell_layout(where: str, layout: Mapping[str, tuple[str, tuple[int, ...]]], common: _Common) -> None:
    I, H = common.I, common.H
    shapes = {"W": (4, H, I), "U": (4, H, H), "b": (4, H)}
    if common.peephole:
        shapes["p"] = (3, H)
    _check_layout(where, layout, shapes, f"tensors {sorted(shapes)}")


def _check_stack_layout(where: str, layout: Mapping[str, tuple[str, tuple[int, ...]]], stack: _Stack) -> None:
    cells = []
    for name in sorted(layout):  # sorted: the same file always gets the same message
        match = _CELL_TENSOR.fullmatch(name)
        if match is None:
            raise WeightFileError(where, name, "unexpected tensor", _NAME_RULE, _show(name))
        cells.append((int(match[1]), match[2]))
    layers, words = {layer for layer, _ in cells}, {word for _, word in cells}
    # num_layers and direction against the names present, before the names expected are listed
    # (a num_layers of 999999999 must not make a list that long): a wrong count names its key.
    if layers and layers == set(range(len(layers))) and len(layers) != stack.L:
        raise WeightFileError(
            where, "metadata 'num_layers'", "disagrees with the tensors",
            f"{str(len(layers))!r} (the file holds layers 0 to {len(layers) - 1})", repr(str(stack.L)),
        )
    if stack.L > len(layers):  # some layer below L has no tensor at all; name its first
        layer = min(set(range(len(layers) + 1)) - layers)
        raise WeightFileError(where, cell_tensor_name(layer, stack.words[0], "W"), "missing tensor", stack.describe(), f"no tensor of layer {layer}")
    if words != set(stack.words):
        held = next(name for name, w in DIRECTION_WORDS.items() if set(w) == words)
        raise WeightFileError(
            where, "metadata 'direction'", "disagrees with the tensors",
            f"{held!r} (the file holds {' and '.join(sorted(words))} cells)", repr(stack.direction),
        )
    _check_layout(where, layout, stack.shapes(), stack.describe(), stack.sizes())


def _check_layout(
    where: str, layout: Mapping[str, tuple[str, tuple[int, ...]]], shapes: Mapping[str, tuple[int, ...]], names: str, sizes: str = ""
) -> None:
    """The tensors present against ``shapes`` (the first one's dtype is the file's); ``names`` says which are expected."""
    missing = sorted(set(shapes) - set(layout))
    if missing:
        raise WeightFileError(where, missing[0], "missing tensor", names, f"tensors {_show(sorted(layout))}")
    unexpected = sorted(set(layout) - set(shapes))
    if unexpected:
        raise WeightFileError(where, unexpected[0], "unexpected tensor", names, f"tensors {_show(sorted(layout))}")
    first = next(iter(shapes))
    file_dtype = layout[first][0]
    for name, want in shapes.items():  # the first is compared with itself: the others with it
        dtype, shape = layout[name]
        if dtype not in _DTYPES:
            raise WeightFileError(where, name, "unsupported dtype", "F64 or F32", dtype)
        if dtype != file_dtype:
            raise WeightFileError(where, name, f"dtype differs from {first}'s", file_dtype, dtype)
        if shape != want:
            raise WeightFileError(where, name, "wrong shape", format_shape(want), format_shape(shape), sizes)
