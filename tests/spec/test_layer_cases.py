"""The layer case table and its generator: every feature is covered, clips bind with a margin, and the data
can expose mix-ups of gates, layers and directions."""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np
import pytest

from spec.layer_cases import (
    BENCH_LAYER_CASE,
    LAYER_CASES,
    layer_case_by_name,
    make_layer_case_data,
    mask_array,
)
from tests.spec.checks import clip_margin_holds, clip_passed

CLIP_CASES = [c for c in LAYER_CASES if c.config.cell_clip or c.config.gate_clip or c.config.proj_clip]


def test_names_are_unique_and_usable_as_test_ids():
    names = [c.name for c in LAYER_CASES]
    assert len(names) == len(set(names))
    assert all(n.replace("-", "").isalnum() for n in names)


def test_the_table_covers_every_feature_and_combinations():
    configs = [c.config for c in LAYER_CASES]
    assert any(c.direction == "reverse" for c in configs) and any(c.direction == "bidirectional" for c in configs)
    assert any(c.num_layers >= 3 for c in configs)
    assert any(c.proj_size for c in configs) and any(c.proj_clip for c in configs)
    assert any(c.cell_clip for c in configs) and any(c.gate_clip for c in configs)
    assert any(c.coupled_input_forget for c in configs)
    assert any(c.zero_output_for_mask for c in configs) and any(not c.config.zero_output_for_mask for c in LAYER_CASES if c.mask)
    # The combination of the brief: two bidirectional projected layers with lengths and peepholes.
    assert any(c.config.num_layers == 2 and c.config.direction == "bidirectional" and c.config.proj_size
               and c.config.peephole and c.lengths for c in LAYER_CASES)


def test_lengths_include_0_1_and_T_in_one_unsorted_batch():
    case = layer_case_by_name("lengths")
    assert {0, 1, case.T} <= set(case.lengths)
    assert list(case.lengths) != sorted(case.lengths) and list(case.lengths) != sorted(case.lengths, reverse=True)


def test_masks_have_leading_interior_and_trailing_gaps():
    for name in ("mask-zero", "mask-previous"):
        case = layer_case_by_name(name)
        rows = case.mask
        assert any(r.startswith("0") and "1" in r for r in rows), "no leading gap"
        assert any(re.search("10+1", r) for r in rows), "no interior gap"
        assert any(r.endswith("0") and "1" in r for r in rows), "no trailing gap"
        assert any(set(r) == {"0"} for r in rows), "no row masked throughout"


@pytest.mark.parametrize("case", CLIP_CASES, ids=lambda c: c.name)
def test_clips_bind_on_some_elements_and_not_on_others(case):
    fwd = make_layer_case_data(case).forward()
    passed = clip_passed(fwd)
    for kind in {name for _, name in passed}:
        values = np.concatenate([p.ravel() for (_, name), p in passed.items() if name == kind])
        clipped = 1.0 - values.mean()
        assert 0.005 < clipped < 0.6, f"{case.name}: {kind}: {clipped:.1%} of the values clipped"


@pytest.mark.parametrize("case", CLIP_CASES, ids=lambda c: c.name)
def test_clipped_values_keep_away_from_the_threshold(case):
    """No value within 0.1% of its clip's threshold (see clip_margin_holds): finite differences and float32
    rounding never cross a boundary, where the derivative jumps."""
    assert clip_margin_holds(make_layer_case_data(case), relative=1e-3)


def test_unknown_case_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="lstmp-stack"):
        layer_case_by_name("lstmp")


@pytest.mark.parametrize("case", LAYER_CASES + (BENCH_LAYER_CASE,), ids=lambda c: c.name)
def test_data_has_the_case_shapes(case):
    d = make_layer_case_data(case)
    T, B, I, H, P, L, D = case.T, case.B, case.I, case.H, case.P, case.L, case.D
    assert d.x.shape == (T, B, I) and d.dy.shape == (T, B, D * P)
    assert d.h0.shape == d.dh_T.shape == (L * D, B, P) and d.c0.shape == d.dc_T.shape == (L * D, B, H)
    assert d.params.num_layers == L and d.params.num_directions == D and d.params.output_size == P
    assert (d.lengths is None) == (case.lengths is None) and (d.mask is None) == (case.mask is None)


def test_generation_is_deterministic_and_seed_dependent():
    case = layer_case_by_name("lstmp-stack")
    a, b, c = make_layer_case_data(case), make_layer_case_data(case), make_layer_case_data(case.with_seed(case.seed + 1))
    named = lambda d: {**d.inputs(), **d.cotangents(), **d.params.tensors()}
    for name, value in named(a).items():
        assert np.array_equal(value, named(b)[name]), name
        assert not np.array_equal(value, named(c)[name]), name


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.L * c.D > 1], ids=lambda c: c.name)
def test_weights_differ_between_gates_layers_and_directions(case):
    """Otherwise a gate permutation, a swap of directions or of layers could go unnoticed."""
    cells = make_layer_case_data(case).params.cells
    for cell in cells:
        for name, tensor in cell.tensors().items():
            if name == "W_hr":
                continue
            for a, b in combinations(range(tensor.shape[0]), 2):
                assert np.max(np.abs(tensor[a] - tensor[b])) > 0.05 * np.max(np.abs(tensor)), f"{name}: gates {a}, {b}"
    for one, other in combinations(cells, 2):
        for name, tensor in one.tensors().items():
            if tensor.shape == other.tensors()[name].shape:
                assert not np.allclose(tensor, other.tensors()[name], atol=0.05), f"two cells share {name}"


def test_float32_data_is_the_float64_data_rounded():
    case = layer_case_by_name("clips-stack")
    d64, d32 = make_layer_case_data(case), make_layer_case_data(case, np.float32)
    for name, value in {**d64.inputs(), **d64.params.tensors()}.items():
        got = {**d32.inputs(), **d32.params.tensors()}[name]
        assert got.dtype == np.float32 and np.array_equal(got, value.astype(np.float32)), name
    assert np.array_equal(d32.mask, d64.mask)


def test_mask_patterns_are_checked():
    assert mask_array(("01", "10"), 2).tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="2 characters"):
        mask_array(("011",), 2)
