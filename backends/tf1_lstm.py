"""TensorFlow 1's LSTM API, as the tutorials this project grew from wrote it: ``tf.compat.v1.nn.rnn_cell`` cells
under ``static_rnn`` / ``dynamic_rnn`` and their bidirectional twins, in a ``tf.Graph`` run by a ``Session``.

Rows (each the cell contract too: the layer with one forward cell):

    tensorflow-tf1/BasicLSTMCell+static_rnn    BasicLSTMCell(forget_bias) over a list of T steps: static_rnn,
                                               static_bidirectional_rnn
    tensorflow-tf1/BasicLSTMCell+dynamic_rnn   BasicLSTMCell(forget_bias), batch-major input (time_major=False):
                                               dynamic_rnn, bidirectional_dynamic_rnn
    tensorflow-tf1/LSTMCell+dynamic_rnn        LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip,
                                               forget_bias), time-major: dynamic_rnn, bidirectional_dynamic_rnn

What the API offers, and so what the rows declare: ``sequence_length`` (per row, 0 included: the state is
copied through the padding and the outputs there are zero, the spec's (13)); bidirectional layers; stacks,
forward ones through ``MultiRNNCell`` (as the tutorials stack them), bidirectional ones one call per layer
(TF1 has no stacked bidirectional function outside the removed tf.contrib, and a ``MultiRNNCell`` in each
direction would feed layer 2's backward cell only layer 1's backward outputs); LSTMCell's peepholes,
``cell_clip`` (the spec's (4c)), ``num_proj`` and ``proj_clip`` (7). Not offered: a lone reverse direction,
masks, gate clips, coupled gates.

Layout (``to_native_layer``: variables by the names the graph gives them, and the forget bias, an attribute):

    <scope>/<cell>/kernel             (I + P, 4H), rows [x; h], columns i, j (= g), f, o: BlockLSTM V1's w
    <scope>/<cell>/bias               (4H), i, j, f, o; TF1's forget_bias (default 1.0) is added, not stored
    <scope>/<cell>/w_i_diag, w_f_diag, w_o_diag    (H) peepholes (LSTMCell(use_peepholes=True))
    <scope>/<cell>/projection/kernel  (H, P) = W_hr^T (LSTMCell(num_proj))

with <cell> ``basic_lstm_cell`` or ``lstm_cell`` and <scope> ``rnn`` (one forward layer),
``rnn/multi_rnn_cell/cell_<l>`` (a forward stack), ``bidirectional_rnn/fw`` and ``/bw`` (one bidirectional
layer), ``layer_<l>/bidirectional_rnn/fw`` and ``/bw`` (a bidirectional stack): the default scopes of the
functions, as a tutorial's checkpoint holds them.

These classes need tf-keras beside TensorFlow and ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is first
imported (with Keras 3 they raise "not available with Keras 3"): every row runs in a process of its own
(``process_environment``). Weights are fed to assign ops through placeholders, inputs through placeholders;
gradients are ``tf.gradients`` in the graph with respect to x, the initial states and every variable. One
graph and session per row, layer configuration, shapes and dtype, kept for the process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from backends.base import (
    CellThroughLayer,
    Config,
    Implementation,
    NotSupported,
    cpu_model,
    fold_forget_bias,
    framework_problem,
)
from backends.config import layer_features
from backends.tensorflow_lstm import (
    V1_GATES,
    _cuda_reason,
    _tf,
    _tf_device,
    _tf_missing,
    bias_from_native,
    bias_to_native,
    kernel_from_native,
    kernel_to_native,
)
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

TF_KERAS_HINT = (
    "tf-keras is not installed: TF1's nn.rnn_cell cells need it beside tensorflow-cpu (python3 dev.py setup installs "
    "it; by hand: pip install --no-deps tf-keras==<TensorFlow's version>, since its dependency on `tensorflow` "
    "would replace tensorflow-cpu)"
)
#: TF1's kernel columns: i, j (the candidate, g), f, o.
TF1_GATES = V1_GATES
#: TF1's cells add this to the forget gate unless told otherwise; from_native_layer assumes it when a native dict
#: (a checkpoint's variables) does not say.
DEFAULT_FORGET_BIAS = 1.0
PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")

_REVERSE = (
    "TF1's RNN functions run a reverse direction only as the backward half of bidirectional_dynamic_rnn / "
    "static_bidirectional_rnn (a lone one is the user's tf.reverse_sequence around dynamic_rnn)"
)
_NO_MASK = "TF1's RNN functions take sequence_length, not a mask"
_COMMON_REASONS = {
    "reverse": _REVERSE,
    "gate_clip": "TF1's cells clip the cell state (LSTMCell(cell_clip)), not the gate pre-activations",
    "coupled": "TF1's nn.rnn_cell has no coupled input and forget gates (CoupledInputForgetGateLSTMCell left with tf.contrib)",
    "mask": _NO_MASK,
    "mask_previous_output": _NO_MASK,
    **{dtype: f"the TF1 rows do not time {dtype}" for dtype in ("float16", "bfloat16")},
}
_BASIC_REASONS = {
    "peephole": "BasicLSTMCell has no peepholes (TF1's peephole cell is LSTMCell(use_peepholes=True))",
    "projection": "BasicLSTMCell has no projection (TF1's is LSTMCell(num_proj))",
    "proj_clip": "BasicLSTMCell has no projection to clip (TF1's is LSTMCell(num_proj, proj_clip))",
    "cell_clip": "BasicLSTMCell does not clip the cell state (TF1's is LSTMCell(cell_clip))",
}
_RNN_FEATURES = ("stacked", "bidirectional", "lengths", "empty_sequences")


# ---------------------------------------------------------------------------
# The layout: variable names and their tensors
# ---------------------------------------------------------------------------


def cell_scope(layer: LayerConfig, k: int, cell_name: str) -> str:
    """Where cell k (layer l = k // D, direction d = k % D) keeps its variables: the functions' default scopes."""
    D = layer.num_directions
    l, d = divmod(k, D)
    if D == 1:
        return f"rnn/{cell_name}" if layer.num_layers == 1 else f"rnn/multi_rnn_cell/cell_{l}/{cell_name}"
    stack = f"layer_{l}/" if layer.num_layers > 1 else ""
    return f"{stack}bidirectional_rnn/{('fw', 'bw')[d]}/{cell_name}"


def cell_to_native(params: LSTMParams, scope: str) -> dict[str, np.ndarray]:
    native = {f"{scope}/kernel": kernel_to_native(params, TF1_GATES), f"{scope}/bias": bias_to_native(params.b, TF1_GATES)}
    if params.peephole:
        native.update({f"{scope}/{name}": params.p[k].copy() for k, name in enumerate(PEEPHOLES)})
    if params.W_hr is not None:
        native[f"{scope}/projection/kernel"] = np.ascontiguousarray(params.W_hr.T)
    return native


def cell_from_native(native: Mapping[str, object], scope: str, *, peephole: bool, projection: bool, forget_bias: float) -> LSTMParams:
    """One cell's canonical parameters; the forget bias is folded into b_f."""
    try:
        kernel, bias = (np.asarray(native[f"{scope}/{name}"]) for name in ("kernel", "bias"))
        p = np.stack([np.asarray(native[f"{scope}/{name}"]) for name in PEEPHOLES]) if peephole else None
        W_hr = np.ascontiguousarray(np.asarray(native[f"{scope}/projection/kernel"]).T) if projection else None
    except KeyError as missing:
        raise LSTMInputError("native", "missing variable", missing.args[0], sorted(k for k in native if k.startswith(scope))) from None
    H = bias.shape[0] // 4
    P = H if W_hr is None else W_hr.shape[0]
    check_tensor(f"{scope}/bias", bias, (4 * H,), kernel.dtype)
    check_tensor(f"{scope}/kernel", kernel, ("I + P", 4 * H), kernel.dtype)
    W, U = kernel_from_native(kernel, kernel.shape[0] - P, TF1_GATES)
    b = fold_forget_bias(bias_from_native(bias, TF1_GATES), forget_bias)
    return LSTMParams(W=W, U=U, b=b, p=p, W_hr=W_hr)


# ---------------------------------------------------------------------------
# The graph: what a TF1 user writes
# ---------------------------------------------------------------------------


def _tf1():
    tf = _tf()
    return tf, tf.compat.v1


def _threads() -> int:
    """LSTMC_THREADS for the session's thread pools; 0 is TensorFlow's choice (every core)."""
    value = os.environ.get("LSTMC_THREADS", "")
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(f"LSTMC_THREADS must be a positive integer, got {value!r}")
    return int(value or 0)


class _Graph:
    """One graph: placeholders for x (in the row's layout), h0, c0, the lengths and the cotangents; the layer;
    an assign op per variable fed from a placeholder; y, h_T, c_T and tf.gradients of the loss with respect to
    x, h0, c0 and every variable; and the Session that runs them."""

    def __init__(self, row: TF1LSTM, layer: LayerConfig, shape: tuple[int, int, int], H: int, P: int, dtype: str,
                 with_lengths: bool, device: str):
        tf, tf1 = _tf1()
        T, B, I = shape
        LD = layer.num_layers * layer.num_directions
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.device(device):
            self.x = tf1.placeholder(dtype, row.native_x_shape(T, B, I), name="x")
            self.h0 = tf1.placeholder(dtype, (LD, B, P), name="h0")
            self.c0 = tf1.placeholder(dtype, (LD, B, H), name="c0")
            self.lengths = tf1.placeholder(tf.int32, (B,), name="sequence_length") if with_lengths else None
            y, states = _layers(row, layer, self.x, self.h0, self.c0, self.lengths, dtype)
            self.y = y
            self.h_T = tf.stack([s.h for s in states])
            self.c_T = tf.stack([s.c for s in states])
            self.dy = tf1.placeholder(dtype, y.shape, name="dy")
            self.dh_T = tf1.placeholder(dtype, (LD, B, P), name="dh_T")
            self.dc_T = tf1.placeholder(dtype, (LD, B, H), name="dc_T")
            loss = tf.reduce_sum(self.dy * y) + tf.reduce_sum(self.dh_T * self.h_T) + tf.reduce_sum(self.dc_T * self.c_T)
            self.variables = {v.op.name: v for v in tf1.global_variables()}
            self.values = {name: tf1.placeholder(v.dtype.base_dtype, v.shape, name=f"load/{name}") for name, v in self.variables.items()}
            self.assign = tf.group(*(v.assign(self.values[name]) for name, v in self.variables.items()))
            sources = [self.x, self.h0, self.c0, *self.variables.values()]
            self.gradients = [tf.zeros_like(s) if g is None else g for g, s in zip(tf.gradients(loss, sources), sources)]
        threads = _threads()
        config = tf1.ConfigProto(allow_soft_placement=True, intra_op_parallelism_threads=threads,
                                 inter_op_parallelism_threads=threads)
        self.session = tf1.Session(graph=self.graph, config=config)

    def load(self, native: Mapping[str, object]) -> None:
        """Assign every variable its value from the native layout (names as the graph gives them)."""
        weights = {name: native[name] for name in native if "/" in name}  # the rest are attributes (forget_bias)
        if set(weights) != set(self.variables):
            raise LSTMInputError("native", "variables do not match the graph's", sorted(self.variables), sorted(weights))
        self.session.run(self.assign, {self.values[name]: value for name, value in weights.items()})

    def feed(self, x, h0, c0, lengths, cotangents=None) -> dict:
        feed = {self.x: x, self.h0: h0, self.c0: c0}
        if self.lengths is not None:
            feed[self.lengths] = lengths.astype(np.int32)
        if cotangents is not None:
            feed.update({self.dy: cotangents[0], self.dh_T: cotangents[1], self.dc_T: cotangents[2]})
        return feed


def _layers(row: TF1LSTM, layer: LayerConfig, x, h0, c0, lengths, dtype):
    """The stack, as a TF1 user builds it: y in x's layout (feature axis last) and the final LSTMStateTuples,
    cell l * D + d."""
    tf1 = _tf().compat.v1
    state = lambda k: tf1.nn.rnn_cell.LSTMStateTuple(c0[k], h0[k])  # noqa: E731 (c, h): TF1's order
    make_cell = lambda: row.make_cell(layer, int(c0.shape[2]), dtype)  # noqa: E731
    L = layer.num_layers
    if layer.direction == "forward":
        cells = [make_cell() for _ in range(L)]
        if L == 1:
            y, final = row.rnn(cells[0], x, state(0), lengths)
            return y, [final]
        y, finals = row.rnn(tf1.nn.rnn_cell.MultiRNNCell(cells), x, tuple(state(l) for l in range(L)), lengths)
        return y, list(finals)
    states = []
    for l in range(L):
        scope = tf1.variable_scope(f"layer_{l}") if L > 1 else contextlib.nullcontext()
        with scope:
            x, finals = row.bidirectional_rnn(make_cell(), make_cell(), x, state(2 * l), state(2 * l + 1), lengths)
        states += finals
    return x, states


# ---------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------


@dataclass
class TF1LSTM(CellThroughLayer, Implementation):
    """A TF1 cell (``cell``: "BasicLSTMCell" or "LSTMCell") under ``rnn`` ("static_rnn" or "dynamic_rnn")."""

    framework: str = "tensorflow"
    cell: str = "LSTMCell"
    rnn_function: str = "dynamic_rnn"
    time_major: bool = True
    devices: tuple[str, ...] = ("cpu", "cuda")
    process_environment: Mapping[str, str] = field(default_factory=lambda: {"TF_USE_LEGACY_KERAS": "1"})
    origin: str = "backends.tf1_lstm"
    #: One graph and session per layer configuration, shapes, dtype, lengths or not and device, kept for the process.
    _graphs: dict = field(default_factory=dict, repr=False, compare=False)

    # -- availability and environment (in the row's own process) -----------------------------------

    def _availability(self, device: str) -> str | None:
        if (reason := _tf_missing()) is not None:
            return reason
        if (reason := framework_problem("tf_keras", TF_KERAS_HINT)) is not None:
            return reason
        try:
            getattr(_tf().compat.v1.nn.rnn_cell, self.cell)
        except (AttributeError, ImportError) as error:
            return f"tf.compat.v1.nn.rnn_cell.{self.cell} is unavailable: {error} (it needs tf-keras and TF_USE_LEGACY_KERAS=1)"
        return _cuda_reason() if device == "cuda" else None

    def _environment(self, device: str) -> dict[str, object]:
        tf = _tf()
        import tf_keras

        gpus = tf.config.list_physical_devices("GPU") if device == "cuda" else []
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
        return {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS"),
            "mode": "graph (tf.Graph, tf.compat.v1.Session)",
            "device": (f"GPU:0 {name}" if name else "no GPU visible") if device == "cuda" else f"CPU:0 {cpu_model()}",
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "session_threads": _threads() or "TensorFlow's choice (0)",
            "built_with_cuda": tf.test.is_built_with_cuda(),
        }

    # -- the framework's calls ----------------------------------------------------------------------

    def make_cell(self, layer: LayerConfig, units: int, dtype: str):
        rnn_cell = _tf().compat.v1.nn.rnn_cell
        if self.cell == "BasicLSTMCell":
            return rnn_cell.BasicLSTMCell(units, forget_bias=layer.forget_bias, dtype=dtype)
        return rnn_cell.LSTMCell(units, use_peepholes=layer.peephole, cell_clip=layer.cell_clip, num_proj=layer.proj_size,
                                 proj_clip=layer.proj_clip, forget_bias=layer.forget_bias, dtype=dtype)

    def native_x_shape(self, T: int, B: int, I: int) -> tuple[int, int, int]:
        return (T, B, I) if self.time_major else (B, T, I)

    def rnn(self, cell, x, initial_state, lengths):
        """One direction: (outputs in x's layout, final state)."""
        tf, tf1 = _tf1()
        if self.rnn_function == "static_rnn":
            ys, final = tf1.nn.static_rnn(cell, tf.unstack(x), initial_state=initial_state, sequence_length=lengths)
            return tf.stack(ys), final
        return tf1.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=initial_state, time_major=self.time_major)

    def bidirectional_rnn(self, cell_fw, cell_bw, x, state_fw, state_bw, lengths):
        """Both directions: ([forward ; backward] outputs in x's layout, [final forward, final backward])."""
        tf, tf1 = _tf1()
        if self.rnn_function == "static_rnn":
            ys, final_fw, final_bw = tf1.nn.static_bidirectional_rnn(
                cell_fw, cell_bw, tf.unstack(x), initial_state_fw=state_fw, initial_state_bw=state_bw, sequence_length=lengths)
            return tf.stack(ys), [final_fw, final_bw]
        (y_fw, y_bw), (final_fw, final_bw) = tf1.nn.bidirectional_dynamic_rnn(
            cell_fw, cell_bw, x, sequence_length=lengths, initial_state_fw=state_fw, initial_state_bw=state_bw,
            time_major=self.time_major)
        return tf.concat([y_fw, y_bw], axis=2), [final_fw, final_bw]

    # -- layouts --------------------------------------------------------------------------------------

    @property
    def cell_name(self) -> str:
        return "basic_lstm_cell" if self.cell == "BasicLSTMCell" else "lstm_cell"

    def _require(self, layer: LayerConfig, peephole: bool) -> None:
        """NotSupported for what this row's API cannot express."""
        if peephole and "peephole" not in self.variants:
            raise NotSupported(self.unsupported_reasons["peephole"])
        for feature in layer_features(layer):
            if feature not in self.layer_features:
                raise NotSupported(self.unsupported_reasons[feature])

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """Every cell's variables by name, and ``forget_bias``, the cells' attribute (not folded)."""
        self._require(layer, params.peephole)
        native: dict[str, object] = {}
        for k, cell in enumerate(params.cells):
            native.update(cell_to_native(cell, cell_scope(layer, k, self.cell_name)))
        native["forget_bias"] = float(layer.forget_bias)
        return native

    def from_native_layer(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        """Canonical parameters, the native forget bias (TF1's default 1.0 when not given) folded into b_f."""
        self._require(layer, layer.peephole)
        forget_bias = float(native.get("forget_bias", DEFAULT_FORGET_BIAS))
        cells = tuple(
            cell_from_native(native, cell_scope(layer, k, self.cell_name), peephole=layer.peephole,
                             projection=layer.proj_size is not None, forget_bias=forget_bias)
            for k in range(layer.num_layers * layer.num_directions)
        )
        return LayerParams(cells, layer.num_directions)

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return self.to_native_layer(LayerParams((params,)), _one_cell(params.peephole, forget_bias))

    def from_native(self, native: Mapping[str, object]) -> LSTMParams:
        peephole = f"{cell_scope(_one_cell(False, 0.0), 0, self.cell_name)}/{PEEPHOLES[0]}" in native
        return self.from_native_layer(native, _one_cell(peephole, 0.0)).cells[0]

    # -- the layer contract ---------------------------------------------------------------------------

    def _session(self, params: LayerParams, layer: LayerConfig, x, lengths, config: Config) -> _Graph:
        key = (layer, x.shape, params.hidden_size, params.output_size, config.dtype, lengths is not None, _tf_device(config.device))
        if key not in self._graphs:
            self._graphs[key] = _Graph(self, layer, *key[1:])
        return self._graphs[key]

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        graph = self._session(params, layer, x, lengths, config)
        graph.load(self.to_native_layer(params, layer))
        y, h_T, c_T = graph.session.run([graph.y, graph.h_T, graph.c_T], graph.feed(self._to_native_x(x), h0, c0, lengths))
        return self._from_native_x(y), h_T, c_T

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        graph = self._session(params, layer, x, lengths, config)
        graph.load(self.to_native_layer(params, layer))
        cot = (self._to_native_x(cotangents["dy"]), cotangents["dh_T"], cotangents["dc_T"])
        dx, dh0, dc0, *dvariables = graph.session.run(graph.gradients, graph.feed(self._to_native_x(x), h0, c0, lengths, cot))
        # A gradient has no forget bias to fold.
        grads = self.from_native_layer({**dict(zip(graph.variables, dvariables)), "forget_bias": 0.0}, layer)
        return {"x": self._from_native_x(dx), "h0": dh0, "c0": dc0, **grads.tensors()}

    def _to_native_x(self, x: np.ndarray) -> np.ndarray:
        return x if self.time_major else np.ascontiguousarray(x.transpose(1, 0, 2))

    def _from_native_x(self, y: np.ndarray) -> np.ndarray:
        return y if self.time_major else np.ascontiguousarray(y.transpose(1, 0, 2))




def _one_cell(peephole: bool, forget_bias: float) -> LayerConfig:
    return LayerConfig(peephole=peephole, forget_bias=forget_bias)


IMPLEMENTATIONS = (
    TF1LSTM(
        id="tensorflow-tf1/BasicLSTMCell+static_rnn",
        description="tf.compat.v1.nn.rnn_cell.BasicLSTMCell(forget_bias) under static_rnn / static_bidirectional_rnn "
        "(sequence_length; forward stacks through MultiRNNCell), graph mode, gradients by tf.gradients",
        cell="BasicLSTMCell",
        rnn_function="static_rnn",
        variants=("standard",),
        layer_features=_RNN_FEATURES,
        unsupported_reasons={**_COMMON_REASONS, **_BASIC_REASONS},
    ),
    TF1LSTM(
        id="tensorflow-tf1/BasicLSTMCell+dynamic_rnn",
        description="tf.compat.v1.nn.rnn_cell.BasicLSTMCell(forget_bias) under dynamic_rnn / bidirectional_dynamic_rnn "
        "with batch-major input (time_major=False; sequence_length; forward stacks through MultiRNNCell), graph mode, "
        "gradients by tf.gradients",
        cell="BasicLSTMCell",
        rnn_function="dynamic_rnn",
        time_major=False,
        variants=("standard",),
        layer_features=_RNN_FEATURES,
        unsupported_reasons={**_COMMON_REASONS, **_BASIC_REASONS},
    ),
    TF1LSTM(
        id="tensorflow-tf1/LSTMCell+dynamic_rnn",
        description="tf.compat.v1.nn.rnn_cell.LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip, forget_bias) under "
        "dynamic_rnn / bidirectional_dynamic_rnn, time-major (sequence_length; forward stacks through MultiRNNCell), "
        "graph mode, gradients by tf.gradients",
        cell="LSTMCell",
        rnn_function="dynamic_rnn",
        time_major=True,
        layer_features=(*_RNN_FEATURES, "projection", "proj_clip", "cell_clip"),
        unsupported_reasons=dict(_COMMON_REASONS),
    ),
)
