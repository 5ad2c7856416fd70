"""The ONNX ``LSTM`` operator: its weight layout, a one-node model, and onnx's reference evaluator.

ONNX stacks the gates i, o, f, c (c is this project's g) and the peepholes
i, o, f; it keeps two biases, B = [Wb; Rb] (8H), which are summed. It has no
forget bias: :func:`to_onnx` folds one into the f block of Wb. Tensors carry
a leading num_directions axis (1 here: forward only).

    canonical          ONNX (one direction)
    W  (4, H, I)  <->  W (1, 4H, I)   gates i, o, f, c
    U  (4, H, H)  <->  R (1, 4H, H)   gates i, o, f, c
    b  (4, H)     <->  B (1, 8H)      [Wb, Rb], each i, o, f, c; b = Wb + Rb
    p  (3, H)     <->  P (1, 3H)      i, o, f
"""

from __future__ import annotations

import numpy as np

from backends.base import NotSupported
from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

ONNX_GATES = ("i", "o", "f", "g")  # ONNX calls g "c"
ONNX_PEEPHOLE_GATES = ("i", "o", "f")
OPSET = 14  # the first LSTM version with the ``layout`` attribute
NO_PROJECTION = "ONNX's LSTM operator has no projection (LSTMP)"

# ONNX's k-th gate block is canonical block _TO_ONNX[k], and the reverse.
_TO_ONNX = [GATES.index(g) for g in ONNX_GATES]
_FROM_ONNX = [ONNX_GATES.index(g) for g in GATES]
_P_TO_ONNX = [PEEPHOLE_GATES.index(g) for g in ONNX_PEEPHOLE_GATES]
_P_FROM_ONNX = [ONNX_PEEPHOLE_GATES.index(g) for g in PEEPHOLE_GATES]


def to_onnx(params: LSTMParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """W, R, B (and P) for a forward LSTM node; the forget bias is folded into Wb.

    b is split exactly in half between Wb and Rb (halving is exact in binary), so an
    implementation that drops one of ONNX's two biases gets a wrong answer instead of
    passing by luck, as it would if all of b sat in Wb.
    """
    H, I = params.hidden_size, params.input_size
    Rb = params.b * 0.5
    Wb = Rb.copy()
    Wb[GATES.index("f")] += forget_bias
    tensors = {
        "W": params.W[_TO_ONNX].reshape(1, 4 * H, I),
        "R": params.U[_TO_ONNX].reshape(1, 4 * H, H),
        "B": np.concatenate([Wb[_TO_ONNX].reshape(4 * H), Rb[_TO_ONNX].reshape(4 * H)])[None],
    }
    if params.peephole:
        tensors["P"] = params.p[_P_TO_ONNX].reshape(1, 3 * H)
    return tensors


def from_onnx(
    W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None, P: np.ndarray | None = None
) -> LSTMParams:
    """Canonical parameters from one direction of ONNX LSTM tensors (B and P optional, as in ONNX)."""
    if not isinstance(W, np.ndarray) or W.ndim != 3:
        raise LSTMInputError("W", "wrong shape", "(1, 4H, I)", getattr(W, "shape", type(W).__name__))
    dtype = W.dtype
    H = W.shape[1] // 4
    I = W.shape[2]
    check_tensor("W", W, (1, 4 * H, I), dtype)
    check_tensor("R", R, (1, 4 * H, H), dtype)
    if B is None:
        B = np.zeros((1, 8 * H), dtype)
    check_tensor("B", B, (1, 8 * H), dtype)
    b = (B[0, : 4 * H] + B[0, 4 * H :]).reshape(4, H)
    p = None
    if P is not None:
        check_tensor("P", P, (1, 3 * H), dtype)
        p = P.reshape(3, H)[_P_FROM_ONNX]
    return LSTMParams(
        W=W.reshape(4, H, I)[_FROM_ONNX],
        U=R.reshape(4, H, H)[_FROM_ONNX],
        b=b[_FROM_ONNX],
        p=p,
    )


def lstm_model(input_size: int, hidden_size: int, dtype: object, peephole: bool):
    """A model with one forward LSTM node; inputs X, W, R, B, initial_h, initial_c (and P); outputs Y, Y_h, Y_c."""
    from onnx import TensorProto, helper

    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    I, H = input_size, hidden_size
    inputs = [
        helper.make_tensor_value_info("X", elem, ["T", "B", I]),
        helper.make_tensor_value_info("W", elem, [1, 4 * H, I]),
        helper.make_tensor_value_info("R", elem, [1, 4 * H, H]),
        helper.make_tensor_value_info("B", elem, [1, 8 * H]),
        helper.make_tensor_value_info("initial_h", elem, [1, "B", H]),
        helper.make_tensor_value_info("initial_c", elem, [1, "B", H]),
    ]
    node_inputs = ["X", "W", "R", "B", "", "initial_h", "initial_c"]
    if peephole:
        inputs.append(helper.make_tensor_value_info("P", elem, [1, 3 * H]))
        node_inputs.append("P")
    outputs = [
        helper.make_tensor_value_info("Y", elem, ["T", 1, "B", H]),
        helper.make_tensor_value_info("Y_h", elem, [1, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [1, "B", H]),
    ]
    node = helper.make_node("LSTM", node_inputs, ["Y", "Y_h", "Y_c"], hidden_size=H)
    graph = helper.make_graph([node], "lstm", inputs, outputs)
    # The lowest IR version that opset needs, not the installed onnx's newest: a runtime older than
    # onnx (seen: ONNX Runtime 1.30 with onnx 1.23, "Unsupported model IR version: 14") still loads it.
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def feeds(weights: dict[str, np.ndarray], x: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs of :func:`lstm_model`: ``weights`` from :func:`to_onnx`, and the sequence and states."""
    return {"X": x, **weights, "initial_h": h0[None], "initial_c": c0[None]}


class ReferenceLSTM:
    """onnx's own reference evaluator (``onnx.reference``) on the LSTM node: an independent implementation."""

    def __init__(self, params: LSTMParams, forget_bias: float = 0.0):
        from onnx.reference import ReferenceEvaluator

        self.weights = to_onnx(params, forget_bias)
        model = lstm_model(params.input_size, params.hidden_size, params.dtype, params.peephole)
        self.session = ReferenceEvaluator(model)

    def __call__(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(h_seq (T, B, H), h_T, c_T), squeezed of ONNX's direction axis."""
        Y, Y_h, Y_c = self.session.run(None, feeds(self.weights, x, h0, c0))
        return Y[:, 0], Y_h[0], Y_c[0]


# ---------------------------------------------------------------------------
# The layer: one LSTM node per layer, stacked in a graph
# ---------------------------------------------------------------------------
#
# Layer l's tensors hold both directions on their leading axis (forward first), the forget bias folded
# into Wb as for one cell:
#
#     layer<l>.W (D, 4H, in)   in = I for l = 0, D * H above
#     layer<l>.R (D, 4H, H)
#     layer<l>.B (D, 8H)
#     layer<l>.P (D, 3H)       peephole variant only
#
# The graph takes X, initial_h and initial_c for the whole stack and returns y, h_T and c_T for it:
#
#     layout 0 (time-major, the only one ONNX Runtime runs):
#         X (T, B, I), initial_h (L * D, B, H); node l gets rows l*D .. l*D+D-1 of the states (Slice);
#         Y_l (T, D, B, H) -> Transpose (T, B, D, H) -> Reshape (T, B, D * H): the next layer's X, or y;
#         h_T = Concat of every node's Y_h (D, B, H) on axis 0: (L * D, B, H), layer-major.
#     layout 1 (batch-major, LSTM's layout attribute since opset 14):
#         X (B, T, I), initial_h (B, L * D, H), sliced on axis 1; Y_l (B, T, D, H) -> Reshape (B, T, D * H)
#         (no transpose); h_T (B, L * D, H).
#
# sequence_lens, clip (the spec's gate_clip) and input_forget (coupled gates) go to every node.


def _tensors(peephole: bool) -> tuple[str, ...]:
    return ("W", "R", "B", "P") if peephole else ("W", "R", "B")


def layer_weight_names(num_layers: int, peephole: bool) -> list[str]:
    """The native names of a stack's tensors, layer by layer."""
    return [f"layer{l}.{t}" for l in range(num_layers) for t in _tensors(peephole)]


def to_onnx_layer(params: LayerParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """Every layer's W, R, B (and P), both directions stacked on the leading axis (:func:`to_onnx` per cell)."""
    if params.proj_size is not None:
        raise NotSupported(NO_PROJECTION)
    D = params.num_directions
    native = {}
    for l in range(params.num_layers):
        per_direction = [to_onnx(params.cell(l, d), forget_bias) for d in range(D)]
        for tensor in per_direction[0]:
            native[f"layer{l}.{tensor}"] = np.concatenate([cell[tensor] for cell in per_direction])
    return native


def from_onnx_layer(native, num_layers: int, num_directions: int) -> LayerParams:
    """The inverse of :func:`to_onnx_layer` (:func:`from_onnx` per direction; B and P optional, as in ONNX)."""
    cells = []
    for l in range(num_layers):
        tensors = {t: native.get(f"layer{l}.{t}") for t in ("W", "R", "B", "P")}
        for d in range(num_directions):
            one = {t: None if a is None else a[d : d + 1] for t, a in tensors.items()}
            cells.append(from_onnx(one["W"], one["R"], one["B"], one["P"]))
    return LayerParams(tuple(cells), num_directions)


class OnnxLayout:
    """The layout hooks of a row that runs ONNX's LSTM operator (ONNX Runtime, onnx.reference): its native
    weights are the graph's W, R, B, P tensors (per layer, by graph input name)."""

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return to_onnx(params, forget_bias)

    def from_native(self, native) -> LSTMParams:
        return from_onnx(native["W"], native["R"], native.get("B"), native.get("P"))

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """The stack's tensors by graph input name (:func:`to_onnx_layer`)."""
        return to_onnx_layer(params, layer.forget_bias)

    def from_native_layer(self, native, layer: LayerConfig) -> LayerParams:
        return from_onnx_layer(native, layer.num_layers, layer.num_directions)


def layer_model(input_size: int, hidden_size: int, layer: LayerConfig, dtype: object, *, lengths: bool, layout: int = 0):
    """The ONNX graph of a stack of LSTM layers configured as ``layer`` (a spec LayerConfig: num_layers, direction,
    peephole, gate_clip as clip, coupled_input_forget as input_forget); ``lengths`` adds the sequence_lens input.
    Inputs X, initial_h, initial_c, (sequence_lens,) and :func:`layer_weight_names`; outputs y, h_T, c_T."""
    from onnx import TensorProto, helper

    if layer.proj_size is not None:
        raise NotSupported(NO_PROJECTION)
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    I, H, L = input_size, hidden_size, layer.num_layers
    D = layer.num_directions
    time_major = layout == 0
    state_axis = 0 if time_major else 1
    x_shape, state_shape = (["T", "B", I], [L * D, "B", H]) if time_major else (["B", "T", I], ["B", L * D, H])
    inputs = [helper.make_tensor_value_info("X", elem, x_shape)]
    inputs += [helper.make_tensor_value_info(state, elem, state_shape) for state in ("initial_h", "initial_c")]
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    for l in range(L):
        width = I if l == 0 else D * H
        shapes = {"W": [D, 4 * H, width], "R": [D, 4 * H, H], "B": [D, 8 * H], "P": [D, 3 * H]}
        inputs += [helper.make_tensor_value_info(f"layer{l}.{t}", elem, shapes[t]) for t in _tensors(layer.peephole)]
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
        node_inputs = [layer_input, f"layer{l}.W", f"layer{l}.R", f"layer{l}.B", "sequence_lens" if lengths else "",
                       f"initial_h{l}", f"initial_c{l}"] + ([f"layer{l}.P"] if layer.peephole else [])
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
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def layer_feeds(weights: dict[str, np.ndarray], x, h0, c0, lengths, *, layout: int = 0) -> dict[str, np.ndarray]:
    """The inputs of :func:`layer_model` from the spec's time-major x (T, B, I) and states (L * D, B, .);
    lengths as int32 (ONNX's sequence_lens type), or None."""
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
