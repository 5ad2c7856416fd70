"""flax.linen's LSTM cells' parameter trees (``LSTMCell`` and ``OptimizedLSTMCell`` share one), NumPy only.

    CELL    one cell's tree, what ``cell.apply({"params": tree}, carry, x)`` takes::

                {"ii": {"kernel": (I, H)}, "if": ..., "ig": ..., "io": ...,                 W_k transposed
                 "hi": {"kernel": (H, H), "bias": (H,)}, "hf": ..., "hg": ..., "ho": ...}  U_k transposed, b_k

            (gates i, f, g, o, like the spec's; the carry is (c, h)). A forget bias is folded into ``hf``'s bias:
            flax has no attribute for it.
    STACK   the tree of a stack as a flax user writes it (backends/rows/jax.py): one ``nn.RNN`` per layer, made in
            ``setup()`` as ``self.layers``, so ``{"layers_<l>": {"cell": CELL}}``; for two directions one
            ``nn.Bidirectional`` per layer, ``{"layers_<l>": {"forward_rnn": {"cell": CELL}, "backward_rnn":
            {"cell": CELL}}}``. Cell k = l * D + d. A reverse direction is nn.RNN's ``reverse=True``: the tree
            is the same. The cell is the one-layer stack.

Both layouts only move and transpose entries: their gradient is :meth:`Layout._gradient`'s, the tree of
gradients read back as parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams

#: The tree's module names for gate k: the input kernel, and the recurrent kernel with the bias.
INPUT_NAMES = tuple("i" + k for k in GATES)  # ii, if, ig, io
HIDDEN_NAMES = tuple("h" + k for k in GATES)  # hi, hf, hg, ho

NO_PEEPHOLES = "flax's LSTM cells have no peepholes"
REASONS = {
    Feature.PEEPHOLE: NO_PEEPHOLES,
    Feature.PROJECTION: "flax's LSTM cells have no projection (LSTMP)",
    Feature.PROJ_CLIP: "flax's LSTM cells have no projection, so no proj_clip",
    Feature.CELL_CLIP: "flax's LSTM cells have no cell clip",
    Feature.GATE_CLIP: "flax's LSTM cells have no gate clip",
    Feature.COUPLED: "flax's LSTM cells have no coupled input and forget gates",
    Feature.LAYER_NORM: "flax's LSTM cells have no layer normalization of the gates",
    Feature.PROJ_BIAS: "flax's LSTM cells have no projection, so no projection bias",
}
_ONE_CELL = "a flax cell tree is one cell: layers and directions are the stack's (nn.RNN, nn.Bidirectional)"


def cell_tree(cell: LSTMParams, forget_bias: float = 0.0) -> dict[str, dict[str, np.ndarray]]:
    """One cell's tree (C-contiguous copies): kernel k = W_k^T, U_k^T; bias k = b_k, the forget bias in 'hf'."""
    b = fold_forget_bias(cell.b, forget_bias)
    tree: dict[str, dict[str, np.ndarray]] = {}
    for k, (input_name, hidden_name) in enumerate(zip(INPUT_NAMES, HIDDEN_NAMES)):
        tree[input_name] = {"kernel": np.ascontiguousarray(cell.W[k].T)}
        tree[hidden_name] = {"kernel": np.ascontiguousarray(cell.U[k].T), "bias": b[k].copy()}
    return tree


def cell_from_tree(tree: Mapping[str, Mapping[str, object]]) -> LSTMParams:
    """The inverse of :func:`cell_tree` (the forget bias stays in b_f)."""
    W = np.stack([np.asarray(tree[name]["kernel"]).T for name in INPUT_NAMES])
    U = np.stack([np.asarray(tree[name]["kernel"]).T for name in HIDDEN_NAMES])
    b = np.stack([np.asarray(tree[name]["bias"]) for name in HIDDEN_NAMES])
    return LSTMParams(W, U, b)


@dataclass(frozen=True)
class _Cell(Layout):
    def _to_native(self, params: LayerParams, layer: LayerConfig):
        return cell_tree(params.cells[0], layer.forget_bias)

    def _from_native(self, native, layer: LayerConfig) -> LayerParams:
        return LayerParams((cell_from_tree(native),))


@dataclass(frozen=True)
class _Stack(Layout):
    def _to_native(self, params: LayerParams, layer: LayerConfig):
        trees = [cell_tree(cell, layer.forget_bias) for cell in params.cells]
        if layer.num_directions == 1:
            return {f"layers_{l}": {"cell": trees[l]} for l in range(layer.num_layers)}
        return {f"layers_{l}": {"forward_rnn": {"cell": trees[2 * l]}, "backward_rnn": {"cell": trees[2 * l + 1]}}
                for l in range(layer.num_layers)}

    def _from_native(self, native, layer: LayerConfig) -> LayerParams:
        cells = []
        for l in range(layer.num_layers):
            entry = native[f"layers_{l}"]
            directions = [entry] if layer.num_directions == 1 else [entry["forward_rnn"], entry["backward_rnn"]]
            cells.extend(cell_from_tree(direction["cell"]) for direction in directions)
        return LayerParams(tuple(cells), layer.num_directions)


CELL = _Cell(
    name="flax LSTMCell tree",
    holds=frozenset(),
    reasons={**REASONS, Feature.STACKED: _ONE_CELL, Feature.REVERSE: _ONE_CELL, Feature.BIDIRECTIONAL: _ONE_CELL},
)

STACK = _Stack(
    name="flax stack of nn.RNN / nn.Bidirectional (layers_<l>)",
    holds=frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL}),
    reasons=REASONS,
)

__all__ = ["CELL", "HIDDEN_NAMES", "INPUT_NAMES", "NO_PEEPHOLES", "REASONS", "STACK", "cell_from_tree", "cell_tree"]
