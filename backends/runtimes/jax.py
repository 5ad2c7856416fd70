"""JAX's runtime (and flax's: the same, with flax's import and version): jax is imported only when a row first needs it.

Numerics: every traced matrix product runs under ``jax.default_matmul_precision("highest")`` (set inside the traced
function, where jax reads it), so no TF32 or bf16 pass is used on a GPU. float64 needs jax's x64 mode: it is switched
on (globally, ``jax_enable_x64``) when the first float64 array goes to a device; every answer's dtype is checked by
the contract rather than trusted, since jax without x64 silently computes a float64 request in float32.

``run(function, *args)`` is ``jax.jit(function)``, kept per function object (a row passes one per layer), so jax
compiles once per shape and dtype; ``vjp`` is a jitted ``jax.vjp`` of the same function with respect to the built
parameters (a pytree of float arrays) and the inputs, kept the same way. jax dispatches asynchronously: the runtime
keeps the last result it handed out, and ``synchronize`` blocks until it is ready.

Compilations are kept on disk too, in JAX's own persistent compilation cache (:func:`compilation_cache`): XLA's
compilation of each case's programs is most of what a JAX row costs the suite, and the executable a cache hit
loads is the one a fresh compilation would make (the key holds the program, the jax and jaxlib versions, the XLA
flags and the device). ``LSTMC_JAX_CACHE`` names another directory, or ``off``; the environment records it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from contract.runtime import Runtime, framework_problem, import_framework, tf32_wanted
from contract.vocabulary import Device

MATMUL_PRECISION = "highest"


def matmul_precision() -> str:
    """Every traced product's precision: "highest" (float32 products in float32), or TF32 where LSTMC_TF32=1 asks to
    measure it (contract.runtime.tf32_wanted)."""
    return "tensorfloat32" if tf32_wanted() else MATMUL_PRECISION
JAX_MISSING = "jax is not installed (pip install 'lstm-conformance[jax]')"
FLAX_MISSING = "flax is not installed (pip install 'lstm-conformance[jax]')"


def jax():
    module = import_framework("jax", JAX_MISSING)
    if not _CACHE_CONFIGURED:
        configure_compilation_cache(module)
    return module


_CACHE_CONFIGURED = False


def compilation_cache() -> str | None:
    """Where jax keeps compiled programs across processes and runs: ``LSTMC_JAX_CACHE`` (a directory, or ``off``), by
    default ``lstm-conformance/jax`` in the user's cache directory (``XDG_CACHE_HOME``, else ``~/.cache``)."""
    value = os.environ.get("LSTMC_JAX_CACHE")
    if value is not None and value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    if value:
        return os.path.abspath(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lstm-conformance", "jax")


def configure_compilation_cache(module) -> None:
    """Point jax at :func:`compilation_cache` (every compilation kept, however quick), once per process: Keras on its
    JAX backend calls it too, before Keras imports jax."""
    global _CACHE_CONFIGURED
    _CACHE_CONFIGURED = True
    directory = compilation_cache()
    if directory is None:
        return
    module.config.update("jax_compilation_cache_dir", directory)
    module.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    module.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def linen():
    """flax.linen."""
    return import_framework("flax.linen", FLAX_MISSING)


def experimental_rnn():
    """jax.experimental.rnn."""
    return import_framework("jax.experimental.rnn", JAX_MISSING)


def _platform(device: str) -> str:
    return "gpu" if device == Device.CUDA else "cpu"


def x64_enabled() -> bool:
    return bool(jax().config.read("jax_enable_x64"))


class JaxRuntime(Runtime):
    def __init__(self, name: str = "jax", *, with_flax: bool = False):
        self.name = name
        #: flax's rows: flax must import too, and its version is recorded.
        self.with_flax = with_flax
        self._device_problems: dict[str, str | None] = {}
        self._jitted: dict[Callable, Callable] = {}
        self._gradients: dict[Callable, Callable] = {}
        self._pending = None

    # -- availability and environment ------------------------------------------------------------------

    def device_problem(self, device: str) -> str | None:
        """Why jax has no ``device`` here (asked once per device)."""
        if device not in self._device_problems:
            try:
                jax().devices(_platform(device))
                self._device_problems[device] = None
            except RuntimeError as error:
                self._device_problems[device] = (
                    f"jax sees no GPU ({error}); install jax[cuda12] on a machine with a CUDA GPU" if device == Device.CUDA
                    else f"jax has no CPU backend ({error})")
        return self._device_problems[device]

    def device(self, device: str):
        """The jax device for ``device``."""
        return jax().devices(_platform(device))[0]

    def availability(self, device: str) -> str | None:
        problem = framework_problem("jax", JAX_MISSING)
        if problem is None and self.with_flax:
            problem = framework_problem("flax.linen", FLAX_MISSING)
        return problem or self.device_problem(device)

    def environment(self, device: str) -> dict[str, object]:
        j, jaxlib = jax(), import_framework("jaxlib", JAX_MISSING)
        env: dict[str, object] = {"jax": j.__version__, "jaxlib": jaxlib.__version__}
        if self.with_flax:
            try:
                import flax

                env["flax"] = flax.__version__
            except ImportError:
                env["flax"] = None
        reason = self.device_problem(device)
        if reason is None:
            d = self.device(device)
            env["device"] = f"{d.platform}: {d.device_kind}"
            if device == Device.CPU:
                env["cpu_count"] = os.cpu_count()
        else:
            env["device"] = f"unavailable: {reason}"
        env["default_backend"] = j.default_backend()
        env["x64"] = "on" if x64_enabled() else "off (switched on at the first float64 run)"
        env["matmul_precision"] = matmul_precision()
        env["compilation_cache"] = compilation_cache() or "off (LSTMC_JAX_CACHE)"
        if os.environ.get("XLA_FLAGS"):
            env["XLA_FLAGS"] = os.environ["XLA_FLAGS"]
        return env

    # -- arrays --------------------------------------------------------------------------------------

    def to_device(self, array: np.ndarray, device: str):
        """A copy of ``array`` on the device; a float64 array switches x64 on first (else jax would make it float32)."""
        array = np.array(array)
        if array.dtype == np.float64 and not x64_enabled():
            jax().config.update("jax_enable_x64", True)
        return jax().device_put(array, self.device(device))

    def to_numpy(self, tensor) -> np.ndarray:
        return np.asarray(tensor)

    def cast(self, tensor, dtype):
        return tensor.astype(jax().numpy.dtype(str(dtype)))

    def synchronize(self, device: str) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            jax().block_until_ready(pending)

    # -- calls ---------------------------------------------------------------------------------------

    def run(self, function, *args):
        jitted = self._jitted.get(function)
        if jitted is None:
            j = jax()

            def traced(*arguments):
                with j.default_matmul_precision(matmul_precision()):
                    return function(*arguments)

            jitted = self._jitted[function] = j.jit(traced)
        self._pending = out = jitted(*args)
        return out

    def vjp(self, function, built, inputs, cotangents, extra=()):
        gradients = self._gradients.get(function)
        if gradients is None:
            j = jax()

            def traced(built, inputs, cotangents, extra):
                with j.default_matmul_precision(matmul_precision()):
                    _, pullback = j.vjp(lambda b, *i: function(b, *i, *extra), built, *inputs)
                    return pullback(tuple(cotangents))

            gradients = self._gradients[function] = j.jit(traced)
        self._pending = out = gradients(built, tuple(inputs), tuple(cotangents), tuple(extra))
        return out


JAX = JaxRuntime("jax")
FLAX = JaxRuntime("flax", with_flax=True)

__all__ = ["FLAX", "FLAX_MISSING", "JAX", "JAX_MISSING", "MATMUL_PRECISION", "JaxRuntime", "matmul_precision", "experimental_rnn", "jax",
           "linen", "x64_enabled"]
