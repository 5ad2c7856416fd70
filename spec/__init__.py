"""lstm-conformance's executable specification of the LSTM (see :mod:`spec.lstm`)."""

from spec.lstm import GATES, Forward, Gradients, backward, forward, loss, sigmoid
from spec.params import PEEPHOLE_GATES, LSTMParams
from spec.validation import LSTMInputError
from spec.weights_file import WeightFileError, load_weights, save_weights

__all__ = [
    "GATES",
    "PEEPHOLE_GATES",
    "Forward",
    "Gradients",
    "LSTMInputError",
    "LSTMParams",
    "WeightFileError",
    "backward",
    "forward",
    "load_weights",
    "loss",
    "save_weights",
    "sigmoid",
]
