"""Checks on the tensors that enter the spec, with errors that say what is wrong.

Every tensor that reaches the spec (parameters, inputs, cotangents, the
contents of a weight file) passes through :func:`check_tensor`. Nothing is
guessed and nothing is cast: a wrong shape or dtype is an error naming the
tensor, what was expected and what was found.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The dtypes the spec computes in. float64 is the default everywhere.
SUPPORTED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def half_dtypes() -> tuple[np.dtype, ...]:
    """The half types data may be stored in (bfloat16 through ml_dtypes, NumPy having none): the spec computes on such
    data only widened, or under a precision policy (spec/precision.py)."""
    import ml_dtypes

    return (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


class LSTMInputError(ValueError):
    """A tensor has the wrong type, shape, dtype or contents.

    ``tensor`` names it, ``expected`` and ``actual`` say what was wanted and
    what was found, so callers (and the conformance report) can show them.
    """

    def __init__(self, tensor: str, problem: str, expected: object, actual: object, hint: str = ""):
        self.tensor = tensor
        self.problem = problem
        self.expected = expected
        self.actual = actual
        message = f"{tensor}: {problem}: expected {expected}, got {actual}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


def check_dtype(dtype: object, name: str = "dtype", *, storage: bool = False) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype the spec computes in, or raise naming ``name``. With ``storage``, also a half
    type (:func:`half_dtypes`): what data, parameters and answers may be held in."""
    allowed = SUPPORTED_DTYPES + (half_dtypes() if storage else ())
    expected = "float64, float32, bfloat16 or float16" if storage else "float64 or float32"
    if dtype is None:
        raise LSTMInputError(name, "missing dtype", expected, None)
    if isinstance(dtype, str) and dtype == "bfloat16":
        dtype = half_dtypes()[0]  # NumPy knows the name only once ml_dtypes is imported
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise LSTMInputError(name, "unknown dtype", expected, repr(dtype)) from error
    if resolved not in allowed:
        hint = " (a half type is data, not arithmetic: widen it, or evaluate a precision policy)" if (
            not storage and resolved in half_dtypes()) else ""
        raise LSTMInputError(name, "unsupported dtype", expected + hint, resolved.name)
    return resolved


def cast(array: np.ndarray, dtype: object, name: str) -> np.ndarray:
    """``array`` converted to ``dtype`` (round-to-nearest-even), refusing what the dtype cannot hold: a finite value
    beyond its range would become inf (float16's largest is 65504)."""
    dtype = check_dtype(dtype, name, storage=True)
    with np.errstate(over="ignore"):
        converted = np.asarray(array).astype(dtype)
    overflow = np.isfinite(np.asarray(array, np.float64)) & ~np.isfinite(converted.astype(np.float64))
    if overflow.any():
        index = tuple(int(k) for k in np.argwhere(overflow)[0])
        import ml_dtypes

        largest = float(ml_dtypes.finfo(dtype).max)
        raise LSTMInputError(name, f"beyond the range of {dtype.name}", f"|values| at most {largest:g}",
                             f"{float(np.asarray(array)[index]):g} at index {index} ({int(overflow.sum())} such values)",
                             "scale the model, or keep it in a wider type")
    return converted


def format_shape(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_tensor(
    name: str,
    array: object,
    shape: Sequence[object],
    dtype: np.dtype,
    *,
    finite: bool = True,
) -> np.ndarray:
    """Check one tensor and return it unchanged.

    ``shape`` holds an int for each axis whose size is known and a string
    (the symbol, such as ``"T"``) for a free one. The dtype must be exactly
    ``dtype``: the spec never casts.
    """
    if not isinstance(array, np.ndarray):
        raise LSTMInputError(name, "not a NumPy array", "numpy.ndarray", type(array).__name__)
    if array.dtype != dtype:
        raise LSTMInputError(
            name,
            "wrong dtype",
            dtype.name,
            array.dtype.name,
            "the spec never casts; convert explicitly or ask for the matching dtype",
        )
    if array.ndim != len(shape) or any(
        isinstance(want, int) and got != want for got, want in zip(array.shape, shape)
    ):
        raise LSTMInputError(name, "wrong shape", format_shape(shape), format_shape(array.shape))
    if 0 in array.shape:
        raise LSTMInputError(name, "empty axis", "every axis of size at least 1", format_shape(array.shape))
    if finite and not np.isfinite(array).all():
        bad = tuple(int(k) for k in np.argwhere(~np.isfinite(array))[0])
        raise LSTMInputError(
            name, "non-finite value", "finite values", f"{array[bad]!r} at index {bad}"
        )
    return array
