"""The spec as a framework: spec.lstm's forward and hand-derived backward, the NumPy head
(training/head.py), and the shared RMSProp as its "own" optimizer.

:class:`Reordered` runs the same mathematics with its floating-point sums taken in another, equally
valid order, which is how the rounding bound is measured (training/bound.py):

- ``batch-order``: the rows of each batch shuffled (seeded per step). The loss is a mean over rows and
  every gradient a sum over them, so nothing changes but the order of those sums.
- ``unit-order``: the H hidden units relabelled by a fixed permutation (W, U, b and Wd's columns
  permuted alike, the gradients permuted back): the products U h and Wd h and the sums behind dh
  add their terms in another order.
- ``input-order``: the I pixels of each row permuted (W's columns and x alike).
- ``float64-gradient``: the whole gradient computed in float64 from the same float32 parameters and
  data, then rounded to float32 once: the most accurate gradient float32 can hold.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np

from spec import LSTMParams
from spec import lstm as spec_lstm
from training import head
from training.frameworks import Framework, Trainer
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import OWN_RMSPROP, RMSProp


def spec_loss_and_gradients(params: ModelParams, x: np.ndarray, y: np.ndarray) -> tuple[float, ModelParams]:
    """The loss and its gradient by the spec, in the dtype of ``params`` and ``x``."""
    dtype = params.dtype
    B, H = x.shape[1], params.lstm.hidden_size
    zeros = np.zeros((B, H), dtype)
    fwd = spec_lstm.forward(params.lstm, x, zeros, zeros, forget_bias=FORGET_BIAS, dtype=dtype)
    out = head.forward(fwd.h_T, params.Wd, params.bd, y)
    dh_T, dWd, dbd = head.backward(out, params.Wd)
    # Only h_T reaches the loss: no cotangent for the other outputs or for c_T.
    grads = spec_lstm.backward(fwd, np.zeros_like(fwd.h_seq), dh_T, zeros)
    return out.loss, ModelParams(LSTMParams(grads.W, grads.U, grads.b), dWd, dbd)


def spec_logits(params: ModelParams, x: np.ndarray) -> np.ndarray:
    dtype = params.dtype
    zeros = np.zeros((x.shape[1], params.lstm.hidden_size), dtype)
    fwd = spec_lstm.forward(params.lstm, x, zeros, zeros, forget_bias=FORGET_BIAS, dtype=dtype)
    return fwd.h_T @ params.Wd.T + params.bd


class SharedStepTrainer(Trainer):
    """Gradients from ``gradients`` and the shared NumPy RMSProp step: the spec's own optimizer."""

    def __init__(self, params: ModelParams, gradients, constants=None):
        self._params = params.tensors()
        self._optimizer = RMSProp.init(self._params, constants=constants)
        self._gradients = gradients

    def step(self, x, y) -> float:
        loss, grads = self._gradients(ModelParams.from_tensors(self._params), x, y)
        self._params = self._optimizer.step(self._params, grads.tensors())
        return loss

    def params(self) -> ModelParams:
        return ModelParams.from_tensors(self._params)


@dataclass
class SpecModel(Framework):
    id: str = "spec"
    group: str = "numpy"
    description: str = "spec.lstm forward and hand-derived backward, NumPy head (training/head.py)"
    own_optimizer: str = OWN_RMSPROP["spec"]

    def environment(self) -> dict[str, str]:
        return {"numpy": np.__version__, "python": platform.python_version(),
                "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "(OpenBLAS's default)")}

    def loss_and_gradients(self, params, x, y):
        return self.gradients_of(params, x, y)

    def gradients_of(self, params, x, y):
        """The loss and its gradient, computed in the model's own order (what the reorderings reorder around)."""
        return spec_loss_and_gradients(params, x, y)

    def logits(self, params, x):
        return spec_logits(params, x)

    def trainer(self, params):
        return SharedStepTrainer(params, self.loss_and_gradients)


#: The reorderings, by name (see the module docstring).
ORDERINGS = ("batch-order", "unit-order", "input-order", "float64-gradient")


@dataclass
class Reordered(SpecModel):
    """The spec with its sums in another valid order (``ordering``, seeded by ``seed``)."""

    ordering: str = "batch-order"
    seed: int = 1

    def __post_init__(self):
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering {self.ordering!r}: expected one of {ORDERINGS}")
        self._calls = 0
        self._rng = np.random.default_rng([self.seed, ORDERINGS.index(self.ordering)])
        self._units = self._inputs = None

    def loss_and_gradients(self, params, x, y):
        self._calls += 1
        if self.ordering == "float64-gradient":
            loss, grads = spec_loss_and_gradients(params.astype(np.float64), x.astype(np.float64), y)
            return loss, grads.astype(params.dtype)
        if self.ordering == "batch-order":
            rows = self._rng.permutation(x.shape[1])
            return self.gradients_of(params, np.ascontiguousarray(x[:, rows]), y[rows])
        if self.ordering == "unit-order":
            return self._unit_order(params, x, y)
        return self._input_order(params, x, y)

    def _unit_order(self, params, x, y):
        H = params.lstm.hidden_size
        if self._units is None:
            self._units = self._rng.permutation(H)
        u, back = self._units, np.argsort(self._units)
        p = params.lstm
        permuted = ModelParams(
            LSTMParams(p.W[:, u].copy(), p.U[:, u][:, :, u].copy(), p.b[:, u].copy()), params.Wd[:, u].copy(), params.bd
        )
        loss, g = self.gradients_of(permuted, x, y)
        gl = g.lstm
        return loss, ModelParams(
            LSTMParams(gl.W[:, back].copy(), gl.U[:, back][:, :, back].copy(), gl.b[:, back].copy()), g.Wd[:, back].copy(), g.bd
        )

    def _input_order(self, params, x, y):
        I = params.lstm.input_size
        if self._inputs is None:
            self._inputs = self._rng.permutation(I)
        s, back = self._inputs, np.argsort(self._inputs)
        p = params.lstm
        permuted = ModelParams(LSTMParams(p.W[:, :, s].copy(), p.U, p.b), params.Wd, params.bd)
        loss, g = self.gradients_of(permuted, np.ascontiguousarray(x[:, :, s]), y)
        return loss, ModelParams(LSTMParams(g.lstm.W[:, :, back].copy(), g.lstm.U, g.lstm.b), g.Wd, g.bd)
