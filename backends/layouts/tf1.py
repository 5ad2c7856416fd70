"""TensorFlow 1's ``tf.compat.v1.nn.rnn_cell`` cells' layout: their variables by the names the graph gives them,
NumPy only.

    <scope>/<cell>/kernel             (I + P, 4H), rows [x; h], columns i, j (= g), f, o: BlockLSTM V1's w
    <scope>/<cell>/bias               (4H), i, j, f, o; the forget bias (TF1's default 1.0) is added, not stored
    <scope>/<cell>/w_i_diag, w_f_diag, w_o_diag    (H) peepholes (LSTMCell(use_peepholes=True))
    <scope>/<cell>/projection/kernel  (H, P) = W_hr^T (LSTMCell(num_proj))
    forget_bias                       the cells' attribute (not a variable: no "/" in its name)

with <cell> ``basic_lstm_cell`` (BASIC_LSTM_CELL) or ``lstm_cell`` (LSTM_CELL) and <scope> ``rnn`` (one forward
layer), ``rnn/multi_rnn_cell/cell_<l>`` (a forward stack), ``bidirectional_rnn/fw`` and ``/bw`` (one bidirectional
layer), ``layer_<l>/bidirectional_rnn/fw`` and ``/bw`` (a bidirectional stack, one call per layer): the default
scopes of the functions, as a tutorial's checkpoint holds them. The gate columns are BlockLSTM V1's
(backends/layouts/tf_block.py): TF1's LSTMCell runs that kernel's column order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from backends.layouts.tf_block import V1_GATES, bias_from_native, bias_to_native, kernel_from_native, kernel_to_native
from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

#: TF1's kernel columns: i, j (the candidate, g), f, o.
TF1_GATES = V1_GATES
#: TF1's cells add this to the forget gate unless told otherwise; from_native assumes it when a native dict (a
#: checkpoint's variables) does not say.
DEFAULT_FORGET_BIAS = 1.0
PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")


def cell_scope(layer: LayerConfig, k: int, cell_name: str) -> str:
    """Where cell k (layer l = k // D, direction d = k % D) keeps its variables: the functions' default scopes."""
    D = layer.num_directions
    l, d = divmod(k, D)
    if D == 1:
        return f"rnn/{cell_name}" if layer.num_layers == 1 else f"rnn/multi_rnn_cell/cell_{l}/{cell_name}"
    stack = f"layer_{l}/" if layer.num_layers > 1 else ""
    return f"{stack}bidirectional_rnn/{('fw', 'bw')[d]}/{cell_name}"


def cell_to_native(params: LSTMParams, scope: str) -> dict[str, np.ndarray]:
    native = {f"{scope}/kernel": kernel_to_native(params, TF1_GATES), f"{scope}/bias": bias_to_native(params.b, TF1_GATES)}
    if params.peephole:
        native.update({f"{scope}/{name}": params.p[k].copy() for k, name in enumerate(PEEPHOLES)})
    if params.W_hr is not None:
        native[f"{scope}/projection/kernel"] = np.ascontiguousarray(params.W_hr.T)
    return native


def cell_from_native(native: Mapping[str, object], scope: str, *, peephole: bool, projection: bool, forget_bias: float) -> LSTMParams:
    """One cell's canonical parameters; the forget bias is folded into b_f."""
    try:
        kernel, bias = (np.asarray(native[f"{scope}/{name}"]) for name in ("kernel", "bias"))
        p = np.stack([np.asarray(native[f"{scope}/{name}"]) for name in PEEPHOLES]) if peephole else None
        W_hr = np.ascontiguousarray(np.asarray(native[f"{scope}/projection/kernel"]).T) if projection else None
    except KeyError as missing:
        raise LSTMInputError("native", "missing variable", missing.args[0], sorted(k for k in native if k.startswith(scope))) from None
    H = bias.shape[0] // 4
    P = H if W_hr is None else W_hr.shape[0]
    check_tensor(f"{scope}/bias", bias, (4 * H,), kernel.dtype)
    check_tensor(f"{scope}/kernel", kernel, ("I + P", 4 * H), kernel.dtype)
    W, U = kernel_from_native(kernel, kernel.shape[0] - P, TF1_GATES)
    b = fold_forget_bias(bias_from_native(bias, TF1_GATES), forget_bias)
    return LSTMParams(W=W, U=U, b=b, p=p, W_hr=W_hr)


@dataclass(frozen=True)
class TF1Cells(Layout):
    """Every cell of a TF1 stack by its variables' graph names, and ``forget_bias``, the cells' attribute (not folded)."""

    #: The cell's variable scope: "basic_lstm_cell" or "lstm_cell".
    cell_name: str = "lstm_cell"

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        native: dict[str, object] = {}
        for k, cell in enumerate(params.cells):
            native.update(cell_to_native(cell, cell_scope(layer, k, self.cell_name)))
        native["forget_bias"] = float(layer.forget_bias)
        return native

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        """The native forget bias (TF1's default 1.0 when not given) folded into b_f."""
        forget_bias = float(native.get("forget_bias", DEFAULT_FORGET_BIAS))
        cells = tuple(
            cell_from_native(native, cell_scope(layer, k, self.cell_name), peephole=layer.peephole,
                             projection=layer.proj_size is not None, forget_bias=forget_bias)
            for k in range(layer.num_layers * layer.num_directions)
        )
        return LayerParams(cells, layer.num_directions)

    def _gradient(self, native_gradients, params: LayerParams, layer: LayerConfig) -> LayerParams:
        """The variables' gradients read back: the layout only moves entries, and a gradient has no forget bias."""
        return self._from_native({**native_gradients, "forget_bias": 0.0}, layer)


_REVERSE = (
    "TF1's RNN functions run a reverse direction only as the backward half of bidirectional_dynamic_rnn / "
    "static_bidirectional_rnn (a lone one is the user's tf.reverse_sequence around dynamic_rnn)"
)
_COMMON_REASONS = {
    Feature.REVERSE: _REVERSE,
    Feature.GATE_CLIP: "TF1's cells clip the cell state (LSTMCell(cell_clip)), not the gate pre-activations",
    Feature.COUPLED: "TF1's nn.rnn_cell has no coupled input and forget gates (CoupledInputForgetGateLSTMCell left with tf.contrib)",
    Feature.LAYER_NORM: "TF1's nn.rnn_cell LSTM cells have no layer normalization (LayerNormBasicLSTMCell left with tf.contrib)",
    Feature.PROJ_BIAS: "TF1's LSTMCell projects without a bias (num_proj: a kernel only)",
}
_STACKS = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL})

BASIC_LSTM_CELL = TF1Cells(
    name="tf.compat.v1.nn.rnn_cell.BasicLSTMCell variables",
    holds=_STACKS,
    reasons={
        **_COMMON_REASONS,
        Feature.PEEPHOLE: "BasicLSTMCell has no peepholes (TF1's peephole cell is LSTMCell(use_peepholes=True))",
        Feature.PROJECTION: "BasicLSTMCell has no projection (TF1's is LSTMCell(num_proj))",
        Feature.PROJ_CLIP: "BasicLSTMCell has no projection to clip (TF1's is LSTMCell(num_proj, proj_clip))",
        Feature.CELL_CLIP: "BasicLSTMCell does not clip the cell state (TF1's is LSTMCell(cell_clip))",
    },
    cell_name="basic_lstm_cell",
)
LSTM_CELL = TF1Cells(
    name="tf.compat.v1.nn.rnn_cell.LSTMCell variables",
    holds=_STACKS | {Feature.PEEPHOLE, Feature.PROJECTION, Feature.PROJ_CLIP, Feature.CELL_CLIP},
    reasons=_COMMON_REASONS,
    cell_name="lstm_cell",
)

__all__ = ["BASIC_LSTM_CELL", "DEFAULT_FORGET_BIAS", "LSTM_CELL", "PEEPHOLES", "TF1_GATES", "TF1Cells", "cell_from_native",
           "cell_scope", "cell_to_native"]
