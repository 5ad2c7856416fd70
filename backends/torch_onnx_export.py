"""PyTorch's ONNX export as an implementation: a ``torch.nn.LSTM`` exported by ``torch.onnx.export``, then
run by ONNX Runtime. Two rows, one per exporter:

    torch.onnx/torchscript+onnxruntime   ``dynamo=False``: the TorchScript tracer and its LSTM symbolic
    torch.onnx/dynamo+onnxruntime        ``dynamo=True`` (torch 2.13's default): ``torch.export``, then
                                         onnxscript's torchlib translates ``aten::lstm`` (onnxscript needed)

What is exported is what a user exports: the module of ``torch/nn.LSTM`` holding the weights
(:meth:`TorchLSTM.to_native_layer`, its state_dict: the layout of both rows), wrapped so that it takes
(x, h0, c0), and with sequence lengths (x, h0, c0, lengths) through ``pack_padded_sequence`` /
``pad_packed_sequence`` (:func:`backends.torch_lstm.run_lstm`, the same call as ``torch/nn.LSTM``'s). It is
exported once from example inputs of the right shapes (zeros, every length T) and then run on the real
ones: the exported graph must hold for any values, as it does for its users.

Forward only (ONNX Runtime has no LSTM gradient), float32 only (its LSTM kernel rejects double). The
features are those the exported graph carries; where an exporter refuses one, that is "not supported" with
the exporter's own message, and where it writes a model that is wrong, a known failure (findings/).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from backends.base import Config, Implementation, KnownFailure, NativeCache, framework_problem, import_framework
from backends.timing import TimedPass, Timing
from backends.torch_lstm import INSTALL_HINT as TORCH_HINT
from backends.torch_lstm import TorchLSTM, run_lstm
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams

ONNX_HINT = "onnx is not installed (pip install 'lstm-conformance[onnxruntime]')"
ORT_HINT = "onnxruntime is not installed (pip install 'lstm-conformance[onnxruntime]')"
ONNXSCRIPT_HINT = "torch.onnx.export(dynamo=True) needs onnxscript, which is not installed (pip install onnxscript)"

#: The layout of both rows: the exported module's state_dict (torch/nn.LSTM's layer layout).
_LSTM = TorchLSTM()

INPUTS = ("x", "h0", "c0")
OUTPUTS = ("y", "h_n", "c_n")

COMMON_REASONS = {
    "float64": "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
    "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
    "float16": "ONNX Runtime's LSTM kernel is float32 only",
    "bfloat16": "ONNX Runtime's LSTM kernel is float32 only",
    "peephole": "torch.nn.LSTM, the exported module, has no peepholes",
    "reverse": "torch.nn.LSTM, the exported module, has no reverse-only direction",
    "mask": "torch.nn.LSTM, the exported module, takes no mask of steps",
    "mask_previous_output": "torch.nn.LSTM, the exported module, takes no mask of steps",
    "cell_clip": "torch.nn.LSTM, the exported module, has no cell clip",
    "gate_clip": "torch.nn.LSTM, the exported module, has no gate clip",
    "proj_clip": "torch.nn.LSTM, the exported module, has no clip on the projection",
    "coupled": "torch.nn.LSTM, the exported module, has no coupled input and forget gates",
}

#: torch 2.13: what the TorchScript exporter raises for nn.LSTM(proj_size > 0).
TORCHSCRIPT_PROJECTION = (
    "torch.onnx.export(dynamo=False) refuses it: \"Unsupported: ONNX export of operator LSTM, LSTMs with "
    "projections\" (findings/torch_onnx_torchscript_projection.py)"
)
#: torch 2.13: what torch.export raises for pack_padded_sequence (step 1 of the dynamo exporter).
DYNAMO_LENGTHS = (
    "torch.onnx.export(dynamo=True) refuses pack_padded_sequence: torch.export raises GuardOnDataDependentSymNode "
    "(\"Could not extract specialized integer from data-dependent expression\"), pytorch/pytorch#112044 "
    "(findings/torch_onnx_dynamo_packed_sequence.py)"
)
DYNAMO_EMPTY = "torch.onnx.export(dynamo=True) cannot export sequence lengths at all (pack_padded_sequence)"

DYNAMO_PROJECTION_BUG = KnownFailure(
    "layer outputs",
    "torch 2.13's dynamo exporter (onnxscript 0.7.2's torchlib aten_lstm) writes nn.LSTM(proj_size=P) as an ONNX "
    "LSTM with hidden_size = P, without weight_hr and with the weights cut to 4P rows; ONNX Runtime refuses the "
    "model (one layer: 'Input initial_c must have shape'; stacked or bidirectional: a Concat shape error at load). "
    "No upstream report found (findings/torch_onnx_dynamo_projection.py)",
    features=("projection",),
)
EMPTY_ROWS_ZERO_STATE = KnownFailure(
    "layer outputs",
    "the exported model takes a length of 0 (nn.LSTM itself refuses it), and ONNX Runtime 1.32 returns zeros as the "
    "final state of that row, not its initial state (spec, TF1, Keras): ORT chose it in microsoft/onnxruntime#749, "
    "ONNX's operator text does not say (onnx/onnx#1674). Reproducer: findings/torch_onnx_export_empty_sequences.py "
    "(ORT alone: findings/onnxruntime_lstm_empty_rows_state.py)",
    features=("empty_sequences",),
)


def _threads() -> int:
    return int(os.environ.get("LSTMC_THREADS", os.cpu_count() or 1))


def _exportable(torch, lstm, total_length: int, with_lengths: bool):
    """What a user exports: the LSTM and the call around it (:func:`run_lstm`), as a module of its own."""

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, h0, c0, lengths):
            return run_lstm(torch, self.lstm, x, h0, c0, lengths, total_length=total_length)

    class Padded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, h0, c0):
            return run_lstm(torch, self.lstm, x, h0, c0)

    return (Packed if with_lengths else Padded)().eval()


@dataclass
class TorchOnnxExport(Implementation):
    id: str = ""
    exporter: str = "torchscript"  # "torchscript" (dynamo=False) or "dynamo" (dynamo=True)
    framework: str = "torch.onnx"
    variants: tuple[str, ...] = ("standard",)
    dtypes: tuple[str, ...] = ("float32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    gradients: bool = False

    def __post_init__(self):
        self._sessions = NativeCache()

    # -- availability ----------------------------------------------------------

    def _needed(self) -> tuple[tuple[str, str], ...]:
        """The modules this row imports, each with what to say when it is not installed."""
        needed = (("torch", TORCH_HINT), ("onnx", ONNX_HINT), ("onnxruntime", ORT_HINT))
        return (*needed, ("onnxscript", ONNXSCRIPT_HINT)) if self.exporter == "dynamo" else needed

    def _missing(self) -> dict[str, str]:
        """Each needed module that does not import here, with why (its own hint, or the real import error)."""
        return {module: problem for module, hint in self._needed() if (problem := framework_problem(module, hint)) is not None}

    def _availability(self, device: str) -> str | None:
        if missing := self._missing():  # the first, in the order of _needed(); environment() names them all
            return next(iter(missing.values()))
        ort = import_framework("onnxruntime", ORT_HINT)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "no CUDA execution provider in this onnxruntime build (install onnxruntime-gpu on a machine with a GPU)"
        return None

    def _environment(self, device: str) -> dict[str, object]:
        """Each needed module's version, or why it is missing ("unavailable: ..."), the exporter, and ONNX
        Runtime's threads and providers where it imports."""
        missing = self._missing()
        env: dict[str, object] = {}
        for module, hint in self._needed():
            env[module] = f"unavailable: {missing[module]}" if module in missing else import_framework(module, hint).__version__
            if module == "torch":
                env["exporter"] = f"torch.onnx.export(dynamo={self.exporter == 'dynamo'})"
        if "onnxruntime" not in missing:
            ort = import_framework("onnxruntime", ORT_HINT)
            env.update(intra_op_threads=_threads(), providers=ort.get_available_providers())
        return env

    # -- layouts: the exported module's ------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return _LSTM.to_native(params, forget_bias)

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        return _LSTM.from_native(native)

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        return _LSTM.to_native_layer(params, layer)

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        return _LSTM.from_native_layer(native, layer)

    # -- export, then ONNX Runtime ---------------------------------------------------

    def export(self, params: LayerParams, layer: LayerConfig, T: int, B: int, with_lengths: bool) -> bytes:
        """The serialized ONNX model of nn.LSTM holding ``params`` as ``layer``, exported from example inputs of
        shape (T, B): inputs x, h0, c0 (and lengths), outputs y, h_n, c_n."""
        torch = import_framework("torch", TORCH_HINT)
        module = _LSTM.layer_module(params, layer, "float32", "cpu")
        L, D, P, H = layer.num_layers, layer.num_directions, params.output_size, params.hidden_size
        example = [torch.zeros(T, B, params.input_size), torch.zeros(L * D, B, P), torch.zeros(L * D, B, H)]
        names = list(INPUTS)
        if with_lengths:
            example.append(torch.full((B,), T, dtype=torch.int64))
            names.append("lengths")
        model = _exportable(torch, module, T, with_lengths)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, tracer warnings
            warnings.simplefilter("ignore")
            if self.exporter == "dynamo":
                program = torch.onnx.export(model, tuple(example), dynamo=True, verbose=False,
                                            input_names=names, output_names=list(OUTPUTS))
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            torch.onnx.export(model, tuple(example), buffer, dynamo=False, input_names=names, output_names=list(OUTPUTS))
            return buffer.getvalue()

    def session(self, params: LayerParams, layer: LayerConfig, T: int, B: int, with_lengths: bool, device: str):
        """An ONNX Runtime session on the exported model (cached per params object, layer, shape and device)."""

        def build():
            ort = import_framework("onnxruntime", ORT_HINT)
            options = ort.SessionOptions()
            options.intra_op_num_threads = _threads()
            providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            return ort.InferenceSession(self.export(params, layer, T, B, with_lengths), options, providers=providers)

        return self._sessions.get(params, (layer, T, B, with_lengths, device), build)

    def _run(self, params: LayerParams, layer: LayerConfig, x, h0, c0, lengths, device: str):
        session = self.session(params, layer, x.shape[0], x.shape[1], lengths is not None, device)
        feeds = {"x": x, "h0": h0, "c0": c0}
        if lengths is not None:
            feeds["lengths"] = lengths
        return session, feeds

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        session, feeds = self._run(params, layer, x, h0, c0, lengths, config.device)
        return tuple(session.run(list(OUTPUTS), feeds))

    # -- the cell contract: a one-layer nn.LSTM --------------------------------------

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        y, h_n, c_n = self._forward_layer(*_as_layer(params, x, h0, c0), layer=LayerConfig(forget_bias=forget_bias),
                                          lengths=None, mask=None, config=config)
        return y, h_n[0], c_n[0]

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        """Exported once; each run is one session.run on the same feeds (NumPy arrays: ORT's own inputs)."""
        layer_params, x, h0, c0 = _as_layer(params, x, h0, c0)
        session, feeds = self._run(layer_params, LayerConfig(forget_bias=forget_bias), x, h0, c0, None, timing.device)
        last = {}

        def run():
            last["h_seq"] = session.run(["y"], feeds)[0]

        return TimedPass(run, lambda: {"h_seq": last["h_seq"].astype(np.float64)}, resident=timing.device == "cpu")


def _as_layer(params: LSTMParams, x, h0, c0):
    """The cell contract's arguments as a one-layer, one-direction layer's."""
    return LayerParams((params,), 1), x, h0[None], c0[None]


def _reasons(**extra: str) -> dict[str, str]:
    return {**COMMON_REASONS, **extra}


IMPLEMENTATIONS = (
    TorchOnnxExport(
        id="torch.onnx/torchscript+onnxruntime",
        exporter="torchscript",
        description="torch.nn.LSTM exported by torch.onnx.export(dynamo=False), run by ONNX Runtime",
        layer_features=("stacked", "bidirectional", "lengths", "empty_sequences"),
        unsupported_reasons=_reasons(projection=TORCHSCRIPT_PROJECTION),
        known_failures=(EMPTY_ROWS_ZERO_STATE,),
    ),
    TorchOnnxExport(
        id="torch.onnx/dynamo+onnxruntime",
        exporter="dynamo",
        description="torch.nn.LSTM exported by torch.onnx.export(dynamo=True), run by ONNX Runtime",
        layer_features=("stacked", "bidirectional", "projection"),
        unsupported_reasons=_reasons(lengths=DYNAMO_LENGTHS, empty_sequences=DYNAMO_EMPTY),
        known_failures=(DYNAMO_PROJECTION_BUG,),
    ),
)
