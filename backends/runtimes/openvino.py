"""OpenVINO's runtime: openvino is imported only when a row first needs it.

NumPy in, NumPy out, as ONNX Runtime's: a model (ONNX bytes, an ``ov.Model``) is compiled once by the CPU plugin and
answers NumPy arrays. Every compilation is made by :meth:`OpenVinoRuntime.compile`, which sets what OpenVINO would
otherwise pick by machine, explicitly:

- ``INFERENCE_PRECISION_HINT``: the precision the CPU plugin computes a float32 model in. Its default is the machine's:
  f32 on a CPU without bfloat16 instructions, but **bf16** on one with AVX-512 BF16 or AMX (read back on a 2-core
  AMD EPYC with AVX-512 BF16: ``bfloat16``), so a float32 row that left it alone would be judged in bfloat16 on
  one machine kind and float32 on the other. Each runtime instance names its precision (:data:`F32`, :data:`BF16`).
- ``EXECUTION_MODE_HINT``: ACCURACY for f32 (OpenVINO's own words: "keeps the original precision"), PERFORMANCE for
  bf16 (where a reduced precision is what is asked for; an explicit precision hint outranks the mode either way).
- ``INFERENCE_NUM_THREADS`` = ``LSTMC_THREADS`` when set (:func:`contract.runtime.threads_wanted`), else OpenVINO's
  own choice (0: every core).

What is in effect is read back from the compiled model (``compiled.get_property``), not assumed: the environment
records it from a one-node probe compiled as every model is.

OpenVINO has no CUDA plugin: its GPU plugin is for Intel GPUs (OpenCL / Level Zero), which this project does not run.
No gradients: OpenVINO compiles inference graphs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from contract.runtime import NumpyRuntime, framework_problem, import_framework, threads_wanted
from contract.vocabulary import Device, Dtype
from spec.validation import cast

INSTALL_HINT = "openvino is not installed (pip install 'lstm-conformance[openvino]')"
NO_CUDA = ("OpenVINO has no CUDA plugin (its GPU plugin runs Intel GPUs through OpenCL); this project runs its CPU "
           "plugin only")
#: The plugin every model is compiled for.
CPU_PLUGIN = "CPU"
#: The inference precisions a runtime is made for (OpenVINO's element type names).
F32 = "f32"
BF16 = "bf16"


def openvino():
    return import_framework("openvino", INSTALL_HINT)


class ModelError(ValueError):
    """A model OpenVINO cannot read or compile, with what was read."""


@dataclass(eq=False)
class Session:
    """A compiled model, called as an ONNX Runtime session is: ``run(None, feeds)`` -> its outputs in order."""

    compiled: object
    request: object

    def run(self, output_names, feeds) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        outputs = self.compiled.outputs
        if output_names is not None:
            outputs = [self.compiled.output(name) for name in output_names]
        # copies: the request reuses its output buffers on the next call
        return [np.array(results[output]) for output in outputs]

    def property(self, name: str):
        return self.compiled.get_property(name)


class OpenVinoRuntime(NumpyRuntime):
    """OpenVINO's CPU plugin with one inference precision, ``precision`` (f32 or bf16), set on every compilation."""

    name = "openvino"

    def __init__(self, precision: str = F32):
        if precision not in (F32, BF16):
            raise ValueError(f"OpenVinoRuntime: precision must be {F32!r} or {BF16!r}, got {precision!r}")
        self.precision = precision
        self._core = None

    def core(self):
        """One ov.Core per runtime (its plugins load once)."""
        if self._core is None:
            self._core = openvino().Core()
        return self._core

    def availability(self, device: str) -> str | None:
        if (problem := framework_problem("openvino", INSTALL_HINT)) is not None:
            return problem
        if device == Device.CUDA:
            return NO_CUDA
        if CPU_PLUGIN not in self.core().available_devices:
            return f"OpenVINO {openvino().__version__} lists no CPU plugin here (available: {self.core().available_devices})"
        return None

    def config(self) -> dict:
        """The compilation's properties: the precision and execution mode, and the threads when LSTMC_THREADS says."""
        ov = openvino()
        hints = ov.properties.hint
        mode = hints.ExecutionMode.ACCURACY if self.precision == F32 else hints.ExecutionMode.PERFORMANCE
        config = {hints.inference_precision: getattr(ov.Type, self.precision), hints.execution_mode: mode}
        if (threads := threads_wanted()) is not None:
            config[ov.properties.inference_num_threads] = threads
        return config

    def read(self, model, what: str = "model"):
        """An ``ov.Model`` from ONNX bytes (or a ModelProto, or an ``ov.Model`` as it is); ModelError naming ``what``
        and its size when OpenVINO cannot read it."""
        ov = openvino()
        if isinstance(model, ov.Model):
            return model
        data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
        try:
            # Bytes go to the frontend that claims them (ONNX's for a ModelProto); weights=b"": none outside the model.
            return self.core().read_model(model=bytes(data), weights=b"")
        except Exception as error:
            raise ModelError(f"OpenVINO {ov.__version__} cannot read the {what} ({len(data)} bytes, starting "
                             f"{bytes(data[:16])!r}): {type(error).__name__}: {first_line(error)}") from error

    def compile(self, model, what: str = "model"):
        """``model`` compiled for the CPU plugin with this runtime's precision set explicitly; ModelError naming
        ``what`` when the plugin refuses it."""
        model = self.read(model, what)
        try:
            return self.core().compile_model(model, CPU_PLUGIN, self.config())
        except RuntimeError as error:
            raise ModelError(f"OpenVINO {openvino().__version__}'s CPU plugin cannot compile the {what}: "
                             f"{first_line(error)}") from error

    def session(self, model, device: str, what: str = "model") -> Session:
        """A compiled model called like an ONNX Runtime session; ``device`` must be the CPU (availability says so)."""
        if device != Device.CPU:
            raise ValueError(f"OpenVINO runs on the CPU only in this project, not {device}")
        compiled = self.compile(model, what)
        return Session(compiled, compiled.create_infer_request())

    def in_effect(self, compiled) -> dict[str, object]:
        """What the compiled model runs with, read back from it."""
        return {
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "execution_mode": compiled.get_property("EXECUTION_MODE_HINT").name,
            "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS"),
        }

    def probe(self):
        """A one-node model (Relu of a float32 vector), compiled as every model is: what is in effect, read back."""
        ov = openvino()
        x = ov.opset13.parameter([1, 4], ov.Type.f32, name="x")
        return self.compile(ov.Model([ov.opset13.relu(x)], [x], "probe"))

    def cast(self, tensor, dtype: Dtype):
        """A NumPy array rounded to a half type (to nearest even), for a half-type timed pass: the row feeds its values
        as float32."""
        return cast(np.asarray(tensor), dtype, "tensor")

    def environment(self, device: str) -> dict[str, object]:
        ov, core = openvino(), self.core()
        return {
            "openvino": ov.__version__,
            "device": core.get_property(CPU_PLUGIN, "FULL_DEVICE_NAME"),
            "optimization_capabilities": list(core.get_property(CPU_PLUGIN, "OPTIMIZATION_CAPABILITIES")),
            "precision_asked": self.precision,
            **self.in_effect(self.probe()),
            "threads_asked": threads_wanted(),
        }


#: The C++ frames OpenVINO's exceptions wrap their message in ("Exception from src/inference/src/cpp/core.cpp:105: ").
_FRAME = re.compile(r"(Exception from \S+:\d+:|Check '.*?' failed at \S+:\d+:)\s*")


def first_line(error: Exception) -> str:
    """OpenVINO's message without the C++ frames around it, on one line."""
    return " ".join(_FRAME.sub("", str(error)).split()) or type(error).__name__


OPENVINO = OpenVinoRuntime(F32)
OPENVINO_BF16 = OpenVinoRuntime(BF16)

__all__ = ["BF16", "CPU_PLUGIN", "F32", "INSTALL_HINT", "NO_CUDA", "OPENVINO", "OPENVINO_BF16", "ModelError",
           "OpenVinoRuntime", "Session", "first_line", "openvino"]
