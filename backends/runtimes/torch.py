"""PyTorch's runtime: torch is imported only when a row first needs it.

Numerics (:meth:`TorchRuntime.prepare`, before every call, and recorded by ``environment()``): the CPU thread
count is ``LSTMC_THREADS`` when set, else torch's default; on CUDA, TF32 is off for matrix products and for
cuDNN, and ``LSTMC_CUDNN=0`` runs torch.nn.LSTM on PyTorch's own CUDA kernels instead of cuDNN's (to tell the
two apart). Gradients by ``torch.autograd.grad`` with respect to x, h0, c0 and every parameter of the built
module (or every tensor of a built dict).
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import cache

import numpy as np

from contract.runtime import (
    Runtime,
    cpu_model,
    framework_problem,
    import_framework,
    tf32_wanted,
    threads_wanted,
)
from contract.vocabulary import Device
from spec.validation import check_dtype

INSTALL_HINT = "torch is not installed (pip install 'lstm-conformance[torch]')"


def torch():
    return import_framework("torch", INSTALL_HINT)


def cudnn_wanted() -> bool | None:
    """LSTMC_CUDNN=0: torch.nn.LSTM on PyTorch's own CUDA kernels; 1 or unset: cuDNN stays on."""
    value = os.environ.get("LSTMC_CUDNN", "")
    if value == "":
        return None
    if value not in ("0", "1"):
        raise ValueError(f"LSTMC_CUDNN must be 0 or 1, got {value!r}")
    return value == "1"



def lstm_cpu_kernels(t) -> dict[str, str]:
    """Which kernel nn.LSTM takes on this CPU, per dtype, by the rule aten/src/ATen/native/RNN.cpp (use_mkldnn)
    applies: oneDNN's fused LSTM where oneDNN is enabled and supports the dtype here (bfloat16 needs AVX-512 or
    AVX-NE-CONVERT; float16, inference only, AVX-512 FP16 or AVX-NE-CONVERT), else ATen's own cell; packed sequences
    and projections always take ATen's cell. The policy a half LSTM follows depends on it (README, Precision
    policies)."""
    enabled = t.backends.mkldnn.is_available() and t.backends.mkldnn.enabled
    supports = {"float32": True}
    for dtype, check in (("bfloat16", "_is_mkldnn_bf16_supported"), ("float16", "_is_mkldnn_fp16_supported")):
        try:
            supports[dtype] = bool(getattr(t.ops.mkldnn, check)())
        except (AttributeError, RuntimeError):
            supports[dtype] = False
    kernels = {dtype: "oneDNN" if enabled and ok else "ATen" for dtype, ok in supports.items()}
    if kernels["float16"] == "oneDNN":
        kernels["float16"] = "oneDNN without gradients, ATen with them"
    kernels["packed sequences, projections"] = "ATen"
    return kernels

def from_numpy(array: np.ndarray):
    """A CPU tensor sharing ``array``'s memory; torch reads no ml_dtypes array, so bfloat16 goes through its bits."""
    t = torch()
    if array.dtype == check_dtype("bfloat16", storage=True):
        return t.from_numpy(array.view(np.int16)).view(t.bfloat16)
    return t.from_numpy(array)


@cache
def lstm_cpu_kernels_seen() -> dict[str, str]:
    """Which kernel nn.LSTM did take on this CPU, per dtype, by evidence: a small nn.LSTM run once under oneDNN's
    verbose mode (``torch.backends.mkldnn.verbose``, what ``ONEDNN_VERBOSE=1`` prints), the implementation of the rnn
    primitive it executed ("oneDNN brgemm:avx512_core_bf16"), or ATen's cell where no oneDNN primitive ran. Its C
    library prints to file descriptor 1, which is redirected to a file for the call."""
    t = torch()
    seen = {}
    for dtype in ("float32", "bfloat16", "float16"):
        lstm, x = t.nn.LSTM(4, 8).to(getattr(t, dtype)), t.zeros(3, 2, 4, dtype=getattr(t, dtype))
        with tempfile.TemporaryFile() as printed:
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(printed.fileno(), 1)
            try:
                with t.backends.mkldnn.verbose(t.backends.mkldnn.VERBOSE_ON), t.inference_mode():
                    lstm(x)
            except RuntimeError as error:  # a dtype the CPU cannot run at all: its own evidence
                seen[dtype] = f"failed: {error}"
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            printed.seek(0)
            lines = [line.split(",") for line in printed.read().decode(errors="replace").splitlines()]
        primitives = [fields[6] for fields in lines if len(fields) > 6 and fields[2:6] == ["primitive", "exec", "cpu", "rnn"]]
        seen.setdefault(dtype, f"oneDNN {primitives[0]}" if primitives else "ATen (no oneDNN rnn primitive ran)")
    return seen


class TorchRuntime(Runtime):
    name = "torch"

    def availability(self, device: str) -> str | None:
        if (problem := framework_problem("torch", INSTALL_HINT)) is not None:
            return problem
        if device == Device.CUDA and not torch().cuda.is_available():
            if torch().version.cuda is None:
                return f"no CUDA: this torch ({torch().__version__}) is a CPU-only build"
            return "no CUDA device visible to torch (torch.cuda.is_available() is False)"
        return None

    def prepare(self, device: str) -> None:
        t = torch()
        threads = threads_wanted()
        if threads is not None and t.get_num_threads() != threads:
            t.set_num_threads(threads)
        if device == Device.CUDA:
            t.backends.cuda.matmul.allow_tf32 = tf32_wanted()
            t.backends.cudnn.allow_tf32 = tf32_wanted()
            if (cudnn := cudnn_wanted()) is not None:
                t.backends.cudnn.enabled = cudnn
        else:
            # oneDNN's knob that makes a *float32* LSTM compute its products in bfloat16 (or TF32) on CPUs that can
            # (PR #126051): pinned to full float32, so that a float32 row is judged as float32.
            rnn = getattr(getattr(t.backends.mkldnn, "rnn", None), "fp32_precision", None)
            if rnn is not None and rnn != "ieee":
                t.backends.mkldnn.rnn.fp32_precision = "ieee"

    def environment(self, device: str) -> dict[str, object]:
        t = torch()
        self.prepare(device)
        env: dict[str, object] = {
            "torch": t.__version__,
            "device": cpu_model() if device == Device.CPU else t.cuda.get_device_name(),
            "threads": t.get_num_threads(),
            "threads_env": os.environ.get("LSTMC_THREADS"),
            "tf32_wanted": tf32_wanted(),
            "tf32_matmul": t.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": t.backends.cudnn.allow_tf32,
        }
        # torch >= 2.9 also has per-backend fp32_precision settings ("none" inherits from the level above, "ieee" is
        # full float32, "tf32" allows TF32); the legacy flags above set them, but they are recorded too.
        precision = {}
        for name, getter in (("generic", lambda: t.backends.fp32_precision),
                             ("cuda.matmul", lambda: t.backends.cuda.matmul.fp32_precision),
                             ("cudnn.rnn", lambda: t.backends.cudnn.rnn.fp32_precision)):
            try:
                precision[name] = getter()
            except AttributeError:
                pass
        if precision:
            env["fp32_precision"] = precision
        if device == Device.CUDA:
            env.update(cuda=t.version.cuda, cudnn=t.backends.cudnn.version(), cudnn_enabled=t.backends.cudnn.enabled)
        else:
            env["mkldnn"] = t.backends.mkldnn.is_available() and t.backends.mkldnn.enabled
            env["lstm_cpu_kernels"] = lstm_cpu_kernels(t)
            env["lstm_cpu_kernels_seen"] = lstm_cpu_kernels_seen()
            if (rnn := getattr(getattr(t.backends.mkldnn, "rnn", None), "fp32_precision", None)) is not None:
                env["mkldnn_rnn_fp32_precision"] = rnn
        return env

    def to_device(self, array: np.ndarray, device: str):
        return from_numpy(np.array(array)).to(str(device))

    def to_numpy(self, tensor) -> np.ndarray:
        """The tensor as a NumPy array of its dtype (bfloat16 as ml_dtypes' bfloat16, the same bits)."""
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch().bfloat16:
            return tensor.view(torch().int16).numpy().view(check_dtype("bfloat16", storage=True))
        return tensor.numpy()

    def run(self, function, *args):
        with torch().inference_mode():
            return function(*args)

    def vjp(self, function, built, inputs, cotangents, extra=()):
        t = torch()
        inputs = [None if a is None else a.detach().requires_grad_() for a in inputs]
        if isinstance(built, t.nn.Module):
            weights = dict(built.named_parameters())
        else:  # a dict of tensors: differentiated as fresh leaves
            built = {name: value.detach().requires_grad_() if t.is_tensor(value) else value for name, value in built.items()}
            weights = {name: value for name, value in built.items() if t.is_tensor(value)}
        with t.enable_grad():
            outputs = function(built, *inputs, *extra)
            grads = t.autograd.grad(outputs, [*inputs, *weights.values()], grad_outputs=cotangents, allow_unused=True,
                                    materialize_grads=True)
        return dict(zip(weights, grads[len(inputs):])), *grads[: len(inputs)]

    def cast(self, tensor, dtype):
        return tensor.to(getattr(torch(), str(dtype)))

    def synchronize(self, device: str) -> None:
        if device == Device.CUDA:  # CUDA kernels run asynchronously; CPU ops have finished when they return
            torch().cuda.synchronize()


TORCH = TorchRuntime()

__all__ = ["INSTALL_HINT", "TORCH", "TorchRuntime", "cudnn_wanted", "torch"]
