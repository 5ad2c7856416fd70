"""Mutant implementations: bugs seen in real LSTM code, which the suite must catch and diagnose.

    pytest conformance/ --backend conformance.mutants              all of them
    pytest conformance/ --backend conformance.mutants:MUTANTS_BY_ID ... (see tests/test_mutants_caught.py)

Each mutant is an ordinary implementation, loaded through the same --backend
path third parties use. Its bug is either a rearrangement of the parameters
it is given (a gate permutation, a transposed matrix, a forget bias lost)
or a switch of :mod:`conformance.known_bugs`. ``diagnosis`` is what the suite
must say about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

from backends.plugin import FunctionImplementation
from conformance import known_bugs
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

    def implementation(self) -> FunctionImplementation:
        forward_bugs = self.bugs & {"o_peeks_prev", "h_without_tanh", "cell_clip"}

        def forward(params, x, h0, c0, *, forget_bias):
            p, fb = self.transform(params, forget_bias)
            h_seq, h_T, c_T, _ = known_bugs.forward(p, x, h0, c0, fb, forward_bugs)
            return h_seq, h_T, c_T

        def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias):
            p, fb = self.transform(params, forget_bias)
            return known_bugs.backward(p, x, h0, c0, dh_seq, dh_T, dc_T, fb, self.bugs)

        return FunctionImplementation(
            id=self.id, description=self.description, forward_function=forward, backward_function=backward
        )


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

MUTANTS_BY_ID = {m.id: m for m in MUTANTS}
IMPLEMENTATIONS = tuple(m.implementation() for m in MUTANTS)
