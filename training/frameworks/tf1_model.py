"""TensorFlow 1, as the tutorials wrote it: ``tf.compat.v1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=1.0)``
unrolled by ``static_rnn`` over the T unstacked steps, ``matmul(outputs[-1], W_out) + b_out``,
``softmax_cross_entropy_with_logits_v2`` averaged, in graph mode with a ``Session``; gradients by
``tf.gradients``; its own optimizer is ``tf.compat.v1.train.RMSPropOptimizer(0.001, decay=0.9)``.
Weights are loaded with assign ops fed from placeholders.

BasicLSTMCell's variables: ``kernel`` (I + H, 4H), rows [x; h], columns in gate order i, j (= g), f, o,
and ``bias`` (4H); the forget bias is added in the graph, not stored. That is exactly the layout of
TensorFlow's block LSTM V1 (``w``, ``b``, ``forget_bias`` an attribute; README's table lists both), so
the conversion is the ``tensorflow/BlockLSTM`` adapter's ``block_to_native`` / ``block_from_native``
with version 1 (no TF1 adapter exists in backends/ yet).

TF1's cells need tf-keras beside TensorFlow (``pip install --no-deps tf-keras==<TensorFlow's version>``:
with its dependencies pip would replace tensorflow-cpu by tensorflow) and ``TF_USE_LEGACY_KERAS=1``
set before TensorFlow is imported: this runs in a process of its own (training/runs.py), and where
that cannot work its rows say why (:meth:`TF1Model.availability`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache

import numpy as np

from backends.tensorflow_lstm import block_from_native, block_to_native
from training.frameworks import Framework, Trainer
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

TF1_SETUP = "pip install --no-deps tf-keras==<TensorFlow's version>, and TF_USE_LEGACY_KERAS=1 before TensorFlow is imported"


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf


@cache
def tf1_problem() -> str | None:
    """None if TF1's BasicLSTMCell can be built here, else the real reason."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() not in ("1", "true"):
        return f"TF_USE_LEGACY_KERAS=1 is not set in this process ({TF1_SETUP})"
    if importlib.util.find_spec("tensorflow") is None:
        return "tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')"
    if importlib.util.find_spec("tf_keras") is None:
        missing = "tf-keras is not installed (no module named 'tf_keras')"
    else:
        missing = None
    try:
        tf = _tf()
        with tf.Graph().as_default():
            tf.compat.v1.nn.rnn_cell.BasicLSTMCell(1, forget_bias=FORGET_BIAS)
    except Exception as error:  # noqa: BLE001 - whatever fails, its own words are the reason
        reason = f"tf.compat.v1.nn.rnn_cell.BasicLSTMCell failed: {type(error).__name__}: {error}"
        return f"{missing}; {reason}; {TF1_SETUP}" if missing else reason
    return None


class _Graph:
    """The tutorial's graph for one batch size, with assign ops, gradients and the own optimizer."""

    def __init__(self, T: int, I: int, H: int, C: int, B: int | None):
        tf = _tf()
        tf1 = tf.compat.v1
        self.graph = tf.Graph()
        self.I = I
        with self.graph.as_default():
            tf1.set_random_seed(0)
            self.x = tf1.placeholder(tf.float32, (B, T, I), name="x")  # batch-major, as the tutorials feed it
            self.y = tf1.placeholder(tf.int64, (B,), name="y")
            steps = tf.unstack(self.x, T, axis=1)
            cell = tf1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=FORGET_BIAS)
            outputs, _ = tf1.nn.static_rnn(cell, steps, dtype=tf.float32)
            self.w_out = tf1.get_variable("w_out", (H, C), tf.float32)
            self.b_out = tf1.get_variable("b_out", (C,), tf.float32)
            self.logits = tf.matmul(outputs[-1], self.w_out) + self.b_out
            labels = tf.one_hot(self.y, C, dtype=tf.float32)
            self.loss = tf.reduce_mean(tf1.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=self.logits))
            weights = {v.name.split("/")[-1].split(":")[0]: v for v in cell.weights}  # kernel:0, bias:0
            self.variables = [weights["kernel"], weights["bias"], self.w_out, self.b_out]
            self.gradients = tf1.gradients(self.loss, self.variables)
            self.feeds = [tf1.placeholder(tf.float32, v.shape) for v in self.variables]
            self.assign = [v.assign(p) for v, p in zip(self.variables, self.feeds)]
            self.train = tf1.train.RMSPropOptimizer(LEARNING_RATE, decay=DECAY).minimize(self.loss)
            init = tf1.global_variables_initializer()
        self.session = tf1.Session(graph=self.graph)
        self.session.run(init)

    def load(self, params: ModelParams) -> None:
        native = block_to_native(params.lstm, FORGET_BIAS, version=1)  # the forget bias stays an attribute
        values = (native["w"], native["b"], params.Wd.T, params.bd)
        self.session.run(self.assign, dict(zip(self.feeds, map(np.ascontiguousarray, values))))

    def canonical(self, kernel, bias, w_out, b_out) -> ModelParams:
        native = {"w": kernel, "b": bias, "forget_bias": 0.0, "cell_clip": -1.0, "use_peephole": False}
        lstm = block_from_native(native, version=1, input_size=self.I)
        return ModelParams(lstm, np.ascontiguousarray(np.asarray(w_out).T), np.array(b_out))

    def feed(self, x, y):
        return {self.x: np.ascontiguousarray(x.transpose(1, 0, 2)), self.y: y}


@cache
def _graph(T, I, H, C, B) -> _Graph:
    return _Graph(T, I, H, C, B)


def _graph_for(params: ModelParams, x: np.ndarray) -> _Graph:
    return _graph(x.shape[0], params.lstm.input_size, params.lstm.hidden_size, params.Wd.shape[0], x.shape[1])


class TF1Trainer(Trainer):
    """The tutorial's own loop: sess.run([loss, train_op]) on a graph of its own (fresh optimizer slots)."""

    def __init__(self, params: ModelParams):
        self.initial, self.graph = params, None

    def step(self, x, y) -> float:
        if self.graph is None:
            self.graph = _Graph(x.shape[0], self.initial.lstm.input_size, self.initial.lstm.hidden_size,
                                self.initial.Wd.shape[0], x.shape[1])
            self.graph.load(self.initial)
        loss, _ = self.graph.session.run([self.graph.loss, self.graph.train], self.graph.feed(x, y))
        return float(loss)

    def params(self) -> ModelParams:
        if self.graph is None:
            return self.initial
        return self.graph.canonical(*self.graph.session.run(self.graph.variables))


@dataclass
class TF1Model(Framework):
    id: str = "tf1/BasicLSTMCell"
    group: str = "tf1"
    description: str = ("tf.compat.v1 BasicLSTMCell(forget_bias=1.0) + static_rnn + matmul, softmax cross-entropy, "
                        "graph mode and Session, tf.gradients")
    own_optimizer: str = OWN_RMSPROP["tf1"]

    def availability(self):
        try:
            return tf1_problem()
        except Exception as error:  # noqa: BLE001 - availability never raises
            return f"checking TF1 failed: {type(error).__name__}: {error}"

    def environment(self):
        tf = _tf()
        import tf_keras

        return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS", "")}

    def loss_and_gradients(self, params, x, y):
        graph = _graph_for(params, x)
        graph.load(params)
        loss, grads = graph.session.run([graph.loss, graph.gradients], graph.feed(x, y))
        return float(loss), graph.canonical(*grads)

    def logits(self, params, x):
        graph = _graph_for(params, x)
        graph.load(params)
        return graph.session.run(graph.logits, graph.feed(x, np.zeros(x.shape[1], np.int64)))

    def trainer(self, params):
        return TF1Trainer(params)
