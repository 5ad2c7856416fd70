"""A runtime: what one framework needs around any call of an LSTM in it, written once per framework.

Importing the framework and saying why it cannot (:meth:`Runtime.availability`), what a result depends
on (:meth:`Runtime.environment`: versions, device, TF32, threads), the numerics set before every call
(:meth:`Runtime.prepare`), moving arrays to the device and back (:meth:`Runtime.to_device`,
:meth:`Runtime.to_numpy`), running a function as the framework runs it (:meth:`Runtime.run`: eagerly, or
compiled once per shape), the framework's own gradients of it (:meth:`Runtime.vjp`), rounding to a half
type and waiting for the device (for timing).

A row (:mod:`contract.row`) supplies a function ``f(built, x, h0, c0, lengths, mask) -> (y, h_T, c_T)`` of
framework objects; its runtime runs it and differentiates it. :class:`NumpyRuntime` is the runtime of code
that takes and returns NumPy arrays (plug-ins, ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Mapping

import numpy as np

from contract.errors import NotSupported, Unavailable
from contract.vocabulary import Device, Dtype


def import_framework(module: str, install_hint: str):
    """Import a framework, or raise Unavailable saying why: "not installed" (with the hint) only when the module
    itself is missing; any other failure (a broken CUDA library's OSError, an ImportError inside the package)
    with the real error."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            raise Unavailable(install_hint) from None
        raise Unavailable(f"import {module} failed: {type(error).__name__}: {error}") from error
    except Exception as error:
        raise Unavailable(f"import {module} failed: {type(error).__name__}: {error}") from error


def framework_problem(module: str, install_hint: str) -> str | None:
    """None if ``module`` imports, else why not (:func:`import_framework`'s reason)."""
    try:
        import_framework(module, install_hint)
    except Unavailable as error:
        return str(error)
    return None


def threads_wanted() -> int | None:
    """LSTMC_THREADS, the CPU thread count every runtime is set to (None: the framework's default)."""
    value = os.environ.get("LSTMC_THREADS", "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LSTMC_THREADS must be a positive integer, got {value!r}")
    return int(value)


def tf32_wanted() -> bool:
    """LSTMC_TF32=1: float32 products on a GPU in TF32 (the frameworks' GPU default that the suite switches off), to
    measure what TF32 does to an LSTM (tools/device_check.py); 0 or unset: off. Recorded in each environment."""
    value = os.environ.get("LSTMC_TF32", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"LSTMC_TF32 must be 0 or 1, got {value!r}")
    return value == "1"


def cpu_model() -> str:
    """The CPU's name, for the environment recorded beside results."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


#: The CPU's instruction-set extensions that decide which kernels a framework takes (and so its rounding): recorded
#: beside every result, since machines of one kind differ (an AVX2-only EPYC one day, AVX-512 with BF16 the next).
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "avx_ne_convert", "amx_tile",
             "amx_bf16", "amx_fp16")


def cpu_features() -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU has (Linux's /proc/cpuinfo; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in ISA_FLAGS if flag in flags]
    except OSError:
        pass
    return []


class Runtime:
    """Base class: the defaults are NumPy's (nothing to import, arrays stay NumPy arrays, no gradients)."""

    #: The framework's name, as rows and reports give it.
    name: str = "numpy"

    def availability(self, device: str) -> str | None:
        """None if the framework imports and ``device`` is there; else why not. May raise: the row catches."""
        return None if device == Device.CPU else f"{self.name} runs on the CPU only"

    def environment(self, device: str) -> dict[str, object]:
        return {"device": cpu_model()} if device == Device.CPU else {}

    def prepare(self, device: str) -> None:
        """The numerics every call depends on (threads, TF32 off), set before each one."""

    def to_device(self, array: np.ndarray, device: str):
        """A NumPy array as the framework's tensor on ``device``: a copy, never a view of the caller's memory."""
        return np.array(array)

    def to_numpy(self, tensor) -> np.ndarray:
        """A framework tensor as a NumPy array; its dtype is checked by the contract, not trusted."""
        return np.asarray(tensor)

    def tree_to_device(self, tree, device: str):
        """A NumPy array, or a nested mapping of them (a native tree), on the device; anything else (an attribute) as
        it is."""
        if isinstance(tree, Mapping):
            return {name: self.tree_to_device(value, device) for name, value in tree.items()}
        return self.to_device(tree, device) if isinstance(tree, np.ndarray) else tree

    def tree_to_numpy(self, tree):
        """A tensor, or a nested mapping of them (a native tree's gradients), as NumPy arrays."""
        if isinstance(tree, Mapping):
            return {name: self.tree_to_numpy(value) for name, value in tree.items()}
        return self.to_numpy(tree)

    def run(self, function: Callable, *args):
        """``function(*args)`` as the framework runs it (inference: no gradient bookkeeping)."""
        return function(*args)

    def vjp(self, function: Callable, built, inputs: tuple, cotangents: tuple, extra: tuple = ()):
        """The framework's own gradients of ``function(built, *inputs, *extra)`` = (y, h_T, c_T) at these points for
        these cotangents: (gradients of ``built``'s differentiable leaves by name, then one per input)."""
        raise NotSupported(f"{self.name} computes no gradients")

    def cast(self, tensor, dtype: Dtype):
        """A tensor rounded to a half type, on its device (for timing)."""
        raise NotSupported(f"{self.name} does not run in {dtype}")

    def synchronize(self, device: str) -> None:
        """Wait until the device has finished what was asked of it (timing)."""

    def resident(self, device: str) -> bool:
        """Whether its tensors stay on ``device`` between calls (a timed pass reports it)."""
        return True

    @contextlib.contextmanager
    def on(self, device: str):
        """Everything the row does, on ``device`` (TensorFlow's and Keras' device scopes)."""
        yield


class NumpyRuntime(Runtime):
    """NumPy in, NumPy out: a plug-in's functions, ONNX Runtime's sessions."""

    def resident(self, device: str) -> bool:
        """NumPy arrays live on the CPU: anywhere else every call copies in and out."""
        return device == Device.CPU


NUMPY = NumpyRuntime()


__all__ = ["ISA_FLAGS", "NUMPY", "NumpyRuntime", "Runtime", "cpu_features", "cpu_model", "framework_problem", "import_framework",
           "threads_wanted"]
