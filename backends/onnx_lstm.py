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

from spec.params import GATES, PEEPHOLE_GATES, LSTMParams
from spec.validation import LSTMInputError, check_tensor

ONNX_GATES = ("i", "o", "f", "g")  # ONNX calls g "c"
ONNX_PEEPHOLE_GATES = ("i", "o", "f")
OPSET = 14  # the first LSTM version with the ``layout`` attribute

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
