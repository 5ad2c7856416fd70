"""The benchmark's guard against timing a wrong answer: every timed configuration's result is compared
with the spec (float64, on the same float32 data) before its time is kept.

This is not the conformance check (``pytest conformance/`` judges outputs and gradients element by
element against tables of tolerances); it catches what a benchmark can get wrong on its own: a pass
that reads a stale or unwritten buffer because the device was not synchronised, a half-precision
path that silently computes something else, TF32 switched on behind the benchmark's back. The
measure is the relative error in the 2-norm, ``||got - spec|| / ||spec||``, over y (every step's output)
(forward) or the gradients with respect to x, h0 and c0 (forward+backward).

The spec's answer is computed once per benchmark data (:func:`spec.cases.reference`: outputs and gradients in
float64) and serves every row and pass timed on that data.

A quantized row (``Row.quantization``: int8 weights, activations quantized as it runs) is off the spec by its
quantization error (1e-3 to 1e-2 relative), far over the float32 bound, and a wrong answer can hide inside that error:
its timed y is checked instead against the integer reference of its scheme (spec/quantized.py), on the integers,
scales and zero points its own model holds, with the conformance tolerance (contract.tolerances.quantized_tolerance:
the float32 tolerance plus half a dequantization step), as conformance/judge.py judges it (:func:`check_quantized`).
Its distance from the spec, the quantization error, is measured beside and reported, never bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from contract.errors import NotSupported
from contract.half_bounds import compare_half
from contract.quantization import against_integer_reference, integer_reference
from contract.row import Row
from contract.tolerances import quantized_tolerance
from contract.vocabulary import Dtype
from spec.cases import CaseData, Reference, case_by_name, make_case_data
from spec.cases import reference as spec_reference
from spec.layer import LayerConfig

#: The largest relative error a timed result may have, per dtype the pass ran in, and why.
BOUNDS: dict[Dtype, tuple[float, str]] = {
    Dtype.FLOAT64: (1e-10, "float64 rounding (unit roundoff 1.1e-16) grown over T steps stays below 1e-12"),
    Dtype.FLOAT32: (
        1e-4,
        (
            "float32 rounding gives ~1e-7; TF32 (10-bit products) would give ~1e-3, so this also catches "
            "TF32 left on"
        ),
    ),
    Dtype.FLOAT16: (
        2e-2,
        (
            "unit roundoff 4.9e-4; the inputs, weights and every step's h and c are rounded, so ~1e-3 is "
            "expected; a wrong computation (a gate swap, a stale buffer) is off by 0.1 to 1"
        ),
    ),
    Dtype.BFLOAT16: (
        8e-2,
        (
            "unit roundoff 3.9e-3 (8-bit significand), rounded as float16 is: ~1e-2 expected; a wrong "
            "computation is off by 0.1 to 1"
        ),
    ),
}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """||got - expected||_2 / ||expected||_2 in float64; NaN or infinity anywhere gives infinity."""
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"result shape {got.shape} differs from the spec's {expected.shape}")
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


@lru_cache(maxsize=4)
def spec_answer(data: CaseData) -> Reference:
    """The spec in float64 on ``data`` (widened exactly), outputs and gradients: computed once per data (the benchmark
    runs every row, pass and dtype of one data in a row)."""
    return spec_reference(data)


def reference(data: CaseData, gradients: bool) -> dict[str, np.ndarray]:
    """What a timed pass must have computed: y (forward) or the gradients of x, h0 and c0 (forward+backward)."""
    answer = spec_answer(data)
    if not gradients:
        return {"y": answer.outputs["y"]}
    return {k: answer.gradients[k] for k in ("x", "h0", "c0")}


@lru_cache(maxsize=4)
def padded(data: CaseData) -> CaseData:
    """The same data without its lengths: what a padded run computes (every row all T steps)."""
    return replace(data, case=replace(data.case, lengths=None), lengths=None)


def check(result: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype) -> float:
    """The worst relative error over the result's tensors; AssertionError (naming the tensor, the
    error and the bound) if it is over the dtype's bound."""
    if set(result) != set(expected):
        raise AssertionError(f"the timed pass returned {sorted(result)}, expected {sorted(expected)}")
    dtype = Dtype.parse(dtype, "dtype")
    bound, reason = BOUNDS[dtype]
    errors = {name: relative_error(result[name], expected[name]) for name in expected}
    name, worst = max(errors.items(), key=lambda item: item[1])
    if not worst <= bound:
        raise AssertionError(
            f"the timed {dtype} pass computed a wrong answer: {name} is {worst:.3g} from the spec "
            f"(relative, 2-norm), over the bound {bound:g} ({reason}); its time is not kept"
        )
    return worst


def max_abs_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| in float64 (infinity where got is not finite): a forward pass's absolute distance."""
    got = np.asarray(got, np.float64)
    return float(np.abs(got - np.asarray(expected, np.float64)).max()) if np.all(np.isfinite(got)) else float("inf")


@dataclass(frozen=True)
class QuantizedCheck:
    """A quantized row's timed y against the integer reference of its scheme, and against the spec."""

    step: float  # the reference's median dequantization step s_a s_W: the verdict's unit
    worst_steps: float  # max |y - integer reference| / step
    worst_ratio: float  # the worst error over its tolerance (<= 1: it passed)
    forced: int  # steps at which the reference took the row's own h (float32 noise on a rounding boundary)
    quantization_error: float  # max |y - spec|: what the scheme costs on this data (reported, not bounded)
    #: Where the reference could not decide (the check did not pass, but only where activations below the top layer
    #: within float32 noise of a rounding boundary, whose rounding the row's outputs do not show, can reach): how many
    #: such activations; 0 otherwise.
    unverified: int = 0


def check_quantized(row: Row, result: dict[str, np.ndarray], data: CaseData, *, layer: LayerConfig, lengths=None,
                    mask=None, device: str = "cpu") -> QuantizedCheck:
    """A quantized row's timed forward result (y) against its integer reference (module docstring), and its distance
    from the spec; AssertionError (the comparison's message) when it is outside the tolerance. A deep stack at the
    benchmarks' sizes puts some activation of a lower layer within float32 noise of a rounding boundary (where the
    row's own rounding is not observable: only the top layer's outputs are): a result outside the tolerance only where
    such a rounding can reach (a forward direction's steps from the first of them on, a reverse direction's up to the
    last) is kept, marked unverified with their count (the conformance suite judges the same row strictly on its
    cases); one that disagrees anywhere else, or by more than the quantization error itself, is refused."""
    if set(result) != {"y"}:
        raise AssertionError(f"the timed pass of quantized {row.id} returned {sorted(result)}, expected ['y']")
    got = np.asarray(result["y"], np.float64)
    run = integer_reference(row, data.params, data.x, data.h0, data.c0, layer=layer, lengths=lengths, mask=mask,
                            device=device, observed_y=got)
    (compared,) = against_integer_reference({"y": got}, run, layer.num_directions)
    quantization_error = max_abs_error(got, spec_answer(data).outputs["y"])
    unverified = 0
    if not compared.ok:
        tol = quantized_tolerance(run.step)
        exceeded = np.abs(got - run.y) > tol.atol + tol.rtol * np.abs(run.y)
        # What unobservable roundings can explain: disagreements only where they reach, and no larger than the
        # quantization error itself (the reference's own distance from the spec).
        explained = (run.explained(exceeded, layer.num_directions, reverse_only=layer.direction == "reverse")
                     and compared.worst_error <= max_abs_error(run.y, spec_answer(data).outputs["y"]))
        if not explained:
            raise AssertionError(
                f"the timed pass of quantized {row.id} computed a wrong answer: against the integer reference of "
                f"{row.quantization.name} (dequantization step {run.step:.3g}): {compared.message()}"
                + (f" ({run.ambiguous} activations below the top layer within float32 noise of a rounding boundary "
                   "cannot explain it)" if run.ambiguous else "") + "; its time is not kept")
        unverified = run.ambiguous
    return QuantizedCheck(run.step, max_abs_error(got, run.y) / run.step, compared.worst_ratio, len(run.forced),
                          quantization_error, unverified)


#: The case a half-type row is judged on before any of its half-type passes is timed: the largest plain cell whose
#: bounds are derived (T = 25, B = 8, I = H = 32), every statistic judged.
HALF_CASE = "medium"


@lru_cache(maxsize=None)
def half_conformance(row: Row, dtype: str, device: str) -> str | None:
    """Why ``row``'s ``dtype`` passes may not be timed (its outputs on :data:`HALF_CASE` outside the bounds of the
    precision policy it declares there, with the failing statistics and the diagnosis's nearest policy), or None: the
    conformance check a half-type benchmark runs first. The relative bounds of :data:`BOUNDS` stay as the guard of
    every timed result (a stale buffer, an unsynchronised device), which no policy bound covers at the benchmarks'
    shapes."""
    policy = row.policy(dtype, device)
    if policy is None:
        return None  # timed, not judged, in this half type (half_timing): the guard alone
    data = make_case_data(case_by_name(HALF_CASE), dtype)
    try:
        got = row.forward(data.params, data.x, data.h0, data.c0, layer=data.layer, device=device).tensors()
    except NotSupported:
        return None
    exact = spec_reference(data).outputs
    failing = [compare_half(name, got[name], exact[name], half=str(dtype), policy=policy, case=HALF_CASE)
               for name in exact]
    failing = [c for c in failing if not c.ok]
    if not failing:
        return None
    return (f"its {dtype} outputs on the case {HALF_CASE} are outside the bounds of the policy it declares: "
            + "; ".join(c.message() for c in failing))


__all__ = ["BOUNDS", "HALF_CASE", "QuantizedCheck", "check", "check_quantized", "half_conformance", "max_abs_error",
           "padded", "reference", "relative_error", "spec_answer"]
