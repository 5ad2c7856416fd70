"""lstm-conformance's executable specification of the LSTM (see :mod:`spec.lstm` and :mod:`spec.layer`)."""

from spec.layer import LayerConfig, LayerForward, LayerGradients
from spec.lstm import GATES, Forward, Gradients, backward, forward, loss, sigmoid
from spec.params import PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError
from spec.weights_file import (
    LayerWeights,
    WeightFileError,
    load_layer_weights,
    load_weights,
    save_layer_weights,
    save_weights,
)

__all__ = [
    "GATES",
    "PEEPHOLE_GATES",
    "Forward",
    "Gradients",
    "LSTMInputError",
    "LSTMParams",
    "LayerConfig",
    "LayerForward",
    "LayerGradients",
    "LayerParams",
    "LayerWeights",
    "WeightFileError",
    "backward",
    "forward",
    "load_layer_weights",
    "load_weights",
    "loss",
    "save_layer_weights",
    "save_weights",
    "sigmoid",
]
