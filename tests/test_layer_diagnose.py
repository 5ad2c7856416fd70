"""The layer's bug model (conformance/known_layer_bugs.py) and the layer diagnoses built on it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conformance import known_layer_bugs as bugs_model
from conformance.diagnose import diagnose_layer
from spec import layer
from spec.layer_cases import LAYER_CASES, layer_case_by_name, make_layer_case_data, reference, rng_for

ROOT = Path(__file__).resolve().parents[1]
FLOAT32_LEVEL = "the error is at float32's level: something in this implementation computes in float32"
CASE_IDS = [case.name for case in LAYER_CASES]


def model(data, bugs=frozenset(), **override):
    arguments = dict(params=data.params, x=data.x, h0=data.h0, c0=data.c0)
    arguments.update(override)
    return bugs_model.forward(**arguments, config=data.config, lengths=data.lengths, mask=data.mask, bugs=bugs)


def answer(data, bugs=frozenset()):
    """The model's outputs and gradients on the case's data."""
    run = model(data, bugs)
    return run.outputs(), bugs_model.backward(run, data.dy, data.dh_T, data.dc_T)


def differs(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[name], b[name]) for name in b)


def applying(case, kinds=bugs_model.BUGS):
    return [bug for bug in kinds if bugs_model.applies(bug, case.config, case.lengths, case.mask)]


# --- The model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_the_model_without_bugs_is_the_spec_exactly(case):
    data = make_layer_case_data(layer_case_by_name(case))
    fwd = data.forward()
    expected = layer.backward(fwd, data.dy, data.dh_T, data.dc_T).tensors()
    outputs, grads = answer(data)
    for name in ("y", "h_T", "c_T"):
        np.testing.assert_array_equal(outputs[name], getattr(fwd, name), err_msg=name)
    assert grads.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(grads[name], expected[name], err_msg=name)


def test_unknown_bugs_are_refused():
    data = make_layer_case_data(layer_case_by_name("one-layer"))
    with pytest.raises(ValueError, match="unknown layer bugs"):
        model(data, {"typo"})


@pytest.mark.parametrize("case", CASE_IDS)
def test_a_bug_that_does_not_apply_changes_nothing(case):
    """applies() is what keeps the diagnoses fast: it must never leave out a mistake that could explain a result."""
    data = make_layer_case_data(layer_case_by_name(case))
    spec_outputs, spec_grads = answer(data)
    for bug in set(bugs_model.BUGS) - set(applying(data.case)):
        outputs, grads = answer(data, {bug})
        assert not differs(outputs, spec_outputs) and not differs(grads, spec_grads), bug


def test_every_bug_changes_something_and_backward_bugs_only_the_gradients():
    changed = set()
    for case in LAYER_CASES:
        data = make_layer_case_data(case)
        spec_outputs, spec_grads = answer(data)
        for bug in applying(case):
            outputs, grads = answer(data, {bug})
            if bug in bugs_model.BACKWARD_BUGS:
                assert not differs(outputs, spec_outputs), f"{bug} is a backward bug but changes the outputs of {case.name}"
            if differs(outputs, spec_outputs) or differs(grads, spec_grads):
                changed.add(bug)
    assert changed == set(bugs_model.BUGS)


def _loss(data, bug, arguments):
    params = data.params.with_tensors(arguments)
    run = model(data, {bug}, params=params, x=arguments["x"], h0=arguments["h0"], c0=arguments["c0"])
    return float(np.vdot(data.dy, run.y) + np.vdot(data.dh_T, run.h_T) + np.vdot(data.dc_T, run.c_T))


@pytest.mark.parametrize("bug", sorted(bugs_model.FORWARD_BUGS))
def test_a_forward_bugs_backward_is_the_gradient_of_its_forward(bug):
    """What autodiff of the mistaken code gives (so that a forward bug's gradients are recognised as that bug):
    the directional derivative along a random direction, on every case the bug applies to."""
    step, tried = 1e-6, 0
    for case in LAYER_CASES:
        if bug not in applying(case):
            continue
        data = make_layer_case_data(case)
        grads = answer(data, {bug})[1]
        arguments = {"x": data.x, "h0": data.h0, "c0": data.c0, **data.params.tensors()}
        v = {name: rng_for(case, f"known_layer_bugs direction {name}").normal(size=a.shape) for name, a in arguments.items()}
        terms = [float(np.vdot(v[name], grads[name])) for name in arguments]
        plus = _loss(data, bug, {name: a + step * v[name] for name, a in arguments.items()})
        minus = _loss(data, bug, {name: a - step * v[name] for name, a in arguments.items()})
        # Central differences: truncation and rounding near 1e-9 here; a wrong rule is off by far more.
        assert abs(sum(terms) - (plus - minus) / (2 * step)) <= 1e-6 * (sum(abs(t) for t in terms) + 1.0), case.name
        tried += 1
    assert tried


# --- The diagnoses -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("gradients", [False, True], ids=["outputs", "gradients"])
def test_every_mistake_is_diagnosed_by_its_words_alone(case, gradients):
    """On every case a mistake changes, its answer is diagnosed as that mistake and as nothing else: the layer's
    mistakes are told apart by the cases."""
    data = make_layer_case_data(layer_case_by_name(case))
    expected = reference(data)
    want = expected.gradients if gradients else expected.outputs
    for bug in applying(data.case):
        if not gradients and bug in bugs_model.BACKWARD_BUGS:
            continue
        outputs, grads = answer(data, {bug})
        got = grads if gradients else outputs
        if not differs(got, want):
            continue
        assert diagnose_layer(data, got, want, "float64", gradients) == [f"matches the spec if {bugs_model.BUGS[bug]}"], bug


def first_case_it_changes(bug):
    for case in LAYER_CASES:
        if bug in applying(case):
            data = make_layer_case_data(case)
            if differs(answer(data, {bug})[1], reference(data).gradients):
                return case
    raise AssertionError(f"{bug} changes no case")


@pytest.mark.parametrize("bug", sorted(bugs_model.BUGS))
def test_a_float32_mistake_is_diagnosed_at_float32s_tolerance(bug):
    """The model computes in the data's dtype; the diagnosis compares float64 hypotheses at float32's tolerance."""
    data = make_layer_case_data(first_case_it_changes(bug), "float32")
    expected = reference(data)
    outputs, grads = answer(data, {bug})
    phrase = f"matches the spec if {bugs_model.BUGS[bug]}"
    assert phrase in diagnose_layer(data, grads, expected.gradients, "float32", True)
    if bug in bugs_model.FORWARD_BUGS:
        assert phrase in diagnose_layer(data, outputs, expected.outputs, "float32", False)


@pytest.mark.parametrize("case", ["lstmp-stack", "clips-stack", "mask-previous"])
def test_a_correct_answer_has_no_diagnosis(case):
    data = make_layer_case_data(layer_case_by_name(case))
    expected = reference(data)
    assert diagnose_layer(data, expected.outputs, expected.outputs, "float64", False) == []
    assert diagnose_layer(data, expected.gradients, expected.gradients, "float64", True) == []


@pytest.mark.parametrize("case", ["lstmp-stack", "clips-stack", "medium"])
def test_a_float64_request_computed_in_float32_is_named(case):
    data = make_layer_case_data(layer_case_by_name(case))
    narrow = make_layer_case_data(data.case, "float32")
    fwd = narrow.forward(dtype=np.float32)
    grads = layer.backward(fwd, narrow.dy, narrow.dh_T, narrow.dc_T).tensors()
    widen = lambda named: {name: a.astype(np.float64) for name, a in named.items()}  # noqa: E731
    expected = reference(data)
    # The same problem: the float32 data is the float64 data rounded, so the error is the float32 rounding's.
    assert diagnose_layer(data, widen({"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}), expected.outputs, "float64", False) == [FLOAT32_LEVEL]
    assert diagnose_layer(data, widen(grads), expected.gradients, "float64", True) == [FLOAT32_LEVEL]


def test_a_mistake_none_of_the_model_makes_is_not_explained():
    data = make_layer_case_data(layer_case_by_name("stacked-bidirectional"))
    expected = reference(data)
    got = {**expected.outputs, "y": expected.outputs["y"] * 1.01}
    assert diagnose_layer(data, got, expected.outputs, "float64", False) == []


# --- An independent implementation with the mistakes: examples/numpy_layer_lstm.py, edited ----------------


def _example_with(name: str, replacements: dict[str, str]) -> ModuleType:
    path = ROOT / "examples" / "numpy_layer_lstm.py"
    source = path.read_text()
    for old, new in replacements.items():
        assert source.count(old) == 1, f"examples/numpy_layer_lstm.py changed: no single {old!r} to replace"
        source = source.replace(old, new)
    module = ModuleType(name)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


#: Each mistake written into the example's forward and its hand-written backward alike.
EXAMPLE_MISTAKES = {
    "reverse_outputs_in_processing_order": {
        "outputs.append(y[order])": "outputs.append(y)",
        "d_y = d_output[:, :, d * P : (d + 1) * P][order]": "d_y = d_output[:, :, d * P : (d + 1) * P]",
    },
    "masked_step_updates_state": {
        "h, c = np.where(k, h_new, h), np.where(k, c_new, c)": "h, c = h_new, c_new",
        "dh_around, dc_around = dh * ~k, dc_next * ~k": "dh_around, dc_around = 0, 0",
        "dh, dc = dh * k, dc_next * k": "dc = dc_next",
    },
}


@pytest.mark.parametrize("bug, case", [("reverse_outputs_in_processing_order", "stacked-bidirectional"),
                                       ("reverse_outputs_in_processing_order", "lstmp-torch"),
                                       ("masked_step_updates_state", "lengths"),
                                       ("masked_step_updates_state", "mask-previous")])
def test_the_example_with_a_mistake_is_diagnosed_in_outputs_and_gradients(bug, case):
    example = _example_with(f"numpy_layer_lstm_{bug}", EXAMPLE_MISTAKES[bug])
    data = make_layer_case_data(layer_case_by_name(case))
    expected = reference(data)
    options = dict(config=data.config, lengths=data.lengths, mask=data.mask)
    y, h_T, c_T = example.forward_layer(data.params, data.x, data.h0, data.c0, **options)
    grads = example.backward_layer(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options)
    phrase = f"matches the spec if {bugs_model.BUGS[bug]}"
    assert diagnose_layer(data, {"y": y, "h_T": h_T, "c_T": c_T}, expected.outputs, "float64", False) == [phrase]
    assert diagnose_layer(data, grads, expected.gradients, "float64", True) == [phrase]


@pytest.mark.parametrize("name", ["lstmp-stack", "mask-previous"])
def test_a_gate_swap_in_every_cell_is_named(name):
    """The most common porting bug, in a layer: one layout conversion with two gates swapped, used for every
    cell. Outputs and gradients (in the frame of the parameters as used) are diagnosed as such."""
    from conformance.diagnose import diagnose_layer
    from spec import layer
    from spec.layer_cases import layer_case_by_name, make_layer_case_data, reference
    from spec.params import LayerParams, LSTMParams

    data = make_layer_case_data(layer_case_by_name(name))
    swapped = LayerParams(tuple(LSTMParams(c.W[[0, 2, 1, 3]], c.U[[0, 2, 1, 3]], c.b[[0, 2, 1, 3]], c.p, c.W_hr)
                                for c in data.params.cells), data.params.num_directions)
    fwd = layer.forward(swapped, data.x, data.h0, data.c0, config=data.config, lengths=data.lengths, mask=data.mask)
    outputs = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}
    grads = layer.backward(fwd, data.dy, data.dh_T, data.dc_T).tensors()
    expected = reference(data)
    phrase = "matches the spec if gates f and g are swapped in every cell"
    assert phrase in diagnose_layer(data, outputs, expected.outputs, "float64", gradients=False)
    assert phrase in diagnose_layer(data, grads, expected.gradients, "float64", gradients=True)
