"""Keras 3's LSTMs on its three backends: ``keras.layers.LSTM`` and the generic
``keras.layers.RNN(keras.layers.LSTMCell, unroll=True)``, each on TensorFlow, JAX and PyTorch.

Keras fixes its backend at its first import (``KERAS_BACKEND``), so every row runs its hooks in a
child process of its own (``process_environment``, backends/process.py), the TensorFlow rows too:
a Keras row never depends on what else the suite imported. The JAX rows also set
``JAX_ENABLE_X64=1``: without it a float64 request would come back as float32 arrays (with it, Keras
3.15.1 still computes float64 in float32 there: a known failure, below).

What a user porting a model builds, and what these rows run (x batch-major (B, T, I) for Keras;
the transposes to and from the suite's time-major arrays are layout, done in NumPy):

    direction forward        LSTM(H, return_sequences=True, return_state=True) -> (y, h, c)
    direction reverse        the same with go_backwards=True; its y comes back in processing order,
                             so it is flipped back in time (keras.ops.flip) as a user must
    direction bidirectional  Bidirectional(LSTM(...)), merge_mode "concat": y = [forward ; backward],
                             states (h_fw, c_fw, h_bw, c_bw); initial_state in that order
    stacked                  one such layer per depth, layer l + 1 called on layer l's y: a chain of
                             layers (StackedRNNCells runs every cell in one direction, so it cannot
                             express a bidirectional stack, where layer l + 1 reads both directions)
    mask                     the ``mask`` argument (B, T) of every layer, zero_output_for_mask as asked
    lengths                  the mask t < L_b with zero_output_for_mask=True (an empty row is masked
                             throughout and keeps its initial state)

The RNN rows are the same with ``RNN(LSTMCell(H), unroll=True, ...)`` in place of ``LSTM``.
Keras has no projection, no clips, no coupled gates and no peepholes. ``Bidirectional`` sets
``zero_output_for_mask = return_sequences`` on both of its layers, so a bidirectional layer cannot
output the previous output at masked steps: that combination is declared "not supported".

Layouts: one cell is ``kernel`` (I, 4H) = W^T, ``recurrent_kernel`` (H, 4H) = U^T, ``bias`` (4H),
gates i, f, g, o, a forget bias folded into the bias (backends.tensorflow_lstm.keras_to_native).
A layer's native form is every trainable variable by its Keras path (``variable.path``), which
these rows make stable by naming every layer: ``lstm_0/lstm_cell/kernel``,
``bidirectional_1/backward_lstm_1/lstm_cell/bias``, ``rnn_0/lstm_cell/recurrent_kernel`` ...

Gradients by each backend's own autodiff, with respect to x, the initial states and every weight:
``tf.GradientTape`` (TensorFlow), ``torch.autograd.grad`` (PyTorch), and on JAX ``jax.vjp`` of a
function that runs each layer through ``layer.stateless_call`` with the weights as arguments.

Keras and its backends are imported only inside functions: importing this module needs none.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np

from backends.base import (
    CellThroughLayer,
    Config,
    Implementation,
    KnownFailure,
    NativeCache,
    NotSupported,
    cpu_model,
    fold_forget_bias,
    framework_problem,
)
from backends.config import layer_features
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import check_tensor

BACKENDS = ("tensorflow", "jax", "torch")
#: What each backend needs installed beside keras (the module to import, the pip hint).
BACKEND_MODULES = {
    "tensorflow": ("tensorflow", "tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')"),
    "jax": ("jax", "jax is not installed (pip install 'lstm-conformance[jax]')"),
    "torch": ("torch", "torch is not installed (pip install 'lstm-conformance[torch]')"),
}
KERAS_MISSING = "keras is not installed (pip install keras)"
APIS = {"LSTM": "keras.layers.LSTM", "RNN": "keras.layers.RNN(keras.layers.LSTMCell, unroll=True)"}
#: The cell's variables in the order Keras creates them.
CELL_WEIGHTS = ("kernel", "recurrent_kernel", "bias")

NO_PEEPHOLES = "Keras' LSTM has no peepholes (LSTMCell computes the gates from x and h only)"
NOT_IN_KERAS = {
    "peephole": NO_PEEPHOLES,
    "projection": "Keras' LSTM has no projection of h (no proj_size / num_proj)",
    "proj_clip": "Keras' LSTM has no projection, so no projection clip",
    "cell_clip": "Keras' LSTM does not clip the cell state (no cell_clip)",
    "gate_clip": "Keras' LSTM does not clip gate pre-activations (no clip)",
    "coupled": "Keras' LSTM has no coupled input and forget gates (no input_forget)",
    **{dtype: f"the Keras rows do not time {dtype}: Keras' mixed-precision policies are not verified here"
       for dtype in ("float16", "bfloat16")},
}
#: keras.layers.Bidirectional sets zero_output_for_mask = return_sequences on both of its layers.
BIDIRECTIONAL_ZEROES_MASKED_STEPS = (
    "keras.layers.Bidirectional forces zero_output_for_mask = return_sequences (True here) on both of its layers, "
    "so a bidirectional Keras layer outputs zeros at masked steps, never the previous output"
)


# ---------------------------------------------------------------------------
# The layer layout: every trainable variable by its Keras path
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Layouts: one cell (kernel, recurrent_kernel, bias), and a stack by Keras variable path
# ---------------------------------------------------------------------------


def keras_to_native(params: LSTMParams, forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    if params.peephole:
        raise NotSupported(NO_PEEPHOLES)
    H, I = params.hidden_size, params.input_size
    return {
        "kernel": np.ascontiguousarray(params.W.reshape(4 * H, I).T),
        "recurrent_kernel": np.ascontiguousarray(params.U.reshape(4 * H, H).T),
        "bias": fold_forget_bias(params.b, forget_bias).reshape(4 * H),
    }


def keras_from_native(native: Mapping[str, object]) -> LSTMParams:
    kernel, recurrent_kernel, bias = (np.asarray(native[k]) for k in ("kernel", "recurrent_kernel", "bias"))
    I, H = kernel.shape[0], recurrent_kernel.shape[0]
    check_tensor("kernel", kernel, (I, 4 * H), kernel.dtype)
    check_tensor("recurrent_kernel", recurrent_kernel, (H, 4 * H), kernel.dtype)
    check_tensor("bias", bias, (4 * H,), kernel.dtype)
    return LSTMParams(
        W=np.ascontiguousarray(kernel.T.reshape(4, H, I)),
        U=np.ascontiguousarray(recurrent_kernel.T.reshape(4, H, H)),
        b=bias.reshape(4, H).copy(),
    )


def cell_paths(api: str, direction: str, num_layers: int) -> list[str]:
    """The Keras path of each cell k = l * D + d, as the layers these rows build name them."""
    inner = "lstm" if api == "LSTM" else "rnn"
    paths = []
    for l in range(num_layers):
        if direction == "bidirectional":
            paths += [f"bidirectional_{l}/forward_{inner}_{l}/lstm_cell", f"bidirectional_{l}/backward_{inner}_{l}/lstm_cell"]
        else:
            paths.append(f"{inner}_{l}/lstm_cell")
    return paths


def _check_layout(layer: LayerConfig) -> None:
    """What Keras' weights cannot hold."""
    for feature, present in (("peephole", layer.peephole), ("projection", layer.proj_size is not None),
                             ("coupled", layer.coupled_input_forget)):
        if present:
            raise NotSupported(NOT_IN_KERAS[feature])


def layer_to_native(params: LayerParams, layer: LayerConfig, api: str, cell_to_native=keras_to_native) -> dict[str, np.ndarray]:
    """{Keras variable path: array}, the forget bias folded into each bias (each cell by ``cell_to_native``)."""
    _check_layout(layer)
    native = {}
    for path, cell in zip(cell_paths(api, layer.direction, layer.num_layers), params.cells, strict=True):
        native.update({f"{path}/{name}": value for name, value in cell_to_native(cell, layer.forget_bias).items()})
    return native


def layer_from_native(native: Mapping[str, object], layer: LayerConfig, api: str) -> LayerParams:
    """Canonical LayerParams from {Keras variable path: array} (a forget bias stays folded in b_f)."""
    _check_layout(layer)
    cells = [keras_from_native({name: native[f"{path}/{name}"] for name in CELL_WEIGHTS})
             for path in cell_paths(api, layer.direction, layer.num_layers)]
    return LayerParams(tuple(cells), layer.num_directions)


# ---------------------------------------------------------------------------
# Keras, imported in the row's own process
# ---------------------------------------------------------------------------


@cache
def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read once, at TensorFlow's import
    import keras

    return keras


def _keras_device(device: str) -> str:
    # Not "cpu:0": on the PyTorch backend, keras.device("cpu:0") makes every variable a copy of its Parameter
    # (.to("cpu:0")), and building an LSTM then fails on its integer seed-generator variable.
    return "gpu" if device == "cuda" else "cpu"


def _cuda_reason(backend: str) -> str | None:
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return "TensorFlow sees no GPU (tensorflow-cpu has no CUDA; GPU runs need tensorflow[and-cuda])"
    elif backend == "jax":
        import jax

        try:
            jax.devices("gpu")
        except RuntimeError as error:
            return f"jax sees no GPU ({error})"
    elif backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA device (torch.cuda.is_available() is False)"
    return None


def _stack_layers(keras, api: str, layer: LayerConfig, zero_output_for_mask: bool, H: int, dtype: str) -> list:
    """One Keras layer per depth: LSTM or RNN(LSTMCell), wrapped in Bidirectional for two directions; every
    layer named, so that the variables' paths are cell_paths()."""
    inner = "lstm" if api == "LSTM" else "rnn"
    options = {"return_sequences": True, "return_state": True, "go_backwards": layer.direction == "reverse",
                   "zero_output_for_mask": zero_output_for_mask, "dtype": dtype}
    layers = []
    for l in range(layer.num_layers):
        if api == "LSTM":
            recurrent = keras.layers.LSTM(H, name=f"{inner}_{l}", **options)
        else:
            cell = keras.layers.LSTMCell(H, name="lstm_cell", dtype=dtype)
            recurrent = keras.layers.RNN(cell, unroll=True, name=f"{inner}_{l}", **options)
        if layer.direction == "bidirectional":
            recurrent = keras.layers.Bidirectional(recurrent, merge_mode="concat", name=f"bidirectional_{l}", dtype=dtype)
        layers.append(recurrent)
    return layers


def keras_mask(T: int, layer: LayerConfig, lengths, mask) -> tuple[np.ndarray | None, bool]:
    """The time-major mask (T, B) Keras is given, and zero_output_for_mask: lengths are the mask t < L_b with
    zero outputs (spec/layer.py, (13)); a mask keeps the layer's own setting."""
    if lengths is not None:
        return np.arange(T)[:, None] < lengths[None, :], True
    return mask, layer.zero_output_for_mask


class _Stack:
    """The built Keras layers of one architecture in the row's process, and the one way they are run.

    The weights are assigned to the variables (TensorFlow, PyTorch) or passed to stateless_call (JAX) at
    every call."""

    def __init__(self, api: str, layer: LayerConfig, zero_output_for_mask: bool, I: int, H: int, dtype: str, device: str):
        keras = _keras()
        self.keras, self.device = keras, _keras_device(device)
        self.reverse, self.D = layer.direction == "reverse", layer.num_directions
        self._loaded: tuple = ()
        with keras.device(self.device):
            self.layers = _stack_layers(keras, api, layer, zero_output_for_mask, H, dtype)
            width = I
            for keras_layer in self.layers:
                keras_layer.build((None, None, width))
                width = self.D * H

    def assign(self, native: Mapping[str, np.ndarray]) -> None:
        """Load the weights, unless these very arrays are loaded already (the suite and the benchmarks call
        again and again with one parameter set, whose conversion _cell_to_native caches)."""
        values = tuple(native[variable.path] for variable in self.trainable_variables())
        if len(values) == len(self._loaded) and all(a is b for a, b in zip(values, self._loaded)):
            return
        for variable, value in zip(self.trainable_variables(), values):
            variable.assign(value)
        self._loaded = values  # held, so that no other array can take their ids

    def trainable_variables(self) -> list:
        return [v for keras_layer in self.layers for v in keras_layer.trainable_variables]

    def weights(self, native: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        """The arrays stateless_call takes: one list per layer, in its variables' order."""
        return [[native[v.path] for v in keras_layer.trainable_variables] for keras_layer in self.layers]

    @cached_property
    def tf_forward(self):
        """run() in a tf.function (TensorFlow traces it once per input signature and keeps it with the stack)."""
        import tensorflow as tf

        return tf.function(self.run)

    @cached_property
    def tf_gradients(self):
        """tf.GradientTape over run() with respect to x, h0, c0 and the tf.Variables behind Keras' variables,
        in a tf.function."""
        import tensorflow as tf

        variables = [v.value for v in self.trainable_variables()]

        @tf.function
        def gradients(x, h0, c0, mask, cotangents):
            with tf.GradientTape() as tape:
                tape.watch([x, *h0, *c0])
                y, h_T, c_T = self.run(x, h0, c0, mask)
                loss = _loss(self.keras.ops, y, h_T, c_T, *cotangents)
            return tape.gradient(loss, [x, *h0, *c0, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return gradients

    @cached_property
    def jax_forward(self):
        """run() with the weights as arguments, jitted (one compilation per shape, cached with the stack)."""
        import jax

        return jax.jit(lambda weights, x, h0, c0, mask: self.run(x, h0, c0, mask, weights))

    @cached_property
    def jax_gradients(self):
        """jax.vjp of run() with respect to the weights, x, h0 and c0, jitted."""
        import jax

        def gradients(weights, x, h0, c0, mask, cotangents):
            def outputs(weights, x, h0, c0):
                return self.run(x, h0, c0, mask, weights)

            _, pullback = jax.vjp(outputs, weights, x, h0, c0)
            return pullback(cotangents)

        return jax.jit(gradients)

    def run(self, x, h0: list, c0: list, mask, weights=None):
        """y (B, T, D * H) and the final h and c of every cell (lists, cell k = l * D + d), from x (B, T, I),
        the mask (B, T) or None and the initial states per cell. With ``weights`` (JAX), each layer runs
        through stateless_call with those arrays as its variables."""
        h_T, c_T = [], []
        for l, keras_layer in enumerate(self.layers):
            cells = range(l * self.D, (l + 1) * self.D)
            arguments = {"initial_state": [s for k in cells for s in (h0[k], c0[k])], "mask": mask}
            if weights is None:
                y, *states = keras_layer(x, **arguments)
            else:
                non_trainable = [v.value for v in keras_layer.non_trainable_variables]
                (y, *states), _ = keras_layer.stateless_call(weights[l], non_trainable, x, **arguments)
            if self.reverse:
                y = self.keras.ops.flip(y, axis=1)  # go_backwards returns processing order: back to time order
            h_T += states[0::2]
            c_T += states[1::2]
            x = y
        return x, h_T, c_T


@cache
def _stack(api: str, layer: LayerConfig, zero_output_for_mask: bool, I: int, H: int, dtype: str, device: str) -> _Stack:
    return _Stack(api, layer, zero_output_for_mask, I, H, dtype, device)


def _loss(ops, y, h_T, c_T, dy, dh_T, dc_T):
    """<dy, y> + <dh_T, h_T> + <dc_T, c_T>, summed over cells."""
    total = ops.sum(dy * y)
    for k in range(len(h_T)):
        total = total + ops.sum(dh_T[k] * h_T[k]) + ops.sum(dc_T[k] * c_T[k])
    return total


# -- gradients, by each backend's own autodiff: x, h0 and c0 per cell, then the variables (stack order) --


def _gradients_tensorflow(stack: _Stack, native, x, h0, c0, mask, cotangents):
    stack.assign(native)
    return stack.tf_gradients(x, h0, c0, mask, cotangents)


def _gradients_torch(stack: _Stack, native, x, h0, c0, mask, cotangents):
    import torch

    stack.assign(native)
    variables = [v.value for v in stack.trainable_variables()]  # the torch Parameters behind Keras' variables
    sources = [x, *h0, *c0]
    for tensor in sources:
        tensor.requires_grad_(True)
    y, h_T, c_T = stack.run(x, h0, c0, mask)
    loss = _loss(stack.keras.ops, y, h_T, c_T, *cotangents)
    return torch.autograd.grad(loss, [*sources, *variables], materialize_grads=True)


def _gradients_jax(stack: _Stack, native, x, h0, c0, mask, cotangents):
    weights, dx, dh0, dc0 = stack.jax_gradients(stack.weights(native), x, h0, c0, mask, tuple(cotangents))
    return [dx, *dh0, *dc0, *(w for per_layer in weights for w in per_layer)]


GRADIENTS = {"tensorflow": _gradients_tensorflow, "torch": _gradients_torch, "jax": _gradients_jax}


# ---------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------


@dataclass
class KerasLayer(CellThroughLayer, Implementation):
    """``api`` ("LSTM" or "RNN") on Keras' ``backend``; the cell contract runs as a one-layer forward layer."""

    framework: str = "keras"
    backend: str = "tensorflow"
    api: str = "LSTM"
    variants: tuple[str, ...] = ("standard",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    layer_features: tuple[str, ...] | None = (
        "stacked", "reverse", "bidirectional", "lengths", "empty_sequences", "mask", "mask_previous_output",
    )
    unsupported_reasons: dict = field(default_factory=lambda: dict(NOT_IN_KERAS))

    # -- declarations ------------------------------------------------------------------------------

    def check_layer(self, config: Config, layer: LayerConfig, lengths=None, mask=None, *, gradients: bool = False) -> None:
        super().check_layer(config, layer, lengths, mask, gradients=gradients)
        if layer.direction == "bidirectional" and "mask_previous_output" in layer_features(layer, lengths, mask):
            raise NotSupported(BIDIRECTIONAL_ZEROES_MASKED_STEPS)

    def _availability(self, device: str) -> str | None:
        if (reason := framework_problem("keras", KERAS_MISSING)) is not None:
            return reason
        if (reason := framework_problem(*BACKEND_MODULES[self.backend])) is not None:
            return reason
        backend = _keras().backend.backend()
        if backend != self.backend:
            return f"Keras' backend is {backend!r} in this process; this row needs KERAS_BACKEND={self.backend}"
        return _cuda_reason(self.backend) if device == "cuda" else None

    def _environment(self, device: str) -> dict[str, object]:
        keras = _keras()
        env: dict[str, object] = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        env[self.backend] = importlib.import_module(BACKEND_MODULES[self.backend][0]).__version__
        if self.backend == "jax":
            import jax

            env["x64"] = bool(jax.config.read("jax_enable_x64"))
        env["device"] = "GPU:0" if device == "cuda" else f"CPU {cpu_model()}"
        env["api"] = APIS[self.api]
        return env

    # -- layouts -----------------------------------------------------------------------------------

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return keras_to_native(params, forget_bias)

    def from_native(self, native) -> LSTMParams:
        return keras_from_native(native)

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        return layer_to_native(params, layer, self.api)

    def from_native_layer(self, native, layer: LayerConfig) -> LayerParams:
        return layer_from_native(native, layer, self.api)

    # -- the layer ---------------------------------------------------------------------------------

    def _prepare(self, params: LayerParams, x, h0, c0, layer: LayerConfig, lengths, mask, config: Config):
        """The built stack, the native weights, and the inputs as the backend's tensors, batch-major."""
        keras = _keras()
        mask, zero_output = keras_mask(x.shape[0], layer, lengths, mask)
        architecture = LayerConfig(num_layers=layer.num_layers, direction=layer.direction)
        stack = _stack(self.api, architecture, zero_output, params.input_size, params.hidden_size, config.dtype, config.device)
        with keras.device(stack.device):
            inputs = (
                _tensor(keras, x.transpose(1, 0, 2)),
                [_tensor(keras, state) for state in h0],
                [_tensor(keras, state) for state in c0],
                None if mask is None else _tensor(keras, mask.T),
            )
        return stack, layer_to_native(params, layer, self.api, _cell_to_native), inputs

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        stack, native, (x_, h0_, c0_, mask_) = self._prepare(params, x, h0, c0, layer, lengths, mask, config)
        with stack.keras.device(stack.device):
            if self.backend == "jax":
                y, h_T, c_T = stack.jax_forward(stack.weights(native), x_, h0_, c0_, mask_)
            else:
                stack.assign(native)
                run = stack.tf_forward if self.backend == "tensorflow" else stack.run  # PyTorch runs eagerly
                y, h_T, c_T = run(x_, h0_, c0_, mask_)
        numpy = _numpy(stack.keras)
        return numpy(y).transpose(1, 0, 2), np.stack([numpy(h) for h in h_T]), np.stack([numpy(c) for c in c_T])

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        stack, native, (x_, h0_, c0_, mask_) = self._prepare(params, x, h0, c0, layer, lengths, mask, config)
        keras = stack.keras
        with keras.device(stack.device):
            dy = _tensor(keras, cotangents["dy"].transpose(1, 0, 2))
            dh_T, dc_T = ([_tensor(keras, a) for a in cotangents[name]] for name in ("dh_T", "dc_T"))
            grads = GRADIENTS[self.backend](stack, native, x_, h0_, c0_, mask_, (dy, dh_T, dc_T))
        numpy = _numpy(keras)
        grads = [numpy(g) for g in grads]
        K = len(params.cells)
        dx, dh0, dc0, weights = grads[0], grads[1 : 1 + K], grads[1 + K : 1 + 2 * K], grads[1 + 2 * K :]
        paths = [v.path for v in stack.trainable_variables()]
        cell_grads = layer_from_native(dict(zip(paths, weights, strict=True)), layer, self.api)
        return {"x": dx.transpose(1, 0, 2), "h0": np.stack(dh0), "c0": np.stack(dc0), **cell_grads.tensors()}


_CELL_WEIGHTS = NativeCache()


def _cell_to_native(cell: LSTMParams, forget_bias: float) -> dict[str, np.ndarray]:
    """keras_to_native, once per parameter set and forget bias (read-only to the adapter)."""
    return _CELL_WEIGHTS.get(cell, (float(forget_bias),), lambda: keras_to_native(cell, forget_bias))


def _tensor(keras, array: np.ndarray):
    """A copy of ``array`` as the backend's tensor: torch.as_tensor would otherwise share the caller's memory."""
    return keras.ops.convert_to_tensor(np.array(array, order="C"))


def _numpy(keras):
    """A backend tensor as NumPy; its dtype is checked by the contract, not trusted."""
    return lambda tensor: np.asarray(keras.ops.convert_to_numpy(tensor))


# ---------------------------------------------------------------------------
# Known non-conformances of Keras 3.15.1 (each reproduced by findings/keras_*.py)
# ---------------------------------------------------------------------------

LAYER_KINDS = ("layer outputs", "layer gradients")
ALL_KINDS = ("outputs", "gradients", *LAYER_KINDS)

FLOAT64_AS_FLOAT32 = (
    "Keras 3.15.1 computes float64 in float32 on its {backend} backend: keras.backend.result_type maps float64 to "
    "float32 on every backend but TensorFlow (BIT64_TO_BIT32_DTYPE, keras/src/backend/common/dtypes.py), and {op} "
    "casts to it{where}; the answers are float64 arrays with float32 rounding (keras-team/keras#21604 introduced the "
    "mapping, #21693 restored float64 for TensorFlow only; findings/keras_{backend}_float64_computed_in_float32.py)"
)
JAX_FLOAT64 = FLOAT64_AS_FLOAT32.format(backend="jax", op="keras.ops.tanh", where=", even with jax_enable_x64 on")
TORCH_FLOAT64 = FLOAT64_AS_FLOAT32.format(
    backend="torch", op="keras.ops.matmul",
    where=" in LSTMCell's generic loop (RNN(LSTMCell), and LSTM with a mask; an unmasked LSTM runs the backend's "
    "float64 lstm())",
)
JAX_UNROLLED_MASK = (
    "Keras 3.15.1's JAX backend ignores zero_output_for_mask=True in its unrolled loop (unroll=True): masked steps "
    "after an unmasked one output the previous output instead of zeros (keras/src/backend/jax/rnn.py); lengths and "
    "Bidirectional need the zeros (findings/keras_jax_unrolled_mask_ignores_zero_output.py; no upstream issue found)"
)
JAX_ROLLED_MASK = (
    "Keras 3.15.1's JAX backend, rolled loop, zero_output_for_mask=False: masked steps before a row's first unmasked "
    "step output h0 instead of zeros (it takes states[0] as the previous output; keras/src/backend/jax/rnn.py; "
    "findings/keras_jax_rolled_mask_outputs_initial_state.py; no upstream issue found, cf. keras-team/keras#11472)"
)
TENSORFLOW_UNROLLED_BACKWARDS = (
    "Keras 3.15.1's TensorFlow backend, unrolled loop (unroll=True) with go_backwards, a mask and "
    "zero_output_for_mask=True (Bidirectional forces it; lengths need it): the zeros are applied with the mask in time "
    "order to outputs in processing order, so unmasked steps are zeroed and masked ones keep an output "
    "(keras/src/backend/tensorflow/rnn.py; findings/keras_tensorflow_unrolled_go_backwards_zeroes_mirrored_steps.py; "
    "no upstream issue found)"
)
TORCH_UNROLLED_BACKWARDS = (
    "Keras 3.15.1's PyTorch backend, unrolled loop (unroll=True) with go_backwards and a mask: AttributeError: 'tuple' "
    "object has no attribute 'shape' (torch.flip on the tuple from torch.unbind, keras/src/backend/torch/rnn.py; "
    "findings/keras_torch_unrolled_go_backwards_mask_raises.py; no upstream issue found)"
)
#: A reverse direction (alone, or the backward half of Bidirectional) with a mask or lengths.
BACKWARDS_MASKED = tuple((direction, masking) for direction in ("reverse", "bidirectional") for masking in ("mask", "lengths"))


def _known(reason: str, kinds=LAYER_KINDS, *, dtype: str | None = None, features=((),)) -> tuple[KnownFailure, ...]:
    return tuple(KnownFailure(kind, reason, dtype=dtype, features=tuple(f)) for f in features for kind in kinds)


#: Per row (backend, api), the first that applies is the reason shown: the most visible failure first.
KNOWN_FAILURES = {
    ("tensorflow", "LSTM"): (),
    ("tensorflow", "RNN"): _known(TENSORFLOW_UNROLLED_BACKWARDS, features=BACKWARDS_MASKED),
    ("jax", "LSTM"): _known(JAX_ROLLED_MASK, features=(("mask_previous_output",),)) + _known(JAX_FLOAT64, ALL_KINDS, dtype="float64"),
    # Zero outputs after an unmasked step: Bidirectional's forward half (zeros forced; lengths), a reverse direction
    # over a mask with gaps. A lone reverse direction with lengths meets its masked steps first, where the previous
    # output is zero anyway.
    ("jax", "RNN"): _known(JAX_UNROLLED_MASK, features=(("bidirectional", "mask"), ("bidirectional", "lengths"), ("reverse", "mask")))
    + _known(JAX_FLOAT64, ALL_KINDS, dtype="float64"),
    ("torch", "LSTM"): _known(TORCH_FLOAT64, dtype="float64", features=(("mask",), ("lengths",))),
    ("torch", "RNN"): _known(TORCH_UNROLLED_BACKWARDS, features=BACKWARDS_MASKED) + _known(TORCH_FLOAT64, ALL_KINDS, dtype="float64"),
}


def _row(backend: str, api: str) -> KerasLayer:
    environment = {"KERAS_BACKEND": backend}
    if backend == "jax":
        environment["JAX_ENABLE_X64"] = "1"  # without it a float64 request comes back as float32 arrays
    name = "LSTM" if api == "LSTM" else "RNN+LSTMCell+unroll"
    return KerasLayer(
        id=f"keras-{backend}/{name}",
        description=f"{APIS[api]} on Keras' {backend} backend (its own process), gradients by "
        + {"tensorflow": "tf.GradientTape", "jax": "jax.vjp over stateless_call", "torch": "torch.autograd"}[backend],
        backend=backend,
        api=api,
        process_environment=environment,
        known_failures=KNOWN_FAILURES[backend, api],
    )


IMPLEMENTATIONS = tuple(_row(backend, api) for backend in BACKENDS for api in ("LSTM", "RNN"))
