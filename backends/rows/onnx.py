"""ONNX's ``LSTM`` operator, run as a graph of one node per layer (backends/runtimes/onnx.py) by ONNX Runtime and by
onnx's reference evaluator; the cell is that graph with one forward node. Layout: backends/layouts/onnx.py. Each row
keeps one session per architecture (sizes, LayerConfig, dtype, device, with or without sequence_lens): every
parameter set of it reuses that session, its weights fed as graph inputs on each run.

- ``onnxruntime/LSTM``: time-major (``layout=0``); every feature the operator has: ``direction`` forward, reverse
  and bidirectional, stacks, peepholes, ``sequence_lens``, ``clip`` (the spec's gate_clip: ORT clips each gate's
  pre-activation, bias and peephole included) and ``input_forget`` (coupled gates). Forward only, float32 only.
- ``onnxruntime/LSTM-batch-major``: the same graphs with ``layout=1`` (X (B, T, I), LSTM's attribute since opset 14).
  ORT refuses them when the session is created ("Batchwise recurrent operations (layout == 1) are not supported";
  since the opset-14 kernels, microsoft/onnxruntime#7687): that refusal, found by building one, is the row's
  "unavailable" reason, so the matrix shows it and a release that accepts layout=1 gets judged at once.
- ``onnx.reference/LSTM``: the operator's executable definition as onnx ships it (NumPy, in the inputs' dtype).
  onnx 1.23.2's kernel (onnx/reference/ops/op_lstm.py) takes ``sequence_lens``, ``clip`` and ``input_forget`` and
  ignores them ("TODO: support overridden attributes"): a graph with any of them runs as if they were absent,
  without a warning. They are declared (the row runs what the operator offers) and are known failures.

On ``clip``: ONNX's operator text says the clip "is applied to the input of activations", which includes h's input,
the cell state c_t (h_t = o_t * h(clip(c_t)) read literally); ORT clips only the gates' pre-activations
(microsoft/onnxruntime#27224, closed as stale; the fix, #27239, is an open pull request). That is a
non-conformance to ONNX's operator spec, not to this project's: the spec's gate_clip is defined as ORT reads
``clip`` (spec/layer.py), and its cell_clip (TensorFlow's) clips the state itself, which neither reading does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from backends.layouts import onnx as layouts
from backends.runtimes import onnx as graphs
from backends.runtimes.onnxruntime import LSTM_KERNEL_REASONS, ONNXRUNTIME, onnxruntime
from contract.row import KnownFailure, Row
from contract.runtime import framework_problem
from contract.vocabulary import CONFORMANCE_DTYPES, Device, Dtype, Feature, Kind
from spec.layer import LayerConfig
from spec.precision import Policy

#: What the operator runs: its attributes and its sequence_lens input.
OPERATOR_FEATURES = frozenset({Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL,
                               Feature.GATE_CLIP, Feature.COUPLED, Feature.LENGTHS, Feature.EMPTY_SEQUENCES})
NO_MASK = {Feature.MASK: graphs.NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: graphs.NO_MASK}

EMPTY_ROWS = (
    "ONNX Runtime 1.32 returns zeros as Y_h and Y_c of a row with sequence_lens 0 (it computes nothing for such a "
    "row), not the initial state (spec, TF1, Keras). ONNX's operator text does not say (onnx/onnx#1674, closed "
    "unanswered); ORT chose it in microsoft/onnxruntime#749. Reproducer: findings/onnxruntime_lstm_empty_rows_state.py"
)
IGNORED = (
    "onnx {version}'s reference LSTM (onnx.reference) silently ignores {attribute}: the graph runs as if it were "
    "absent. Reproducer: findings/onnx_reference_lstm_ignores_attributes.py; upstream: none found (onnx/onnx "
    "searched); its kernel's signature marks the argument unused"
)
#: Each input or attribute onnx.reference ignores, by the feature it carries.
IGNORED_FEATURES = {Feature.LENGTHS: "sequence_lens", Feature.GATE_CLIP: "clip", Feature.COUPLED: "input_forget"}


@dataclass(frozen=True, eq=False)
class Graph:
    """What ``call`` runs: one parameter set's weights by graph input name, and its architecture's session key."""

    weights: dict
    architecture: tuple


@dataclass(eq=False)
class OnnxGraphRow(Row):
    """A runtime's sessions of :func:`backends.runtimes.onnx.layer_model`; ``runtime.session(model, device)``."""

    layout: object = layouts.LSTM_NODES
    features: frozenset = OPERATOR_FEATURES
    gradients: bool = False
    #: LSTM's layout attribute: 1 (batch-major, X (B, T, I)) when true, else 0 (time-major).
    batch_major: bool = False

    def __post_init__(self):
        super().__post_init__()
        self._sessions: dict[tuple, object] = {}

    def model(self, input_size: int, hidden_size: int, layer: LayerConfig, dtype, *, lengths: bool):
        return graphs.layer_model(input_size, hidden_size, layer, dtype, lengths=lengths, weight_name=layouts.weight_name,
                                  layout=int(self.batch_major))

    def session(self, architecture: tuple, lengths: bool):
        """The session of (I, H, layer, dtype, device), with or without sequence_lens: made once."""
        key = (*architecture, lengths)
        if key not in self._sessions:
            I, H, layer, dtype, device = architecture
            self._sessions[key] = self.runtime.session(self.model(I, H, layer, dtype, lengths=lengths), device)
        return self._sessions[key]

    def build(self, native, *, params, layer, device, half=None):
        # The forget bias is in the weights: the graph of every forget bias is one.
        architecture = (params.input_size, params.hidden_size, replace(layer, forget_bias=0.0), params.dtype, str(device))
        return Graph(dict(native), architecture)

    def call(self, graph, x, h0, c0, lengths, mask, *, layer):
        layout = int(self.batch_major)
        session = self.session(graph.architecture, lengths is not None)
        return graphs.layer_outputs(session.run(None, graphs.layer_feeds(graph.weights, x, h0, c0, lengths, layout=layout)),
                                    layout=layout)


@dataclass(eq=False)
class OnnxRuntimeLSTM(OnnxGraphRow):
    id: str = "onnxruntime/LSTM"
    description: str = "ONNX Runtime's LSTM operator (opset 14), peepholes native; one node per layer"
    runtime: object = ONNXRUNTIME
    dtypes: tuple = ("float32",)
    devices: tuple = (Device.CPU, Device.CUDA)
    reasons: dict = field(default_factory=lambda: {**LSTM_KERNEL_REASONS, **NO_MASK})
    known_failures: tuple = (KnownFailure(EMPTY_ROWS, kinds=(Kind.OUTPUTS,), features={Feature.EMPTY_SEQUENCES}),)

    def _availability(self, device):
        problem = self.runtime.availability(device) or framework_problem("onnx", graphs.GRAPH_HINT)
        if problem is not None or not self.batch_major:
            return problem
        try:  # ORT's own words: an InvalidGraph / Fail exception with its message
            self.runtime.session(self.model(1, 1, LayerConfig(), np.float32, lengths=False), device, quiet=True)
        except Exception as error:
            return (f"ONNX Runtime {onnxruntime().__version__} refuses layout=1 (batch-major) when the session is "
                    f"created: {error}")
        return None

    def _environment(self, device):
        """Versions whenever ONNX Runtime imports (also for the batch-major row it refuses), and the layout."""
        if (problem := self.runtime.availability(device)) is not None:
            return {"unavailable": problem}
        return {**self.runtime.environment(device), "layout": int(self.batch_major)}



@dataclass(eq=False)
class OnnxReferenceLSTM(OnnxGraphRow):
    id: str = "onnx.reference/LSTM"
    description: str = "onnx.reference's LSTM operator (NumPy), one node per layer"
    runtime: object = graphs.ONNX_REFERENCE
    dtypes: tuple = CONFORMANCE_DTYPES
    #: NumPy's operations one by one in the half type (ml_dtypes' for bfloat16), each result rounded.
    policies: dict = field(default_factory=lambda: {Dtype.FLOAT16: Policy.EVERY_OPERATION, Dtype.BFLOAT16: Policy.EVERY_OPERATION})
    reasons: dict = field(default_factory=lambda: {"gradients": "onnx.reference evaluates graphs; it has no gradients",
                                                   **NO_MASK})
    known_failures: tuple = tuple(
        KnownFailure(IGNORED.format(version="1.23.2", attribute=attribute), kinds=(Kind.OUTPUTS,), features={feature})
        for feature, attribute in IGNORED_FEATURES.items())


ROWS = (
    OnnxRuntimeLSTM(),
    OnnxRuntimeLSTM(id="onnxruntime/LSTM-batch-major", batch_major=True,
                    description="ONNX Runtime's LSTM operator with layout=1 (batch-major X (B, T, I)), one node per layer"),
    OnnxReferenceLSTM(),
)
