"""Recognising the common mistakes: when a failing result matches the spec under a known mistake, say which.

Each hypothesis is the spec computed with one deliberate change, on the case's data widened to float64:

- the parameters rearranged, in every cell: the gates in another order, the recurrent matrix transposed, the
  forget bias missing, doubled or TensorFlow's default of 1 added, one of two biases dropped, peepholes exchanged
  or ignored; their gradients in two frames (:data:`AS_USED`, :data:`MAPPED_BACK`);
- for a plain cell, the cell's own mistakes (:mod:`conformance.known_bugs`): the output gate peeking at c_{t-1},
  h without its tanh, TensorFlow's cell clipping at 3; and its backward mistakes;
- the layer's mistakes (:mod:`conformance.known_layer_bugs`) that can change something on the case: directions
  and stacking plumbed wrongly, the projection in the wrong place, lengths and masks misapplied, clips on the wrong
  quantity, the coupled gate from the forget weights, and backward-only mistakes;
- a correct forward with cotangents ignored (dh_T, dc_T, the last step's dy).

A hypothesis is reported when every tensor it predicts agrees with the implementation's within the tolerance the
test uses, and it differs from the spec on this case: "matches the spec if gates f and g are swapped". Apart from
the hypotheses, a float64 result whose error is at float32's level is named as such, and parameter gradients right
but for two gates' blocks exchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import combinations, permutations

import numpy as np

from conformance import known_bugs, known_layer_bugs
from contract.compare import compare
from contract.tolerances import tolerance
from contract.vocabulary import Kind
from spec import layer
from spec.cases import CaseData, is_cell, widened
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams

ORDER_NAMES = {("i", "g", "f", "o"): "TensorFlow's BlockLSTM order", ("i", "o", "f", "g"): "ONNX's order"}

#: For a float64 request, the precision whose error level is named when a result is at it.
LOWER_PRECISION = {"float64": "float32"}

# A mistake that rearranges the parameters may report its gradients in either of two frames. Loading the weights
# wrongly and then differentiating what it computed gives the gradients of the parameters as it used them;
# differentiating through the wrong loading (autodiff over it, or mapping the gradients back with the same mistake)
# gives those of the parameters it was given. Both are tried, and the diagnosis says which.
AS_USED = "(its gradients are those of the parameters as it used them)"
MAPPED_BACK = "(its gradients are mapped back through the same mistake to the parameters it was given)"


@dataclass(frozen=True, eq=False)
class Rearrangement:
    """A mistake in the parameters alone: what every cell computes with instead of what it was given."""

    description: str  # completes "matches the spec if ..."
    cell: Callable[[LSTMParams], LSTMParams]  # the parameters as used, from those given
    forget_bias: Callable[[float], float] = lambda fb: fb
    #: The chain rule back through it (gradients of the parameters used -> of those given), per cell; None when the
    #: mistake is not a rearrangement (a bias halved: the gradient of the one bias used is what is reported).
    map_back: Callable[[LSTMParams], LSTMParams] | None = None


def _permuted(order) -> Rearrangement:
    order = list(order)
    inverse = list(np.argsort(order))
    names = tuple(GATES[k] for k in order)
    moved = [k for k in range(4) if order[k] != k]
    if len(moved) == 2:
        description = f"gates {GATES[moved[0]]} and {GATES[moved[1]]} are swapped"
    else:
        label = ORDER_NAMES.get(names)
        description = f"its gates are stacked {','.join(names)}" + (f" ({label})" if label else "") + " instead of i,f,g,o"
    return Rearrangement(description, lambda c: replace_gates(c, order), map_back=lambda g: replace_gates(g, inverse))


def replace_gates(cell: LSTMParams, order) -> LSTMParams:
    return LSTMParams(cell.W[order], cell.U[order], cell.b[order], cell.p, cell.W_hr)


def _peepholes_swapped(a: int, b: int) -> Rearrangement:
    order = [0, 1, 2]
    order[a], order[b] = b, a
    swap = lambda c: LSTMParams(c.W, c.U, c.b, c.p[order], c.W_hr)  # noqa: E731 (its own inverse)
    return Rearrangement(f"the peepholes of {PEEPHOLE_GATES[a]} and {PEEPHOLE_GATES[b]} are swapped", swap, map_back=swap)


def rearrangements(data: CaseData) -> list[Rearrangement]:
    """Every rearrangement of the parameters the diagnoses know that can change something on this case."""
    fb, params = data.layer.forget_bias, data.params
    found = [_permuted(order) for order in permutations(range(4)) if order != (0, 1, 2, 3)]
    if params.output_size == params.hidden_size:
        transpose = lambda c: LSTMParams(c.W, c.U.transpose(0, 2, 1).copy(), c.b, c.p, c.W_hr)  # noqa: E731
        found.append(Rearrangement("the recurrent matrix U is transposed", transpose, map_back=transpose))
    if fb != 0:
        found.append(Rearrangement("the forget bias is missing", lambda c: c, lambda _: 0.0))
        found.append(Rearrangement("the forget bias is added twice", lambda c: c, lambda f: 2 * f))
    found.append(Rearrangement("a forget bias of 1 is added (TensorFlow's default)", lambda c: c, lambda f: f + 1.0))
    # This project's layouts split b in half between a framework's two biases (PyTorch, ONNX).
    found.append(Rearrangement("only one of two biases is used (b is split in half between them)",
                               lambda c: LSTMParams(c.W, c.U, c.b * 0.5, c.p, c.W_hr)))
    if params.peephole:
        found += [_peepholes_swapped(a, b) for a, b in combinations(range(3), 2)]
        # The spec without peepholes predicts no gradient for p: what such an implementation reports for the p it
        # ignores is left open; the other gradients decide.
        found.append(Rearrangement("the peepholes are ignored", lambda c: LSTMParams(c.W, c.U, c.b, None, c.W_hr)))
    return found


def _cells(params: LayerParams, cell: Callable[[LSTMParams], LSTMParams]) -> LayerParams:
    return LayerParams(tuple(cell(c) for c in params.cells), params.num_directions)


def _in_every_cell(description: str, data: CaseData) -> str:
    return description + (" in every cell" if len(data.params.cells) > 1 else "")


def _spec(data: CaseData, params: LayerParams, forget_bias: float, gradients: bool, cotangents=None) -> dict:
    config = replace(data.layer, forget_bias=forget_bias, peephole=params.peephole)
    fwd = layer.forward(params, data.x, data.h0, data.c0, config=config, lengths=data.lengths, mask=data.mask)
    if not gradients:
        return {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}
    return layer.backward(fwd, *(cotangents or (data.dy, data.dh_T, data.dc_T))).tensors()


def _with_params(grads: dict, params: LayerParams) -> dict:
    """Gradients with their parameter part replaced by ``params``' tensors (same names)."""
    return {**{k: v for k, v in grads.items() if k in ("x", "h0", "c0")}, **params.tensors()}


def _rearranged(data: CaseData, gradients: bool) -> Iterator[tuple[str, dict]]:
    for mistake in rearrangements(data):
        used = _cells(data.params, mistake.cell)
        predicted = _spec(data, used, mistake.forget_bias(data.layer.forget_bias), gradients)
        description = _in_every_cell(mistake.description, data)
        if not gradients or mistake.map_back is None:
            yield description, predicted
            continue
        yield f"{description} {AS_USED}", predicted
        as_used = data.params.with_tensors(predicted) if used.peephole == data.params.peephole else None
        if as_used is not None:
            yield f"{description} {MAPPED_BACK}", _with_params(predicted, _cells(as_used, mistake.map_back))


def _as_layer(h_seq, h_T, c_T) -> dict:
    return {"y": h_seq, "h_T": h_T[None], "c_T": c_T[None]}


def _cell_gradients_as_layer(data: CaseData, grads: dict) -> dict:
    name = data.params.cell_name(0)
    return {"x": grads["x"], "h0": grads["h0"][None], "c0": grads["c0"][None],
            **{f"{name} {tensor}": grads[tensor] for tensor in data.params.cells[0].tensors()}}


def _cell_mistakes(data: CaseData, gradients: bool) -> Iterator[tuple[str, dict]]:
    """The cell's own mistakes (known_bugs), for a plain cell."""
    cell, fb = data.params.cells[0], data.layer.forget_bias
    x, h0, c0, cotangents = data.x, data.h0[0], data.c0[0], (data.dy, data.dh_T[0], data.dc_T[0])
    forward_bugs = ["h_without_tanh", "cell_clip"] + (["o_peeks_prev"] if cell.peephole else [])
    for bug in forward_bugs:
        if not gradients:
            yield known_bugs.BUGS[bug], _as_layer(*known_bugs.forward(cell, x, h0, c0, fb, frozenset([bug]))[:3])
        elif bug not in known_bugs.WITHOUT_BACKWARD:  # cell clipping has no modelled backward: outputs only
            yield known_bugs.BUGS[bug], _cell_gradients_as_layer(data, known_bugs.backward(cell, x, h0, c0, *cotangents, fb, frozenset([bug])))
    if gradients:
        for bug in ["dc_without_downstream", "last_step_missing"] + (["dc_without_peepholes"] if cell.peephole else []):
            yield known_bugs.BUGS[bug], _cell_gradients_as_layer(data, known_bugs.backward(cell, x, h0, c0, *cotangents, fb, frozenset([bug])))


def _layer_mistakes(data: CaseData, gradients: bool) -> Iterator[tuple[str, dict]]:
    """The layer's mistakes (known_layer_bugs) that can change something on this case."""
    for bug, description in known_layer_bugs.BUGS.items():
        if bug in ("dh_T_ignored", "dc_T_ignored") or not known_layer_bugs.applies(bug, data.layer, data.lengths, data.mask):
            continue
        if not gradients and bug in known_layer_bugs.BACKWARD_BUGS:
            continue  # the forward is the spec's: nothing to see in the outputs
        run = known_layer_bugs.forward(data.params, data.x, data.h0, data.c0, config=data.layer, lengths=data.lengths,
                                       mask=data.mask, bugs={bug})
        yield description, known_layer_bugs.backward(run, data.dy, data.dh_T, data.dc_T) if gradients else run.outputs()


def _ignored_cotangents(data: CaseData) -> Iterator[tuple[str, dict]]:
    """A correct forward pass whose backward ignores one of the cotangents."""
    last_dropped = data.dy.copy()
    last_dropped[-1] = 0.0
    ignored = {
        "the cotangent of c_T (dc_T) is ignored": (data.dy, data.dh_T, np.zeros_like(data.dc_T)),
        "the cotangent of h_T (dh_T) is ignored": (data.dy, np.zeros_like(data.dh_T), data.dc_T),
        "the last time step's cotangent dy[T-1] is ignored": (last_dropped, data.dh_T, data.dc_T),
    }
    for description, cotangents in ignored.items():
        yield description, _spec(data, data.params, data.layer.forget_bias, True, cotangents)


def hypotheses(data: CaseData, kind: Kind) -> Iterator[tuple[str, dict]]:
    """(description, what it predicts) for every mistake the diagnoses know that can change something on this case,
    computed one by one in float64 on the data widened exactly."""
    wide = widened(data)
    gradients = kind == Kind.GRADIENTS
    yield from _rearranged(wide, gradients)
    if is_cell(wide.case):
        yield from _cell_mistakes(wide, gradients)
    yield from _layer_mistakes(wide, gradients)
    if gradients:
        yield from _ignored_cotangents(wide)


def _matches(got: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], dtype: str, kind: Kind) -> bool:
    tol = tolerance(dtype, kind)
    return all(name in got and compare(name, got[name], value, atol=tol.atol, rtol=tol.rtol).ok for name, value in predicted.items())


def _explained(got, hypotheses: Iterable[tuple[str, dict]], spec: Mapping[str, np.ndarray], dtype: str, kind: Kind) -> list[str]:
    found = []
    for description, predicted in hypotheses:
        # A hypothesis that predicts what the spec does (no |c| above 3 to clip, say) explains nothing.
        if _matches(got, predicted, dtype, kind) and not _matches(predicted, spec, dtype, kind):
            found.append(f"matches the spec if {description}")
    return found


def _at_lower_precision(got, spec, dtype: str, kind: Kind) -> list[str]:
    """An error too small for any mistake and too large for ``dtype``'s rounding: a lower precision's. Every tensor
    must be within the lower precision's tolerance: one bug can hide behind small errors elsewhere."""
    lower = LOWER_PRECISION.get(str(dtype))
    if lower is None or not _matches(got, spec, lower, kind) or _matches(got, spec, dtype, kind):
        return []
    return [f"the error is at {lower}'s level: something in this implementation computes in {lower}"]


def _swapped_gradient_blocks(got, expected, dtype: str) -> list[str]:
    """Parameter gradients right but for two gates' blocks written to each other."""
    found = []
    tol = tolerance(dtype, Kind.GRADIENTS)

    def close(name, value, target):
        return compare(name, value, target, atol=tol.atol, rtol=tol.rtol).ok

    for name, value in expected.items():
        tensor = name.split()[-1]
        if tensor in ("W", "U", "b") and name in got and not close(name, got[name], value):
            for a, b in combinations(range(4), 2):
                order = list(range(4))
                order[a], order[b] = b, a
                if close(name, got[name], value[order]):
                    found.append(f"grad {tensor} matches the spec's with the blocks of gates {GATES[a]} and {GATES[b]} exchanged")
    return sorted(set(found), key=found.index)


def diagnose(data: CaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str, kind: Kind) -> list[str]:
    """The known mistakes under which the spec reproduces the implementation's answer (outputs or gradients)."""
    found = _swapped_gradient_blocks(got, expected, dtype) if kind == Kind.GRADIENTS else []
    found += _explained(got, hypotheses(data, kind), expected, dtype, kind)
    return found + _at_lower_precision(got, expected, dtype, kind)


__all__ = ["AS_USED", "MAPPED_BACK", "diagnose", "hypotheses", "rearrangements"]
