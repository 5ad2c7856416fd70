"""ONNX Runtime's ``LSTM`` operator: forward only (ORT has no gradient for it), float32 only
("does not support double"), peepholes native. Layout: :mod:`backends.onnx_lstm`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends import onnx_lstm
from backends.base import Config, Implementation, NativeCache, framework_problem, import_framework
from backends.timing import TimedPass, Timing
from spec.params import LSTMParams


@cache
def _session(input_size: int, hidden_size: int, peephole: bool, device: str):
    import onnxruntime as ort

    model = onnx_lstm.lstm_model(input_size, hidden_size, np.float32, peephole)
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


_WEIGHTS = NativeCache()
INSTALL_HINT = "onnxruntime is not installed (pip install 'lstm-conformance[onnxruntime]')"


def _threads() -> int:
    return int(os.environ.get("LSTMC_THREADS", os.cpu_count() or 1))


@dataclass
class OnnxRuntimeLSTM(Implementation):
    id: str = "onnxruntime/LSTM"
    framework: str = "onnxruntime"
    description: str = "ONNX Runtime's LSTM operator (opset 14), peepholes native"
    dtypes: tuple[str, ...] = ("float32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    gradients: bool = False
    unsupported_reasons: dict = field(
        default_factory=lambda: {
            "float64": "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
            "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
            "float16": "ONNX Runtime's LSTM kernel is float32 only",
            "bfloat16": "ONNX Runtime's LSTM kernel is float32 only",
        }
    )

    def _availability(self, device: str) -> str | None:
        if (problem := framework_problem("onnxruntime", INSTALL_HINT)) is not None:
            return problem
        ort = import_framework("onnxruntime", INSTALL_HINT)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "no CUDA execution provider in this onnxruntime build (install onnxruntime-gpu on a machine with a GPU)"
        return None

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return onnx_lstm.to_onnx(params, forget_bias)

    def from_native(self, native) -> LSTMParams:
        return onnx_lstm.from_onnx(native["W"], native["R"], native.get("B"), native.get("P"))

    def _session_and_feeds(self, params, x, h0, c0, forget_bias, config: Config):
        session = _session(params.input_size, params.hidden_size, params.peephole, config.device)
        weights = _WEIGHTS.get(params, (forget_bias,), lambda: onnx_lstm.to_onnx(params, forget_bias))
        return session, onnx_lstm.feeds(weights, x, h0, c0)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        session, inputs = self._session_and_feeds(params, x, h0, c0, forget_bias, config)
        Y, Y_h, Y_c = session.run(None, inputs)
        return Y[:, 0], Y_h[0], Y_c[0]

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        """NumPy arrays are ONNX Runtime's own inputs on the CPU: the feeds are built once and each run
        is one session.run (which returns finished results)."""
        session, inputs = self._session_and_feeds(params, x, h0, c0, forget_bias, timing.source_config)
        last = {}

        def run():
            last["h_seq"] = session.run(["Y"], inputs)[0][:, 0]

        return TimedPass(run, lambda: {"h_seq": last["h_seq"].astype(np.float64)}, resident=timing.device == "cpu")

    def _environment(self, device: str) -> dict[str, object]:
        ort = import_framework("onnxruntime", INSTALL_HINT)

        return {"onnxruntime": ort.__version__, "intra_op_threads": _threads(), "providers": ort.get_available_providers()}


IMPLEMENTATIONS = (OnnxRuntimeLSTM(),)
