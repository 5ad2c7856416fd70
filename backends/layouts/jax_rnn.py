"""jax.experimental.rnn's LSTM layout: one flat weight vector (cuDNN's packing), NumPy only.

    FLAT_WEIGHTS  rnn.lstm's / rnn.lstm_ref's own arguments: ``{"weights": (n,), "input_size", "hidden_size",
                  "num_layers", "bidirectional"}``. As jax/experimental/rnn.py documents the packing: for each
                  pseudo-layer k = l * D + d (forward, then reverse), W_ih (4H, in) then W_hh (4H, H), row-major;
                  then for each, b_ih then b_hh (4H); in = I for layer 0, D * H above. Gates i, f, g, o (PyTorch's,
                  the spec's: the canonical W (4, H, in) is W_ih row by row).

b (a forget bias folded in: rnn has no attribute for it) is split into two equal halves, exact in binary, so that
an implementation that drops one of the two biases cannot pass by luck. The gradient of b is therefore the mean
of the two halves' gradients, (d b_ih + d b_hh) / 2, both entering every pre-activation alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams

NO_PEEPHOLES = "jax.experimental.rnn's LSTM has no peepholes"
REASONS = {
    Feature.PEEPHOLE: NO_PEEPHOLES,
    Feature.REVERSE: "jax.experimental.rnn has no reverse-only direction (bidirectional=True or forward only)",
    Feature.PROJECTION: "jax.experimental.rnn's LSTM has no projection (LSTMP)",
    Feature.PROJ_CLIP: "jax.experimental.rnn's LSTM has no projection, so no proj_clip",
    Feature.CELL_CLIP: "jax.experimental.rnn's LSTM has no cell clip",
    Feature.GATE_CLIP: "jax.experimental.rnn's LSTM has no gate clip",
    Feature.COUPLED: "jax.experimental.rnn's LSTM has no coupled input and forget gates",
    Feature.LAYER_NORM: "jax.experimental.rnn's LSTM has no layer normalization of the gates",
    Feature.PROJ_BIAS: "jax.experimental.rnn's LSTM has no projection, so no projection bias",
}


def rnn_flat_weights(cells) -> np.ndarray:
    """The flat vector from every cell's (W, U, b), cell k = l * D + d, b with any forget bias folded."""
    weights = [w for W, U, _ in cells for w in (W.reshape(-1), U.reshape(-1))]
    biases = [half for _, _, b in cells for half in (b.reshape(-1) * 0.5, b.reshape(-1) * 0.5)]
    return np.concatenate(weights + biases)


def rnn_unpacked(weights: np.ndarray, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool):
    """The inverse of the packing: every pseudo-layer's (W_ih (4H, in), W_hh (4H, H), b_ih (4H,), b_hh (4H,)), as
    rnn.unpack_lstm_weights gives them, in NumPy. The length must be exactly what the sizes make."""
    weights = np.asarray(weights)
    H, D = hidden_size, 2 if bidirectional else 1
    widths = [input_size if k < D else D * H for k in range(num_layers * D)]
    expected = sum(4 * H * (width + H) + 8 * H for width in widths)
    if weights.shape != (expected,):
        raise ValueError(f"weights: expected shape ({expected},) for input_size={input_size}, hidden_size={H}, "
                         f"num_layers={num_layers}, bidirectional={bidirectional}, got {weights.shape}")
    at, matrices, biases = 0, [], []
    for width in widths:
        W_ih = weights[at: at + 4 * H * width].reshape(4 * H, width)
        at += 4 * H * width
        W_hh = weights[at: at + 4 * H * H].reshape(4 * H, H)
        at += 4 * H * H
        matrices.append((W_ih, W_hh))
    for _ in widths:
        biases.append((weights[at: at + 4 * H], weights[at + 4 * H: at + 8 * H]))
        at += 8 * H
    return [(W_ih, W_hh, b_ih, b_hh) for (W_ih, W_hh), (b_ih, b_hh) in zip(matrices, biases)]


@dataclass(frozen=True)
class _FlatWeights(Layout):
    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        cells = [(cell.W, cell.U, fold_forget_bias(cell.b, layer.forget_bias)) for cell in params.cells]
        return {"weights": rnn_flat_weights(cells), "input_size": params.input_size, "hidden_size": params.hidden_size,
                "num_layers": layer.num_layers, "bidirectional": layer.direction == "bidirectional"}

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        """Every cell's (W, U, b = b_ih + b_hh)."""
        I, H, L, bidirectional = (native[k] for k in ("input_size", "hidden_size", "num_layers", "bidirectional"))
        cells = tuple(LSTMParams(W_ih.reshape(4, H, -1).copy(), W_hh.reshape(4, H, H).copy(), (b_ih + b_hh).reshape(4, H))
                      for W_ih, W_hh, b_ih, b_hh in rnn_unpacked(native["weights"], I, H, L, bidirectional))
        return LayerParams(cells, 2 if bidirectional else 1)

    def _gradient(self, native_gradients: Mapping[str, object], params: LayerParams, layer: LayerConfig) -> LayerParams:
        """From the gradient of the flat vector (``{"weights": ...}``; the sizes are the parameters'): W and U as read
        back, b the transpose of the split, (d b_ih + d b_hh) / 2."""
        H = params.hidden_size
        unpacked = rnn_unpacked(native_gradients["weights"], params.input_size, H, layer.num_layers,
                                layer.direction == "bidirectional")
        cells = tuple(LSTMParams(dW.reshape(4, H, -1).copy(), dU.reshape(4, H, H).copy(), ((db_ih + db_hh) * 0.5).reshape(4, H))
                      for dW, dU, db_ih, db_hh in unpacked)
        return LayerParams(cells, layer.num_directions)


FLAT_WEIGHTS = _FlatWeights(
    name="jax.experimental.rnn flat weights (cuDNN's packing)",
    holds=frozenset({Feature.STACKED, Feature.BIDIRECTIONAL}),
    reasons=REASONS,
)

__all__ = ["FLAT_WEIGHTS", "NO_PEEPHOLES", "REASONS", "rnn_flat_weights", "rnn_unpacked"]
