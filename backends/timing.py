"""What benchmarks time: one pass of an implementation, on device-resident inputs, in a conformance dtype or
a half type. Kept apart from the conformance contract (:mod:`backends.base`): the spec has no half types, so
half runs are timed, not judged.

An implementation provides a :class:`TimedPass` through
:meth:`backends.base.Implementation.timed_pass`; one that supplies no hook of its own is timed through its
``forward()``/``backward()`` (:func:`through_numpy`), NumPy in and out, and reports say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from backends.config import DEVICES, DTYPES, VARIANTS, Config, check_choices

#: Half types an implementation may time in (on GPUs), beyond the conformance dtypes it declares.
HALF_DTYPES = ("float16", "bfloat16")
TIMING_DTYPES = DTYPES + HALF_DTYPES


@dataclass(frozen=True)
class Timing:
    """What a benchmark times: one pass (forward, or forward+backward when ``gradients``) in ``dtype``
    (:data:`TIMING_DTYPES`) on ``device``."""

    variant: str = "standard"
    dtype: str = "float32"
    device: str = "cpu"
    gradients: bool = False

    def __post_init__(self):
        check_choices(self, variant=VARIANTS, dtype=TIMING_DTYPES, device=DEVICES)

    @property
    def source_dtype(self) -> str:
        """The dtype of the NumPy inputs: the pass's own, or float32 for a half pass (rounded on upload)."""
        return "float32" if self.dtype in HALF_DTYPES else self.dtype

    @property
    def source_config(self) -> Config:
        """The conformance configuration whose inputs a timed pass starts from."""
        return Config(self.variant, self.source_dtype, self.device)


@dataclass
class TimedPass:
    """One pass, ready to be timed.

    ``run()`` does the pass and returns once the device has finished it (CUDA synchronised, jax
    blocked until ready, TensorFlow's results materialised). ``result()`` gives what the last run
    computed that needs no native layout, as float64 NumPy arrays: ``h_seq`` for a forward pass, the
    gradients ``x``, ``h0`` and ``c0`` for forward+backward; the benchmark checks it against the spec,
    so that a wrong answer is never timed. ``resident`` says whether the inputs stay on the device
    between runs (True) or every run goes through NumPy, conversions and transfers included (False).
    """

    run: Callable[[], None]
    result: Callable[[], dict[str, np.ndarray]]
    resident: bool


def through_numpy(forward: Callable, backward: Callable, timing: Timing, cotangents: Mapping | None, output: str = "h_seq") -> TimedPass:
    """A pass timed through an implementation's ``forward()`` and ``backward()`` entry points (called with
    no arguments here: the caller binds them): NumPy in and out, conversions and checks included.
    ``output`` names the per-step output the result reports (the cell's h_seq, a layer's y)."""
    last: dict[str, np.ndarray] = {}
    if timing.gradients:
        if cotangents is None:
            raise ValueError("a forward+backward pass needs cotangents")

        def run():
            grads = backward()
            last.update({k: grads[k] for k in ("x", "h0", "c0")})
    else:

        def run():
            last[output] = getattr(forward(), output)

    return TimedPass(run, lambda: {k: np.asarray(v, np.float64) for k, v in last.items()}, resident=False)
