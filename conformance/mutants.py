"""Mutant implementations: the catalogue's mistakes (conformance/mistakes.py) that the suite must catch and diagnose.

    pytest conformance/ --backend conformance.mutants                       all of them
    pytest conformance/ --backend conformance.mutants -k "mutant/h-without-tanh"   one

Each mistake of the catalogue with a model and ``mutant=True`` is a row ``mutant/<name>``: the mistaken LSTM of
:mod:`conformance.mistaken` with that one mistake (its gradients those of its own mistaken forward, or for a
backward mistake the spec's forward with the mistaken backward), loaded through the same --backend path third
parties use, as plain functions (:class:`contract.loading.FunctionRow`). A mistake that a plain cell shows runs
the plain cell's cases (it declares peepholes, nothing of the layer); the others declare every feature and run
every case. The suite must fail it and diagnose each failure as "matches the spec if <its description>"
(tests/test_mutants_caught.py).
"""

from __future__ import annotations

from conformance import mistaken
from conformance.mistakes import CATALOGUE, Mistake
from contract.loading import FunctionRow
from contract.vocabulary import Feature

#: What a mutant of a mistake that a plain cell shows declares: the plain cell, with or without peepholes.
PLAIN_CELL = frozenset({Feature.PEEPHOLE})


def mutant_id(mistake: Mistake) -> str:
    return f"mutant/{mistake.name}"


def row(mistake: Mistake) -> FunctionRow:
    """The mistaken LSTM with ``mistake`` as a row of plain layer functions."""
    mistakes = (mistake.name,)

    def forward_layer(params, x, h0, c0, *, config, lengths, mask):
        run = mistaken.forward(params, x, h0, c0, layer=config, lengths=lengths, mask=mask, mistakes=mistakes)
        return run.y, run.h_T, run.c_T

    def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
        run = mistaken.forward(params, x, h0, c0, layer=config, lengths=lengths, mask=mask, mistakes=mistakes)
        return mistaken.backward(run, dy, dh_T, dc_T).tensors()

    return FunctionRow(id=mutant_id(mistake), description=mistake.description,
                       features=PLAIN_CELL if mistake.needs.plain_cell else frozenset(Feature),
                       forward_layer_function=forward_layer, backward_layer_function=backward_layer)


#: The mistakes that are mutants, in the catalogue's order.
MUTANTS: tuple[Mistake, ...] = tuple(mistake for mistake in CATALOGUE if mistake.mutant)
ROWS = tuple(row(mistake) for mistake in MUTANTS)

__all__ = ["MUTANTS", "PLAIN_CELL", "ROWS", "mutant_id", "row"]
