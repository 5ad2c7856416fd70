"""JAX/flax: ``flax.linen.RNN(LSTMCell)`` (time-major) + ``flax.linen.Dense`` and optax's softmax
cross-entropy, gradients by ``jax.value_and_grad`` under ``jax.jit``; its own optimizer is
``optax.rmsprop(0.001, decay=0.9)``.

The cell's tree goes in and out through the ``flax/LSTMCell`` adapter's ``to_native`` (the forget
bias folded into ``hf``'s bias) and ``from_native``, which also maps the gradient tree (a gradient
has no forget bias to take out). Matrix products are traced under ``jax.default_matmul_precision
("highest")``, as in the adapter (no TF32 or bf16 passes on a GPU). float32: x64 stays off in this
process (training/runs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from backends.base import fold_forget_bias
from backends.jax_lstm import MATMUL_PRECISION, FlaxLSTM
from spec import LSTMParams
from training.frameworks import Framework, Trainer
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

ADAPTER = FlaxLSTM(id="flax/LSTMCell", cell="LSTMCell")


@cache
def _functions(hidden_size: int, classes: int):
    """Jitted logits, loss-and-gradients and own training step for the model's parameter tree."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            B = x.shape[1]
            zeros = jnp.zeros((B, hidden_size), x.dtype)
            (_, h_T), _ = nn.RNN(nn.LSTMCell(hidden_size, parent=None), time_major=True, return_carry=True, name="rnn")(
                x, initial_carry=(zeros, zeros)
            )
            return nn.Dense(classes, name="dense")(h_T)

    model = Classifier()
    optimizer = optax.rmsprop(LEARNING_RATE, decay=DECAY)

    def logits(tree, x):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            return model.apply({"params": tree}, x)

    def loss(tree, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(tree, x), y).mean()

    def train_step(tree, state, x, y):
        value, grads = jax.value_and_grad(loss)(tree, x, y)
        updates, state = optimizer.update(grads, state, tree)
        return optax.apply_updates(tree, updates), state, value

    return jax.jit(logits), jax.jit(jax.value_and_grad(loss)), jax.jit(train_step), optimizer


def to_tree(params: ModelParams) -> dict:
    return {
        "rnn": {"cell": ADAPTER.to_native(params.lstm, FORGET_BIAS)},
        "dense": {"kernel": np.ascontiguousarray(params.Wd.T), "bias": params.bd.copy()},
    }


def from_tree(tree, *, gradient: bool) -> ModelParams:
    cell = {name: {k: np.asarray(v) for k, v in leaves.items()} for name, leaves in tree["rnn"]["cell"].items()}
    lstm = ADAPTER.from_native(cell)
    if not gradient:  # the forget bias lives in hf's bias: take it out of b_f
        lstm = LSTMParams(lstm.W, lstm.U, fold_forget_bias(lstm.b, -FORGET_BIAS))
    dense = tree["dense"]
    return ModelParams(lstm, np.ascontiguousarray(np.asarray(dense["kernel"]).T), np.array(dense["bias"]))


class FlaxTrainer(Trainer):
    def __init__(self, params: ModelParams):
        self._logits, _, self._step, optimizer = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        import jax

        self.tree = jax.device_put(to_tree(params))
        self.state = optimizer.init(self.tree)

    def step(self, x, y) -> float:
        self.tree, self.state, loss = self._step(self.tree, self.state, x, y)
        return float(loss)

    def params(self) -> ModelParams:
        return from_tree(self.tree, gradient=False)


@dataclass
class FlaxModel(Framework):
    id: str = "flax/LSTMCell"
    group: str = "jax"
    description: str = "flax.linen.RNN(LSTMCell) + Dense, optax softmax cross-entropy, jax.value_and_grad under jit"
    own_optimizer: str = OWN_RMSPROP["flax"]

    def availability(self):
        return ADAPTER.availability("cpu")

    def environment(self):
        import flax
        import jax
        import optax

        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                "x64": str(jax.config.read("jax_enable_x64"))}

    def loss_and_gradients(self, params, x, y):
        _, value_and_grad, _, _ = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        loss, grads = value_and_grad(to_tree(params), x, y)
        return float(loss), from_tree(grads, gradient=True)

    def logits(self, params, x):
        logits, _, _, _ = _functions(params.lstm.hidden_size, params.Wd.shape[0])
        return np.asarray(logits(to_tree(params), x))

    def trainer(self, params):
        return FlaxTrainer(params)
