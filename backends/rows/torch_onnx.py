"""PyTorch's ONNX export: a ``torch.nn.LSTM`` exported by ``torch.onnx.export``, then run by ONNX Runtime. One row
per exporter:

    torch.onnx/torchscript+onnxruntime   ``dynamo=False``: the TorchScript tracer and its LSTM symbolic
    torch.onnx/dynamo+onnxruntime        ``dynamo=True`` (torch 2.13's default): ``torch.export``, then
                                         onnxscript's torchlib translates ``aten::lstm`` (onnxscript needed)

What is exported is what a user exports: torch/nn.LSTM's module holding the weights (its layout, the state_dict:
backends/layouts/torch.py), wrapped so that it takes (x, h0, c0), and with sequence lengths (x, h0, c0, lengths)
through ``pack_padded_sequence`` / ``pad_packed_sequence`` (:func:`backends.rows.torch.run_lstm`, torch/nn.LSTM's
own call). It is exported from example inputs of the case's shape (zeros, every length T), once per parameter set
and shape (the row's cache of built parameters, then one export per (T, B, lengths)), and then run on the real
inputs: the exported graph must hold for any values, as it does for its users.

Forward only (ONNX Runtime has no LSTM gradient), float32 only (its LSTM kernel rejects double). The features are
those the exported graph carries; where an exporter refuses one, that is "not supported" with the exporter's own
message, and where it writes a model that is wrong, a known failure (findings/).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace

from backends.layouts import torch as torch_layouts
from backends.rows.torch import TorchLSTM, run_lstm
from backends.runtimes.onnxruntime import INSTALL_HINT as ORT_HINT
from backends.runtimes.onnxruntime import LSTM_KERNEL_REASONS, ONNXRUNTIME, OPTIMIZATIONS
from backends.runtimes.torch import INSTALL_HINT as TORCH_HINT
from backends.runtimes.torch import torch
from contract.row import KnownFailure, Row
from contract.runtime import framework_problem, import_framework
from contract.vocabulary import Device, Feature, Kind

ONNX_HINT = "onnx is not installed (pip install 'lstm-conformance[onnxruntime]')"
ONNXSCRIPT_HINT = "torch.onnx.export(dynamo=True) needs onnxscript, which is not installed (pip install onnxscript)"
NOT_MASKED = "torch.nn.LSTM, the exported module, takes no mask of steps"
INPUTS = ("x", "h0", "c0")
OUTPUTS = ("y", "h_n", "c_n")

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
    "torch 2.13's dynamo exporter (onnxscript 0.7.2's torchlib aten_lstm) writes nn.LSTM(proj_size=P) as an ONNX "
    "LSTM with hidden_size = P, without weight_hr and with the weights cut to 4P rows; ONNX Runtime refuses the "
    "model (one layer: 'Input initial_c must have shape'; stacked or bidirectional: a Concat shape error at load). "
    "No upstream report found (findings/torch_onnx_dynamo_projection.py)",
    kinds=(Kind.OUTPUTS,), features={Feature.PROJECTION},
)
EMPTY_ROWS_ZERO_STATE = KnownFailure(
    "the exported model takes a length of 0 (nn.LSTM itself refuses it), and ONNX Runtime 1.32 returns zeros as the "
    "final state of that row, not its initial state (spec, TF1, Keras): ORT chose it in microsoft/onnxruntime#749, "
    "ONNX's operator text does not say (onnx/onnx#1674). Reproducer: findings/torch_onnx_export_empty_sequences.py "
    "(ORT alone: findings/onnxruntime_lstm_empty_rows_state.py)",
    kinds=(Kind.OUTPUTS,), features={Feature.EMPTY_SEQUENCES},
)

#: The module exported is torch/nn.LSTM's, built as that row builds it (time-major, on the CPU, float32).
NN_LSTM = TorchLSTM()


def exportable(lstm, total_length: int, with_lengths: bool):
    """What a user exports: the LSTM and the call around it (:func:`run_lstm`), as a module of its own."""
    t = torch()

    class Packed(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, h0, c0, lengths):
            return run_lstm(self.lstm, x, h0, c0, lengths, total_length=total_length)

    class Padded(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, h0, c0):
            return run_lstm(self.lstm, x, h0, c0)

    return (Packed if with_lengths else Padded)().eval()


@dataclass(eq=False)
class Exported:
    """nn.LSTM holding one parameter set, and its sessions on ``device``, one per example shape (T, B, lengths)."""

    module: object
    device: str
    sessions: dict = field(default_factory=dict)


@dataclass(eq=False)
class TorchOnnxExport(Row):
    runtime: object = ONNXRUNTIME
    layout: object = torch_layouts.NN_LSTM
    dtypes: tuple = ("float32",)
    devices: tuple = (Device.CPU, Device.CUDA)
    gradients: bool = False
    #: "torchscript" (dynamo=False) or "dynamo" (dynamo=True).
    exporter: str = "torchscript"
    #: ONNX Runtime's graph optimisations on the exported model (backends.runtimes.onnxruntime.OPTIMIZATIONS).
    optimization: str = "all"

    def needed(self) -> tuple[tuple[str, str], ...]:
        """The modules this row imports, each with what to say when it is not installed."""
        needed = (("torch", TORCH_HINT), ("onnx", ONNX_HINT), ("onnxruntime", ORT_HINT))
        return (*needed, ("onnxscript", ONNXSCRIPT_HINT)) if self.exporter == "dynamo" else needed

    def missing(self) -> dict[str, str]:
        """Each needed module that does not import here, with why (its own hint, or the real import error)."""
        return {module: problem for module, hint in self.needed() if (problem := framework_problem(module, hint))}

    def _availability(self, device):
        if missing := self.missing():  # the first, in the order of needed(); environment() names them all
            return next(iter(missing.values()))
        return self.runtime.availability(device)

    def _environment(self, device):
        """Each needed module's version, or why it is missing ("unavailable: ..."), the exporter, and ONNX Runtime's
        threads and providers where it imports."""
        missing, env = self.missing(), {}
        for module, hint in self.needed():
            env[module] = f"unavailable: {missing[module]}" if module in missing else import_framework(module, hint).__version__
            if module == "torch":
                env["exporter"] = f"torch.onnx.export(dynamo={self.exporter == 'dynamo'})"
        if "onnxruntime" in missing:
            return env
        return {**env, **self.runtime.environment(device), "graph_optimization_level": OPTIMIZATIONS[self.optimization]}

    def build(self, native, *, params, layer, device, half=None):
        return Exported(NN_LSTM.build(native, params=params, layer=layer, device=Device.CPU), str(device))

    def call(self, exported, x, h0, c0, lengths, mask, *, layer):
        shape = (x.shape[0], x.shape[1], lengths is not None)
        if shape not in exported.sessions:
            exported.sessions[shape] = self.runtime.session(self.export(exported.module, *shape), exported.device,
                                                            optimization=self.optimization)
        feeds = {"x": x, "h0": h0, "c0": c0, **({} if lengths is None else {"lengths": lengths})}
        return tuple(exported.sessions[shape].run(list(OUTPUTS), feeds))

    def export(self, module, T: int, B: int, with_lengths: bool) -> bytes:
        """The serialized ONNX model of ``module`` (an nn.LSTM), exported from zeros of shape (T, B) (and every length
        T): inputs x, h0, c0 (and lengths), outputs y, h_n, c_n."""
        t = torch()
        D = 2 if module.bidirectional else 1
        P = module.proj_size or module.hidden_size
        example = [t.zeros(T, B, module.input_size), t.zeros(module.num_layers * D, B, P),
                   t.zeros(module.num_layers * D, B, module.hidden_size)]
        names = list(INPUTS)
        if with_lengths:
            example.append(t.full((B,), T, dtype=t.int64))
            names.append("lengths")
        model = exportable(module, T, with_lengths)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, tracer warnings
            warnings.simplefilter("ignore")
            if self.exporter == "dynamo":
                program = t.onnx.export(model, tuple(example), dynamo=True, verbose=False, input_names=names,
                                        output_names=list(OUTPUTS))
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            t.onnx.export(model, tuple(example), buffer, dynamo=False, input_names=names, output_names=list(OUTPUTS))
            return buffer.getvalue()



REASONS = {**LSTM_KERNEL_REASONS, Feature.MASK: NOT_MASKED, Feature.MASK_PREVIOUS_OUTPUT: NOT_MASKED}

def unoptimized(row: TorchOnnxExport) -> TorchOnnxExport:
    """The same export run with ONNX Runtime's graph optimisations off (ORT_DISABLE_ALL): the exporter's graph as it
    wrote it, beside the optimised one (ORT's default), so that a fusion that changes the answer shows."""
    return replace(row, id=f"{row.id}(unoptimized)", optimization="none",
                   description=f"{row.description}, its graph not optimised (ORT_DISABLE_ALL)")


_EXPORTS = (
    TorchOnnxExport(
        id="torch.onnx/torchscript+onnxruntime", exporter="torchscript",
        description="torch.nn.LSTM exported by torch.onnx.export(dynamo=False), run by ONNX Runtime",
        features=frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES}),
        reasons={**REASONS, Feature.PROJECTION: TORCHSCRIPT_PROJECTION},
        known_failures=(EMPTY_ROWS_ZERO_STATE,),
    ),
    TorchOnnxExport(
        id="torch.onnx/dynamo+onnxruntime", exporter="dynamo",
        description="torch.nn.LSTM exported by torch.onnx.export(dynamo=True), run by ONNX Runtime",
        features=frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION}),
        reasons={**REASONS, Feature.LENGTHS: DYNAMO_LENGTHS, Feature.EMPTY_SEQUENCES: DYNAMO_EMPTY},
        known_failures=(DYNAMO_PROJECTION_BUG,),
    ),
)
ROWS = (*_EXPORTS, *(unoptimized(row) for row in _EXPORTS))
