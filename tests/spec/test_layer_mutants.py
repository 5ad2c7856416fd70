"""Meta-tests for the layer: every proof of the layer's features must fail when the spec is broken in them.

Each mutant plants one bug seen in real LSTM-layer code into ``spec.layer`` or ``spec.lstm`` (as
test_mutants.py does for the cell). Every check is run against every mutant, and the table CATCHES says
which checks must catch which mutants: a check that stops catching one fails, and so does one that
catches a mutant it is documented to be blind to, so the table stays true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from spec import layer, lstm
from spec.layer import LayerConfig
from spec.layer_cases import LayerCase, layer_case_by_name, make_layer_case_data
from tests.spec import test_layer_properties as properties
from tests.spec import test_layer_references as references
from tests.spec import test_layer_tf1 as tf1
from tests.spec.checks import (
    assert_caught_as_documented,
    check_layer_directional_derivative,
    check_layer_gradients_by_finite_differences,
    property_on_cases,
)

_run_direction, _direction_backward = layer.run_direction, layer.direction_backward
_join_directions, _final_states = layer.join_directions, layer.final_states
_step, _carry_backward = lstm.step, lstm.carry_backward


# --- the layer's plumbing -------------------------------------------------------------------------


def _reverse_outputs_in_processing_order(params, layer_input, h0, c0, mask, reverse, **options):
    if not reverse:
        return _run_direction(params, layer_input, h0, c0, mask, reverse, **options)
    run = lstm.forward(params, layer_input[::-1], h0, c0, mask=None if mask is None else mask[::-1], **options)
    return run, run.h_seq  # the bug: not reversed back to the original time order


def _directions_swapped(outputs):
    return _join_directions(outputs[::-1])


def _layer_above_reads_forward_only(outputs):
    if len(outputs) == 1:
        return outputs[0]
    return np.concatenate([outputs[0], np.zeros_like(outputs[1])], axis=2)


def _final_states_direction_major(runs):
    cells = [layer_runs[d] for d in range(len(runs[0])) for layer_runs in runs]
    return np.stack([run.h_T for run in cells]), np.stack([run.c_T for run in cells])


def _final_h_from_last_output(runs):
    """h_T read from the output at the last step: zero for a padded row (the output[-1] bug)."""
    cells = [run for layer_runs in runs for run in layer_runs]
    return np.stack([run.h_seq[-1] for run in cells]), np.stack([run.c_T for run in cells])


def _padded_outputs_not_zeroed(lengths, T):
    return layer.mask_from_lengths(lengths, T), False


def _reverse_lengths_start_at_T_minus_1(params, layer_input, h0, c0, mask, reverse, **options):
    """The reverse direction reads the reversed sequence with the mask not reversed: it starts at x_{T-1}."""
    if not reverse:
        return _run_direction(params, layer_input, h0, c0, mask, reverse, **options)
    run = lstm.forward(params, layer_input[::-1], h0, c0, mask=mask, **options)
    return run, run.h_seq[::-1]


def _reverse_gradient_not_reversed_back(run, d_y, dh_T, dc_T, reverse):
    g, _ = _direction_backward(run, d_y, dh_T, dc_T, reverse)
    return g, g.x  # the bug: a reverse direction's dx left in its processing order


# --- the cell's features --------------------------------------------------------------------------


def _masked_step_updates_state(mu, previous, out):
    return out


def _mask_inverted(mu, previous, out):
    """True read as 'padding' (PyTorch's key_padding_mask convention) instead of Keras's 'keep'."""
    np.copyto(out, previous, where=mu[:, None])
    return out


def _masked_cotangent_not_carried(mu, d):
    step_share, _ = _carry_backward(mu, d)
    return step_share, np.zeros_like(d)


def _projection_before_tanh_hidden(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    return np.multiply(o, c, out=out)


def _projection_before_tanh_project(m, W_hr, out, clip=None):
    np.tanh(m @ W_hr.T, out=out)
    if clip is not None:
        clip(out)
    return out


def _projection_applied_to_c(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    return np.copyto(out, c) or out


def _cell_clip_after_output(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    """TF's clip, misplaced: o's peephole and tanh see the unclipped c_t; only step t+1 sees it clipped."""
    p_i, p_f, p_o = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, clip_o = features.gate_clips
    i = lstm.peeking_gate(z[0], p_i, c_prev, 0.0, clip_i)
    f = (lstm.coupled_forget_gate(i, out=z[1]) if features.coupled_input_forget
         else lstm.peeking_gate(z[1], p_f, c_prev, forget_bias, clip_f))
    g = lstm.candidate(z[2], clip_g)
    lstm.cell(f, c_prev, i, g, out=c)
    o = lstm.output_gate(z[3], p_o, c, clip_o)
    lstm.hidden(o, c, tanh_c, out=h)
    if features.cell_clip is not None:
        features.cell_clip(c)


def _gate_clip_before_peephole(z, p_k, c_peek, bias=0.0, clip=None):
    """ONNX's clip, misread: applied to W x + U h + b before the peephole and forget bias are added."""
    if clip is not None:
        clip(z)
    if p_k is not None:
        z += p_k * c_peek
    if bias:
        z += bias
    return lstm.sigmoid(z, out=z)


def _coupled_forget_from_forget_weights(i, out):
    """f = sigma(W_f x + U_f h + b_f) (``out`` holds that pre-activation) instead of 1 - i."""
    return lstm.sigmoid(out, out=out)


def _coupled_backward_ignores_f(df, di):
    return di


def _clip_gradient_straight_through(self, d):
    """The clip's derivative taken as 1 everywhere (TensorFlow's BlockLSTM gradient does this for cell_clip)."""
    return d


def _clip_gradient_inverted(self, d):
    """The clip's derivative taken as 1 where it clipped and 0 where the value passed."""
    return np.where(self.passed, 0.0, d)


@dataclass(frozen=True)
class Mutant:
    name: str
    replacements: tuple  # (module, attribute, replacement) triples
    pass_: str  # "forward" or "backward"


MUTANTS = (
    Mutant("reverse-outputs-in-processing-order", ((layer, "run_direction", _reverse_outputs_in_processing_order),), "forward"),
    Mutant("directions-swapped", ((layer, "join_directions", _directions_swapped),), "forward"),
    Mutant("layer-above-reads-forward-only", ((layer, "next_layer_input", _layer_above_reads_forward_only),), "forward"),
    Mutant("final-states-direction-major", ((layer, "final_states", _final_states_direction_major),), "forward"),
    Mutant("final-h-at-T-1", ((layer, "final_states", _final_h_from_last_output),), "forward"),
    Mutant("padded-outputs-not-zeroed", ((layer, "lengths_as_mask", _padded_outputs_not_zeroed),), "forward"),
    Mutant("reverse-lengths-start-at-T-1", ((layer, "run_direction", _reverse_lengths_start_at_T_minus_1),), "forward"),
    Mutant("masked-step-updates-state", ((lstm, "carry", _masked_step_updates_state),), "forward"),
    Mutant("mask-inverted", ((lstm, "carry", _mask_inverted),), "forward"),
    Mutant("projection-before-tanh", ((lstm, "hidden", _projection_before_tanh_hidden),
                                      (lstm, "project", _projection_before_tanh_project)), "forward"),
    Mutant("projection-applied-to-c", ((lstm, "hidden", _projection_applied_to_c),), "forward"),
    Mutant("cell-clip-after-output", ((lstm, "step", _cell_clip_after_output),), "forward"),
    Mutant("gate-clip-before-peephole", ((lstm, "peeking_gate", _gate_clip_before_peephole),), "forward"),
    Mutant("coupled-forget-from-forget-weights", ((lstm, "coupled_forget_gate", _coupled_forget_from_forget_weights),), "forward"),
    Mutant("reverse-gradient-not-reversed-back", ((layer, "direction_backward", _reverse_gradient_not_reversed_back),), "backward"),
    Mutant("masked-cotangent-not-carried", ((lstm, "carry_backward", _masked_cotangent_not_carried),), "backward"),
    Mutant("coupled-backward-ignores-f", ((lstm, "coupled_forget_gate_backward", _coupled_backward_ignores_f),), "backward"),
    Mutant("clip-gradient-straight-through", ((lstm.Clip, "backward", _clip_gradient_straight_through),), "backward"),
    Mutant("clip-gradient-inverted", ((lstm.Clip, "backward", _clip_gradient_inverted),), "backward"),
)
ALL = {m.name for m in MUTANTS}
FORWARD = {m.name for m in MUTANTS if m.pass_ == "forward"}


def _on_cases(check, names):
    def run():
        for name in names:
            check(name)

    return run


def _data_check(check, names):
    return _on_cases(lambda name: check(make_layer_case_data(layer_case_by_name(name))), names)


# The cases every property is run on here (checks.property_on_cases says why not hypothesis' draws).
# Together they have two-layer bidirectional stacks, lengths with 0, partial and full rows, masks with
# holes, peepholes, projections, every clip biting (weight_scale drives the gates out) and coupled gates;
# test_layer_properties.py explores the rest.
PROPERTY_CASES = (
    LayerCase("stack-bidirectional-lengths", T=5, B=4, I=3, H=3, seed=101,
              config=LayerConfig(num_layers=2, direction="bidirectional", proj_size=2, peephole=True, forget_bias=1.0),
              lengths=(5, 3, 0, 1)),
    LayerCase("stack-bidirectional-mask", T=5, B=3, I=2, H=3, seed=102,
              config=LayerConfig(num_layers=2, direction="bidirectional"), mask=("11011", "01110", "10000")),
    LayerCase("reverse-lengths-clips-coupled", T=4, B=3, I=3, H=4, seed=103, weight_scale=2.5,
              config=LayerConfig(direction="reverse", peephole=True, cell_clip=0.8, gate_clip=1.5,
                                 coupled_input_forget=True),
              lengths=(4, 2, 3)),
    LayerCase("forward-mask-zero-output-proj-clip", T=4, B=2, I=2, H=3, seed=104, weight_scale=2.0,
              config=LayerConfig(proj_size=2, proj_clip=0.3, zero_output_for_mask=True), mask=("1101", "0111")),
    LayerCase("forward-lengths-padded", T=4, B=3, I=2, H=2, seed=105, config=LayerConfig(), lengths=(4, 2, 0)),
    LayerCase("stack-forward-gate-clip-coupled", T=3, B=2, I=2, H=2, seed=106, weight_scale=2.0,
              config=LayerConfig(num_layers=2, gate_clip=1.0, coupled_input_forget=True)),
)


def _property(body):
    return property_on_cases(properties.layer_cases(), body, PROPERTY_CASES)


# The small cases that together exercise every feature (full finite differences on them take about a second).
FD_CASES = ("coupled-stack", "mask-previous", "proj-clip", "cell-clip", "stacked-bidirectional")
DIRECTIONAL_CASES = ("medium", "lstmp-stack", "clips-stack", "coupled-stack", "mask-previous", "mask-zero")

CHECKS: dict[str, Callable[[], None]] = {
    "finite-differences": _data_check(check_layer_gradients_by_finite_differences, FD_CASES),
    "directional": _data_check(check_layer_directional_derivative, DIRECTIONAL_CASES),
    "torch": _on_cases(references.check_against_torch, references.TORCH_CASES),
    "onnx-reference": _on_cases(references.check_against_onnx_reference_layer, references.ONNX_REFERENCE_CASES),
    "onnxruntime": _on_cases(references.check_against_onnxruntime, references.ORT_CASES),
    "tensorflow-blocklstm": _on_cases(references.check_against_blocklstm, references.TF_CASES),
    "keras-masks": _on_cases(references.check_against_keras, references.KERAS_CASES),
    "tf1-lstmcell": _on_cases(tf1.check_against_tf1, tf1.TF1_CASES),
    **{f"property-{name}": _property(body) for name, body in properties.PROPERTIES.items()},
}

#: What each check needs installed (it is skipped, with the hint, where that is missing).
NEEDS = {"torch": ("torch", references.TORCH_HINT), "onnx-reference": ("onnx", "pip install onnx"),
         "onnxruntime": ("onnxruntime", references.ORT_HINT), "tensorflow-blocklstm": ("tensorflow", references.TF_HINT),
         "keras-masks": ("keras", references.KERAS_HINT)}

#: Which mutants each check must catch (and, by omission, which it is documented not to).
LENGTHS_AS_ANOTHER_MASK = {"padded-outputs-not-zeroed", "reverse-lengths-start-at-T-1"}
CLIPS_AND_COUPLING = {"cell-clip-after-output", "gate-clip-before-peephole", "coupled-forget-from-forget-weights"}
CLIP_AND_COUPLING_GRADIENTS = {"clip-gradient-straight-through", "clip-gradient-inverted", "coupled-backward-ignores-f"}
# hidden() is shared by the projected and the plain cell: the two projection mutants change every cell.
HIDDEN = {"projection-before-tanh", "projection-applied-to-c"}
CATCHES = {
    # A forward bug that the backward pass does not follow leaves the two inconsistent, and the gradient
    # checks see it. They are blind to a lengths mask that is still a mask, only the wrong one (outputs not
    # zeroed, the mask in the wrong time order): a different function, differentiated correctly.
    "finite-differences": ALL - LENGTHS_AS_ANOTHER_MASK,
    "directional": ALL - LENGTHS_AS_ANOTHER_MASK,
    "property-gradients": ALL - LENGTHS_AS_ANOTHER_MASK,
    # nn.LSTM has no clips and no coupled gates; it checks gradients (lengths, directions, projection) too.
    "torch": ALL - CLIPS_AND_COUPLING - CLIP_AND_COUPLING_GRADIENTS,
    # onnx.reference: directions and stacking only (no lengths, masks, clips, coupling), forward only.
    "onnx-reference": {"reverse-outputs-in-processing-order", "directions-swapped", "layer-above-reads-forward-only",
                       "final-states-direction-major"} | HIDDEN,
    # ONNX Runtime: clip, input_forget, lengths and directions, forward only, and no cell clip.
    "onnxruntime": FORWARD - {"cell-clip-after-output"},
    # BlockLSTMV2: one forward layer with a cell clip.
    "tensorflow-blocklstm": {"cell-clip-after-output"} | HIDDEN,
    # Keras: masks in one layer, each direction run alone (so no stacking, no joined final states).
    "keras-masks": {"reverse-outputs-in-processing-order", "directions-swapped", "final-h-at-T-1", "mask-inverted",
                    "reverse-lengths-start-at-T-1", "masked-step-updates-state"} | HIDDEN,
    # TF1's LSTMCell: everything but the gate clip and coupled gates, which it does not have; gradients too.
    "tf1-lstmcell": ALL - {"gate-clip-before-peephole", "coupled-forget-from-forget-weights", "coupled-backward-ignores-f"},
    # Each property sees the bugs in the rule it states; elsewhere both of its runs share the bug.
    "property-reverse": {"reverse-outputs-in-processing-order", "reverse-lengths-start-at-T-1"},
    "property-bidirectional": {"reverse-outputs-in-processing-order", "reverse-lengths-start-at-T-1", "directions-swapped",
                               "final-h-at-T-1", "padded-outputs-not-zeroed"},
    "property-stacking": {"layer-above-reads-forward-only", "final-states-direction-major"},
    "property-lengths-rows-alone": {"reverse-outputs-in-processing-order", "reverse-lengths-start-at-T-1",
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
    for module, attribute, replacement in mutant.replacements:
        monkeypatch.setattr(module, attribute, replacement)
    assert_caught_as_documented(check, mutant.name, CHECKS[check], mutant.name in CATCHES[check])


def test_property_checks_run_exactly_the_fixed_cases():
    # What a property check sees must not depend on the process (hypothesis' draws do, under pytest-xdist).
    seen = []
    _property(lambda case: seen.append(case))()
    assert seen == list(PROPERTY_CASES)
    with pytest.raises(RuntimeError, match="none of the 6 cases meets its assumptions"):
        _property(lambda case: properties.assume(False))()
