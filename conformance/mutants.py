"""Mutant implementations: bugs seen in real LSTM code, which the suite must catch and diagnose.

    pytest conformance/ --backend conformance.mutants              all of them
    pytest conformance/ --backend conformance.mutants -k test_layer   the layer mutants' verdicts

Each mutant is an ordinary implementation, loaded through the same --backend
path third parties use. A cell mutant (:data:`MUTANTS`) implements the cell
contract only; its bug is either a rearrangement of the parameters it is given
(a gate permutation, a transposed matrix, a forget bias lost) or a switch of
:mod:`conformance.known_bugs`. A layer mutant (:data:`LAYER_MUTANTS`)
implements the layer contract only, every layer feature, with one switch of
:mod:`conformance.known_layer_bugs` (its backward the gradient of its own
mistaken forward, or for a backward bug the spec's forward). ``diagnosis`` is
what the suite must say about it. tests/test_mutants_caught.py and
tests/test_layer_mutants_caught.py check both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

from conformance import known_bugs, known_layer_bugs
from contract.loading import FunctionRow
from contract.vocabulary import Feature
from spec.params import GATES, LSTMParams


def _same(params, forget_bias):
    return params, forget_bias


def _swap_gates(a, b):
    order = list(range(4))
    order[a], order[b] = b, a

    def transform(params, forget_bias):
        return LSTMParams(params.W[order], params.U[order], params.b[order], params.p), forget_bias

    return transform


@dataclass(frozen=True)
class Mutant:
    id: str
    description: str
    diagnosis: str  # a phrase the suite's diagnosis must contain
    transform: Callable = _same
    bugs: frozenset = field(default_factory=frozenset)

    def row(self) -> FunctionRow:
        forward_bugs = self.bugs & {"o_peeks_prev", "h_without_tanh", "cell_clip"}

        def forward(params, x, h0, c0, *, forget_bias):
            p, fb = self.transform(params, forget_bias)
            h_seq, h_T, c_T, _ = known_bugs.forward(p, x, h0, c0, fb, forward_bugs)
            return h_seq, h_T, c_T

        def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias):
            p, fb = self.transform(params, forget_bias)
            return known_bugs.backward(p, x, h0, c0, dh_seq, dh_T, dc_T, fb, self.bugs)

        return FunctionRow(id=self.id, description=self.description, features=frozenset({Feature.PEEPHOLE}),
                           forward_function=forward, backward_function=backward)


MUTANTS = (
    *(
        Mutant(f"mutant/gates-{GATES[a]}-{GATES[b]}-swapped", f"gates {GATES[a]} and {GATES[b]} exchanged when loading the weights",
               f"gates {GATES[a]} and {GATES[b]} are swapped", _swap_gates(a, b))
        for a, b in combinations(range(4), 2)
    ),
    Mutant("mutant/forget-bias-missing", "the forget bias is never added", "the forget bias is missing",
           lambda p, fb: (p, 0.0)),
    Mutant("mutant/forget-bias-doubled", "the forget bias is added twice (folded into b and added again)", "the forget bias is added twice",
           lambda p, fb: (p, 2 * fb)),
    Mutant("mutant/h-without-tanh", "h = o * c", "h = o * c, without the tanh", bugs=frozenset({"h_without_tanh"})),
    Mutant("mutant/o-peephole-on-c_prev", "the output gate's peephole reads c_{t-1}", "the output gate peeks at c_{t-1}",
           bugs=frozenset({"o_peeks_prev"})),
    Mutant("mutant/peepholes-i-f-swapped", "the input and forget peephole weights exchanged", "the peepholes of i and f are swapped",
           lambda p, fb: (LSTMParams(p.W, p.U, p.b, None if p.p is None else p.p[[1, 0, 2]]), fb)),
    Mutant("mutant/peepholes-dropped-from-dc", "the peephole paths left out of the cell-state gradient",
           "the peephole paths are dropped from the cell-state gradient", bugs=frozenset({"dc_without_peepholes"})),
    Mutant("mutant/bias-gradient-wrong-gate", "the bias gradients of gates f and g written to each other",
           "grad b matches the spec's with the blocks of gates f and g exchanged", bugs=frozenset({"db_gates_f_g"})),
    Mutant("mutant/dc-ignores-downstream", "the cell-state gradient ignores the dc from the next step",
           "the cell-state gradient ignores the dc arriving from the next step", bugs=frozenset({"dc_without_downstream"})),
    Mutant("mutant/recurrent-matrix-transposed", "U used as U^T", "the recurrent matrix U is transposed",
           lambda p, fb: (LSTMParams(p.W, p.U.transpose(0, 2, 1).copy(), p.b, p.p), fb)),
    Mutant("mutant/torch-bias-hh-dropped", "of PyTorch's two biases (b split in half between them) only bias_ih is used",
           "only one of two biases is used", lambda p, fb: (LSTMParams(p.W, p.U, p.b * 0.5, p.p), fb)),
    Mutant("mutant/last-step-missing-from-gradient", "the backward loop stops one step short",
           "the last time step is missing from the backward pass", bugs=frozenset({"last_step_missing"})),
)


@dataclass(frozen=True)
class LayerMutant:
    """A layer implementation with one mistake of :mod:`conformance.known_layer_bugs` (and nothing of the cell)."""

    id: str
    description: str
    bug: str  # a name of known_layer_bugs.BUGS
    diagnosis: str  # a phrase the suite's diagnosis must contain

    @property
    def backward_only(self) -> bool:
        return self.bug in known_layer_bugs.BACKWARD_BUGS

    def row(self) -> FunctionRow:
        bugs = frozenset({self.bug})

        def forward_layer(params, x, h0, c0, *, config, lengths, mask):
            run = known_layer_bugs.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, bugs=bugs)
            return run.y, run.h_T, run.c_T

        def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
            run = known_layer_bugs.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, bugs=bugs)
            return known_layer_bugs.backward(run, dy, dh_T, dc_T)

        return FunctionRow(id=self.id, description=self.description, features=frozenset(Feature),
                           forward_layer_function=forward_layer, backward_layer_function=backward_layer)


def _layer_mutant(name: str, description: str, bug: str) -> LayerMutant:
    """The diagnosis is the bug model's own words for the mistake: the diagnoses and the mutants share them."""
    return LayerMutant(f"mutant/layer-{name}", description, bug, known_layer_bugs.BUGS[bug])


LAYER_MUTANTS = (
    _layer_mutant("reverse-outputs-in-processing-order", "a reverse direction's outputs not reversed back "
                  "(y_t holds the output for x_{T-1-t})", "reverse_outputs_in_processing_order"),
    _layer_mutant("directions-swapped", "a bidirectional layer's outputs concatenated reverse first", "directions_swapped"),
    _layer_mutant("above-fed-forward-only", "the layer above a bidirectional layer fed only its forward direction "
                  "(zeros for the reverse)", "layer_above_reads_forward_only"),
    _layer_mutant("final-states-direction-major", "h_T and c_T stacked every layer's forward direction first, "
                  "then every layer's reverse", "final_states_direction_major"),
    _layer_mutant("projection-before-tanh", "h = tanh(W_hr (o * c)): the projection inside the tanh", "projection_before_tanh"),
    _layer_mutant("projection-of-c", "h = W_hr c: the projection applied to the cell state", "projection_of_c"),
    _layer_mutant("padded-outputs-not-zeroed", "outputs past a row's length repeat its last output", "padded_outputs_not_zeroed"),
    _layer_mutant("zero-output-for-mask-flipped", "zero_output_for_mask read the other way round", "zero_output_for_mask_flipped"),
    _layer_mutant("final-h-at-T-1", "h_T taken from the output at step T - 1 (output[-1]), zero for a shorter row",
                  "final_h_at_T_minus_1"),
    _layer_mutant("reverse-starts-at-T-1", "the padded sequence reversed as a whole: the reverse direction reads the "
                  "padding first", "reverse_starts_at_T_minus_1"),
    _layer_mutant("reverse-mask-not-reversed", "the reverse direction reads the mask in time order", "reverse_mask_not_reversed"),
    _layer_mutant("masked-step-updates-state", "masked steps update the state (only their outputs are masked)",
                  "masked_step_updates_state"),
    _layer_mutant("clips-swapped", "cell_clip clips the gate pre-activations and gate_clip the cell state", "clips_swapped"),
    _layer_mutant("coupled-forget-from-forget-weights", "input_forget ignored: f = sigma(W_f x + U_f h + b_f) instead of 1 - i",
                  "coupled_forget_from_forget_weights"),
    # Backward only: the forward is right.
    _layer_mutant("reverse-dx-not-reversed", "a reverse direction's input gradient left in its processing order",
                  "reverse_dx_not_reversed"),
    _layer_mutant("clip-gradient-straight-through", "every clip's gradient taken as 1, as if nothing had been "
                  "clipped (a straight-through clip)", "clip_gradient_straight_through"),
    _layer_mutant("dc-T-ignored", "the cotangent of c_T dropped", "dc_T_ignored"),
)

MUTANTS_BY_ID = {m.id: m for m in MUTANTS}
LAYER_MUTANTS_BY_ID = {m.id: m for m in LAYER_MUTANTS}
ROWS = tuple(m.row() for m in MUTANTS) + tuple(m.row() for m in LAYER_MUTANTS)
