"""Porting an LSTM's weights between frameworks, and proving the port.

    python -m tools.port convert lstm.safetensors lstm.weights.h5             PyTorch state_dict -> Keras
    python -m tools.port convert lstm.weights.h5 lstm.msgpack --layers 2 --direction bidirectional
    python -m tools.port roundtrip lstm.safetensors --via keras,flax,onnx     and back, hop by hop
    python -m tools.port convert lstm.lstm.safetensors lstm.tflite --batch 1  a LiteRT model for one sequence at a time
    python -m tools.port convert lstm.safetensors lstm.xml                    an OpenVINO IR: lstm.xml and lstm.bin

A file's format is read off its suffix (or --from / --to):

    torch   .safetensors   a torch.nn.LSTM's state_dict (weight_ih_l0, weight_hh_l0_reverse, ..., weight_hr_l0)
    keras   .weights.h5    Keras 3's own weights file of the stack of keras.layers.LSTM / Bidirectional layers
                           that the keras rows build (load it with model.load_weights)
    flax    .msgpack       flax.serialization's msgpack of the parameters of the stack of nn.RNN /
                           nn.Bidirectional layers that the flax rows build
    onnx    .onnx          an ONNX model, one LSTM node per layer, the weights as initializers
    spec    .lstm.safetensors   this project's weight file, version 2 (spec/weights_file.py)
    tflite  .tflite        a LiteRT (TFLite) model, one fused UNIDIRECTIONAL_SEQUENCE_LSTM (version 1, float32) per
                           layer and direction, the weights constant buffers (backends/runtimes/litert.py builds it)
    openvino .xml          an OpenVINO IR, the .xml and its .bin beside it: the onnx format's model converted by
                           openvino.convert_model, one LSTMSequence-5 op per layer, the weights f32 constants

What each holds beyond a plain stack of layers and directions: torch a projection; onnx peepholes; spec and tflite
peepholes, a projection, its bias and layer normalization of the gates (the only formats that hold the last two);
keras, flax and openvino nothing more. Coupled gates (f = 1 - i) only ONNX (input_forget) and TFLite (CIFG) hold,
and a coupled file of any format is refused: no other format would compute the same with its weights. Clips are
run-time settings, in no file the port writes: a LiteRT op that sets cell_clip or proj_clip, or an LSTMSequence
that sets clip, is refused rather than ported without them.

Every conversion goes through the canonical parameters with the frameworks' layouts (backends/layouts/:
the source format's ``from_native``, the target's ``to_native``): the one copy of each framework's layout, the
one the conformance rows use and the suite checks. What the target cannot express (a projection into Keras or
ONNX, peepholes into PyTorch) is refused with the layout's reason, nothing dropped. Then the port is proven in
the suite's terms: the target file is read back and must give the same canonical parameters, bit for bit; and
each file is run as its users run it, loaded by its own framework's loader (``load_state_dict``,
``load_weights``, the flax rows' module's ``apply``, an ONNX Runtime session, LiteRT's interpreter on the
file's bytes, OpenVINO's ``Core.read_model`` and its CPU plugin at an explicit f32 inference precision), through
that framework's runtime (backends/runtimes/: threads, x64 for a float64 flax file), and called on one seeded
random input, compared with the spec (float64, on the source's parameters) and with the other file: worst error in
eps of the dtype, against the suite's tolerance for outputs (contract/compare.py, contract/tolerances.py); the
input is x of (T, B) = (7, 3), or of the batch size that a LiteRT file fixes. Running the files themselves, not
the rows on the parameters read back, is what catches a layout that is wrong both ways (its files read back bit for
bit, and compute something else). The exit status is 0 when everything agrees, 1 when
something does not, 2 when the port is refused.

Keras fixes its backend at its first import: where the port is the first to import it, it asks for the
TensorFlow backend then (``KERAS_BACKEND``, unless already set), and refuses a Keras on another backend.

Biases: PyTorch and ONNX keep two per cell (b_ih and b_hh; Wb and Rb), Keras and flax one, and the canonical
parameters hold the sum b = b_ih + b_hh (rounded once, in the file's dtype). So every format gets the same sums,
and a round trip through Keras or flax gives back b_ih = b, b_hh = 0: the same function, bit for bit the same
canonical parameters, not the same split.

The architecture (layers, direction, sizes, projection, peepholes) is read off the source where the file says
it (PyTorch's names, ONNX's nodes, the spec's metadata); for Keras and flax files, which name layers but not
the direction of a lone reverse layer or its sizes, --layers and --direction say it (sizes come from the
weights). Given with a file that says its own architecture, they may only repeat it: one that contradicts the
file is refused (the file is not read as something else, and the flags are not silently ignored).

LiteRT: a model's state variables are (B, .), so a .tflite is built for one batch size: --batch's, else a LiteRT
source's, else the proof's 3; its input x is (7, B, I), time-major, and its T resizable (the interpreter's
resize_tensor_input). The proof runs the file at that batch size. This project's models say each op's layer and
direction by their tensors' names (layer<l>.<forward|reverse>.<input>); a model from elsewhere is read when it is
one fused op alone (its input and output the model's), as one forward layer. Refused, named: a file that is not a
LiteRT model or is cut short, a model without the fused op (TFLite's converter makes a WHILE loop of Keras 3's
LSTM: its operators are named), an op version other than 1 (hybrid and integer kernels),
weights that are not constant float32 tensors (quantized, or dequantized from float16 as the model runs), clips,
CIFG.

OpenVINO: the IR is written with compress_to_fp16=False (openvino.save_model's default stores float32 weights in
f16, silently: never here), and an IR whose weights are stored in f16 is refused (nothing is cast). Peepholes and
coupled gates are refused before anything is written: LSTMSequence-5 has neither, and OpenVINO's ONNX frontend
drops an ONNX LSTM's P and input_forget without a word (findings/openvino_onnx_lstm_peepholes_input_forget_ignored.py),
so the IR would compute another LSTM. An .xml that is not XML (an ONNX or a LiteRT model under that name), an IR
OpenVINO cannot read (a truncated .bin, an XML file that is not an IR: OpenVINO's message without its C++ frames)
and a missing .bin are refused, named.

Files: the command never writes over its source (the same path, or the same file through another path, a
symbolic or a hard link: a file compared with itself proves nothing) and never over an existing file unless
--force says so; a round trip checks every hop's file in --workdir before it writes the first. The target is
written to a temporary file beside it and renamed into place once read back and proven (a file that disagrees
is kept, and the exit status says so); when writing or the proof fails, the temporary file is removed, and a
file that was there before is left as it was. An OpenVINO IR's .bin goes with its .xml through all of this: checked
(never the source, new unless --force), written under a partial name, renamed into place before the .xml, removed
with it. What the target's runtime cannot run is refused before anything is written (ONNX Runtime's and LiteRT's
LSTMs run float32 only, and the port runs OpenVINO's in f32; nothing is cast). A source is checked before its reader
opens it: a file of another kind (a pickle or a zip archive as torch.save writes, a NumPy, HDF5 or safetensors
file under another format's name) is named by its first bytes, nothing unpickled, and an ONNX model under
another name by ONNX's parser once the format's own reader refused it; a GRU or a plain RNN is named by its
gate count. A refused file or argument exits 2 with one line on stderr ("error: ..."); what a target cannot
hold or run is refused on stdout, after the source's description ("refused: ...").
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from safetensors import SafetensorError

from backends.layouts import flax as flax_layouts
from backends.layouts import keras as keras_layouts
from backends.layouts import onnx as onnx_layouts
from backends.layouts import openvino as openvino_layouts
from backends.layouts import tflite as tflite_layouts
from backends.layouts import torch as torch_layouts
from backends.rows import jax as jax_rows
from backends.rows import keras as keras_rows
from backends.runtimes import litert
from backends.runtimes import openvino as openvino_runtime
from backends.runtimes.jax import FLAX
from backends.runtimes.keras import keras as import_keras
from backends.runtimes.onnx import layer_model, with_initializers
from backends.runtimes.onnxruntime import ONNXRUNTIME
from backends.runtimes.torch import TORCH, torch
from contract.compare import compare
from contract.errors import NotSupported, Unavailable
from contract.layout import CANONICAL, Layout
from contract.runtime import framework_problem
from contract.tolerances import tolerance
from contract.vocabulary import Device, Kind
from spec import layer as spec_layer
from spec.layer import LayerConfig
from spec.params import LayerParams
from spec.validation import LSTMInputError, format_shape
from spec.weights_file import WeightFileError, foreign_format

EXIT_AGREES, EXIT_DISAGREES, EXIT_REFUSED = 0, 1, 2
#: The proof's input: x (T, B, I). A LiteRT model is built for it (T resizable, B fixed: --batch changes it).
PROOF_T, PROOF_B = 7, 3


@dataclass(frozen=True)
class Architecture:
    """What a layer's weights alone may not say."""

    num_layers: int
    direction: str
    proj_size: int | None = None
    peephole: bool = False
    layer_norm: bool = False  # per-gate layer normalization (LSTMParams.ln): TFLite's alone
    proj_bias: bool = False  # the projection's bias (LSTMParams.b_hr): TFLite's alone

    def config(self) -> LayerConfig:
        return LayerConfig(num_layers=self.num_layers, direction=self.direction, proj_size=self.proj_size, peephole=self.peephole,
                           layer_norm=self.layer_norm, proj_bias=self.proj_bias)

    @staticmethod
    def of(params: LayerParams, direction: str) -> "Architecture":
        return Architecture(params.num_layers, direction, params.proj_size, params.peephole, params.layer_norm, params.proj_bias)

    def describe(self) -> str:
        """The features beyond layers and direction, for the source's line: ", projection 3, peepholes"."""
        return ((f", projection {self.proj_size}" if self.proj_size else "") + (" with its bias" if self.proj_bias else "")
                + (", peepholes" if self.peephole else "") + (", layer normalization" if self.layer_norm else ""))


class PortError(Exception):
    """A file or argument the command cannot use; the message says why."""


class _Unparsable(PortError):
    """A source its format's own parser could not read: perhaps a file of another format under this name."""


SAFETENSORS = "a safetensors file"
ONNX_MODEL = "an ONNX model"
HDF5 = "an HDF5 file"


def _show(names) -> str:
    """Names from a file, sorted and cut short: a hostile file must not flood the message."""
    names = sorted(names, key=str)  # a hostile file's keys need not all be strings
    return repr(names) if len(names) <= 6 else f"{repr(names[:6])[:-1]}, ... ({len(names)} in all)]"


def _first_bytes_kind(path: Path) -> str | None:
    """What a file's first bytes say it is: the weight loader's recogniser (a pickle, a zip archive, a NumPy
    file, an HDF5 file), or a safetensors file (an 8-byte header length, then the JSON header's "{"); None
    for anything else. Bytes only: nothing is parsed, nothing unpickled."""
    with open(path, "rb") as stream:
        head = stream.read(9)
    kind = foreign_format(head)
    if kind is None and len(head) == 9 and head[8:9] == b"{":
        return SAFETENSORS
    return kind


def _is_onnx_model(path: Path) -> bool:
    """Whether a file that another parser refused parses as an ONNX model with a graph of nodes (protobuf has
    no signature to look at; parsing it runs nothing)."""
    try:
        import onnx

        return len(onnx.load_model_from_string(Path(path).read_bytes()).graph.node) > 0
    except Exception:  # noqa: BLE001 - not an ONNX model, or no onnx installed: nothing to name
        return False


def _another_format(path: Path, kind: str, fmt: "Format") -> PortError:
    """A source that is a file of another kind than its format reads, named, with what to do instead."""
    if kind == SAFETENSORS:
        advice = "give --from torch or --from spec, or a name ending .safetensors (torch) or .lstm.safetensors (spec)"
    elif kind == ONNX_MODEL:
        advice = "give --from onnx, or a name ending .onnx"
    elif kind.startswith(HDF5):
        advice = "give --from keras (a Keras weights file), or a name ending .weights.h5"
    else:  # a pickle, a zip archive, a NumPy file: never opened here
        advice = "nothing is unpickled; load it where you trust it with the library that wrote it" + (
            " (torch.load) and save the state_dict with safetensors.torch.save_file(state_dict, path)" if fmt.name == "torch" else "")
    return PortError(f"{path} is {kind}, not {fmt.what}: {advice}")


# ---------------------------------------------------------------------------
# File formats: each reads a file into its framework's native layout and writes it back
# ---------------------------------------------------------------------------


class Format:
    name: str
    layout: Layout  # the framework's layout (backends/layouts/): every conversion of this format
    framework: str  # what loads and runs a file of this format
    suffixes: tuple[str, ...]
    what: str  # what a file of this format is, for the messages
    kind: str | None  # what _first_bytes_kind says of a file of this format (None: nothing)
    read_modules: tuple[str, ...] = ()  # what must import to read a file of this format
    modules: tuple[str, ...] = ()  # and to run it (the proof)
    says_architecture = True  # whether a file says its layers and direction (else --layers and --direction do)
    fixes_batch = False  # whether a file is built for one batch size (its write takes batch=)

    def prepare(self) -> None:
        """What this format's framework needs set in this process before it is first imported (nothing, mostly)."""

    def runtime_problem(self) -> str | None:
        """Why the framework, imported, cannot run a file of this format in this process (None: it can)."""
        return None

    def read(self, path: Path, hint: Architecture | None) -> tuple[LayerParams, Architecture]:
        raise NotImplementedError

    def write(self, path: Path, params: LayerParams, arch: Architecture) -> None:
        raise NotImplementedError

    def run(self, path: Path, arch: Architecture, x, h0, c0) -> dict[str, np.ndarray]:
        """The file loaded by its framework's own loader and called on time-major x (T, B, I), h0 and c0
        (L * D, B, .): y (T, B, D * P), h_T, c_T (L * D, B, .), as NumPy arrays."""
        raise NotImplementedError

    def cannot_run(self, params: LayerParams) -> str | None:
        """Why this format's runtime cannot run these parameters (then no file of them is written or proven)."""
        return None

    def check_holds(self, params: LayerParams, arch: Architecture) -> None:
        """NotSupported, with the layout's reason, when a file of this format cannot hold these parameters: asked
        before anything is written, and before the frameworks are looked for."""
        self.layout.to_native(params, arch.config())

    def suffix_of(self, path: Path) -> str:
        """The suffix of this format that ``path`` ends with, else its first."""
        return next((s for s in self.suffixes if str(path).endswith(s)), self.suffixes[0])

    def companions(self, path: Path) -> tuple[Path, ...]:
        """The files that go with a file of this format, beside it (an OpenVINO IR's .bin): written, checked, placed
        and removed with it."""
        return ()

    def batch_size(self, path: Path) -> int | None:
        """The batch size a file of this format fixes (a LiteRT model's state variables are (B, .)); None: any."""
        return None

    def written(self, path: Path) -> str:
        """What the port chose in writing a file of this format, said after its name ("" when nothing)."""
        return ""


class TorchFormat(Format):
    name, layout, suffixes = "torch", torch_layouts.NN_LSTM, (".safetensors",)
    framework = "torch.nn.LSTM.load_state_dict"
    what, kind, modules = "a safetensors file (a torch.nn.LSTM's state_dict)", SAFETENSORS, ("torch",)
    _NAME = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(0|[1-9][0-9]{0,8})(_reverse)?")
    # torch.nn.LSTM's relatives save the same names; their gate count tells them apart (rows = gates x H).
    _GATES = {1: "a plain RNN (1 gate", 3: "a GRU (3 gates", 4: "an LSTM (4 gates"}

    def read(self, path, hint):
        from safetensors.numpy import load_file

        try:
            state = load_file(str(path))
        except TypeError as error:  # a dtype NumPy lacks: bfloat16
            raise PortError(f"{path}: tensors of a dtype NumPy cannot hold ({error}); the port reads float32 or float64 "
                            "(the spec's dtypes) and casts nothing") from None
        except (SafetensorError, ValueError) as error:
            raise _Unparsable(f"{path}: not a readable safetensors file: {error}") from None
        arch = self._check(path, state)
        return self.layout.from_native(state, arch.config()), arch

    def _check(self, path: Path, state: dict[str, np.ndarray]) -> Architecture:
        """The state_dict's architecture, after every tensor was checked against it: the names of one
        torch.nn.LSTM, 4 gates, one float dtype, the shapes its sizes make."""
        names = {name: self._NAME.fullmatch(name) for name in state}
        unexpected = [name for name, match in names.items() if match is None]
        if not state or unexpected:
            spec = all(re.fullmatch(r"layer\d+\.(forward|reverse)\.\w+", name) for name in unexpected)
            raise PortError(f"{path}: not a torch.nn.LSTM state_dict (names weight_ih_l0, weight_hh_l0, bias_ih_l0, "
                            f"bias_hh_l0, weight_hr_l0, each layer's also with _reverse): "
                            + (f"unexpected tensor(s) {_show(unexpected)}" if state else "no tensors")
                            + ("; the names of this project's weight file: give --from spec, or a name ending .lstm.safetensors"
                               if state and spec else ""))
        layers = 1 + max(int(m.group(2)) for m in names.values())
        reverse = any(m.group(3) for m in names.values())
        sfx = ("", "_reverse") if reverse else ("",)
        with_bias, with_proj = "bias_ih_l0" in state, "weight_hr_l0" in state
        kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if with_bias else ()) + (("weight_hr",) if with_proj else ())
        expected = [f"{kind}_l{l}{s}" for l in range(layers) for s in sfx for kind in kinds]
        missing = [name for name in expected if name not in state]
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            held = f"{layers} layer(s), {'bidirectional' if reverse else 'forward'}, {', '.join(kinds)} in each"
            raise PortError(f"{path}: not the state_dict of one torch.nn.LSTM ({held}, as its names say): "
                            + (f"missing {_show(missing)}" if missing else f"unexpected {_show(extra)}"))
        dtypes = {str(t.dtype) for t in state.values()}
        if len(dtypes) > 1 or not dtypes <= {"float32", "float64"}:
            raise PortError(f"{path}: tensors of dtype {' and '.join(sorted(dtypes))}; the port reads float32 or "
                            "float64 (the spec's dtypes), one for the whole file, and casts nothing")
        w_ih, w_hh = state["weight_ih_l0"], state["weight_hh_l0"]
        if w_ih.ndim != 2 or w_hh.ndim != 2 or (with_proj and state["weight_hr_l0"].ndim != 2):
            raise PortError(f"{path}: weight_ih_l0, weight_hh_l0 (and weight_hr_l0) must be matrices; their shapes are "
                            f"{format_shape(w_ih.shape)}, {format_shape(w_hh.shape)}")
        H = state["weight_hr_l0"].shape[1] if with_proj else w_hh.shape[1]  # weight_hr (P, H); else weight_hh (G * H, H)
        if H == 0 or w_ih.shape[0] != 4 * H:
            gates = self._GATES.get(w_ih.shape[0] // H if H and w_ih.shape[0] % H == 0 else 0)
            holds = (f"{gates}: weight_ih_l0 has {w_ih.shape[0]} rows, {w_ih.shape[0] // H} x hidden size {H})" if gates
                     else f"a weight_ih_l0 of {w_ih.shape[0]} rows, which is not a multiple of the hidden size {H}")
            raise PortError(f"{path} holds {holds}, not an LSTM (4 gates: {4 * H} rows)")
        I, P, D = w_ih.shape[1], state["weight_hr_l0"].shape[0] if with_proj else H, len(sfx)
        shapes = {"weight_ih": (4 * H, I), "weight_hh": (4 * H, P), "bias_ih": (4 * H,), "bias_hh": (4 * H,), "weight_hr": (P, H)}
        for name in expected:
            kind, layer = name.split("_l")[0], int(names[name].group(2))
            want = (4 * H, D * P) if kind == "weight_ih" and layer > 0 else shapes[kind]
            if state[name].shape != want:
                raise PortError(f"{path}: {name}: wrong shape: expected {format_shape(want)}, got {format_shape(state[name].shape)} "
                                f"(sizes from layer 0: input I = {I}, hidden H = {H}, output P = {P}, directions D = {D})")
        return Architecture(layers, "bidirectional" if reverse else "forward", P if with_proj else None)

    def write(self, path, params, arch):
        from safetensors.numpy import save_file

        native = self.layout.to_native(params, arch.config())
        save_file({k: np.ascontiguousarray(v) for k, v in native.items()}, str(path))

    def run(self, path, arch, x, h0, c0):
        t = torch()
        TORCH.prepare(Device.CPU)  # the thread count, as for the rows
        from safetensors.torch import load_file

        state = load_file(str(path))
        first = state["weight_ih_l0"]
        lstm = t.nn.LSTM(first.shape[1], first.shape[0] // 4, num_layers=arch.num_layers, bias="bias_ih_l0" in state,
                         bidirectional=arch.direction == "bidirectional", proj_size=arch.proj_size or 0, dtype=first.dtype)
        lstm.load_state_dict(state)
        x, h0, c0 = (TORCH.to_device(a, Device.CPU) for a in (x, h0, c0))
        y, (h_T, c_T) = TORCH.run(lstm, x, (h0, c0))
        return {"y": TORCH.to_numpy(y), "h_T": TORCH.to_numpy(h_T), "c_T": TORCH.to_numpy(c_T)}


class KerasFormat(Format):
    name, layout, suffixes = "keras", keras_layouts.LSTM, (".weights.h5",)
    framework = "keras.Model.load_weights"
    what, kind = "an HDF5 file (a Keras .weights.h5 file)", HDF5
    read_modules = modules = ("h5py", "keras", "tensorflow")
    says_architecture = False
    _KINDS = {1: "a SimpleRNN (1 gate", 3: "a GRU (3 gates", 4: "an LSTM (4 gates"}

    #: Keras' backend here: a weights file is the same on every backend, and the row runs on this one.
    BACKEND = "tensorflow"

    def prepare(self):
        """Before Keras' first import, which fixes its backend: the TensorFlow backend, unless KERAS_BACKEND says."""
        if "keras" not in sys.modules:
            os.environ.setdefault("KERAS_BACKEND", self.BACKEND)

    def runtime_problem(self):
        backend = import_keras().backend.backend()
        if backend != self.BACKEND:
            return (f"Keras' backend is {backend!r} in this process; the port runs Keras files on its {self.BACKEND} "
                    f"backend: set KERAS_BACKEND={self.BACKEND} (or leave it unset)")
        return None

    def keras(self):
        """Keras, on the backend the port runs it on (its first import here asks for that backend)."""
        self.prepare()
        if (problem := self.runtime_problem()) is not None:
            raise PortError(problem)
        return import_keras()

    @cached_property
    def row(self) -> keras_rows.KerasLSTM:
        """The keras-tensorflow/LSTM row (backends/rows/keras.py), a copy with stacks of its own: the port loads files
        into the layers of its stacks, which must never be the stacks the suite's row keeps."""
        row = next(r for r in keras_rows.ROWS if r.id == f"keras-{self.BACKEND}/LSTM")
        return replace(row, id=f"{row.id} (the port's)")

    def _model(self, arch: Architecture, input_size: int, hidden_size: int, dtype: str):
        """The keras row's stack of layers and a model over them, whose weights file is Keras' own: (model, stack),
        the stack's run() calling the same layers."""
        keras = self.keras()
        layer = arch.config()
        stack = self.row.stack(layer, layer.zero_output_for_mask, input_size, hidden_size, dtype, Device.CPU)
        inputs = keras.Input((None, input_size), dtype=dtype)
        y = inputs
        for keras_layer in stack.layers:
            y = keras_layer(y)[0]
        return keras.Model(inputs, y), stack

    @staticmethod
    def _layers(path: Path) -> list[tuple[str, list[tuple[str, tuple[int, ...], str]]]]:
        """The file's layers in the model's order, each (name, [(variable path, shape, dtype), ...]): Keras 3
        names a model's layers' groups by their class, lstm, lstm_1, ... (layers without weights left out)."""
        import h5py

        try:
            with h5py.File(path, "r") as f:
                group = f.get("layers")
                if not isinstance(group, h5py.Group):
                    raise _Unparsable(f"{path}: an HDF5 file without Keras' 'layers' group: not a Keras 3 .weights.h5 file")
                layers = []
                for name, layer in group.items():
                    found = []
                    if isinstance(layer, h5py.Group):
                        layer.visititems(lambda key, item: found.append((key, item.shape, str(item.dtype)))
                                         if isinstance(item, h5py.Dataset) else None)
                    if found:
                        layers.append((name, found))
        except OSError as error:
            raise _Unparsable(f"{path}: not a readable HDF5 file: {error}") from None

        def order(layer):  # lstm, lstm_1, ..., lstm_10: by class, then by number (HDF5 lists names as strings)
            base, _, number = re.fullmatch(r"(.*?)(_(\d+))?", layer[0]).groups()
            return base, int(number or 0)

        return sorted(layers, key=order)

    def _check(self, path: Path, hint: Architecture) -> tuple[int, int, str]:
        """The file's layers against the stack of LSTM layers that --layers and --direction say: input size,
        hidden size and dtype, from the first kernel (I, 4H) and recurrent kernel (H, 4H)."""
        described, lstm_layers = [], []
        for name, variables in self._layers(path):
            kernel = next((v for v in variables if v[0].endswith("cell/vars/0")), None)
            recurrent = next((v for v in variables if v[0].endswith("cell/vars/1")), None)
            if kernel and recurrent and len(kernel[1]) == 2 and len(recurrent[1]) == 2 and recurrent[1][0]:
                H, GH = recurrent[1]
                kind = self._KINDS.get(GH // H if GH % H == 0 else 0, "a recurrent layer (an unknown gate count")
                described.append(f"{name}: {kind}; kernel {format_shape(kernel[1])}, recurrent kernel {format_shape(recurrent[1])})")
                if kind.startswith("an LSTM") and re.sub(r"_\d+$", "", name) in ("lstm", "bidirectional"):
                    lstm_layers.append((name, kernel[1][0], H, kernel[2]))
            else:
                described.append(f"{name}: weights {', '.join(format_shape(shape) for _, shape, _ in variables)}")
        if not described or len(lstm_layers) != len(described):
            raise PortError(f"{path} holds Keras layer(s) {'; '.join(described) or 'none'}, not a stack of Keras LSTM "
                            "layers (keras.layers.LSTM, or Bidirectional of two)")
        bidirectional = [name.startswith("bidirectional") for name, *_ in lstm_layers]
        said = f"--layers {hint.num_layers} --direction {hint.direction}"
        if len(lstm_layers) != hint.num_layers or any(b != (hint.direction == "bidirectional") for b in bidirectional):
            held = "bidirectional" if all(bidirectional) else "one-direction" if not any(bidirectional) else "mixed"
            raise PortError(f"{path} holds {len(lstm_layers)} {held} LSTM layer(s) ({', '.join(name for name, *_ in lstm_layers)}), "
                            f"not what {said} say")
        _, I, H, dtype = lstm_layers[0]
        return I, H, dtype

    def read(self, path, hint):
        if hint is None:
            raise PortError(f"{path}: a Keras weights file does not say how its layers run: give --layers and --direction")
        model, _ = self._model(hint, *self._check(path, hint))
        try:
            model.load_weights(str(path))
        except ValueError as error:  # what the checks above did not foresee, in Keras' words (its first line)
            raise PortError(f"{path}: Keras could not load it as the LSTM layers that --layers {hint.num_layers} "
                            f"--direction {hint.direction} say: {str(error).splitlines()[0]}") from None
        native = {v.path: np.asarray(v.numpy()) for v in model.trainable_variables}
        return self.layout.from_native(native, hint.config()), hint

    def write(self, path, params, arch):
        native = self.layout.to_native(params, arch.config())
        model, _ = self._model(arch, params.input_size, params.hidden_size, params.dtype.name)
        for variable in model.trainable_variables:
            variable.assign(native[variable.path])
        model.save_weights(str(path))

    def run(self, path, arch, x, h0, c0):
        model, stack = self._model(arch, *self._check(path, arch))
        model.load_weights(str(path))
        runtime = self.row.runtime
        with runtime.on(Device.CPU):  # batch-major for Keras
            x, h0, c0 = (runtime.to_device(a, Device.CPU) for a in (x.transpose(1, 0, 2), h0, c0))
            y, h_T, c_T = stack.run(x, h0, c0, None)
        return {"y": runtime.to_numpy(y).transpose(1, 0, 2), "h_T": runtime.to_numpy(h_T), "c_T": runtime.to_numpy(c_T)}


@cache
def flax_call(layer: LayerConfig):
    """The flax/LSTMCell row's call for ``layer`` (backends/rows/jax.py: the flax rows' module applied to a tree): one
    function per layer, which the runtime jits once."""
    row = next(r for r in jax_rows.ROWS if r.id == "flax/LSTMCell")
    return lambda tree, x, h0, c0: row.call(tree, x, h0, c0, None, None, layer=layer)


class FlaxFormat(Format):
    name, layout, suffixes = "flax", flax_layouts.STACK, (".msgpack",)
    framework = "flax nn.RNN apply"
    what, kind = "a msgpack file (flax.serialization's, of an LSTM's parameters)", None
    read_modules = modules = ("flax", "jax")
    says_architecture = False
    _CELL = ("hf", "hg", "hi", "ho", "if", "ig", "ii", "io")  # flax nn.LSTMCell's parameters
    _OTHER_CELLS = {("hn", "hr", "hz", "in", "ir", "iz"): "a GRU cell (flax nn.GRUCell)",
                    ("h", "i"): "an nn.OptimizedLSTMCell (its gates packed; the port reads nn.LSTMCell's)"}

    def read(self, path, hint):
        if hint is None:
            raise PortError(f"{path}: flax parameters do not say which way a lone layer runs: give --layers and --direction")
        from flax.serialization import msgpack_restore

        try:
            tree = msgpack_restore(Path(path).read_bytes())
        except Exception as error:  # noqa: BLE001 - msgpack's own errors (ExtraData, ValueError, ...) are many
            raise _Unparsable(f"{path}: not a readable msgpack file: {type(error).__name__}: {error}") from None
        self._check(path, tree, hint)
        try:
            return self.layout.from_native(tree, hint.config()), hint
        except (KeyError, TypeError, AttributeError) as error:
            raise PortError(f"{path}: not the parameters of flax nn.LSTMCell layers: {type(error).__name__}: {error}") from None

    def _check(self, path: Path, tree: object, hint: Architecture) -> None:
        """The tree's layers against --layers and --direction: layers_0 ... each {'cell': ...} for one direction,
        {'forward_rnn': {'cell': ...}, 'backward_rnn': {'cell': ...}} for nn.Bidirectional."""
        said = f"--layers {hint.num_layers} --direction {hint.direction}"
        if not isinstance(tree, dict) or not tree:
            raise PortError(f"{path} holds {type(tree).__name__ if not isinstance(tree, dict) else 'an empty tree'}, "
                            "not a tree of flax parameters (layers_0, ...)")
        expected = [f"layers_{l}" for l in range(hint.num_layers)]
        if set(tree) != set(expected):
            raise PortError(f"{path} holds {_show(tree)}, not the {hint.num_layers} layer(s) that {said} say ({_show(expected)})")
        bidirectional = {"forward_rnn", "backward_rnn"}
        for name in expected:
            layer = tree[name]
            keys = set(layer) if isinstance(layer, dict) else set()
            if keys not in ({"cell"}, bidirectional):
                raise PortError(f"{path}: {name} holds {_show(keys)}, not one LSTM layer ('cell') nor nn.Bidirectional's "
                                "('forward_rnn', 'backward_rnn')")
            if (keys == bidirectional) != (hint.direction == "bidirectional"):
                held = "a bidirectional layer" if keys == bidirectional else "a one-direction layer"
                raise PortError(f"{path}: {name} is {held}, not what {said} say")
            for cell in ([layer["cell"]] if keys == {"cell"} else
                         [layer[rnn].get("cell") if isinstance(layer[rnn], dict) else None for rnn in ("forward_rnn", "backward_rnn")]):
                found = tuple(sorted(cell, key=str)) if isinstance(cell, dict) else ()
                if found != self._CELL:
                    other = self._OTHER_CELLS.get(found, f"cell parameters {_show(found)}")
                    raise PortError(f"{path}: {name} holds {other}, not flax nn.LSTMCell's {', '.join(self._CELL)}")

    def write(self, path, params, arch):
        from flax.serialization import msgpack_serialize

        Path(path).write_bytes(msgpack_serialize(self.layout.to_native(params, arch.config())))

    def run(self, path, arch, x, h0, c0):
        from flax.serialization import msgpack_restore

        tree = FLAX.tree_to_device(msgpack_restore(Path(path).read_bytes()), Device.CPU)  # x64 on for float64
        x, h0, c0 = (FLAX.to_device(a, Device.CPU) for a in (x, h0, c0))
        y, h_T, c_T = FLAX.run(flax_call(arch.config()), tree, x, h0, c0)
        return {"y": FLAX.to_numpy(y), "h_T": FLAX.to_numpy(h_T), "c_T": FLAX.to_numpy(c_T)}


class OnnxFormat(Format):
    name, layout, suffixes = "onnx", onnx_layouts.LSTM_NODES, (".onnx",)
    framework = "onnxruntime.InferenceSession"
    what, kind, read_modules, modules = ONNX_MODEL, None, ("onnx",), ("onnx", "onnxruntime")

    def cannot_run(self, params):
        if params.dtype != np.float32:
            return (f"ONNX Runtime's LSTM runs float32 only, and these weights are {params.dtype.name}: its users could "
                    "not run the file, nor could the proof; the port casts nothing (cast the source yourself if a "
                    "float32 model is what you want)")
        return None

    def read(self, path, hint):
        import onnx
        from onnx import helper, numpy_helper

        try:
            model = onnx.load(str(path))
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError, onnx's own errors
            raise _Unparsable(f"{path}: not a readable ONNX model: {type(error).__name__}: {error}") from None
        nodes = [node for node in model.graph.node if node.op_type == "LSTM"]
        if not nodes:
            raise PortError(f"{path}: no LSTM node in this ONNX model")
        attributes = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
        if attributes.get("input_forget"):
            raise PortError(f"{path}: input_forget=1 couples the forget gate to the input gate (f = 1 - i), which only "
                            "ONNX expresses; its forget weights are unused, so no other framework would compute the same")
        unlike = {a: attributes[a] for a in ("activations", "activation_alpha", "activation_beta") if a in attributes}
        if unlike:
            raise PortError(f"{path}: the LSTM node sets {sorted(unlike)}; only the standard sigmoid/tanh LSTM is ported")
        direction = attributes.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        initializers = {init.name: init for init in model.graph.initializer}
        native = {}
        for l, node in enumerate(nodes):  # W, R, B and P by their position among the node's inputs (ONNX's LSTM)
            for position, tensor in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
                name = node.input[position] if len(node.input) > position else ""
                if name and name not in initializers:
                    raise PortError(f"{path}: {node.name or 'LSTM node ' + str(l)}'s {tensor} ({name!r}) is not an initializer")
                if name:
                    native[onnx_layouts.weight_name(l, tensor)] = numpy_helper.to_array(initializers[name])
        peephole = any(onnx_layouts.weight_name(l, "P") in native for l in range(len(nodes)))
        arch = Architecture(len(nodes), direction, None, peephole)
        return self.layout.from_native(native, arch.config()), arch

    def write(self, path, params, arch):
        import onnx

        native = self.layout.to_native(params, arch.config())
        model = with_initializers(layer_model(params.input_size, params.hidden_size, arch.config(), params.dtype,
                                              lengths=False, weight_name=onnx_layouts.weight_name), native)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    def run(self, path, arch, x, h0, c0):
        session = ONNXRUNTIME.session(Path(path).read_bytes(), Device.CPU)
        inputs = session.get_inputs()
        if len(inputs) != 3:
            raise PortError(f"{path}: the proof runs a model of inputs (x, h0, c0), time-major; this one takes "
                            f"{[i.name for i in inputs]}")
        y, h_T, c_T = session.run(None, {i.name: a for i, a in zip(inputs, (x, h0, c0), strict=True)})[:3]
        return {"y": y, "h_T": h_T, "c_T": c_T}


class SpecFormat(Format):
    name, layout, suffixes = "spec", CANONICAL, (".lstm.safetensors",)
    framework = "spec.layer.forward"
    what, kind = "a safetensors file (this project's weight file, spec/weights_file.py)", SAFETENSORS

    def read(self, path, hint):
        from spec.weights_file import load_layer_weights

        try:
            weights = load_layer_weights(path)
        except LSTMInputError as error:  # a WeightFileError: it names the file, the tensor or key, and why
            raise _Unparsable(str(error)) from None
        if weights.coupled_input_forget:
            raise PortError(f"{path}: coupled_input_forget (f = 1 - i) is ONNX's input_forget alone; "
                            "no other framework would compute the same with these weights")
        return weights.params, Architecture.of(weights.params, weights.direction)

    def write(self, path, params, arch):
        from spec.weights_file import save_layer_weights

        save_layer_weights(path, params, direction=arch.direction)

    def run(self, path, arch, x, h0, c0):
        from spec.weights_file import load_layer_weights

        weights = load_layer_weights(path)
        fwd = spec_layer.forward(weights.params, x, h0, c0, config=weights.config(), dtype=x.dtype)
        return {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}


class TfliteFormat(Format):
    """LiteRT's (TFLite's) fused LSTM: one UNIDIRECTIONAL_SEQUENCE_LSTM (version 1, float32) per layer and direction,
    in the model backends/runtimes/litert.py builds (layout backends/layouts/tflite.py)."""

    name, layout, suffixes = "tflite", tflite_layouts.FUSED_OPS, (".tflite",)
    framework = "ai_edge_litert Interpreter"
    what, kind = "a LiteRT (TFLite) model", None
    read_modules = modules = ("flatbuffers", "ai_edge_litert")
    fixes_batch = True
    _OWN = re.compile(r"layer(0|[1-9][0-9]{0,8})\.(forward|reverse)\.([a-z_]+)")

    def cannot_run(self, params):
        if params.dtype != np.float32:
            return (f"LiteRT's {litert.FUSED_LSTM} runs float32 only (its version 1 is the float32 kernel, the others are "
                    f"integer ones), and these weights are {params.dtype.name}: the port casts nothing (cast the source "
                    "yourself if a float32 model is what you want)")
        return None

    def write(self, path, params, arch, batch: int | None = None):
        layer = arch.config()
        content = litert.layer_model(self.layout.to_native(params, layer), layer, input_size=params.input_size,
                                     hidden_size=params.hidden_size, output_size=params.output_size, T=PROOF_T,
                                     B=batch or PROOF_B, description="lstm-conformance: python -m tools.port")
        Path(path).write_bytes(content)

    def _model(self, path: Path):
        """The checked model and its fused ops; a file LiteRT's schema cannot parse is _Unparsable."""
        content = Path(path).read_bytes()
        try:
            model = litert.read_model(content, str(path))
        except litert.ModelError as error:
            raise _Unparsable(str(error)) from None
        try:
            return content, model, litert.fused_lstm_ops(model, str(path), {1: litert.KNOWN_VERSIONS[1]})
        except litert.ModelError as error:
            names = {name for name, _ in litert.operator_names(model)}
            loop = litert.LOOP in names and litert.FUSED_LSTM not in names
            raise PortError(str(error) + ("; a WHILE loop is what TFLite's converter makes of Keras 3's LSTM: the port "
                                          "reads the fused op only (write the model from the weights with this command)"
                                          if loop else "")) from None

    def _op_tensors(self, path: Path, content: bytes, model, op) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """One op's parameter inputs by their TFLite input names, as float32 arrays, and the names of their tensors:
        each a constant float32 tensor, its options the plain LSTM's (no clip in the file)."""
        S = litert.schema()
        tensors, ops = model.subgraphs[0].tensors, model.subgraphs[0].operators
        options = op.builtinOptions
        if options is not None:
            if options.fusedActivationFunction != S.ActivationFunctionType.TANH:
                raise PortError(f"{path}: a {litert.FUSED_LSTM} whose cell activation is not tanh "
                                f"(fused_activation_function {options.fusedActivationFunction}); only the standard LSTM is ported")
            clips = {name: value for name, value in (("cell_clip", options.cellClip), ("proj_clip", options.projClip)) if value}
            if clips:
                raise PortError(f"{path}: the op sets {', '.join(f'{k}={v:g}' for k, v in clips.items())}; the other formats keep "
                                "clips as run-time settings, not in the file (the spec's weight file among them), so "
                                "the port would drop them: it ports unclipped models only")
        types = {value: name for name, value in vars(S.TensorType).items() if not name.startswith("_")}
        op_names = litert.operator_names(model)
        producers = {out: op_names[k][0] for k, o in enumerate(ops) for out in (o.outputs or ())}
        found, names = {}, {}
        for position, input_name in enumerate(tflite_layouts.INPUTS):
            index = op.inputs[position] if position < len(op.inputs) else -1
            if input_name not in tflite_layouts.PARAMETERS or index < 0:
                continue
            tensor = tensors[index]
            name = tensor.name.decode(errors="replace") if isinstance(tensor.name, bytes) else str(tensor.name)
            if tensor.type != S.TensorType.FLOAT32 or tensor.quantization is not None and tensor.quantization.scale is not None \
                    and len(tensor.quantization.scale):
                raise PortError(f"{path}: {input_name} ({name!r}) is a {types.get(tensor.type, tensor.type)} tensor"
                                f"{' with quantization parameters' if tensor.type == S.TensorType.FLOAT32 else ''}: a "
                                "quantized model; the port reads float32 models only (the op's version 1 kernel)")
            raw = self._data(content, model, tensor)
            if raw is None:
                what = f"computed by a {producers[index]} op" if index in producers else "not a constant"
                raise PortError(f"{path}: {input_name} ({name!r}) is {what}, not a constant float32 tensor (a float16 model "
                                "dequantizes its weights when it runs); the port reads float32 weights only")
            shape = tuple(int(n) for n in tensor.shape)
            if len(raw) != 4 * int(np.prod(shape)):
                raise PortError(f"{path}: {input_name} ({name!r}) holds {len(raw)} bytes, not the {4 * int(np.prod(shape))} "
                                f"of float32 values of its shape {format_shape(shape)}")
            found[input_name], names[input_name] = np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape), name
        return found, names

    @staticmethod
    def _data(content: bytes, model, tensor) -> bytes | None:
        """A constant tensor's bytes (little-endian, as TFLite stores them), or None for one without data."""
        buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers or ()) else None
        if buffer is None:
            return None
        if (getattr(buffer, "offset", 0) or 0) > 1:  # stored after the flatbuffer (models over 2 GB)
            return content[buffer.offset: buffer.offset + buffer.size]
        if buffer.data is not None and len(buffer.data):
            return np.asarray(buffer.data, np.uint8).tobytes()
        return None

    def _layers(self, path: Path, content: bytes, model, ops) -> tuple[list[tuple[int, str, object]], bool]:
        """Which layer and direction each op is: (layer, word, op) in the stack's order, and whether the model is this
        project's own (its tensors named layer<l>.<forward|reverse>.<input>) or one op from elsewhere."""
        placed, own = [], True
        for op in ops:
            _, names = self._op_tensors(path, content, model, op)
            matches = {self._OWN.fullmatch(n) for n in names.values()}
            keys = {(m.group(1), m.group(2)) if m else None for m in matches}
            if None in keys or len(keys) != 1 or any(self._OWN.fullmatch(n).group(3) != k for k, n in names.items()):
                own = False
                break
            (l, word), = keys
            placed.append((int(l), word, op))
        if own:
            layers = {l: sorted(w for k, w, _ in placed if k == l) for l, _, _ in placed}
            words = {tuple(w) for w in layers.values()}
            if sorted(layers) == list(range(len(layers))) and len(words) == 1 and len(placed) == sum(map(len, layers.values())) \
                    and next(iter(words)) in (("forward",), ("reverse",), ("forward", "reverse")):
                order = {w: k for k, w in enumerate(tflite_layouts.DIRECTION_WORDS)}
                return sorted(placed, key=lambda p: (p[0], order[p[1]])), True
            raise PortError(f"{path}: {len(ops)} {litert.FUSED_LSTM} op(s) named as layers and directions "
                            f"{sorted((l, w) for l, w, _ in placed)}: not a stack (layers 0 .. L-1, each of the same directions)")
        graph = model.subgraphs[0]
        if len(ops) == 1 and len(graph.operators) == 1 and list(graph.inputs) == [ops[0].inputs[0]] \
                and list(graph.outputs) == [ops[0].outputs[0]]:
            return [(0, "forward", ops[0])], False
        listed = ", ".join(name for name, _ in litert.operator_names(model))
        raise PortError(f"{path}: a model from elsewhere ({listed}); the port reads one {litert.FUSED_LSTM} alone (the "
                        "model's input and output its own) as one forward layer, or this project's models, whose tensor "
                        "names say each op's layer and direction: it cannot tell how these ops make a stack")

    def read(self, path, hint):
        content, model, ops = self._model(path)
        layers, _ = self._layers(path, content, model, ops)
        native = {}
        for l, word, op in layers:
            tensors, _ = self._op_tensors(path, content, model, op)
            if "input_to_input_weights" not in tensors:
                raise PortError(f"{path}: a CIFG {litert.FUSED_LSTM} (coupled input and forget gates: no input-gate weights); "
                                "only ONNX (input_forget) and TFLite hold coupled gates, and the port ports neither's "
                                "coupled gates: no other format would compute the same with these weights")
            native.update({tflite_layouts.weight_name(l, word, name): tensor for name, tensor in tensors.items()})
        L, words = max(l for l, _, _ in layers) + 1, {w for _, w, _ in layers}
        direction = "bidirectional" if len(words) == 2 else next(iter(words))
        first = native.get(tflite_layouts.weight_name(0, layers[0][1], "recurrent_to_forget_weights"))
        has = lambda name: tflite_layouts.weight_name(0, layers[0][1], name) in native  # noqa: E731
        arch = Architecture(L, direction, first.shape[1] if has("projection_weights") and first is not None else None,
                            has("cell_to_forget_weights"), has("forget_layer_norm_coefficients"), has("projection_bias"))
        return self.layout.from_native(native, arch.config()), arch

    def batch_size(self, path):
        """The batch size of its state variables (B, .), which LiteRT cannot resize."""
        _, model, ops = self._model(path)
        shape = model.subgraphs[0].tensors[ops[0].inputs[tflite_layouts.INPUTS.index("cell_state")]].shape
        return int(shape[0])

    def written(self, path):
        B = self.batch_size(path)
        return f" for batch size {B} (its state variables are ({B}, .)); x ({PROOF_T}, {B}, I), time-major, T resizable"

    def run(self, path, arch, x, h0, c0):
        content, model, ops = self._model(path)
        layers, own = self._layers(path, content, model, ops)
        try:
            if own:
                fused = litert.LITERT.fused(content, arch.config(), str(path))
                y, h_T, c_T = fused.run(x, h0, c0)
            else:  # one op from elsewhere: its input, output and state variables by position
                op = layers[0][2]
                interpreter = litert.LITERT.interpreter(content, str(path))
                states = ((op.inputs[tflite_layouts.INPUTS.index("output_state")],
                           op.inputs[tflite_layouts.INPUTS.index("cell_state")]),)
                fused = litert.FusedModel(content, interpreter, op.inputs[0], op.outputs[0], states)
                batch_major = op.builtinOptions is not None and not op.builtinOptions.timeMajor
                y, h_T, c_T = fused.run(x.transpose(1, 0, 2) if batch_major else x, h0, c0)
                y = y.transpose(1, 0, 2) if batch_major else y
        except KeyError as error:  # a tensor this project's models have (x, the state variables) is not there
            raise PortError(f"{path}: its ops' tensors are named as this project's models name them, but it has no tensor "
                            f"{error}: the port cannot run it") from None
        except (litert.ModelError, ValueError, RuntimeError) as error:  # LiteRT's refusals (allocation, resizing)
            raise PortError(f"{path}: LiteRT cannot run it: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        return {"y": y, "h_T": h_T, "c_T": c_T}


class OpenVinoFormat(Format):
    """An OpenVINO IR: the .xml (the graph) and the .bin beside it (the weights), of the port's ONNX model converted by
    openvino.convert_model; its LSTMs are LSTMSequence-5 ops (layout backends/layouts/openvino.py)."""

    name, layout, suffixes = "openvino", openvino_layouts.LSTM_SEQUENCES, (".xml",)
    framework = "openvino CPU plugin, f32"
    what, kind = "an OpenVINO IR (.xml, its weights in the .bin beside it)", None
    read_modules, modules = ("openvino",), ("onnx", "openvino")
    _ACTIVATIONS = ["sigmoid", "tanh", "tanh"]

    def companions(self, path):
        return (Path(path).with_suffix(".bin"),)

    def cannot_run(self, params):
        if params.dtype != np.float32:
            return (f"the port runs OpenVINO's CPU plugin in f32 (an explicit inference precision; it has no f64 LSTM), "
                    f"and these weights are {params.dtype.name}: the port casts nothing (cast the source yourself if a "
                    "float32 model is what you want)")
        return None

    def write(self, path, params, arch):
        ov = openvino_runtime.openvino()
        self.layout.to_native(params, arch.config())  # what LSTMSequence-5 cannot hold, refused in its words
        with tempfile.TemporaryDirectory(prefix="port-onnx-") as folder:
            onnx_path = Path(folder) / "lstm.onnx"
            FORMATS["onnx"].write(onnx_path, params, arch)
            model = ov.convert_model(str(onnx_path))
        # save_model compresses float32 weights to f16 by default (compress_to_fp16=True): never here
        ov.save_model(model, str(path), compress_to_fp16=False)

    def written(self, path):
        return " with its .bin, weights in f32 (compress_to_fp16=False: save_model's default would store them in f16)"

    def _read(self, path: Path):
        """OpenVINO's model of an IR, checked first for what the IR frontend would not say."""
        path = Path(path)
        weights = path.with_suffix(".bin")
        with open(path, "rb") as stream:
            head = stream.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"<"):
            raise _Unparsable(f"{path}: not an XML file (it starts {head[:16]!r}), so not an OpenVINO IR's .xml")
        if not weights.is_file():
            raise PortError(f"{path}: its weights file {weights} is missing: an OpenVINO IR is the .xml and the .bin beside it")
        try:
            return openvino_runtime.OPENVINO.core().read_model(str(path), str(weights))
        except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError for everything
            raise _Unparsable(f"{path} (with {weights.name}): OpenVINO cannot read it as an IR: "
                              f"{openvino_runtime.first_line(error)}") from None

    def _constant(self, path: Path, op, position: int, tensor: str) -> np.ndarray:
        node = op.input_value(position).get_node()
        kind = node.get_type_name()
        if kind == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
            stored = node.input_value(0).get_node().get_element_type().get_type_name()
            raise PortError(f"{path}: {op.get_friendly_name()}'s {tensor} is stored in {stored} and converted when the model "
                            "runs (openvino.save_model compresses weights to f16 unless compress_to_fp16=False); the port "
                            "reads f32 weights only and casts nothing")
        if kind != "Constant":
            raise PortError(f"{path}: {op.get_friendly_name()}'s {tensor} is computed by a {kind} op, not a constant")
        element = node.get_element_type().get_type_name()
        if element != "f32":
            raise PortError(f"{path}: {op.get_friendly_name()}'s {tensor} is {element}; the port reads f32 weights only")
        return np.array(node.get_data(), dtype=np.float32)

    def read(self, path, hint):
        model = self._read(path)
        ops = [op for op in model.get_ordered_ops() if op.get_type_name() == "LSTMSequence"]
        if not ops:
            kinds = sorted({op.get_type_name() for op in model.get_ordered_ops()} - {"Parameter", "Result", "Constant"})
            raise PortError(f"{path}: no LSTMSequence op in this IR; its ops are: {', '.join(kinds) or 'none'}")
        native, directions = {}, set()
        for l, op in enumerate(ops):
            version = op.get_type_info().version_id
            attributes = op.get_attributes()
            if version != "opset5":
                raise PortError(f"{path}: {op.get_friendly_name()} is LSTMSequence of {version}; the port reads opset5's")
            if list(attributes.get("activations", self._ACTIVATIONS)) != self._ACTIVATIONS or attributes.get("activations_alpha") \
                    or attributes.get("activations_beta"):
                raise PortError(f"{path}: {op.get_friendly_name()} sets activations {list(attributes.get('activations'))}; only "
                                "the standard sigmoid/tanh LSTM is ported")
            if attributes.get("clip"):
                raise PortError(f"{path}: {op.get_friendly_name()} sets clip={attributes['clip']:g}; the other formats keep clips "
                                "as run-time settings, not in the file, so the port would drop it: it ports unclipped models only")
            directions.add(attributes["direction"])
            for position, tensor in ((4, "W"), (5, "R"), (6, "B")):
                native[openvino_layouts.weight_name(l, tensor)] = self._constant(path, op, position, tensor)
        if len(directions) != 1:
            raise PortError(f"{path}: its LSTMSequence ops run {sorted(directions)}; the port reads a stack of one direction")
        arch = Architecture(len(ops), directions.pop())
        return self.layout.from_native(native, arch.config()), arch

    def run(self, path, arch, x, h0, c0):
        try:
            session = openvino_runtime.OPENVINO.session(self._read(path), Device.CPU, str(path))
        except openvino_runtime.ModelError as error:  # the CPU plugin's refusal to compile it
            raise PortError(f"{path}: {error}") from None
        inputs, outputs = session.compiled.inputs, session.compiled.outputs
        if len(inputs) != 3 or len(outputs) != 3:
            raise PortError(f"{path}: the proof runs a model of inputs (x, h0, c0) and outputs (y, h_T, c_T), time-major; "
                            f"this one takes {[i.get_any_name() for i in inputs]} and gives {[o.get_any_name() for o in outputs]}")
        y, h_T, c_T = session.run(None, {k: a for k, a in enumerate((x, h0, c0))})[:3]
        return {"y": y, "h_T": h_T, "c_T": c_T}


FORMATS = {f.name: f for f in (TorchFormat(), KerasFormat(), FlaxFormat(), OnnxFormat(), SpecFormat(), TfliteFormat(), OpenVinoFormat())}


def named_format(path: Path) -> Format | None:
    """The format that a file's name says, or None. The longest suffix first: .lstm.safetensors is the spec's,
    .safetensors PyTorch's."""
    for fmt in sorted(FORMATS.values(), key=lambda f: -max(len(s) for s in f.suffixes)):
        if any(str(path).endswith(suffix) for suffix in fmt.suffixes):
            return fmt
    return None


def format_of(path: Path, name: str | None) -> Format:
    if name:
        if name not in FORMATS:
            raise PortError(f"unknown format {name!r}; the formats are {', '.join(FORMATS)}")
        return FORMATS[name]
    fmt = named_format(path)
    if fmt is None:
        raise PortError(f"{path}: cannot tell the format from the name; give --from/--to ({', '.join(FORMATS)})")
    return fmt


# ---------------------------------------------------------------------------
# The files: what is read is checked first, and what is written never takes the place of the source
# ---------------------------------------------------------------------------


def read_source(fmt: Format, path: Path, hint: Architecture | None) -> tuple[LayerParams, Architecture]:
    """The source's canonical parameters and architecture. Before its format's reader sees it: the file exists
    and is a regular, non-empty file whose first bytes do not say it is something else, and what reads it
    imports; a parser's refusal is named (an ONNX model under another name, say); after, what --layers and
    --direction say must not contradict a file that says its own architecture."""
    if hint is not None or fmt.says_architecture:  # else fmt.read says what to give, before anything else
        _check_source_file(path, fmt)
        _check_frameworks(fmt, path, fmt.read_modules)
    try:
        params, arch = fmt.read(path, hint)
    except _Unparsable as error:
        if fmt.kind != ONNX_MODEL and _is_onnx_model(path):
            raise _another_format(path, ONNX_MODEL, fmt) from None
        raise PortError(str(error)) from None
    except LSTMInputError as error:  # the canonical parameters' own checks, on what the layout made of the file
        raise PortError(f"{path}: {error}") from None
    if hint is not None and fmt.says_architecture and (hint.num_layers, hint.direction) != (arch.num_layers, arch.direction):
        raise PortError(f"{path} says {arch.num_layers} layer(s), {arch.direction}; --layers {hint.num_layers} --direction "
                        f"{hint.direction} contradict it (a {fmt.name} file says its own architecture: leave them out)")
    return params, arch


def _check_source_file(path: Path, fmt: Format) -> None:
    """Checked before the file is opened by its reader: opening a FIFO would wait for a writer, and a zip
    archive's pickle must never reach one."""
    try:
        status = os.stat(path)
        mode, size = status.st_mode, status.st_size
        kind = _first_bytes_kind(path) if stat.S_ISREG(mode) and size else None
    except FileNotFoundError:
        raise PortError(f"{path}: no such file") from None
    except OSError as error:
        raise PortError(f"{path}: cannot read: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise PortError(f"{path} is a directory, not {fmt.what}")
    if not stat.S_ISREG(mode):
        raise PortError(f"{path} is not a regular file, not {fmt.what}")
    if size == 0:
        raise PortError(f"{path} is empty (0 bytes), not {fmt.what}")
    if kind is not None and not (fmt.kind and kind.startswith(fmt.kind)):
        raise _another_format(path, kind, fmt)


def _check_frameworks(fmt: Format, path: Path, modules: tuple[str, ...] | None = None) -> None:
    """The frameworks that read (``modules``) or read and run (by default) a file of ``fmt`` import: a port
    that cannot run a file cannot prove it. What the framework needs before its first import is set first."""
    fmt.prepare()
    for module in fmt.modules if modules is None else modules:
        problem = framework_problem(module, f"{module} is not installed here")
        if problem:
            raise PortError(f"{path}: the port {'reads' if modules else 'reads and runs'} {fmt.name} files with {module}: {problem}")
    if (problem := fmt.runtime_problem()) is not None:
        raise PortError(f"{path}: {problem}")


def _same_file(a: Path, b: Path) -> bool:
    """The same file: by device and inode where both exist (a hard link, a symbolic link, another spelling of the
    path), else by the resolved paths (a target not written yet)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def _check_target(target: Path, source: Path, force: bool, where: str = "", fmt: Format | None = None) -> None:
    """Before anything is read or written: the target is not the source, it can be written, and it is new
    unless --force; so are the files its format writes beside it (an OpenVINO IR's .bin). ``where`` says where a
    target's name came from (a round trip's hops)."""
    for companion in fmt.companions(target) if fmt is not None else ():
        if _same_file(source, companion):
            raise PortError(f"{target}{where}: its {companion.suffix} file {companion} is the source {source} itself: a port "
                            "never writes over its input; name another target")
        if companion.is_dir():
            raise PortError(f"{target}{where}: {companion}, which the {fmt.name} target is written with, is a directory")
        if os.path.lexists(companion) and not force:
            raise PortError(f"{target}{where}: {companion}, which the {fmt.name} target is written with, exists; give --force "
                            "to write over it")
    if _same_file(source, target):
        raise PortError(f"{target}{where} is the source {source} itself: a port never writes over its input, and a "
                        "file compared with itself proves nothing; name another target")
    folder = target.parent
    if target.is_dir():
        raise PortError(f"{target}{where} is a directory; name the file to write")
    if not folder.exists():
        raise PortError(f"cannot write {target}{where}: its directory {folder} does not exist")
    if not folder.is_dir():
        raise PortError(f"cannot write {target}{where}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PortError(f"cannot write {target}{where}: its directory {folder} is not writable")
    if os.path.lexists(target) and not force:
        raise PortError(f"{target}{where} exists; give --force to write over it")


def _check_target_name(target: Path, fmt: Format) -> None:
    """A target's name says its format to every later reader: --to may not contradict it, and Keras writes
    weights only under names ending .weights.h5."""
    named = named_format(target)
    if named is not None and named is not fmt:
        raise PortError(f"{target}: the name says {named.name} ({named.suffix_of(target)}) and --to says {fmt.name}; "
                        f"give it a name ending {fmt.suffixes[0]}, so that its readers take it for what it is")
    if fmt.name == "keras" and not str(target).endswith(".weights.h5"):
        raise PortError(f"{target}: Keras writes weights files only under a name ending .weights.h5")


def _partial(target: Path, fmt: Format) -> Path:
    """A new, empty file beside the target, ending in the format's suffix (Keras insists), to write and prove
    before it takes the target's place."""
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{fmt.suffix_of(target)}", dir=target.parent)
    os.close(descriptor)
    return Path(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------
# The proof
# ---------------------------------------------------------------------------


@dataclass
class Agreement:
    """One side's (or the two sides') worst error, in the suite's terms."""

    what: str
    worst_error: float
    eps: float
    ratio: float  # worst error over its tolerance: <= 1 agrees

    def line(self) -> str:
        verdict = "agrees" if self.ratio <= 1 else "DISAGREES"
        if self.ratio > 1:
            margin = f"{self.ratio:.3g}x the tolerance"
        else:
            margin = f"margin {1 / self.ratio:.3g}x" if self.ratio > 0 else "exact"
        return f"  {self.what:<58} worst error {self.worst_error:.3g} ({self.worst_error / self.eps:.3g} eps), {margin}: {verdict}"


def prove(source: Format, source_path: Path, source_params: LayerParams, target: Format, target_path: Path,
          arch: Architecture, seed: int = 0, T: int = PROOF_T, B: int | None = None) -> list[Agreement]:
    """Both files run by their frameworks on one seeded random input, against the spec in float64 (on the
    source's canonical parameters) and against each other. The batch size is the one a file fixes (a LiteRT
    model's), else ``B``, else the proof's."""
    fixed = {size for size in (source.batch_size(source_path), target.batch_size(target_path)) if size is not None}
    if len(fixed) > 1:
        raise PortError(f"{source_path} and {target_path} are built for batch sizes {sorted(fixed)}: one input cannot run both")
    B = fixed.pop() if fixed else B or PROOF_B
    rng = np.random.default_rng(seed)
    L, D = arch.num_layers, arch.config().num_directions
    dtype = source_params.dtype
    x = rng.standard_normal((T, B, source_params.input_size)).astype(dtype)
    h0 = rng.uniform(-0.9, 0.9, (L * D, B, source_params.output_size)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, source_params.hidden_size)).astype(dtype)
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    fwd = spec_layer.forward(source_params.astype(np.float64), wide(x), wide(h0), wide(c0), config=arch.config())
    spec = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}
    tol = tolerance(dtype.name, Kind.OUTPUTS)
    eps = float(np.finfo(dtype).eps)

    def worst(what, got, want) -> Agreement:
        comparisons = [compare(n, got[n], want[n], atol=tol.atol, rtol=tol.rtol, num_directions=D) for n in want]
        return Agreement(what, max(c.worst_error for c in comparisons), eps, max(c.worst_ratio for c in comparisons))

    ran = {side: fmt.run(path, arch, x, h0, c0) for side, fmt, path in (("source", source, source_path), ("target", target, target_path))}
    return [
        worst(f"{source.name} file ({source.framework}) vs the spec", ran["source"], spec),
        worst(f"{target.name} file ({target.framework}) vs the spec", ran["target"], spec),
        worst(f"{target.name} file vs {source.name} file", ran["target"], {k: v.astype(np.float64) for k, v in ran["source"].items()}),
    ]


def _same(a: LayerParams, b: LayerParams) -> list[str]:
    """The tensors that differ between two parameter sets (none: the port is exact)."""
    named_b = b.tensors()
    return [name for name, t in a.tensors().items() if name not in named_b or not np.array_equal(t, named_b[name])]


# ---------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------


def convert(source_path: Path, target_path: Path, source: Format, target: Format, hint: Architecture | None,
            out=print, force: bool = False, batch: int | None = None) -> int:
    """source -> target, proven. Everything that can be refused is refused before a byte is written (the target's
    path, the source, what the target can hold and run, the frameworks), and the target takes its name only
    once written, read back and proven: a failure leaves no file, nor touches one that was there."""
    _check_target(target_path, source_path, force, fmt=target)
    params, arch = read_source(source, source_path, hint)
    out(f"{source_path} ({source.name}): {arch.num_layers} layer(s), {arch.direction}, input {params.input_size}, "
        f"hidden {params.hidden_size}" + arch.describe() + f", {params.dtype.name}")
    for fmt, path in ((target, target_path), (source, source_path)):
        reason = fmt.cannot_run(params)
        if reason:
            out(f"refused: {fmt.name} cannot run this LSTM ({path}): {reason}")
            return EXIT_REFUSED
    try:
        target.check_holds(params, arch)
    except NotSupported as error:
        out(f"refused: {target.name} cannot hold this LSTM: {error}")
        return EXIT_REFUSED
    _check_frameworks(source, source_path)
    _check_frameworks(target, target_path)
    held = source.batch_size(source_path)
    if batch is not None and held is not None and batch != held:
        raise PortError(f"{source_path} is built for batch size {held}, and --batch says {batch}: the proof runs both "
                        f"files on one input; leave --batch out (the target gets the source's {held})")
    if batch is not None and not target.fixes_batch:
        raise PortError(f"--batch is the batch size a LiteRT model is built for; {target_path} is {target.what}, which "
                        "fixes none: leave --batch out")
    options = {"batch": batch or held} if target.fixes_batch else {}
    partial = _partial(target_path, target)
    beside = [(p, t) for p, t in zip(target.companions(partial), target.companions(target_path), strict=True)]
    placed = False
    try:  # written, read back and proven under the partial names; renamed into place only then
        try:
            target.write(partial, params, arch, **options)
        except NotSupported as error:
            out(f"refused: {target.name} cannot hold this LSTM: {error}")
            return EXIT_REFUSED
        except (OSError, SafetensorError, WeightFileError) as error:  # e.g. a full disk: named by the target, not the partial file
            reason = error.actual if isinstance(error, WeightFileError) else getattr(error, "strerror", None) or str(error)
            raise PortError(f"cannot write {target_path}: {re.sub(r' at path .*$', '', reason)}") from None
        back, _ = target.read(partial, arch)
        differ = _same(params, back)
        out(f"{target_path} ({target.name}) written{target.written(partial)}; read back: "
            + ("the same parameters, bit for bit" if not differ else f"DIFFERENT in {', '.join(differ)}"))
        agreements = prove(source, source_path, params, target, partial, arch)
        out("both files, each run by its framework on one seeded random input (tolerance: the suite's, outputs):")
        for agreement in agreements:
            out(agreement.line())
        for written_path, _ in [(partial, target_path), *beside]:
            os.chmod(written_path, 0o666 & ~_umask())  # as a new file would be (mkstemp made it the owner's alone)
        for written_path, final in [*beside, (partial, target_path)]:  # the companions first: the file that names them last
            os.replace(written_path, final)
        placed = True
    finally:
        if not placed:
            for written_path, _ in [(partial, target_path), *beside]:
                written_path.unlink(missing_ok=True)
    return EXIT_AGREES if not differ and all(a.ratio <= 1 for a in agreements) else EXIT_DISAGREES


def roundtrip(source_path: Path, source: Format, via: list[Format], workdir: Path, hint: Architecture | None, out=print,
              force: bool = False, batch: int | None = None) -> int:
    """source -> via[0] -> via[1] -> ... -> source's format again: every hop proven, and the end bit for bit the start.
    Every hop's file is checked before the first is written: none may be the source, none may exist without --force."""
    hops = [(workdir / f"hop{k + 1}-{hop.name}{hop.suffixes[0]}", hop) for k, hop in enumerate([*via, source])]
    if batch is not None and not any(hop.fixes_batch for _, hop in hops):
        raise PortError("--batch is the batch size a LiteRT model is built for, and no hop is tflite: leave it out")
    for target_path, hop in hops:
        _check_target(target_path, source_path, force, f" (a hop's file in --workdir {workdir})", hop)
    start, arch = read_source(source, source_path, hint)
    for target_path, hop in hops:
        _check_frameworks(hop, target_path)
    path, fmt, status = source_path, source, EXIT_AGREES
    for target_path, hop in hops:
        out(f"\n== {fmt.name} -> {hop.name}")
        hop_batch = batch if hop.fixes_batch and not fmt.fixes_batch else None  # else the hop's source's own
        status = max(status, convert(path, target_path, fmt, hop, arch, out, force, hop_batch))
        if status == EXIT_REFUSED:
            return status
        path, fmt = target_path, hop
    end, _ = source.read(path, arch)
    differ = _same(start, end)
    out(f"\nround trip {' -> '.join([source.name, *(f.name for f in via), source.name])}: "
        + ("the same parameters as the start, bit for bit" if not differ else f"DIFFERENT in {', '.join(differ)}"))
    return max(status, EXIT_DISAGREES if differ else EXIT_AGREES)


def _at_least_one(text: str) -> int:
    """--layers: an integer >= 1 (argparse turns the error into a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _via(text: str) -> list[Format]:
    """--via's formats; an empty list or an empty item is a mistake, not a torch-to-torch hop."""
    names = [name.strip() for name in text.split(",")]
    if not text.strip():
        raise PortError(f"--via {text!r} is empty: name the formats to pass through, comma-separated ({', '.join(FORMATS)})")
    if "" in names:
        raise PortError(f"--via {text!r} has an empty item: name a format between every two commas ({', '.join(FORMATS)})")
    return [format_of(Path("x"), name) for name in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.port", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("convert", "roundtrip"):
        command = sub.add_parser(name)
        command.add_argument("source", type=Path)
        if name == "convert":
            command.add_argument("target", type=Path)
            command.add_argument("--to", dest="target_format", choices=list(FORMATS))
        else:
            command.add_argument("--via", required=True, help="formats to pass through, comma-separated (e.g. keras,flax,onnx)")
            command.add_argument("--workdir", type=Path, default=Path("port-roundtrip"))
        command.add_argument("--from", dest="source_format", choices=list(FORMATS))
        command.add_argument("--layers", type=_at_least_one, help="the number of layers (Keras and flax sources; "
                             "other files say it, and a contradiction is refused)")
        command.add_argument("--direction", choices=spec_layer.DIRECTIONS, help="forward, reverse or bidirectional (Keras and flax sources)")
        command.add_argument("--force", action="store_true", help="write over existing files (never over the source)")
        command.add_argument("--batch", type=_at_least_one, help=f"the batch size a tflite target is built for (its state "
                             f"variables are (B, .)); default: a tflite source's, else {PROOF_B}, the proof's")
    args = parser.parse_args(argv)
    hint = None
    if args.layers is not None or args.direction is not None:
        if args.layers is None or args.direction is None:
            parser.error("--layers and --direction go together")
        hint = Architecture(args.layers, args.direction)
    try:
        source = format_of(args.source, args.source_format)
        if args.command == "convert":
            target = format_of(args.target, args.target_format)
            _check_target_name(args.target, target)
            return convert(args.source, args.target, source, target, hint, force=args.force, batch=args.batch)
        via = _via(args.via)
        if args.workdir.exists() and not args.workdir.is_dir():
            raise PortError(f"--workdir {args.workdir} is a file, not a directory")
        try:
            args.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PortError(f"cannot make --workdir {args.workdir}: {error.strerror or error}") from None
        return roundtrip(args.source, source, via, args.workdir, hint, force=args.force, batch=args.batch)
    except (PortError, Unavailable, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
