"""OpenVINO's CPU plugin (backends/runtimes/openvino.py), reached the two ways its users reach it:

    openvino/LSTMSequence          ONNX's LSTM graph (backends/runtimes/onnx.py, time-major, one node per layer;
                                   layout backends/layouts/onnx.py) read by OpenVINO's ONNX frontend, which makes
                                   each node an ``LSTMSequence-5``, compiled with inference precision f32
    openvino/LSTMSequence(bf16)    the same float32 graph compiled with inference precision bf16: OpenVINO's
                                   reduced precision, judged in the bfloat16 column
    openvino/convert_model         ``ov.convert_model`` of torch.nn.LSTM holding the weights (the module
                                   backends/rows/torch_onnx.py exports; layout backends/layouts/torch.py), f32

**The weights are constants, as in every model a user deploys.** The graph's W, R, B (and P) are initializers, so
each parameter set is compiled on its own (the row's cache of built parameters keeps one per set; about 0.03 s
each, a conversion from torch about 1 s). Measured (OpenVINO 2026.4.1, 2-core AMD EPYC with AVX-512 BF16): with
constant weights the plugin runs its fused RNN node (runtime layer type ``RNNSeq``, oneDNN); with W, R, B as graph
inputs (ONNX Runtime's rows feed them so) it decomposes each LSTMSequence into a ``TensorIterator`` of cells, a
different kernel, whose bf16 answers are not the fused one's. The graph keeps T and B symbolic, as exported models
do.

**What was measured, float32** (``pytest conformance --backend backends.rows.openvino``, and findings/):

- forward, reverse, bidirectional and stacks conform (about 1e-7 from the spec); ``clip`` (the spec's gate_clip)
  conforms where the case has no peepholes (the suite's gate_clip cases all do; checked on its own);
- peepholes: the ONNX frontend reads P and builds ``LSTMSequence-5``, which has no P input: the peepholes are
  dropped without a word (findings/openvino_onnx_lstm_peepholes_input_forget_ignored.py);
- ``input_forget`` (coupled gates): read and never used, the same way;
- ``sequence_lens``: ignored. With dynamic shapes the CPU plugin keeps the fused RNN node, which runs every row for
  all T steps (openvinotoolkit/openvino#10710 turned the decomposition off for dynamic shapes); reshaped to static
  shapes it decomposes into a TensorIterator that honours the lengths but for rows of length 0, which get zeros as
  their final state, as ONNX Runtime's (findings/openvino_lstm_sequence_lens_ignored_dynamic_shapes.py). Through
  ``convert_model`` the same: pack_padded_sequence converts to an LSTMSequence with lengths, and they are ignored;
- float64: the CPU plugin has no f64 inference precision (its documented ones are f32, bf16, f16): an f64 model
  comes back as float64 arrays carrying float32 rounding (1.4e-7 off the spec on 'medium'), so it is not declared;
- ``convert_model`` of nn.LSTM(proj_size > 0) is refused by the PyTorch frontend.

**bfloat16** (the bf16 inference precision on the suite's bfloat16 data fed as float32, which is exact): the fused
RNN node runs in bf16 and returns y and h_T as bfloat16 values (exactly representable, measured), c_T in float32:
it keeps the cell state in float32 from step to step. Its answers are the float32-cell-state policy's to the bit on
every plain case (contract.half_bounds.fits: mean distance 0.000 ulps, worst 0 to 0.5, against 0.13 to 0.33 for
half-storage): that is the policy declared. The row rounds c_T to bfloat16, the policy's own last storage point.
A bfloat16 case with a forget bias is refused by ONNX's layout where b_f / 2 + forget_bias (ONNX has no forget-bias
attribute: it is folded into Wb) is not a bfloat16 value: the bf16 precision stores the constant rounded, so the
row would compute on other data than it was given (measured on 'forget-bias' before the layout refused it: 1.45
ulps in y against a bound of 1.14, c_T 3.04 against 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from backends.layouts import onnx as onnx_layouts
from backends.layouts import torch as torch_layouts
from backends.rows.torch_onnx import NN_LSTM, exportable
from backends.runtimes import onnx as graphs
from backends.runtimes.openvino import BF16, INSTALL_HINT, OPENVINO, OPENVINO_BF16, openvino
from backends.runtimes.torch import INSTALL_HINT as TORCH_HINT
from contract.row import KnownFailure, Row
from contract.runtime import framework_problem, import_framework
from contract.vocabulary import Device, Dtype, Feature, Kind
from spec.precision import Policy
from spec.validation import cast

VERSION = "2026.4.1"
#: What ONNX's operator runs, all of it declared: what OpenVINO gets wrong is a known failure, not a refusal.
OPERATOR_FEATURES = frozenset({Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL,
                               Feature.GATE_CLIP, Feature.COUPLED, Feature.LENGTHS, Feature.EMPTY_SEQUENCES})
NO_MASK = {Feature.MASK: graphs.NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: graphs.NO_MASK}
NO_GRADIENTS = "OpenVINO compiles inference graphs: it has no gradients"
NO_FLOAT64 = (
    f"OpenVINO {VERSION}'s CPU plugin has no f64 inference precision (its documented ones are f32, bf16 and f16): a "
    "float64 model runs in float32 and comes back as float64 arrays carrying float32 rounding (measured 1.4e-7 off "
    "the spec on the 'medium' case)"
)
NO_FLOAT16 = (f"asked for the f16 inference precision, OpenVINO {VERSION}'s CPU plugin on a CPU without AVX-512 FP16 or "
              "AMX-FP16 (a 2-core AMD EPYC with AVX-512 BF16) compiles in bf16 instead (read back from the compiled "
              "model): there is no f16 LSTM to judge")
BF16_ROW = "OpenVINO's bf16 inference precision is the row openvino/LSTMSequence(bf16)"
F32_ONLY = "the reduced precision (bf16 inference precision) is the row openvino/LSTMSequence(bf16)"

PEEPHOLES_DROPPED = KnownFailure(
    f"OpenVINO {VERSION}'s ONNX frontend drops LSTM's peepholes without a word: it reads P, then builds LSTMSequence-5, "
    "which has no P input (src/frontends/onnx/frontend/src/op/lstm.cpp; LSTMSequence-1 had one). Reproducer: "
    "findings/openvino_onnx_lstm_peepholes_input_forget_ignored.py; upstream: none found (openvinotoolkit/openvino "
    "searched; related, the layout attribute ignored the same way: openvinotoolkit/openvino#37820)",
    kinds=(Kind.OUTPUTS,), features={Feature.PEEPHOLE},
)
INPUT_FORGET_IGNORED = KnownFailure(
    f"OpenVINO {VERSION}'s ONNX frontend ignores LSTM's input_forget (coupled gates): it reads the attribute and never "
    "uses it, computing f from its own weights. Reproducer: findings/openvino_onnx_lstm_peepholes_input_forget_ignored.py; "
    "upstream: none found (openvinotoolkit/openvino searched)",
    kinds=(Kind.OUTPUTS,), features={Feature.COUPLED},
)
LENGTHS = (
    f"OpenVINO {VERSION}'s CPU plugin ignores LSTMSequence's sequence lengths when the model's shapes are dynamic (as "
    "an exported model's are): it keeps its fused RNN node, which runs every row for all T steps "
    "(openvinotoolkit/openvino#10710 disabled the decomposition that honours them for dynamic shapes); with static "
    "shapes the lengths are honoured, but rows of length 0 get zeros as their final state. Reproducer: "
    "findings/openvino_lstm_sequence_lens_ignored_dynamic_shapes.py; upstream: none found (openvinotoolkit/openvino "
    "searched)"
)
LENGTHS_IGNORED = KnownFailure(LENGTHS, kinds=(Kind.OUTPUTS,), features={Feature.LENGTHS})
CONVERTED_LENGTHS_IGNORED = KnownFailure(
    "ov.convert_model turns pack_padded_sequence around nn.LSTM into an LSTMSequence with sequence lengths, and "
    + LENGTHS[0].lower() + LENGTHS[1:], kinds=(Kind.OUTPUTS,), features={Feature.LENGTHS},
)
CONVERT_PROJECTION = (
    f"ov.convert_model (OpenVINO {VERSION}'s PyTorch frontend) refuses nn.LSTM(proj_size > 0): \"Model wasn't fully "
    "converted ... aten::lstm: [PyTorch Frontend] Unexpected length of list with weights for rnn operation\""
)
NO_BF16 = "OpenVINO's CPU plugin does not take the bf16 inference precision on this CPU: it compiled with {precision}"
NOT_MASKED = "torch.nn.LSTM, the converted module, takes no mask of steps"
NO_REVERSE = "torch.nn.LSTM, the converted module, has no reverse-only direction"


@dataclass(eq=False)
class Compiled:
    """One parameter set in float32 and its compiled models, one with and one without sequence_lens (made on first
    use); ``dtype``: what the row answers in (bfloat16 for the bf16 row)."""

    weights: dict
    input_size: int
    hidden_size: int
    dtype: np.dtype
    sessions: dict = field(default_factory=dict)


def _answer(outputs, dtype) -> tuple[np.ndarray, ...]:
    """The outputs in the row's dtype: float32 as they are; for the bf16 row rounded to bfloat16 (y and h_T are
    bfloat16 values already, c_T is rounded where the float32-cell-state policy stores it)."""
    if np.dtype(dtype) == np.float32:
        return tuple(outputs)
    return tuple(cast(np.asarray(a), Dtype.BFLOAT16, name) for a, name in zip(outputs, ("y", "h_T", "c_T")))


@dataclass(eq=False)
class OpenVinoLSTMSequence(Row):
    """ONNX's LSTM graph with constant weights, compiled by OpenVINO's CPU plugin at the runtime's precision."""

    id: str = "openvino/LSTMSequence"
    description: str = "ONNX's LSTM graph (one node per layer, weights constant) read by OpenVINO, CPU plugin, f32"
    runtime: object = OPENVINO
    layout: object = onnx_layouts.LSTM_NODES
    features: frozenset = OPERATOR_FEATURES
    dtypes: tuple = (Dtype.FLOAT32,)
    gradients: bool = False
    reasons: dict = field(default_factory=lambda: {
        Dtype.FLOAT64: NO_FLOAT64, Dtype.BFLOAT16: BF16_ROW, Dtype.FLOAT16: NO_FLOAT16, "gradients": NO_GRADIENTS,
        **NO_MASK})
    known_failures: tuple = (PEEPHOLES_DROPPED, INPUT_FORGET_IGNORED, LENGTHS_IGNORED)

    def _availability(self, device):
        return self.runtime.availability(device) or framework_problem("onnx", graphs.GRAPH_HINT)

    def _environment(self, device):
        if (problem := self._availability(device)) is not None:
            return {"unavailable": problem}
        return {**self.runtime.environment(device), "onnx": graphs.onnx().__version__, "weights": "constants"}

    def build(self, native, *, params, layer, device, half=None):
        # The data are float32, or bfloat16 values (exact in float32) for the bf16 row: rounded to bfloat16 here for
        # its timed passes, which start from float32 data. The forget bias is in B.
        if half is not None:
            native = {name: self.runtime.cast(value, half) for name, value in native.items()}
        weights = {name: np.asarray(value, np.float32) for name, value in native.items()}
        answer = np.dtype(np.float32) if half is None and params.dtype == np.float32 else Dtype.BFLOAT16.numpy()
        return Compiled(weights, params.input_size, params.hidden_size, answer)

    def session(self, compiled: Compiled, layer, with_lengths: bool):
        if with_lengths not in compiled.sessions:
            model = graphs.layer_model(compiled.input_size, compiled.hidden_size, replace(layer, forget_bias=0.0),
                                       np.float32, lengths=with_lengths, weight_name=onnx_layouts.weight_name)
            compiled.sessions[with_lengths] = self.runtime.session(graphs.with_initializers(model, compiled.weights), Device.CPU,
                                                                   "ONNX LSTM graph")
        return compiled.sessions[with_lengths]

    def call(self, compiled, x, h0, c0, lengths, mask, *, layer):
        session = self.session(compiled, layer, lengths is not None)
        feeds = graphs.layer_feeds({}, *(np.asarray(a, np.float32) for a in (x, h0, c0)), lengths)
        return _answer(graphs.layer_outputs(session.run(None, feeds)), compiled.dtype)


@dataclass(eq=False)
class OpenVinoLSTMSequenceBF16(OpenVinoLSTMSequence):
    """The same graphs compiled with inference precision bf16, on the suite's bfloat16 data."""

    id: str = "openvino/LSTMSequence(bf16)"
    description: str = ("ONNX's LSTM graph (float32, weights constant) compiled by OpenVINO's CPU plugin with "
                        "inference precision bf16")
    runtime: object = OPENVINO_BF16
    dtypes: tuple = (Dtype.BFLOAT16,)
    #: Measured: the fused RNN node's answers are float32-cell-state's bit for bit (module docstring).
    policies: dict = field(default_factory=lambda: {Dtype.BFLOAT16: Policy.FLOAT32_CELL_STATE})
    reasons: dict = field(default_factory=lambda: {
        Dtype.FLOAT32: "the bf16 inference precision computes in bfloat16: float32 is the row openvino/LSTMSequence",
        Dtype.FLOAT64: NO_FLOAT64, Dtype.FLOAT16: NO_FLOAT16, "gradients": NO_GRADIENTS, **NO_MASK})
    known_failures: tuple = (PEEPHOLES_DROPPED, INPUT_FORGET_IGNORED, LENGTHS_IGNORED)

    def _availability(self, device):
        """Where the CPU has no bf16 (no AVX-512 BF16, AMX or AVX-NE-CONVERT) the plugin compiles in f32 whatever the
        hint says: read back, that is why the row cannot run here."""
        if (problem := super()._availability(device)) is not None:
            return problem
        precision = self.runtime.in_effect(self.runtime.probe())["inference_precision"]
        return None if precision == BF16 else NO_BF16.format(precision=precision)



# ---------------------------------------------------------------------------
# ov.convert_model of torch.nn.LSTM
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class Converted:
    """nn.LSTM holding one parameter set, and its compiled conversions, one per example shape (T, B, lengths)."""

    module: object
    sessions: dict = field(default_factory=dict)


@dataclass(eq=False)
class OpenVinoConvertedTorch(Row):
    """torch.nn.LSTM converted by ``ov.convert_model`` from example inputs of the case's shape (zeros, every length
    T), then run on the real inputs: the converted model must hold for any values, as it does for its users."""

    id: str = "openvino/convert_model"
    description: str = "torch.nn.LSTM converted by ov.convert_model (PyTorch frontend), OpenVINO CPU plugin, f32"
    runtime: object = OPENVINO
    layout: object = torch_layouts.NN_LSTM
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES})
    dtypes: tuple = (Dtype.FLOAT32,)
    gradients: bool = False
    reasons: dict = field(default_factory=lambda: {
        Dtype.FLOAT64: NO_FLOAT64, Dtype.BFLOAT16: F32_ONLY, Dtype.FLOAT16: NO_FLOAT16, "gradients": NO_GRADIENTS,
        Feature.PROJECTION: CONVERT_PROJECTION, Feature.REVERSE: NO_REVERSE, Feature.MASK: NOT_MASKED,
        Feature.MASK_PREVIOUS_OUTPUT: NOT_MASKED})
    known_failures: tuple = (CONVERTED_LENGTHS_IGNORED,)

    def _availability(self, device):
        return self.runtime.availability(device) or framework_problem("torch", TORCH_HINT)

    def _environment(self, device):
        env = {"torch": (f"unavailable: {problem}" if (problem := framework_problem("torch", TORCH_HINT))
                         else import_framework("torch", TORCH_HINT).__version__),
               "converter": "ov.convert_model(torch.nn.Module, example_input=...)"}
        if (problem := self.runtime.availability(device)) is not None:
            return {**env, "unavailable": problem}
        return {**self.runtime.environment(device), **env}

    def build(self, native, *, params, layer, device, half=None):
        return Converted(NN_LSTM.build(native, params=params, layer=layer, device=Device.CPU))

    def call(self, converted, x, h0, c0, lengths, mask, *, layer):
        shape = (x.shape[0], x.shape[1], lengths is not None)
        if shape not in converted.sessions:
            converted.sessions[shape] = self.runtime.session(self.convert(converted.module, *shape), Device.CPU)
        feeds = [x, h0, c0] + ([] if lengths is None else [np.asarray(lengths, np.int64)])
        return tuple(converted.sessions[shape].run(None, dict(enumerate(feeds))))

    def convert(self, module, T: int, B: int, with_lengths: bool):
        """The ov.Model of ``module`` (an nn.LSTM) called as :func:`backends.rows.torch.run_lstm` calls it, converted
        from zeros of shape (T, B) (and every length T)."""
        t = import_framework("torch", TORCH_HINT)
        D = 2 if module.bidirectional else 1
        example = [t.zeros(T, B, module.input_size), t.zeros(module.num_layers * D, B, module.hidden_size),
                   t.zeros(module.num_layers * D, B, module.hidden_size)]
        if with_lengths:
            example.append(t.full((B,), T, dtype=t.int64))
        with warnings.catch_warnings():  # the tracer's warnings
            warnings.simplefilter("ignore")
            return openvino().convert_model(exportable(module, T, with_lengths), example_input=tuple(example))


ROWS = (
    OpenVinoLSTMSequence(),
    OpenVinoLSTMSequenceBF16(),
    OpenVinoConvertedTorch(),
)

__all__ = ["CONVERT_PROJECTION", "INSTALL_HINT", "LENGTHS_IGNORED", "NO_FLOAT64", "OpenVinoConvertedTorch",
           "OpenVinoLSTMSequence", "OpenVinoLSTMSequenceBF16", "PEEPHOLES_DROPPED", "ROWS"]
