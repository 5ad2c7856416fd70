"""Recognising the common mistakes: when a failing result matches the spec under a known mistake, say which.

The hypotheses are the catalogue's mistakes that have a model (conformance/mistakes.py), each asked on the
case's data widened to float64 through the mistaken LSTM (conformance/mistaken.py), where it can change
something (its ``needs``): for outputs its forward mistakes, for gradients every one of them (a forward mistake
with the gradients of its mistaken forward). A misreading of the parameters that rearranges them may report its
gradients in two frames (:data:`AS_USED`, :data:`MAPPED_BACK`): both are tried.

A hypothesis is reported when every tensor it predicts agrees with the implementation's within the tolerance the
test uses, and it differs from the spec on this case: "matches the spec if gates f and g are swapped" (with "in
every cell" for a misreading in a layer of several cells). Apart from the hypotheses, a float64 result whose error
is at float32's level is named as such, and parameter gradients right but for two gates' blocks exchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import combinations

import numpy as np

from conformance import mistaken
from conformance.mistakes import BACKWARD, CATALOGUE, Misread, Mistake
from contract.answers import Gradients
from contract.compare import compare
from contract.half_bounds import (
    bound_cases,
    compare_half,
    fits,
    gradient_fits,
)
from contract.tolerances import tolerance
from contract.vocabulary import Kind
from spec.cases import CaseData, make_case_data, reference, widened
from spec.params import GATES, LayerParams
from spec.precision import Policy
from spec.validation import check_dtype

#: For a float64 request, the precision whose error level is named when a result is at it.
LOWER_PRECISION = {"float64": "float32"}

# A mistake that rearranges the parameters may report its gradients in either of two frames. Loading the weights
# wrongly and then differentiating what it computed gives the gradients of the parameters as it used them;
# differentiating through the wrong loading (autodiff over it, or mapping the gradients back with the same mistake)
# gives those of the parameters it was given. Both are tried, and the diagnosis says which.
AS_USED = "(its gradients are those of the parameters as it used them)"
MAPPED_BACK = "(its gradients are mapped back through the same mistake to the parameters it was given)"


def applies(mistake: Mistake, data: CaseData, kind: Kind) -> bool:
    """Whether ``mistake`` is a hypothesis for this kind of answer on this case: it has a model, it can change
    something on the case, and for outputs it is in the forward pass."""
    return (mistake.model is not None and mistake.needs.met(data.case)
            and not (kind == Kind.OUTPUTS and mistake.pass_ is BACKWARD))


def _description(mistake: Mistake, data: CaseData) -> str:
    every_cell = isinstance(mistake.model, Misread) and len(data.params.cells) > 1
    return mistake.description + (" in every cell" if every_cell else "")


def _predictions(mistake: Mistake, wide: CaseData, kind: Kind) -> Iterator[tuple[str, dict]]:
    """(description, what it predicts) for one mistake: one answer, or for a rearrangement's gradients two frames."""
    run = mistaken.forward(wide.params, wide.x, wide.h0, wide.c0, layer=wide.layer, lengths=wide.lengths, mask=wide.mask,
                           mistakes=(mistake.name,))
    description = _description(mistake, wide)
    if kind == Kind.OUTPUTS:
        yield description, run.outputs().tensors()
        return
    grads = mistaken.backward(run, wide.dy, wide.dh_T, wide.dc_T)
    map_back = mistake.model.map_back if isinstance(mistake.model, Misread) else None
    if map_back is None:
        yield description, grads.tensors()
        return
    yield f"{description} {AS_USED}", grads.tensors()
    if grads.params.peephole == wide.params.peephole:
        mapped = LayerParams(tuple(map_back(cell) for cell in grads.params.cells), grads.params.num_directions)
        yield f"{description} {MAPPED_BACK}", Gradients(grads.x, grads.h0, grads.c0, mapped).tensors()


def hypotheses(data: CaseData, kind: Kind) -> Iterator[tuple[str, dict]]:
    """(description, what it predicts) for every mistake of the catalogue that is a hypothesis here (:func:`applies`),
    in the catalogue's order, computed one by one in float64 on the data widened exactly."""
    wide = widened(data)
    for mistake in CATALOGUE:
        if applies(mistake, wide, kind):
            yield from _predictions(mistake, wide, kind)


def _matches(got: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], dtype: str, kind: Kind,
             half: tuple[Policy, str] | None = None) -> bool:
    """Whether ``got`` agrees with ``predicted`` as the test judges: by the dtype's tolerance, or in a half type by the
    bounds of ``half`` = (policy, case)."""
    if half is not None:
        policy, case = half
        return all(name in got and compare_half(name, np.asarray(got[name]), np.asarray(value, np.float64), half=str(dtype),
                                                policy=policy, case=case).ok for name, value in predicted.items())
    tol = tolerance(dtype, kind)
    return all(name in got and compare(name, got[name], value, atol=tol.atol, rtol=tol.rtol).ok for name, value in predicted.items())


#: How much nearer a half-type answer must be to a mistake's prediction than to the spec, tensor by tensor (in the
#: ratio of its statistics to the policy's bounds), for the mistake to explain it where the bounds alone do not: the
#: bounds are derived for the LSTM the case defines, and a mistaken LSTM (gates swapped) rounds differently enough,
#: through the backward pass, to leave them by a little while being a thousand times nearer than the spec.
NEARER = 10.0


def _nearer(got: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], spec: Mapping[str, np.ndarray],
            dtype: str, half: tuple[Policy, str]) -> bool:
    """Whether a half-type answer is, in every tensor, within the bounds of ``predicted`` or NEARER times nearer to it
    than to the spec."""
    policy, case = half

    def ratio(name, target):
        return compare_half(name, np.asarray(got[name]), np.asarray(target, np.float64), half=str(dtype), policy=policy,
                            case=case).worst_ratio

    return all(name in got and (ratio(name, value) <= 1.0 or NEARER * ratio(name, value) <= ratio(name, spec[name]))
               for name, value in predicted.items())


def _explained(got, hypotheses: Iterable[tuple[str, dict]], spec: Mapping[str, np.ndarray], dtype: str, kind: Kind,
               half: tuple[Policy, str] | None = None) -> list[str]:
    found = []
    for description, predicted in hypotheses:
        # A hypothesis that predicts what the spec does (no |c| above 3 to clip, say) explains nothing; in a half type
        # the spec is exact, so a hypothesis explains when it is far from it by the float64 tolerance.
        near = _nearer(got, predicted, spec, dtype, half) if half else _matches(got, predicted, dtype, kind)
        if near and not _matches(predicted, spec, "float64" if half else dtype, kind):
            found.append(f"matches the spec if {description}")
    return found


#: How near (mean ulps over the output tensors) an answer must be to a hypothesis to be said to follow it: the
#: evaluations of one policy lie further apart than this only where they round differently on purpose (measured:
#: PyTorch's ATen cell in float16 is 0.013 ulps from half-every-operation; the next hypothesis is 0.2 ulps or more away).
FOLLOWS = 0.1


def _policy_fit(data: CaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str,
                kind: Kind, policy: Policy) -> list[str]:
    """What a failing half-type answer follows: another policy (within that policy's bounds, and the nearest), or the
    declared policy with a half-type mistake; else the nearest, with its distance."""
    wide = widened(data)
    answer = {name: np.asarray(value) for name, value in got.items()}
    nearest = (fits if "y" in got else gradient_fits)(wide, answer, str(dtype), declared=policy)[0]
    distance = f"{nearest.mean:.2g} ulps on average, {nearest.worst:.2g} at worst"
    if nearest.mean <= FOLLOWS and nearest.mistake:
        return [f"matches its policy {nearest.name} ({distance} from it)"]
    if (nearest.mean <= FOLLOWS and nearest.policy is not policy
            and _matches(got, expected, dtype, kind, (nearest.policy, data.case.name))):
        return [f"matches {nearest.policy.value} ({distance} from it, within its bounds), not the {policy.value} policy "
                "it declares"]
    return [f"follows none of the precision policies: the nearest is {nearest.name}, {distance} from it"]


def _at_lower_precision(got, spec, dtype: str, kind: Kind) -> list[str]:
    """An error too small for any mistake and too large for ``dtype``'s rounding: a lower precision's. Every tensor
    must be within the lower precision's tolerance: one bug can hide behind small errors elsewhere."""
    lower = LOWER_PRECISION.get(str(dtype))
    if lower is None or not _matches(got, spec, lower, kind) or _matches(got, spec, dtype, kind):
        return []
    return [f"the error is at {lower}'s level: something in this implementation computes in {lower}"]


def _in_bfloat16(data: CaseData, got, dtype: str, kind: Kind) -> list[str]:
    """A float32 answer that is the LSTM computed in bfloat16: within half-storage-float32-accumulation's bounds of the
    exact LSTM on the data rounded to bfloat16 (on the cases the bounds are derived for)."""
    if str(dtype) != "float32" or kind != Kind.OUTPUTS or data.case.name not in bound_cases():
        return []
    rounded = reference(make_case_data(data.case, "bfloat16")).outputs
    as_bfloat16 = {name: np.asarray(value).astype(check_dtype("bfloat16", storage=True)) for name, value in got.items()}
    if not _matches(as_bfloat16, rounded, "bfloat16", kind, (Policy.HALF_STORAGE, data.case.name)):
        return []
    return ["the error is at bfloat16's level (within the half-storage-float32-accumulation bounds of the LSTM on the "
            "data rounded to bfloat16): something computes this float32 LSTM in bfloat16 (oneDNN's "
            "torch.backends.mkldnn.rnn.fp32_precision = 'bf16', an inference precision hint of bf16)"]


def _swapped_gradient_blocks(got, expected, dtype: str) -> list[str]:
    """Parameter gradients right but for two gates' blocks written to each other (one tensor of one cell at a time:
    the others may be wrong in other ways)."""
    found = []
    tol = tolerance(dtype, Kind.GRADIENTS)

    def close(name, value, target):
        return compare(name, value, target, atol=tol.atol, rtol=tol.rtol).ok

    for name, value in expected.items():
        tensor = name.split()[-1]
        if tensor in ("W", "U", "b") and name in got and not close(name, got[name], value):
            for a, b in combinations(range(4), 2):
                order = list(range(4))
                order[a], order[b] = b, a
                if close(name, got[name], value[order]):
                    found.append(f"grad {tensor} matches the spec's with the blocks of gates {GATES[a]} and {GATES[b]} exchanged")
    return sorted(set(found), key=found.index)


def diagnose(data: CaseData, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], dtype: str, kind: Kind,
             policy: Policy | None = None) -> list[str]:
    """The known mistakes under which the spec reproduces the implementation's answer (outputs or gradients); in a half
    type, judged by the declared ``policy``'s bounds, and the policy the answer follows instead."""
    if policy is not None:
        explained = _explained(got, hypotheses(data, kind), expected, dtype, kind, (policy, data.case.name))
        return explained or _policy_fit(data, got, expected, dtype, kind, policy)
    found = _swapped_gradient_blocks(got, expected, dtype) if kind == Kind.GRADIENTS else []
    found += _explained(got, hypotheses(data, kind), expected, dtype, kind)
    return found + _at_lower_precision(got, expected, dtype, kind) + _in_bfloat16(data, got, dtype, kind)


__all__ = ["AS_USED", "LOWER_PRECISION", "MAPPED_BACK", "applies", "diagnose", "hypotheses"]
