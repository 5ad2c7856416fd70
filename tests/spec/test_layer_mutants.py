"""Meta-tests for the layer: every proof of the layer's features must fail when the spec is broken in them.

Each mutant is a mistake of the catalogue (conformance/mistakes.py) that only the layer's features show, planted
into ``spec.layer`` or ``spec.lstm`` (its ``plant``; test_mutants.py plants the plain cell's). Every check is run
against every mutant, and the table CATCHES says which checks must catch which mutants: a check that stops
catching one fails, and so does one that catches a mutant it is documented to be blind to, so the table stays
true.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.mistakes import Pass, planted
from spec.cases import Case, case_by_name, make_case_data
from spec.layer import LayerConfig
from tests.spec import test_layer_properties as properties
from tests.spec import test_layer_references as references
from tests.spec import test_layer_tf1 as tf1
from tests.spec.checks import (
    assert_caught_as_documented,
    check_layer_directional_derivative,
    check_layer_gradients_by_finite_differences,
    property_on_cases,
)

#: The catalogue's planted mistakes that only the layer's features show (the plain cell's: test_mutants.py).
MUTANTS = tuple(mistake for mistake in planted() if not mistake.needs.plain_cell)
ALL = {m.name for m in MUTANTS}
FORWARD = {m.name for m in MUTANTS if m.pass_ is Pass.FORWARD}


def _on_cases(check, names):
    def run():
        for name in names:
            check(name)

    return run


def _data_check(check, names):
    return _on_cases(lambda name: check(make_case_data(case_by_name(name))), names)


# The cases every property is run on here (checks.property_on_cases says why not hypothesis' draws).
# Together they have two-layer bidirectional stacks, lengths with 0, partial and full rows, masks with
# holes, peepholes, projections, every clip biting (weight_scale drives the gates out) and coupled gates;
# test_layer_properties.py explores the rest.
PROPERTY_CASES = (
    Case("stack-bidirectional-lengths", T=5, B=4, I=3, H=3, seed=101,
         layer=LayerConfig(num_layers=2, direction="bidirectional", proj_size=2, peephole=True, forget_bias=1.0),
         lengths=(5, 3, 0, 1)),
    Case("stack-bidirectional-mask", T=5, B=3, I=2, H=3, seed=102,
         layer=LayerConfig(num_layers=2, direction="bidirectional"), mask=("11011", "01110", "10000")),
    Case("reverse-lengths-clips-coupled", T=4, B=3, I=3, H=4, seed=103, weight_scale=2.5,
         layer=LayerConfig(direction="reverse", peephole=True, cell_clip=0.8, gate_clip=1.5, coupled_input_forget=True),
         lengths=(4, 2, 3)),
    Case("forward-mask-zero-output-proj-clip", T=4, B=2, I=2, H=3, seed=104, weight_scale=2.0,
         layer=LayerConfig(proj_size=2, proj_clip=0.3, zero_output_for_mask=True), mask=("1101", "0111")),
    Case("forward-lengths-padded", T=4, B=3, I=2, H=2, seed=105, layer=LayerConfig(), lengths=(4, 2, 0)),
    Case("stack-forward-gate-clip-coupled", T=3, B=2, I=2, H=2, seed=106, weight_scale=2.0,
         layer=LayerConfig(num_layers=2, gate_clip=1.0, coupled_input_forget=True)),
    Case("layer-norm-projection-bias-lengths", T=4, B=3, I=2, H=3, seed=107, weight_scale=2.0,
         layer=LayerConfig(layer_norm=True, peephole=True, proj_size=2, proj_bias=True, proj_clip=0.2),
         lengths=(4, 1, 3)),
)


def _property(body):
    return property_on_cases(properties.layer_cases(), body, PROPERTY_CASES)


# The small cases that together exercise every feature (full finite differences on them take about a second).
FD_CASES = ("coupled-stack", "mask-previous", "proj-clip", "cell-clip", "stacked-bidirectional", "layer-norm-cifg",
            "layer-norm-full")
DIRECTIONAL_CASES = ("medium-combined", "lstmp-stack", "clips-stack", "coupled-stack", "mask-previous", "mask-zero",
                     "layer-norm-full")

CHECKS: dict[str, Callable[[], None]] = {
    "finite-differences": _data_check(check_layer_gradients_by_finite_differences, FD_CASES),
    "directional": _data_check(check_layer_directional_derivative, DIRECTIONAL_CASES),
    "torch": _on_cases(references.check_against_torch, references.TORCH_CASES),
    "onnx-reference": _on_cases(references.check_against_onnx_reference_layer, references.ONNX_REFERENCE_CASES),
    "onnxruntime": _on_cases(references.check_against_onnxruntime, references.ORT_CASES),
    "tensorflow-blocklstm": _on_cases(references.check_against_blocklstm, references.TF_CASES),
    "keras-masks": _on_cases(references.check_against_keras, references.KERAS_CASES),
    "tf1-lstmcell": _on_cases(tf1.check_against_tf1, tf1.TF1_CASES),
    "litert": _on_cases(references.check_against_litert, references.LITERT_CASES),
    **{f"property-{name}": _property(body) for name, body in properties.PROPERTIES.items()},
}

#: What each check needs installed (it is skipped, with the hint, where that is missing).
NEEDS = {"torch": ("torch", references.TORCH_HINT), "onnx-reference": ("onnx", "pip install onnx"),
         "onnxruntime": ("onnxruntime", references.ORT_HINT), "tensorflow-blocklstm": ("tensorflow", references.TF_HINT),
         "keras-masks": ("keras", references.KERAS_HINT), "litert": ("ai_edge_litert", references.LITERT_HINT)}

#: Which mutants each check must catch (and, by omission, which it is documented not to).
LENGTHS_AS_ANOTHER_MASK = {"padded-outputs-not-zeroed", "reverse-starts-at-T-1"}
CLIPS_AND_COUPLING = {"cell-clip-after-output", "gate-clip-before-peephole", "coupled-forget-from-forget-weights"}
CLIP_AND_COUPLING_GRADIENTS = {"clip-gradient-straight-through", "clip-gradient-inverted", "coupled-backward-ignores-f"}
# Layer normalization and the projection's bias: only TFLite's fused LSTM has them (no reference check here does).
TFLITE_FEATURES = {"layer-norm-of-the-biased-sum", "layer-norm-unbiased-variance", "layer-norm-gradient-without-mean",
                   "layer-norm-gradient-without-variance", "proj-bias-after-clip"}
# hidden() is shared by the projected and the plain cell: the two projection mutants change every cell.
HIDDEN = {"projection-before-tanh", "projection-of-c"}
CATCHES = {
    # A forward bug that the backward pass does not follow leaves the two inconsistent, and the gradient
    # checks see it. They are blind to a lengths mask that is still a mask, only the wrong one (outputs not
    # zeroed, the mask in the wrong time order): a different function, differentiated correctly.
    "finite-differences": ALL - LENGTHS_AS_ANOTHER_MASK,
    "directional": ALL - LENGTHS_AS_ANOTHER_MASK,
    "property-gradients": ALL - LENGTHS_AS_ANOTHER_MASK,
    # nn.LSTM has no clips and no coupled gates; it checks gradients (lengths, directions, projection) too.
    "torch": ALL - CLIPS_AND_COUPLING - CLIP_AND_COUPLING_GRADIENTS - TFLITE_FEATURES,
    # onnx.reference: directions and stacking only (no lengths, masks, clips, coupling), forward only.
    "onnx-reference": {"reverse-outputs-in-processing-order", "directions-swapped", "layer-above-reads-forward-only",
                       "final-states-direction-major"} | HIDDEN,
    # ONNX Runtime: clip, input_forget, lengths and directions, forward only, and no cell clip.
    "onnxruntime": FORWARD - {"cell-clip-after-output"} - TFLITE_FEATURES,
    # BlockLSTMV2: one forward layer with a cell clip.
    "tensorflow-blocklstm": {"cell-clip-after-output"} | HIDDEN,
    # Keras: masks in one layer, each direction run alone (so no stacking, no joined final states).
    "keras-masks": {"reverse-outputs-in-processing-order", "directions-swapped", "final-h-at-T-1", "mask-inverted",
                    "reverse-starts-at-T-1", "masked-step-updates-state"} | HIDDEN,
    # TF1's LSTMCell: everything but the gate clip and coupled gates, which it does not have; gradients too.
    "tf1-lstmcell": ALL - {"gate-clip-before-peephole", "coupled-forget-from-forget-weights", "coupled-backward-ignores-f"}
                    - TFLITE_FEATURES,
    # LiteRT's fused op: one forward layer or two, peepholes, CIFG, the clips, layer normalization, the projection
    # and its bias; forward only, so the backward mistakes pass it.
    "litert": {"layer-norm-of-the-biased-sum", "layer-norm-unbiased-variance", "proj-bias-after-clip",
               "cell-clip-after-output", "coupled-forget-from-forget-weights"} | HIDDEN,
    # Each property sees the bugs in the rule it states; elsewhere both of its runs share the bug.
    "property-reverse": {"reverse-outputs-in-processing-order", "reverse-starts-at-T-1"},
    "property-bidirectional": {"reverse-outputs-in-processing-order", "reverse-starts-at-T-1", "directions-swapped",
                               "final-h-at-T-1", "padded-outputs-not-zeroed"},
    "property-stacking": {"layer-above-reads-forward-only", "final-states-direction-major"},
    "property-lengths-rows-alone": {"reverse-outputs-in-processing-order", "reverse-starts-at-T-1",
                                    "final-states-direction-major", "final-h-at-T-1", "padded-outputs-not-zeroed",
                                    "mask-inverted", "masked-step-updates-state"},
    "property-lengths-are-a-mask": {"padded-outputs-not-zeroed"},
    "property-all-true-mask": {"mask-inverted"},
    "property-length-zero": {"final-states-direction-major", "final-h-at-T-1", "mask-inverted", "masked-step-updates-state"},
    "property-clip-above-all": {"clip-gradient-inverted"},
    "property-identity-projection": {"projection-before-tanh"},
    "property-one-layer-is-the-cell": {"final-h-at-T-1", "padded-outputs-not-zeroed"},
}


def test_every_mutant_is_caught_by_some_check_and_every_check_catches_something():
    assert set().union(*CATCHES.values()) == ALL
    assert set(CATCHES) == set(CHECKS), f"checks without a CATCHES entry: {set(CHECKS) - set(CATCHES)}"
    assert all(CATCHES[check] for check in CHECKS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_check_against_mutant(check, mutant, monkeypatch):
    if check in NEEDS:
        pytest.importorskip(NEEDS[check][0], reason=NEEDS[check][1])
    if check == "tf1-lstmcell":
        tf1.skip_without_tf1()
    for patch in mutant.plant:
        monkeypatch.setattr(patch.target, patch.attribute, patch.replacement)
    assert_caught_as_documented(check, mutant.name, CHECKS[check], mutant.name in CATCHES[check])


def test_property_checks_run_exactly_the_fixed_cases():
    # What a property check sees must not depend on the process (hypothesis' draws do, under pytest-xdist).
    seen = []
    _property(lambda case: seen.append(case))()
    assert seen == list(PROPERTY_CASES)
    with pytest.raises(RuntimeError, match="none of the 7 cases meets its assumptions"):
        _property(lambda case: properties.assume(False))()
