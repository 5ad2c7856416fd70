"""Half-precision bounds, derived: how far a bfloat16 or float16 LSTM under a precision policy (spec/precision.py) may
be from the exact LSTM on the same half data, per statistic of its error's distribution.

    python -m contract.half_bounds            re-derive the table and show it beside the committed one, with the
                                              mistakes' margins
    python -m contract.half_bounds --write    re-derive it and write contract/half_bounds.json

**What is judged.** A maximum alone cannot tell the policies apart (bfloat16, T = 100, B = 8, I = H = 32: the worst
output error is 1.9e-3 under float32-cell-state and 2.5e-3 under half-storage, and a float32 computation whose
outputs alone are rounded also errs by 1.9e-3; the fraction of elements beyond one ulp is 0 %, 1 % and 27 % under
float32-cell-state, half-storage and half-every-operation), so each output tensor (y, h_T, c_T) is judged by three statistics of its errors, counted in
ulps of the half type at max(|exact|, :data:`FLOOR`) (the mean and the fraction only on tensors of at least
:data:`SAMPLE` elements):

    max      the worst element
    mean     the mean over the elements
    beyond   the fraction of elements more than one ulp off

Below FLOOR an LSTM's errors are absolute (h and c are sums of O(1) terms), so counting them in the ulps of tiny
values would measure cancellation, not rounding.

**Derivation.** For each case the suite runs as a plain cell, each half type and each policy, the policy is carried
out each of the equally valid ways :class:`spec.precision.Evaluation` knows (three orders of float32 accumulation:
exact then rounded, NumPy's pairwise, blocked in reverse; never the machine's BLAS, so that the table is the same on
every CPU;
where the policy rounds every operation, fused or op by op, and the bias added after the products or inside the input
product or split between the two, as PyTorch's two linears do), and each statistic's largest value over them is
measured. Its bound is that value times :data:`FACTOR`, fixed before any implementation was judged: what the
emulations cannot vary (a vectorised exp or tanh a few float32 ulps off, FMA contraction) can flip a rounding at
some element, and a flipped rounding carries on through the recurrence; doubling the worst element and adding half
to the mean and the fraction leaves room for that, and no more. Each bound has a minimum (:data:`MINIMUM`): on a
one-step case the policy's own error is a single rounding, and a bound below one rounding would fail a correct
kernel whose float32 work rounds a tie the other way; and the fraction beyond one ulp always allows
:data:`BEYOND_ELEMENTS` elements, whatever the tensor's size.

**Tightness.** The same run evaluates the mistakes of :data:`MISTAKES` on the same cases; the table records, for
each, the largest ratio of a statistic to its bound, which must exceed 1 (tests/test_half_bounds.py).

The table is data, not recomputed per run: ``contract/half_bounds.json`` holds every bound with the measured value
it came from, and tests/test_half_bounds.py re-derives it and requires the file to agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spec import lstm
from spec.cases import case_set, is_cell, make_case_data
from spec.params import LSTMParams
from spec.precision import HALF_TYPES, Accumulation, Bias, Evaluation, Policy, forward, round_to, ulp

TABLE = Path(__file__).with_name("half_bounds.json")
FLOOR = 2.0**-4
STATISTICS = ("max", "mean", "beyond")
FACTOR = {"max": 2.0, "mean": 1.5, "beyond": 1.5}
MINIMUM = {"max": 1.0, "mean": 0.25, "beyond": 0.05}
#: Elements beyond one ulp that a bound always allows, whatever the tensor's size: a rounding the other way at one
#: element is within every policy, and on a tensor of 64 elements that is already 1.6 %.
BEYOND_ELEMENTS = 2
#: The fewest elements a tensor needs for its mean and its fraction beyond one ulp to be judged: on fewer (a final
#: state of B = 3, H = 4) one element moves them by a twelfth, so only the worst element is.
SAMPLE = 64
OUTPUTS = ("y", "h_T", "c_T")
HALF_POLICIES = tuple(p for p in Policy if p is not Policy.TF32)


def evaluations(policy: Policy) -> tuple[Evaluation, ...]:
    """The equally valid ways to carry out ``policy``."""
    # Not the machine's BLAS: its blocking differs between CPUs, and the table must be the same everywhere.
    orders = tuple(Evaluation(accumulation) for accumulation in (Accumulation.EXACT, Accumulation.PAIRWISE,
                                                                  Accumulation.BLOCKED_REVERSE))
    placements = tuple(Evaluation(Accumulation.PAIRWISE, **option)
                       for option in ({"fused": True}, {"bias": Bias.INPUT}, {"bias": Bias.SPLIT}))
    return orders + (placements if policy.rounds_every_operation else ())


PAIRWISE = Evaluation(Accumulation.PAIRWISE)


@dataclass(frozen=True)
class Mistake:
    """A half-type mistake: what a row declaring ``declared`` computes instead."""

    name: str
    says: str
    declared: Policy
    computed: Policy
    evaluation: Evaluation = PAIRWISE
    swap_f_g: bool = False


MISTAKES = (
    Mistake("half-accumulation", "accumulates its products in the half type", Policy.HALF_STORAGE, Policy.HALF_STORAGE,
            Evaluation(Accumulation.HALF)),
    Mistake("truncation", "rounds toward zero, not to nearest even", Policy.HALF_STORAGE, Policy.HALF_STORAGE,
            Evaluation(Accumulation.PAIRWISE, truncate=True)),
    Mistake("cell-state-in-half", "stores c in the half type, where its policy keeps it in float32",
            Policy.FLOAT32_CELL_STATE, Policy.HALF_STORAGE),
    Mistake("every-operation-rounded", "rounds after every operation, where its policy rounds at the step's end",
            Policy.HALF_STORAGE, Policy.EVERY_OPERATION),
    Mistake("gates-f-g-swapped", "swaps gates f and g", Policy.HALF_STORAGE, Policy.HALF_STORAGE, swap_f_g=True),
)


def cases():
    """The cases a half-type row runs: the default set's plain cells."""
    return [case for case in case_set() if is_cell(case)]


def half_data(case, half: str):
    """The case's data rounded once to ``half`` (round-to-nearest-even), as float64 arrays: (params, x, h0, c0)."""
    d = make_case_data(case)
    cell = d.params.cell(0, 0)

    def rounded(a):
        return round_to(np.asarray(a, np.float32), half).astype(np.float64)

    params = LSTMParams(rounded(cell.W), rounded(cell.U), rounded(cell.b), None if cell.p is None else rounded(cell.p))
    return params, rounded(d.x), rounded(d.h0[0]), rounded(d.c0[0]), case.layer.forget_bias


def statistics(got: np.ndarray, exact: np.ndarray, half: str) -> dict[str, float]:
    """The error's statistics in ulps of ``half`` at max(|exact|, FLOOR)."""
    errors = np.abs(np.asarray(got, np.float64) - exact) / ulp(np.maximum(np.abs(exact), FLOOR), half)
    return {"max": float(errors.max()), "mean": float(errors.mean()), "beyond": float(np.mean(errors > 1.0))}


def _swapped(params: LSTMParams) -> LSTMParams:
    order = [0, 2, 1, 3]
    return LSTMParams(params.W[order], params.U[order], params.b[order], params.p)


def minimum(statistic: str, size: int) -> float:
    """The least a bound of ``statistic`` may be, on a tensor of ``size`` elements."""
    return max(MINIMUM[statistic], BEYOND_ELEMENTS / size) if statistic == "beyond" else MINIMUM[statistic]


def judged(size: int) -> tuple[str, ...]:
    """The statistics judged on a tensor of ``size`` elements."""
    return STATISTICS if size >= SAMPLE else ("max",)


def _sizes(case) -> dict[str, int]:
    return {"y": case.T * case.B * case.H, "h_T": case.B * case.H, "c_T": case.B * case.H}


def _measure(case, half: str, policy: Policy, evaluation: Evaluation, swap_f_g: bool = False) -> dict[str, dict]:
    params, x, h0, c0, forget_bias = half_data(case, half)
    exact = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
    used = _swapped(params) if swap_f_g else params
    got = forward(used, x, h0, c0, dtype=half, policy=policy, forget_bias=forget_bias, evaluation=evaluation)
    return {name: statistics(g, e, half) for name, g, e in zip(OUTPUTS, got, (exact.h_seq, exact.h_T, exact.c_T))}


def derive() -> dict:
    """Every bound, with the measured value it comes from, and every mistake's largest ratio to a bound."""
    bounds, mistakes = {}, {}
    for half in HALF_TYPES:
        for case in cases():
            for policy in HALF_POLICIES:
                runs = [_measure(case, half, policy, evaluation) for evaluation in evaluations(policy)]
                for tensor, size in _sizes(case).items():
                    measured = {s: max(run[tensor][s] for run in runs) for s in STATISTICS}
                    bounds[f"{half} {policy.value} {case.name} {tensor}"] = {
                        s: {"measured": measured[s], "bound": max(minimum(s, size), FACTOR[s] * measured[s])}
                        for s in judged(size)}
            for mistake in MISTAKES:
                run = _measure(case, half, mistake.computed, mistake.evaluation, mistake.swap_f_g)
                worst = mistakes.setdefault(f"{half} {mistake.name}", {"ratio": 0.0, "where": ""})
                for tensor in OUTPUTS:
                    limits = bounds[f"{half} {mistake.declared.value} {case.name} {tensor}"]
                    for s in limits:
                        ratio = run[tensor][s] / limits[s]["bound"]
                        if ratio > worst["ratio"]:
                            worst.update(ratio=ratio, where=f"{case.name} {tensor} {s}")
    return {"floor": FLOOR, "factor": FACTOR, "minimum": MINIMUM, "beyond_elements": BEYOND_ELEMENTS, "sample": SAMPLE,
            "bounds": bounds, "mistakes": mistakes}


@dataclass(frozen=True)
class Fit:
    """How close an answer is to one policy's evaluation: the mean and worst distance in ulps (at the floor), over
    every output tensor, to the nearest of the policy's equally valid evaluations."""

    policy: Policy
    mean: float
    worst: float


def fits(params: LSTMParams, x, h0, c0, outputs, half: str, *, forget_bias: float = 0.0) -> list[Fit]:
    """Every half policy's distance to ``outputs`` (y, h_T, c_T) computed on this half data, nearest first: the
    diagnosis that names the policy an answer follows ("matches half-every-operation, not the half-storage policy it
    declares")."""
    found = []
    for policy in HALF_POLICIES:
        best = None
        for evaluation in evaluations(policy):
            evaluated = forward(params, x, h0, c0, dtype=half, policy=policy, forget_bias=forget_bias,
                                evaluation=evaluation)
            distances = [statistics(got, np.asarray(want, np.float64), half) for got, want in zip(outputs, evaluated)]
            mean = float(np.mean([d["mean"] for d in distances]))
            worst = float(max(d["max"] for d in distances))
            if best is None or mean < best.mean:
                best = Fit(policy, mean, worst)
        found.append(best)
    return sorted(found, key=lambda fit: (fit.mean, fit.worst))


def load() -> dict:
    """The committed table."""
    return json.loads(TABLE.read_text())


def bound(half: str, policy: Policy, case: str, tensor: str) -> dict[str, float]:
    """The committed bounds of one output tensor: statistic -> bound (the statistics judged on its size)."""
    entry = load()["bounds"].get(f"{half} {Policy.parse(policy).value} {case} {tensor}")
    if entry is None:
        raise KeyError(f"no half-type bound for {half} {policy} {case} {tensor}: re-derive the table "
                       "(python -m contract.half_bounds --write)")
    return {s: limit["bound"] for s, limit in entry.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contract.half_bounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write the derived table to {TABLE.name}")
    args = parser.parse_args(argv)
    table = derive()
    for name, worst in sorted(table["mistakes"].items()):
        print(f"{name:40} caught: {worst['ratio']:6.1f}x its bound at most ({worst['where']})")
    if args.write:
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")
    elif TABLE.exists():
        print("the committed table " + ("agrees" if load() == json.loads(json.dumps(table)) else "DIFFERS: --write it"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
