"""Porting an LSTM's weights between frameworks, and proving the port.

    python -m backends.port convert lstm.safetensors lstm.weights.h5             PyTorch state_dict -> Keras
    python -m backends.port convert lstm.weights.h5 lstm.msgpack --layers 2 --direction bidirectional
    python -m backends.port roundtrip lstm.safetensors --via keras,flax,onnx     and back, hop by hop

A file's format is read off its suffix (or --from / --to):

    torch   .safetensors   a torch.nn.LSTM's state_dict (weight_ih_l0, weight_hh_l0_reverse, ..., weight_hr_l0)
    keras   .weights.h5    Keras 3's own weights file of the stack of keras.layers.LSTM / Bidirectional layers
                           that the keras rows build (load it with model.load_weights)
    flax    .msgpack       flax.serialization's msgpack of the parameters of the stack of nn.RNN /
                           nn.Bidirectional layers that the flax rows build
    onnx    .onnx          an ONNX model, one LSTM node per layer, the weights as initializers
    spec    .lstm.safetensors   this project's weight file, version 2 (spec/weights_file.py)

Every conversion goes through the canonical parameters with the rows' own layout hooks
(``from_native_layer`` of the source's row, ``to_native_layer`` of the target's): the one copy of each
framework's layout, the one the conformance suite checks. What the target cannot express (a projection into
Keras or ONNX, peepholes into PyTorch) is refused with the row's reason, nothing dropped. Then the port is
proven in the suite's terms: the target file is read back and must give the same canonical parameters, bit for
bit; and each file is run as its users run it, loaded by its own framework's loader (``load_state_dict``,
``load_weights``, the flax module's ``apply``, an ONNX Runtime session) and called on one seeded random input,
compared with the spec (float64, on the source's parameters) and with the other file: worst error in eps of the
dtype, against the suite's tolerance. Running the files themselves, not the rows on the parameters read back,
is what catches a layout hook that is wrong both ways (its files read back bit for bit, and compute something
else). The exit status is 0 when everything agrees, 1 when something does not, 2 when the port is refused.

Biases: PyTorch and ONNX keep two per cell (b_ih and b_hh; Wb and Rb), Keras and flax one, and the canonical
parameters hold the sum b = b_ih + b_hh (rounded once, in the file's dtype). So every format gets the same sums,
and a round trip through Keras or flax gives back b_ih = b, b_hh = 0: the same function, bit for bit the same
canonical parameters, not the same split.

The architecture (layers, direction, sizes, projection, peepholes) is read off the source where the file says
it (PyTorch's names, ONNX's nodes, the spec's metadata); for Keras and flax files, which name layers but not
the direction of a lone reverse layer or its sizes, --layers and --direction say it (sizes come from the
weights).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Keras runs here on its TensorFlow backend (a Keras weights file is the same on every backend); JAX with 64-bit
# types, so that a float64 file runs in float64.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_ENABLE_X64", "1")

from backends.base import NotSupported, Unavailable  # noqa: E402
from backends.registry import implementation_by_id  # noqa: E402
from conformance.compare import compare  # noqa: E402
from conformance.tolerances import tolerance  # noqa: E402
from spec import layer as spec_layer  # noqa: E402
from spec.layer import LayerConfig  # noqa: E402
from spec.params import LayerParams  # noqa: E402

EXIT_AGREES, EXIT_DISAGREES, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Architecture:
    """What a layer's weights alone may not say."""

    num_layers: int
    direction: str
    proj_size: int | None = None
    peephole: bool = False

    def config(self) -> LayerConfig:
        return LayerConfig(num_layers=self.num_layers, direction=self.direction, proj_size=self.proj_size, peephole=self.peephole)

    @staticmethod
    def of(params: LayerParams, direction: str) -> "Architecture":
        return Architecture(params.num_layers, direction, params.proj_size, params.peephole)


class PortError(Exception):
    """A file or argument the command cannot use; the message says why."""


# ---------------------------------------------------------------------------
# File formats: each reads a file into its row's native layout and writes it back
# ---------------------------------------------------------------------------


class Format:
    name: str
    row_id: str  # the row whose layout hooks convert this format
    framework: str  # what loads and runs a file of this format
    suffixes: tuple[str, ...]

    @property
    def row(self):
        return implementation_by_id(self.row_id)

    def read(self, path: Path, hint: Architecture | None) -> tuple[LayerParams, Architecture]:
        raise NotImplementedError

    def write(self, path: Path, params: LayerParams, arch: Architecture) -> None:
        raise NotImplementedError

    def run(self, path: Path, arch: Architecture, x, h0, c0) -> dict[str, np.ndarray]:
        """The file loaded by its framework's own loader and called on time-major x (T, B, I), h0 and c0
        (L * D, B, .): y (T, B, D * P), h_T, c_T (L * D, B, .), as NumPy arrays."""
        raise NotImplementedError


class TorchFormat(Format):
    name, row_id, suffixes = "torch", "torch/nn.LSTM", (".safetensors",)
    framework = "torch.nn.LSTM.load_state_dict"
    _NAME = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?")

    def read(self, path, hint):
        from safetensors.numpy import load_file

        state = load_file(str(path))
        names = [self._NAME.fullmatch(name) for name in state]
        if not state or not all(names):
            raise PortError(f"{path}: not a torch.nn.LSTM state_dict (names weight_ih_l0, ...): {sorted(state)[:5]}")
        layers = 1 + max(int(m.group(2)) for m in names)
        direction = "bidirectional" if any(m.group(3) for m in names) else "forward"
        proj = state["weight_hr_l0"].shape[0] if "weight_hr_l0" in state else None
        arch = Architecture(layers, direction, proj)
        return self.row.from_native_layer(state, arch.config()), arch

    def write(self, path, params, arch):
        from safetensors.numpy import save_file

        native = self.row.to_native_layer(params, arch.config())
        save_file({k: np.ascontiguousarray(v) for k, v in native.items()}, str(path))

    def run(self, path, arch, x, h0, c0):
        import torch
        from safetensors.torch import load_file

        state = load_file(str(path))
        first = state["weight_ih_l0"]
        lstm = torch.nn.LSTM(first.shape[1], first.shape[0] // 4, num_layers=arch.num_layers,
                             bidirectional=arch.direction == "bidirectional", proj_size=arch.proj_size or 0, dtype=first.dtype)
        lstm.load_state_dict(state)
        with torch.no_grad():
            y, (h_T, c_T) = lstm(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        return {"y": y.numpy(), "h_T": h_T.numpy(), "c_T": c_T.numpy()}


class KerasFormat(Format):
    name, row_id, suffixes = "keras", "keras-tensorflow/LSTM", (".weights.h5",)
    framework = "keras.Model.load_weights"

    @staticmethod
    def _model(arch: Architecture, input_size: int, hidden_size: int, dtype: str):
        """The keras rows' stack of layers (backends/keras_lstm.py) and a model over them, whose weights file is
        Keras' own: (model, stack), the stack's run() calling the same layers."""
        from backends.keras_lstm import _keras, _Stack

        keras = _keras()
        stack = _Stack("LSTM", arch.config(), True, input_size, hidden_size, dtype, "cpu")
        inputs = keras.Input((None, input_size), dtype=dtype)
        y = inputs
        for keras_layer in stack.layers:
            y = keras_layer(y)[0]
        return keras.Model(inputs, y), stack

    @staticmethod
    def _sizes(path: Path) -> tuple[int, int, str]:
        """input size, hidden size and dtype, from the first kernel (I, 4H) and recurrent kernel (H, 4H)."""
        import h5py

        with h5py.File(path, "r") as f:
            shapes = []
            f.visititems(lambda name, item: shapes.append((item.shape, str(item.dtype))) if hasattr(item, "shape") else None)
        if len(shapes) < 2:
            raise PortError(f"{path}: no LSTM weights in this Keras weights file")
        (kernel, dtype), (recurrent, _) = shapes[0], shapes[1]
        return kernel[0], recurrent[0], dtype

    def read(self, path, hint):
        if hint is None:
            raise PortError(f"{path}: a Keras weights file does not say how its layers run: give --layers and --direction")
        model, _ = self._model(hint, *self._sizes(path))
        model.load_weights(str(path))
        native = {v.path: np.asarray(v.numpy()) for v in model.trainable_variables}
        return self.row.from_native_layer(native, hint.config()), hint

    def write(self, path, params, arch):
        native = self.row.to_native_layer(params, arch.config())
        model, _ = self._model(arch, params.input_size, params.hidden_size, params.dtype.name)
        for variable in model.trainable_variables:
            variable.assign(native[variable.path])
        model.save_weights(str(path))

    def run(self, path, arch, x, h0, c0):
        model, stack = self._model(arch, *self._sizes(path))
        model.load_weights(str(path))
        y, h_T, c_T = stack.run(np.ascontiguousarray(x.transpose(1, 0, 2)), list(h0), list(c0), None)
        return {"y": np.asarray(y).transpose(1, 0, 2), "h_T": np.stack([np.asarray(h) for h in h_T]),
                "c_T": np.stack([np.asarray(c) for c in c_T])}


class FlaxFormat(Format):
    name, row_id, suffixes = "flax", "flax/LSTMCell", (".msgpack",)
    framework = "flax nn.RNN apply"

    def read(self, path, hint):
        from flax.serialization import msgpack_restore

        if hint is None:
            raise PortError(f"{path}: flax parameters do not say which way a lone layer runs: give --layers and --direction")
        tree = msgpack_restore(Path(path).read_bytes())
        return self.row.from_native_layer(tree, hint.config()), hint

    def write(self, path, params, arch):
        from flax.serialization import msgpack_serialize

        Path(path).write_bytes(msgpack_serialize(self.row.to_native_layer(params, arch.config())))

    def run(self, path, arch, x, h0, c0):
        from flax.serialization import msgpack_restore

        from backends.jax_lstm import _flax_layer_functions

        tree = msgpack_restore(Path(path).read_bytes())
        native_forward, _, _ = _flax_layer_functions("LSTMCell", c0.shape[-1], arch.num_layers, arch.direction, x.dtype.name)
        y, h_T, c_T = native_forward(tree, x, h0, c0, None)  # the flax rows' module, applied to the file's tree
        return {"y": np.asarray(y), "h_T": np.asarray(h_T), "c_T": np.asarray(c_T)}


class OnnxFormat(Format):
    name, row_id, suffixes = "onnx", "onnxruntime/LSTM", (".onnx",)
    framework = "onnxruntime.InferenceSession"

    def read(self, path, hint):
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(str(path))
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
                    native[f"layer{l}.{tensor}"] = numpy_helper.to_array(initializers[name])
        arch = Architecture(len(nodes), direction, None, any(name.endswith(".P") for name in native))
        return self.row.from_native_layer(native, arch.config()), arch

    def write(self, path, params, arch):
        import onnx
        from onnx import numpy_helper

        from backends import onnx_lstm

        native = self.row.to_native_layer(params, arch.config())
        model = onnx_lstm.layer_model(params.input_size, params.hidden_size, arch.config(), params.dtype, lengths=False)
        graph = model.graph
        weights = [inp for inp in graph.input if inp.name in native]
        for inp in weights:  # the weights become the model's own initializers
            graph.input.remove(inp)
        graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(native[inp.name]), inp.name) for inp in weights)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    def run(self, path, arch, x, h0, c0):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 3:
            raise PortError(f"{path}: the proof runs a model of inputs (x, h0, c0), time-major; this one takes "
                            f"{[i.name for i in inputs]}")
        y, h_T, c_T = session.run(None, {i.name: a for i, a in zip(inputs, (x, h0, c0), strict=True)})[:3]
        return {"y": y, "h_T": h_T, "c_T": c_T}


class SpecFormat(Format):
    name, row_id, suffixes = "spec", "", (".lstm.safetensors",)
    framework = "spec.layer.forward"

    @property
    def row(self):
        return None

    def read(self, path, hint):
        from spec.weights_file import load_layer_weights

        weights = load_layer_weights(path)
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


FORMATS = {f.name: f for f in (TorchFormat(), KerasFormat(), FlaxFormat(), OnnxFormat(), SpecFormat())}


def format_of(path: Path, name: str | None) -> Format:
    if name:
        if name not in FORMATS:
            raise PortError(f"unknown format {name!r}; the formats are {', '.join(FORMATS)}")
        return FORMATS[name]
    # The longest suffix first: .lstm.safetensors is the spec's, .safetensors PyTorch's.
    for fmt in sorted(FORMATS.values(), key=lambda f: -max(len(s) for s in f.suffixes)):
        if any(str(path).endswith(suffix) for suffix in fmt.suffixes):
            return fmt
    raise PortError(f"{path}: cannot tell the format from the name; give --from/--to ({', '.join(FORMATS)})")


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
          arch: Architecture, seed: int = 0, T: int = 7, B: int = 3) -> list[Agreement]:
    """Both files run by their frameworks on one seeded random input, against the spec in float64 (on the
    source's canonical parameters) and against each other."""
    rng = np.random.default_rng(seed)
    L, D = arch.num_layers, arch.config().num_directions
    dtype = source_params.dtype
    x = rng.standard_normal((T, B, source_params.input_size)).astype(dtype)
    h0 = rng.uniform(-0.9, 0.9, (L * D, B, source_params.output_size)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, source_params.hidden_size)).astype(dtype)
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    fwd = spec_layer.forward(source_params.astype(np.float64), wide(x), wide(h0), wide(c0), config=arch.config())
    spec = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}
    tol = tolerance(dtype.name, "layer outputs")
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
            out=print) -> int:
    params, arch = source.read(source_path, hint)
    out(f"{source_path} ({source.name}): {arch.num_layers} layer(s), {arch.direction}, input {params.input_size}, "
        f"hidden {params.hidden_size}" + (f", projection {arch.proj_size}" if arch.proj_size else "")
        + (", peepholes" if arch.peephole else "") + f", {params.dtype.name}")
    try:
        target.write(target_path, params, arch)
    except NotSupported as error:
        out(f"refused: {target.name} cannot hold this LSTM: {error}")
        return EXIT_REFUSED
    back, _ = target.read(target_path, arch)
    differ = _same(params, back)
    out(f"{target_path} ({target.name}) written; read back: " + ("the same parameters, bit for bit" if not differ
                                                                 else f"DIFFERENT in {', '.join(differ)}"))
    agreements = prove(source, source_path, params, target, target_path, arch)
    out("both files, each run by its framework on one seeded random input (tolerance: the suite's, layer outputs):")
    for agreement in agreements:
        out(agreement.line())
    return EXIT_AGREES if not differ and all(a.ratio <= 1 for a in agreements) else EXIT_DISAGREES


def roundtrip(source_path: Path, source: Format, via: list[Format], workdir: Path, hint: Architecture | None, out=print) -> int:
    """source -> via[0] -> via[1] -> ... -> source's format again: every hop proven, and the end bit for bit the start."""
    start, arch = source.read(source_path, hint)
    path, fmt, status = source_path, source, EXIT_AGREES
    for k, hop in enumerate([*via, source]):
        suffix = hop.suffixes[0]
        target_path = workdir / f"hop{k + 1}-{hop.name}{suffix}"
        out(f"\n== {fmt.name} -> {hop.name}")
        status = max(status, convert(path, target_path, fmt, hop, arch, out))
        if status == EXIT_REFUSED:
            return status
        path, fmt = target_path, hop
    end, _ = source.read(path, arch)
    differ = _same(start, end)
    out(f"\nround trip {' -> '.join([source.name, *(f.name for f in via), source.name])}: "
        + ("the same parameters as the start, bit for bit" if not differ else f"DIFFERENT in {', '.join(differ)}"))
    return max(status, EXIT_DISAGREES if differ else EXIT_AGREES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.port", description=__doc__.split("\n\n")[0])
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
        command.add_argument("--layers", type=int, help="the number of layers (Keras and flax sources)")
        command.add_argument("--direction", choices=spec_layer.DIRECTIONS, help="forward, reverse or bidirectional (Keras and flax sources)")
    args = parser.parse_args(argv)
    hint = None
    if args.layers is not None or args.direction is not None:
        if args.layers is None or args.direction is None:
            parser.error("--layers and --direction go together")
        hint = Architecture(args.layers, args.direction)
    try:
        source = format_of(args.source, args.source_format)
        if args.command == "convert":
            return convert(args.source, args.target, source, format_of(args.target, args.target_format), hint)
        args.workdir.mkdir(parents=True, exist_ok=True)
        via = [format_of(Path("x"), name.strip()) for name in args.via.split(",") if name.strip()]
        return roundtrip(args.source, source, via, args.workdir, hint)
    except (PortError, Unavailable, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
