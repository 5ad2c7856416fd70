"""onnx, the package: the graphs of ONNX's ``LSTM`` operator that the ONNX rows run (built with ``onnx.helper``),
and onnx's reference evaluator (``onnx.reference``) as a runtime. onnx is imported only when a graph is built or
evaluated.

The graph of a stack (:func:`layer_model`): one LSTM node per layer, its W, R, B (and P) graph inputs named by the
layout (backends/layouts/onnx.py, passed in as ``weight_name``), fed on every run, so that one session serves
every parameter set of an architecture. It takes X, initial_h and initial_c for the whole stack and returns y,
h_T and c_T for it:

    layout 0 (time-major, the only one ONNX Runtime runs):
        X (T, B, I), initial_h (L * D, B, H); node l gets rows l*D .. l*D+D-1 of the states (Slice);
        Y_l (T, D, B, H) -> Transpose (T, B, D, H) -> Reshape (T, B, D * H): the next layer's X, or y;
        h_T = Concat of every node's Y_h (D, B, H) on axis 0: (L * D, B, H), layer-major.
    layout 1 (batch-major, LSTM's layout attribute since opset 14):
        X (B, T, I), initial_h (B, L * D, H), sliced on axis 1; Y_l (B, T, D, H) -> Reshape (B, T, D * H)
        (no transpose); h_T (B, L * D, H).

sequence_lens, clip (the spec's gate_clip) and input_forget (coupled gates) go to every node. The model carries
the lowest IR version its opset needs, not the installed onnx's newest: a runtime older than onnx (seen: ONNX
Runtime 1.30 with onnx 1.23, "Unsupported model IR version: 14") still loads it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from contract.runtime import Runtime, framework_problem, import_framework
from contract.vocabulary import Device
from spec.validation import cast, check_dtype

if TYPE_CHECKING:
    from spec.layer import LayerConfig

OPSET = 14  # the first LSTM version with the ``layout`` attribute
OPSET_BFLOAT16 = 22  # the first LSTM version whose type constraint holds bfloat16
INSTALL_HINT = "onnx is not installed (pip install onnx)"
#: Where onnx is needed only to build the graphs another runtime runs (ONNX Runtime's rows).
GRAPH_HINT = "onnx is not installed: the graphs are built with it (pip install 'lstm-conformance[onnxruntime]')"
#: What the graph takes instead of a mask: every ONNX row's reason for the mask features.
NO_MASK = "ONNX's LSTM operator takes sequence_lens (one length per row), not a mask of steps"


def onnx():
    return import_framework("onnx", INSTALL_HINT)


def layer_model(input_size: int, hidden_size: int, layer: LayerConfig, dtype: object, *, lengths: bool,
                weight_name: Callable[[int, str], str], layout: int = 0):
    """The ModelProto of a stack of LSTM nodes configured as ``layer`` (num_layers, direction, peephole, gate_clip as
    clip, coupled_input_forget as input_forget) in ``dtype``; ``lengths`` adds the sequence_lens input (int32)."""
    helper, TensorProto = onnx().helper, onnx().TensorProto
    if layer.proj_size is not None:
        raise ValueError("layer_model: ONNX's LSTM operator has no projection (proj_size must be None)")
    dtype = check_dtype(dtype, storage=True)
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
            "bfloat16": TensorProto.BFLOAT16}[dtype.name]
    I, H, L, D = input_size, hidden_size, layer.num_layers, layer.num_directions
    time_major = layout == 0
    state_axis = 0 if time_major else 1
    x_shape, state_shape = (["T", "B", I], [L * D, "B", H]) if time_major else (["B", "T", I], ["B", L * D, H])
    inputs = [helper.make_tensor_value_info("X", elem, x_shape)]
    inputs += [helper.make_tensor_value_info(state, elem, state_shape) for state in ("initial_h", "initial_c")]
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    tensors = ("W", "R", "B", "P") if layer.peephole else ("W", "R", "B")
    for l in range(L):
        shapes = {"W": [D, 4 * H, I if l == 0 else D * H], "R": [D, 4 * H, H], "B": [D, 8 * H], "P": [D, 3 * H]}
        inputs += [helper.make_tensor_value_info(weight_name(l, t), elem, shapes[t]) for t in tensors]
    attributes = dict(hidden_size=H, direction=layer.direction, layout=layout)
    if layer.gate_clip is not None:
        attributes["clip"] = float(layer.gate_clip)
    if layer.coupled_input_forget:
        attributes["input_forget"] = 1
    constant = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    initializers = [constant("state_axis", [state_axis]), constant("merge_directions", [0, 0, -1])]
    nodes, layer_input = [], "X"
    for l in range(L):
        initializers += [constant(f"rows{l}.start", [l * D]), constant(f"rows{l}.end", [(l + 1) * D])]
        for state in ("initial_h", "initial_c"):
            nodes.append(helper.make_node("Slice", [state, f"rows{l}.start", f"rows{l}.end", "state_axis"], [f"{state}{l}"]))
        node_inputs = [layer_input, *(weight_name(l, t) for t in ("W", "R", "B")), "sequence_lens" if lengths else "",
                       f"initial_h{l}", f"initial_c{l}"] + ([weight_name(l, "P")] if layer.peephole else [])
        nodes.append(helper.make_node("LSTM", node_inputs, [f"Y{l}", f"Y_h{l}", f"Y_c{l}"], name=f"lstm{l}", **attributes))
        # Y (T, D, B, H) puts the direction before the batch: transposed, each step's row is [forward ; reverse].
        directions_last = f"Y{l}"
        if time_major:
            directions_last = f"Y{l}.t"
            nodes.append(helper.make_node("Transpose", [f"Y{l}"], [directions_last], perm=[0, 2, 1, 3]))
        layer_input = "y" if l == L - 1 else f"X{l + 1}"
        nodes.append(helper.make_node("Reshape", [directions_last, "merge_directions"], [layer_input]))
    for state in ("h", "c"):
        nodes.append(helper.make_node("Concat", [f"Y_{state}{l}" for l in range(L)], [f"{state}_T"], axis=state_axis))
    y_shape = ["T", "B", D * H] if time_major else ["B", "T", D * H]
    outputs = [helper.make_tensor_value_info("y", elem, y_shape)]
    outputs += [helper.make_tensor_value_info(f"{state}_T", elem, state_shape) for state in ("h", "c")]
    graph = helper.make_graph(nodes, "lstm_layer", inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid("", OPSET_BFLOAT16 if dtype.name == "bfloat16" else OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def with_initializers(model, weights: dict[str, np.ndarray]):
    """``model`` (a :func:`layer_model`) with the weight inputs named in ``weights`` made its initializers, holding
    those arrays: the constants of a deployed model (a file the porting command writes; OpenVINO's rows, whose
    plugin takes a fused kernel only for constant weights)."""
    numpy_helper = import_framework("onnx.numpy_helper", INSTALL_HINT)
    graph = model.graph
    kept = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(value), name) for name, value in weights.items())
    return model


def layer_feeds(weights, x, h0, c0, lengths, *, layout: int = 0) -> dict[str, np.ndarray]:
    """The inputs of :func:`layer_model` from the spec's time-major x (T, B, I) and states (L * D, B, .), and the
    weights by graph input name; lengths as int32 (ONNX's sequence_lens type), or None."""
    if layout == 1:
        x, h0, c0 = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (x, h0, c0))
    feeds = {"X": x, "initial_h": h0, "initial_c": c0, **weights}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, np.int32)
    return feeds


def layer_outputs(outputs, *, layout: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y (T, B, D * H), h_T and c_T (L * D, B, H) from the graph's outputs."""
    if layout == 1:
        return tuple(np.ascontiguousarray(a.transpose(1, 0, 2)) for a in outputs)
    return tuple(outputs)


class OnnxReference(Runtime):
    """onnx's reference evaluator: the operators' executable definitions as onnx ships them, NumPy in the inputs'
    dtype, on the CPU; no gradients."""

    name = "onnx.reference"

    def availability(self, device: str) -> str | None:
        if (problem := framework_problem("onnx.reference", INSTALL_HINT)) is not None:
            return problem
        return None if device == Device.CPU else "onnx.reference runs on the CPU only (NumPy)"

    def environment(self, device: str) -> dict[str, object]:
        return {"onnx": onnx().__version__, "numpy": np.__version__, "opset": OPSET, "opset_bfloat16": OPSET_BFLOAT16}

    def session(self, model, device: str):
        """An evaluator of ``model``; like an ONNX Runtime session, ``run(None, feeds)`` answers."""
        return import_framework("onnx.reference", INSTALL_HINT).ReferenceEvaluator(model)

    def cast(self, tensor, dtype):
        """A NumPy array rounded to a half type (to nearest even; what the type cannot hold refused)."""
        return cast(np.asarray(tensor), dtype, "tensor")

    def run(self, function, *args):
        # Its sigmoid is 1 / (1 + exp(-x)): exp overflows to inf for very negative x, and 1 / inf is the right 0.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
            return function(*args)


ONNX_REFERENCE = OnnxReference()

__all__ = ["GRAPH_HINT", "INSTALL_HINT", "NO_MASK", "ONNX_REFERENCE", "OPSET", "OnnxReference", "layer_feeds",
           "layer_model", "layer_outputs", "onnx", "with_initializers"]
