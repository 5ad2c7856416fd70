"""onnx's reference evaluator (``onnx.reference``) on ONNX's ``LSTM`` operator: the operator's executable
definition as the onnx package ships it (NumPy, computing in the inputs' dtype), forward only. Layouts and
graphs: :mod:`backends.onnx_lstm` (the same graphs as ONNX Runtime's row: one node for the cell, one node per
layer for the layer).

onnx 1.23.2's LSTM kernel (onnx/reference/ops/op_lstm.py) takes ``sequence_lens``, ``clip`` and
``input_forget`` and ignores them (``# noqa: ARG002``; "TODO: support overridden attributes"): a graph with
any of them runs as if they were absent, without a warning. Those three are declared (the row runs what the
operator offers) and are known failures, narrowed to the features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends import onnx_lstm
from backends.base import (
    Config,
    Implementation,
    KnownFailure,
    NativeCache,
    framework_problem,
    import_framework,
)
from spec.layer import LayerConfig

INSTALL_HINT = "onnx is not installed (pip install onnx)"
IGNORED = (
    "onnx {version}'s reference LSTM (onnx.reference) silently ignores {attribute}: the graph runs as if it were "
    "absent. Reproducer: findings/onnx_reference_lstm_ignores_attributes.py; upstream: none found (onnx/onnx "
    "searched); its kernel's signature marks the argument unused"
)
LAYER_REASONS = {
    "projection": onnx_lstm.NO_PROJECTION,
    "proj_clip": "ONNX's LSTM operator has no projection, so no proj_clip",
    "cell_clip": "ONNX's LSTM operator has no cell clip (its clip is the spec's gate_clip)",
    "mask": "ONNX's LSTM operator takes sequence_lens (one length per row), not a mask of steps",
    "mask_previous_output": "ONNX's LSTM operator takes sequence_lens (one length per row), not a mask of steps",
}
#: Each ignored input or attribute, and the layer feature it carries.
IGNORED_FEATURES = {"lengths": "sequence_lens", "gate_clip": "clip", "coupled": "input_forget"}


@cache
def _layer_evaluator(input_size: int, hidden_size: int, layer: LayerConfig, dtype: str, lengths: bool):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx_lstm.layer_model(input_size, hidden_size, layer, np.dtype(dtype), lengths=lengths))


def _run(session, feeds):
    # Its sigmoid is 1 / (1 + exp(-x)): exp overflows to inf for very negative x, and 1 / inf is the right 0.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        return session.run(None, feeds)


_SESSIONS = NativeCache()
_WEIGHTS = NativeCache()


def _known_failures(version: str) -> tuple[KnownFailure, ...]:
    return tuple(
        KnownFailure("layer outputs", IGNORED.format(version=version, attribute=attribute), features=(feature,))
        for feature, attribute in IGNORED_FEATURES.items()
    )


@dataclass
class OnnxReferenceLSTM(onnx_lstm.OnnxLayout, Implementation):
    id: str = "onnx.reference/LSTM"
    framework: str = "onnx"
    description: str = "onnx.reference's LSTM operator (NumPy), the cell as one node and the layer as one node per layer"
    gradients: bool = False
    layer_features: tuple[str, ...] | None = (
        "stacked", "reverse", "bidirectional", "gate_clip", "coupled", "lengths", "empty_sequences",
    )
    known_failures: tuple[KnownFailure, ...] = _known_failures("1.23.2")
    unsupported_reasons: dict = field(
        default_factory=lambda: {"gradients": "onnx.reference evaluates graphs; it has no gradients", **LAYER_REASONS}
    )

    def _availability(self, device: str) -> str | None:
        if (problem := framework_problem("onnx.reference", INSTALL_HINT)) is not None:
            return problem
        return None if device == "cpu" else "onnx.reference runs on the CPU only (NumPy)"

    def _environment(self, device: str) -> dict[str, object]:
        onnx = import_framework("onnx", INSTALL_HINT)
        return {"onnx": onnx.__version__, "numpy": np.__version__, "opset": onnx_lstm.OPSET}

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        session = _SESSIONS.get(params, (forget_bias,), lambda: onnx_lstm.ReferenceLSTM(params, forget_bias))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
            return session(x, h0, c0)

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        session = _layer_evaluator(params.input_size, params.hidden_size, layer, config.dtype, lengths is not None)
        weights = _WEIGHTS.get(params, (layer.forget_bias,), lambda: self.to_native_layer(params, layer))
        return onnx_lstm.layer_outputs(_run(session, onnx_lstm.layer_feeds(weights, x, h0, c0, lengths)))


IMPLEMENTATIONS = (OnnxReferenceLSTM(),)
