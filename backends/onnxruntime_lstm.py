"""ONNX Runtime's ``LSTM`` operator: forward only (ORT has no gradient for it), float32 only
("does not support double"), peepholes native. Layouts: :mod:`backends.onnx_lstm`.

- ``onnxruntime/LSTM``: the cell (one node) and the layer (one node per layer, the standard ONNX stack:
  :func:`backends.onnx_lstm.layer_model`), time-major (``layout=0``). The layer runs every feature the
  operator has: ``direction`` forward, reverse and bidirectional, stacks, ``sequence_lens``, ``clip`` (the
  spec's gate_clip: ORT clips each gate's pre-activation, bias and peephole included) and ``input_forget``
  (coupled gates); there is no projection, cell clip or mask in ONNX's LSTM.
- ``onnxruntime/LSTM-batch-major``: the layer graphs with ``layout=1`` (X (B, T, I), LSTM's attribute since
  opset 14; the cell is its one-layer graph). ORT refuses them when the session is created ("Batchwise
  recurrent operations (layout == 1) are not supported"; since the opset-14 kernels, microsoft/onnxruntime#7687):
  that refusal, found by building one, is the row's "unavailable" reason, so the matrix shows it and a release
  that accepts layout=1 gets judged at once (onnx.reference runs the same graphs: the row's tests).

On ``clip``: ONNX's operator text says the clip "is applied to the input of activations", which includes h's
input, the cell state c_t (h_t = o_t * h(clip(c_t)) read literally); ORT clips only the gates' pre-activations
(microsoft/onnxruntime#27224, closed as stale; the fix, #27239, is an open pull request). That is a
non-conformance to ONNX's operator spec, not to this project's: the spec's gate_clip is defined as ORT reads
``clip`` (spec/layer.py), and its cell_clip (TensorFlow's) clips the state itself, which neither reading does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends import onnx_lstm
from backends.base import (
    CellThroughLayer,
    Config,
    Implementation,
    KnownFailure,
    NativeCache,
    framework_problem,
    import_framework,
)
from backends.timing import TimedPass, Timing
from spec.layer import LayerConfig

INSTALL_HINT = "onnxruntime is not installed (pip install 'lstm-conformance[onnxruntime]')"
ONNX_HINT = "onnx is not installed: the graphs are built with it (pip install 'lstm-conformance[onnxruntime]')"
NO_CUDA_PROVIDER = "no CUDA execution provider in this onnxruntime build (install onnxruntime-gpu on a machine with a GPU)"

#: What ONNX's LSTM operator has no attribute or input for.
LAYER_REASONS = {
    "projection": onnx_lstm.NO_PROJECTION,
    "proj_clip": "ONNX's LSTM operator has no projection, so no proj_clip",
    "cell_clip": "ONNX's LSTM operator has no cell clip (its clip is the spec's gate_clip)",
    "mask": "ONNX's LSTM operator takes sequence_lens (one length per row), not a mask of steps",
    "mask_previous_output": "ONNX's LSTM operator takes sequence_lens (one length per row), not a mask of steps",
}
EMPTY_ROWS = (
    "ONNX Runtime 1.32 returns zeros as Y_h and Y_c of a row with sequence_lens 0 (it computes nothing for such a "
    "row), not the initial state (spec, TF1, Keras). ONNX's operator text does not say (onnx/onnx#1674, closed "
    "unanswered); ORT chose it in microsoft/onnxruntime#749. Reproducer: findings/onnxruntime_lstm_empty_rows_state.py"
)


def _threads() -> int:
    return int(os.environ.get("LSTMC_THREADS", os.cpu_count() or 1))


def _new_session(model, device: str, *, quiet: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    if quiet:  # a refusal we expect and report ourselves: not also ORT's own log line on stderr
        options.log_severity_level = 4
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


@cache
def _session(input_size: int, hidden_size: int, peephole: bool, device: str):
    return _new_session(onnx_lstm.lstm_model(input_size, hidden_size, np.float32, peephole), device)


def _layer_model(input_size: int, hidden_size: int, layer: LayerConfig, lengths: bool, layout: int):
    return onnx_lstm.layer_model(input_size, hidden_size, layer, np.float32, lengths=lengths, layout=layout)


@cache
def _layer_session(input_size: int, hidden_size: int, layer: LayerConfig, lengths: bool, layout: int, device: str):
    """One session per architecture (LayerConfig is frozen and hashable); the weights are fed on each run."""
    return _new_session(_layer_model(input_size, hidden_size, layer, lengths, layout), device)


@cache
def _layout_problem(layout: int, device: str) -> str | None:
    """Why ORT cannot run a layer graph with this layout here: the error of building one (None if it builds)."""
    if layout == 0:
        return None
    try:
        _new_session(_layer_model(1, 1, LayerConfig(), False, layout), device, quiet=True)
    except Exception as error:  # ORT's own words: an InvalidGraph / Fail exception with its message
        import onnxruntime as ort

        return f"ONNX Runtime {ort.__version__} refuses layout={layout} (batch-major) when the session is created: {error}"
    return None


_WEIGHTS = NativeCache()


@dataclass
class OnnxRuntimeLSTM(onnx_lstm.OnnxLayout, Implementation):
    id: str = "onnxruntime/LSTM"
    framework: str = "onnxruntime"
    description: str = "ONNX Runtime's LSTM operator (opset 14), peepholes native; the layer as one node per layer"
    dtypes: tuple[str, ...] = ("float32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    gradients: bool = False
    #: LSTM's layout attribute for the layer graphs: 0 time-major, 1 batch-major.
    layout: int = 0
    layer_features: tuple[str, ...] | None = (
        "stacked", "reverse", "bidirectional", "gate_clip", "coupled", "lengths", "empty_sequences",
    )
    known_failures: tuple[KnownFailure, ...] = (KnownFailure("layer outputs", EMPTY_ROWS, features=("empty_sequences",)),)
    unsupported_reasons: dict = field(
        default_factory=lambda: {
            "float64": "ONNX Runtime's LSTM kernel is float32 only (it rejects double)",
            "gradients": "ONNX Runtime registers no gradient for LSTM (inference only)",
            "float16": "ONNX Runtime's LSTM kernel is float32 only",
            "bfloat16": "ONNX Runtime's LSTM kernel is float32 only",
            **LAYER_REASONS,
        }
    )

    def _availability(self, device: str) -> str | None:
        problem = framework_problem("onnxruntime", INSTALL_HINT) or framework_problem("onnx", ONNX_HINT)
        if problem is not None:
            return problem
        ort = import_framework("onnxruntime", INSTALL_HINT)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return NO_CUDA_PROVIDER
        return _layout_problem(self.layout, device)

    # -- the cell: one node -------------------------------------------------------------------

    def _session_and_feeds(self, params, x, h0, c0, forget_bias, config: Config):
        session = _session(params.input_size, params.hidden_size, params.peephole, config.device)
        weights = _WEIGHTS.get(params, (forget_bias,), lambda: onnx_lstm.to_onnx(params, forget_bias))
        return session, onnx_lstm.feeds(weights, x, h0, c0)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        if self.layout != 0:  # the cell in this row's layout: its layer graph with one forward layer
            return CellThroughLayer._forward(self, params, x, h0, c0, forget_bias=forget_bias, config=config)
        session, inputs = self._session_and_feeds(params, x, h0, c0, forget_bias, config)
        Y, Y_h, Y_c = session.run(None, inputs)
        return Y[:, 0], Y_h[0], Y_c[0]

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass | None:
        """NumPy arrays are ONNX Runtime's own inputs on the CPU: the feeds are built once and each run
        is one session.run (which returns finished results). The batch-major row is timed through forward()."""
        if self.layout != 0:
            return None
        session, inputs = self._session_and_feeds(params, x, h0, c0, forget_bias, timing.source_config)
        last = {}

        def run():
            last["h_seq"] = session.run(["Y"], inputs)[0][:, 0]

        return TimedPass(run, lambda: {"h_seq": last["h_seq"].astype(np.float64)}, resident=timing.device == "cpu")

    # -- the layer: one node per layer ----------------------------------------------------------

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        session = _layer_session(params.input_size, params.hidden_size, layer, lengths is not None, self.layout, config.device)
        weights = _WEIGHTS.get(params, (layer.forget_bias,), lambda: self.to_native_layer(params, layer))
        outputs = session.run(None, onnx_lstm.layer_feeds(weights, x, h0, c0, lengths, layout=self.layout))
        return onnx_lstm.layer_outputs(outputs, layout=self.layout)

    def _environment(self, device: str) -> dict[str, object]:
        ort = import_framework("onnxruntime", INSTALL_HINT)

        return {"onnxruntime": ort.__version__, "intra_op_threads": _threads(), "providers": ort.get_available_providers(),
                "layout": self.layout}


IMPLEMENTATIONS = (
    OnnxRuntimeLSTM(),
    OnnxRuntimeLSTM(
        id="onnxruntime/LSTM-batch-major",
        layout=1,
        description="ONNX Runtime's LSTM operator with layout=1 (batch-major X (B, T, I)), one node per layer",
    ),
)
