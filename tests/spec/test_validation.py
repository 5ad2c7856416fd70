"""Bad input to the spec: a clear error naming the tensor, what was expected and what was found."""

from __future__ import annotations

import numpy as np
import pytest

from spec import LSTMInputError, LSTMParams, backward, forward
from spec.cases import case_by_name, make_case_data

D = make_case_data(case_by_name("small-peephole"))  # T=4, B=3, I=5, H=4


def call_forward(**override):
    arguments = dict(params=D.params, x=D.x, h0=D.h0, c0=D.c0)
    arguments.update(override)
    return forward(**arguments)


def expect_error(tensor: str, *fragments: str):
    """pytest.raises for LSTMInputError on ``tensor`` whose message holds every fragment."""

    class Check:
        def __enter__(self):
            self.raises = pytest.raises(LSTMInputError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.raises.__exit__(*exc)
            error = self.info.value
            assert error.tensor == tensor, f"error names {error.tensor!r}, expected {tensor!r}: {error}"
            for fragment in fragments:
                assert fragment in str(error), f"{fragment!r} missing from: {error}"
            return suppressed

    return Check()


@pytest.mark.parametrize(
    "override, tensor, fragments",
    [
        (dict(x=D.x[:, :, :4].copy()), "x", ("wrong shape", "(T, B, 5)", "(4, 3, 4)")),
        (dict(x=D.x[0].copy()), "x", ("wrong shape", "(3, 5)")),
        (dict(h0=D.h0[:2].copy()), "h0", ("wrong shape", "expected (3, 4)", "got (2, 4)")),
        (dict(c0=D.c0.T.copy()), "c0", ("wrong shape", "(4, 3)")),
        (dict(x=D.x.astype(np.float32)), "x", ("wrong dtype", "expected float64", "got float32", "never casts")),
        (dict(h0=D.h0.astype(np.float32)), "h0", ("wrong dtype", "float32")),
        (dict(x=D.x.tolist()), "x", ("not a NumPy array", "list")),
        (dict(x=np.where(np.arange(D.x.size).reshape(D.x.shape) == 7, np.nan, D.x)), "x", ("non-finite", "nan", "(0, 1, 2)")),
        (dict(c0=np.full_like(D.c0, np.inf)), "c0", ("non-finite", "inf")),
        (dict(x=np.empty((0, 3, 5))), "x", ("empty axis", "(0, 3, 5)")),
        (dict(params=D.params.astype(np.float32)), "params", ("wrong dtype", "expected float64", "got float32")),
        (dict(params={"W": D.params.W}), "params", ("wrong type", "LSTMParams", "dict")),
        (dict(forget_bias=float("nan")), "forget_bias", ("non-finite",)),
        (dict(forget_bias="1.0"), "forget_bias", ("wrong type", "str")),
        (dict(forget_bias=True), "forget_bias", ("wrong type", "bool")),
        (dict(dtype=np.float16), "dtype", ("unsupported dtype", "float16")),
        (dict(dtype="int64"), "dtype", ("unsupported dtype", "int64")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_forward_rejects(override, tensor, fragments):
    with expect_error(tensor, *fragments):
        call_forward(**override)


def test_float32_is_computed_only_when_asked_for():
    d32 = make_case_data(case_by_name("small-peephole"), np.float32)
    with expect_error("params", "expected float64", "got float32"):
        forward(d32.params, d32.x, d32.h0, d32.c0)
    fwd = forward(d32.params, d32.x, d32.h0, d32.c0, dtype=np.float32)
    assert fwd.dtype == np.float32 and fwd.h_seq.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, tensor, fragments",
    [
        (dict(U=D.params.U[:, :3]), "U", ("wrong shape", "expected (4, 4, 4)", "got (4, 3, 4)")),
        (dict(W=D.params.W[:3]), "W", ("wrong shape", "(4, H, I)", "(3, 4, 5)")),
        (dict(b=D.params.b.ravel()), "b", ("wrong shape", "(4, 4)", "(16,)")),
        (dict(p=D.params.p[:2]), "p", ("wrong shape", "(3, 4)", "(2, 4)")),
        (dict(U=D.params.U.astype(np.float32)), "U", ("wrong dtype", "expected float64", "got float32")),
        (dict(W=D.params.W.astype(np.int64)), "W", ("unsupported dtype", "int64")),
        (dict(W=D.params.W.astype(np.float16)), "W", ("unsupported dtype", "float16")),
        (dict(b=np.full((4, 4), np.nan)), "b", ("non-finite",)),
        (dict(W=D.params.W.tolist()), "W", ("not a NumPy array",)),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_params_reject(kwargs, tensor, fragments):
    tensors = {**D.params.tensors(), **kwargs}
    with expect_error(tensor, *fragments):
        LSTMParams(**tensors)


@pytest.mark.parametrize(
    "name, bad, fragments",
    [
        ("dh_seq", D.dh_seq[:-1].copy(), ("wrong shape", "(4, 3, 4)", "(3, 3, 4)")),
        ("dh_T", D.dh_T.astype(np.float32), ("wrong dtype",)),
        ("dc_T", np.full_like(D.dc_T, np.nan), ("non-finite",)),
    ],
)
def test_backward_rejects(name, bad, fragments):
    fwd = call_forward()
    cotangents = {**D.cotangents(), name: bad}
    with expect_error(name, *fragments):
        backward(fwd, **cotangents)


def test_backward_needs_a_forward_result():
    with expect_error("fwd", "wrong type", "Forward"):
        backward((D.x, D.h0), **D.cotangents())


def test_errors_are_value_errors_carrying_what_was_expected_and_found():
    with pytest.raises(ValueError) as info:
        call_forward(h0=D.h0[:2].copy())
    error = info.value
    assert isinstance(error, LSTMInputError)
    assert (error.tensor, error.problem, error.expected, error.actual) == ("h0", "wrong shape", "(3, 4)", "(2, 4)")


def test_inputs_are_not_modified():
    before = {k: v.copy() for k, v in {**D.inputs(), **D.params.tensors(), **D.cotangents()}.items()}
    backward(call_forward(), **D.cotangents())
    after = {**D.inputs(), **D.params.tensors(), **D.cotangents()}
    assert all(np.array_equal(before[k], after[k]) for k in before)
