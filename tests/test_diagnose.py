"""The catalogue of mistakes (conformance/mistakes.py), the mistaken LSTM (conformance/mistaken.py) and the
diagnoses built on them (conformance/diagnose.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conformance import mistaken
from conformance.diagnose import AS_USED, MAPPED_BACK, diagnose
from conformance.mistakes import BACKWARD, CATALOGUE, FORWARD, SWITCH, Misread, gates_in_order, modelled, named
from contract.answers import Gradients
from contract.loading import cell_gradients
from contract.vocabulary import Kind
from spec import layer
from spec.cases import case_by_name, case_set, make_case_data, reference, rng_for
from spec.params import LayerParams
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[1]
FLOAT32_LEVEL = "the error is at float32's level: something in this implementation computes in float32"
CASES = case_set()
CASE_IDS = [case.name for case in CASES]
MODELLED = modelled()
DATA = make_case_data(case_by_name("forget-bias-peephole"))


def answer(data, *names) -> tuple[dict, dict]:
    """The mistaken LSTM's outputs and gradients on the case's data, by name."""
    run = mistaken.forward(data.params, data.x, data.h0, data.c0, layer=data.layer, lengths=data.lengths, mask=data.mask,
                           mistakes=names)
    return run.outputs().tensors(), mistaken.backward(run, data.dy, data.dh_T, data.dc_T).tensors()


def differs(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[name], b[name]) for name in b)


def phrase(mistake, data=None) -> str:
    every_cell = data is not None and isinstance(mistake.model, Misread) and len(data.params.cells) > 1
    return f"matches the spec if {mistake.description}" + (" in every cell" if every_cell else "")


# --- The catalogue -----------------------------------------------------------------------------


def test_every_mistake_has_one_kebab_case_name_a_pass_and_a_realisation():
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)
    for mistake in CATALOGUE:
        assert re.fullmatch(r"[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*", mistake.name), mistake.name
        assert mistake.pass_ in (FORWARD, BACKWARD) and (mistake.plant or mistake.model is not None), mistake.name


def test_unknown_mistakes_and_planted_ones_are_refused_by_the_model():
    data = make_case_data(case_by_name("one-layer"))
    with pytest.raises(ValueError, match="unknown mistake 'typo'.*it has: gates-"):
        answer(data, "typo")
    with pytest.raises(ValueError, match="'mask-inverted' has no model"):
        answer(data, "mask-inverted")


# --- The mistaken LSTM -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_the_model_without_mistakes_is_the_spec_exactly(case):
    data = make_case_data(case_by_name(case))
    expected = reference(data)
    outputs, grads = answer(data)
    assert outputs.keys() == expected.outputs.keys() and grads.keys() == expected.gradients.keys()
    for name in expected.outputs:
        np.testing.assert_array_equal(outputs[name], expected.outputs[name], err_msg=name)
    for name in expected.gradients:
        np.testing.assert_array_equal(grads[name], expected.gradients[name], err_msg=name)


def _c0_times(factor: float, case: str):
    def data(dtype):
        base = make_case_data(case_by_name(case), dtype)
        return replace(base, c0=base.c0 * base.c0.dtype.type(factor))

    return data


#: Data beyond the table's, for a mistake no case of the table shows: a cell state beyond 3 (the table's stay within
#: [-3, 3], so a default clip at 3 changes none of them).
EXTRA = {"small, c0 x 6": _c0_times(6, "small")}


def data_for(key: str, dtype=np.float64):
    """A case of the table, or of :data:`EXTRA`, by name."""
    return EXTRA[key](dtype) if key in EXTRA else make_case_data(case_by_name(key), dtype)


@lru_cache(maxsize=None)
def _answers(key: str) -> dict:
    """Every modelled mistake's answer on a case (float64), and the spec's under None; the error where the
    parameters cannot even be misread that way (U transposed when it is not square)."""
    data = data_for(key)
    answers = {None: answer(data)}
    for mistake in MODELLED:
        try:
            answers[mistake.name] = answer(data, mistake.name)
        except LSTMInputError as error:
            answers[mistake.name] = error
    return answers


@pytest.mark.parametrize("case", CASE_IDS)
def test_a_mistake_that_does_not_apply_changes_nothing(case):
    """``needs`` is what keeps the diagnoses fast: it must never leave out a mistake that could explain a result."""
    answers = _answers(case)
    spec_outputs, spec_grads = answers[None]
    for mistake in MODELLED:
        if not mistake.needs.met(case_by_name(case)) and not isinstance(answers[mistake.name], LSTMInputError):
            outputs, grads = answers[mistake.name]
            assert not differs(outputs, spec_outputs) and not differs(grads, spec_grads), mistake.name


def test_every_mistake_changes_something_and_backward_mistakes_only_the_gradients():
    changed = set()
    for key in [*CASE_IDS, *EXTRA]:
        answers = _answers(key)
        spec_outputs, spec_grads = answers[None]
        for mistake in MODELLED:
            if isinstance(answers[mistake.name], LSTMInputError):
                assert not mistake.needs.met(data_for(key).case), f"{mistake.name} on {key}: {answers[mistake.name]}"
                continue
            outputs, grads = answers[mistake.name]
            if mistake.pass_ is BACKWARD:
                assert not differs(outputs, spec_outputs), f"{mistake.name} is a backward mistake but changes the outputs of {key}"
            if differs(outputs, spec_outputs) or differs(grads, spec_grads):
                changed.add(mistake.name)
    assert changed == {m.name for m in MODELLED}


def _loss(data, name, arguments):
    params = data.params.with_tensors(arguments)
    run = mistaken.forward(params, arguments["x"], arguments["h0"], arguments["c0"], layer=data.layer, lengths=data.lengths,
                           mask=data.mask, mistakes=(name,))
    return float(np.vdot(data.dy, run.y) + np.vdot(data.dh_T, run.h_T) + np.vdot(data.dc_T, run.c_T))


@pytest.mark.parametrize("mistake", [m for m in MODELLED if m.model is SWITCH and m.pass_ is FORWARD], ids=lambda m: m.name)
def test_a_forward_mistakes_backward_is_the_gradient_of_its_forward(mistake):
    """What autodiff of the mistaken code gives (so that a forward mistake's gradients are recognised as that mistake):
    the directional derivative along a random direction, on every case the mistake applies to."""
    step, tried = 1e-6, 0
    for case in CASES:
        if not mistake.needs.met(case):
            continue
        data = make_case_data(case)
        grads = answer(data, mistake.name)[1]
        arguments = {"x": data.x, "h0": data.h0, "c0": data.c0, **data.params.tensors()}
        v = {name: rng_for(case, f"mistaken direction {name}").normal(size=a.shape) for name, a in arguments.items()}
        terms = [float(np.vdot(v[name], grads[name])) for name in arguments]
        plus = _loss(data, mistake.name, {name: a + step * v[name] for name, a in arguments.items()})
        minus = _loss(data, mistake.name, {name: a - step * v[name] for name, a in arguments.items()})
        # Central differences: truncation and rounding near 1e-9 here; a wrong rule is off by far more.
        assert abs(sum(terms) - (plus - minus) / (2 * step)) <= 1e-6 * (sum(abs(t) for t in terms) + 1.0), case.name
        tried += 1
    assert tried


# --- The diagnoses -----------------------------------------------------------------------------


def first_case_it_changes(mistake) -> str:
    """The first case of the table (or else of :data:`EXTRA`) whose outputs (for a forward mistake) and gradients
    the mistake changes."""
    for key in [*CASE_IDS, *EXTRA]:
        if mistake.needs.met(data_for(key).case):
            outputs, grads = _answers(key)[mistake.name]
            spec_outputs, spec_grads = _answers(key)[None]
            if differs(grads, spec_grads) and (mistake.pass_ is BACKWARD or differs(outputs, spec_outputs)):
                return key
    raise AssertionError(f"{mistake.name} changes no case")


@pytest.mark.parametrize("mistake", MODELLED, ids=lambda m: m.name)
def test_every_mistake_is_diagnosed_by_its_description_at_float32s_tolerance(mistake):
    """The model computes in the data's dtype; the diagnosis compares float64 hypotheses at float32's tolerance.
    A misreading's gradients here are those of the parameters as it used them."""
    data = data_for(first_case_it_changes(mistake), np.float32)
    expected = reference(data)
    outputs, grads = answer(data, mistake.name)
    said = phrase(mistake, data) + (f" {AS_USED}" if isinstance(mistake.model, Misread) and mistake.model.map_back else "")
    assert said in diagnose(data, grads, expected.gradients, "float32", Kind.GRADIENTS)
    if mistake.pass_ is FORWARD:
        assert phrase(mistake, data) in diagnose(data, outputs, expected.outputs, "float32", Kind.OUTPUTS)


@pytest.mark.parametrize("mistake", [m for m in MODELLED if isinstance(m.model, Misread) and m.model.map_back],
                         ids=lambda m: m.name)
def test_a_rearrangements_gradients_mapped_back_are_named_by_their_frame(mistake):
    data = data_for(first_case_it_changes(mistake))
    grads = mistaken.backward(mistaken.forward(data.params, data.x, data.h0, data.c0, layer=data.layer, lengths=data.lengths,
                                               mask=data.mask, mistakes=(mistake.name,)), data.dy, data.dh_T, data.dc_T)
    mapped = LayerParams(tuple(mistake.model.map_back(cell) for cell in grads.params.cells), grads.params.num_directions)
    got = Gradients(grads.x, grads.h0, grads.c0, mapped).tensors()
    assert f"{phrase(mistake, data)} {MAPPED_BACK}" in diagnose(data, got, reference(data).gradients, "float64", Kind.GRADIENTS)


@pytest.mark.parametrize("case", [case.name for case in CASES if case.T * case.B * case.H < 1000])
@pytest.mark.parametrize("kind", [Kind.OUTPUTS, Kind.GRADIENTS])
def test_the_layers_mistakes_are_told_apart_by_the_cases(case, kind):
    """On every small case (the medium ones are for directional checks) a mistake of the layer's features changes,
    its answer is diagnosed as that mistake and as nothing else."""
    data = make_case_data(case_by_name(case))
    expected = reference(data)
    want = expected.gradients if kind == Kind.GRADIENTS else expected.outputs
    for mistake in MODELLED:
        if mistake.needs.plain_cell or not mistake.needs.met(data.case) or (kind == Kind.OUTPUTS and mistake.pass_ is BACKWARD):
            continue
        outputs, grads = _answers(case)[mistake.name]
        got = grads if kind == Kind.GRADIENTS else outputs
        if differs(got, want):
            assert diagnose(data, got, want, "float64", kind) == [phrase(mistake, data)], mistake.name


def test_a_rearrangements_mapped_back_gradients_are_autodiff_through_the_misreading():
    """The MAPPED_BACK frame is the gradient of the mistaken LSTM with respect to the weights it was given: for ONNX's
    gate order (a cycle, not its own inverse), against a directional derivative."""
    mistake = named("gates-stacked-i-o-f-g")
    used = mistaken.backward(mistaken.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, layer=DATA.layer,
                                              mistakes=(mistake.name,)), DATA.dy, DATA.dh_T, DATA.dc_T)
    mapped = mistake.model.map_back(used.params.cells[0])
    W = f"{DATA.params.cell_name(0)} W"
    given = {"x": DATA.x, "h0": DATA.h0, "c0": DATA.c0, W: DATA.params.cells[0].W}
    direction = np.random.default_rng(0).normal(size=mapped.W.shape)
    step = 1e-6
    moved = [_loss(DATA, mistake.name, {**given, W: given[W] + sign * step * direction}) for sign in (1, -1)]
    assert (moved[0] - moved[1]) / (2 * step) == pytest.approx(np.sum(mapped.W * direction), rel=1e-6)


@pytest.mark.parametrize("case", ["forget-bias-peephole", "lstmp-stack", "clips-stack", "mask-previous"])
def test_a_correct_answer_has_no_diagnosis(case):
    data = make_case_data(case_by_name(case))
    expected = reference(data)
    assert diagnose(data, expected.outputs, expected.outputs, "float64", Kind.OUTPUTS) == []
    assert diagnose(data, expected.gradients, expected.gradients, "float64", Kind.GRADIENTS) == []


def test_a_mistake_none_of_the_models_makes_is_not_explained():
    data = make_case_data(case_by_name("stacked-bidirectional"))
    expected = reference(data)
    got = {**expected.outputs, "y": expected.outputs["y"] * 1.01}
    assert diagnose(data, got, expected.outputs, "float64", Kind.OUTPUTS) == []


def test_gradient_blocks_of_two_gates_exchanged_are_named_per_tensor():
    """One tensor's blocks exchanged, the others wrong in another way: the observation still names that tensor."""
    expected = reference(DATA).gradients
    name = DATA.params.cell_name(0)
    got = {**expected, f"{name} W": expected[f"{name} W"][[0, 1, 3, 2]], "x": expected["x"] * 1.5}
    assert diagnose(DATA, got, expected, "float64", Kind.GRADIENTS) == [
        "grad W matches the spec's with the blocks of gates g and o exchanged"]


# --- Lower precision ---------------------------------------------------------------------------


def spec_in_float32(data):
    """The spec computed in float32 on the data rounded to float32, widened back: a float64 request served in float32."""
    narrow = make_case_data(data.case, "float32")
    fwd = narrow.forward(dtype=np.float32)
    grads = layer.backward(fwd, narrow.dy, narrow.dh_T, narrow.dc_T).tensors()
    widen = lambda named: {k: v.astype(np.float64) for k, v in named.items()}  # noqa: E731
    return widen({"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}), widen(grads)


@pytest.mark.parametrize("case", ["forget-bias-peephole", "medium", "lstmp-stack", "clips-stack", "medium-combined"])
def test_a_float64_request_computed_in_float32_is_named(case):
    data = make_case_data(case_by_name(case))
    outputs, grads = spec_in_float32(data)
    expected = reference(data)
    # The same problem: the float32 data is the float64 data rounded, so the error is the float32 rounding's.
    assert diagnose(data, outputs, expected.outputs, "float64", Kind.OUTPUTS) == [FLOAT32_LEVEL]
    assert diagnose(data, grads, expected.gradients, "float64", Kind.GRADIENTS) == [FLOAT32_LEVEL]


def test_float32_rounding_is_no_diagnosis_for_a_float32_request():
    data = make_case_data(case_by_name("forget-bias-peephole"), "float32")
    outputs, grads = spec_in_float32(data)
    expected = reference(data)
    assert diagnose(data, outputs, expected.outputs, "float32", Kind.OUTPUTS) == []
    assert diagnose(data, grads, expected.gradients, "float32", Kind.GRADIENTS) == []


@pytest.mark.parametrize("case", ["forget-bias-peephole", "lstmp-stack", "mask-previous"])
def test_a_gate_swap_is_named_and_not_a_precision_problem(case):
    """The most common porting bug: one layout conversion with two gates swapped, used for every cell. Outputs and
    gradients (in the frame of the parameters as used) are diagnosed as such, and never as a precision problem."""
    data = make_case_data(case_by_name(case))
    swapped = LayerParams(tuple(gates_in_order(c, (0, 2, 1, 3)) for c in data.params.cells), data.params.num_directions)
    fwd = data.forward(params=swapped)
    expected = reference(data)
    said = "matches the spec if gates f and g are swapped" + (" in every cell" if len(swapped.cells) > 1 else "")
    output_diagnoses = diagnose(data, {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}, expected.outputs, "float64", Kind.OUTPUTS)
    gradient_diagnoses = diagnose(data, layer.backward(fwd, data.dy, data.dh_T, data.dc_T).tensors(), expected.gradients,
                                  "float64", Kind.GRADIENTS)
    assert said in output_diagnoses and f"{said} {AS_USED}" in gradient_diagnoses
    assert FLOAT32_LEVEL not in output_diagnoses + gradient_diagnoses


# --- Independent implementations with a mistake: the examples, edited ----------------------------------------


def _example(file: str, name: str, replacements: dict[str, str]) -> ModuleType:
    path = ROOT / "examples" / file
    source = path.read_text()
    for old, new in replacements.items():
        assert source.count(old) == 1, f"examples/{file} changed: no single {old!r} to replace"
        source = source.replace(old, new)
    module = ModuleType(name)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


#: h = o * c written into the cell example's forward and its hand-written backward alike.
WITHOUT_TANH = {"h = o * np.tanh(c_new)": "h = o * c_new", "tc = np.tanh(c)": "tc = c", "dh * o * (1 - tc**2)": "dh * o"}


@pytest.mark.parametrize("case", ["small", "forget-bias-peephole"])
def test_the_cell_example_with_h_without_tanh_is_diagnosed_in_outputs_and_gradients(case):
    example = _example("numpy_lstm.py", "numpy_lstm_h_without_tanh", WITHOUT_TANH)
    data = make_case_data(case_by_name(case))
    cell, fb = data.params.cells[0], data.layer.forget_bias
    h_seq, h_T, c_T = example.forward(cell, data.x, data.h0[0], data.c0[0], forget_bias=fb)
    got = example.backward(cell, data.x, data.h0[0], data.c0[0], data.dy, data.dh_T[0], data.dc_T[0], forget_bias=fb)
    expected = reference(data)
    said = [phrase(named("h-without-tanh"))]
    assert diagnose(data, {"y": h_seq, "h_T": h_T[None], "c_T": c_T[None]}, expected.outputs, "float64", Kind.OUTPUTS) == said
    grads = cell_gradients(got, data.params, data.x).tensors()
    assert diagnose(data, grads, expected.gradients, "float64", Kind.GRADIENTS) == said


#: Each mistake written into the layer example's forward and its hand-written backward alike.
LAYER_EXAMPLE_MISTAKES = {
    "reverse-outputs-in-processing-order": {
        "outputs.append(y[order])": "outputs.append(y)",
        "d_y = d_output[:, :, d * P : (d + 1) * P][order]": "d_y = d_output[:, :, d * P : (d + 1) * P]",
    },
    "masked-step-updates-state": {
        "h, c = np.where(k, h_new, h), np.where(k, c_new, c)": "h, c = h_new, c_new",
        "dh_around, dc_around = dh * ~k, dc_next * ~k": "dh_around, dc_around = 0, 0",
        "dh, dc = dh * k, dc_next * k": "dc = dc_next",
    },
}


@pytest.mark.parametrize("name, case", [("reverse-outputs-in-processing-order", "stacked-bidirectional"),
                                        ("reverse-outputs-in-processing-order", "lstmp-torch"),
                                        ("masked-step-updates-state", "lengths"),
                                        ("masked-step-updates-state", "mask-previous")])
def test_the_layer_example_with_a_mistake_is_diagnosed_in_outputs_and_gradients(name, case):
    example = _example("numpy_layer_lstm.py", f"numpy_layer_lstm_{name}", LAYER_EXAMPLE_MISTAKES[name])
    data = make_case_data(case_by_name(case))
    expected = reference(data)
    options = dict(config=data.layer, lengths=data.lengths, mask=data.mask)
    y, h_T, c_T = example.forward_layer(data.params, data.x, data.h0, data.c0, **options)
    grads = example.backward_layer(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options)
    said = [phrase(named(name))]
    assert diagnose(data, {"y": y, "h_T": h_T, "c_T": c_T}, expected.outputs, "float64", Kind.OUTPUTS) == said
    assert diagnose(data, grads, expected.gradients, "float64", Kind.GRADIENTS) == said
