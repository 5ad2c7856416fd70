"""Keras 3 on the TensorFlow backend: ``keras.layers.LSTM`` + ``keras.layers.Dense`` and Keras'
sparse categorical cross-entropy on logits, gradients by ``tf.GradientTape``; its own optimizer is
``keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9)``.

The LSTM's weights go in and out through the Keras rows' layout functions (backends/keras_lstm.py:
``keras_to_native`` with the forget bias folded into the bias, ``keras_from_native``), which the
rows also apply to their gradients. Keras fixes its backend at its first import, and TF1's cells
need ``TF_USE_LEGACY_KERAS=1`` before TensorFlow's: this runs in a process where that is unset and
``KERAS_BACKEND=tensorflow`` (training/runs.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from backends.base import fold_forget_bias
from backends.keras_lstm import keras_from_native, keras_to_native
from backends.registry import implementation_by_id
from spec import LSTMParams
from training.frameworks import Framework, Trainer
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

ADAPTER = implementation_by_id("keras-tensorflow/LSTM")


def _tf():
    from backends.keras_lstm import _keras
    from backends.tensorflow_lstm import _tf

    return _tf(), _keras()


class _Model:
    """A Keras model: (B, T, I) -> LSTM(H) -> Dense(C) logits, float32."""

    def __init__(self, params: ModelParams, optimizer: bool = False):
        tf, keras = _tf()
        T_any, I, H, C = None, params.lstm.input_size, params.lstm.hidden_size, params.Wd.shape[0]
        inputs = keras.Input((T_any, I), dtype="float32")
        self.lstm = keras.layers.LSTM(H, unit_forget_bias=False, dtype="float32")
        self.dense = keras.layers.Dense(C, dtype="float32")
        self.model = keras.Model(inputs, self.dense(self.lstm(inputs)))
        cell = self.lstm.cell
        self.variables = [cell.kernel, cell.recurrent_kernel, cell.bias, self.dense.kernel, self.dense.bias]
        self.load(params)
        self.optimizer = keras.optimizers.RMSprop(learning_rate=LEARNING_RATE, rho=DECAY) if optimizer else None
        self.gradients = tf.function(self._gradients)
        self.train_step = tf.function(self._train_step)
        self.logits = tf.function(self._logits)

    def load(self, params: ModelParams) -> None:
        native = keras_to_native(params.lstm, FORGET_BIAS)
        values = [native["kernel"], native["recurrent_kernel"], native["bias"], params.Wd.T, params.bd]
        for variable, value in zip(self.variables, values):
            variable.assign(np.ascontiguousarray(value))

    def _logits(self, x):
        tf, _ = _tf()
        return self.model(tf.transpose(x, (1, 0, 2)))  # Keras is batch-major

    def _loss(self, x, y):
        tf, keras = _tf()
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, self._logits(x), from_logits=True))

    def _gradients(self, x, y):
        tf, _ = _tf()
        with tf.GradientTape() as tape:
            loss = self._loss(x, y)
        return loss, tape.gradient(loss, self.model.trainable_variables)

    def _train_step(self, x, y):
        loss, grads = self._gradients(x, y)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def named_gradients(self, grads) -> ModelParams:
        by_path = {id(v): g for v, g in zip(self.model.trainable_variables, grads)}
        kernel, recurrent, bias, dense_kernel, dense_bias = (by_path[id(v)].numpy() for v in self.variables)
        lstm = keras_from_native({"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias})
        return ModelParams(lstm, np.ascontiguousarray(dense_kernel.T), dense_bias)

    def canonical(self) -> ModelParams:
        kernel, recurrent, bias, dense_kernel, dense_bias = (np.asarray(v.numpy()) for v in self.variables)
        lstm = keras_from_native({"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias})
        lstm = LSTMParams(lstm.W, lstm.U, fold_forget_bias(lstm.b, -FORGET_BIAS))  # the forget bias out of b_f
        return ModelParams(lstm, np.ascontiguousarray(dense_kernel.T), dense_bias.copy())


class KerasTrainer(Trainer):
    def __init__(self, params: ModelParams):
        self.model = _Model(params, optimizer=True)

    def step(self, x, y) -> float:
        return float(self.model.train_step(x, y))

    def params(self) -> ModelParams:
        return self.model.canonical()


@dataclass
class KerasModel(Framework):
    id: str = "keras/LSTM"
    group: str = "tensorflow"
    description: str = "keras.layers.LSTM + Dense, Keras 3 on TensorFlow, sparse categorical cross-entropy, tf.GradientTape"
    own_optimizer: str = OWN_RMSPROP["keras"]

    def __post_init__(self):
        self._model = None

    def availability(self):
        if os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() in ("1", "true"):
            return "TF_USE_LEGACY_KERAS is set in this process: Keras 3 runs where it is not (training/runs.py)"
        return ADAPTER.availability("cpu")

    def environment(self):
        tf, keras = _tf()
        return {"tensorflow": tf.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend()}

    def _loaded(self, params):
        if self._model is None:
            self._model = _Model(params)
        else:
            self._model.load(params)
        return self._model

    def loss_and_gradients(self, params, x, y):
        model = self._loaded(params)
        loss, grads = model.gradients(x, y)
        return float(loss), model.named_gradients(grads)

    def logits(self, params, x):
        return np.asarray(self._loaded(params).logits(x))

    def trainer(self, params):
        return KerasTrainer(params)
