"""The canonical LSTM parameters: the one layout every adapter converts from and to.

    W     (4, H, I)   input weights, gates stacked i, f, g, o
    U     (4, H, P)   recurrent weights, gates stacked i, f, g, o (P = H without a projection)
    b     (4, H)      one bias per gate (frameworks with two biases sum them)
    p     (3, H)      peephole weights for gates i, f, o; absent without peepholes
    W_hr  (P, H)      the projection of LSTMP (Sak, Senior & Beaufays 2014): h_t = W_hr m_t;
                      absent without one (then h_t = m_t and P = H)
    ln    (4, H)      layer normalization's coefficients gamma, one per gate i, f, g, o (TFLite's
                      *_layer_norm_coefficients); absent without layer normalization
    b_hr  (P,)        the projection's bias (TFLite's projection_bias): h_t = W_hr m_t + b_hr;
                      with a projection only, absent without one

The gate order is :data:`spec.lstm.GATES`. The parameters of a stack of
layers and directions are :class:`spec.layer.LayerParams`, one LSTMParams
per layer and direction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spec.validation import LSTMInputError, cast, check_dtype, check_tensor

GATES = ("i", "f", "g", "o")
PEEPHOLE_GATES = ("i", "f", "o")
#: The tensors a cell has only with the feature that needs them, in the order of :meth:`LSTMParams.tensors`.
OPTIONAL_TENSORS = ("p", "W_hr", "ln", "b_hr")


@dataclass(frozen=True, eq=False)
class LSTMParams:
    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    p: np.ndarray | None = None
    W_hr: np.ndarray | None = None
    ln: np.ndarray | None = None
    b_hr: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.W, np.ndarray):
            raise LSTMInputError("W", "not a NumPy array", "numpy.ndarray", type(self.W).__name__)
        # The parameters' dtype is W's; the others must match it exactly.
        dtype = check_dtype(self.W.dtype, name="W", storage=True)
        check_tensor("W", self.W, (4, "H", "I"), dtype)
        H = self.W.shape[1]
        P = H
        if self.W_hr is not None:
            # W_hr fixes P, which the recurrent weights then take as their input width.
            check_tensor("W_hr", self.W_hr, ("P", H), dtype)
            P = self.W_hr.shape[0]
        check_tensor("U", self.U, (4, H, P), dtype)
        check_tensor("b", self.b, (4, H), dtype)
        if self.p is not None:
            check_tensor("p", self.p, (3, H), dtype)
        if self.ln is not None:
            check_tensor("ln", self.ln, (4, H), dtype)
        if self.b_hr is not None:
            if self.W_hr is None:
                raise LSTMInputError("b_hr", "a projection bias without a projection", "None (no W_hr)",
                                     f"an array of shape {self.b_hr.shape}")
            check_tensor("b_hr", self.b_hr, (P,), dtype)

    @property
    def input_size(self) -> int:
        return self.W.shape[2]

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def proj_size(self) -> int | None:
        """P with a projection, None without one."""
        return None if self.W_hr is None else self.W_hr.shape[0]

    @property
    def output_size(self) -> int:
        """The width of h_t: P with a projection, H without."""
        return self.U.shape[2]

    @property
    def peephole(self) -> bool:
        return self.p is not None

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    @property
    def layer_norm(self) -> bool:
        return self.ln is not None

    @property
    def proj_bias(self) -> bool:
        return self.b_hr is not None

    @property
    def variant(self) -> str:
        return "peephole" if self.peephole else "standard"

    def tensors(self) -> dict[str, np.ndarray]:
        """The parameters by name; p, W_hr, ln and b_hr included only when present."""
        named = {"W": self.W, "U": self.U, "b": self.b}
        for name in OPTIONAL_TENSORS:
            if getattr(self, name) is not None:
                named[name] = getattr(self, name)
        return named

    def astype(self, dtype: object) -> LSTMParams:
        """An explicit conversion to another supported dtype, or to a half type to store (the spec never converts by
        itself)."""
        dtype = check_dtype(dtype, storage=True)
        return LSTMParams(**{k: cast(v, dtype, k) for k, v in self.tensors().items()})

    def without_peepholes(self) -> LSTMParams:
        return replace(self, p=None)


def require_params(params: object) -> LSTMParams:
    if not isinstance(params, LSTMParams):
        raise LSTMInputError("params", "wrong type", "spec.LSTMParams", type(params).__name__)
    return params


@dataclass(frozen=True, eq=False)
class LayerParams:
    """The parameters of a stack of LSTM layers, one :class:`LSTMParams` per layer and direction.

    ``cells[l * D + d]`` belongs to direction d (0 forward, 1 reverse when there are two) of
    layer l, the order of PyTorch's h_n. Layer 0 takes the I inputs; layer l >= 1 takes the
    previous layer's outputs, every direction's concatenated: D * P features (P = H without a
    projection). Every cell has the same H, P, dtype and peephole variant.
    """

    cells: tuple[LSTMParams, ...]
    num_directions: int = 1

    def __post_init__(self) -> None:
        cells = self.cells
        if not isinstance(cells, (tuple, list)) or not cells:
            raise LSTMInputError("params.cells", "wrong type", "a non-empty tuple of LSTMParams", type(cells).__name__)
        object.__setattr__(self, "cells", tuple(cells))
        D = self.num_directions
        if D not in (1, 2) or isinstance(D, bool):
            raise LSTMInputError("params.num_directions", "out of range", "1 or 2", D)
        if len(cells) % D:
            raise LSTMInputError("params.cells", "wrong count", f"a multiple of num_directions = {D}", len(cells))
        for k, cell in enumerate(cells):
            if not isinstance(cell, LSTMParams):
                raise LSTMInputError(self.cell_name(k), "wrong type", "spec.LSTMParams", type(cell).__name__)
        first = cells[0]
        H, P = first.hidden_size, first.output_size
        for k, cell in enumerate(cells):
            name = self.cell_name(k)
            for what, got, want in (
                ("dtype", cell.dtype, first.dtype),
                ("hidden size H", cell.hidden_size, H),
                ("projection size P", cell.proj_size, first.proj_size),
                ("variant", cell.variant, first.variant),
                ("layer normalization", cell.layer_norm, first.layer_norm),
                ("projection bias", cell.proj_bias, first.proj_bias),
            ):
                if got != want:
                    raise LSTMInputError(name, f"wrong {what}", f"{want} (as {self.cell_name(0)})", got)
            width = first.input_size if k < D else D * P
            if cell.input_size != width:
                source = f"as {self.cell_name(0)}" if k < D else f"{D} direction(s) x {P} outputs of the layer below"
                raise LSTMInputError(f"{name} W", "wrong input width", f"{width} ({source})", cell.input_size)

    @staticmethod
    def cell_index(layer: int, direction: int, num_directions: int) -> int:
        return layer * num_directions + direction

    def cell_name(self, k: int) -> str:
        """How errors and gradient names refer to cell k: 'layer l direction d'."""
        return f"layer {k // self.num_directions} direction {k % self.num_directions}"

    def cell(self, layer: int, direction: int = 0) -> LSTMParams:
        return self.cells[self.cell_index(layer, direction, self.num_directions)]

    @property
    def num_layers(self) -> int:
        return len(self.cells) // self.num_directions

    @property
    def input_size(self) -> int:
        return self.cells[0].input_size

    @property
    def hidden_size(self) -> int:
        return self.cells[0].hidden_size

    @property
    def proj_size(self) -> int | None:
        return self.cells[0].proj_size

    @property
    def output_size(self) -> int:
        """P (or H): the width of each direction's h_t."""
        return self.cells[0].output_size

    @property
    def peephole(self) -> bool:
        return self.cells[0].peephole

    @property
    def layer_norm(self) -> bool:
        return self.cells[0].layer_norm

    @property
    def proj_bias(self) -> bool:
        return self.cells[0].proj_bias

    @property
    def dtype(self) -> np.dtype:
        return self.cells[0].dtype

    def tensors(self) -> dict[str, np.ndarray]:
        """Every cell's tensors by name: 'layer l direction d W', ... (the last word names the tensor)."""
        return {f"{self.cell_name(k)} {name}": t for k, cell in enumerate(self.cells) for name, t in cell.tensors().items()}

    def with_tensors(self, named: dict[str, np.ndarray]) -> LayerParams:
        """The same structure with the tensors of ``named`` (names as in :meth:`tensors`) put in."""
        cells = []
        for k, cell in enumerate(self.cells):
            prefix = self.cell_name(k) + " "
            cells.append(LSTMParams(**{name: named.get(prefix + name, t) for name, t in cell.tensors().items()}))
        return LayerParams(tuple(cells), self.num_directions)

    def astype(self, dtype: object) -> LayerParams:
        return LayerParams(tuple(cell.astype(dtype) for cell in self.cells), self.num_directions)
