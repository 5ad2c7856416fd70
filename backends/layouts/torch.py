"""PyTorch's layouts (gates i, f, g, o, like the spec's), NumPy only.

    NN_LSTM     torch.nn.LSTM's state_dict: ``weight_ih_l{l}`` (4H, I; D*P for l >= 1), ``weight_hh_l{l}`` (4H, P),
                ``bias_ih_l{l}`` and ``bias_hh_l{l}`` (4H each, summed), ``weight_hr_l{l}`` (P, H) with a
                projection; ``_reverse`` appended for direction 1
    CELLS       a torch.nn.ModuleList of torch.nn.LSTMCell, cell k = l * D + d: ``{k}.weight_ih``, ``{k}.weight_hh``,
                ``{k}.bias_ih``, ``{k}.bias_hh``: a stack stepped in Python, directions and all
    PEEPHOLE    the spec's equations in torch ops (backends/rows/torch.py): ``weight_ih`` (4H, I), ``weight_hh``
                (4H, H), ``bias`` (4H, forget bias folded), ``peephole`` (3H, gates i, f, o); the rows in gate
                order **i, f, o, g** (:data:`PEEPHOLE_ORDER`), so that one sigmoid covers the three sigmoid gates

b is split exactly in half between PyTorch's two biases (so that code dropping one of them fails instead of
passing by luck); a forget bias goes into ``bias_ih``'s f block (PyTorch has no forget bias). The gradient of b
is therefore the mean of the two biases' gradients, which must agree (both enter every pre-activation alike).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams

#: The gate order of torch/peephole's native rows, and the canonical block each holds.
PEEPHOLE_ORDER = ("i", "f", "o", "g")
TO_PEEPHOLE_ORDER = [GATES.index(g) for g in PEEPHOLE_ORDER]  # canonical blocks in native order
FROM_PEEPHOLE_ORDER = [PEEPHOLE_ORDER.index(g) for g in GATES]  # native blocks in canonical order

def cell_state(cell: LSTMParams, forget_bias: float, name: Callable[[str], str]) -> dict[str, np.ndarray]:
    """One cell in PyTorch's layout, keyed ``name(tensor)``: W (4H, I), U (4H, P), two half biases, W_hr (P, H)."""
    H = cell.hidden_size
    state = {
        name("weight_ih"): cell.W.reshape(4 * H, cell.input_size).copy(),
        name("weight_hh"): cell.U.reshape(4 * H, cell.output_size).copy(),
        name("bias_ih"): fold_forget_bias(cell.b * 0.5, forget_bias).reshape(4 * H),
        name("bias_hh"): (cell.b * 0.5).reshape(4 * H),
    }
    if cell.W_hr is not None:
        state[name("weight_hr")] = cell.W_hr.copy()
    return state


def cell_from_state(state: Mapping[str, object], name: Callable[[str], str]) -> LSTMParams:
    """The canonical cell from PyTorch's tensors: the two biases summed (a module built with bias=False has none)."""
    w_ih, w_hh = np.asarray(state[name("weight_ih")]), np.asarray(state[name("weight_hh")])
    H = w_ih.shape[0] // 4
    bias = np.zeros(4 * H, w_ih.dtype)
    for tensor in ("bias_ih", "bias_hh"):
        if state.get(name(tensor)) is not None:
            bias = bias + np.asarray(state[name(tensor)])
    w_hr = state.get(name("weight_hr"))
    return LSTMParams(w_ih.reshape(4, H, -1).copy(), w_hh.reshape(4, H, -1).copy(), bias.reshape(4, H),
                      W_hr=None if w_hr is None else np.asarray(w_hr).copy())


def cell_gradient(grads: Mapping[str, np.ndarray], cell: LSTMParams, name: Callable[[str], str]) -> LSTMParams:
    """A cell's canonical gradients from those of :func:`cell_state`'s tensors: b's is the mean of the two biases'."""
    d_ih, d_hh = np.asarray(grads[name("bias_ih")]), np.asarray(grads[name("bias_hh")])
    _check_bias_gradients(d_ih, d_hh, name("bias_ih"), name("bias_hh"))
    w_hr = grads.get(name("weight_hr"))
    return LSTMParams(
        np.asarray(grads[name("weight_ih")]).reshape(cell.W.shape),
        np.asarray(grads[name("weight_hh")]).reshape(cell.U.shape),
        ((d_ih + d_hh) * 0.5).reshape(cell.b.shape),
        W_hr=None if w_hr is None else np.asarray(w_hr),
    )


def _check_bias_gradients(d_ih: np.ndarray, d_hh: np.ndarray, ih: str, hh: str) -> None:
    """Both biases enter every pre-activation the same way: their gradients may differ only by rounding."""
    if np.array_equal(d_ih, d_hh):
        return
    eps = float(np.finfo(d_ih.dtype).eps)
    scale = max(float(np.max(np.abs(d_ih))), 1.0)
    worst = float(np.max(np.abs(d_ih - d_hh)))
    if worst > 64 * eps * scale:
        raise AssertionError(f"torch: the gradients of {ih} and {hh} differ by up to {worst:.3g}; they must be equal")


def lstm_names(layer: int, direction: int) -> Callable[[str], str]:
    """torch.nn.LSTM's names for cell (layer, direction): weight_ih -> weight_ih_l1_reverse."""
    return lambda tensor: f"{tensor}_l{layer}{'_reverse' if direction else ''}"


def cell_list_names(k: int) -> Callable[[str], str]:
    """The names in a torch.nn.ModuleList of LSTMCells, cell k = l * D + d: weight_ih -> 3.weight_ih."""
    return lambda tensor: f"{k}.{tensor}"


@dataclass(frozen=True)
class _StateDict(Layout):
    """A stack as PyTorch's state_dict of some module: every cell by :func:`cell_state` under ``names(k, l, d)``."""

    names: Callable[[int, int, int], Callable[[str], str]] = lstm_names

    def _cells(self, layer: LayerConfig):
        D = layer.num_directions
        return [(l * D + d, self.names(l * D + d, l, d)) for l in range(layer.num_layers) for d in range(D)]

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        state = {}
        for k, name in self._cells(layer):
            state.update(cell_state(params.cells[k], layer.forget_bias, name))
        return state

    def _from_native(self, native, layer: LayerConfig) -> LayerParams:
        return LayerParams(tuple(cell_from_state(native, name) for _, name in self._cells(layer)), layer.num_directions)

    def _gradient(self, native_gradients, params: LayerParams, layer: LayerConfig) -> LayerParams:
        cells = tuple(cell_gradient(native_gradients, params.cells[k], name) for k, name in self._cells(layer))
        return LayerParams(cells, layer.num_directions)


NN_LSTM = _StateDict(
    name="torch.nn.LSTM state_dict",
    holds=frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION}),
    reasons={
        Feature.PEEPHOLE: "torch.nn.LSTM has no peepholes",
        Feature.REVERSE: "torch.nn.LSTM has no reverse-only direction: bidirectional=True runs both directions",
        Feature.PROJ_CLIP: "torch.nn.LSTM has no clip on the projection",
        Feature.CELL_CLIP: "torch.nn.LSTM has no cell clip",
        Feature.GATE_CLIP: "torch.nn.LSTM has no gate clip",
        Feature.COUPLED: "torch.nn.LSTM has no coupled input and forget gates",
        Feature.LAYER_NORM: "torch.nn.LSTM has no layer normalization of the gates",
        Feature.PROJ_BIAS: "torch.nn.LSTM projects without a bias (weight_hr only)",
    },
    names=lambda k, l, d: lstm_names(l, d),
)

CELLS = _StateDict(
    name="torch.nn.ModuleList of torch.nn.LSTMCell",
    holds=frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL}),
    reasons={
        Feature.PEEPHOLE: "torch.nn.LSTMCell has no peepholes",
        Feature.PROJECTION: "torch.nn.LSTMCell has no projection (proj_size is torch.nn.LSTM's only)",
        Feature.PROJ_CLIP: "torch.nn.LSTMCell has no projection (proj_size is torch.nn.LSTM's only)",
        Feature.CELL_CLIP: "torch.nn.LSTMCell has no cell clip",
        Feature.GATE_CLIP: "torch.nn.LSTMCell has no gate clip",
        Feature.COUPLED: "torch.nn.LSTMCell has no coupled input and forget gates",
        Feature.LAYER_NORM: "torch.nn.LSTMCell has no layer normalization of the gates",
        Feature.PROJ_BIAS: "torch.nn.LSTMCell has no projection (proj_size is torch.nn.LSTM's only)",
    },
    names=lambda k, l, d: cell_list_names(k),
)


@dataclass(frozen=True)
class _Peephole(Layout):
    """One forward cell in the gate order i, f, o, g, the forget bias folded, peepholes flat."""

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        cell = params.cells[0]
        H, I = cell.hidden_size, cell.input_size
        native = {
            "weight_ih": cell.W[TO_PEEPHOLE_ORDER].reshape(4 * H, I),
            "weight_hh": cell.U[TO_PEEPHOLE_ORDER].reshape(4 * H, H),
            "bias": fold_forget_bias(cell.b, layer.forget_bias)[TO_PEEPHOLE_ORDER].reshape(4 * H),
        }
        if cell.p is not None:
            native["peephole"] = cell.p.reshape(3 * H).copy()
        return native

    def _from_native(self, native, layer: LayerConfig) -> LayerParams:
        w_ih, w_hh, bias = (np.asarray(native[k]) for k in ("weight_ih", "weight_hh", "bias"))
        H = w_ih.shape[0] // 4
        p = native.get("peephole")
        cell = LSTMParams(
            np.ascontiguousarray(w_ih.reshape(4, H, -1)[FROM_PEEPHOLE_ORDER]),
            np.ascontiguousarray(w_hh.reshape(4, H, H)[FROM_PEEPHOLE_ORDER]),
            np.ascontiguousarray(bias.reshape(4, H)[FROM_PEEPHOLE_ORDER]),
            None if p is None else np.asarray(p).reshape(3, H).copy(),
        )
        return LayerParams((cell,))


_ONE_CELL = "torch/peephole is one forward cell: the spec's equations (1)-(6) in torch ops"
PEEPHOLE = _Peephole(
    name="torch/peephole (rows i, f, o, g)",
    holds=frozenset({Feature.PEEPHOLE}),
    reasons={feature: _ONE_CELL for feature in (
        Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.PROJECTION, Feature.PROJ_CLIP, Feature.CELL_CLIP,
        Feature.GATE_CLIP, Feature.COUPLED, Feature.LAYER_NORM, Feature.PROJ_BIAS)},
)

__all__ = ["CELLS", "NN_LSTM", "PEEPHOLE", "PEEPHOLE_ORDER", "cell_from_state", "cell_gradient", "cell_list_names", "cell_state",
           "lstm_names"]
