"""OpenVINO's LSTMSequence (opset 5): the constant W, R and B inputs of one op per layer, as an OpenVINO IR holds
them, NumPy only.

LSTMSequence-5 stacks the gates f, i, c, o (c is the spec's g) and keeps one bias per gate; it holds both directions
of a layer on the leading axis, forward first (its ``direction`` attribute: forward, reverse or bidirectional). It
has no peepholes and no coupled gates (LSTMSequence-1 had both, ``P`` and ``input_forget``; opset 5 dropped them,
and OpenVINO's ONNX frontend builds opset 5, dropping an ONNX LSTM's P and input_forget without a word:
findings/openvino_onnx_lstm_peepholes_input_forget_ignored.py), no projection and no layer normalization. Its
``clip`` attribute clips the gates' pre-activations, as ONNX's does (the spec's gate_clip). The native names
(:func:`weight_name`):

    canonical, cell l * D + d        OpenVINO, op l
    W  (4, H, in)               <->  layer{l}.W (D, 4H, in)   in = I for l = 0, D * H above; gates f, i, c, o
    U  (4, H, H)                <->  layer{l}.R (D, 4H, H)    gates f, i, c, o
    b  (4, H)                   <->  layer{l}.B (D, 4H)       gates f, i, c, o

There is no forget-bias attribute: a forget bias is folded into B's f block, and read back folded into b_f.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias, split_directions, stack_directions
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

OPENVINO_GATES = ("f", "i", "g", "o")  # OpenVINO calls g "c"
TENSORS = ("W", "R", "B")

_TO_OPENVINO = [GATES.index(g) for g in OPENVINO_GATES]
_FROM_OPENVINO = [OPENVINO_GATES.index(g) for g in GATES]

NO_PEEPHOLES = ("OpenVINO's LSTMSequence-5 has no peepholes (LSTMSequence-1 had them), and its ONNX frontend drops an "
                "ONNX LSTM's P without a word: an IR of these weights would compute an LSTM without peepholes")
NO_COUPLED = ("OpenVINO's LSTMSequence-5 has no coupled gates (input_forget; LSTMSequence-1 had it), and its ONNX "
              "frontend ignores an ONNX LSTM's input_forget without a word: an IR would compute uncoupled gates")
NO_PROJECTION = "OpenVINO's LSTMSequence has no projection (LSTMP)"


def weight_name(layer: int, tensor: str) -> str:
    """The native name of op ``layer``'s W, R or B: layer1.W."""
    return f"layer{layer}.{tensor}"


def to_openvino(cell: LSTMParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """One direction's W (1, 4H, in), R (1, 4H, H), B (1, 4H); the forget bias folded into B."""
    H, I = cell.hidden_size, cell.input_size
    b = fold_forget_bias(cell.b, forget_bias)
    return {
        "W": np.ascontiguousarray(cell.W[_TO_OPENVINO].reshape(1, 4 * H, I)),
        "R": np.ascontiguousarray(cell.U[_TO_OPENVINO].reshape(1, 4 * H, H)),
        "B": np.ascontiguousarray(b[_TO_OPENVINO].reshape(1, 4 * H)),
    }


def from_openvino(W: np.ndarray, R: np.ndarray, B: np.ndarray) -> LSTMParams:
    """The canonical cell from one direction's tensors, each (1, ...) as :func:`to_openvino` gives them."""
    if not isinstance(W, np.ndarray) or W.ndim != 3 or W.shape[1] % 4:
        raise LSTMInputError("W", "wrong shape", "(1, 4H, I)", getattr(W, "shape", type(W).__name__))
    dtype, H, I = W.dtype, W.shape[1] // 4, W.shape[2]
    check_tensor("W", W, (1, 4 * H, I), dtype)
    check_tensor("R", R, (1, 4 * H, H), dtype)
    check_tensor("B", B, (1, 4 * H), dtype)
    return LSTMParams(W.reshape(4, H, I)[_FROM_OPENVINO], R.reshape(4, H, H)[_FROM_OPENVINO],
                      B.reshape(4, H)[_FROM_OPENVINO])


@dataclass(frozen=True)
class _Sequences(Layout):
    """A stack as one LSTMSequence per layer, both directions on each tensor's leading axis."""

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        return stack_directions(params, layer, lambda cell: to_openvino(cell, layer.forget_bias), weight_name)

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        # A forget bias stays folded into b_f, as in every layout without an attribute for it.
        cells = split_directions(native, layer, TENSORS, TENSORS, weight_name, "op")
        return LayerParams(tuple(from_openvino(c["W"], c["R"], c["B"]) for c in cells), layer.num_directions)


LSTM_SEQUENCES = _Sequences(
    name="OpenVINO LSTMSequence-5 ops, one per layer (W, R, B)",
    holds=frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.GATE_CLIP}),
    reasons={
        Feature.PEEPHOLE: NO_PEEPHOLES,
        Feature.COUPLED: NO_COUPLED,
        Feature.PROJECTION: NO_PROJECTION,
        Feature.PROJ_CLIP: "OpenVINO's LSTMSequence has no projection, so no proj_clip",
        Feature.CELL_CLIP: "OpenVINO's LSTMSequence has no cell clip (its clip is the gates', ONNX's: the spec's gate_clip)",
        Feature.LAYER_NORM: "OpenVINO's LSTMSequence has no layer normalization of the gates",
        Feature.PROJ_BIAS: "OpenVINO's LSTMSequence has no projection, so no projection bias",
    },
)

__all__ = ["LSTM_SEQUENCES", "NO_COUPLED", "NO_PEEPHOLES", "NO_PROJECTION", "OPENVINO_GATES", "TENSORS", "from_openvino",
           "to_openvino", "weight_name"]
