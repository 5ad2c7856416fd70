"""Recognising the common mistakes: when a failing result matches the spec under a known bug, say which.

Each hypothesis is the spec computed with one deliberate change. The forward
mistakes (:func:`forward_mistakes`, one list for outputs and gradients alike)
are gates in another order, the recurrent matrix transposed, the forget bias
missing, doubled or TensorFlow's default of 1 added, one of two biases
dropped, peepholes exchanged or ignored, and the forward bugs of
:mod:`conformance.known_bugs` (the output gate peeking at c_{t-1}, h without
its tanh, TensorFlow's cell clipping at 3). Gradients are tried under every
forward mistake but cell clipping, and under the backward mistakes: a
gate-permuted gradient tensor, cotangents the implementation ignored, and the
backward bugs of known_bugs. A hypothesis is reported when every tensor it
predicts agrees with the implementation's within the same tolerance the test
uses, and differs from the spec: "matches the spec if gates f and g are
swapped".

A layer's answer (spec/layer.py) is tried under every mistake of
:mod:`conformance.known_layer_bugs` that can change something on its case
(:func:`diagnose_layer`): directions and stacking plumbed wrongly, the
projection in the wrong place, lengths and masks misapplied, clips on the
wrong quantity, the coupled gate from the forget weights; for gradients, the
gradients of each of those and the backward-only mistakes.

Apart from the hypotheses, a float64 result whose error is at float32's level
(within float32's tolerance, outside float64's) is named as such: the
implementation computes in float32 somewhere (Keras 3 on JAX does, and returns
float64 arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from conformance import known_bugs, known_layer_bugs
from conformance.compare import compare
from conformance.tolerances import tolerance
from spec import lstm
from spec.cases import CaseData, reference, widened
from spec.layer_cases import LayerCaseData
from spec.layer_cases import widened as widened_layer
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams

ORDER_NAMES = {("i", "g", "f", "o"): "TensorFlow's BlockLSTM order", ("i", "o", "f", "g"): "ONNX's order"}

#: For a float64 request, the precision whose error level is named when a result is at it.
LOWER_PRECISION = {"float64": "float32"}

# A mistake that rearranges the parameters (gates permuted, U transposed, peepholes swapped) may report
# its gradients in either of two frames. Loading the weights wrongly and then differentiating what it
# computed gives the gradients of the parameters as it used them (the mutants of conformance/mutants.py
# do this); differentiating through the wrong loading (autodiff over it, or mapping the gradients back
# with the same mistake) gives those of the parameters it was given. Both are tried, and the diagnosis
# says which, because it tells whether the gradient mapping has the mistake too.
AS_USED = "(its gradients are those of the parameters as it used them)"
MAPPED_BACK = "(its gradients are mapped back through the same mistake to the parameters it was given)"


@dataclass(frozen=True, eq=False)
class ForwardMistake:
    """A mistake in the forward pass: what a mistaken implementation computes with instead of the spec's."""

    description: str  # completes "matches the spec if ..."
    params: LSTMParams  # the parameters it computes with
    forget_bias: float
    bugs: frozenset = frozenset()  # switches of conformance.known_bugs
    #: For a rearrangement of the parameters: the chain rule back through it, from the gradients of the
    #: parameters it used to those of the parameters it was given. None for any other mistake.
    map_back: Callable[[dict], dict] | None = None

    def outputs(self, x, h0, c0) -> dict:
        if self.bugs:
            h_seq, h_T, c_T, _ = known_bugs.forward(self.params, x, h0, c0, self.forget_bias, self.bugs)
            return {"h_seq": h_seq, "h_T": h_T, "c_T": c_T}
        return _spec_outputs(self.params, x, h0, c0, self.forget_bias)

    def gradients(self, x, h0, c0, cotangents) -> dict:
        if self.bugs:
            return known_bugs.backward(self.params, x, h0, c0, *cotangents, self.forget_bias, self.bugs)
        # The spec itself where the mistake is only in the parameters: it is several times faster than the model.
        fwd = lstm.forward(self.params, x, h0, c0, forget_bias=self.forget_bias)
        return lstm.backward(fwd, *cotangents).tensors()


def _wide(data: CaseData):
    wide = widened(data)
    return wide.params, wide.x, wide.h0, wide.c0


def _wide_cotangents(data: CaseData):
    wide = widened(data)
    return wide.dh_seq, wide.dh_T, wide.dc_T


def _spec_outputs(params, x, h0, c0, forget_bias):
    fwd = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
    return {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}


def _describe_order(order: tuple[int, ...]) -> str:
    names = tuple(GATES[k] for k in order)
    moved = [k for k in range(4) if order[k] != k]
    if len(moved) == 2:
        a, b = moved
        return f"gates {GATES[a]} and {GATES[b]} are swapped"
    label = ORDER_NAMES.get(names)
    return f"its gates are stacked {','.join(names)}" + (f" ({label})" if label else "") + " instead of i,f,g,o"


def _unpermute(names: tuple[str, ...], order: list[int]) -> Callable[[dict], dict]:
    """used[k] = given[order[k]], so the gradient of given[j] is that of used[k] where order[k] = j."""
    inverse = np.argsort(order)
    return lambda grads: {**grads, **{name: grads[name][inverse] for name in names}}


def _gates_stacked(params: LSTMParams, forget_bias: float, order: tuple[int, ...]) -> ForwardMistake:
    order = list(order)
    used = LSTMParams(params.W[order], params.U[order], params.b[order], params.p)
    return ForwardMistake(_describe_order(tuple(order)), used, forget_bias, map_back=_unpermute(("W", "U", "b"), order))


def _u_transposed(params: LSTMParams, forget_bias: float) -> ForwardMistake:
    used = LSTMParams(params.W, params.U.transpose(0, 2, 1).copy(), params.b, params.p)
    return ForwardMistake(
        "the recurrent matrix U is transposed", used, forget_bias, map_back=lambda grads: {**grads, "U": grads["U"].transpose(0, 2, 1)}
    )


def _peepholes_swapped(params: LSTMParams, forget_bias: float, a: int, b: int) -> ForwardMistake:
    order = [0, 1, 2]
    order[a], order[b] = b, a
    used = LSTMParams(params.W, params.U, params.b, params.p[order])
    description = f"the peepholes of {PEEPHOLE_GATES[a]} and {PEEPHOLE_GATES[b]} are swapped"
    return ForwardMistake(description, used, forget_bias, map_back=_unpermute(("p",), order))


def forward_mistakes(params: LSTMParams, forget_bias: float) -> list[ForwardMistake]:
    """Every forward mistake the diagnoses know, on these parameters: the one list outputs and gradients use."""
    fb = forget_bias
    mistakes = [_gates_stacked(params, fb, order) for order in permutations(range(4)) if order != (0, 1, 2, 3)]
    mistakes.append(_u_transposed(params, fb))
    if fb != 0:
        mistakes.append(ForwardMistake("the forget bias is missing", params, 0.0))
        mistakes.append(ForwardMistake("the forget bias is added twice", params, 2 * fb))
    mistakes.append(ForwardMistake("a forget bias of 1 is added (TensorFlow's default)", params, fb + 1.0))
    # This project's adapters split b in half between a framework's two biases (PyTorch, ONNX). Not a
    # rearrangement: the gradient of the one bias used is what those adapters report as b's.
    half_bias = LSTMParams(params.W, params.U, params.b * 0.5, params.p)
    mistakes.append(ForwardMistake("only one of two biases is used (b is split in half between them)", half_bias, fb))
    for bug in ("h_without_tanh", "cell_clip") + (("o_peeks_prev",) if params.p is not None else ()):
        mistakes.append(ForwardMistake(known_bugs.BUGS[bug], params, fb, frozenset([bug])))
    if params.p is not None:
        mistakes += [_peepholes_swapped(params, fb, a, b) for a, b in combinations(range(3), 2)]
        # The spec without peepholes predicts no gradient for p: what such an implementation reports for
        # the p it ignores (zeros, or anything) is left open; the other gradients decide.
        mistakes.append(ForwardMistake("the peepholes are ignored", params.without_peepholes(), fb))
    return mistakes


def output_hypotheses(data: CaseData) -> list[tuple[str, Callable[[], dict]]]:
    """(description, the outputs it predicts) for every forward mistake; computed when called."""
    params, x, h0, c0 = _wide(data)
    return [(m.description, lambda m=m: m.outputs(x, h0, c0)) for m in forward_mistakes(params, data.forget_bias)]


def gradient_hypotheses(data: CaseData) -> Iterator[tuple[str, dict]]:
    """(description, the gradients it predicts) for every forward and backward mistake, computed one by one."""
    params, x, h0, c0 = _wide(data)
    cotangents = _wide_cotangents(data)
    for mistake in forward_mistakes(params, data.forget_bias):
        # Cell clipping has no modelled backward (known_bugs.WITHOUT_BACKWARD): only its outputs are diagnosed.
        if mistake.bugs & known_bugs.WITHOUT_BACKWARD:
            continue
        grads = mistake.gradients(x, h0, c0, cotangents)
        if mistake.map_back is None:
            yield mistake.description, grads
        else:
            yield f"{mistake.description} {AS_USED}", grads
            yield f"{mistake.description} {MAPPED_BACK}", mistake.map_back(grads)
    yield from _backward_mistakes(params, x, h0, c0, cotangents, data.forget_bias)


def _backward_mistakes(params, x, h0, c0, cotangents, forget_bias) -> Iterator[tuple[str, dict]]:
    """A correct forward pass with a mistaken backward: cotangents ignored, and known_bugs' backward bugs."""
    dh_seq, dh_T, dc_T = cotangents
    fwd = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
    last_dropped = dh_seq.copy()
    last_dropped[-1] = 0.0
    ignored = {
        "the cotangent of c_T (dc_T) is ignored": (dh_seq, dh_T, np.zeros_like(dc_T)),
        "the cotangent of h_T (dh_T) is ignored": (dh_seq, np.zeros_like(dh_T), dc_T),
        "the last time step's cotangent dh_seq[T-1] is ignored": (last_dropped, dh_T, dc_T),
    }
    for description, ignoring in ignored.items():
        yield description, lstm.backward(fwd, *ignoring).tensors()
    for bug in ["dc_without_downstream", "last_step_missing"] + (["dc_without_peepholes"] if params.p is not None else []):
        yield known_bugs.BUGS[bug], known_bugs.backward(params, x, h0, c0, *cotangents, forget_bias, frozenset([bug]))


def _matches(got: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], dtype: str, kind: str) -> bool:
    tol = tolerance(dtype, kind)
    for name, value in predicted.items():
        if name not in got or not compare(name, got[name], value, atol=tol.atol, rtol=tol.rtol).ok:
            return False
    return True


def _explained(got, hypotheses: Iterable[tuple[str, dict]], spec: Mapping[str, np.ndarray], dtype: str, kind: str) -> list[str]:
    found = []
    for description, predicted in hypotheses:
        # A hypothesis that predicts what the spec does (no |c| above 3 to clip, say) explains nothing.
        if _matches(got, predicted, dtype, kind) and not _matches(predicted, spec, dtype, kind):
            found.append(f"matches the spec if {description}")
    return found


def _at_lower_precision(got: Mapping[str, np.ndarray], spec: Mapping[str, np.ndarray], dtype: str, kind: str) -> list[str]:
    """An error too small for any mistake and too large for ``dtype``'s rounding: a lower precision's.

    Every tensor must be within the lower precision's tolerance: one bug can hide behind small errors elsewhere.
    """
    lower = LOWER_PRECISION.get(dtype)
    if lower is None or not _matches(got, spec, lower, kind) or _matches(got, spec, dtype, kind):
        return []
    return [f"the error is at {lower}'s level: something in this implementation computes in {lower}"]


def _swapped_gradient_blocks(got, expected, dtype: str) -> list[str]:
    """Parameter gradients right but for two gates' blocks written to each other."""
    found = []
    tol = tolerance(dtype, "gradients")

    def close(name, value, target):
        return compare(name, value, target, atol=tol.atol, rtol=tol.rtol).ok

    for name in ("W", "U", "b"):
        if name in got and not close(name, got[name], expected[name]):
            for a, b in combinations(range(4), 2):
                order = list(range(4))
                order[a], order[b] = b, a
                if close(name, got[name], expected[name][order]):
                    found.append(f"grad {name} matches the spec's with the blocks of gates {GATES[a]} and {GATES[b]} exchanged")
    return found


def diagnose_outputs(data: CaseData, got: Mapping[str, np.ndarray], dtype: str) -> list[str]:
    """The known mistakes under which the spec reproduces the implementation's outputs."""
    spec_outputs = reference(data).outputs
    hypotheses = ((description, predict()) for description, predict in output_hypotheses(data))
    return _explained(got, hypotheses, spec_outputs, dtype, "outputs") + _at_lower_precision(got, spec_outputs, dtype, "outputs")


def diagnose_gradients(data: CaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str) -> list[str]:
    """The known mistakes, forward or backward, under which the spec reproduces the implementation's gradients."""
    return (
        _swapped_gradient_blocks(got, expected, dtype)
        + _explained(got, gradient_hypotheses(data), expected, dtype, "gradients")
        + _at_lower_precision(got, expected, dtype, "gradients")
    )


# ---------------------------------------------------------------------------
# The layer (spec/layer.py): the mistakes of conformance.known_layer_bugs
# ---------------------------------------------------------------------------


def _layer_gates_stacked(wide: LayerCaseData, order: tuple[int, ...], gradients: bool) -> tuple[str, dict]:
    """Every cell's gates stacked in ``order`` (a layout conversion written once and applied to every layer and
    direction): what it predicts, its gradients in the frame of the parameters it used."""
    cells = tuple(LSTMParams(c.W[list(order)], c.U[list(order)], c.b[list(order)], c.p, c.W_hr) for c in wide.params.cells)
    run = known_layer_bugs.forward(LayerParams(cells, wide.params.num_directions), wide.x, wide.h0, wide.c0,
                                   config=wide.config, lengths=wide.lengths, mask=wide.mask, bugs=set())
    predicted = known_layer_bugs.backward(run, wide.dy, wide.dh_T, wide.dc_T) if gradients else run.outputs()
    return f"{_describe_order(order)} in every cell", predicted


def layer_hypotheses(data: LayerCaseData, gradients: bool) -> Iterator[tuple[str, dict]]:
    """(description, what it predicts) for every mistake that can change something on this case: the cell's
    gate orders, in every cell; the mistakes of the layer's bug model: outputs under the forward mistakes,
    gradients under the forward mistakes (the gradients of the mistaken forward) and the backward ones. Computed
    one by one, in float64 on the data widened exactly."""
    wide = widened_layer(data)
    for order in permutations(range(4)):
        if order != (0, 1, 2, 3):
            yield _layer_gates_stacked(wide, order, gradients)
    for bug, description in known_layer_bugs.BUGS.items():
        if not known_layer_bugs.applies(bug, wide.config, wide.lengths, wide.mask):
            continue
        if not gradients and bug in known_layer_bugs.BACKWARD_BUGS:
            continue  # the forward is the spec's: nothing to see in the outputs
        run = known_layer_bugs.forward(wide.params, wide.x, wide.h0, wide.c0, config=wide.config, lengths=wide.lengths,
                                       mask=wide.mask, bugs={bug})
        yield description, known_layer_bugs.backward(run, wide.dy, wide.dh_T, wide.dc_T) if gradients else run.outputs()


def diagnose_layer(data: LayerCaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str,
                   gradients: bool) -> list[str]:
    """The known mistakes under which the spec reproduces a layer's answer (outputs, or gradients): each is
    reported when it reproduces every tensor within the tolerance of the kind and differs from the spec on this
    case (a mistake that changes nothing here explains nothing); then an error at a lower precision's level."""
    kind = "layer gradients" if gradients else "layer outputs"
    return _explained(got, layer_hypotheses(data, gradients), expected, dtype, kind) + _at_lower_precision(got, expected, dtype, kind)
