"""ONNX's LSTM operator's parameters: one ``LSTM`` node per layer (opset 14), NumPy only.

ONNX stacks the gates i, o, f, c (c is the spec's g) and the peepholes i, o, f; it keeps two biases,
B = [Wb; Rb] (8H), which are summed; it has no forget bias (folded into Wb's f block). A node holds both
directions of its layer on the leading axis, forward first. The native names are the graph's inputs
(:func:`weight_name`):

    canonical, cell l * D + d        ONNX, node l
    W  (4, H, in)               <->  layer{l}.W (D, 4H, in)   in = I for l = 0, D * H above; gates i, o, f, c
    U  (4, H, H)                <->  layer{l}.R (D, 4H, H)    gates i, o, f, c
    b  (4, H)                   <->  layer{l}.B (D, 8H)       [Wb, Rb], each i, o, f, c; b = Wb + Rb
    p  (3, H)                   <->  layer{l}.P (D, 3H)       i, o, f; with peepholes only

b is split exactly in half between Wb and Rb (halving is exact in binary), so that an implementation dropping one
of ONNX's two biases gets a wrong answer instead of passing by luck, as it would if all of b sat in Wb; b's
gradient is therefore the mean of the two halves'. B and P are optional in ONNX (zeros; no peepholes): reading
native tensors back takes them as absent.

The node's attributes express the direction, ``clip`` (the spec's gate_clip, as ONNX Runtime reads it) and
``input_forget`` (coupled gates); the graph around the nodes is :mod:`backends.runtimes.onnx`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from contract.layout import Layout, fold_forget_bias, split_directions, stack_directions
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

ONNX_GATES = ("i", "o", "f", "g")  # ONNX calls g "c"
ONNX_PEEPHOLE_GATES = ("i", "o", "f")
TENSORS = ("W", "R", "B", "P")

# ONNX's k-th gate block is canonical block _TO_ONNX[k], and the reverse.
_TO_ONNX = [GATES.index(g) for g in ONNX_GATES]
_FROM_ONNX = [ONNX_GATES.index(g) for g in GATES]
_P_TO_ONNX = [PEEPHOLE_GATES.index(g) for g in ONNX_PEEPHOLE_GATES]
_P_FROM_ONNX = [ONNX_PEEPHOLE_GATES.index(g) for g in PEEPHOLE_GATES]

NO_PROJECTION = "ONNX's LSTM operator has no projection (LSTMP)"


def weight_name(layer: int, tensor: str) -> str:
    """The native name (the graph input) of node ``layer``'s W, R, B or P: layer1.W."""
    return f"layer{layer}.{tensor}"


def weight_names(num_layers: int, peephole: bool) -> list[str]:
    """Every native name of a stack, node by node."""
    tensors = TENSORS if peephole else TENSORS[:3]
    return [weight_name(l, t) for l in range(num_layers) for t in tensors]


def to_onnx(cell: LSTMParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """One direction's W (1, 4H, in), R (1, 4H, H), B (1, 8H) (and P (1, 3H)); the forget bias folded into Wb."""
    H, I = cell.hidden_size, cell.input_size
    Rb = cell.b * 0.5
    Wb = fold_forget_bias(Rb, forget_bias)  # refused where b_f / 2 + forget_bias is not a value of a half type
    tensors = {
        "W": cell.W[_TO_ONNX].reshape(1, 4 * H, I),
        "R": cell.U[_TO_ONNX].reshape(1, 4 * H, H),
        "B": np.concatenate([Wb[_TO_ONNX].reshape(4 * H), Rb[_TO_ONNX].reshape(4 * H)])[None],
    }
    if cell.p is not None:
        tensors["P"] = cell.p[_P_TO_ONNX].reshape(1, 3 * H)
    return tensors


def from_onnx(W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None, P: np.ndarray | None = None) -> LSTMParams:
    """The canonical cell from one direction's tensors, each (1, ...) as :func:`to_onnx` gives them; b = Wb + Rb."""
    if not isinstance(W, np.ndarray) or W.ndim != 3:
        raise LSTMInputError("W", "wrong shape", "(1, 4H, I)", getattr(W, "shape", type(W).__name__))
    dtype, H, I = W.dtype, W.shape[1] // 4, W.shape[2]
    check_tensor("W", W, (1, 4 * H, I), dtype)
    check_tensor("R", R, (1, 4 * H, H), dtype)
    b = np.zeros((4, H), dtype)
    if B is not None:
        check_tensor("B", B, (1, 8 * H), dtype)
        b = (B[0, : 4 * H] + B[0, 4 * H:]).reshape(4, H)
    p = None
    if P is not None:
        check_tensor("P", P, (1, 3 * H), dtype)
        p = P.reshape(3, H)[_P_FROM_ONNX]
    return LSTMParams(W.reshape(4, H, I)[_FROM_ONNX], R.reshape(4, H, H)[_FROM_ONNX], b[_FROM_ONNX], p)


@dataclass(frozen=True)
class _Nodes(Layout):
    """A stack as one LSTM node per layer, both directions on each tensor's leading axis (:func:`to_onnx` per cell)."""

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        return stack_directions(params, layer, lambda cell: to_onnx(cell, layer.forget_bias), weight_name)

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        cells = split_directions(native, layer, TENSORS, ("W", "R"), weight_name, "node")
        return LayerParams(tuple(from_onnx(c["W"], c["R"], c["B"], c["P"]) for c in cells), layer.num_directions)

    def _gradient(self, native_gradients, params: LayerParams, layer: LayerConfig) -> LayerParams:
        """The transpose of :meth:`_to_native`: b fed half to Wb and half to Rb, so its gradient is their mean."""
        summed = self._from_native(native_gradients, replace(layer, forget_bias=0.0))
        return LayerParams(tuple(LSTMParams(c.W, c.U, c.b * 0.5, c.p) for c in summed.cells), summed.num_directions)


LSTM_NODES = _Nodes(
    name="ONNX LSTM nodes, one per layer (W, R, B, P)",
    holds=frozenset({Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.GATE_CLIP,
                     Feature.COUPLED}),
    reasons={
        Feature.PROJECTION: NO_PROJECTION,
        Feature.PROJ_CLIP: "ONNX's LSTM operator has no projection, so no proj_clip",
        Feature.CELL_CLIP: "ONNX's LSTM operator has no cell clip (its clip is the spec's gate_clip)",
        Feature.LAYER_NORM: "ONNX's LSTM operator has no layer normalization of the gates",
        Feature.PROJ_BIAS: "ONNX's LSTM operator has no projection, so no projection bias",
    },
)

__all__ = ["LSTM_NODES", "NO_PROJECTION", "ONNX_GATES", "ONNX_PEEPHOLE_GATES", "TENSORS", "from_onnx", "to_onnx",
           "weight_name", "weight_names"]
