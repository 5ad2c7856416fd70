"""Keras 3 on one of its backends (TensorFlow, JAX, PyTorch): Keras and the backend are imported only when a row
first needs them.

Keras fixes its backend at its first import (``KERAS_BACKEND``), so a Keras row declares that variable in its
``process_environment`` and runs in a process of its own (contract.remote): it never depends on what else the suite
imported. JAX's rows also set ``JAX_ENABLE_X64=1``, without which a float64 request comes back as float32 arrays.
:meth:`KerasRuntime.availability` says so when a row meets another backend ("Keras' backend is ... in this process").

What a user porting a model builds, and what :class:`KerasRow` runs (x batch-major (B, T, I) for Keras; the
transposes to and from the contract's time-major arrays are done in NumPy):

    direction forward        one recurrent layer (the row's :meth:`KerasRow.recurrent`) with
                             return_sequences=True, return_state=True -> (y, h, c)
    direction reverse        the same with go_backwards=True; its y comes back in processing order, so it is
                             flipped back in time (keras.ops.flip) as a user must
    direction bidirectional  keras.layers.Bidirectional around it, merge_mode "concat": y = [forward ; backward],
                             states (h_fw, c_fw, h_bw, c_bw); initial_state in that order
    stacked                  one such layer per depth, layer l + 1 called on layer l's y: a chain of layers
                             (StackedRNNCells runs every cell in one direction, so it cannot express a
                             bidirectional stack, where layer l + 1 reads both directions)
    mask                     the ``mask`` argument (B, T) of every layer, zero_output_for_mask as asked
    lengths                  the mask t < L_b with zero_output_for_mask=True (spec (13); an empty row is masked
                             throughout and keeps its initial state)

zero_output_for_mask is a constructor argument, so the stack (:class:`Stack`) is built per architecture and
zero_output_for_mask, and kept; the weights are assigned to its variables (TensorFlow, PyTorch; skipped when the
same arrays are loaded already) or passed to ``stateless_call`` (JAX). Forward and gradients by each backend's own
means: ``tf.function`` and ``tf.GradientTape`` with respect to x, h0, c0 and the tf.Variables behind Keras' variables;
PyTorch eagerly, ``torch.autograd.grad`` with respect to the Parameters behind them; ``jax.jit`` of the stack through
``stateless_call`` and ``jax.vjp`` of it with respect to the weights (one compilation per stack and input shape).

Numerics are the backends' defaults, as a Keras user gets them: no thread count or TF32 setting is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from backends.runtimes import jax as jax_runtime
from backends.runtimes.tensorflow import INSTALL_HINT as TENSORFLOW_HINT
from backends.runtimes.torch import INSTALL_HINT as TORCH_HINT
from contract.answers import Gradients
from contract.row import Row
from contract.runtime import Runtime, cpu_model, framework_problem, import_framework
from contract.vocabulary import CONFORMANCE_DTYPES, HALF_DTYPES, Device, Dtype, Feature
from spec.precision import Policy

KERAS_HINT = "keras is not installed (pip install keras)"
#: What each backend needs installed beside keras: the module to import, and what to say when it is missing.
BACKEND_MODULES = {
    "tensorflow": ("tensorflow", TENSORFLOW_HINT),
    "jax": ("jax", jax_runtime.JAX_MISSING),
    "torch": ("torch", TORCH_HINT),
}
#: What each backend's gradients are, in the rows' descriptions.
AUTODIFF = {"tensorflow": "tf.GradientTape", "jax": "jax.vjp over stateless_call", "torch": "torch.autograd"}

#: What a Keras stack does with the inputs it is given (its architecture features are its layout's).
CALL_FEATURES = frozenset({Feature.LENGTHS, Feature.EMPTY_SEQUENCES, Feature.MASK, Feature.MASK_PREVIOUS_OUTPUT})
#: keras.layers.Bidirectional sets zero_output_for_mask = return_sequences on both of its layers.
#: Every weight of the rows' layers is assigned (or passed to stateless_call) before any call, so their initial values
#: are never used: zeros cost nothing to make, where Keras' defaults (glorot_uniform, and orthogonal: a QR
#: decomposition) are computed, and on the JAX backend compiled, once per shape of every new layer.
INITIALIZERS = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros", "bias_initializer": "zeros",
                "unit_forget_bias": False}
BIDIRECTIONAL_ZEROES_MASKED_STEPS = (
    "keras.layers.Bidirectional forces zero_output_for_mask = return_sequences (True here) on both of its layers, "
    "so a bidirectional Keras layer outputs zeros at masked steps, never the previous output"
)
#: A Keras user computes in a half type through a mixed-precision policy: float32 variables (the suite's half values,
#: held exactly), every layer's arithmetic in the half type.
MIXED = {dtype: Policy.MIXED for dtype in HALF_DTYPES}


def keras_dtype(dtype: str) -> str:
    """The dtype policy a Keras user gives a layer for ``dtype``: "mixed_bfloat16" for a half type."""
    return f"mixed_{dtype}" if Dtype(dtype).half else dtype


def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read once, at TensorFlow's import
    return import_framework("keras", KERAS_HINT)


def keras_device(device: str) -> str:
    # Not "cpu:0": on the PyTorch backend, keras.device("cpu:0") makes every variable a copy of its Parameter
    # (.to("cpu:0")), and building an LSTM then fails on its integer seed-generator variable.
    return "gpu" if device == Device.CUDA else "cpu"


def keras_mask(T: int, lengths, mask, zero_output_for_mask: bool) -> tuple[np.ndarray | None, bool]:
    """The time-major mask (T, B) Keras is given, and zero_output_for_mask: lengths are the mask t < L_b with zero
    outputs (spec (13)); a mask keeps the layer's own setting."""
    if lengths is not None:
        return np.arange(T)[:, None] < np.asarray(lengths)[None, :], True
    return mask, zero_output_for_mask


class KerasRuntime(Runtime):
    """Keras with ``backend`` as its backend, which must be this process's."""

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"keras ({backend} backend)"
        self.module, self.hint = BACKEND_MODULES[backend]

    def backend_module(self):
        """The backend's module (jax through its runtime, which keeps compilations on disk: backends/runtimes/jax.py)."""
        return jax_runtime.jax() if self.backend == "jax" else import_framework(self.module, self.hint)

    def availability(self, device: str) -> str | None:
        # The backend first: Keras imports it when Keras is imported, so without it ``import keras`` fails, and that
        # failure would hide the backend's install hint.
        for module, hint in ((self.module, self.hint), ("keras", KERAS_HINT)):
            if (problem := framework_problem(module, hint)) is not None:
                return problem
        self.backend_module()
        backend = keras().backend.backend()
        if backend != self.backend:
            return f"Keras' backend is {backend!r} in this process; this row needs KERAS_BACKEND={self.backend}"
        return self.cuda_problem() if device == Device.CUDA else None

    def cuda_problem(self) -> str | None:
        """Why the backend sees no GPU, or None."""
        module = self.backend_module()
        if self.backend == "tensorflow" and not module.config.list_physical_devices("GPU"):
            return "TensorFlow sees no GPU (tensorflow-cpu has no CUDA; GPU runs need tensorflow[and-cuda])"
        if self.backend == "jax":
            try:
                module.devices("gpu")
            except RuntimeError as error:
                return f"jax sees no GPU ({error})"
        if self.backend == "torch" and not module.cuda.is_available():
            return "torch sees no CUDA device (torch.cuda.is_available() is False)"
        return None

    def environment(self, device: str) -> dict[str, object]:
        k = keras()
        env: dict[str, object] = {"keras": k.__version__, "keras_backend": k.backend.backend(),
                                  self.backend: self.backend_module().__version__}
        if self.backend == "jax":
            env["x64"] = bool(self.backend_module().config.read("jax_enable_x64"))
            env["compilation_cache"] = jax_runtime.compilation_cache() or "off (LSTMC_JAX_CACHE)"
        env["device"] = "GPU:0" if device == Device.CUDA else f"CPU {cpu_model()}"
        return env

    def on(self, device: str):
        return keras().device(keras_device(device))

    def to_device(self, array: np.ndarray, device: str):
        """A copy of ``array`` as the backend's tensor (on the device of the enclosing :meth:`on`): torch.as_tensor would
        otherwise share the caller's memory."""
        return keras().ops.convert_to_tensor(np.array(array, order="C"))

    def to_numpy(self, tensor) -> np.ndarray:
        return np.asarray(keras().ops.convert_to_numpy(tensor))

    def stack(self, layers: list, num_directions: int, reverse: bool, input_size: int, hidden_size: int) -> Stack:
        """Keras ``layers`` (one per depth) built for x of ``input_size`` features, run as this backend runs them."""
        return STACKS[self.backend](keras(), layers, num_directions, reverse, input_size, hidden_size)


# ---------------------------------------------------------------------------
# The stack of layers, and each backend's forward and gradients of it
# ---------------------------------------------------------------------------


class Stack:
    """The built Keras layers of one architecture, and the one way they are run (:meth:`run`). Inputs are the backend's
    tensors: x (B, T, I), h0 and c0 (L * D, B, H), mask (B, T) or None; outputs y (B, T, D * H), h_T and c_T
    (L * D, B, H). ``weights`` are the backend's tensors by Keras path."""

    def __init__(self, keras, layers: list, num_directions: int, reverse: bool, input_size: int, hidden_size: int):
        self.keras, self.layers, self.D, self.reverse = keras, layers, num_directions, reverse
        width = input_size
        for keras_layer in layers:
            keras_layer.build((None, None, width))
            width = num_directions * hidden_size

    def variables(self) -> list:
        return [v for keras_layer in self.layers for v in keras_layer.trainable_variables]

    def run(self, x, h0, c0, mask, weights: Mapping | None = None):
        """With ``weights``, each layer runs through stateless_call with those tensors as its variables; without, on
        its variables."""
        h_T, c_T = [], []
        for l, keras_layer in enumerate(self.layers):
            cells = range(l * self.D, (l + 1) * self.D)
            arguments = {"initial_state": [s for k in cells for s in (h0[k], c0[k])], "mask": mask}
            if weights is None:
                y, *states = keras_layer(x, **arguments)
            else:
                trainable = [weights[v.path] for v in keras_layer.trainable_variables]
                non_trainable = [v.value for v in keras_layer.non_trainable_variables]
                (y, *states), _ = keras_layer.stateless_call(trainable, non_trainable, x, **arguments)
            if self.reverse:
                y = self.keras.ops.flip(y, axis=1)  # go_backwards returns processing order: back to time order
            h_T += states[0::2]
            c_T += states[1::2]
            x = y
        return x, self.keras.ops.stack(h_T), self.keras.ops.stack(c_T)

    def forward(self, weights: Mapping, x, h0, c0, mask):
        """(y, h_T, c_T)."""
        raise NotImplementedError

    def gradients(self, weights: Mapping, x, h0, c0, mask, cotangents: tuple):
        """({Keras path: gradient}, dx, dh0, dc0) of <dy, y> + <dh_T, h_T> + <dc_T, c_T>."""
        raise NotImplementedError


class AssignedStack(Stack):
    """A stack that runs on its variables: the weights are assigned to them first."""

    _loaded: tuple = ()

    def assign(self, weights: Mapping) -> None:
        """Load the weights, unless these very tensors are loaded already (the suite and the benchmarks call again and
        again with one parameter set, whose tensors the row keeps)."""
        variables = self.variables()
        values = tuple(weights[v.path] for v in variables)
        if len(values) == len(self._loaded) and all(a is b for a, b in zip(values, self._loaded)):
            return
        for variable, value in zip(variables, values):
            variable.assign(value)
        self._loaded = values  # held, so that no other tensor can take their ids


class TensorflowStack(AssignedStack):
    @cached_property
    def _forward(self):
        """run() in a tf.function (traced once per input signature, kept with the stack)."""
        return import_framework("tensorflow", "").function(self.run)

    @cached_property
    def _gradients(self):
        """tf.GradientTape over run() with respect to x, h0, c0 and the tf.Variables behind Keras' variables."""
        tf = import_framework("tensorflow", "")
        variables = [v.value for v in self.variables()]

        @tf.function
        def gradients(x, h0, c0, mask, cotangents):
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                outputs = self.run(x, h0, c0, mask)
            return tape.gradient(list(outputs), [x, h0, c0, *variables], output_gradients=list(cotangents),
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return gradients

    def forward(self, weights, x, h0, c0, mask):
        self.assign(weights)
        return self._forward(x, h0, c0, mask)

    def gradients(self, weights, x, h0, c0, mask, cotangents):
        self.assign(weights)
        dx, dh0, dc0, *native = self._gradients(x, h0, c0, mask, tuple(cotangents))
        return dict(zip((v.path for v in self.variables()), native, strict=True)), dx, dh0, dc0


class TorchStack(AssignedStack):
    """PyTorch runs eagerly."""

    def forward(self, weights, x, h0, c0, mask):
        self.assign(weights)
        with import_framework("torch", "").no_grad():
            return self.run(x, h0, c0, mask)

    def gradients(self, weights, x, h0, c0, mask, cotangents):
        torch = import_framework("torch", "")
        self.assign(weights)
        parameters = [v.value for v in self.variables()]  # the torch Parameters behind Keras' variables
        sources = [a.detach().requires_grad_() for a in (x, h0, c0)]
        with torch.enable_grad():
            outputs = self.run(*sources, mask)
            grads = torch.autograd.grad(outputs, [*sources, *parameters], grad_outputs=tuple(cotangents),
                                        materialize_grads=True)
        dx, dh0, dc0, *native = grads
        return dict(zip((v.path for v in self.variables()), native, strict=True)), dx, dh0, dc0


class JaxStack(Stack):
    """Every call through stateless_call with the weights as arguments, jitted."""

    @cached_property
    def _forward(self):
        jax = import_framework("jax", "")
        return jax.jit(lambda weights, x, h0, c0, mask: self.run(x, h0, c0, mask, weights))

    @cached_property
    def _gradients(self):
        jax = import_framework("jax", "")

        def gradients(weights, x, h0, c0, mask, cotangents):
            _, pullback = jax.vjp(lambda w, x, h0, c0: self.run(x, h0, c0, mask, w), weights, x, h0, c0)
            return pullback(cotangents)

        return jax.jit(gradients)

    def forward(self, weights, x, h0, c0, mask):
        return self._forward(weights, x, h0, c0, mask)

    def gradients(self, weights, x, h0, c0, mask, cotangents):
        return self._gradients(weights, x, h0, c0, mask, tuple(cotangents))


STACKS = {"tensorflow": TensorflowStack, "torch": TorchStack, "jax": JaxStack}


# ---------------------------------------------------------------------------
# A row whose call is such a stack
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class KerasRow(Row):
    """A stack of Keras recurrent layers, one per depth, ``keras.layers.Bidirectional`` around two directions, called on
    the inputs as a user calls it (module docstring). A row supplies :meth:`recurrent`, its layout
    (backends.layouts.keras: the layers' names and the variables' paths) and its runtime (:class:`KerasRuntime`).

    Forward and gradients are the call-level hooks: the stack depends on the call (lengths need
    zero_output_for_mask=True, whatever the layer says), which the generic path's build() is not told. Timed through
    NumPy (no half types)."""

    features: frozenset = frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL}) | CALL_FEATURES
    devices: tuple = (Device.CPU, Device.CUDA)
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(MIXED))
    combinations: dict = field(default_factory=lambda: {
        frozenset({Feature.BIDIRECTIONAL, Feature.MASK_PREVIOUS_OUTPUT}): BIDIRECTIONAL_ZEROES_MASKED_STEPS})
    #: The Keras API the row runs, as environment() records it.
    api: str = ""

    def __post_init__(self):
        super().__post_init__()
        self._stacks: dict[tuple, Stack] = {}

    def recurrent(self, keras, name: str, units: int, options: dict):
        """One recurrent layer named ``name`` with ``units`` units and the Keras ``options`` (return_sequences,
        return_state, go_backwards, zero_output_for_mask, dtype), as the row's users write it."""
        raise NotImplementedError(f"{type(self).__name__} supplies no recurrent()")

    def _environment(self, device: str) -> Mapping[str, object]:
        env = dict(super()._environment(device))
        return env if "unavailable" in env else {**env, "api": self.api}

    def build(self, native, *, params, layer, device, half=None):
        """The weights on the device; in a half type as float32 (exactly), the variables' dtype under a mixed policy."""
        if params.dtype.itemsize == 2:
            native = {path: np.asarray(value, np.float32) for path, value in native.items()}
        return super().build(native, params=params, layer=layer, device=device, half=half)

    def stack(self, layer, zero_output_for_mask: bool, input_size: int, hidden_size: int, dtype: str, device: str) -> Stack:
        """The built stack of this architecture (kept per architecture, zero_output_for_mask, sizes, dtype, device)."""
        key = (layer.num_layers, layer.direction, zero_output_for_mask, input_size, hidden_size, dtype, str(device))
        if key not in self._stacks:
            k = keras()
            dtype = keras_dtype(dtype)
            options = {"return_sequences": True, "return_state": True, "go_backwards": layer.direction == "reverse",
                       "zero_output_for_mask": zero_output_for_mask, "dtype": dtype}
            layers = []
            for depth in range(layer.num_layers):
                recurrent = self.recurrent(k, self.layout.layer_name(depth), hidden_size, options)
                if layer.direction == "bidirectional":
                    recurrent = k.layers.Bidirectional(recurrent, merge_mode="concat", dtype=dtype,
                                                       name=self.layout.bidirectional_name(depth))
                layers.append(recurrent)
            self._stacks[key] = self.runtime.stack(layers, layer.num_directions, layer.direction == "reverse", input_size,
                                                    hidden_size)
        return self._stacks[key]

    def _call(self, params, x, h0, c0, layer, lengths, mask, device):
        """The stack for this call, the weights on the device (kept per parameter values), and the inputs as the
        backend's tensors, batch-major. Inside the runtime's device scope."""
        mask, zero_output = keras_mask(x.shape[0], lengths, mask, layer.zero_output_for_mask)
        stack = self.stack(layer, zero_output, params.input_size, params.hidden_size, params.dtype.name, device)
        to = lambda a: self.runtime.to_device(a, device)  # noqa: E731
        inputs = (to(x.transpose(1, 0, 2)), to(h0), to(c0), None if mask is None else to(mask.T))
        return stack, self.built_for(params, layer, device), inputs

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        with self.runtime.on(device):
            stack, weights, inputs = self._call(params, x, h0, c0, layer, lengths, mask, device)
            y, h_T, c_T = stack.forward(weights, *inputs)
        numpy = self.runtime.to_numpy
        return numpy(y).transpose(1, 0, 2), numpy(h_T), numpy(c_T)

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device) -> Gradients:
        with self.runtime.on(device):
            stack, weights, inputs = self._call(params, x, h0, c0, layer, lengths, mask, device)
            to = lambda a: self.runtime.to_device(a, device)  # noqa: E731
            cot = (to(cotangents.dy.transpose(1, 0, 2)), to(cotangents.dh_T), to(cotangents.dc_T))
            native, dx, dh0, dc0 = stack.gradients(weights, *inputs, cot)
        numpy = self.runtime.to_numpy
        native = {path: numpy(g) for path, g in native.items()}
        return Gradients(numpy(dx).transpose(1, 0, 2), numpy(dh0), numpy(dc0), self.layout.gradient(native, params, layer))


KERAS_TENSORFLOW, KERAS_JAX, KERAS_TORCH = (KerasRuntime(backend) for backend in BACKEND_MODULES)

__all__ = [
    "AUTODIFF", "BACKEND_MODULES", "BIDIRECTIONAL_ZEROES_MASKED_STEPS", "INITIALIZERS", "CALL_FEATURES", "KERAS_HINT", "MIXED",
    "KERAS_JAX", "KERAS_TENSORFLOW", "KERAS_TORCH", "AssignedStack", "JaxStack", "KerasRow", "KerasRuntime", "Stack",
    "TensorflowStack", "TorchStack", "keras", "keras_device", "keras_dtype", "keras_mask",
]
