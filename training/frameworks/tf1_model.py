"""TensorFlow 1, as the tutorials wrote it: ``tf.compat.v1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=1.0)``
unrolled by ``static_rnn`` over the T unstacked steps, ``matmul(outputs[-1], W_out) + b_out``,
``softmax_cross_entropy_with_logits_v2`` averaged, in graph mode with a ``Session``; gradients by
``tf.gradients``; its own optimizer is ``tf.compat.v1.train.RMSPropOptimizer(0.001, decay=0.9)``.
Weights are loaded with assign ops fed from placeholders.

BasicLSTMCell's variables are the TF1 rows' layout (backends/layouts/tf1.py, ``BASIC_LSTM_CELL``): ``kernel``
(I + H, 4H), rows [x; h], columns in gate order i, j (= g), f, o, and ``bias`` (4H), under ``static_rnn``'s
scope ``rnn/basic_lstm_cell``; the forget bias is the cell's attribute, added in the graph, not stored, so the
variables hold the model's b as it is. The graph and its Session come from TF1's runtime
(backends/runtimes/tensorflow.py: TF32 off, LSTMC_THREADS for the Session).

TF1's cells need tf-keras beside TensorFlow (``pip install --no-deps tf-keras==<TensorFlow's version>``:
with its dependencies pip would replace tensorflow-cpu by tensorflow) and ``TF_USE_LEGACY_KERAS=1``
set before TensorFlow is imported: this runs in a process of its own (training/runs.py), as the TF1 rows do,
and where that cannot work its rows say why (:meth:`TF1Model.availability`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from backends.layouts.tf1 import BASIC_LSTM_CELL
from backends.runtimes.tensorflow import TF1, tensorflow
from contract.vocabulary import Device
from spec.params import LSTMParams
from training.frameworks import LAYER, Framework, Trainer, described, lstm_gradient, native_lstm, unavailable
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

LAYOUT = BASIC_LSTM_CELL
CELL = "BasicLSTMCell"
TF1_SETUP = "pip install --no-deps tf-keras==<TensorFlow's version>, and TF_USE_LEGACY_KERAS=1 before TensorFlow is imported"


def legacy_switch_problem() -> str | None:
    """Why TF1's cells cannot be built in this process for want of TF_USE_LEGACY_KERAS=1 (it must be set before
    TensorFlow is imported: training/runs.py sets it for this framework's process), or None."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() not in ("1", "true"):
        return f"TF_USE_LEGACY_KERAS=1 is not set in this process ({TF1_SETUP})"
    return None


def build(T: int, I: int, H: int, C: int, B: int):
    """The tutorial's graph for one batch shape: placeholders, the model, the loss, tf.gradients of it with respect
    to every variable, an assign op per variable fed from a placeholder, the own optimizer's step and the
    initializer (the optimizer's slots included)."""
    tf = tensorflow()
    tf1 = tf.compat.v1
    g = SimpleNamespace()
    tf1.set_random_seed(0)
    g.x = tf1.placeholder(tf.float32, (B, T, I), name="x")  # batch-major, as the tutorials feed it
    g.y = tf1.placeholder(tf.int64, (B,), name="y")
    steps = tf.unstack(g.x, T, axis=1)
    cell = tf1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=FORGET_BIAS)
    outputs, _ = tf1.nn.static_rnn(cell, steps, dtype=tf.float32)
    g.w_out = tf1.get_variable("w_out", (H, C), tf.float32)
    g.b_out = tf1.get_variable("b_out", (C,), tf.float32)
    g.logits = tf.matmul(outputs[-1], g.w_out) + g.b_out
    labels = tf.one_hot(g.y, C, dtype=tf.float32)
    g.loss = tf.reduce_mean(tf1.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=g.logits))
    g.lstm = {v.op.name: v for v in cell.weights}  # rnn/basic_lstm_cell/kernel, .../bias: the layout's names
    g.variables = [*g.lstm.values(), g.w_out, g.b_out]
    g.gradients = tf1.gradients(g.loss, g.variables)
    g.feeds = [tf1.placeholder(tf.float32, v.shape) for v in g.variables]
    g.assign = [v.assign(p) for v, p in zip(g.variables, g.feeds)]
    g.train = tf1.train.RMSPropOptimizer(LEARNING_RATE, decay=DECAY).minimize(g.loss)
    g.init = tf1.global_variables_initializer()
    return g


def graph_for(T: int, I: int, H: int, C: int, B: int):
    """The graph of this shape with its Session, made once per process by the runtime. Every use assigns every
    model variable first; only a trainer runs the initializer (its optimizer's slots start afresh)."""
    return TF1.graph(("training", "tf1", T, I, H, C, B), Device.CPU, lambda: build(T, I, H, C, B))


def load(graph, params: ModelParams) -> None:
    native = native_lstm(LAYOUT, params.lstm)  # the forget bias stays an attribute: the cell's forget_bias
    g = graph.nodes
    weights = {name: value for name, value in native.items() if "/" in name}
    if set(weights) != set(g.lstm):
        raise RuntimeError(f"BasicLSTMCell's variables {sorted(g.lstm)} are not the layout's {sorted(weights)}")
    if native["forget_bias"] != FORGET_BIAS:
        raise RuntimeError(f"the layout's forget_bias {native['forget_bias']} is not the graph's cell's {FORGET_BIAS}")
    values = [*(weights[name] for name in g.lstm), params.Wd.T, params.bd]
    graph.run(g.assign, dict(zip(g.feeds, map(np.ascontiguousarray, values))))


def canonical(graph, values) -> ModelParams:
    """The model's parameters from the variables' values (or their gradients, which is the same reading: the
    variables hold b without the forget bias, which the cell adds as an attribute)."""
    g = graph.nodes
    *lstm, w_out, b_out = values
    native = {**dict(zip(g.lstm, lstm)), "forget_bias": 0.0}
    cell = LAYOUT.from_native(native, LAYER).cells[0]
    return ModelParams(LSTMParams(cell.W, cell.U, cell.b), np.ascontiguousarray(np.asarray(w_out).T), np.array(b_out))


def feed(graph, x, y) -> dict:
    return {graph.nodes.x: np.ascontiguousarray(x.transpose(1, 0, 2)), graph.nodes.y: y}


def _graph_of(params: ModelParams, x: np.ndarray):
    return graph_for(x.shape[0], params.lstm.input_size, params.lstm.hidden_size, params.Wd.shape[0], x.shape[1])


class TF1Trainer(Trainer):
    """The tutorial's own loop: sess.run([loss, train_op]), the optimizer's slots initialised afresh."""

    def __init__(self, params: ModelParams):
        self.initial, self.graph = params, None

    def step(self, x, y) -> float:
        if self.graph is None:
            self.graph = _graph_of(self.initial, x)
            self.graph.run(self.graph.nodes.init, {})
            load(self.graph, self.initial)
        loss, _ = self.graph.run([self.graph.nodes.loss, self.graph.nodes.train], feed(self.graph, x, y))
        return float(loss)

    def params(self) -> ModelParams:
        if self.graph is None:
            return self.initial
        return canonical(self.graph, self.graph.run(self.graph.nodes.variables, {}))


@dataclass
class TF1Model(Framework):
    id: str = "tf1/BasicLSTMCell"
    group: str = "tf1"
    description: str = ("tf.compat.v1 BasicLSTMCell(forget_bias=1.0) + static_rnn + matmul, softmax cross-entropy, "
                        "graph mode and Session, tf.gradients")
    own_optimizer: str = OWN_RMSPROP["tf1"]

    def availability(self):
        try:
            return legacy_switch_problem() or TF1.availability(Device.CPU) or TF1.cell_problem(CELL)
        except Exception as error:  # noqa: BLE001 - availability never raises
            return unavailable(error)

    def environment(self):
        return described(TF1.environment(Device.CPU))

    def loss_and_gradients(self, params, x, y):
        graph = _graph_of(params, x)
        load(graph, params)
        loss, grads = graph.run([graph.nodes.loss, graph.nodes.gradients], feed(graph, x, y))
        *lstm, w_out, b_out = grads
        native = dict(zip(graph.nodes.lstm, lstm))
        return float(loss), ModelParams(lstm_gradient(LAYOUT, native, params.lstm), np.ascontiguousarray(w_out.T), b_out)

    def logits(self, params, x):
        graph = _graph_of(params, x)
        load(graph, params)
        return graph.run(graph.nodes.logits, feed(graph, x, np.zeros(x.shape[1], np.int64)))

    def trainer(self, params):
        return TF1Trainer(params)
