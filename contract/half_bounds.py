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

**Gradients.** A half-type row's gradients (x, h0, c0, W, U, b, p) are judged the same way, against the policy's
backward pass (:func:`spec.precision.backward`: where the gradients accumulate, what is stored in half), with one
difference: a gradient's scale is the case's (a sum over steps and rows, times the cotangents), not 1, so its errors
count as absolute below FLOOR times its largest element (:func:`floor`), not below FLOOR.

**Derivation.** For each case of the default set (the plain cells and the layer's features: directions, stacks,
lengths, masks, projections, clips, coupled gates, through spec/precision_layer.py), each half type and each policy,
the policy is carried out, forward and backward, each of the equally valid ways :class:`spec.precision.Evaluation` knows (three orders of float32 accumulation:
exact then rounded, NumPy's pairwise, blocked in reverse; never the machine's BLAS, so that the table is the same on
every CPU; where the policy rounds every operation, fused or op by op, the bias added after the products, inside the
input product or split between the two (PyTorch's two linears), a multiply-add rounded once (torch's addcmul), and
the orders XLA's scan, flax's cells (a Dense per gate), jax.experimental.rnn's lstm_ref and TensorFlow's kernels
evaluate in (and TF1's LSTMCell's: the forget bias before the peephole, dc_t's shares in the order of c_t's uses), each
measured to reproduce its framework bit for bit, forward and, for JAX's and flax's, backward but for
the bias's half-type sum (findings/jax_broadcast_gradient_reduced_in_half.py); the input product computed before the
recurrence, its gradient one product over all steps), and each statistic's largest value over them is measured. Its bound is that value times :data:`FACTOR`, fixed before any implementation was judged: what the
emulations cannot vary (a vectorised exp or tanh a few float32 ulps off, FMA contraction) can flip a rounding at
some element, and a flipped rounding carries on through the recurrence; doubling the worst element and adding half
to the mean and the fraction leaves room for that, and no more. Each bound has a minimum (:data:`MINIMUM`): on a
one-step case the policy's own error is a single rounding, and a bound below one rounding would fail a correct
kernel whose float32 work rounds a tie the other way; and the fraction beyond one ulp always allows
:data:`BEYOND_ELEMENTS` elements, whatever the tensor's size.

A case with several cells keeps its parameters' gradient bounds per cell (:func:`bound_name`): each cell's gradients
have their own scale and their own error.

**Tightness.** The same run evaluates the mistakes of :data:`MISTAKES` on the same cases; the table records, for
each, the largest ratio of a statistic to its bound, which must exceed 1, and 2 for all but one
(tests/test_half_bounds.py: 2 on the outputs, 1.5 on the gradients), on the outputs and, separately, on the
gradients. Derived 2026-12-07 over the plain cells and the layer's features, outputs (gradients): half accumulation
9.1x (9.1x) in bfloat16 and 9.3x (5.2x) in float16, truncation 10.3x (10.9x) and 12.0x (14.7x), c stored in half
3.0x (2.8x) and 3.0x (2.8x), every operation rounded where the policy rounds at the step's end 7.2x (9.7x) and 7.5x
(6.3x), gates f and g swapped 1677x (5199x) and 12351x (33774x); half accumulation on top of every operation's
rounding 1.17x (1.45x) and 1.38x (1.15x), reached on the plain cells (the layer's cases' products have 3 to 12
terms, over which a half sum hardly differs from a float32 one).

**Where it is used.** The suite's half-type columns (conformance/judge.py, :func:`compare_half`), the diagnosis of a
failing half-type answer (:func:`fits`), the benchmarks' check before timing a half-type pass
(bench/correctness.py), and the golden vectors' half-type results (backends/rows/results.py).

The table is data, not recomputed per run: ``contract/half_bounds.json`` holds every bound with the measured value
it came from, and tests/test_half_bounds.py re-derives it and requires the file to agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from contract.compare import describe_index
from spec import layer
from spec.cases import CaseData, case_set, is_cell, make_case_data, widened
from spec.params import LayerParams, LSTMParams
from spec.precision import (
    HALF_TYPES,
    Accumulation,
    Bias,
    Evaluation,
    Policy,
    Sigmoid,
    defines,
    ulp,
)
from spec.precision_layer import layer_backward, layer_forward
from spec.validation import check_dtype

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
#: The parameters' gradients, by their canonical names: float32 under mixed precision, whose parameters are float32.
PARAMETERS = ("W", "U", "b", "p", "W_hr")
HALF_POLICIES = tuple(p for p in Policy if p is not Policy.TF32)


def evaluations(policy: Policy) -> tuple[Evaluation, ...]:
    """The equally valid ways to carry out ``policy``."""
    # Not the machine's BLAS: its blocking differs between CPUs, and the table must be the same everywhere.
    orders = tuple(Evaluation(accumulation) for accumulation in (Accumulation.EXACT, Accumulation.PAIRWISE,
                                                                  Accumulation.BLOCKED_REVERSE))
    placements = tuple(Evaluation(Accumulation.PAIRWISE, **option) for option in (
        {"fused": True}, {"bias": Bias.INPUT}, {"bias": Bias.SPLIT}, {"multiply_add": True},
        # As XLA evaluates a scan over a precomputed input projection, as flax's cells do, as TensorFlow's block kernel
        # does (each measured bit for bit: README, Precision policies).
        {"sigmoid": Sigmoid.RECIPROCAL, "bias": Bias.INPUT_AFTER}, {"sigmoid": Sigmoid.RECIPROCAL, "bias": Bias.RECURRENT_AFTER},
        {"sigmoid": Sigmoid.QUOTIENT, "joint_product": True},
        # TF1's LSTMCell: TensorFlow's kernel order, the forget bias added before the peephole's share (its forward bit
        # for bit in float16), and dc_t's shares summed in the order of c_t's uses, as TensorFlow's gradients are.
        {"sigmoid": Sigmoid.QUOTIENT, "joint_product": True, "forget_bias_first": True, "consumer_order": True},
        # The sigmoid's and tanh's forms (and their derivatives' orders) alone, and the input product computed for all
        # steps before the recurrence (its gradient one product over all steps: PyTorch's nn.LSTM on ATen's cell).
        {"sigmoid": Sigmoid.RECIPROCAL}, {"sigmoid": Sigmoid.QUOTIENT}, {"input_projection": True},
        # flax's LSTMCell (a Dense per gate) and jax.experimental.rnn's lstm_ref (a product per gate, each bias after
        # its product), in XLA's order (measured: README, Precision policies).
        {"sigmoid": Sigmoid.RECIPROCAL, "bias": Bias.RECURRENT_AFTER, "gate_products": True},
        {"sigmoid": Sigmoid.RECIPROCAL, "bias": Bias.SPLIT_AFTER, "gate_products": True}))
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
    Mistake("every-operation-half-accumulation", "rounds every operation and also accumulates its products in the "
            "half type", Policy.EVERY_OPERATION, Policy.EVERY_OPERATION, Evaluation(Accumulation.HALF)),
)


def cases():
    """The cases a half-type row runs: the default set's, the plain cells and the layer's features, but for those whose
    features the policies do not define (spec.precision.defines)."""
    return [case for case in case_set() if defines(case.layer)]


def cell_cases():
    """The plain cells among them: the cases a cell's function (half_data) runs."""
    return [case for case in cases() if is_cell(case)]


def layer_data(case, half: str) -> CaseData:
    """The case's data in ``half`` (spec.cases.make_case_data: the float32 data rounded once, to nearest even), widened
    to float64 arrays (the layer's: params of every cell, states (L * D, B, .), lengths or mask, cotangents)."""
    return widened(make_case_data(case, half))


def half_data(case, half: str):
    """A plain cell's half data (:func:`layer_data`) as its one cell's: (params, x, h0, c0, forget_bias, cotangents
    (dy, dh_T, dc_T))."""
    d = layer_data(case, half)
    return d.params.cell(0, 0), d.x, d.h0[0], d.c0[0], case.layer.forget_bias, (d.dy, d.dh_T[0], d.dc_T[0])


def bound_name(case, name: str) -> str:
    """The name a tensor's bound is kept under: a parameter gradient ("layer 1 direction 0 W") by its canonical name
    where the case has one cell, else by its cell's (each cell's gradients have their own scale and error)."""
    return canonical(name) if case.L * case.D == 1 else name


def floor(name: str, exact: np.ndarray) -> float:
    """The magnitude below which tensor ``name``'s errors count as absolute: FLOOR for an output (h and c are O(1));
    FLOOR times the tensor's largest |element| for a gradient, whose scale is the cotangents' and the case's (a sum
    over steps and rows), so that its small elements' errors, which the large ones' sums leave, are counted at the
    tensor's scale, not in the ulps of a cancellation."""
    if name in OUTPUTS:
        return FLOOR
    return FLOOR * float(np.max(np.abs(exact), initial=0.0)) or FLOOR


def ulps(got: np.ndarray, exact: np.ndarray, half: str, name: str = "y") -> np.ndarray:
    """Each element's error in ulps of ``half`` at max(|exact|, floor(name, exact))."""
    exact = np.asarray(exact, np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / ulp(np.maximum(np.abs(exact), floor(name, exact)), half)


def statistics(got: np.ndarray, exact: np.ndarray, half: str, name: str = "y") -> dict[str, float]:
    """The error's statistics in ulps of ``half`` at max(|exact|, floor(name, exact))."""
    errors = ulps(got, exact, half, name)
    return {"max": float(errors.max()), "mean": float(errors.mean()), "beyond": float(np.mean(errors > 1.0))}


def with_f_g_swapped(params: LSTMParams) -> LSTMParams:
    order = [0, 2, 1, 3]
    return replace(params, W=params.W[order], U=params.U[order], b=params.b[order])


def cells_with_f_g_swapped(params: LayerParams) -> LayerParams:
    return LayerParams(tuple(with_f_g_swapped(cell) for cell in params.cells), params.num_directions)


def unswapped(gradients: dict) -> dict:
    """The gradients of f/g-swapped parameters laid out as the parameters given: the swap undone."""
    return {name: value[[0, 2, 1, 3]] if canonical(name) in ("W", "U", "b") else value for name, value in gradients.items()}


def minimum(statistic: str, size: int) -> float:
    """The least a bound of ``statistic`` may be, on a tensor of ``size`` elements."""
    return max(MINIMUM[statistic], BEYOND_ELEMENTS / size) if statistic == "beyond" else MINIMUM[statistic]


def judged(size: int) -> tuple[str, ...]:
    """The statistics judged on a tensor of ``size`` elements."""
    return STATISTICS if size >= SAMPLE else ("max",)


def _evaluate(data: CaseData, half: str, policy: Policy, evaluation: Evaluation, *, gradients: bool = True,
              swap_f_g: bool = False) -> dict[str, np.ndarray]:
    """The case's outputs (and gradients) under ``policy`` carried out as ``evaluation``, by the answer's names."""
    params = cells_with_f_g_swapped(data.params) if swap_f_g else data.params
    options = dict(config=data.layer, lengths=data.lengths, mask=data.mask, dtype=half, policy=policy,
                   evaluation=evaluation)
    got = dict(zip(OUTPUTS, layer_forward(params, data.x, data.h0, data.c0, **options)))
    if gradients:
        found = layer_backward(params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options)
        got.update(unswapped(found) if swap_f_g else found)
    return got


@lru_cache(maxsize=128)
def _exact(case, half: str) -> dict[str, np.ndarray]:
    """The exact LSTM's outputs and gradients on the case's half data, by the answer's names."""
    d = layer_data(case, half)
    exact = d.forward()
    return {"y": exact.y, "h_T": exact.h_T, "c_T": exact.c_T, **layer.backward(exact, d.dy, d.dh_T, d.dc_T).tensors()}


def _measure(case, half: str, policy: Policy, evaluation: Evaluation, swap_f_g: bool = False) -> dict[str, dict]:
    """Each tensor's statistics, by its bound's name (:func:`bound_name`)."""
    exact = _exact(case, half)
    got = _evaluate(layer_data(case, half), half, policy, evaluation, swap_f_g=swap_f_g)
    return {bound_name(case, name): statistics(got[name], exact[name], half, canonical(name)) for name in exact}


def _sizes(case) -> dict[str, int]:
    """Each tensor's number of elements, by its bound's name."""
    return {bound_name(case, name): value.size for name, value in _exact(case, "bfloat16").items()}


def derive() -> dict:
    """Every bound, with the measured value it comes from, and every mistake's largest ratio to a bound (over every case:
    each mistake must be caught somewhere, and is caught by the suite wherever it is beyond a bound)."""
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
                for pass_, tensors in (("", OUTPUTS), (" gradients", tuple(t for t in _sizes(case) if t not in OUTPUTS))):
                    worst = mistakes.setdefault(f"{half} {mistake.name}{pass_}", {"ratio": 0.0, "where": ""})
                    for tensor in tensors:
                        limits = bounds[f"{half} {mistake.declared.value} {case.name} {tensor}"]
                        for s in limits:
                            ratio = run[tensor][s] / limits[s]["bound"]
                            if ratio > worst["ratio"]:
                                worst.update(ratio=ratio, where=f"{case.name} {tensor} {s}")
    return {"floor": FLOOR, "factor": FACTOR, "minimum": MINIMUM, "beyond_elements": BEYOND_ELEMENTS, "sample": SAMPLE,
            "bounds": bounds, "mistakes": mistakes}


@dataclass(frozen=True)
class Fit:
    """How close an answer is to one hypothesis: a policy carried out each of its equally valid ways (``mistake``
    empty), or a policy with a half-type mistake; the mean and worst distance in ulps (at the floor) over every output
    tensor, to the nearest of its evaluations."""

    policy: Policy
    mean: float
    worst: float
    mistake: str = ""

    @property
    def name(self) -> str:
        return self.policy.value + (f" {self.mistake}" if self.mistake else "")


#: Half-type mistakes a policy's evaluation can carry, as hypotheses for a diagnosis (each under the declared policy).
MISTAKEN_EVALUATIONS = {
    "with its products accumulated in the half type": Evaluation(Accumulation.HALF),
    "with its products accumulated in the half type, as one product over [x; h]": Evaluation(
        Accumulation.HALF, joint_product=True, sigmoid=Sigmoid.QUOTIENT),
    "rounding toward zero instead of to nearest even": Evaluation(Accumulation.PAIRWISE, truncate=True),
}


def _distance(data: CaseData, answer: dict, half: str, policy: Policy, evaluation: Evaluation,
              gradients: bool) -> tuple[float, float]:
    """The mean (over the tensors) of the mean distance, and the worst, from ``answer`` to the evaluation's."""
    evaluated = _evaluate(data, half, policy, evaluation, gradients=gradients)
    judged = [name for name in answer if (name in OUTPUTS) != gradients and name in evaluated]
    distances = [statistics(np.asarray(answer[name], np.float64), np.asarray(evaluated[name], np.float64), half,
                            canonical(name)) for name in judged]
    return float(np.mean([d["mean"] for d in distances])), float(max(d["max"] for d in distances))


def _fits(data: CaseData, answer: dict, half: str, declared: Policy | None, gradients: bool) -> list[Fit]:
    found = [Fit(policy, *min(_distance(data, answer, half, policy, e, gradients) for e in evaluations(policy)))
             for policy in HALF_POLICIES]
    if declared is not None:
        found += [Fit(declared, *_distance(data, answer, half, declared, evaluation, gradients), mistake)
                  for mistake, evaluation in MISTAKEN_EVALUATIONS.items()]
    return sorted(found, key=lambda fit: (fit.mean, fit.worst))


def fits(data: CaseData, outputs: dict, half: str, *, declared: Policy | None = None) -> list[Fit]:
    """Every half policy's distance to ``outputs`` (y, h_T, c_T by name) computed on this half data (:func:`layer_data`),
    and with ``declared`` the mistaken evaluations of that policy (:data:`MISTAKEN_EVALUATIONS`), nearest first: the
    diagnosis that names what an answer follows ("matches half-every-operation, not the half-storage policy it
    declares")."""
    return _fits(data, outputs, half, declared, gradients=False)


def gradient_fits(data: CaseData, gradients: dict, half: str, *, declared: Policy | None = None) -> list[Fit]:
    """:func:`fits` for gradients, by the answer's names, under the case's cotangents."""
    return _fits(data, gradients, half, declared, gradients=True)


@lru_cache(maxsize=1)
def _committed() -> str:
    return TABLE.read_text()


def load() -> dict:
    """The committed table (a copy of its own)."""
    return json.loads(_committed())


@lru_cache(maxsize=1)
def _bounds() -> dict:
    """The committed bounds, parsed once: every tensor of every half-type result looks its bound up here."""
    return load()["bounds"]


def bound(half: str, policy: Policy, case: str, tensor: str) -> dict[str, float]:
    """The committed bounds of one tensor (by the answer's name, or its canonical name): statistic -> bound (the
    statistics judged on its size)."""
    bounds, prefix = _bounds(), f"{half} {Policy.parse(policy).value} {case}"
    entry = bounds.get(f"{prefix} {tensor}") or bounds.get(f"{prefix} {canonical(tensor)}")
    if entry is None:
        raise KeyError(f"no half-type bound for {half} {policy} {case} {tensor}: re-derive the table "
                       "(python -m contract.half_bounds --write)")
    return {s: limit["bound"] for s, limit in entry.items()}


@lru_cache(maxsize=1)
def bound_cases() -> frozenset[str]:
    """The names of the cases the committed table holds bounds for."""
    return frozenset(key.split()[2] for key in _bounds())  # "<half> <policy> <case> <tensor>"


@dataclass(frozen=True)
class HalfComparison:
    """One output tensor of a half-type answer against the exact LSTM on the same half data, judged by the statistics
    of its error in ulps (:func:`statistics`) against the declared policy's bounds. Reads like a
    :class:`contract.compare.Comparison` (ok, worst_error, worst_ratio, where, message)."""

    name: str
    ok: bool
    half: str
    policy: Policy
    measured: dict  # statistic -> value (ulps, or a fraction for "beyond")
    bounds: dict  # statistic -> its bound (the statistics judged on this tensor's size)
    worst_error: float  # |got - exact| at the element of most ulps
    worst_ratio: float  # the largest statistic over its bound; <= 1 passes
    index: tuple[int, ...] | None
    got: float | None
    expected: float | None
    problem: str = ""
    shape: tuple[int, ...] | None = None
    num_directions: int = 1
    floor: float = FLOOR  # the magnitude its errors are counted in ulps at, at least (floor())

    @property
    def where(self) -> str:
        return describe_index(self.name, self.index, self.shape, self.num_directions) if self.index is not None else ""

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(s for s in STATISTICS if s in self.bounds and not self.measured[s] <= self.bounds[s])

    def message(self, context: str = "") -> str:
        prefix = f"{context}: " if context else ""
        if self.problem:
            return f"{prefix}{self.name}: {self.problem}"
        parts = []
        for s in (s for s in STATISTICS if s in self.bounds):
            value, limit = self.measured[s], self.bounds[s]
            if s == "beyond":
                text = f"{value:.1%} of elements beyond one ulp (bound {limit:.1%})"
            else:
                text = f"{s} error {value:.3g} ulps (bound {limit:.3g})"
            parts.append(text + (f" exceeded {value / limit:.3g}x" if not value <= limit else ""))
        verdict = "within its bounds" if self.ok else f"fails {', '.join(self.failing)}"
        return (f"{prefix}{self.name}: {self.half} under {self.policy.value}: {verdict}: {'; '.join(parts)}; worst element "
                f"{self.measured['max']:.3g} ulps ({self.worst_error:.3g}) at {self.where}: got {self.got:.6g}, "
                f"expected {self.expected:.6g} (ulps of {self.half} at max(|expected|, {self.floor:.3g}))")


def canonical(name: str) -> str:
    """The bound's name of an answer's tensor: a layer's parameter gradient ("layer 0 direction 0 W") by its cell's."""
    return name.rsplit(" ", 1)[-1]


def compare_half(name: str, got: object, exact: np.ndarray, *, half: str, policy: Policy, case: str,
                 num_directions: int = 1) -> HalfComparison:
    """Judge tensor ``name`` of a half-type answer (an output, or a gradient) against ``exact`` (float64, on the same
    half data) by the committed bounds of ``policy`` on ``case``. Under mixed precision the parameters are float32,
    and so may their gradients be."""
    policy = Policy.parse(policy)
    exact = np.asarray(exact, np.float64)
    tensor = canonical(name)
    limits = bound(half, policy, case, name)
    dtypes = {check_dtype(half, storage=True)}
    if policy is Policy.MIXED and tensor in PARAMETERS:
        dtypes.add(np.dtype(np.float32))

    def refused(problem: str) -> HalfComparison:
        return HalfComparison(name, False, half, policy, {}, limits, np.inf, np.inf, None, None, None, problem,
                              exact.shape, num_directions)

    if not isinstance(got, np.ndarray):
        return refused(f"not an array: got {type(got).__name__}")
    if got.shape != exact.shape:
        return refused(f"wrong shape: expected {exact.shape}, got {got.shape}")
    if got.dtype not in dtypes:  # another half type reads the same bits as other values
        return refused(f"wrong dtype: expected {' or '.join(sorted(map(str, dtypes)))}, got {got.dtype}")
    wide = got.astype(np.float64)
    if not np.isfinite(wide).all():
        index = tuple(int(k) for k in np.argwhere(~np.isfinite(wide))[0])
        return HalfComparison(name, False, half, policy, {}, limits, np.inf, np.inf, index, float(wide[index]),
                              float(exact[index]), "", exact.shape, num_directions)
    measured = statistics(wide, exact, half, tensor)
    ratio = max(measured[s] / limit for s, limit in limits.items())
    index = tuple(int(k) for k in np.unravel_index(np.argmax(ulps(wide, exact, half, tensor)), exact.shape))
    return HalfComparison(name, ratio <= 1.0, half, policy, measured, limits, float(abs(wide[index] - exact[index])),
                          float(ratio), index, float(wide[index]), float(exact[index]), "", exact.shape, num_directions,
                          floor(tensor, exact))


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
