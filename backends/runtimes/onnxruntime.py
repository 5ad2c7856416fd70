"""ONNX Runtime's runtime: onnxruntime is imported only when a row first needs it.

NumPy in, NumPy out: a session takes NumPy feeds and answers NumPy arrays, on the CPU and on CUDA alike (there it
copies the feeds to the GPU and the outputs back on every run, so a timed pass on CUDA is not device-resident: the
NumPy runtime's ``resident``). No gradients: ONNX Runtime registers none for LSTM. Every session is made by :meth:`session`:
the CPU or the CUDA execution provider alone, and ``intra_op_num_threads`` = ``LSTMC_THREADS`` when set (validated
as every runtime does, :func:`contract.runtime.threads_wanted`), else the CPU count.
"""

from __future__ import annotations

import os

from contract.runtime import NumpyRuntime, framework_problem, import_framework, threads_wanted
from contract.vocabulary import Device, Dtype

INSTALL_HINT = "onnxruntime is not installed (pip install 'lstm-conformance[onnxruntime]')"
NO_CUDA_PROVIDER = "no CUDA execution provider in this onnxruntime build (install onnxruntime-gpu on a machine with a GPU)"
#: What every row that ends in ONNX Runtime's LSTM kernel does not do, in its words.
LSTM_KERNEL_REASONS = {
    Dtype.FLOAT64: "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
    Dtype.FLOAT16: "ONNX Runtime's LSTM kernel is float32 only",
    Dtype.BFLOAT16: "ONNX Runtime's LSTM kernel is float32 only",
    "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
}


def onnxruntime():
    return import_framework("onnxruntime", INSTALL_HINT)


#: ONNX Runtime's graph optimisation levels by the words rows use: everything (its default, what every row ran before
#: the level was recorded) or nothing (the exported graph as the exporter wrote it).
OPTIMIZATIONS = {"all": "ORT_ENABLE_ALL", "none": "ORT_DISABLE_ALL"}


def intra_op_threads() -> int:
    """The thread count every session gets: LSTMC_THREADS, else one per CPU (ONNX Runtime's own default differs)."""
    return threads_wanted() or os.cpu_count() or 1


class OnnxRuntime(NumpyRuntime):
    name = "onnxruntime"

    def availability(self, device: str) -> str | None:
        if (problem := framework_problem("onnxruntime", INSTALL_HINT)) is not None:
            return problem
        if device == Device.CUDA and "CUDAExecutionProvider" not in onnxruntime().get_available_providers():
            return NO_CUDA_PROVIDER
        return None

    def environment(self, device: str) -> dict[str, object]:
        ort = onnxruntime()
        return {"onnxruntime": ort.__version__, "intra_op_threads": intra_op_threads(),
                "providers": ort.get_available_providers(), "graph_optimization_level": OPTIMIZATIONS["all"]}

    def session(self, model, device: str, *, quiet: bool = False, optimization: str = "all"):
        """An InferenceSession of ``model`` (a ModelProto or its bytes) on ``device``, its graph optimised as
        ``optimization`` says (:data:`OPTIMIZATIONS`). ``quiet``: a refusal the caller expects and reports itself is
        not also ONNX Runtime's own log line on stderr."""
        ort = onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATIONS[optimization])
        if quiet:
            options.log_severity_level = 4
        providers = ["CUDAExecutionProvider"] if device == Device.CUDA else ["CPUExecutionProvider"]
        serialized = model if isinstance(model, bytes) else model.SerializeToString()
        return ort.InferenceSession(serialized, options, providers=providers)


ONNXRUNTIME = OnnxRuntime()

__all__ = ["INSTALL_HINT", "LSTM_KERNEL_REASONS", "NO_CUDA_PROVIDER", "ONNXRUNTIME", "OPTIMIZATIONS", "OnnxRuntime", "intra_op_threads",
           "onnxruntime"]
