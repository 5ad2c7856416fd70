"""TensorFlow's block LSTM kernels' layouts, ``tf.raw_ops.BlockLSTM`` (V1) and ``BlockLSTMV2``, NumPy only; and the
fused gate columns that TF1's cells share with them (backends/layouts/tf1.py).

    BLOCK_V1    w (I + H, 4H), rows [x; h], columns in gate order i, g, f, o; b (4H) in i, g, f, o; wci, wcf, wco (H);
                attributes forget_bias (the op's default 1.0!), cell_clip (default 3.0!), use_peephole
    BLOCK_V2    as V1 but gates i, f, g, o and no forget_bias attribute (folded into b); cell_clip default 0.0 = off

Both are one forward layer: the op runs one cell over time-major x (T, B, I). Every attribute is written out
(``to_native``), so that no op default applies by accident; a checkpoint's dict that omits one gets the op's
default on the way back (``from_native``). Without peepholes, wci, wcf and wco are zeros and use_peephole is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.errors import NotSupported
from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

#: The op's gate orders: V1 computes in i, g, f, o (TF1's cells' i, j, f, o), V2 in the canonical i, f, g, o.
V1_GATES = ("i", "g", "f", "o")
V2_GATES = GATES
BLOCK_GATES = {1: V1_GATES, 2: V2_GATES}
#: The op's weight tensors, in its argument order.
WEIGHTS = ("w", "wci", "wcf", "wco", "b")
PEEPHOLES = ("wci", "wcf", "wco")
#: cell_clip values that switch clipping off (the op clips only when cell_clip > 0).
NO_CLIP = {1: -1.0, 2: 0.0}
#: The ops' attribute defaults, which from_native assumes when a native dict omits them.
DEFAULT_FORGET_BIAS_V1 = 1.0
DEFAULT_CELL_CLIP = {1: 3.0, 2: 0.0}


# ---------------------------------------------------------------------------
# Fused gate columns (BlockLSTM's w and b, TF1's kernel and bias)
# ---------------------------------------------------------------------------


def to_gate_columns(blocks: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    """Canonical blocks (4, H, K), gates i, f, g, o, as TensorFlow's fused columns (K, 4H), gate blocks in the order
    ``gates``: BlockLSTM's w and b, TF1's LSTMCell kernel and bias. A bias is K = 1."""
    H, K = blocks.shape[1:]
    return np.ascontiguousarray(blocks[[GATES.index(g) for g in gates]].reshape(4 * H, K).T)


def from_gate_columns(columns: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    """The inverse of :func:`to_gate_columns`: (K, 4H) columns in the order ``gates`` as canonical (4, H, K) blocks."""
    K, H = columns.shape[0], columns.shape[1] // 4
    return np.ascontiguousarray(columns.T.reshape(4, H, K)[[gates.index(g) for g in GATES]])


def kernel_to_native(params: LSTMParams, gates: tuple[str, ...]) -> np.ndarray:
    """W and U as one kernel (I + P, 4H): rows [x; h], columns in the order ``gates``."""
    return to_gate_columns(np.concatenate([params.W, params.U], axis=2), gates)


def kernel_from_native(kernel: np.ndarray, input_size: int, gates: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """W (4, H, I) and U (4, H, P) from a kernel (I + P, 4H) with rows [x; h]."""
    WU = from_gate_columns(kernel, gates)
    return np.ascontiguousarray(WU[:, :, :input_size]), np.ascontiguousarray(WU[:, :, input_size:])


def bias_to_native(b: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    return to_gate_columns(b[:, :, None], gates).reshape(-1)


def bias_from_native(bias: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    return from_gate_columns(bias[None, :], gates)[:, :, 0]


# ---------------------------------------------------------------------------
# One cell as the op's arguments
# ---------------------------------------------------------------------------

_ONE_LAYER = "BlockLSTM is one layer (a stack is one op per layer, wired by hand)"
REASONS = {
    Feature.STACKED: _ONE_LAYER,
    Feature.REVERSE: "BlockLSTM runs forward in time only",
    Feature.BIDIRECTIONAL: "BlockLSTM runs forward in time only (a second direction is a second op on reversed input, by hand)",
    Feature.PROJECTION: "BlockLSTM has no projection",
    Feature.PROJ_CLIP: "BlockLSTM has no projection to clip",
    Feature.GATE_CLIP: "BlockLSTM clips the cell state (cell_clip), not the gate pre-activations",
    Feature.COUPLED: "BlockLSTM has no coupled input and forget gates",
    Feature.LAYER_NORM: "BlockLSTM has no layer normalization of the gates",
    Feature.PROJ_BIAS: "BlockLSTM has no projection, so no projection bias",
}


def block_to_native(params: LSTMParams, forget_bias: float = 0.0, *, version: int, cell_clip: float | None = None) -> dict[str, object]:
    """w, b, wci, wcf, wco and the attributes (forget_bias for V1, cell_clip, use_peephole), all explicit.
    ``cell_clip`` None switches the op's clip off (V1 would clip at 3 by default)."""
    if params.W_hr is not None:
        raise NotSupported(REASONS[Feature.PROJECTION])
    gates = BLOCK_GATES[version]
    b = params.b if version == 1 else fold_forget_bias(params.b, forget_bias)
    peepholes = params.p if params.peephole else np.zeros((3, params.hidden_size), params.dtype)
    native: dict[str, object] = {
        "w": kernel_to_native(params, gates),
        "b": bias_to_native(b, gates),
        **{name: peepholes[k].copy() for k, name in enumerate(PEEPHOLES)},
    }
    if version == 1:
        native["forget_bias"] = float(forget_bias)
    native["cell_clip"] = NO_CLIP[version] if cell_clip is None else float(cell_clip)
    native["use_peephole"] = params.peephole
    return native


def block_from_native(native: Mapping[str, object], *, version: int, input_size: int | None = None,
                      cell_clip: float | None = None) -> LSTMParams:
    """Canonical parameters from a block op's w, b (and peepholes); a V1 forget_bias is folded into b_f.

    A missing attribute means the op's default (V1: forget_bias 1.0, cell_clip 3.0). The op's cell_clip must be
    the canonical side's ``cell_clip`` (a layer's LayerConfig.cell_clip; None: no clip, so a clipping op is refused).
    ``input_size`` defaults to w's rows minus H.
    """
    w, b = np.asarray(native["w"]), np.asarray(native["b"])
    H = b.shape[0] // 4
    I = w.shape[0] - H if input_size is None else input_size
    check_tensor("w", w, (I + H, 4 * H), w.dtype)
    check_tensor("b", b, (4 * H,), w.dtype)
    _check_cell_clip(float(native.get("cell_clip", DEFAULT_CELL_CLIP[version])), cell_clip)
    gates = BLOCK_GATES[version]
    W, U = kernel_from_native(w, I, gates)
    b_canonical = bias_from_native(b, gates)
    if version == 1:
        b_canonical = fold_forget_bias(b_canonical, float(native.get("forget_bias", DEFAULT_FORGET_BIAS_V1)))
    p = np.stack([np.asarray(native[k]) for k in PEEPHOLES]) if native.get("use_peephole", False) else None
    return LSTMParams(W=W, U=U, b=b_canonical, p=p)


def block_gradient(native_gradients: Mapping[str, object], cell: LSTMParams, *, version: int) -> LSTMParams:
    """A cell's canonical gradients from those of w, b (and wci, wcf, wco where ``cell`` has peepholes): the
    transpose of :func:`block_to_native`, which only moves entries (a forget bias adds a constant)."""
    grads = {name: native_gradients[name] for name in WEIGHTS}
    return block_from_native({**grads, "forget_bias": 0.0, "cell_clip": NO_CLIP[version], "use_peephole": cell.peephole},
                             version=version, input_size=cell.input_size)


def _check_cell_clip(native_clip: float, wanted: float | None) -> None:
    """The op clips only when cell_clip > 0; the canonical side clips at ``wanted`` (None: not at all)."""
    if wanted is None and native_clip > 0:
        raise NotSupported(f"cell_clip={native_clip} clips the cell state: the canonical LSTM does not "
                           "(a layer does with LayerConfig.cell_clip)")
    if wanted is not None and native_clip != wanted:
        raise LSTMInputError("cell_clip", "disagrees with the layer's cell_clip", wanted, native_clip)


@dataclass(frozen=True)
class BlockLayout(Layout):
    """One forward cell as BlockLSTM (``version`` 1) or BlockLSTMV2 (2) takes it; layer.cell_clip is the op's."""

    version: int = 1

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        return block_to_native(params.cells[0], layer.forget_bias, version=self.version, cell_clip=layer.cell_clip)

    def _from_native(self, native, layer: LayerConfig) -> LayerParams:
        return LayerParams((block_from_native(native, version=self.version, cell_clip=layer.cell_clip),))

    def _gradient(self, native_gradients, params: LayerParams, layer: LayerConfig) -> LayerParams:
        return LayerParams((block_gradient(native_gradients, params.cells[0], version=self.version),))


_HOLDS = frozenset({Feature.PEEPHOLE, Feature.CELL_CLIP})
BLOCK_V1 = BlockLayout(name="tf.raw_ops.BlockLSTM (w columns i, g, f, o; forget_bias attribute)", holds=_HOLDS,
                       reasons=REASONS, version=1)
BLOCK_V2 = BlockLayout(name="tf.raw_ops.BlockLSTMV2 (w columns i, f, g, o; forget bias folded into b)", holds=_HOLDS,
                       reasons=REASONS, version=2)

__all__ = [
    "BLOCK_GATES", "BLOCK_V1", "BLOCK_V2", "BlockLayout", "DEFAULT_CELL_CLIP", "DEFAULT_FORGET_BIAS_V1", "NO_CLIP",
    "PEEPHOLES", "REASONS", "V1_GATES", "V2_GATES", "WEIGHTS", "bias_from_native", "bias_to_native", "block_from_native",
    "block_gradient", "block_to_native", "from_gate_columns", "kernel_from_native", "kernel_to_native", "to_gate_columns",
]
