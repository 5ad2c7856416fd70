"""Comparing tensors, and the one failure message every check uses.

A comparison finds the worst element (the largest error measured against the tolerance, atol + rtol *
|expected|), and says where it is in the LSTM's terms: tensor, cell (layer and direction), gate, time step,
batch row, unit. A failing check reads like

    y: worst error 3.2e-04 at step 3, batch row 1, unit 2: got 0.4121, expected 0.4124;
    tolerance 1.0e-06 (atol 1e-06 + rtol 1e-06 * |expected|), exceeded 320x
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec.params import GATES, PEEPHOLE_GATES

#: What each axis of each named tensor means (spec/layer.py's shapes). Gradients and cotangents share their
#: tensor's axes; a parameter's gradient is named as the parameter ('layer 1 direction 0 W'), whose last word
#: names the tensor.
AXES: dict[str, tuple[str, ...]] = {
    "x": ("step", "batch row", "input"),
    "y": ("step", "batch row", "feature"),
    "dy": ("step", "batch row", "feature"),
    "h_T": ("cell", "batch row", "unit"),
    "c_T": ("cell", "batch row", "unit"),
    "h0": ("cell", "batch row", "unit"),
    "c0": ("cell", "batch row", "unit"),
    "dh_T": ("cell", "batch row", "unit"),
    "dc_T": ("cell", "batch row", "unit"),
    "lengths": ("batch row",),
    "mask": ("step", "batch row"),
    "W": ("gate", "unit", "input"),
    "U": ("gate", "unit", "from unit"),
    "b": ("gate", "unit"),
    "p": ("peephole gate", "unit"),
    "W_hr": ("projected unit", "unit"),
    # ONNX's outputs, with their num_directions axis (layout 0).
    "Y": ("step", "direction", "batch row", "unit"),
    "Y_h": ("direction", "batch row", "unit"),
    "Y_c": ("direction", "batch row", "unit"),
}


def axes_of(name: str) -> tuple[str, ...] | None:
    """The axes of ``name``, also for gradient names such as ``dW``, ``grad W`` or ``layer 1 direction 0 W``."""
    for candidate in (name, name.split()[-1], name.split(".")[-1], name.removeprefix("d"), name.removeprefix("grad_")):
        if candidate in AXES:
            return AXES[candidate]
    return None


def describe_index(name: str, index: tuple[int, ...], shape: tuple[int, ...] | None = None, num_directions: int = 1) -> str:
    """Where ``index`` of tensor ``name`` is, in the LSTM's terms: ``(1, 2, 0)`` of W -> ``gate f, unit 2, input 0``.
    With the tensor's ``shape`` and the layer's ``num_directions``, a state's cell reads ``layer 1 direction 0`` (left
    out for a layer of one cell) and an output feature ``direction 1, unit 3`` (the unit alone for one direction)."""
    axes = axes_of(name)
    if axes is not None and axes[0] == "cell" and len(index) == len(axes) - 1:
        axes = axes[1:]  # a state of one cell, as the cell's contract shapes it (B, H)
    if axes is None or len(axes) != len(index):
        return f"index {tuple(index)}"
    parts = []
    for position, (axis, k) in enumerate(zip(axes, index)):
        size = None if shape is None else shape[position]
        if axis == "cell":
            if size != 1:
                parts.append(f"layer {k // num_directions} direction {k % num_directions}")
        elif axis == "feature":
            if num_directions > 1 and size is not None:
                width = size // num_directions
                parts.append(f"direction {k // width}, unit {k % width}")
            else:
                parts.append(f"unit {k}")
        elif axis == "gate":
            parts.append(f"gate {GATES[k]}")
        elif axis == "peephole gate":
            parts.append(f"peephole {PEEPHOLE_GATES[k]}")
        else:
            parts.append(f"{axis} {k}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Comparison:
    name: str
    ok: bool
    worst_error: float  # |got - expected| at the worst element
    worst_ratio: float  # that error over its tolerance; <= 1 passes
    index: tuple[int, ...] | None
    got: float | None
    expected: float | None
    atol: float
    rtol: float
    problem: str = ""  # set when the tensors could not be compared element by element
    shape: tuple[int, ...] | None = None
    num_directions: int = 1

    @property
    def where(self) -> str:
        return describe_index(self.name, self.index, self.shape, self.num_directions) if self.index is not None else ""

    def message(self, context: str = "") -> str:
        prefix = f"{context}: " if context else ""
        if self.problem:
            return f"{prefix}{self.name}: {self.problem}"
        tolerance = self.atol + self.rtol * abs(self.expected)
        verdict = f"exceeded {self.worst_ratio:.4g}x" if not self.ok else f"within it ({self.worst_ratio:.2g} of it used)"
        return (
            f"{prefix}{self.name}: worst error {self.worst_error:.3g} at {self.where}: "
            f"got {self.got:.10g}, expected {self.expected:.10g}; tolerance {tolerance:.3g} "
            f"(atol {self.atol:g} + rtol {self.rtol:g} * |expected|), {verdict}"
        )


def compare(name: str, got: object, expected: np.ndarray, *, atol: float, rtol: float, num_directions: int = 1) -> Comparison:
    """Compare ``got`` with ``expected`` elementwise: |got - expected| <= atol + rtol * |expected|, in float64 whatever
    the dtypes (the check adds no rounding of its own). ``num_directions``: how the layer's cells and features read."""
    expected = np.asarray(expected)

    def refused(problem: str) -> Comparison:
        return Comparison(name, False, np.inf, np.inf, None, None, None, atol, rtol, problem, expected.shape, num_directions)

    if not isinstance(got, np.ndarray):
        return refused(f"not an array: got {type(got).__name__}")
    if got.shape != expected.shape:
        return refused(f"wrong shape: expected {expected.shape}, got {got.shape}")
    if not np.issubdtype(got.dtype, np.floating):
        return refused(f"wrong dtype: expected a floating-point dtype, got {got.dtype}")
    g = got.astype(np.float64)
    e = expected.astype(np.float64)
    if not np.isfinite(g).all():
        index = tuple(int(k) for k in np.argwhere(~np.isfinite(g))[0])
        return Comparison(name, False, np.inf, np.inf, index, float(g[index]), float(e[index]), atol, rtol, "", g.shape,
                          num_directions)
    error = np.abs(g - e)
    tolerance = atol + rtol * np.abs(e)
    # With a zero tolerance, any error at all is infinitely over it.
    ratio = np.divide(error, tolerance, out=np.where(error > 0, np.inf, 0.0), where=tolerance > 0)
    index = tuple(int(k) for k in np.unravel_index(np.argmax(ratio), ratio.shape))
    worst = float(ratio[index])
    return Comparison(name, worst <= 1.0, float(error[index]), worst, index, float(g[index]), float(e[index]), atol, rtol,
                      "", g.shape, num_directions)


def assert_close(name: str, got: object, expected: np.ndarray, *, atol: float, rtol: float, context: str = "",
                 num_directions: int = 1) -> Comparison:
    """:func:`compare`, raising AssertionError with the standard message on failure."""
    result = compare(name, got, expected, atol=atol, rtol=rtol, num_directions=num_directions)
    if not result.ok:
        raise AssertionError(result.message(context))
    return result


__all__ = ["AXES", "Comparison", "assert_close", "axes_of", "compare", "describe_index"]
