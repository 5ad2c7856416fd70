"""The precision policies (spec/precision.py): the rounding they are built on, their storage points on one step where
the error can be bounded by hand, their order on a long sequence, and the errors for data they cannot hold."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from spec import lstm
from spec.cases import Case, make_case_data
from spec.layer import LayerConfig
from spec.params import LSTMParams
from spec.precision import (
    HALF_TYPES,
    Accumulation,
    Evaluation,
    Policy,
    backward,
    forward,
    round_to,
    round_to_tf32,
    ulp,
)

HALF_POLICIES = [p for p in Policy if p is not Policy.TF32]


def _exact_round(value: float, bits: int, truncate: bool = False, emin: int = -126) -> float:
    """``value`` to ``bits`` mantissa bits (after the leading one), to nearest even or toward zero, by exact rationals;
    below 2**emin (subnormal numbers) the spacing stays that of 2**emin."""
    if value == 0:
        return 0.0
    q = Fraction(value)
    sign, q = (-1 if q < 0 else 1), abs(q)
    exponent = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** exponent > q:
        exponent -= 1
    step = Fraction(2) ** (max(exponent, emin) - bits)
    units = q / step
    whole = units.numerator // units.denominator
    rest = units - whole
    if not truncate and (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1)):
        whole += 1
    return float(sign * whole * step)


@pytest.mark.parametrize("half, bits, emin", [("bfloat16", 7, -126), ("float16", 10, -14)])
@pytest.mark.parametrize("truncate", [False, True], ids=["nearest-even", "toward-zero"])
def test_rounding_to_a_half_type_is_exact_rational_rounding(half, bits, emin, truncate):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.standard_normal(2000) * 4, rng.standard_normal(50) * 2.0**emin, 1 + np.arange(1, 9) * 2.0**-(bits + 1), [-(1 + 2.0**-(bits + 1))]])
    values = values.astype(np.float32)
    got = round_to(values, half, truncate=truncate)
    expected = np.array([_exact_round(float(v), bits, truncate, emin) for v in values], np.float32)
    np.testing.assert_array_equal(got, expected)


def test_ties_go_to_the_even_neighbour():
    # 1 + 2^-8 lies halfway between bfloat16's 1 and 1 + 2^-7: the even one is 1; 1 + 3 * 2^-8 goes up to 1 + 2^-6.
    np.testing.assert_array_equal(round_to(np.float32([1 + 2**-8, 1 + 3 * 2**-8]), "bfloat16"), [1.0, 1 + 2**-6])


def test_tf32_rounding_keeps_ten_mantissa_bits_to_nearest_even():
    rng = np.random.default_rng(6)
    values = np.concatenate([rng.standard_normal(2000), [1 + 2**-11, 1 + 3 * 2**-11, -(1 + 3 * 2**-11)]]).astype(np.float32)
    expected = np.array([_exact_round(float(v), 10) for v in values], np.float32)
    np.testing.assert_array_equal(round_to_tf32(values), expected)


@pytest.mark.parametrize("half, one_ulp, tiny", [("bfloat16", 2.0**-7, 2.0**-126 * 2.0**-7), ("float16", 2.0**-10, 2.0**-24)])
def test_an_ulp_is_the_spacing_at_the_reference_and_never_below_the_smallest_normals(half, one_ulp, tiny):
    np.testing.assert_array_equal(ulp(np.array([1.0, 1.99, -1.5, 0.75]), half), [one_ulp, one_ulp, one_ulp, one_ulp / 2])
    assert ulp(np.array([0.0]), half)[0] == tiny


def _half_data(case: Case, half: str):
    d = make_case_data(case)
    cell = d.params.cell(0, 0)

    def rounded(a):
        return round_to(np.asarray(a, np.float32), half).astype(np.float64)

    params = LSTMParams(rounded(cell.W), rounded(cell.U), rounded(cell.b), None if cell.p is None else rounded(cell.p))
    return params, rounded(d.x), rounded(d.h0[0]), rounded(d.c0[0])


ONE_STEP = Case("one-step", 1, 16, 24, 24, LayerConfig(peephole=True), cell_streams=True, seed=31)
LONG = Case("long-half", 100, 8, 32, 32, LayerConfig(peephole=True), cell_streams=True, seed=7)


@pytest.mark.parametrize("half", HALF_TYPES)
@pytest.mark.parametrize("policy", [Policy.HALF_STORAGE, Policy.FLOAT32_CELL_STATE])
def test_one_step_under_half_storage_is_the_exact_step_rounded_once(half, policy):
    """With half inputs and one step, these policies compute h_1 in float32 and round it once: within half an ulp
    of the exact value, plus float32's own error (far below a half ulp)."""
    params, x, h0, c0 = _half_data(ONE_STEP, half)
    exact = lstm.forward(params, x, h0, c0)
    y, h_T, c_T = forward(params, x, h0, c0, dtype=half, policy=policy)
    for name, got, want in (("y", y, exact.h_seq), ("c_T", c_T, exact.c_T)):
        # Half an ulp, plus float32's own absolute error in computing the step (about 1e-7; 1e-6 allowed), which
        # matters only for values near zero, where a half type's ulp is that small too.
        beyond = np.abs(got - want) - 0.5 * ulp(want, half)
        assert beyond.max() <= 1e-6, (name, beyond.max())
        assert np.array_equal(round_to(got, half), got), f"{name} is not stored in {half}"


@pytest.mark.parametrize("half", HALF_TYPES)
def test_every_operation_rounds_more_than_once_per_step(half):
    params, x, h0, c0 = _half_data(ONE_STEP, half)
    exact = lstm.forward(params, x, h0, c0).h_seq
    once = forward(params, x, h0, c0, dtype=half, policy=Policy.HALF_STORAGE)[0]
    every = forward(params, x, h0, c0, dtype=half, policy=Policy.EVERY_OPERATION)[0]
    assert np.abs(every - exact).mean() > 1.5 * np.abs(once - exact).mean()
    # MIXED's forward on data that are half values is EVERY_OPERATION's (the parameters' cast is exact).
    np.testing.assert_array_equal(forward(params, x, h0, c0, dtype=half, policy=Policy.MIXED)[0], every)


def test_tf32_products_are_float32_storage_with_ten_bit_operands():
    d = make_case_data(ONE_STEP)
    cell = d.params.cell(0, 0)
    params = LSTMParams(*(a.astype(np.float32) for a in (cell.W, cell.U, cell.b, cell.p)))
    x, h0, c0 = d.x.astype(np.float32), d.h0[0].astype(np.float32), d.c0[0].astype(np.float32)
    exact = lstm.forward(LSTMParams(*(a.astype(np.float64) for a in (params.W, params.U, params.b, params.p))),
                         x.astype(np.float64), h0.astype(np.float64), c0.astype(np.float64)).h_seq
    y = forward(params, x, h0, c0, dtype="float32", policy=Policy.TF32)[0]
    relative = np.abs(y - exact).max() / np.abs(exact).max()
    assert 2**-20 < relative < 2**-8, relative  # far above float32's rounding, within TF32's
    # Operands that already fit in 10 bits lose nothing: the result is float32's.
    narrow = LSTMParams(*(round_to_tf32(a) for a in (params.W, params.U, params.b, params.p)))
    x10, h10, c10 = round_to_tf32(x), round_to_tf32(h0), round_to_tf32(c0)
    np.testing.assert_array_equal(forward(narrow, x10, h10, c10, dtype="float32", policy=Policy.TF32)[0],
                                  forward(narrow, x10, h10, c10, dtype="float32", policy=Policy.TF32,
                                          evaluation=Evaluation(Accumulation.BLAS))[0])


def _mean_ulps(half, policy, evaluation=Evaluation()):
    params, x, h0, c0 = _half_data(LONG, half)
    exact = lstm.forward(params, x, h0, c0).h_seq
    y = forward(params, x, h0, c0, dtype=half, policy=policy, evaluation=evaluation)[0]
    scale = np.maximum(np.abs(exact), 2.0**-4)  # an absolute floor: h is O(1) and its error absolute near 0
    return float((np.abs(y - exact) / ulp(scale, half)).mean())


@pytest.mark.parametrize("half", HALF_TYPES)
def test_over_a_long_sequence_the_policies_and_the_mistakes_are_ordered_by_their_roundings(half):
    """The mean error (in half ulps) over T = 100 steps: c in float32 < half storage < rounding every operation
    < accumulating the products in the half type; truncating instead of rounding to nearest is worse than the
    policy it breaks; the equally valid evaluations of a policy stay together."""
    c32 = _mean_ulps(half, Policy.FLOAT32_CELL_STATE)
    storage = _mean_ulps(half, Policy.HALF_STORAGE)
    every = _mean_ulps(half, Policy.EVERY_OPERATION)
    assert c32 < storage < every < _mean_ulps(half, Policy.HALF_STORAGE, Evaluation(Accumulation.HALF))
    assert _mean_ulps(half, Policy.HALF_STORAGE, Evaluation(truncate=True)) > 1.5 * storage
    for accumulation in (Accumulation.EXACT, Accumulation.BLOCKED_REVERSE):
        assert _mean_ulps(half, Policy.HALF_STORAGE, Evaluation(accumulation)) == pytest.approx(storage, rel=0.1)
    assert _mean_ulps(half, Policy.EVERY_OPERATION, Evaluation(fused=True)) == pytest.approx(every, rel=0.5)


@pytest.mark.parametrize("policy, dtype, message", [
    ("half-storage", "bfloat16", "unknown precision policy 'half-storage'; the policies are half-storage-float32-accumulation"),
    ("tf32-products", "bfloat16", "'tf32-products' holds float32 data, not 'bfloat16'"),
    ("half-every-operation", "float32", "'half-every-operation' holds bfloat16 or float16 data, not 'float32'"),
])
def test_an_unknown_policy_or_one_that_contradicts_the_dtype_is_refused(policy, dtype, message):
    params, x, h0, c0 = _half_data(ONE_STEP, "bfloat16")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        forward(params, x, h0, c0, dtype=dtype, policy=policy)


def test_data_the_half_type_cannot_hold_is_refused_naming_the_tensor():
    params, x, h0, c0 = _half_data(ONE_STEP, "float16")
    with pytest.raises(ValueError, match=r"x: the data must be finite float16 values .* 1 elements are not"):
        forward(params, np.where(np.arange(x.size).reshape(x.shape) == 0, 1e5, x), h0, c0, dtype="float16",
                policy=Policy.HALF_STORAGE)  # 1e5 overflows float16 (largest 65504)
    with pytest.raises(ValueError, match="W: the data must be finite bfloat16 values"):
        unrounded = LSTMParams(params.W + 1e-3, params.U, params.b, params.p)
        forward(unrounded, x, h0, c0, dtype="bfloat16", policy=Policy.HALF_STORAGE)


@pytest.mark.parametrize("half", HALF_TYPES)
def test_half_accumulation_rounds_every_product_and_every_partial_sum(half):
    """1 followed by 1024 terms of 2**-12 (products of 1 and 2**-12, exact in every type): float32 accumulation keeps
    them (1.25), half arithmetic loses each one to the tie-to-even at 1 (1.0): the mistake of TensorFlow's float16
    block kernel on CPU (findings/tensorflow_blocklstm_float16_accumulates_in_half.py)."""
    from spec.precision import _product

    v = np.concatenate([[1.0], np.full(1024, 2.0**-12)]).astype(np.float32)[None]
    A = np.ones((1, v.shape[1]), np.float32)
    assert _product(A, v, Accumulation.PAIRWISE, half)[0, 0] == 1.25
    assert _product(A, v, Accumulation.HALF, half)[0, 0] == 1.0


@pytest.mark.parametrize("form", ["rounded-once", "reciprocal", "quotient"])
def test_the_sigmoid_forms_are_the_operations_they_name_each_rounded(form):
    """One step with W = U = 0, x = h0 = c0 = 0 and tanh(b_g) = 1 leaves c_T = i = sigma(b_i) under every operation
    rounded: sigma rounded once, XLA's r(1 / r(1 + r(exp(-z)))) or Eigen's r(r(exp(z)) / r(1 + r(exp(z)))), and
    where exp(z) overflows float16 the quotient's limit, 1, as Eigen gives."""
    z = np.append(np.linspace(-6, 6, 63).astype(np.float16), 12.0).astype(np.float64)  # float16 values
    H = z.size
    b = np.zeros((4, H))
    b[0], b[2] = z, 10.0  # gates i, f, g, o: tanh(10) is 1 in float32
    params = LSTMParams(np.zeros((4, H, 1)), np.zeros((4, H, H)), b)
    zeros = np.zeros((1, H))
    _, _, c_T = forward(params, np.zeros((1, 1, 1)), zeros, zeros, dtype="float16", policy=Policy.EVERY_OPERATION,
                        evaluation=Evaluation(Accumulation.PAIRWISE, sigmoid=form))
    r = lambda a: round_to(np.asarray(a, np.float32), "float16")  # noqa: E731
    exp = lambda a: np.exp(np.asarray(a, np.float64)).astype(np.float32)  # noqa: E731
    with np.errstate(over="ignore", invalid="ignore"):
        expected = {"rounded-once": r(1 / (1 + np.exp(-z))),
                    "reciprocal": r(np.float32(1) / r(1 + r(exp(-z)))),
                    "quotient": np.where(np.isinf(r(exp(z))), np.float32(1), r(r(exp(z)) / r(1 + r(exp(z)))))}[form]
    np.testing.assert_array_equal(c_T[0], expected)
    assert np.isfinite(c_T).all() and c_T[0, -1] == 1.0
    if form != "rounded-once":  # the forms are not the correctly rounded sigmoid: the test tells them apart
        assert (c_T[0] != r(1 / (1 + np.exp(-z)))).any()


@pytest.mark.parametrize("option", [{"multiply_add": True}, {"joint_product": True}, {"sigmoid": "reciprocal"},
                                    {"sigmoid": "quotient"}, {"bias": "split-after"}],
                         ids=str)
def test_each_evaluation_option_changes_some_rounding_and_stays_near_the_standard_one(option):
    """Every option of Evaluation is an equally valid way to carry out half-every-operation: it changes the result at
    some element of a 25-step case, by roundings, not by anything larger (under 0.05 on outputs of order 1)."""
    d = make_case_data(Case("unit", 25, 8, 16, 16, LayerConfig(peephole=True), seed=5), "bfloat16")
    cell = d.params.cell(0, 0)
    args = (cell, d.x, d.h0[0], d.c0[0])
    standard = forward(*args, dtype="bfloat16", policy=Policy.EVERY_OPERATION, evaluation=Evaluation(Accumulation.PAIRWISE))
    varied = forward(*args, dtype="bfloat16", policy=Policy.EVERY_OPERATION,
                     evaluation=Evaluation(Accumulation.PAIRWISE, **option))
    differences = [np.abs(a.astype(np.float64) - b) for a, b in zip(varied, standard)]
    assert any(diff.max() > 0 for diff in differences), option
    assert max(diff.max() for diff in differences) < 0.05, option


# ---------------------------------------------------------------------------
# The backward pass under a policy
# ---------------------------------------------------------------------------


def _cotangents(case: Case, half: str | None):
    d = make_case_data(case) if half is None else make_case_data(case, half)
    return tuple(np.asarray(a, np.float64) for a in (d.dy, d.dh_T[0], d.dc_T[0]))


def _exact_gradients(params, x, h0, c0, cotangents):
    return lstm.backward(lstm.forward(params, x, h0, c0), *cotangents).tensors()


def test_tf32_backward_is_the_spec_backward_with_ten_bit_product_operands():
    """TF32's backward is the spec's rules in float32 with every product's operands rounded to 10 bits: each gradient
    within TF32's rounding of the float64 spec (a wrong rule, a gate's derivative in the wrong place or a missing
    share would be off by the gradient's own size), and those that pass through a product (x, h0, W, U) far above
    float32's rounding."""
    d = make_case_data(ONE_STEP)
    cell = d.params.cell(0, 0)
    params = LSTMParams(*(a.astype(np.float32).astype(np.float64) for a in (cell.W, cell.U, cell.b, cell.p)))
    x, h0, c0 = (a.astype(np.float32).astype(np.float64) for a in (d.x, d.h0[0], d.c0[0]))
    cotangents = tuple(a.astype(np.float32).astype(np.float64) for a in _cotangents(ONE_STEP, None))
    got = backward(params, x, h0, c0, *cotangents, dtype="float32", policy=Policy.TF32)
    exact = _exact_gradients(params, x, h0, c0, cotangents)
    assert got.keys() == exact.keys()
    relative = {name: np.abs(got[name] - exact[name]).max() / np.abs(exact[name]).max() for name in exact}
    assert all(error < 2**-8 for error in relative.values()), relative
    assert all(relative[name] > 2**-20 for name in ("x", "h0", "W", "U")), relative


@pytest.mark.parametrize("half", HALF_TYPES)
@pytest.mark.parametrize("policy", HALF_POLICIES)
def test_every_policy_backward_is_the_exact_gradient_to_a_few_roundings(half, policy):
    """Over 100 steps, each gradient of every policy is within a few ulps of the exact one on average (counted at a
    sixteenth of the tensor's largest element, as the bounds count them: measured at most 3.2 where every operation
    is rounded, 1.05 under half-storage), and is stored in the half type."""
    params, x, h0, c0 = _half_data(LONG, half)
    cotangents = tuple(round_to(a.astype(np.float32), half).astype(np.float64) for a in _cotangents(LONG, None))
    got = backward(params, x, h0, c0, *cotangents, dtype=half, policy=policy)
    exact = _exact_gradients(params, x, h0, c0, cotangents)
    for name, want in exact.items():
        scale = np.maximum(np.abs(want), np.abs(want).max() / 16)
        mean = float((np.abs(got[name] - want) / ulp(scale, half)).mean())
        assert mean < (1.5 if policy in (Policy.HALF_STORAGE, Policy.FLOAT32_CELL_STATE) else 4.0), (name, mean)
        assert np.array_equal(round_to(got[name], half), got[name]), f"{name} is not stored in {half}"


def test_mixed_precision_differs_from_every_operation_only_where_the_parameters_gradients_accumulate():
    """Both round every operation; mixed precision sums each step's parameter gradients in float32 (the float32
    parameters' casts widen them), every-operation in the half type: x, h0, c0 are the same, W, U, b more exact."""
    params, x, h0, c0 = _half_data(LONG, "bfloat16")
    cotangents = tuple(round_to(a.astype(np.float32), "bfloat16").astype(np.float64) for a in _cotangents(LONG, None))
    mixed = backward(params, x, h0, c0, *cotangents, dtype="bfloat16", policy=Policy.MIXED)
    every = backward(params, x, h0, c0, *cotangents, dtype="bfloat16", policy=Policy.EVERY_OPERATION)
    exact = _exact_gradients(params, x, h0, c0, cotangents)
    for name in ("x", "h0", "c0"):
        np.testing.assert_array_equal(mixed[name], every[name])
    for name in ("W", "U", "b", "p"):
        assert np.abs(mixed[name] - exact[name]).mean() < np.abs(every[name] - exact[name]).mean(), name


def test_the_input_projections_gradient_is_one_product_over_all_steps():
    """With the input product computed before the recurrence, dW and db are one sum over steps and rows (rounded
    once), not a half-type sum of each step's: nearer the exact gradient, and only W and b change."""
    params, x, h0, c0 = _half_data(LONG, "bfloat16")
    cotangents = tuple(round_to(a.astype(np.float32), "bfloat16").astype(np.float64) for a in _cotangents(LONG, None))
    options = dict(dtype="bfloat16", policy=Policy.EVERY_OPERATION)
    steps = backward(params, x, h0, c0, *cotangents, **options, evaluation=Evaluation(Accumulation.PAIRWISE))
    whole = backward(params, x, h0, c0, *cotangents, **options,
                     evaluation=Evaluation(Accumulation.PAIRWISE, input_projection=True))
    exact = _exact_gradients(params, x, h0, c0, cotangents)
    for name in ("x", "h0", "c0", "U", "p"):
        np.testing.assert_array_equal(steps[name], whole[name])
    for name in ("W", "b"):
        assert np.abs(whole[name] - exact[name]).mean() < np.abs(steps[name] - exact[name]).mean(), name


def test_cotangents_the_half_type_cannot_hold_are_refused_naming_them():
    params, x, h0, c0 = _half_data(ONE_STEP, "float16")
    dy, dh_T, dc_T = _cotangents(ONE_STEP, None)
    with pytest.raises(ValueError, match=r"^dy: the data must be finite float16 values"):
        backward(params, x, h0, c0, dy + 1e-4, dh_T, dc_T, dtype="float16", policy=Policy.HALF_STORAGE)


@pytest.mark.parametrize("option", [{"input_projection": True}, {"gate_products": True}], ids=str)
def test_the_backward_only_options_leave_the_forward_and_change_some_gradient(option):
    """input_projection and gate_products say how the backward pass sums (dW over all steps at once; dx and dh as four
    products): the forward is the same, and some gradient of a 25-step case rounds differently, by roundings only."""
    case = Case("unit", 25, 8, 16, 16, LayerConfig(peephole=True), seed=5)
    d = make_case_data(case, "bfloat16")
    cell = d.params.cell(0, 0)
    args = (cell, d.x, d.h0[0], d.c0[0])
    cotangents = (d.dy, d.dh_T[0], d.dc_T[0])
    options = dict(dtype="bfloat16", policy=Policy.EVERY_OPERATION)
    standard, varied = Evaluation(Accumulation.PAIRWISE), Evaluation(Accumulation.PAIRWISE, **option)
    for a, b in zip(forward(*args, **options, evaluation=standard), forward(*args, **options, evaluation=varied)):
        np.testing.assert_array_equal(a, b)
    before = backward(*args, *cotangents, **options, evaluation=standard)
    after = backward(*args, *cotangents, **options, evaluation=varied)
    assert any((before[k] != after[k]).any() for k in before), option
    for k in before:
        scale = np.abs(before[k]).max()
        assert np.abs(before[k] - after[k]).max() < 0.1 * scale, (option, k)


def test_float32_activations_are_a_float32_kernels_a_few_ulps_from_the_exact_ones():
    """float32_activations computes sigma and tanh as a float32 kernel does (NumPy's, not correctly rounded): under
    TF32, whose outputs are float32, one step's answer moves by float32 roundings somewhere and by nothing larger."""
    d = make_case_data(ONE_STEP)
    cell = d.params.cell(0, 0)
    params = LSTMParams(*(round_to_tf32(a.astype(np.float32)) for a in (cell.W, cell.U, cell.b, cell.p)))
    x, h0, c0 = (round_to_tf32(a.astype(np.float32)) for a in (d.x, d.h0[0], d.c0[0]))
    exact = forward(params, x, h0, c0, dtype="float32", policy=Policy.TF32)
    kernel = forward(params, x, h0, c0, dtype="float32", policy=Policy.TF32, evaluation=Evaluation(float32_activations=True))
    differences = [np.abs(a.astype(np.float64) - b) for a, b in zip(kernel, exact)]
    assert any(diff.max() > 0 for diff in differences)
    assert max(diff.max() for diff in differences) < 1e-6
