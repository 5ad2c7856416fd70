"""The layer under a precision policy (spec/precision_layer.py): with the policy's roundings taken away it is the spec's
layer, every feature forward and backward; with them, each tensor holds what a half-type kernel stores; its plumbing
(directions, stacks, masks) rounds nothing."""

from __future__ import annotations

import numpy as np
import pytest

import spec.precision
from spec import layer
from spec.cases import case_by_name, case_set, is_cell, make_case_data, widened
from spec.precision import HALF_TYPES, Accumulation, Evaluation, Policy, backward, defines, forward, round_to
from spec.precision_layer import layer_backward, layer_forward

LAYER_CASES = [case for case in case_set() if not is_cell(case) and defines(case.layer)]
EXACT = Evaluation(Accumulation.EXACT)


def _half(case, half="bfloat16"):
    return widened(make_case_data(case, half))


def _options(data, half, policy, evaluation=EXACT):
    return dict(config=data.layer, lengths=data.lengths, mask=data.mask, dtype=half, policy=policy,
                evaluation=evaluation)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_without_its_roundings_the_layer_under_a_policy_is_the_spec(case, monkeypatch):
    """TF32 rounds only its products' operands; with that rounding taken away and every sum exact, the evaluation is
    the layer in float32 arithmetic, and must be the spec's (float64) to float32's precision, forward and backward:
    every feature's rule (clips, coupled gates, projection, masks, directions, stacks) as spec.lstm and spec.layer
    state it."""
    monkeypatch.setattr(spec.precision, "round_to_tf32", lambda a: np.asarray(a, np.float32))
    data = _half(case)  # bfloat16 values: float32 data
    exact = data.forward()
    want = {"y": exact.y, "h_T": exact.h_T, "c_T": exact.c_T,
            **layer.backward(exact, data.dy, data.dh_T, data.dc_T).tensors()}
    options = _options(data, "float32", Policy.TF32)
    got = dict(zip(("y", "h_T", "c_T"), layer_forward(data.params, data.x, data.h0, data.c0, **options)))
    got.update(layer_backward(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options))
    assert got.keys() == want.keys()
    for name, value in want.items():
        error = np.max(np.abs(got[name] - value)) / max(np.max(np.abs(value)), 1e-30)
        assert error < 2e-6, f"{case.name} {name}: {error:.3g} relative to its largest element"


@pytest.mark.parametrize("half", HALF_TYPES)
@pytest.mark.parametrize("policy", [p for p in Policy if p is not Policy.TF32], ids=lambda p: p.value)
def test_one_cell_through_the_layer_is_the_cell_bit_for_bit(half, policy):
    data = _half(case_by_name("small-peephole"), half)
    cell = data.params.cell(0, 0)
    y, h_T, c_T = layer_forward(data.params, data.x, data.h0, data.c0, **_options(data, half, policy))
    want = forward(cell, data.x, data.h0[0], data.c0[0], dtype=half, policy=policy, evaluation=EXACT)
    for got, expected in zip((y, h_T[0], c_T[0]), want):
        np.testing.assert_array_equal(got, expected)
    grads = layer_backward(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T,
                           **_options(data, half, policy))
    expected = backward(cell, data.x, data.h0[0], data.c0[0], data.dy, data.dh_T[0], data.dc_T[0], dtype=half,
                        policy=policy, evaluation=EXACT)
    for name, value in expected.items():
        got = grads[name][0] if name in ("h0", "c0") else grads.get(f"layer 0 direction 0 {name}", grads.get(name))
        np.testing.assert_array_equal(got, value, err_msg=name)


@pytest.mark.parametrize("half", HALF_TYPES)
@pytest.mark.parametrize("case", ["lstmp-stack", "clips-stack", "coupled-stack", "mask-previous"])
def test_every_tensor_is_what_a_half_kernel_stores(case, half):
    """Outputs, states and gradients are half values, also where two directions' shares of a layer input's cotangent
    meet (rule (9) stores their sum) and where a projection or a clip comes last; under mixed precision too."""
    data = _half(case_by_name(case), half)
    for policy in (Policy.HALF_STORAGE, Policy.EVERY_OPERATION):
        options = _options(data, half, policy, Evaluation(Accumulation.PAIRWISE))
        tensors = dict(zip(("y", "h_T", "c_T"), layer_forward(data.params, data.x, data.h0, data.c0, **options)))
        tensors.update(layer_backward(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options))
        for name, value in tensors.items():
            np.testing.assert_array_equal(round_to(value, half), value, err_msg=f"{case} {policy.value} {name}")


@pytest.mark.parametrize("policy", [Policy.HALF_STORAGE, Policy.EVERY_OPERATION], ids=lambda p: p.value)
def test_a_row_masked_throughout_keeps_its_state_and_passes_its_cotangents_exactly(policy):
    data = _half(case_by_name("mask-zero"))  # batch row 4 is masked at every step
    options = _options(data, "bfloat16", policy)
    y, h_T, c_T = layer_forward(data.params, data.x, data.h0, data.c0, **options)
    assert not data.mask[:, 4].any()
    np.testing.assert_array_equal(y[:, 4], 0.0)
    np.testing.assert_array_equal(h_T[:, 4], data.h0[:, 4])
    np.testing.assert_array_equal(c_T[:, 4], data.c0[:, 4])
    grads = layer_backward(data.params, data.x, data.h0, data.c0, data.dy, data.dh_T, data.dc_T, **options)
    np.testing.assert_array_equal(grads["h0"][:, 4], data.dh_T[:, 4])
    np.testing.assert_array_equal(grads["c0"][:, 4], data.dc_T[:, 4])
    np.testing.assert_array_equal(grads["x"][:, 4], 0.0)


def test_data_that_are_not_half_values_are_refused_by_name():
    data = _half(case_by_name("stacked"))
    x = data.x.copy()
    x[0, 0, 0] += 2.0**-12
    with pytest.raises(ValueError, match="x: the data must be finite bfloat16 values"):
        layer_forward(data.params, x, data.h0, data.c0, **_options(data, "bfloat16", Policy.HALF_STORAGE))
    with pytest.raises(ValueError, match="dy: the data must be finite bfloat16 values"):
        layer_backward(data.params, data.x, data.h0, data.c0, data.dy + 2.0**-12, data.dh_T, data.dc_T,
                       **_options(data, "bfloat16", Policy.HALF_STORAGE))
