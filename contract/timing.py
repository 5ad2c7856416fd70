"""What benchmarks time: one pass of an implementation, on device-resident inputs, in a judged dtype or a
half type.

A row gives a :class:`TimedPass` through :meth:`contract.row.Row.timed_pass`: its inputs uploaded (and
rounded to a half type) once, each ``run()`` one pass that returns when the device has finished. A row that
cannot keep its inputs on a device (a plug-in, a row in a process of its own) is timed through its
``forward()``/``backward()`` entry points, NumPy in and out, conversions and checks included
(:func:`through_numpy`), and reports say so (``resident=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contract.vocabulary import HALF_DTYPES, Device, Dtype


@dataclass(frozen=True)
class Timing:
    """What a benchmark times: one pass (forward, or forward+backward when ``gradients``) in ``dtype`` on ``device``."""

    dtype: Dtype = Dtype.FLOAT32
    device: Device = Device.CPU
    gradients: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dtype", Dtype.parse(self.dtype, "Timing.dtype"))
        object.__setattr__(self, "device", Device.parse(self.device, "Timing.device"))

    @property
    def half(self) -> bool:
        return self.dtype in HALF_DTYPES

    @property
    def source_dtype(self) -> Dtype:
        """The dtype of the NumPy inputs: the pass's own, or float32 for a half pass (rounded on upload)."""
        return Dtype.FLOAT32 if self.half else self.dtype


@dataclass
class TimedPass:
    """One pass, ready to be timed.

    ``run()`` does the pass and returns once the device has finished it. ``result()`` gives what the last run
    computed that needs no native layout, as float64 NumPy arrays: ``y`` for a forward pass, the gradients
    ``x``, ``h0`` and ``c0`` for forward+backward; the benchmark checks it against the spec, so that a wrong
    answer is never timed. ``resident`` says whether the inputs stay on the device between runs.
    """

    run: Callable[[], None]
    result: Callable[[], dict[str, np.ndarray]]
    resident: bool


def through_numpy(forward: Callable, backward: Callable, gradients: bool) -> TimedPass:
    """A pass timed through a row's ``forward()`` / ``backward()`` entry points (bound by the caller, called with
    no arguments): NumPy in and out, conversions and checks included."""
    last: dict[str, np.ndarray] = {}
    if gradients:

        def run():
            grads = backward()
            last.update(x=grads.x, h0=grads.h0, c0=grads.c0)
    else:

        def run():
            last["y"] = forward().y

    return TimedPass(run, lambda: {k: np.asarray(v, np.float64) for k, v in last.items()}, resident=False)


__all__ = ["TimedPass", "Timing", "through_numpy"]
