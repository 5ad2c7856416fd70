"""Keras 3's layouts (gates i, f, g, o, like the spec's), NumPy only.

One cell (``keras.layers.LSTMCell``, inside ``LSTM`` and ``RNN`` alike):

    kernel            (I, 4H) = W^T     the gate blocks side by side, i, f, g, o
    recurrent_kernel  (H, 4H) = U^T
    bias              (4H,)             a forget bias folded into its f block (Keras has no attribute for one;
                                        ``unit_forget_bias`` is an initializer)

A stack is every trainable variable by its Keras path (``variable.path``), which the Keras rows make stable by
naming every layer they build: layer l is ``{inner}_{l}`` (``lstm_0``, ``rnn_1``), and with two directions it is
wrapped in ``bidirectional_{l}``, which names its copies ``forward_{inner}_{l}`` and ``backward_{inner}_{l}``;
the cell inside is always ``lstm_cell``. Cell k = l * D + d is at :meth:`KerasStack.cell_paths` ``[k]``:

    lstm_0/lstm_cell/kernel    bidirectional_1/backward_lstm_1/lstm_cell/bias    rnn_0/lstm_cell/recurrent_kernel

Keras has no peepholes, projection, clips or coupled gates: :data:`NOT_IN_KERAS`, the layouts' reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import check_tensor

#: A cell's variables in the order Keras creates them.
CELL_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
#: The name Keras gives the LSTMCell inside LSTM, and the one the RNN rows give theirs.
CELL_NAME = "lstm_cell"

NO_PEEPHOLES = "Keras' LSTM has no peepholes (LSTMCell computes the gates from x and h only)"
NOT_IN_KERAS = {
    Feature.PEEPHOLE: NO_PEEPHOLES,
    Feature.PROJECTION: "Keras' LSTM has no projection of h (no proj_size / num_proj)",
    Feature.PROJ_CLIP: "Keras' LSTM has no projection, so no projection clip",
    Feature.CELL_CLIP: "Keras' LSTM does not clip the cell state (no cell_clip)",
    Feature.GATE_CLIP: "Keras' LSTM does not clip gate pre-activations (no clip)",
    Feature.COUPLED: "Keras' LSTM has no coupled input and forget gates (no input_forget)",
    Feature.LAYER_NORM: "Keras' LSTM has no layer normalization of the gates",
    Feature.PROJ_BIAS: "Keras' LSTM has no projection, so no projection bias",
}


def cell_to_native(cell: LSTMParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """One cell's kernel, recurrent_kernel and bias (the forget bias folded into the bias)."""
    H, I = cell.hidden_size, cell.input_size
    return {
        "kernel": np.ascontiguousarray(cell.W.reshape(4 * H, I).T),
        "recurrent_kernel": np.ascontiguousarray(cell.U.reshape(4 * H, H).T),
        "bias": fold_forget_bias(cell.b, forget_bias).reshape(4 * H),
    }


def cell_from_native(native: Mapping[str, object]) -> LSTMParams:
    """The canonical cell from kernel, recurrent_kernel and bias, each checked against the others' sizes."""
    kernel, recurrent_kernel, bias = (np.asarray(native[name]) for name in CELL_WEIGHTS)
    I, H = kernel.shape[0], recurrent_kernel.shape[0]
    check_tensor("kernel", kernel, (I, 4 * H), kernel.dtype)
    check_tensor("recurrent_kernel", recurrent_kernel, (H, 4 * H), kernel.dtype)
    check_tensor("bias", bias, (4 * H,), kernel.dtype)
    return LSTMParams(
        W=np.ascontiguousarray(kernel.T.reshape(4, H, I)),
        U=np.ascontiguousarray(recurrent_kernel.T.reshape(4, H, H)),
        b=bias.reshape(4, H).copy(),
    )


@dataclass(frozen=True)
class KerasStack(Layout):
    """A stack of Keras recurrent layers named ``{inner}_{l}`` (``bidirectional_{l}`` around two directions): every
    cell's variables by Keras path. The forget bias is folded in, so the gradient is :meth:`_from_native`'s."""

    #: The recurrent layers' name: lstm for keras.layers.LSTM, rnn for keras.layers.RNN.
    inner: str = "lstm"

    def layer_name(self, depth: int) -> str:
        """The name of the recurrent layer at ``depth`` (inside Bidirectional, Keras prefixes forward_ / backward_)."""
        return f"{self.inner}_{depth}"

    def bidirectional_name(self, depth: int) -> str:
        return f"bidirectional_{depth}"

    def cell_paths(self, layer: LayerConfig) -> list[str]:
        """The Keras path of each cell k = l * D + d."""
        paths = []
        for depth in range(layer.num_layers):
            inner = self.layer_name(depth)
            if layer.direction == "bidirectional":
                outer = self.bidirectional_name(depth)
                paths += [f"{outer}/forward_{inner}/{CELL_NAME}", f"{outer}/backward_{inner}/{CELL_NAME}"]
            else:
                paths.append(f"{inner}/{CELL_NAME}")
        return paths

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        native = {}
        for path, cell in zip(self.cell_paths(layer), params.cells, strict=True):
            native.update({f"{path}/{name}": value for name, value in cell_to_native(cell, layer.forget_bias).items()})
        return native

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        cells = [cell_from_native({name: native[f"{path}/{name}"] for name in CELL_WEIGHTS})
                 for path in self.cell_paths(layer)]
        return LayerParams(tuple(cells), layer.num_directions)


_HOLDS = frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL})
LSTM = KerasStack(name="keras.layers.LSTM variables by path", holds=_HOLDS, reasons=NOT_IN_KERAS, inner="lstm")
RNN = KerasStack(name="keras.layers.RNN(LSTMCell) variables by path", holds=_HOLDS, reasons=NOT_IN_KERAS, inner="rnn")

__all__ = ["CELL_NAME", "CELL_WEIGHTS", "LSTM", "NOT_IN_KERAS", "NO_PEEPHOLES", "RNN", "KerasStack", "cell_from_native",
           "cell_to_native"]
