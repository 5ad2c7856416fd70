"""Comparing tensors, and the one failure message every check uses.

A comparison finds the worst element (the largest error measured against the
tolerance, atol + rtol * |expected|), and says where it is in the LSTM's
terms: tensor, gate, time step, batch row, unit. A failing check reads like

    h_seq: worst error 3.2e-04 at step 3, batch row 1, unit 2: got 0.4121,
    expected 0.4124; tolerance 1.0e-06 (atol 1e-06 + rtol 1e-06 * |expected|),
    exceeded 320x
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec.params import GATES, PEEPHOLE_GATES

#: What each axis of each named tensor means. Gradients share their tensor's axes.
AXES: dict[str, tuple[str, ...]] = {
    "x": ("step", "batch row", "input"),
    "h_seq": ("step", "batch row", "unit"),
    "dh_seq": ("step", "batch row", "unit"),
    "h_T": ("batch row", "unit"),
    "c_T": ("batch row", "unit"),
    "h0": ("batch row", "unit"),
    "c0": ("batch row", "unit"),
    "dh_T": ("batch row", "unit"),
    "dc_T": ("batch row", "unit"),
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


#: A layer's tensors (spec/layer.py) where they differ from the cell's: the states carry one row per cell
#: (layer l, direction d: cell l * D + d), the output every direction's units side by side.
LAYER_AXES: dict[str, tuple[str, ...]] = {
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
}


def axes_of(name: str, layer: bool = False) -> tuple[str, ...] | None:
    """The axes of ``name``, also for gradient names such as ``dW``, ``grad W`` or ``layer 1 direction 0 W``."""
    for candidate in (name, name.split()[-1], name.removeprefix("d")):
        if layer and candidate in LAYER_AXES:
            return LAYER_AXES[candidate]
        if candidate in AXES:
            return AXES[candidate]
    return None


def describe_index(name: str, index: tuple[int, ...], num_directions: int | None = None) -> str:
    """``(1, 2, 0)`` of W -> ``gate f, unit 2, input 0``; with ``num_directions`` (a layer's tensor), a cell
    index reads ``layer 1 direction 0``."""
    axes = axes_of(name, layer=num_directions is not None)
    if axes is None or len(axes) != len(index):
        return f"index {tuple(index)}"
    parts = []
    for axis, k in zip(axes, index):
        if axis == "cell":
            parts.append(f"layer {k // num_directions} direction {k % num_directions}")
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
    num_directions: int | None = None  # a layer's tensors: how cell indices read

    @property
    def where(self) -> str:
        return describe_index(self.name, self.index, self.num_directions) if self.index is not None else ""

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


def compare(name: str, got: object, expected: np.ndarray, *, atol: float, rtol: float, num_directions: int | None = None) -> Comparison:
    """Compare ``got`` with ``expected`` elementwise: |got - expected| <= atol + rtol * |expected|.
    ``num_directions``: the tensors are a layer's (spec/layer.py), where a state's first index is a cell."""
    expected = np.asarray(expected)

    def refused(problem: str) -> Comparison:
        return Comparison(name, False, np.inf, np.inf, None, None, None, atol, rtol, problem, num_directions)

    if not isinstance(got, np.ndarray):
        return refused(f"not an array: got {type(got).__name__}")
    if got.shape != expected.shape:
        return refused(f"wrong shape: expected {expected.shape}, got {got.shape}")
    if not np.issubdtype(got.dtype, np.floating):
        return refused(f"wrong dtype: expected a floating-point dtype, got {got.dtype}")
    # Compare in float64 whatever the dtypes, so the check adds no rounding of its own.
    g = got.astype(np.float64)
    e = expected.astype(np.float64)
    if not np.isfinite(g).all():
        index = tuple(int(k) for k in np.argwhere(~np.isfinite(g))[0])
        return Comparison(name, False, np.inf, np.inf, index, float(g[index]), float(e[index]), atol, rtol, "", num_directions)
    error = np.abs(g - e)
    tolerance = atol + rtol * np.abs(e)
    # With a zero tolerance, any error at all is infinitely over it.
    ratio = np.divide(error, tolerance, out=np.where(error > 0, np.inf, 0.0), where=tolerance > 0)
    index = tuple(int(k) for k in np.unravel_index(np.argmax(ratio), ratio.shape))
    worst = float(ratio[index])
    return Comparison(name, worst <= 1.0, float(error[index]), worst, index, float(g[index]), float(e[index]), atol, rtol, "", num_directions)


def assert_close(name: str, got: object, expected: np.ndarray, *, atol: float, rtol: float, context: str = "") -> Comparison:
    """:func:`compare`, raising AssertionError with the standard message on failure."""
    result = compare(name, got, expected, atol=atol, rtol=rtol)
    if not result.ok:
        raise AssertionError(result.message(context))
    return result
