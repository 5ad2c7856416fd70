"""The known-bug model and the diagnoses built on it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conformance import known_bugs
from conformance.diagnose import AS_USED, MAPPED_BACK, diagnose_gradients, diagnose_outputs, forward_mistakes, output_hypotheses
from conformance.mutants import MUTANTS
from spec import lstm
from spec.cases import case_by_name, make_case_data
from spec.params import LSTMParams

DATA = make_case_data(case_by_name("forget-bias-peephole"))


def spec_run(params=DATA.params, forget_bias=DATA.forget_bias, cotangents=None):
    fwd = lstm.forward(params, DATA.x, DATA.h0, DATA.c0, forget_bias=forget_bias)
    grads = lstm.backward(fwd, *(cotangents or (DATA.dh_seq, DATA.dh_T, DATA.dc_T)))
    return {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors()


def test_the_model_without_bugs_is_the_spec():
    outputs, grads = spec_run()
    h_seq, h_T, c_T, _ = known_bugs.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.forget_bias)
    np.testing.assert_allclose(h_seq, outputs["h_seq"], rtol=0, atol=1e-14)
    model = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias)
    assert model.keys() == grads.keys()
    for name in grads:
        np.testing.assert_allclose(model[name], grads[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("bug", sorted(set(known_bugs.BUGS) - {"cell_clip"}))
def test_every_bug_changes_something(bug):
    clean = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias)
    buggy = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias, frozenset([bug]))
    assert max(np.max(np.abs(buggy[k] - clean[k])) for k in clean) > 1e-3


def test_unknown_bugs_are_refused():
    with pytest.raises(ValueError, match="unknown bugs"):
        known_bugs.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, 0.0, frozenset({"typo"}))


def test_a_correct_result_has_no_diagnosis():
    outputs, grads = spec_run()
    assert diagnose_outputs(DATA, outputs, "float64") == []
    assert diagnose_gradients(DATA, grads, grads, "float64") == []


def test_a_permuted_result_is_recognised_by_name():
    p = DATA.params
    order = [0, 2, 1, 3]  # i, g, f, o: TensorFlow BlockLSTM's column order
    outputs, _ = spec_run(LSTMParams(p.W[order], p.U[order], p.b[order], p.p))
    assert "matches the spec if gates f and g are swapped" in diagnose_outputs(DATA, outputs, "float64")
    cyclic = [0, 3, 1, 2]  # ONNX's i, o, f, c read as i, f, g, o
    outputs, _ = spec_run(LSTMParams(p.W[cyclic], p.U[cyclic], p.b[cyclic], p.p))
    assert any("ONNX's order" in d for d in diagnose_outputs(DATA, outputs, "float64"))


def test_an_ignored_cotangent_is_recognised():
    _, expected = spec_run()
    _, got = spec_run(cotangents=(DATA.dh_seq, np.zeros_like(DATA.dh_T), DATA.dc_T))
    assert "matches the spec if the cotangent of h_T (dh_T) is ignored" in diagnose_gradients(DATA, got, expected, "float64")


# --- Gradients under the forward mistakes ------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
FLOAT32_LEVEL = "the error is at float32's level: something in this implementation computes in float32"


def spec_gradients(params, forget_bias=DATA.forget_bias):
    return spec_run(params, forget_bias)[1]


def mutant_gradients(mutant, data):
    """A mutant's gradients, from its definition (its parameter transform and its known_bugs switches), as its
    implementation computes them: those of the parameters it computed with (a gate-swapped mutant: of the
    swapped weights, unmapped), as an implementation that loads its weights wrongly and differentiates
    correctly returns them."""
    params, forget_bias = mutant.transform(data.params, data.forget_bias)
    return known_bugs.backward(params, data.x, data.h0, data.c0, data.dh_seq, data.dh_T, data.dc_T, forget_bias, mutant.bugs)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_every_mutants_gradients_are_diagnosed(mutant):
    got = mutant_gradients(mutant, DATA)
    diagnoses = diagnose_gradients(DATA, got, spec_gradients(DATA.params), "float64")
    assert any(mutant.diagnosis in d for d in diagnoses), f"{mutant.id}: got {diagnoses}"
    assert FLOAT32_LEVEL not in diagnoses


def test_every_forward_mistake_is_tried_on_gradients():
    """The one list of forward mistakes serves both diagnoses: each one's gradients (but cell clipping's,
    whose backward is not modelled) are recognised by the same words as its outputs."""
    params, x, h0, c0 = (DATA.params, DATA.x, DATA.h0, DATA.c0)
    expected = spec_gradients(params)
    output_descriptions = [description for description, _ in output_hypotheses(DATA)]
    mistakes = forward_mistakes(params, DATA.forget_bias)
    assert [m.description for m in mistakes] == output_descriptions
    tried = 0
    for mistake in mistakes:
        if mistake.bugs & known_bugs.WITHOUT_BACKWARD:
            continue
        got = known_bugs.backward(mistake.params, x, h0, c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, mistake.forget_bias, mistake.bugs)
        frames = [(got, AS_USED)] if mistake.map_back else [(got, "")]
        if mistake.map_back:  # a rearrangement: also in the frame of the given parameters, and named by its frame
            frames.append((mistake.map_back(got), MAPPED_BACK))
        for grads, frame in frames:
            diagnoses = diagnose_gradients(DATA, grads, expected, "float64")
            assert any(mistake.description in d and frame in d for d in diagnoses), f"{mistake.description} {frame}: got {diagnoses}"
        tried += 1
    assert tried == len(mistakes) - 1  # all but cell clipping


def _scatter_gates(grads, order):
    """Gradients w.r.t. the weights an implementation used (used[k] = given[order[k]]), sent back to the
    weights it was given by the chain rule, as autodiff through the wrong loading computes them."""
    mapped = dict(grads)
    for name in ("W", "U", "b"):
        mapped[name] = np.empty_like(grads[name])
        mapped[name][order] = grads[name]
    return mapped


def test_rearranged_gradients_mapped_back_are_diagnosed():
    p = DATA.params
    onnx = [0, 3, 1, 2]  # ONNX's i, o, f, c read as i, f, g, o: a cycle, not its own inverse
    used = LSTMParams(p.W[onnx], p.U[onnx], p.b[onnx], p.p)
    mapped = _scatter_gates(spec_gradients(used), onnx)
    # That is the gradient of the mistaken LSTM with respect to the given weights (a directional derivative).
    direction = np.random.default_rng(0).normal(size=p.W.shape)
    step = 1e-6

    def loss(W):
        wrong = LSTMParams(W[onnx], p.U[onnx], p.b[onnx], p.p)
        return lstm.loss(lstm.forward(wrong, DATA.x, DATA.h0, DATA.c0, forget_bias=DATA.forget_bias), DATA.dh_seq, DATA.dh_T, DATA.dc_T)

    slope = (loss(p.W + step * direction) - loss(p.W - step * direction)) / (2 * step)
    assert slope == pytest.approx(np.sum(mapped["W"] * direction), rel=1e-6)
    diagnoses = diagnose_gradients(DATA, mapped, spec_gradients(p), "float64")
    assert any("ONNX's order" in d for d in diagnoses), diagnoses

    transposed = spec_gradients(LSTMParams(p.W, p.U.transpose(0, 2, 1).copy(), p.b, p.p))
    mapped = {**transposed, "U": transposed["U"].transpose(0, 2, 1)}
    assert any("the recurrent matrix U is transposed" in d for d in diagnose_gradients(DATA, mapped, spec_gradients(p), "float64"))


def _example_without_tanh() -> ModuleType:
    """examples/numpy_lstm.py with h = o * c: its forward and its (hand-written) backward changed alike."""
    path = ROOT / "examples" / "numpy_lstm.py"
    source = path.read_text()
    for old, new in (("h = o * np.tanh(c_new)", "h = o * c_new"), ("tc = np.tanh(c)", "tc = c"), ("dh * o * (1 - tc**2)", "dh * o")):
        assert source.count(old) == 1, f"examples/numpy_lstm.py changed: no single {old!r} to replace"
        source = source.replace(old, new)
    module = ModuleType("numpy_lstm_h_without_tanh")
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("case", ["small", "forget-bias-peephole"])
def test_the_example_with_h_without_tanh_is_diagnosed_in_outputs_and_gradients(case):
    data = make_case_data(case_by_name(case))
    example = _example_without_tanh()
    h_seq, h_T, c_T = example.forward(data.params, data.x, data.h0, data.c0, forget_bias=data.forget_bias)
    assert "matches the spec if h = o * c, without the tanh" in diagnose_outputs(data, {"h_seq": h_seq, "h_T": h_T, "c_T": c_T}, "float64")
    got = example.backward(data.params, data.x, data.h0, data.c0, data.dh_seq, data.dh_T, data.dc_T, forget_bias=data.forget_bias)
    fwd = lstm.forward(data.params, data.x, data.h0, data.c0, forget_bias=data.forget_bias)
    expected = lstm.backward(fwd, data.dh_seq, data.dh_T, data.dc_T).tensors()
    assert diagnose_gradients(data, got, expected, "float64") == ["matches the spec if h = o * c, without the tanh"]


# --- An error at a lower precision's level -----------------------------------------------------


def spec_in_float32(data):
    """The spec computed in float32 on the data rounded to float32, widened back: a float64 request served in float32."""
    narrow = lambda a: a.astype(np.float32)  # noqa: E731
    fwd = lstm.forward(data.params.astype("float32"), narrow(data.x), narrow(data.h0), narrow(data.c0), forget_bias=data.forget_bias, dtype="float32")
    grads = lstm.backward(fwd, narrow(data.dh_seq), narrow(data.dh_T), narrow(data.dc_T)).tensors()
    outputs = {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}
    return {k: v.astype(np.float64) for k, v in outputs.items()}, {k: v.astype(np.float64) for k, v in grads.items()}


@pytest.mark.parametrize("case", ["forget-bias-peephole", "medium"])
def test_a_float64_request_computed_in_float32_is_named(case):
    data = make_case_data(case_by_name(case))
    outputs, grads = spec_in_float32(data)
    fwd = lstm.forward(data.params, data.x, data.h0, data.c0, forget_bias=data.forget_bias)
    expected = lstm.backward(fwd, data.dh_seq, data.dh_T, data.dc_T).tensors()
    assert diagnose_outputs(data, outputs, "float64") == [FLOAT32_LEVEL]
    assert diagnose_gradients(data, grads, expected, "float64") == [FLOAT32_LEVEL]


def test_float32_rounding_is_no_diagnosis_for_a_float32_request():
    data = make_case_data(case_by_name("forget-bias-peephole"), "float32")
    outputs, grads = spec_in_float32(data)
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    fwd = lstm.forward(data.params.astype("float64"), wide(data.x), wide(data.h0), wide(data.c0), forget_bias=data.forget_bias)
    expected = lstm.backward(fwd, wide(data.dh_seq), wide(data.dh_T), wide(data.dc_T)).tensors()
    assert diagnose_outputs(data, outputs, "float32") == []
    assert diagnose_gradients(data, grads, expected, "float32") == []


def test_a_gate_swap_is_not_a_precision_problem():
    p = DATA.params
    swapped = LSTMParams(p.W[[0, 2, 1, 3]], p.U[[0, 2, 1, 3]], p.b[[0, 2, 1, 3]], p.p)
    outputs, grads = spec_run(swapped)
    output_diagnoses = diagnose_outputs(DATA, outputs, "float64")
    gradient_diagnoses = diagnose_gradients(DATA, grads, spec_gradients(p), "float64")
    assert FLOAT32_LEVEL not in output_diagnoses + gradient_diagnoses
    assert "matches the spec if gates f and g are swapped" in output_diagnoses
    assert any("gates f and g are swapped" in d for d in gradient_diagnoses)
