"""Recognising the common mistakes: when a failing result matches the spec under a known bug, say which.

Each hypothesis is the spec computed with one deliberate change: gates in
another order, the recurrent matrix transposed, the forget bias missing,
doubled or TensorFlow's default of 1 added, peepholes exchanged or ignored,
and the bugs of :mod:`conformance.known_bugs` (the output gate peeking at
c_{t-1}, h without its tanh, TensorFlow's cell clipping at 3); for gradients,
a gate-permuted gradient tensor, cotangents the implementation ignored, and
the backward bugs of known_bugs. A hypothesis is reported when every tensor it
predicts agrees with the implementation's within the same tolerance the test
uses: "matches the spec if gates f and g are swapped".
"""

from __future__ import annotations

from itertools import permutations
from typing import Callable, Mapping

import numpy as np

from conformance import known_bugs
from conformance.compare import compare
from conformance.tolerances import tolerance
from spec import lstm
from spec.cases import CaseData
from spec.params import GATES, PEEPHOLE_GATES, LSTMParams

ORDER_NAMES = {("i", "g", "f", "o"): "TensorFlow's BlockLSTM order", ("i", "o", "f", "g"): "ONNX's order"}


def _wide(data: CaseData):
    w = lambda a: a.astype(np.float64)  # noqa: E731
    return data.params.astype(np.float64), w(data.x), w(data.h0), w(data.c0)


def _bug_outputs(params, x, h0, c0, forget_bias, *bugs):
    h_seq, h_T, c_T, _ = known_bugs.forward(params, x, h0, c0, forget_bias, frozenset(bugs))
    return {"h_seq": h_seq, "h_T": h_T, "c_T": c_T}


def _spec_outputs(params, x, h0, c0, forget_bias):
    fwd = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
    return {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}


def _permuted(params: LSTMParams, order: tuple[int, ...]) -> LSTMParams:
    return LSTMParams(params.W[list(order)], params.U[list(order)], params.b[list(order)], params.p)


def _describe_order(order: tuple[int, ...]) -> str:
    names = tuple(GATES[k] for k in order)
    moved = [k for k in range(4) if order[k] != k]
    if len(moved) == 2:
        a, b = moved
        return f"gates {GATES[a]} and {GATES[b]} are swapped"
    label = ORDER_NAMES.get(names)
    return f"its gates are stacked {','.join(names)}" + (f" ({label})" if label else "") + " instead of i,f,g,o"


def output_hypotheses(data: CaseData) -> list[tuple[str, Callable[[], dict]]]:
    params, x, h0, c0 = _wide(data)
    fb = data.forget_bias
    hypotheses = []
    for order in permutations(range(4)):
        if order != (0, 1, 2, 3):
            hypotheses.append((_describe_order(order), lambda o=order: _spec_outputs(_permuted(params, o), x, h0, c0, fb)))
    transposed = LSTMParams(params.W, params.U.transpose(0, 2, 1).copy(), params.b, params.p)
    hypotheses.append(("the recurrent matrix U is transposed", lambda: _spec_outputs(transposed, x, h0, c0, fb)))
    if fb != 0:
        hypotheses.append(("the forget bias is missing", lambda: _spec_outputs(params, x, h0, c0, 0.0)))
        hypotheses.append(("the forget bias is added twice", lambda: _spec_outputs(params, x, h0, c0, 2 * fb)))
    hypotheses.append(("a forget bias of 1 is added (TensorFlow's default)", lambda: _spec_outputs(params, x, h0, c0, fb + 1.0)))
    # This project's adapters split b in half between a framework's two biases (PyTorch, ONNX).
    half_bias = LSTMParams(params.W, params.U, params.b * 0.5, params.p)
    hypotheses.append(("only one of two biases is used (b is split in half between them)", lambda: _spec_outputs(half_bias, x, h0, c0, fb)))
    for bug in ("h_without_tanh", "cell_clip") + (("o_peeks_prev",) if params.p is not None else ()):
        hypotheses.append((known_bugs.BUGS[bug], lambda bug=bug: _bug_outputs(params, x, h0, c0, fb, bug)))
    if params.p is not None:
        for a, b in ((0, 1), (0, 2), (1, 2)):
            order = [0, 1, 2]
            order[a], order[b] = b, a
            swapped = LSTMParams(params.W, params.U, params.b, params.p[order])
            hypotheses.append(
                (f"the peepholes of {PEEPHOLE_GATES[a]} and {PEEPHOLE_GATES[b]} are swapped", lambda s=swapped: _spec_outputs(s, x, h0, c0, fb))
            )
        no_peepholes = params.without_peepholes()
        hypotheses.append(("the peepholes are ignored", lambda: _spec_outputs(no_peepholes, x, h0, c0, fb)))
    return hypotheses


def _matches(got: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], dtype: str, kind: str) -> bool:
    tol = tolerance(dtype, kind)
    for name, value in predicted.items():
        if name not in got or not compare(name, got[name], value, atol=tol.atol, rtol=tol.rtol).ok:
            return False
    return True


def diagnose_outputs(data: CaseData, got: Mapping[str, np.ndarray], dtype: str) -> list[str]:
    """The known mistakes under which the spec reproduces the implementation's outputs."""
    params, x, h0, c0 = _wide(data)
    spec_outputs = _spec_outputs(params, x, h0, c0, data.forget_bias)
    found = []
    for description, predict in output_hypotheses(data):
        predicted = predict()
        # A hypothesis that predicts what the spec does (no |c| above 3 to clip, say) explains nothing.
        if _matches(got, predicted, dtype, "outputs") and not _matches(predicted, spec_outputs, dtype, "outputs"):
            found.append(f"matches the spec if {description}")
    return found


def diagnose_gradients(data: CaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str) -> list[str]:
    """Known mistakes in a backward pass: a gate-permuted gradient, or cotangents the implementation ignored."""
    found = []
    tol = tolerance(dtype, "gradients")

    def close(name, value, target):
        return compare(name, value, target, atol=tol.atol, rtol=tol.rtol).ok

    for name in ("W", "U", "b"):
        if name in got and not close(name, got[name], expected[name]):
            for a in range(4):
                for b in range(a + 1, 4):
                    order = list(range(4))
                    order[a], order[b] = b, a
                    if close(name, got[name], expected[name][order]):
                        found.append(f"grad {name} matches the spec's with the blocks of gates {GATES[a]} and {GATES[b]} exchanged")
    params, x, h0, c0 = _wide(data)
    fwd = lstm.forward(params, x, h0, c0, forget_bias=data.forget_bias)
    dh_seq, dh_T, dc_T = (a.astype(np.float64) for a in (data.dh_seq, data.dh_T, data.dc_T))
    last_dropped = dh_seq.copy()
    last_dropped[-1] = 0.0
    ignored = {
        "the cotangent of c_T (dc_T) is ignored": (dh_seq, dh_T, np.zeros_like(dc_T)),
        "the cotangent of h_T (dh_T) is ignored": (dh_seq, np.zeros_like(dh_T), dc_T),
        "the last time step's cotangent dh_seq[T-1] is ignored": (last_dropped, dh_T, dc_T),
    }
    predictions = {description: lstm.backward(fwd, *cotangents).tensors() for description, cotangents in ignored.items()}
    for bug in ["dc_without_downstream", "last_step_missing"] + (["dc_without_peepholes"] if params.p is not None else []):
        predictions[known_bugs.BUGS[bug]] = known_bugs.backward(params, x, h0, c0, dh_seq, dh_T, dc_T, data.forget_bias, frozenset([bug]))
    for description, predicted in predictions.items():
        if _matches(got, predicted, dtype, "gradients") and not _matches(predicted, expected, dtype, "gradients"):
            found.append(f"matches the spec if {description}")
    return found
