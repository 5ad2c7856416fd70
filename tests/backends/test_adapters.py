"""What every built-in adapter must do, whatever its framework: exact layout round trips and the permutation canary."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from backends.base import VARIANTS, Config, NotSupported, fold_forget_bias
from backends.registry import builtin_implementations
from backends.timing import Timing
from bench import correctness
from spec.cases import case_by_name, make_case_data
from spec.params import GATES, PEEPHOLE_GATES, LSTMParams

IMPLEMENTATIONS = builtin_implementations()


def setup(impl, variant):
    """(config, case data) for impl on CPU in its widest dtype; skip with the reason when it cannot run."""
    reason = impl.availability("cpu")
    if reason:
        pytest.skip(f"unavailable: {reason}")
    dtype = "float64" if "float64" in impl.dtypes else impl.dtypes[0]
    config = Config(variant=variant, dtype=dtype, device="cpu")
    if variant not in impl.variants:
        with pytest.raises(NotSupported):
            impl.check(config)
        pytest.skip(f"not supported: {impl.unsupported_reasons.get(variant, variant)} (and check() says so)")
    name = "I-ne-H" + ("-peephole" if variant == "peephole" else "")
    return config, make_case_data(case_by_name(name), dtype)


def test_ids_are_unique_and_stable():
    ids = [i.id for i in IMPLEMENTATIONS]
    assert len(ids) == len(set(ids))
    assert all(i.count("/") == 1 and " " not in i for i in ids), ids


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.id)
def test_layout_round_trip_is_exact(impl, variant):
    _, data = setup(impl, variant)
    back = impl.from_native(impl.to_native(data.params, 0.0))
    assert back.tensors().keys() == data.params.tensors().keys()
    for name, tensor in data.params.tensors().items():
        assert np.array_equal(back.tensors()[name], tensor), f"{impl.id}: {name} changed in the round trip"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.id)
def test_a_forget_bias_survives_the_round_trip_folded_into_b_f(impl):
    _, data = setup(impl, impl.variants[0])
    back = impl.from_native(impl.to_native(data.params, 0.75))
    np.testing.assert_allclose(back.b, fold_forget_bias(data.params.b, 0.75), rtol=0, atol=4 * np.finfo(data.params.dtype).eps)


def swapped(params: LSTMParams, a: int, b: int, peephole_pair: bool = False) -> LSTMParams:
    order = list(range(3 if peephole_pair else 4))
    order[a], order[b] = order[b], order[a]
    if peephole_pair:
        return LSTMParams(params.W, params.U, params.b, params.p[order])
    return LSTMParams(params.W[order], params.U[order], params.b[order], params.p)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.id)
def test_permutation_canary(impl, variant):
    """With gate-distinct weights, swapping any two gates (or peepholes) changes what the implementation computes:
    so a layout bug of that kind cannot hide behind the test data."""
    config, data = setup(impl, variant)
    run = lambda params: impl.forward(params, data.x, data.h0, data.c0, forget_bias=0.0, config=config).h_seq  # noqa: E731
    base = run(data.params)
    pairs = [(a, b, False) for a, b in combinations(range(4), 2)]
    if variant == "peephole":
        pairs += [(a, b, True) for a, b in combinations(range(3), 2)]
    for a, b, peep in pairs:
        difference = np.max(np.abs(run(swapped(data.params, a, b, peep)) - base))
        names = PEEPHOLE_GATES if peep else GATES
        assert difference > 1e-3, f"{impl.id}: swapping {'peepholes' if peep else 'gates'} {names[a]} and {names[b]} changed h by only {difference:.2g}"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.id)
def test_timed_pass_computes_what_the_spec_does(impl, variant, dtype):
    """The pass a benchmark times (device-resident, rounded to a half type where declared) gives the
    spec's answer within the benchmark's bound, forward and forward+backward; each run replaces the last
    result rather than accumulating into it."""
    reason = impl.availability("cpu")
    if reason:
        pytest.skip(f"unavailable: {reason}")
    data = make_case_data(case_by_name("I-ne-H" + ("-peephole" if variant == "peephole" else "")), "float32")
    for gradients in (False, True):
        timing = Timing(variant=variant, dtype=dtype, device="cpu", gradients=gradients)
        try:
            impl.check_timing(timing)
        except NotSupported:
            continue
        timed = impl.timed_pass(data.params, data.x, data.h0, data.c0, data.cotangents(), forget_bias=0.0, timing=timing)
        timed.run()
        first = timed.result()
        timed.run()
        second = timed.result()
        expected = correctness.reference(data, gradients)
        if gradients and impl.known_failure("gradients", timing.source_config):
            with pytest.raises(AssertionError, match="wrong answer"):  # the benchmark refuses to time it
                correctness.check(second, expected, dtype)
            continue
        assert correctness.check(second, expected, dtype) == correctness.check(first, expected, dtype)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.id)
def test_bad_inputs_are_refused_before_the_framework_sees_them(impl):
    """The contract checks every input for every adapter (the JAX adapters once accepted a NaN input, and a
    wrong-shape h0 surfaced as JAX's own scan error): the error names the tensor."""
    from spec.validation import LSTMInputError

    config, data = setup(impl, impl.variants[0])
    nan_x = data.x.copy()
    nan_x[1, 0, 0] = np.nan
    with pytest.raises(LSTMInputError, match=r"^x: non-finite value"):
        impl.forward(data.params, nan_x, data.h0, data.c0, forget_bias=0.0, config=config)
    with pytest.raises(LSTMInputError, match=r"^h0: wrong shape"):
        impl.forward(data.params, data.x, data.h0[:, :-1], data.c0, forget_bias=0.0, config=config)
    other = "float32" if config.dtype == "float64" else "float64"
    with pytest.raises(LSTMInputError, match=r"^params: wrong dtype"):
        impl.forward(data.params.astype(other), data.x, data.h0, data.c0, forget_bias=0.0, config=config)
    if impl.gradients:
        with pytest.raises(LSTMInputError, match=r"^dc_T: wrong shape"):
            impl.backward(data.params, data.x, data.h0, data.c0, {**data.cotangents(), "dc_T": data.dc_T[:1]},
                          forget_bias=0.0, config=config)
