"""JAX: the spec's equations as a ``jax.lax.scan`` (peepholes included), flax's two LSTM cells in a stack of
``flax.linen.RNN`` / ``nn.Bidirectional`` as a flax user writes it, and ``jax.experimental.rnn``'s LSTM
(``lstm_ref`` and the cuDNN ``lstm``). Layouts: backends/layouts/flax.py, backends/layouts/jax_rnn.py and the
one-cell arrays below; runtime: backends/runtimes/jax.py (jit per layer, jax.vjp of the same call, precision
"highest", x64 at the first float64 array).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends.layouts import flax as flax_layouts
from backends.layouts import jax_rnn as rnn_layouts
from backends.runtimes.jax import FLAX, JAX, experimental_rnn, jax, linen
from contract.layout import CELL_ARRAYS
from contract.row import KnownFailure, Row
from contract.runtime import tf32_wanted
from contract.vocabulary import (
    CONFORMANCE_DTYPES,
    HALF_DTYPES,
    Device,
    Dtype,
    Feature,
    Kind,
)
from spec.layer import LayerConfig
from spec.precision import Policy

#: What JAX computes in a half type when every array is one (measured bit for bit, README Precision policies): each
#: operation's result rounded, products accumulated in float32 and rounded once.
EVERY_OPERATION = {Dtype.BFLOAT16: Policy.EVERY_OPERATION, Dtype.FLOAT16: Policy.EVERY_OPERATION}

DEVICES = (Device.CPU, Device.CUDA)

#: Why jax/lax.scan's float16 gradients leave half-every-operation's bounds on its 25-step case (a known
#: non-conformance, measured on AVX-512 CPUs).
BIAS_GRADIENT_IN_HALF = (
    "jax sums a broadcast's gradient in the half type (the transpose of broadcast_in_dim is lax.reduce_sum in the "
    "operand's type; jax_allow_f16_reductions defaults to True), where jnp.sum and every dot accumulate in float32: the "
    "bias gradient, summed over the 200 steps and rows of the input projection x W + b, accumulates in float16, "
    "outside every precision policy; on medium its mean error reaches the bound (3.03 ulps, bound 3.00: every other "
    "gradient is the policy's bit for bit). Measured on AVX-512 CPUs, where XLA's reduction order is what it is there. "
    "Reproducer: findings/jax_broadcast_gradient_reduced_in_half.py; upstream: related jax-ml/jax#27496, #38885")
def lengths32(lengths):
    """Sequence lengths as int32: jax.experimental.rnn refuses anything else, and int32 is flax's seq_lengths
    without x64 (with it, int64 lengths would make a second compilation)."""
    return None if lengths is None else np.asarray(lengths, np.int32)


# ---------------------------------------------------------------------------
# jax/lax.scan: the spec's equations
# ---------------------------------------------------------------------------


def _precision():
    """HIGHEST: float32 products in float32; DEFAULT (TF32 on a GPU) where LSTMC_TF32=1 asks to measure it."""
    return jax().lax.Precision.DEFAULT if tf32_wanted() else jax().lax.Precision.HIGHEST


def scan_lstm(x, h0, c0, W, U, b, p):
    """Equations (1)-(6) over x (T, B, I), canonical parameters, b with any forget bias; (h_seq, h_T, c_T)."""
    j = jax()
    lax, highest = j.lax, _precision()
    T, B, I = x.shape
    H = U.shape[1]
    contract_last = (((1,), (1,)), ((), ()))
    # z = W x_t + b for all steps at once: (T*B, I) x (4H, I)^T, gates i, f, g, o along the last axis.
    xw = lax.dot_general(x.reshape(T * B, I), W.reshape(4 * H, I), contract_last, precision=highest) + b.reshape(4 * H)
    U_all = U.reshape(4 * H, H)

    def step(carry, z):
        h, c = carry
        z = z + lax.dot_general(h, U_all, contract_last, precision=highest)  # + U h_{t-1}
        z_i, z_f, z_g, z_o = z[:, :H], z[:, H: 2 * H], z[:, 2 * H: 3 * H], z[:, 3 * H:]
        if p is not None:
            z_i, z_f = z_i + p[0] * c, z_f + p[1] * c
        i, f, g = j.nn.sigmoid(z_i), j.nn.sigmoid(z_f), j.numpy.tanh(z_g)  # (1)-(3)
        c_new = f * c + i * g  # (4)
        if p is not None:
            z_o = z_o + p[2] * c_new  # the output gate peeks at the NEW cell state
        h_new = j.nn.sigmoid(z_o) * j.numpy.tanh(c_new)  # (5), (6)
        return (h_new, c_new), h_new

    (h_T, c_T), h_seq = lax.scan(step, (h0, c0), xw.reshape(T, B, 4 * H))
    return h_seq, h_T, c_T


NOT_A_LAYER = "jax/lax.scan is the spec's cell: it takes no sequence lengths or mask"


@dataclass(eq=False)
class JaxScanLSTM(Row):
    id: str = "jax/lax.scan"
    description: str = "the spec's equations as jax.lax.scan under jax.jit (one input projection, scan over the recurrence)"
    runtime: object = JAX
    layout: object = CELL_ARRAYS
    features: frozenset = frozenset({Feature.PEEPHOLE})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(EVERY_OPERATION))
    reasons: dict = field(default_factory=lambda: {f: NOT_A_LAYER for f in (
        Feature.LENGTHS, Feature.EMPTY_SEQUENCES, Feature.MASK, Feature.MASK_PREVIOUS_OUTPUT)})
    known_failures: tuple = (KnownFailure(BIAS_GRADIENT_IN_HALF, kinds=(Kind.GRADIENTS,), dtype=Dtype.FLOAT16,
                                          device=Device.CPU, cases=("medium",), cpu_has=("avx512f",)),)

    def call(self, w, x, h0, c0, lengths, mask, *, layer):
        h_seq, h_T, c_T = scan_lstm(x, h0[0], c0[0], w["W"], w["U"], w["b"], w.get("p"))
        return h_seq, h_T[None], c_T[None]


# ---------------------------------------------------------------------------
# flax: LSTMCell / OptimizedLSTMCell in nn.RNN, a stack as a flax user writes it
# ---------------------------------------------------------------------------

FLAX_EMPTY_ROWS = (
    "flax 0.12.8 nn.RNN(seq_lengths=...) returns, for a row of length 0, the carry after all T steps (it picks "
    "carry[seq_lengths - 1], index -1; reversed: the whole row reversed), not the initial state; and, as in every "
    "case with lengths, padded steps' outputs are not zeroed. Reproducer: findings/flax_rnn_empty_rows_carry.py; "
    "upstream: none found (google/flax issues searched)"
)
FLAX_PADDED_OUTPUTS = (
    "flax 0.12.8 nn.RNN(seq_lengths=...) does not zero padded steps' outputs (documented: 'The output elements "
    "corresponding to padding elements are NOT zeroed out'): the cell runs on through the padding and those outputs "
    "stay, where the spec (PyTorch's pad_packed_sequence, ONNX, TF1) has zeros; their cotangents then reach the "
    "gradients. Reproducer: findings/flax_rnn_padded_outputs_not_zeroed.py; upstream: documented behaviour, no issue"
)
FLAX_NO_MASK = "flax's nn.RNN takes seq_lengths (one length per row), not a mask of steps"


@cache
def flax_stack(cell_name: str, hidden_size: int, num_layers: int, direction: str, dtype: str):
    """The module a flax user writes for this layer: one nn.RNN per layer (``reverse=True, keep_order=True`` for a
    reverse direction, so that its outputs come back in time order) or one nn.Bidirectional, each layer reading the
    one below. Made in setup(), so the tree is named by layer (layouts.flax.STACK). The cells compute in ``dtype``;
    in a half type their parameters stay float32 (flax's mixed precision: with param_dtype a half type apply() fails
    even given every parameter, since flax traces the orthogonal initializer and qr has no half kernel)."""
    nn, jnp = linen(), jax().numpy
    param_dtype = jnp.float32 if dtype in HALF_DTYPES else jnp.dtype(dtype)

    def rnn(**options):
        cell = getattr(nn, cell_name)(features=hidden_size, dtype=jnp.dtype(dtype), param_dtype=param_dtype)
        return nn.RNN(cell, time_major=True, return_carry=True, **options)

    def make_layer():
        if direction == "bidirectional":
            return nn.Bidirectional(rnn(), rnn(), time_major=True, return_carry=True)
        return rnn(reverse=direction == "reverse", keep_order=True)

    class LSTMStack(nn.Module):
        def setup(self):
            self.layers = [make_layer() for _ in range(num_layers)]

        def __call__(self, x, initial_carry, seq_lengths):
            carries = []
            for layer, carry in zip(self.layers, initial_carry):
                carry, x = layer(x, initial_carry=carry, seq_lengths=seq_lengths)
                carries.append(carry)
            return carries, x

    return LSTMStack()


@dataclass(eq=False)
class FlaxLSTM(Row):
    """flax.linen's ``cell`` in nn.RNN; the cell case is the one-layer stack. Parameters as flax.STACK's tree."""

    cell: str = "LSTMCell"
    runtime: object = FLAX
    layout: object = flax_layouts.STACK
    features: frozenset = frozenset({Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.LENGTHS,
                                     Feature.EMPTY_SEQUENCES})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(EVERY_OPERATION))
    reasons: dict = field(default_factory=lambda: {Feature.MASK: FLAX_NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: FLAX_NO_MASK})
    known_failures: tuple = (KnownFailure(FLAX_EMPTY_ROWS, features={Feature.EMPTY_SEQUENCES}),
                             KnownFailure(FLAX_PADDED_OUTPUTS, features={Feature.LENGTHS}))

    def build(self, native, *, params, layer, device, half=None):
        """The tree on the device; in a half type it stays float32 (the call computes in x's dtype)."""
        return self.runtime.tree_to_device(native, device)

    def inputs(self, x, h0, c0, lengths, mask, *, layer, device):
        return super().inputs(x, h0, c0, lengths32(lengths), mask, layer=layer, device=device)

    def call(self, tree, x, h0, c0, lengths, mask, *, layer):
        D, L = layer.num_directions, layer.num_layers
        stack = flax_stack(self.cell, h0.shape[-1], L, layer.direction, str(x.dtype))
        cells = [(c0[k], h0[k]) for k in range(L * D)]  # flax's carry is (c, h)
        carries = [cells[l] if D == 1 else (cells[2 * l], cells[2 * l + 1]) for l in range(L)]
        carries, y = stack.apply({"params": tree}, x, carries, lengths)
        finals = [cell for carry in carries for cell in ((carry,) if D == 1 else carry)]
        jnp = jax().numpy
        return y, jnp.stack([h for _, h in finals]), jnp.stack([c for c, _ in finals])


# ---------------------------------------------------------------------------
# jax.experimental.rnn: lstm_ref (any device) and lstm (cuDNN)
# ---------------------------------------------------------------------------

RNN_EMPTY_ROWS = (
    "jax 0.10.2 jax.experimental.rnn.lstm_ref returns, for a row of seq_lengths 0, h_n and c_n after all T steps "
    "run unmasked (it picks carry[seq_lengths - 1], index -1), not the initial state (its outputs there are zeros, "
    "as the spec's). Reproducer: findings/jax_rnn_lstm_ref_empty_rows_state.py; upstream: none found (jax-ml/jax "
    "searched; the selection comes from jax-ml/jax#15169)"
)
RNN_NO_MASK = "jax.experimental.rnn takes seq_lengths (one length per row), not a mask of steps"
RNN_CUDNN_FLOAT32 = ("jax.experimental.rnn.lstm (cuDNN) is float32 only (its docstring: 'TODO: Add support for input and "
                     "weight dtypes other than float32')")


@dataclass(eq=False)
class JaxRnnLSTM(Row):
    """jax.experimental.rnn's LSTM, ``function`` "lstm_ref" (jax ops, any device) or "lstm" (cuDNN), on the
    contract's time-major x (the API is batch-major: x (B, T, I), y (B, T, D * H)); h0, c0 and the final states
    (L * D, B, H) as the spec's. Without lengths every row runs all T steps (seq_lengths is not optional)."""

    function: str = "lstm_ref"
    runtime: object = JAX
    layout: object = rnn_layouts.FLAT_WEIGHTS
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES})
    devices: tuple = DEVICES
    dtypes: tuple = CONFORMANCE_DTYPES
    policies: dict = field(default_factory=lambda: dict(EVERY_OPERATION))
    reasons: dict = field(default_factory=lambda: {Feature.MASK: RNN_NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: RNN_NO_MASK})
    known_failures: tuple = (KnownFailure(RNN_EMPTY_ROWS, features={Feature.EMPTY_SEQUENCES}),)

    def build(self, native, *, params, layer, device, half=None):
        """The flat vector on the device (rounded to ``half`` for a half-type timed pass); the sizes come from the arrays'
        shapes and the layer when traced."""
        weights = self.runtime.to_device(native["weights"], device)
        return {"weights": weights if half is None else self.runtime.cast(weights, half)}

    def inputs(self, x, h0, c0, lengths, mask, *, layer, device):
        lengths = np.full(x.shape[1], x.shape[0], np.int32) if lengths is None else lengths32(lengths)
        return super().inputs(x, h0, c0, lengths, mask, layer=layer, device=device)

    def call(self, built, x, h0, c0, lengths, mask, *, layer):
        rnn = experimental_rnn()
        sizes = (x.shape[2], h0.shape[2], layer.num_layers)
        bidirectional = layer.direction == "bidirectional"
        x = x.transpose(1, 0, 2)
        if self.function == "lstm_ref":
            weights = rnn.unpack_lstm_weights(built["weights"], *sizes, bidirectional)
            y, h_n, c_n = rnn.lstm_ref(x, h0, c0, *weights, lengths, *sizes, 0.0, bidirectional)
        else:  # cuDNN: precision HIGHEST keeps TF32 off (rnn._lstm_cudnn_allow_tf32)
            y, h_n, c_n = rnn.lstm(x, h0, c0, built["weights"], lengths, *sizes, 0.0, bidirectional,
                                   precision=_precision())
        return y.transpose(1, 0, 2), h_n, c_n

    def _availability(self, device):
        problem = super()._availability(device)
        if problem is None and self.function == "lstm":
            problem = self._cudnn_problem(device)
        return problem

    def _cudnn_problem(self, device) -> str | None:
        """Why rnn.lstm (cuDNN) cannot run on ``device``, found by running it once on one step: on a CPU jaxlib it
        fails while tracing (jaxlib's gpu_rnn stub has no kernels), which is the reason reported."""
        one = np.ones((1, 1, 1), np.float32)
        built = {"weights": self.runtime.to_device(np.ones(16, np.float32), device)}
        arrays = [self.runtime.to_device(a, device) for a in (one, one, one, np.ones(1, np.int32))]
        try:
            self.runtime.run(self._function(LayerConfig()), built, *arrays, None)
            self.runtime.synchronize(device)
        except Exception as error:  # whatever it raises is the reason: an AttributeError from the stub on a CPU
            return (f"jax.experimental.rnn.lstm is cuDNN's LSTM (GPU only): on {device} it fails while tracing: "
                    f"{type(error).__name__}: {error}")
        return None

    def _environment(self, device):
        return {**super()._environment(device), "function": f"jax.experimental.rnn.{self.function}"}


ROWS = (
    JaxScanLSTM(),
    FlaxLSTM(id="flax/LSTMCell", cell="LSTMCell",
             description="flax.linen.LSTMCell through flax.linen.RNN (time-major, initial carry (c0, h0))"),
    FlaxLSTM(id="flax/OptimizedLSTMCell", cell="OptimizedLSTMCell",
             description="flax.linen.OptimizedLSTMCell (one matrix product per step for all four gates) through flax.linen.RNN"),
    JaxRnnLSTM(id="jax/rnn.lstm_ref", function="lstm_ref",
               description="jax.experimental.rnn.lstm_ref (jax ops; num_layers, bidirectional, seq_lengths)"),
    JaxRnnLSTM(id="jax/rnn.lstm", function="lstm", dtypes=(Dtype.FLOAT32,), policies={},
               reasons={**{dtype: RNN_CUDNN_FLOAT32 for dtype in (Dtype.FLOAT64, *HALF_DTYPES)},
                        Feature.MASK: RNN_NO_MASK, Feature.MASK_PREVIOUS_OUTPUT: RNN_NO_MASK},
               description="jax.experimental.rnn.lstm: cuDNN's LSTM (GPU only), the same arguments as lstm_ref"),
)
