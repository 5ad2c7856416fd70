"""The tutorials' model in canonical form: the LSTM (:class:`spec.LSTMParams`) and a dense layer on its
last output, with its shared initial weights on disk.

    z_t   = the LSTM (spec/lstm.py) over x_1..x_T, BasicLSTMCell's forget_bias = 1.0
    a     = h_T Wd^T + bd                     logits (B, C); Wd (C, H), bd (C,)
    loss  = softmax cross-entropy of a against the labels, averaged over the batch (training/head.py)

Canonical names: W, U, b (the LSTM, gates i, f, g, o; b without the forget bias, which every framework
either folds into b_f or adds as an attribute), Wd, bd (the dense layer, PyTorch's Linear layout).

Initial weights follow TF1's defaults for the tutorial's model: Glorot-uniform over BasicLSTMCell's
combined kernel (I + H, 4H) and over the dense kernel (H, C), zero biases. They are written once, the
LSTM in the project's weight format (spec.save_weights) and the dense layer beside it, and every
framework's process loads them from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from spec import LSTMParams, load_weights, save_weights

#: TF1's BasicLSTMCell(forget_bias=1.0), the tutorials' cell.
FORGET_BIAS = 1.0
NAMES = ("W", "U", "b", "Wd", "bd")
LSTM_FILE = "lstm.safetensors"
DENSE_FILE = "dense.safetensors"
DENSE_FORMAT = "lstm-conformance-dense"


@dataclass(frozen=True, eq=False)
class ModelParams:
    """The model's parameters (or their gradients: the same layout)."""

    lstm: LSTMParams
    Wd: np.ndarray  # (C, H)
    bd: np.ndarray  # (C,)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"W": self.lstm.W, "U": self.lstm.U, "b": self.lstm.b, "Wd": self.Wd, "bd": self.bd}

    @classmethod
    def from_tensors(cls, t) -> ModelParams:
        return cls(LSTMParams(t["W"], t["U"], t["b"]), t["Wd"], t["bd"])

    @property
    def dtype(self) -> np.dtype:
        return self.lstm.dtype

    def astype(self, dtype) -> ModelParams:
        return ModelParams.from_tensors({k: v.astype(dtype) for k, v in self.tensors().items()})

    def copy(self) -> ModelParams:
        return ModelParams.from_tensors({k: v.copy() for k, v in self.tensors().items()})


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, shape) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def initial_params(input_size: int, hidden_size: int, classes: int, seed: int = 0) -> ModelParams:
    """TF1's defaults for the tutorial's variables, drawn in float64 and rounded to float32 once."""
    rng = np.random.default_rng([seed, 1997])
    H, I = hidden_size, input_size
    # BasicLSTMCell's kernel is one (I + H, 4H) matrix: Glorot over that whole shape, split into W and U.
    kernel = glorot_uniform(rng, I + H, 4 * H, (4, H, I + H))
    lstm = LSTMParams(kernel[:, :, :I].copy(), kernel[:, :, I:].copy(), np.zeros((4, H))).astype(np.float32)
    Wd = glorot_uniform(rng, H, classes, (classes, H)).astype(np.float32)
    return ModelParams(lstm, Wd, np.zeros(classes, np.float32))


def save_initial(folder: str | os.PathLike, params: ModelParams) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / LSTM_FILE, params.lstm)
    save_file({"Wd": params.Wd, "bd": params.bd}, os.fspath(folder / DENSE_FILE),
              metadata={"format": DENSE_FORMAT, "layout": "logits = h_T Wd^T + bd; Wd (classes, hidden)"})


def load_initial(folder: str | os.PathLike) -> ModelParams:
    folder = Path(folder)
    dense = load_file(os.fspath(folder / DENSE_FILE))
    lstm = load_weights(folder / LSTM_FILE)
    return ModelParams(lstm, dense["Wd"], dense["bd"])
