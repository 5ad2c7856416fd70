"""ONNX Runtime's dynamically quantized LSTM, ``com.microsoft.DynamicQuantizeLSTM``: the project's ONNX graph
(backends/runtimes/onnx.py, one LSTM node per layer) with its weights as initializers, as deployed, quantized by
``onnxruntime.quantization.quantize_dynamic`` (its defaults: int8 weights, per tensor), run by ONNX Runtime's CPU
provider; layout backends/layouts/onnx.py.

    onnxruntime/DynamicQuantizeLSTM   every feature ORT's LSTM has: directions, stacks, peepholes, clip (gate_clip),
                                      input_forget (coupled), sequence_lens; judged against the integer reference
                                      of its kernel's scheme (:data:`DYNAMIC`), the integers, scales and zero points
                                      read from the quantized model

One intra-op thread: the kernel's answer depends on the thread count (with more, each thread's share of the batch
rows quantizes its own h_{t-1}: findings/onnxruntime_dynamic_quantize_lstm_depends_on_threads.py), and the scheme
below is the one-thread one. Forward only, float32 only, CPU only (the op is a CPU contrib op).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from backends.layouts import onnx as layouts
from backends.rows.onnx import EMPTY_ROWS, NO_MASK, OPERATOR_FEATURES, Graph, OnnxGraphRow
from backends.runtimes import onnx as graphs
from backends.runtimes.onnxruntime import LSTM_KERNEL_REASONS, ONNXRUNTIME, onnxruntime
from contract.quantization import quantized_layer
from contract.row import KnownFailure
from contract.runtime import framework_problem
from contract.vocabulary import Device, Feature, Kind
from spec.quantized import ActivationScheme, EndedRows, Group, Padding, Rounding, Scaling, Scheme

OP = "DynamicQuantizeLSTM"
#: The op's inputs, in order (onnxruntime/core/graph/contrib_ops: DynamicQuantizeLSTM).
OP_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P", "W_scale", "W_zero_point", "R_scale",
             "R_zero_point")

#: The kernel's scheme (contrib_ops/cpu/quantization/dynamic_quantize_lstm.cc -> rnn_helpers.cc ComputeGemm with
#: uint8 activations; core/util/qmath.h GetQuantizationParameter; MLAS MlasQuantizeLinear): each GEMM's A matrix
#: quantized whole: X (T' * B, I) once for every step (T' the longest length, padded rows as they are), h_{t-1} (B, H)
#: every step (a row's last output stays in it one step, zeros after); lo = min(A, 0), hi = max(A, 0), s = fl32(fl32(hi - lo) / 255) (1 when
#: hi = lo), z = rint(clamp(-lo / s, 0, 255)), q = rint(a / s) + z within 0..255, ties to even; int8 weights (zero
#: point 0) times (q - z) summed exactly in int32 (vpdpbusd with AVX512-VNNI); G = acc * fl32(s s_W), the recurrent
#: product added to the input product's; each row reversed within its own length in the reverse direction.
_ACTIVATIONS = ActivationScheme(Group.SEQUENCE, 0, 255, rounding=Rounding.HALF_EVEN, scaling=Scaling.DIVIDE,
                                zero_range_scale=1.0)
DYNAMIC = Scheme("onnxruntime-dynamic-uint8", input=_ACTIVATIONS, recurrent=replace(_ACTIVATIONS, group=Group.STEP),
                 padding=Padding.IN_RANGE, ended_rows=EndedRows.ZEROED_AFTER_LAST, reverse_within_lengths=True,
                 source="onnxruntime contrib_ops/cpu/quantization/dynamic_quantize_lstm.cc, core/providers/cpu/rnn/"
                        "rnn_helpers.cc (ComputeGemm), core/util/qmath.h, MLAS MlasQuantizeLinear")
THREADS = 1


@dataclass(frozen=True, eq=False)
class QuantizedGraph(Graph):
    """A parameter set's quantized model and its session."""

    model: object = None
    session: object = None


@dataclass(eq=False)
class OnnxRuntimeDynamicQuantizeLSTM(OnnxGraphRow):
    id: str = "onnxruntime/DynamicQuantizeLSTM"
    description: str = ("ONNX Runtime's DynamicQuantizeLSTM (quantize_dynamic of the LSTM graph: int8 weights per tensor, "
                        "uint8 activations quantized as it runs), one node per layer, one thread")
    runtime: object = ONNXRUNTIME
    dtypes: tuple = ("float32",)
    devices: tuple = (Device.CPU,)
    features: frozenset = OPERATOR_FEATURES
    quantization: object = DYNAMIC
    float_source: str = "onnxruntime/LSTM"
    reasons: dict = field(default_factory=lambda: {**LSTM_KERNEL_REASONS, **NO_MASK,
                                                   Device.CUDA: f"ONNX Runtime's {OP} is a CPU contrib op"})
    known_failures: tuple = (KnownFailure(EMPTY_ROWS, kinds=(Kind.OUTPUTS,), features={Feature.EMPTY_SEQUENCES}),)

    def _availability(self, device):
        return (self.runtime.availability(device) or framework_problem("onnx", graphs.GRAPH_HINT)
                or framework_problem("onnxruntime.quantization", "onnxruntime.quantization does not import"))

    def build(self, native, *, params, layer, device, half=None):
        """The graph with ``native`` as its initializers, quantized, in a one-thread session."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = graphs.with_initializers(self.model(params.input_size, params.hidden_size, layer, np.float32,
                                                    lengths=True), {k: np.asarray(v, np.float32) for k, v in native.items()})
        with tempfile.TemporaryDirectory() as directory:
            source, target = Path(directory, "lstm.onnx"), Path(directory, "lstm.int8.onnx")
            source.write_bytes(model.SerializeToString())
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            quantized = graphs.onnx().load(str(target))
        ops = [node.op_type for node in quantized.graph.node if node.op_type in ("LSTM", OP)]
        if ops != [OP] * layer.num_layers:
            raise RuntimeError(f"quantize_dynamic made {ops} of the {layer.num_layers} LSTM node(s), expected {OP} each")
        session = self._session(quantized.SerializeToString())
        return QuantizedGraph({}, (), quantized, session)

    def _session(self, content: bytes):
        ort = onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])

    def call(self, graph, x, h0, c0, lengths, mask, *, layer):
        B = x.shape[1]
        lengths = np.full(B, x.shape[0], np.int32) if lengths is None else lengths
        feeds = graphs.layer_feeds({}, x, h0, c0, lengths)
        return graphs.layer_outputs(graph.session.run(None, feeds))

    def quantized(self, graph, *, params, layer):
        """The int8 W and R, their scales and zero points, and B and P, as the quantized model's nodes hold them."""
        numpy_helper = graphs.onnx().numpy_helper
        held = {t.name: numpy_helper.to_array(t) for t in graph.model.graph.initializer}
        nodes = [node for node in graph.model.graph.node if node.op_type == OP]
        integers, scales, zero_points, floats = {}, {}, {}, {}
        for l, node in enumerate(nodes):
            named = dict(zip(OP_INPUTS, node.input))
            for tensor in ("W", "R"):
                q = held[named[tensor]]  # (D, K, 4H): ORT's quantized layout, transposed
                name = layouts.weight_name(l, tensor)
                integers[name] = np.ascontiguousarray(q.transpose(0, 2, 1))
                for what, into in (("scale", scales), ("zero_point", zero_points)):
                    value = held.get(named.get(f"{tensor}_{what}", ""))
                    # per tensor (one per direction, (D,)) or per output channel ((D, 4H)), against (D, 4H, K)
                    into[name] = None if value is None else np.asarray(value).reshape(value.shape[0], -1, 1)
            for tensor in ("B", "P"):
                if named.get(tensor):
                    floats[layouts.weight_name(l, tensor)] = held[named[tensor]]
        return quantized_layer(self.layout, layer, integers=integers, scales=scales, zero_points=zero_points,
                               floats=floats)

    def _environment(self, device):
        if (problem := self.runtime.availability(device)) is not None:
            return {"unavailable": problem}
        return {**self.runtime.environment(device), "intra_op_threads": THREADS, "quantization": DYNAMIC.describe()}


ROWS = (OnnxRuntimeDynamicQuantizeLSTM(),)

__all__ = ["DYNAMIC", "OP", "ROWS", "OnnxRuntimeDynamicQuantizeLSTM"]
