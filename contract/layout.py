"""A layout: how one framework stores an LSTM's parameters, and the one conversion to and from the spec's.

The canonical parameters are :class:`spec.params.LayerParams` (gates i, f, g, o; W (4, H, I), U (4, H, P),
b (4, H), p (3, H) for i, f, o, W_hr (P, H); cell l * D + d). A framework's *native* parameters are
whatever its loader takes (a state_dict, a Keras layer's variables by path, a flax tree, ONNX
initializers), as NumPy arrays by native name, plus any attributes it keeps beside them (a forget bias).

A layout declares once what it can express (:attr:`Layout.holds`, architecture features of
:mod:`contract.vocabulary`) and why it cannot express the rest (:attr:`Layout.reasons`); converting
anything it cannot hold raises :class:`contract.errors.NotSupported` with that reason, from that
declaration. Layouts are NumPy only: the rows, the porting command and the training runs share them.

Three conversions, each written once per layout:

- ``to_native(params, layer)``: the native arrays (a forget bias folded where there is no attribute for it);
- ``from_native(native, layer)``: the canonical parameters back (a native forget bias folded into b_f);
- ``gradient(native_gradients, params, layer)``: the canonical gradients from the gradients of the native
  arrays, the transpose of ``to_native`` (for a layout that only moves entries about, ``from_native`` without
  any forget bias; a layout that feeds one canonical tensor to two native ones, such as two biases, sums).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from contract.errors import NotSupported
from contract.vocabulary import ARCHITECTURE, Feature, features_of, in_order
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError


def fold_forget_bias(b: np.ndarray, forget_bias: float) -> np.ndarray:
    """b (4, H) with the forget bias added to the f block: how every layout without a forget-bias attribute
    carries one."""
    out = b.copy()
    f = GATES.index("f")
    exact = b[f].astype(np.float64) + forget_bias
    out[f] = exact.astype(b.dtype)
    if b.dtype.itemsize == 2 and (lost := int(np.count_nonzero(out[f].astype(np.float64) != exact))):
        # In a half type b_f + forget_bias is rounded: the row would compute on other data than it was given.
        raise NotSupported(f"this layout has no forget-bias attribute, and b_f + {forget_bias:g} folded into its bias "
                           f"is not a {b.dtype.name} value at {lost} of {exact.size} units: it cannot hold this "
                           f"{b.dtype.name} data exactly")
    return out


def stack_directions(params: LayerParams, layer: LayerConfig, cell_to_native, name) -> dict[str, np.ndarray]:
    """The native arrays of a stack held as one op per layer with both directions on each tensor's leading axis,
    forward first (ONNX's LSTM node, OpenVINO's LSTMSequence): ``cell_to_native(cell)`` gives one cell's tensors,
    each (1, ...), ``name(l, tensor)`` their native names."""
    native = {}
    for l in range(layer.num_layers):
        directions = [cell_to_native(params.cell(l, d)) for d in range(layer.num_directions)]
        for tensor in directions[0]:
            native[name(l, tensor)] = np.concatenate([cell[tensor] for cell in directions])
    return native


def split_directions(native: Mapping[str, object], layer: LayerConfig, tensors: tuple[str, ...],
                     required: tuple[str, ...], name, op: str) -> list[dict]:
    """The transpose of :func:`stack_directions`: each cell's tensors (each (1, ...), None where absent), cell l * D + d,
    checked: the ``required`` tensors of every op present, each present tensor one row per direction."""
    D, cells = layer.num_directions, []
    for l in range(layer.num_layers):
        held = {t: native.get(name(l, t)) for t in tensors}
        for t in required:
            if held[t] is None:
                raise LSTMInputError(name(l, t), "missing", f"{' and '.join(required)} of each of the {layer.num_layers} "
                                     f"{op}(s)", sorted(native))
        for t, tensor in held.items():
            if tensor is not None and (not isinstance(tensor, np.ndarray) or tensor.ndim < 1 or tensor.shape[0] != D):
                raise LSTMInputError(name(l, t), "wrong shape", f"({D}, ...): one row per direction",
                                     getattr(tensor, "shape", type(tensor).__name__))
        for d in range(D):
            cells.append({t: None if tensor is None else np.asarray(tensor[d: d + 1]) for t, tensor in held.items()})
    return cells


@dataclass(frozen=True)
class Layout:
    """Base class of layouts: subclasses supply :meth:`_to_native` and :meth:`_from_native` (and
    :meth:`_gradient` where the transpose is not :meth:`_from_native`)."""

    name: str = ""
    #: The architecture features (contract.vocabulary.ARCHITECTURE) these native parameters can express.
    holds: frozenset = frozenset()
    #: Why it cannot express each of the others, in the framework's words.
    reasons: Mapping[Feature, str] = field(default_factory=dict)
    #: Whether a coupled cell's forget-gate tensors, which take no part (spec (2c)), survive a round trip; False where
    #: the native parameters have no place for them (TFLite's CIFG op): they come back as zeros.
    keeps_unused_forget_gate: bool = True

    def __post_init__(self):
        unknown = set(self.holds) - ARCHITECTURE
        if unknown:
            raise ValueError(f"layout {self.name}: holds {sorted(map(str, unknown))}, which are not architecture features")
        missing = [f for f in in_order(ARCHITECTURE - set(self.holds)) if f not in self.reasons]
        if missing:
            raise ValueError(f"layout {self.name}: no reason given for not holding {[str(f) for f in missing]}")

    def refusal(self, layer: LayerConfig) -> str | None:
        """Why this layout cannot hold ``layer``'s parameters (the first feature it lacks), or None."""
        for feature in in_order(features_of(layer) & ARCHITECTURE):
            if feature not in self.holds:
                return self.reasons[feature]
        return None

    def refuse(self, layer: LayerConfig) -> None:
        if (reason := self.refusal(layer)) is not None:
            raise NotSupported(reason)

    def to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        self.refuse(layer)
        return self._to_native(params, layer)

    def from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        self.refuse(layer)
        return self._from_native(native, layer)

    def gradient(self, native_gradients: Mapping[str, object], params: LayerParams, layer: LayerConfig) -> LayerParams:
        return self._gradient(native_gradients, params, layer)

    # -- what a layout supplies -------------------------------------------------------------------

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        raise NotImplementedError(f"layout {self.name} has no _to_native()")

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        raise NotImplementedError(f"layout {self.name} has no _from_native()")

    def _gradient(self, native_gradients: Mapping[str, object], params: LayerParams, layer: LayerConfig) -> LayerParams:
        """The transpose of a layout that only moves, transposes and reorders entries: the gradients read back as
        parameters, with no forget bias (a gradient has none to fold). A layout that keeps the forget bias as a native
        attribute with a default (TensorFlow's 1.0) must override this: the gradients carry no such attribute, and
        ``_from_native`` would fold the default in."""
        return self._from_native(native_gradients, replace(layer, forget_bias=0.0))


@dataclass(frozen=True)
class Canonical(Layout):
    """The spec's own layout: the native parameters are the canonical ones (plug-ins, the spec's own rows)."""

    name: str = "canonical"
    holds: frozenset = ARCHITECTURE
    reasons: Mapping[Feature, str] = field(default_factory=dict)

    def _to_native(self, params, layer):
        return {"params": params}

    def _from_native(self, native, layer):
        return native["params"]


CANONICAL = Canonical()

_ONE_CELL = "the spec's arrays of one cell: one forward layer, the spec's equations (1)-(6) with peepholes"


@dataclass(frozen=True)
class CellArrays(Layout):
    """One forward cell in the spec's own arrays: W, U, b (the forget bias folded), p. The layout of rows that write
    the spec's equations in a framework's ops (jax/lax.scan)."""

    name: str = "the spec's arrays of one cell (forget bias folded)"
    holds: frozenset = frozenset({Feature.PEEPHOLE})
    reasons: Mapping[Feature, str] = field(default_factory=lambda: {f: _ONE_CELL for f in ARCHITECTURE - {Feature.PEEPHOLE}})

    def _to_native(self, params, layer):
        cell = params.cells[0]
        native = {"W": cell.W.copy(), "U": cell.U.copy(), "b": fold_forget_bias(cell.b, layer.forget_bias)}
        return native if cell.p is None else {**native, "p": cell.p.copy()}

    def _from_native(self, native, layer):
        p = native.get("p")
        cell = LSTMParams(*(np.asarray(native[k]) for k in ("W", "U", "b")), None if p is None else np.asarray(p))
        return LayerParams((cell,))


CELL_ARRAYS = CellArrays()

__all__ = ["CANONICAL", "CELL_ARRAYS", "Canonical", "CellArrays", "Layout", "fold_forget_bias", "split_directions",
           "stack_directions"]
