"""The canonical LSTM parameters: the one layout every adapter converts from and to.

    W  (4, H, I)   input weights, gates stacked i, f, g, o
    U  (4, H, H)   recurrent weights, gates stacked i, f, g, o
    b  (4, H)      one bias per gate (frameworks with two biases sum them)
    p  (3, H)      peephole weights for gates i, f, o; absent without peepholes

The gate order is :data:`spec.lstm.GATES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec.validation import LSTMInputError, check_dtype, check_tensor

GATES = ("i", "f", "g", "o")
PEEPHOLE_GATES = ("i", "f", "o")


@dataclass(frozen=True, eq=False)
class LSTMParams:
    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    p: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.W, np.ndarray):
            raise LSTMInputError("W", "not a NumPy array", "numpy.ndarray", type(self.W).__name__)
        # The parameters' dtype is W's; the others must match it exactly.
        dtype = check_dtype(self.W.dtype, name="W")
        check_tensor("W", self.W, (4, "H", "I"), dtype)
        H = self.W.shape[1]
        check_tensor("U", self.U, (4, H, H), dtype)
        check_tensor("b", self.b, (4, H), dtype)
        if self.p is not None:
            check_tensor("p", self.p, (3, H), dtype)

    @property
    def input_size(self) -> int:
        return self.W.shape[2]

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def peephole(self) -> bool:
        return self.p is not None

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    @property
    def variant(self) -> str:
        return "peephole" if self.peephole else "standard"

    def tensors(self) -> dict[str, np.ndarray]:
        """The parameters by name, p included only for the peephole variant."""
        named = {"W": self.W, "U": self.U, "b": self.b}
        if self.p is not None:
            named["p"] = self.p
        return named

    def astype(self, dtype: object) -> "LSTMParams":
        """An explicit conversion to another supported dtype (the spec never converts by itself)."""
        dtype = check_dtype(dtype)
        return LSTMParams(**{k: v.astype(dtype) for k, v in self.tensors().items()})

    def without_peepholes(self) -> "LSTMParams":
        return LSTMParams(self.W, self.U, self.b)


def require_params(params: object) -> LSTMParams:
    if not isinstance(params, LSTMParams):
        raise LSTMInputError("params", "wrong type", "spec.LSTMParams", type(params).__name__)
    return params
