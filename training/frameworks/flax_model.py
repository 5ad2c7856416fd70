"""JAX/flax: ``flax.linen.RNN(LSTMCell)`` (time-major) + ``flax.linen.Dense`` and optax's softmax
cross-entropy, gradients by ``jax.value_and_grad``; its own optimizer is ``optax.rmsprop(0.001, decay=0.9)``.

The LSTM is the flax rows' module (backends/rows/jax.py, ``flax_stack``: one ``nn.RNN(nn.LSTMCell)`` layer, as
a flax user writes it), and its tree goes in and out through their layout (backends/layouts/flax.py, ``STACK``:
the forget bias folded into ``hf``'s bias), which also maps the gradient tree. Every function runs through
flax's runtime (backends/runtimes/jax.py): jitted, matrix products traced under
``jax.default_matmul_precision("highest")`` (no TF32 or bf16 passes on a GPU). float32: x64 stays off in this
process (training/runs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from backends.layouts.flax import STACK
from backends.rows.jax import flax_stack
from backends.runtimes.jax import FLAX, jax, linen
from contract.runtime import framework_problem, import_framework
from contract.vocabulary import Device
from training.frameworks import Framework, Trainer, described, lstm_gradient, model_lstm, native_lstm, unavailable
from training.model import ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

LAYOUT = STACK
OPTAX_MISSING = "optax is not installed (pip install 'lstm-conformance[train]')"


def optax():
    return import_framework("optax", OPTAX_MISSING)


@cache
def _functions(hidden_size: int, classes: int):
    """Logits, loss-and-gradients and the own training step for the model's tree {"lstm": ..., "dense": ...} (each
    one function object, which the runtime jits once), and the own optimizer."""
    stack = flax_stack("LSTMCell", hidden_size, 1, "forward", "float32")
    dense = linen().Dense(classes)
    j, rms = jax(), optax()
    optimizer = rms.rmsprop(LEARNING_RATE, decay=DECAY)

    def logits(tree, x):
        zeros = j.numpy.zeros((x.shape[1], hidden_size), x.dtype)
        carries, _ = stack.apply({"params": tree["lstm"]}, x, [(zeros, zeros)], None)  # the carry is (c, h)
        (_, h_T), = carries
        return dense.apply({"params": tree["dense"]}, h_T)

    def loss(tree, x, y):
        return rms.softmax_cross_entropy_with_integer_labels(logits(tree, x), y).mean()

    def train_step(tree, state, x, y):
        value, grads = j.value_and_grad(loss)(tree, x, y)
        updates, state = optimizer.update(grads, state, tree)
        return rms.apply_updates(tree, updates), state, value

    return logits, j.value_and_grad(loss), train_step, optimizer


def to_tree(params: ModelParams) -> dict:
    tree = {"lstm": native_lstm(LAYOUT, params.lstm),
            "dense": {"kernel": np.ascontiguousarray(params.Wd.T), "bias": params.bd.copy()}}
    return FLAX.tree_to_device(tree, Device.CPU)


def dense_of(tree) -> tuple[np.ndarray, np.ndarray]:
    """Wd (C, H) and bd from the dense layer's kernel (H, C) and bias."""
    return np.ascontiguousarray(np.asarray(tree["dense"]["kernel"]).T), np.array(tree["dense"]["bias"])


class FlaxTrainer(Trainer):
    def __init__(self, params: ModelParams):
        _, _, self._step, optimizer = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        self.tree = to_tree(params)
        self.state = optimizer.init(self.tree)

    def step(self, x, y) -> float:
        self.tree, self.state, loss = FLAX.run(self._step, self.tree, self.state, x, y)
        return float(loss)

    def params(self) -> ModelParams:
        return ModelParams(model_lstm(LAYOUT, self.tree["lstm"]), *dense_of(self.tree))


@dataclass
class FlaxModel(Framework):
    id: str = "flax/LSTMCell"
    group: str = "jax"
    description: str = "flax.linen.RNN(LSTMCell) + Dense, optax softmax cross-entropy, jax.value_and_grad under jit"
    own_optimizer: str = OWN_RMSPROP["flax"]

    def availability(self):
        try:
            return FLAX.availability(Device.CPU) or framework_problem("optax", OPTAX_MISSING)
        except Exception as error:  # noqa: BLE001 - availability never raises
            return unavailable(error)

    def environment(self):
        return described({**FLAX.environment(Device.CPU), "optax": optax().__version__})

    def loss_and_gradients(self, params, x, y):
        _, value_and_grad, _, _ = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        loss, grads = FLAX.run(value_and_grad, to_tree(params), x, y)
        lstm = lstm_gradient(LAYOUT, grads["lstm"], params.lstm)
        return float(loss), ModelParams(lstm, *dense_of(grads))

    def logits(self, params, x):
        logits, _, _, _ = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        return np.asarray(FLAX.run(logits, to_tree(params), x))

    def trainer(self, params):
        return FlaxTrainer(params)
