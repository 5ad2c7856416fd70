"""Keras 3 on the TensorFlow backend: ``keras.layers.LSTM`` + ``keras.layers.Dense`` and Keras'
sparse categorical cross-entropy on logits, gradients by ``tf.GradientTape``; its own optimizer is
``keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9)``.

The LSTM's weights go in and out through the Keras rows' layout (backends/layouts/keras.py, ``LSTM``: every
variable by its Keras path, the layer named as the layout names layer 0, the forget bias folded into the
bias), which also maps the gradients back. Keras and TensorFlow come from their runtimes
(backends/runtimes/keras.py, tensorflow.py: TF32 off). Keras fixes its backend at its first import, and TF1's
cells need ``TF_USE_LEGACY_KERAS=1`` before TensorFlow's: this runs in a process where that is unset and
``KERAS_BACKEND=tensorflow`` (training/runs.py), as the ``keras-tensorflow`` rows do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from backends.layouts.keras import LSTM
from backends.runtimes.keras import KERAS_TENSORFLOW, keras
from backends.runtimes.tensorflow import tensorflow
from contract.vocabulary import Device
from training.frameworks import Framework, Trainer, described, lstm_gradient, model_lstm, native_lstm, unavailable
from training.model import ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

LAYOUT = LSTM


class _Model:
    """A Keras model: (B, T, I) -> LSTM(H) -> Dense(C) logits, float32."""

    def __init__(self, params: ModelParams, optimizer: bool = False):
        # Resolved here, not in the traced functions: AutoGraph would try to convert the imports.
        self.tf, self.keras = tf, k = tensorflow(), keras()
        I, H, C = params.lstm.input_size, params.lstm.hidden_size, params.Wd.shape[0]
        inputs = k.Input((None, I), dtype="float32")
        self.lstm = k.layers.LSTM(H, unit_forget_bias=False, dtype="float32", name=LAYOUT.layer_name(0))
        self.dense = k.layers.Dense(C, dtype="float32", name="dense")
        self.model = k.Model(inputs, self.dense(self.lstm(inputs)))
        self.lstm_variables = {v.path: v for v in self.lstm.trainable_variables}
        self.load(params)
        self.optimizer = k.optimizers.RMSprop(learning_rate=LEARNING_RATE, rho=DECAY) if optimizer else None
        self.gradients = tf.function(self._gradients)
        self.train_step = tf.function(self._train_step)
        self.logits = tf.function(self._logits)

    def load(self, params: ModelParams) -> None:
        native = native_lstm(LAYOUT, params.lstm)
        if set(native) != set(self.lstm_variables):
            raise RuntimeError(f"Keras' LSTM variables {sorted(self.lstm_variables)} are not the layout's {sorted(native)}")
        for path, variable in self.lstm_variables.items():
            variable.assign(native[path])
        self.dense.kernel.assign(np.ascontiguousarray(params.Wd.T))
        self.dense.bias.assign(params.bd)

    def _logits(self, x):
        return self.model(self.tf.transpose(x, (1, 0, 2)))  # Keras is batch-major

    def _loss(self, x, y):
        losses = self.keras.losses.sparse_categorical_crossentropy(y, self._logits(x), from_logits=True)
        return self.tf.reduce_mean(losses)

    def _gradients(self, x, y):
        with self.tf.GradientTape() as tape:
            loss = self._loss(x, y)
        return loss, tape.gradient(loss, self.model.trainable_variables)

    def _train_step(self, x, y):
        loss, grads = self._gradients(x, y)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def named_gradients(self, params: ModelParams, grads) -> ModelParams:
        by_path = {v.path: np.asarray(g.numpy()) for v, g in zip(self.model.trainable_variables, grads)}
        lstm = lstm_gradient(LAYOUT, {path: by_path[path] for path in self.lstm_variables}, params.lstm)
        return ModelParams(lstm, np.ascontiguousarray(by_path[self.dense.kernel.path].T), by_path[self.dense.bias.path])

    def canonical(self) -> ModelParams:
        native = {path: np.asarray(v.numpy()) for path, v in self.lstm_variables.items()}
        return ModelParams(model_lstm(LAYOUT, native), np.ascontiguousarray(np.asarray(self.dense.kernel.numpy()).T),
                           np.array(self.dense.bias.numpy()))


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
        try:
            return KERAS_TENSORFLOW.availability(Device.CPU)
        except Exception as error:  # noqa: BLE001 - availability never raises
            return unavailable(error)

    def environment(self):
        tf32 = tensorflow().config.experimental.tensor_float_32_execution_enabled()
        return described({**KERAS_TENSORFLOW.environment(Device.CPU), "tf32": tf32})

    def _loaded(self, params):
        if self._model is None:
            self._model = _Model(params)
        else:
            self._model.load(params)
        return self._model

    def loss_and_gradients(self, params, x, y):
        model = self._loaded(params)
        loss, grads = model.gradients(x, y)
        return float(loss), model.named_gradients(params, grads)

    def logits(self, params, x):
        return np.asarray(self._loaded(params).logits(x))

    def trainer(self, params):
        return KerasTrainer(params)
