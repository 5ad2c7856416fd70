"""TensorFlow 1's LSTM API, as the tutorials this project grew from wrote it: ``tf.compat.v1.nn.rnn_cell`` cells
under ``static_rnn`` / ``dynamic_rnn`` and their bidirectional twins, in a ``tf.Graph`` run by a ``Session``.
Layout: backends/layouts/tf1.py (variables by graph name); runtime: backends/runtimes/tensorflow.py (TF1).

    tensorflow-tf1/BasicLSTMCell+static_rnn    BasicLSTMCell(forget_bias) over a list of T steps: static_rnn,
                                               static_bidirectional_rnn
    tensorflow-tf1/BasicLSTMCell+dynamic_rnn   BasicLSTMCell(forget_bias), batch-major input (time_major=False):
                                               dynamic_rnn, bidirectional_dynamic_rnn
    tensorflow-tf1/LSTMCell+dynamic_rnn        LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip, forget_bias),
                                               time-major: dynamic_rnn, bidirectional_dynamic_rnn

What the API offers, and so what the rows declare: ``sequence_length`` (per row, 0 included: the state is copied
through the padding and the outputs there are zero, the spec's (13)); bidirectional layers; stacks, forward ones
through ``MultiRNNCell`` (as the tutorials stack them), bidirectional ones one call per layer (TF1 has no stacked
bidirectional function outside the removed tf.contrib, and a ``MultiRNNCell`` in each direction would feed layer
2's backward cell only layer 1's backward outputs); LSTMCell's peepholes, ``cell_clip``, ``num_proj`` and
``proj_clip``. Not offered: a lone reverse direction, masks, gate clips, coupled gates.

These classes need tf-keras beside TensorFlow and ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is first imported
(with Keras 3 they raise "not available with Keras 3"): every row runs in a process of its own
(``process_environment``). A graph is what a TF1 user writes, so the rows run their own hooks: one graph (and
Session) per row, layer, shapes, dtype, lengths or not and device, built once and kept for the process, serves the
outputs and the gradients of a case. Weights go in through assign ops fed from placeholders, inputs through
placeholders; gradients are ``tf.gradients`` with respect to x, the initial states and every variable.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from backends.layouts import tf1 as layouts
from backends.runtimes.tensorflow import TF1, tensorflow
from contract.answers import Gradients
from contract.row import Row
from contract.vocabulary import CONFORMANCE_DTYPES, Device, Dtype, Feature
from spec.precision import Policy
from spec.validation import LSTMInputError

_NO_MASK = "TF1's RNN functions take sequence_length, not a mask"
CALL_REASONS = {Feature.MASK: _NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: _NO_MASK}
#: What a TF1 cell computes in a half type: TensorFlow's ops one by one, each result rounded (MatMul accumulating in
#: float32, sigmoid as Eigen's half logistic).
EVERY_OPERATION = {Dtype.BFLOAT16: Policy.EVERY_OPERATION, Dtype.FLOAT16: Policy.EVERY_OPERATION}
RNN_FEATURES = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES})


@dataclass(eq=False)
class TF1LSTM(Row):
    """A TF1 cell (``cell``: "BasicLSTMCell" or "LSTMCell") under ``rnn_function`` ("static_rnn" or "dynamic_rnn")."""

    runtime: object = TF1
    layout: object = layouts.LSTM_CELL
    features: frozenset = RNN_FEATURES
    devices: tuple = (Device.CPU, Device.CUDA)
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(EVERY_OPERATION))
    reasons: dict = field(default_factory=lambda: dict(CALL_REASONS))
    process_environment: dict = field(default_factory=lambda: {"TF_USE_LEGACY_KERAS": "1"})
    origin: str = "backends.rows.tf1"
    cell: str = "LSTMCell"
    rnn_function: str = "dynamic_rnn"
    time_major: bool = True

    def _availability(self, device):
        return self.runtime.availability(device) or self.runtime.cell_problem(self.cell)

    # -- the framework's calls: what a TF1 user writes ---------------------------------------------------------

    def make_cell(self, layer, units: int, dtype: str):
        rnn_cell = tensorflow().compat.v1.nn.rnn_cell
        if self.cell == "BasicLSTMCell":
            return rnn_cell.BasicLSTMCell(units, forget_bias=layer.forget_bias, dtype=dtype)
        return rnn_cell.LSTMCell(units, use_peepholes=layer.peephole, cell_clip=layer.cell_clip, num_proj=layer.proj_size,
                                 proj_clip=layer.proj_clip, forget_bias=layer.forget_bias, dtype=dtype)

    def rnn(self, cell, x, initial_state, lengths):
        """One direction: (outputs in x's layout, final state)."""
        tf = tensorflow()
        if self.rnn_function == "static_rnn":
            ys, final = tf.compat.v1.nn.static_rnn(cell, tf.unstack(x), initial_state=initial_state, sequence_length=lengths)
            return tf.stack(ys), final
        return tf.compat.v1.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=initial_state,
                                           time_major=self.time_major)

    def bidirectional_rnn(self, cell_fw, cell_bw, x, state_fw, state_bw, lengths):
        """Both directions: ([forward ; backward] outputs in x's layout, [final forward, final backward])."""
        tf = tensorflow()
        if self.rnn_function == "static_rnn":
            ys, final_fw, final_bw = tf.compat.v1.nn.static_bidirectional_rnn(
                cell_fw, cell_bw, tf.unstack(x), initial_state_fw=state_fw, initial_state_bw=state_bw, sequence_length=lengths)
            return tf.stack(ys), [final_fw, final_bw]
        (y_fw, y_bw), (final_fw, final_bw) = tf.compat.v1.nn.bidirectional_dynamic_rnn(
            cell_fw, cell_bw, x, sequence_length=lengths, initial_state_fw=state_fw, initial_state_bw=state_bw,
            time_major=self.time_major)
        return tf.concat([y_fw, y_bw], axis=2), [final_fw, final_bw]

    def layers(self, layer, x, h0, c0, lengths, dtype: str):
        """The stack, as a TF1 user builds it: y in x's layout and the final LSTMStateTuples, cell l * D + d."""
        tf1 = tensorflow().compat.v1
        state = lambda k: tf1.nn.rnn_cell.LSTMStateTuple(c0[k], h0[k])  # noqa: E731 (c, h): TF1's order
        make_cell = lambda: self.make_cell(layer, int(c0.shape[2]), dtype)  # noqa: E731
        L = layer.num_layers
        if layer.direction == "forward":
            if L == 1:
                y, final = self.rnn(make_cell(), x, state(0), lengths)
                return y, [final]
            cells = tf1.nn.rnn_cell.MultiRNNCell([make_cell() for _ in range(L)])
            y, finals = self.rnn(cells, x, tuple(state(l) for l in range(L)), lengths)
            return y, list(finals)
        states = []
        for l in range(L):
            with tf1.variable_scope(f"layer_{l}") if L > 1 else contextlib.nullcontext():
                x, finals = self.bidirectional_rnn(make_cell(), make_cell(), x, state(2 * l), state(2 * l + 1), lengths)
            states += finals
        return x, states

    def build_graph(self, layer, shape, H: int, P: int, dtype: str, with_lengths: bool):
        """Placeholders for x (in the row's layout), h0, c0, the lengths and the cotangents; the layer; an assign op
        per variable fed from a placeholder; y, h_T, c_T and tf.gradients of the loss with respect to x, h0, c0 and
        every variable."""
        tf = tensorflow()
        tf1 = tf.compat.v1
        T, B, I = shape
        LD = layer.num_layers * layer.num_directions
        g = SimpleNamespace()
        g.x = tf1.placeholder(dtype, (T, B, I) if self.time_major else (B, T, I), name="x")
        g.h0 = tf1.placeholder(dtype, (LD, B, P), name="h0")
        g.c0 = tf1.placeholder(dtype, (LD, B, H), name="c0")
        g.lengths = tf1.placeholder(tf.int32, (B,), name="sequence_length") if with_lengths else None
        g.y, states = self.layers(layer, g.x, g.h0, g.c0, g.lengths, dtype)
        g.h_T, g.c_T = tf.stack([s.h for s in states]), tf.stack([s.c for s in states])
        g.dy = tf1.placeholder(dtype, g.y.shape, name="dy")
        g.dh_T = tf1.placeholder(dtype, (LD, B, P), name="dh_T")
        g.dc_T = tf1.placeholder(dtype, (LD, B, H), name="dc_T")
        loss = tf.reduce_sum(g.dy * g.y) + tf.reduce_sum(g.dh_T * g.h_T) + tf.reduce_sum(g.dc_T * g.c_T)
        g.variables = {v.op.name: v for v in tf1.global_variables()}
        g.values = {name: tf1.placeholder(v.dtype.base_dtype, v.shape, name=f"load/{name}") for name, v in g.variables.items()}
        g.assign = tf.group(*(v.assign(g.values[name]) for name, v in g.variables.items()))
        sources = [g.x, g.h0, g.c0, *g.variables.values()]
        g.gradients = [tf.zeros_like(s) if d is None else d for d, s in zip(tf.gradients(loss, sources), sources)]
        return g

    # -- the hooks: one graph per case, the layout's variables assigned, the inputs fed -------------------------

    def _graph(self, params, x, h0, c0, *, layer, lengths, device, cotangents=None):
        """The case's graph, its variables assigned from the layout's native values, and the feed for this call."""
        key = (self.id, layer, x.shape, params.hidden_size, params.output_size, params.dtype.name, lengths is not None, str(device))
        graph = self.runtime.graph(key, device, lambda: self.build_graph(layer, *key[2:7]))
        g = graph.nodes
        native = self.layout.to_native(params, layer)
        weights = {name: value for name, value in native.items() if "/" in name}  # the rest are attributes (forget_bias)
        if set(weights) != set(g.variables):
            raise LSTMInputError("native", "variables do not match the graph's", sorted(g.variables), sorted(weights))
        graph.run(g.assign, {g.values[name]: value for name, value in weights.items()})
        feed = {g.x: self._to_native_x(x), g.h0: h0, g.c0: c0}
        if lengths is not None:
            feed[g.lengths] = lengths.astype(np.int32)
        if cotangents is not None:
            feed.update({g.dy: self._to_native_x(cotangents.dy), g.dh_T: cotangents.dh_T, g.dc_T: cotangents.dc_T})
        return graph, feed

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        graph, feed = self._graph(params, x, h0, c0, layer=layer, lengths=lengths, device=device)
        y, h_T, c_T = graph.run([graph.nodes.y, graph.nodes.h_T, graph.nodes.c_T], feed)
        return self._to_native_x(y), h_T, c_T

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device):
        graph, feed = self._graph(params, x, h0, c0, layer=layer, lengths=lengths, device=device, cotangents=cotangents)
        dx, dh0, dc0, *dvariables = graph.run(graph.nodes.gradients, feed)
        native = dict(zip(graph.nodes.variables, dvariables))
        return Gradients(self._to_native_x(dx), dh0, dc0, self.layout.gradient(native, params, layer))

    def _to_native_x(self, x: np.ndarray) -> np.ndarray:
        """x (T, B, .) in the row's layout, and back (swapping T and B is its own inverse)."""
        return x if self.time_major else np.ascontiguousarray(x.transpose(1, 0, 2))


ROWS = (
    TF1LSTM(
        id="tensorflow-tf1/BasicLSTMCell+static_rnn",
        description="tf.compat.v1.nn.rnn_cell.BasicLSTMCell(forget_bias) under static_rnn / static_bidirectional_rnn "
        "(sequence_length; forward stacks through MultiRNNCell), graph mode, gradients by tf.gradients",
        layout=layouts.BASIC_LSTM_CELL,
        cell="BasicLSTMCell",
        rnn_function="static_rnn",
        unrolled=True,
    ),
    TF1LSTM(
        id="tensorflow-tf1/BasicLSTMCell+dynamic_rnn",
        description="tf.compat.v1.nn.rnn_cell.BasicLSTMCell(forget_bias) under dynamic_rnn / bidirectional_dynamic_rnn "
        "with batch-major input (time_major=False; sequence_length; forward stacks through MultiRNNCell), graph mode, "
        "gradients by tf.gradients",
        layout=layouts.BASIC_LSTM_CELL,
        cell="BasicLSTMCell",
        rnn_function="dynamic_rnn",
        time_major=False,
    ),
    TF1LSTM(
        id="tensorflow-tf1/LSTMCell+dynamic_rnn",
        description="tf.compat.v1.nn.rnn_cell.LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip, forget_bias) under "
        "dynamic_rnn / bidirectional_dynamic_rnn, time-major (sequence_length; forward stacks through MultiRNNCell), "
        "graph mode, gradients by tf.gradients",
        features=RNN_FEATURES | {Feature.PEEPHOLE, Feature.PROJECTION, Feature.PROJ_CLIP, Feature.CELL_CLIP},
    ),
)
