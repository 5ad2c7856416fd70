"""Training through the conformance contract: any implementation of the suite (backends/, a mutant of
conformance/mutants.py, a plug-in) as the model's LSTM, with the shared NumPy head.

Per step: the implementation's ``forward()`` gives h_T; the NumPy head (training/head.py) gives the
loss and the cotangent dh_T it sends back, with dh_seq = 0 and dc_T = 0 (only the last output reaches
the loss); the implementation's ``backward()`` gives the LSTM's gradients. Both calls go through the
contract's checks (backends/base.py), in float32 on the CPU. This is how a non-conformance that only
the gradients show (TensorFlow's registered BlockLSTMV2 gradient, a backward-only mutant) is trained
with: its forward is right, so only training can reveal what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.base import Config, Implementation
from spec import LSTMParams
from training import head
from training.frameworks import Framework
from training.frameworks.spec_model import SharedStepTrainer
from training.model import FORGET_BIAS, ModelParams

CONFIG = Config("standard", "float32", "cpu")


def implementation(implementation_id: str) -> Implementation:
    """A built-in implementation or a mutant, by id."""
    if implementation_id.startswith("mutant/"):
        from conformance.mutants import MUTANTS_BY_ID

        return MUTANTS_BY_ID[implementation_id].implementation()
    from backends.registry import implementation_by_id

    return implementation_by_id(implementation_id)


@dataclass
class ContractModel(Framework):
    """The model with ``implementation_id``'s LSTM, trained through forward() and backward()."""

    implementation_id: str = ""
    id: str = ""
    group: str = "numpy"
    description: str = ""
    own_optimizer: str = "none: trained with the shared step only"

    def __post_init__(self):
        self.id = self.id or f"contract:{self.implementation_id}"
        self._implementation = None

    @property
    def impl(self) -> Implementation:
        if self._implementation is None:
            self._implementation = implementation(self.implementation_id)
        return self._implementation

    def availability(self):
        return self.impl.availability("cpu")

    def environment(self):
        return {k: str(v) for k, v in self.impl.environment("cpu").items()}

    def _h_T(self, lstm: LSTMParams, x: np.ndarray) -> np.ndarray:
        zeros = np.zeros((x.shape[1], lstm.hidden_size), np.float32)
        return self.impl.forward(lstm, x, zeros, zeros, forget_bias=FORGET_BIAS, config=CONFIG).h_T

    def loss_and_gradients(self, params, x, y):
        lstm = params.lstm
        zeros = np.zeros((x.shape[1], lstm.hidden_size), np.float32)
        out = head.forward(self._h_T(lstm, x), params.Wd, params.bd, y)
        dh_T, dWd, dbd = head.backward(out, params.Wd)
        cotangents = {"dh_seq": np.zeros((*x.shape[:2], lstm.hidden_size), np.float32), "dh_T": dh_T, "dc_T": zeros}
        g = self.impl.backward(lstm, x, zeros, zeros, cotangents, forget_bias=FORGET_BIAS, config=CONFIG)
        return out.loss, ModelParams(LSTMParams(g["W"], g["U"], g["b"]), dWd, dbd)

    def logits(self, params, x):
        return self._h_T(params.lstm, x) @ params.Wd.T + params.bd

    def trainer(self, params):
        return SharedStepTrainer(params, self.loss_and_gradients)
