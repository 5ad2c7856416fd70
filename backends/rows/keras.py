"""Keras 3's LSTMs on its three backends: ``keras.layers.LSTM`` and the generic
``keras.layers.RNN(keras.layers.LSTMCell, unroll=True)``, each on TensorFlow, JAX and PyTorch, each in a process of its
own with ``KERAS_BACKEND`` set (and ``JAX_ENABLE_X64=1`` for JAX). Keras has no projection, no clips, no coupled gates
and no peepholes; ``Bidirectional`` cannot output the previous output at masked steps. Layouts:
backends/layouts/keras.py; the stack, its calls and gradients: backends/runtimes/keras.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.layouts import keras as layouts
from backends.runtimes.keras import AUTODIFF, INITIALIZERS, KERAS_JAX, KERAS_TENSORFLOW, KERAS_TORCH, KerasRow
from contract.row import KnownFailure
from contract.vocabulary import Dtype, Feature

RUNTIMES = {"tensorflow": KERAS_TENSORFLOW, "jax": KERAS_JAX, "torch": KERAS_TORCH}
ORIGIN = "backends.rows.keras"


@dataclass(eq=False)
class KerasLSTM(KerasRow):
    layout: object = layouts.LSTM
    api: str = "keras.layers.LSTM"

    def recurrent(self, keras, name, units, options):
        return keras.layers.LSTM(units, name=name, **options, **INITIALIZERS)


@dataclass(eq=False)
class KerasRNN(KerasRow):
    layout: object = layouts.RNN
    api: str = "keras.layers.RNN(keras.layers.LSTMCell, unroll=True)"
    unrolled: bool = True

    def recurrent(self, keras, name, units, options):
        cell = keras.layers.LSTMCell(units, name=layouts.CELL_NAME, dtype=options["dtype"], **INITIALIZERS)
        return keras.layers.RNN(cell, unroll=True, name=name, **options)


# ---------------------------------------------------------------------------
# Known non-conformances of Keras 3.15.1 (each reproduced by findings/keras_*.py)
# ---------------------------------------------------------------------------

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
BACKWARDS_MASKED = tuple({direction, masking} for direction in (Feature.REVERSE, Feature.BIDIRECTIONAL)
                         for masking in (Feature.MASK, Feature.LENGTHS))


def known(reason: str, *feature_sets, dtype: Dtype | None = None) -> tuple[KnownFailure, ...]:
    """The failure on the cases that use all of one of ``feature_sets`` (every case if none is given)."""
    return tuple(KnownFailure(reason, dtype=dtype, features=frozenset(f)) for f in feature_sets or ((),))


#: Per row (backend, row class), the first that applies is the reason shown: the most visible failure first.
KNOWN_FAILURES = {
    ("tensorflow", KerasLSTM): (),
    ("tensorflow", KerasRNN): known(TENSORFLOW_UNROLLED_BACKWARDS, *BACKWARDS_MASKED),
    ("jax", KerasLSTM): known(JAX_ROLLED_MASK, {Feature.MASK_PREVIOUS_OUTPUT}) + known(JAX_FLOAT64, dtype=Dtype.FLOAT64),
    # Zero outputs after an unmasked step: Bidirectional's forward half (zeros forced; lengths), a reverse direction
    # over a mask with gaps. A lone reverse direction with lengths meets its masked steps first, where the previous
    # output is zero anyway.
    ("jax", KerasRNN): known(JAX_UNROLLED_MASK, {Feature.BIDIRECTIONAL, Feature.MASK},
                             {Feature.BIDIRECTIONAL, Feature.LENGTHS}, {Feature.REVERSE, Feature.MASK})
    + known(JAX_FLOAT64, dtype=Dtype.FLOAT64),
    ("torch", KerasLSTM): known(TORCH_FLOAT64, {Feature.MASK}, {Feature.LENGTHS}, dtype=Dtype.FLOAT64),
    ("torch", KerasRNN): known(TORCH_UNROLLED_BACKWARDS, *BACKWARDS_MASKED) + known(TORCH_FLOAT64, dtype=Dtype.FLOAT64),
}


def row(backend: str, cls: type[KerasRow]) -> KerasRow:
    environment = {"KERAS_BACKEND": backend}
    if backend == "jax":
        environment["JAX_ENABLE_X64"] = "1"  # without it a float64 request comes back as float32 arrays
    return cls(
        id=f"keras-{backend}/{'LSTM' if cls is KerasLSTM else 'RNN+LSTMCell+unroll'}",
        description=f"{cls.api} on Keras' {backend} backend (its own process), gradients by {AUTODIFF[backend]}",
        runtime=RUNTIMES[backend],
        known_failures=KNOWN_FAILURES[backend, cls],
        process_environment=environment,
        origin=ORIGIN,
    )


ROWS = tuple(row(backend, cls) for backend in RUNTIMES for cls in (KerasLSTM, KerasRNN))
