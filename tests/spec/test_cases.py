"""The case table and its generator: the edges are covered, and the data can expose gate mix-ups."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from spec import forward
from bench.matrix import BENCH_CASE
from spec.cases import CASES, case_by_name, make_case_data


def test_names_are_unique_and_usable_as_test_ids():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in names)


def test_the_table_covers_the_edges():
    assert any(c.T == 1 for c in CASES)
    assert any(c.B == 1 for c in CASES)
    assert any(c.H == 1 for c in CASES)
    assert any(c.I != c.H for c in CASES)
    assert any(c.I == 1 for c in CASES)
    assert any(c.T >= 500 for c in CASES)
    assert any(c.forget_bias != 0 for c in CASES)
    assert any(c.weight_scale > 10 for c in CASES)
    # Every case comes in both variants.
    assert {c.name for c in CASES if c.peephole} == {c.name + "-peephole" for c in CASES if not c.peephole}


def test_saturating_case_saturates():
    d = make_case_data(case_by_name("saturating-peephole"))
    fwd = forward(d.params, d.x, d.h0, d.c0)
    sigma_gates = fwd.gates[[0, 1, 3]]
    saturated = np.mean((sigma_gates < 1e-9) | (sigma_gates > 1 - 1e-9))
    assert saturated > 0.25, f"only {saturated:.0%} of sigmoid gates within 1e-9 of 0 or 1"
    assert np.any((sigma_gates == 0) | (sigma_gates == 1)), "no gate saturates to exactly 0 or 1 in float64"


def test_unknown_case_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="small-peephole"):
        case_by_name("smal")


@pytest.mark.parametrize("case", CASES + (BENCH_CASE,), ids=lambda c: c.name)
def test_data_has_the_case_shapes(case):
    d = make_case_data(case)
    T, B, I, H = case.T, case.B, case.I, case.H
    shapes = {k: v.shape for k, v in {**d.inputs(), **d.cotangents(), **d.params.tensors()}.items()}
    expected = {"x": (T, B, I), "h0": (B, H), "c0": (B, H), "dh_seq": (T, B, H), "dh_T": (B, H), "dc_T": (B, H),
                "W": (4, H, I), "U": (4, H, H), "b": (4, H)}
    if case.peephole:
        expected["p"] = (3, H)
    assert shapes == expected


def test_generation_is_deterministic_and_seed_dependent():
    case = case_by_name("small-peephole")
    a, b = make_case_data(case), make_case_data(case)
    c = make_case_data(case.with_seed(case.seed + 1))
    for name in ("x", "h0", "c0", "dh_seq"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    for name in ("W", "U", "b", "p"):
        assert np.array_equal(a.params.tensors()[name], b.params.tensors()[name])
        assert not np.array_equal(a.params.tensors()[name], c.params.tensors()[name])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_weights_differ_between_every_pair_of_gates(case):
    """Otherwise a gate permutation could go unnoticed (the flaw of all-ones test weights)."""
    params = make_case_data(case).params
    for name, tensor in params.tensors().items():
        assert np.unique(tensor).size == tensor.size, f"{name} repeats a value"
        for a, b in combinations(range(tensor.shape[0]), 2):
            assert np.min(np.abs(tensor[a] - tensor[b])) > 0, f"{name}: gates {a} and {b} share a value"
            assert np.max(np.abs(tensor[a] - tensor[b])) > 0.05 * np.max(np.abs(tensor)), f"{name}: gates {a} and {b} nearly equal"


def test_float32_data_is_the_float64_data_rounded():
    case = case_by_name("medium-peephole")
    d64, d32 = make_case_data(case), make_case_data(case, np.float32)
    for name, value in {**d64.inputs(), **d64.params.tensors()}.items():
        got = {**d32.inputs(), **d32.params.tensors()}[name]
        assert got.dtype == np.float32 and np.array_equal(got, value.astype(np.float32)), name


def test_every_named_case_runs_in_a_case_set():
    """A case in the table that no run takes is dead weight that reads as coverage (I1 was one)."""
    from spec.cases import case_set

    taken = {case.name for case in case_set(large=True)}
    assert taken == {case.name for case in CASES}
    assert {"I1", "I1-peephole"} <= {case.name for case in case_set()}
