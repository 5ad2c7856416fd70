"""bench/correctness.py: the benchmark's refusal to time a wrong answer, and the timing contract's checks."""

from __future__ import annotations

import numpy as np
import pytest

from backends.base import Implementation, NotSupported, Outputs
from backends.timing import Timing
from bench import correctness
from spec import lstm
from spec.cases import Case, make_case_data

DATA = make_case_data(Case("bench-check", T=6, B=3, I=5, H=4, peephole=False, seed=11), "float32")


def test_reference_is_the_spec_in_float64_on_the_float32_data():
    ref = correctness.reference(DATA, False)
    wide = DATA.params.astype(np.float64)
    expected = lstm.forward(wide, *(a.astype(np.float64) for a in (DATA.x, DATA.h0, DATA.c0))).h_seq
    assert ref["h_seq"].dtype == np.float64 and np.array_equal(ref["h_seq"], expected)
    assert set(correctness.reference(DATA, True)) == {"x", "h0", "c0"}


def test_float32_result_passes_and_reports_its_error():
    got = lstm.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, dtype=np.float32).h_seq
    error = correctness.check({"h_seq": got}, correctness.reference(DATA, False), "float32")
    assert 0 < error < 1e-6


def test_a_gate_swap_is_refused_in_every_dtype():
    W, U, b = (a.copy() for a in (DATA.params.W, DATA.params.U, DATA.params.b))
    for a in (W, U, b):
        a[[1, 2]] = a[[2, 1]]  # f and g swapped
    swapped = lstm.forward(type(DATA.params)(W, U, b), DATA.x, DATA.h0, DATA.c0, dtype=np.float32).h_seq
    for dtype in ("float32", "float16", "bfloat16"):
        with pytest.raises(AssertionError, match=r"h_seq is .* from the spec .* its time is not kept"):
            correctness.check({"h_seq": swapped}, correctness.reference(DATA, False), dtype)


def test_nan_unwritten_output_and_wrong_keys_are_refused():
    ref = correctness.reference(DATA, False)
    poisoned = ref["h_seq"].copy()
    poisoned[3, 1, 2] = np.nan
    assert correctness.relative_error(poisoned, ref["h_seq"]) == float("inf")
    with pytest.raises(AssertionError):
        correctness.check({"h_seq": poisoned}, ref, "bfloat16")
    with pytest.raises(AssertionError, match="returned"):
        correctness.check({"x": ref["h_seq"]}, ref, "float32")
    with pytest.raises(ValueError, match="shape"):
        correctness.relative_error(ref["h_seq"][:-1], ref["h_seq"])


def test_bounds_grow_with_the_unit_roundoff_and_each_has_a_reason():
    bounds = [correctness.BOUNDS[d][0] for d in ("float64", "float32", "float16", "bfloat16")]
    assert bounds == sorted(bounds) and all(len(correctness.BOUNDS[d][1]) > 30 for d in correctness.BOUNDS)


class _NumpyOnly(Implementation):
    """An implementation with only forward/backward hooks: the default timed_pass goes through them."""

    def _forward(self, params, x, h0, c0, *, forget_bias, config):
        fwd = lstm.forward(params, x, h0, c0, forget_bias=forget_bias, dtype=config.dtype)
        return Outputs(fwd.h_seq, fwd.h_T, fwd.c_T)

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config):
        fwd = lstm.forward(params, x, h0, c0, forget_bias=forget_bias, dtype=config.dtype)
        return lstm.backward(fwd, cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"]).tensors()


def test_default_timed_pass_goes_through_numpy_and_is_checked():
    impl = _NumpyOnly(id="numpy-only")
    for gradients in (False, True):
        timed = impl.timed_pass(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.cotangents(), forget_bias=0.0,
                                timing=Timing("standard", "float32", "cpu", gradients))
        timed.run()
        assert timed.resident is False
        correctness.check(timed.result(), correctness.reference(DATA, gradients), "float32")


def test_half_types_need_a_declaration_and_an_override():
    impl = _NumpyOnly(id="numpy-only")
    with pytest.raises(NotSupported, match="does not run in bfloat16"):
        impl.check_timing(Timing("standard", "bfloat16", "cpu"))
    impl.timing_dtypes = ("bfloat16",)
    with pytest.raises(NotSupported, match="supplies no _timed_pass"):
        impl.timed_pass(DATA.params, DATA.x, DATA.h0, DATA.c0, None, forget_bias=0.0, timing=Timing("standard", "bfloat16", "cpu"))
    with pytest.raises(ValueError, match="dtype"):
        Timing("standard", "int8", "cpu")
    assert Timing(dtype="float16").source_dtype == "float32" and Timing(dtype="float64").source_dtype == "float64"
