"""The named cases, and the one generator that makes their data from a seed.

Each :class:`Case` is a record (sizes, variant, forget bias, seed, weight
scale). :func:`make_case_data` turns it into weights, inputs, initial states
and cotangents. Seeding happens here and nowhere else: every tensor is drawn
from its own stream, keyed by the case's seed and the tensor's name, so adding
a tensor never shifts another.

Weights are random and different for every gate: a gate permutation, a
transposed matrix or a bias on the wrong gate always changes the result
(unlike all-ones or constant weights, under which gates are interchangeable).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from spec import lstm
from spec.params import LSTMParams
from spec.validation import check_dtype


@dataclass(frozen=True)
class Case:
    name: str
    T: int
    B: int
    I: int
    H: int
    peephole: bool
    forget_bias: float = 0.0
    seed: int = 0
    #: Scales the ranges of the input weights W and the biases b: large values drive the
    #: pre-activations into the tails of sigma and tanh. The recurrent and peephole weights
    #: keep their ordinary range: scaled alike, they amplify rounding several-fold at every
    #: step (the spec's own float32 run then drifts 640 eps32 from float64 within 6 steps),
    #: which would test float32's conditioning rather than an implementation.
    weight_scale: float = 1.0
    note: str = ""

    def with_seed(self, seed: int) -> "Case":
        return replace(self, seed=seed)

    @property
    def variant(self) -> str:
        return "peephole" if self.peephole else "standard"


@dataclass(frozen=True, eq=False)
class CaseData:
    case: Case
    params: LSTMParams
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    dh_seq: np.ndarray  # (T, B, H): cotangent of h_t for every step
    dh_T: np.ndarray  # (B, H)
    dc_T: np.ndarray  # (B, H)

    @property
    def forget_bias(self) -> float:
        return self.case.forget_bias

    def inputs(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0}

    def cotangents(self) -> dict[str, np.ndarray]:
        return {"dh_seq": self.dh_seq, "dh_T": self.dh_T, "dc_T": self.dc_T}


def _both(name, T, B, I, H, **kw):
    return (
        Case(name, T, B, I, H, peephole=False, **kw),
        Case(name + "-peephole", T, B, I, H, peephole=True, **kw),
    )


#: The case table. Every size edge the spec must get right, each with and without peepholes.
CASES: tuple[Case, ...] = (
    *_both("small", 4, 3, 5, 4, seed=1, note="the everyday case, small enough for full finite differences"),
    *_both("T1", 1, 3, 4, 5, seed=2, note="a single step: no recurrence"),
    *_both("B1", 6, 1, 3, 4, seed=3, note="a single batch row"),
    *_both("H1", 5, 2, 3, 1, seed=4, note="one unit: every gate is a scalar"),
    *_both("I-ne-H", 4, 3, 7, 2, seed=5, note="input wider than the state"),
    *_both("I1", 5, 2, 1, 6, seed=6, note="scalar input, state wider than the input"),
    *_both("forget-bias", 5, 2, 3, 4, forget_bias=1.0, seed=7, note="TF's forget_bias of 1"),
    *_both("saturating", 6, 3, 4, 5, weight_scale=30.0, seed=8, note="pre-activations far out in the tails of sigma and tanh"),
    *_both("medium", 25, 8, 32, 32, seed=9, note="a realistic shape, directional gradient checks"),
    *_both("long", 512, 2, 4, 8, seed=10, note="a long sequence: errors and gradients over 512 steps"),
)

CASES_BY_NAME = {case.name: case for case in CASES}

#: The named sets a conformance run (and a golden export) takes, each case in both variants:
#: every size edge by default, and the long sequence on request (--large).
DEFAULT_CASES = ("small", "T1", "B1", "H1", "I-ne-H", "I1", "forget-bias", "saturating", "medium")
LARGE_CASES = ("long",)


def case_set(*, large: bool = False) -> list[Case]:
    """The cases of a run: :data:`DEFAULT_CASES` (and :data:`LARGE_CASES`), each standard then peephole."""
    names = DEFAULT_CASES + (LARGE_CASES if large else ())
    return [CASES_BY_NAME[name + suffix] for name in names for suffix in ("", "-peephole")]


def case_by_name(name: str) -> Case:
    try:
        return CASES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no case named {name!r}; the cases are {sorted(CASES_BY_NAME)}") from None


def rng_for(case: Case, tensor: str) -> np.random.Generator:
    """The random stream for one tensor of one case."""
    return np.random.default_rng([case.seed, zlib.crc32(tensor.encode())])


def make_case_data(case: Case, dtype: object = np.float64) -> CaseData:
    """Draw the case's weights, inputs, initial states and cotangents from its seed.

    Values are drawn in float64 and then rounded to ``dtype``, so the float32
    data of a case is the float64 data rounded, and both describe one problem.
    """
    dtype = check_dtype(dtype)
    T, B, I, H, s = case.T, case.B, case.I, case.H, case.weight_scale

    def uniform(tensor, shape, bound):
        return rng_for(case, tensor).uniform(-bound, bound, size=shape)

    def normal(tensor, shape, std=1.0):
        return rng_for(case, tensor).normal(0.0, std, size=shape)

    # PyTorch's initialisation range 1/sqrt(fan_in); W and b scaled (see Case.weight_scale).
    W = uniform("W", (4, H, I), s / np.sqrt(I))
    U = uniform("U", (4, H, H), 1.0 / np.sqrt(H))
    b = uniform("b", (4, H), s * 0.5)
    p = uniform("p", (3, H), 0.5) if case.peephole else None
    tensors = dict(
        x=normal("x", (T, B, I)),
        h0=uniform("h0", (B, H), 0.9),
        c0=normal("c0", (B, H), 1.0),
        dh_seq=normal("dh_seq", (T, B, H)),
        dh_T=normal("dh_T", (B, H)),
        dc_T=normal("dc_T", (B, H)),
    )
    params = LSTMParams(W, U, b, p).astype(dtype)
    return CaseData(case=case, params=params, **{k: v.astype(dtype) for k, v in tensors.items()})


@dataclass(frozen=True, eq=False)
class Reference:
    """What the spec computes for a case: outputs and gradients in float64."""

    outputs: dict[str, np.ndarray]  # h_seq, h_T, c_T
    gradients: dict[str, np.ndarray]  # x, h0, c0, W, U, b (and p)


def widened(data: CaseData) -> CaseData:
    """The same case data in float64 (exact: float32 widens without rounding)."""
    if data.params.dtype == np.float64:
        return data
    wide = {k: v.astype(np.float64) for k, v in {**data.inputs(), **data.cotangents()}.items()}
    return CaseData(case=data.case, params=data.params.astype(np.float64), **wide)


def reference(data: CaseData) -> Reference:
    """The spec in float64 on ``data`` (in whatever dtype it was drawn, widened exactly): what every
    implementation is compared with, what golden vectors carry and what diagnoses start from."""
    wide = widened(data)
    fwd = lstm.forward(wide.params, wide.x, wide.h0, wide.c0, forget_bias=data.forget_bias)
    grads = lstm.backward(fwd, wide.dh_seq, wide.dh_T, wide.dc_T)
    return Reference({"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors())
