"""The layer semantics of each framework's LSTM API, checked on this machine: the tests behind
the README's table "Layer semantics across frameworks".

Each test runs one framework API and checks one row's claims (direction and output order, the layout of the
final states, projection, clips, lengths, masks, what fills padded steps) against the layer spec
(:mod:`spec.layer`), in float64 where the framework has it, or, where the spec has no counterpart (the order in
which Keras' go_backwards returns its outputs, the error PyTorch raises), against the framework's stated
behaviour. Claims that tests/spec/test_layer_references.py and test_layer_tf1.py already check are not repeated
here; the README's table "Layer semantics across frameworks" cites those tests by name.

Where a framework disagrees with the spec, the test pins what the framework does, and its docstring says that
it is a divergence and what the spec says instead (the README's table "Layer semantics across frameworks" lists them under the table). A pinned
divergence that goes away fails its test: unpin it and update the table.

The cases are defined here (not in spec/cases.py): tiny (T = 5, B = 4, I = 3, H = 2), with lengths 0, 1 or
more, and T in one unsorted batch, random weights different for every gate, layer and direction. TF1 cells and
Keras on the JAX backend need a process of their own (TF_USE_LEGACY_KERAS, KERAS_BACKEND are read at the first
import): they run in subprocesses that save the framework's raw outputs, and the spec comparisons happen here.
Each framework gets the weights through the project's one layout of its parameters (backends/layouts).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import flax as flax_layout
from backends.layouts import jax_rnn as jax_rnn_layout
from backends.layouts import keras as keras_layout
from backends.layouts import onnx as onnx_layout
from backends.layouts import tf1 as tf1_layout
from backends.layouts import tf_block
from backends.layouts import torch as torch_layout
from backends.runtimes import onnx as onnx_graphs
from contract.compare import assert_close
from spec import layer, lstm
from spec.cases import Case, CaseData, make_case_data
from spec.layer import LayerConfig
from tests.spec.test_layer_tf1 import below_cell

ROOT = Path(__file__).resolve().parents[2]

# float64 frameworks against the float64 spec: another order of the same operations, errors of a few 1e-16
# (measured here: at most 2.2e-16), so 1e-12 is as tight as tests/spec/test_layer_references.py's bound.
F64 = 1e-12
# float32 computations (TF's block ops, ONNX Runtime, Keras on JAX) against the float64 spec on the same data:
# a few float32 roundings per step (measured here: at most 5.3e-8); the divergences pinned below are above 0.1.
F32 = 1e-5
# A pinned divergence or a wrong order must be far outside both tolerances: every one measured here is above 0.1.
DIFFERENT = 0.05

TORCH_HINT = "PyTorch's nn.LSTM row of the README's layer semantics table; pip install torch"
KERAS_HINT = "Keras 3's LSTM row of the README's layer semantics table (TensorFlow backend); pip install tensorflow-cpu"
TF_HINT = "TensorFlow's BlockLSTM row of the README's layer semantics table; pip install tensorflow-cpu"
TF1_HINT = ("TF1 cells' row of the README's layer semantics table; pip install --no-deps tf-keras==<your TensorFlow's version> "
            "(and tensorflow-cpu)")
JAX_HINT = "the jax.experimental.rnn row of the README's layer semantics table; pip install jax"
FLAX_HINT = "flax's nn.RNN row of the README's layer semantics table; pip install flax"
ONNX_HINT = "the ONNX row of the README's layer semantics table (onnx.reference); pip install onnx"
ORT_HINT = "the ONNX Runtime row of the README's layer semantics table; pip install onnxruntime"

# ---------------------------------------------------------------------------
# The cases: lengths 0, 1 < L < T and T in one unsorted batch; masks with leading, interior and trailing gaps.
# ---------------------------------------------------------------------------

T, B, I, H = 5, 4, 3, 2
LENGTHS = (5, 2, 0, 3)  # row 2 is empty
NONEMPTY_LENGTHS = (5, 2, 1, 3)  # PyTorch refuses 0
MASK = ("01101", "11100", "00000", "10111")  # per batch row, one character per step

BI = {"direction": "bidirectional"}
CASES = {
    "bidirectional-lengths": Case("bidirectional-lengths", T, B, I, H, LayerConfig(**BI), lengths=LENGTHS, seed=201),
    "stacked-bidirectional-lengths": Case("stacked-bidirectional-lengths", T, B, I, H,
                                               LayerConfig(num_layers=2, **BI), lengths=LENGTHS, seed=202),
    "torch-lstmp-lengths": Case("torch-lstmp-lengths", T, B, I, 3, LayerConfig(num_layers=2, **BI, proj_size=2),
                                     lengths=NONEMPTY_LENGTHS, seed=203),
    "bidirectional-mask": Case("bidirectional-mask", T, B, I, H, LayerConfig(**BI, zero_output_for_mask=True),
                                    mask=MASK, seed=204),
    "forward-mask": Case("forward-mask", T, B, I, H, LayerConfig(zero_output_for_mask=True), mask=MASK, seed=205),
    "stacked": Case("stacked", T, B, I, H, LayerConfig(num_layers=2), seed=206),
    "tf1-bidirectional-lengths": Case("tf1-bidirectional-lengths", T, B, I, H, LayerConfig(**BI, forget_bias=1.0),
                                           lengths=LENGTHS, seed=207),
    "tf1-stack-lengths": Case("tf1-stack-lengths", T, B, I, 3, LayerConfig(num_layers=2, proj_size=2, peephole=True,
                                                                                cell_clip=0.8, forget_bias=1.0),
                                   lengths=LENGTHS, seed=208, weight_scale=2.0),
    "peephole": Case("peephole", T, B, I, H, LayerConfig(peephole=True), seed=209, weight_scale=2.0),
    "onnx-gate-clip": Case("onnx-gate-clip", T, B, I, H, LayerConfig(**BI, gate_clip=0.5), seed=210, weight_scale=2.0),
    "onnx-coupled": Case("onnx-coupled", T, B, I, H, LayerConfig(**BI, coupled_input_forget=True), seed=211),
}


@functools.cache
def case_data(name: str, dtype=np.float64) -> CaseData:
    return make_case_data(CASES[name], dtype)


def rounded(name: str) -> CaseData:
    """The case's float32 data, widened back to float64: what a float32 framework is given, for the float64 spec."""
    d32 = case_data(name, np.float32)
    wide = {k: v.astype(np.float64) for k, v in {**d32.inputs(), **d32.cotangents()}.items()}
    return dataclasses.replace(d32, params=d32.params.astype(np.float64), **wide)


def spec_forward(data: CaseData, **override) -> layer.LayerForward:
    return data.forward(**override)


def with_config(data: CaseData, **changes) -> dict:
    """forward() overrides that run the same data under a changed configuration (weights shared)."""
    return {"config": dataclasses.replace(data.layer, **changes)}


def max_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def close(name, got, expected, tol, context):
    assert_close(name, np.asarray(got, np.float64), np.asarray(expected, np.float64), atol=tol, rtol=tol, context=context)


def run_cell(cell, x, h0, c0, **options) -> lstm.Forward:
    """The spec's cell (no mask) on x (T, B, I) from (h0, c0) (B, .): for what a framework computes past a length."""
    return lstm.forward(cell, np.ascontiguousarray(x), np.ascontiguousarray(h0), np.ascontiguousarray(c0), **options)


def _no_core_dump() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_subprocess(code: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -c code`` with the checkout importable, run in a temporary folder and without a core dump (one of
    them aborts on purpose)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory() as folder:
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=folder, capture_output=True, text=True,
                              timeout=timeout, check=False, preexec_fn=_no_core_dump if os.name == "posix" else None)


def keras_weights(cell) -> list[np.ndarray]:
    """Keras' kernel (I, 4H), recurrent_kernel (P, 4H), bias (4H): gates i, f, g, o (the README's table), in the
    order set_weights takes them (backends/layouts/keras.py)."""
    native = keras_layout.cell_to_native(cell)
    return [native[name] for name in keras_layout.CELL_WEIGHTS]


def tf_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pytest.importorskip("tensorflow", reason=KERAS_HINT)
    keras = pytest.importorskip("keras", reason=KERAS_HINT)
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras' backend is {keras.backend.backend()!r}; these rows are the TensorFlow backend's")
    return keras


# ---------------------------------------------------------------------------
# PyTorch nn.LSTM (+ packed sequences)
# ---------------------------------------------------------------------------


def torch_module(data: CaseData):
    """nn.LSTM (float64) holding the case's weights (backends/layouts/torch.py: the two biases are each half of b)."""
    import torch

    case, config = data.case, data.layer
    module = torch.nn.LSTM(case.I, case.H, num_layers=case.L, bidirectional=case.D == 2, proj_size=config.proj_size or 0,
                           dtype=torch.float64)
    state = torch_layout.NN_LSTM.to_native(data.params, config)
    module.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    return module


def test_torch_refuses_sequences_of_length_zero():
    """A divergence from the spec, pinned: PyTorch's packed sequences refuse a length of 0 (with or without
    sorting), where the spec's rule (13) runs the row over no step, outputs zeros and returns the initial state.
    A batch with an empty row cannot be given to nn.LSTM through pack_padded_sequence at all."""
    torch = pytest.importorskip("torch", reason=TORCH_HINT)
    from torch.nn.utils.rnn import pack_padded_sequence

    x = torch.zeros(T, B, I, dtype=torch.float64)
    message = "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
    for lengths, enforce_sorted in ((LENGTHS, False), ((5, 3, 2, 0), True)):
        with pytest.raises(RuntimeError) as raised:
            pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
        assert str(raised.value) == message


def test_torch_padded_steps_hold_pad_packed_sequence_padding_value():
    """What fills PyTorch's padded steps: nothing is computed there (a PackedSequence holds the valid steps only);
    pad_packed_sequence writes its padding_value (default 0.0, the spec's zeros). Pinned with padding_value=7 on a
    two-layer bidirectional projected LSTM with unsorted lengths 5, 2, 1, 3: the valid steps, h_n and c_n are the
    spec's (13), layer-major, and every padded output is exactly 7."""
    torch = pytest.importorskip("torch", reason=TORCH_HINT)
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    data = case_data("torch-lstmp-lengths")
    module = torch_module(data)
    packed = pack_padded_sequence(torch.from_numpy(data.x), torch.from_numpy(data.lengths), enforce_sorted=False)
    with torch.no_grad():
        out, (h_n, c_n) = module(packed, (torch.from_numpy(data.h0), torch.from_numpy(data.c0)))
    y, lengths = pad_packed_sequence(out, total_length=T, padding_value=7.0)
    y = y.numpy()
    fwd = spec_forward(data)
    valid = fwd.mask
    assert np.array_equal(lengths.numpy(), data.lengths)
    assert np.all(y[~valid] == 7.0), "pad_packed_sequence no longer fills padded steps with padding_value"
    assert not pad_packed_sequence(out, total_length=T)[0].numpy()[~valid].any(), "the default padding_value is not 0"
    close("y (valid steps)", y[valid], fwd.y[valid], F64, "nn.LSTM packed")
    close("h_n", h_n.numpy(), fwd.h_T, F64, "nn.LSTM packed")
    close("c_n", c_n.numpy(), fwd.c_T, F64, "nn.LSTM packed")


# ---------------------------------------------------------------------------
# Keras 3 LSTM (TensorFlow backend): go_backwards, Bidirectional, stacked cells
# ---------------------------------------------------------------------------


def test_keras_go_backwards_returns_outputs_in_processing_order():
    """Keras' go_backwards=True is the spec's reverse direction, but its output sequence comes back in processing
    order: y[t] is the output after consuming x_{T-1-t} (the spec's y_{T-1-t}), unlike the spec, PyTorch, ONNX and
    flax's keep_order=True, which return it in the original time order. Its final state (h, c) is the spec's: the
    state after x_0. Checked in float64 (TensorFlow backend) against the spec's reverse direction."""
    keras = tf_keras()
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data, lengths=None)  # no lengths: direction 1 is the spec's reverse direction over all T steps
    lstm_layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, go_backwards=True, dtype="float64")
    lstm_layer.build((B, T, I))
    lstm_layer.set_weights(keras_weights(data.params.cells[1]))
    y, h, c = (np.asarray(a) for a in lstm_layer(data.x.transpose(1, 0, 2), initial_state=[data.h0[1], data.c0[1]]))
    reverse_y = fwd.y[:, :, H:]
    close("y[::-1]", y.transpose(1, 0, 2)[::-1], reverse_y, F64, "keras go_backwards")
    assert max_error(y.transpose(1, 0, 2), reverse_y) > DIFFERENT, "go_backwards now returns the original time order"
    close("h", h, fwd.h_T[1], F64, "keras go_backwards")
    close("c", c, fwd.c_T[1], F64, "keras go_backwards")


def keras_bidirectional(keras, data, **lstm_options):
    bi = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True, return_state=True, dtype="float64",
                                                      **lstm_options), dtype="float64")
    bi.build((B, T, I))
    bi.forward_layer.set_weights(keras_weights(data.params.cells[0]))
    bi.backward_layer.set_weights(keras_weights(data.params.cells[1]))
    return bi


def test_keras_bidirectional_concatenates_forward_first_and_returns_states_forward_first():
    """Keras' Bidirectional(LSTM(return_sequences=True, return_state=True)), merge_mode='concat' (the default):
    the output is [forward ; backward] on the feature axis, the backward layer's outputs flipped back to the
    original time order (the spec's (11)); the call returns (y, h_fw, c_fw, h_bw, c_bw), and initial_state is
    read in that order too, [h_fw, c_fw, h_bw, c_bw]. Each state is [h, c] (flax and TF1 carry (c, h))."""
    keras = tf_keras()
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data, lengths=None)
    bi = keras_bidirectional(keras, data)
    out = bi(data.x.transpose(1, 0, 2), initial_state=[data.h0[0], data.c0[0], data.h0[1], data.c0[1]])
    assert len(out) == 5
    y, h_fw, c_fw, h_bw, c_bw = (np.asarray(a) for a in out)
    close("y", y.transpose(1, 0, 2), fwd.y, F64, "keras Bidirectional")
    for name, got, expected in (("h_fw", h_fw, fwd.h_T[0]), ("c_fw", c_fw, fwd.c_T[0]),
                                ("h_bw", h_bw, fwd.h_T[1]), ("c_bw", c_bw, fwd.c_T[1])):
        close(name, got, expected, F64, "keras Bidirectional")


def test_keras_bidirectional_forces_zero_output_for_mask():
    """Keras' masks under Bidirectional: the wrapper sets zero_output_for_mask = return_sequences on both of its
    layers, overriding the wrapped LSTM's own zero_output_for_mask=False (an LSTM alone defaults to False: the
    previous output at masked steps). With return_sequences=True, masked steps therefore output zeros: the spec's
    (14) with zero_output_for_mask=True, masked steps carrying the state, the backward layer's mask reversed with
    it, the final states those after the last unmasked step of each direction. Checked against the spec on masks
    with leading, interior and trailing gaps and a row masked throughout; the spec's previous-output variant
    differs there by more than 0.05."""
    keras = tf_keras()
    data = case_data("bidirectional-mask")
    assert keras.layers.LSTM(H).zero_output_for_mask is False
    bi = keras_bidirectional(keras, data, zero_output_for_mask=False)
    assert bi.forward_layer.zero_output_for_mask is True and bi.backward_layer.zero_output_for_mask is True
    out = bi(data.x.transpose(1, 0, 2), mask=data.mask.T, initial_state=[data.h0[0], data.c0[0], data.h0[1], data.c0[1]])
    y, h_fw, c_fw, h_bw, c_bw = (np.asarray(a) for a in out)
    fwd = spec_forward(data)
    close("y", y.transpose(1, 0, 2), fwd.y, F64, "keras Bidirectional with a mask")
    for name, got, expected in (("h_fw", h_fw, fwd.h_T[0]), ("c_fw", c_fw, fwd.c_T[0]),
                                ("h_bw", h_bw, fwd.h_T[1]), ("c_bw", c_bw, fwd.c_T[1])):
        close(name, got, expected, F64, "keras Bidirectional with a mask")
    previous = spec_forward(data, **with_config(data, zero_output_for_mask=False))
    assert max_error(previous.y, fwd.y) > DIFFERENT


def keras_stacked_rnn(keras, data, cells_argument):
    rnn = keras.layers.RNN(cells_argument, return_sequences=True, return_state=True, dtype="float64")
    rnn.build((B, T, I))
    rnn.set_weights([w for cell in data.params.cells for w in keras_weights(cell)])
    h0, c0 = data.h0, data.c0
    return rnn(data.x.transpose(1, 0, 2), initial_state=[[h0[0], c0[0]], [h0[1], c0[1]]])


def test_keras_stacked_cells_return_state_per_layer():
    """Keras has no num_layers: a stack is layers in sequence, or one RNN over StackedRNNCells. The latter's
    return_state gives (y, [h_0, c_0], [h_1, c_1]): one [h, c] list per layer, bottom layer first (the spec's
    layer-major h_T[k], c_T[k]), and initial_state takes the same nesting. Checked in float64 on two layers."""
    keras = tf_keras()
    assert "num_layers" not in inspect.signature(keras.layers.LSTM).parameters
    data = case_data("stacked")
    stacked = keras.layers.StackedRNNCells([keras.layers.LSTMCell(H, dtype="float64") for _ in range(2)], dtype="float64")
    out = keras_stacked_rnn(keras, data, stacked)
    assert len(out) == 3 and all(len(state) == 2 for state in out[1:])
    fwd = spec_forward(data)
    close("y", np.asarray(out[0]).transpose(1, 0, 2), fwd.y, F64, "keras RNN(StackedRNNCells)")
    for l in range(2):
        close(f"h layer {l}", np.asarray(out[1 + l][0]), fwd.h_T[l], F64, "keras RNN(StackedRNNCells)")
        close(f"c layer {l}", np.asarray(out[1 + l][1]), fwd.c_T[l], F64, "keras RNN(StackedRNNCells)")


def test_keras_rnn_over_a_list_of_cells_computes_in_float32():
    """A dtype pitfall, pinned: keras.layers.RNN([LSTMCell(dtype='float64'), ...], dtype='float64') wraps the list
    in a StackedRNNCells that takes the global float32 policy, so the stack computes in float32 although every
    layer, weight and the output say float64 (measured: errors of about 2e-8 against the spec, where the explicit
    StackedRNNCells(dtype='float64') above is at 1e-16). Same layout as above."""
    keras = tf_keras()
    data = case_data("stacked")
    out = keras_stacked_rnn(keras, data, [keras.layers.LSTMCell(H, dtype="float64") for _ in range(2)])
    y = np.asarray(out[0])
    assert y.dtype == np.float64
    error = max_error(y.transpose(1, 0, 2), spec_forward(data).y)
    assert 1e-10 < error < F32, f"error {error:.2e}: RNN(list of cells) no longer computes in float32"


# ---------------------------------------------------------------------------
# Keras 3 LSTM on the JAX backend (a subprocess: the backend is fixed at Keras' first import)
# ---------------------------------------------------------------------------

KERAS_JAX_RUNS = [(zero, unroll) for zero in (False, True) for unroll in (False, True)]


def _keras_jax_outputs(out: str) -> None:
    """In the subprocess (KERAS_BACKEND=jax, JAX_ENABLE_X64=1): one masked forward LSTM per
    (zero_output_for_mask, unroll), saved with the outputs' dtype."""
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    data = case_data("forward-mask")
    saved = {}
    for zero, unroll in KERAS_JAX_RUNS:
        lstm_layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, zero_output_for_mask=zero,
                                       unroll=unroll, dtype="float64")
        lstm_layer.build((B, T, I))
        lstm_layer.set_weights(keras_weights(data.params.cells[0]))
        y, h, c = (np.asarray(a) for a in lstm_layer(data.x.transpose(1, 0, 2), mask=data.mask.T,
                                                     initial_state=[data.h0[0], data.c0[0]]))
        saved.update({f"y {zero} {unroll}": y.transpose(1, 0, 2), f"h {zero} {unroll}": h, f"c {zero} {unroll}": c})
    np.savez(out, **saved)


@functools.cache
def keras_jax_outputs() -> dict[str, np.ndarray]:
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        pytest.skip("Keras on the JAX backend: pip install keras jax")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "keras_jax.npz")
        done = run_subprocess(f"from tests.spec.test_layer_semantics import _keras_jax_outputs; _keras_jax_outputs({out!r})",
                              {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"})
        assert done.returncode == 0, f"Keras on JAX failed:\n{done.stderr[-3000:]}"
        with np.load(out) as saved:
            return {k: saved[k] for k in saved.files}


def test_keras_jax_backend_masks_diverge_and_compute_in_float32():
    """Divergences of Keras 3 on the JAX backend, pinned (the TensorFlow backend follows the spec's (14):
    tests/spec/test_layer_references.py::test_masks_match_keras). On a forward LSTM with a mask (leading, interior
    and trailing gaps, a row masked throughout), float64 requested with jax's x64 on:

    - every run computes in float32: the outputs are float64 arrays carrying float32 rounding (measured: errors of
      a few 1e-8 where the semantics agree);
    - rolled loop (unroll=False), zero_output_for_mask=False: masked steps before a row's first unmasked step
      output the initial state h0 (measured: exactly h0; a row masked throughout outputs h0 at every step), where
      the spec (and the TensorFlow backend) output zero there; elsewhere the spec's previous output;
    - unrolled loop (unroll=True), zero_output_for_mask=True: masked steps after an unmasked one output the
      previous output, as if zero_output_for_mask were False (zeros before the first unmasked step), where the
      spec outputs zero;
    - the other two combinations, and every final state, are the spec's."""
    saved = keras_jax_outputs()
    data = case_data("forward-mask")
    mask = data.mask
    leading = np.cumsum(mask, axis=0) == 0  # masked, before the row's first unmasked step
    zeros = spec_forward(data, **with_config(data, zero_output_for_mask=True))
    previous = spec_forward(data, **with_config(data, zero_output_for_mask=False))
    errors = []
    for zero, unroll in KERAS_JAX_RUNS:
        y, h, c = (saved[f"{what} {zero} {unroll}"] for what in ("y", "h", "c"))
        context = f"keras (jax backend) zero_output_for_mask={zero} unroll={unroll}"
        assert y.dtype == np.float64
        if not zero and not unroll:
            expected = np.where(leading[:, :, None], data.h0[0][None], previous.y)  # h0 where the spec has zero
            assert max_error(expected, previous.y) > DIFFERENT
        elif zero and unroll:
            expected = previous.y  # the previous output where the spec has zero
            assert max_error(expected, zeros.y) > DIFFERENT
        else:
            expected = (zeros if zero else previous).y
        close("y", y, expected, F32, context)
        close("h", h, zeros.h_T[0], F32, context)
        close("c", c, zeros.c_T[0], F32, context)
        errors.append(max_error(y, expected))
    assert max(errors) > 1e-10, "Keras on JAX now computes float64 in float64: update the table"


# ---------------------------------------------------------------------------
# TF1 cells: static_rnn, static_bidirectional_rnn, MultiRNNCell (a subprocess: TF_USE_LEGACY_KERAS)
# ---------------------------------------------------------------------------

def _tf1_outputs(out: str) -> None:
    """In the subprocess (TF_USE_LEGACY_KERAS=1): BasicLSTMCell under static_rnn and static_bidirectional_rnn,
    and a MultiRNNCell of two LSTMCells (projection, peepholes, cell clip) under dynamic_rnn, all with lengths."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    bi = case_data("tf1-bidirectional-lengths")
    stack = case_data("tf1-stack-lengths")

    def assigns(cell, name, p):
        """The cell's variables given p in TF1's layout (backends/layouts/tf1.py), under a scope "cell" of our own."""
        native = tf1_layout.cell_to_native(p, "cell")
        return [v.assign(native[f"cell/{below_cell(v, name)}"]) for v in cell.variables]

    graph = tf.Graph()
    with graph.as_default():
        state = lambda data, k: tf1.nn.rnn_cell.LSTMStateTuple(tf.constant(data.c0[k]), tf.constant(data.h0[k]))
        steps = [tf.constant(bi.x[t]) for t in range(T)]
        lengths = tf.constant(bi.lengths.astype(np.int32))
        basic = [tf1.nn.rnn_cell.BasicLSTMCell(H, dtype=tf.float64, name=f"basic{k}") for k in range(3)]
        forget_bias_default = basic[0]._forget_bias
        static_y, static_state = tf1.nn.static_rnn(basic[0], steps, initial_state=state(bi, 0), sequence_length=lengths,
                                                   scope="static")
        sbi_y, sbi_fw, sbi_bw = tf1.nn.static_bidirectional_rnn(
            basic[1], basic[2], steps, initial_state_fw=state(bi, 0), initial_state_bw=state(bi, 1),
            sequence_length=lengths, scope="static_bidirectional")
        config = stack.layer
        cells = [tf1.nn.rnn_cell.LSTMCell(stack.case.H, use_peepholes=True, cell_clip=config.cell_clip,
                                          num_proj=config.proj_size, dtype=tf.float64, name=f"stack{l}") for l in range(2)]
        multi_y, multi_state = tf1.nn.dynamic_rnn(
            tf1.nn.rnn_cell.MultiRNNCell(cells), tf.constant(stack.x), initial_state=(state(stack, 0), state(stack, 1)),
            sequence_length=tf.constant(stack.lengths.astype(np.int32)), time_major=True, scope="multi")
        ops = assigns(basic[0], "basic0", bi.params.cells[0]) + assigns(basic[1], "basic1", bi.params.cells[0])
        ops += assigns(basic[2], "basic2", bi.params.cells[1])
        ops += assigns(cells[0], "stack0", stack.params.cells[0]) + assigns(cells[1], "stack1", stack.params.cells[1])
        with tf1.Session(graph=graph) as session:
            session.run(ops)
            v = session.run({"static_y": static_y, "static_state": static_state, "sbi_y": sbi_y, "sbi_fw": sbi_fw,
                             "sbi_bw": sbi_bw, "multi_y": multi_y, "multi_state": multi_state})
    saved = {"forget_bias_default": np.array(forget_bias_default),
             "state_fields": np.array(list(type(v["static_state"])._fields)),
             "static_y": np.stack(v["static_y"]), "sbi_y": np.stack(v["sbi_y"]), "multi_y": v["multi_y"]}
    for name, s in (("static", v["static_state"]), ("sbi_fw", v["sbi_fw"]), ("sbi_bw", v["sbi_bw"]),
                    ("multi0", v["multi_state"][0]), ("multi1", v["multi_state"][1])):
        saved[f"{name} c"], saved[f"{name} h"] = s.c, s.h
    np.savez(out, **saved)


@functools.cache
def tf1_outputs() -> dict[str, np.ndarray]:
    if importlib.util.find_spec("tf_keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip(TF1_HINT)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tf1.npz")
        done = run_subprocess(f"from tests.spec.test_layer_semantics import _tf1_outputs; _tf1_outputs({out!r})",
                              {"TF_USE_LEGACY_KERAS": "1"})
        assert done.returncode == 0, f"the TF1 run failed:\n{done.stderr[-3000:]}"
        with np.load(out) as saved:
            return {k: saved[k] for k in saved.files}


def test_tf1_static_rnn_and_static_bidirectional_rnn_follow_lengths():
    """TF1's static_rnn and static_bidirectional_rnn (BasicLSTMCell, whose forget_bias defaults to 1.0) with
    sequence_length, lengths 0, 2, 3 and T in one batch: the spec's (13) with forget_bias 1, exactly as
    dynamic_rnn (test_layer_tf1.py): zeros at padded steps, the state copied through them, so a row of length 0
    keeps its initial state; the backward cell reverses each row within its length (reverse_sequence); the
    bidirectional output is the list over time of [forward ; backward]; states are LSTMStateTuple(c, h)."""
    saved = tf1_outputs()
    data = case_data("tf1-bidirectional-lengths")
    fwd = spec_forward(data)
    assert float(saved["forget_bias_default"]) == 1.0
    assert list(saved["state_fields"]) == ["c", "h"]
    close("static_rnn y", saved["static_y"], fwd.y[:, :, :H], F64, "TF1 static_rnn")
    close("static_rnn h", saved["static h"], fwd.h_T[0], F64, "TF1 static_rnn")
    close("static_rnn c", saved["static c"], fwd.c_T[0], F64, "TF1 static_rnn")
    close("static_bidirectional_rnn y", saved["sbi_y"], fwd.y, F64, "TF1 static_bidirectional_rnn")
    for d, name in enumerate(("sbi_fw", "sbi_bw")):
        close(f"{name} h", saved[f"{name} h"], fwd.h_T[d], F64, "TF1 static_bidirectional_rnn")
        close(f"{name} c", saved[f"{name} c"], fwd.c_T[d], F64, "TF1 static_bidirectional_rnn")
    empty = np.flatnonzero(data.lengths == 0)
    assert np.array_equal(saved["sbi_bw h"][empty], data.h0[1][empty])


def test_tf1_multirnncell_state_is_a_tuple_per_layer():
    """TF1's MultiRNNCell stack under dynamic_rnn with sequence_length: its final state is a tuple with one
    LSTMStateTuple(c, h) per layer, bottom layer first (the spec's layer-major h_T[k], c_T[k]); the cells'
    projection (num_proj: h is P wide, c H wide), peepholes and cell_clip are the spec's (7), (1)-(5), (4c), and
    padded steps output zeros. Two layers, lengths 0, 2, 3 and T."""
    saved = tf1_outputs()
    data = case_data("tf1-stack-lengths")
    fwd = spec_forward(data)
    close("y", saved["multi_y"], fwd.y, F64, "TF1 MultiRNNCell")
    for l in range(2):
        assert saved[f"multi{l} h"].shape == (B, data.case.P) and saved[f"multi{l} c"].shape == (B, data.case.H)
        close(f"layer {l} h", saved[f"multi{l} h"], fwd.h_T[l], F64, "TF1 MultiRNNCell")
        close(f"layer {l} c", saved[f"multi{l} c"], fwd.c_T[l], F64, "TF1 MultiRNNCell")


# ---------------------------------------------------------------------------
# TensorFlow raw ops: BlockLSTM (V1) and BlockLSTMV2
# ---------------------------------------------------------------------------


def block_weights(cell, version: int = 2) -> dict[str, np.ndarray]:
    """The block op's weight arguments alone, w (I + H, 4H) with rows [x; h], b (4H), peepholes wci, wcf, wco, in
    BlockLSTM's (version 1: columns i, g, f, o) or BlockLSTMV2's (2: i, f, g, o) layout (backends/layouts/tf_block.py):
    no attribute, so that the op's defaults apply where a call leaves them out."""
    native = tf_block.block_to_native(cell, version=version)
    return {name: native[name] for name in tf_block.WEIGHTS}


def test_blocklstm_seq_len_max_is_one_length_for_the_whole_batch():
    """BlockLSTMV2's only length is seq_len_max, one scalar for the whole batch: steps t < seq_len_max are the
    spec's with every row of that length; at t >= seq_len_max the cell state cs and the output h are zero (the
    op returns the seven gate tensors i, cs, f, o, ci, co, h, not a final state: the final state is cs and h at
    step seq_len_max - 1, and h[T-1] is zero when seq_len_max < T). With seq_len_max = 0 every cs and h is zero:
    there is nothing to read an initial state from, where the spec's (13) returns it (a divergence, pinned). The
    other five tensors are left uninitialised past seq_len_max (seen: values up to 1e36 and NaN): not checked."""
    pytest.importorskip("tensorflow", reason=TF_HINT)
    import tensorflow as tf

    data32 = case_data("peephole", np.float32)
    data = rounded("peephole")
    weights = block_weights(data32.params.cells[0])
    for seq_len_max in (T, 3, 0):
        out = tf.raw_ops.BlockLSTMV2(seq_len_max=tf.constant(seq_len_max, tf.int64), x=data32.x, cs_prev=data32.c0[0],
                                     h_prev=data32.h0[0], use_peephole=True, cell_clip=0.0, **weights)
        cs, h = out[1].numpy(), out[6].numpy()
        assert not cs[seq_len_max:].any() and not h[seq_len_max:].any()
        if seq_len_max:
            fwd = spec_forward(data, lengths=np.full(B, seq_len_max, np.int64))
            close("h", h, fwd.y, F32, f"BlockLSTMV2 seq_len_max={seq_len_max}")
            close("h at seq_len_max - 1", h[seq_len_max - 1], fwd.h_T[0], F32, "BlockLSTMV2")
            close("cs at seq_len_max - 1", cs[seq_len_max - 1], fwd.c_T[0], F32, "BlockLSTMV2")
    assert np.abs(data.h0).max() > DIFFERENT  # so the zeros returned for seq_len_max = 0 are not the initial state


def test_blocklstm_default_forget_bias_and_cell_clip():
    """The block ops' defaults, which change the maths: BlockLSTM (V1, gates i, g, f, o) called without
    forget_bias and cell_clip is the spec with forget_bias=1 and cell_clip=3 (the op's defaults); BlockLSTMV2
    (gates i, f, g, o) without cell_clip is the spec with no clip (default 0: off). Checked where the clip binds:
    the inputs are scaled so that |c| exceeds 3, and the spec without the defaults differs by more than 0.05."""
    pytest.importorskip("tensorflow", reason=TF_HINT)
    import tensorflow as tf

    data32 = case_data("peephole", np.float32)
    data = rounded("peephole")
    x32, c032 = data32.x * np.float32(4), data32.c0 * np.float32(4)
    x, c0 = data.x * 4, data.c0 * 4
    cell = data32.params.cells[0]
    v1 = tf.raw_ops.BlockLSTM(seq_len_max=tf.constant(T, tf.int64), x=x32, cs_prev=c032[0], h_prev=data32.h0[0],
                              use_peephole=True, **block_weights(cell, 1))
    v2 = tf.raw_ops.BlockLSTMV2(seq_len_max=tf.constant(T, tf.int64), x=x32, cs_prev=c032[0], h_prev=data32.h0[0],
                                use_peephole=True, **block_weights(cell))
    defaults = spec_forward(data, x=x, c0=c0, **with_config(data, forget_bias=1.0, cell_clip=3.0))
    plain = spec_forward(data, x=x, c0=c0)
    close("V1 h", v1[6].numpy(), defaults.y, F32, "BlockLSTM defaults")
    close("V1 cs", v1[1].numpy()[-1], defaults.c_T[0], F32, "BlockLSTM defaults")
    assert max_error(plain.y, defaults.y) > DIFFERENT
    close("V2 h", v2[6].numpy(), plain.y, F32, "BlockLSTMV2 defaults")
    close("V2 cs", v2[1].numpy()[-1], plain.c_T[0], F32, "BlockLSTMV2 defaults")
    assert np.abs(v2[1].numpy()).max() > 3.0, "the cell clip would not bind on this data"


def _blocklstm_past_the_sequence() -> None:
    """In the subprocess: BlockLSTMV2 with seq_len_max = T + 1."""
    import tensorflow as tf

    data = case_data("peephole", np.float32)
    tf.raw_ops.BlockLSTMV2(seq_len_max=tf.constant(T + 1, tf.int64), x=data.x, cs_prev=data.c0[0], h_prev=data.h0[0],
                           use_peephole=True, cell_clip=0.0, **block_weights(data.params.cells[0]))
    print("returned")


def test_blocklstm_seq_len_max_beyond_the_sequence_aborts_the_process():
    """A hazard, pinned: BlockLSTMV2 with seq_len_max > T (the length of x) raises no error: a failed CHECK
    (``Check failed: limit <= dim0_size``) aborts the whole Python process (SIGABRT). Run in a subprocess."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip(TF_HINT)
    done = run_subprocess("from tests.spec.test_layer_semantics import _blocklstm_past_the_sequence as f; f()", {})
    assert done.returncode == -signal.SIGABRT, f"exit status {done.returncode}:\n{done.stdout}\n{done.stderr[-2000:]}"
    assert "Check failed: limit <= dim0_size" in done.stderr


# ---------------------------------------------------------------------------
# flax: nn.RNN (reverse, keep_order, seq_lengths) and nn.Bidirectional
# ---------------------------------------------------------------------------


def flax_params(cell) -> dict:
    """flax's LSTMCell tree (README's table; backends/layouts/flax.py): ii..io kernels (I, H) without bias; hi..ho
    kernels (H, H) with bias."""
    return flax_layout.cell_tree(cell)


def flax_modules():
    pytest.importorskip("jax", reason=FLAX_HINT)
    nn = pytest.importorskip("flax.linen", reason=FLAX_HINT)
    import jax.numpy as jnp

    return nn, jnp


def flax_run(data, k, **call_options):
    """nn.RNN(LSTMCell, time_major=True, return_carry=True) on the case's x from cell k's initial state, float64:
    (y, h, c) as NumPy."""
    nn, jnp = flax_modules()
    import jax

    with jax.enable_x64(True):
        rnn = nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64, dtype=jnp.float64), time_major=True, return_carry=True)
        (c, h), y = rnn.apply({"params": {"cell": flax_params(data.params.cells[k])}}, data.x,
                              initial_carry=(data.c0[k], data.h0[k]), **call_options)
        y, h, c = np.asarray(y), np.asarray(h), np.asarray(c)
    assert y.dtype == np.float64
    return y, h, c


def test_flax_rnn_reverse_keep_order():
    """flax's nn.RNN(reverse=True, keep_order=True) is the spec's reverse direction (10): it consumes x_{T-1} .. x_0
    and returns the outputs in the original time order; with keep_order=False (flax's default) the outputs come
    back in processing order (the spec's y reversed in time, as Keras' go_backwards). Either way the final carry
    is (c, h), the state after x_0."""
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data, lengths=None)
    reverse_y = fwd.y[:, :, H:]
    y, h, c = flax_run(data, 1, reverse=True, keep_order=True)
    close("y", y, reverse_y, F64, "flax reverse=True keep_order=True")
    close("h", h, fwd.h_T[1], F64, "flax reverse=True keep_order=True")
    close("c", c, fwd.c_T[1], F64, "flax reverse=True keep_order=True")
    y, _, _ = flax_run(data, 1, reverse=True, keep_order=False)
    close("y[::-1]", y[::-1], reverse_y, F64, "flax reverse=True keep_order=False")
    assert max_error(y, reverse_y) > DIFFERENT


def continued(data, k, reverse):
    """What flax and jax.experimental.rnn compute past each row's length: direction k's cell run without a mask over
    the row's valid steps in processing order, then on through the padding (forward: x_L .. x_{T-1}; reverse, as
    flax's flip_sequences orders it: x_{T-1} .. x_L). Returns (outputs in the original time order, so that position
    t holds the output of the step that consumed x_t; final state after all T steps) per row."""
    ys, hs, cs = np.zeros((T, B, H)), np.zeros((B, H)), np.zeros((B, H))
    for b, L in enumerate(data.lengths):
        order = np.r_[np.arange(L)[::-1], np.arange(L, T)[::-1]] if reverse else np.arange(T)
        run = run_cell(data.params.cells[k], data.x[order, b : b + 1], data.h0[k, b : b + 1], data.c0[k, b : b + 1])
        ys[order, b] = run.h_seq[:, 0]
        hs[b], cs[b] = run.h_T[0], run.c_T[0]
    return ys, hs, cs


def test_flax_rnn_seq_lengths_forward():
    """flax's nn.RNN(seq_lengths=...) forward: steps t < L_b are the spec's (13) and so is the final carry of a row
    with L_b >= 1 (the carry after step L_b - 1). Two divergences, pinned: padded steps are not zeroed (flax
    documents it) but hold the outputs of the cell running on through the padding inputs, where the spec outputs
    zeros; and a row of length 0 returns the carry after all T steps (flax picks carry[L_b - 1], index -1), where
    the spec returns the initial state."""
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data)
    y, h, c = flax_run(data, 0, seq_lengths=data.lengths)
    valid, empty, full = fwd.mask, data.lengths == 0, data.lengths > 0
    ys, hs, cs = continued(data, 0, reverse=False)
    close("y (valid steps)", y[valid], fwd.y[:, :, :H][valid], F64, "flax seq_lengths")
    close("y (padded steps)", y[~valid], ys[~valid], F64, "flax seq_lengths: the cell run on through the padding")
    assert np.abs(y[~valid]).min() > 0
    close("h (rows with L >= 1)", h[full], fwd.h_T[0][full], F64, "flax seq_lengths")
    close("c (rows with L >= 1)", c[full], fwd.c_T[0][full], F64, "flax seq_lengths")
    close("h (empty row)", h[empty], hs[empty], F64, "flax seq_lengths, L = 0: the carry after all T steps")
    close("c (empty row)", c[empty], cs[empty], F64, "flax seq_lengths, L = 0: the carry after all T steps")
    assert max_error(h[empty], data.h0[0][empty]) > DIFFERENT


def test_flax_rnn_seq_lengths_reverse_flips_within_each_length():
    """flax's nn.RNN(reverse=True, seq_lengths=...) reverses each row within its own length, as the spec's (13)
    does (padding stays at the end: it consumes x_{L-1} .. x_0, then the padding x_{T-1} .. x_L): with
    keep_order=True the valid steps and the final carry of rows with L_b >= 1 are the spec's reverse direction;
    with keep_order=False the valid outputs come back in processing order (position t holds the spec's
    y_{L_b-1-t}). Divergences, pinned: padded positions hold the outputs of the cell running on through the padding
    (position t: the step that consumed x_t), not zeros; a row of length 0 is reversed whole and returns the
    carry after all T steps (the spec's reverse run without lengths), not the initial state."""
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data)
    reverse_y = fwd.y[:, :, H:]
    valid, empty, full = fwd.mask, data.lengths == 0, data.lengths > 0
    ys, hs, cs = continued(data, 1, reverse=True)
    y, h, c = flax_run(data, 1, seq_lengths=data.lengths, reverse=True, keep_order=True)
    close("y (valid steps)", y[valid], reverse_y[valid], F64, "flax reverse seq_lengths")
    close("y (padded steps)", y[~valid], ys[~valid], F64, "flax reverse seq_lengths: the cell run on through the padding")
    close("h (rows with L >= 1)", h[full], fwd.h_T[1][full], F64, "flax reverse seq_lengths")
    close("c (rows with L >= 1)", c[full], fwd.c_T[1][full], F64, "flax reverse seq_lengths")
    close("h (empty row)", h[empty], hs[empty], F64, "flax reverse seq_lengths, L = 0: the carry after all T steps")
    close("c (empty row)", c[empty], cs[empty], F64, "flax reverse seq_lengths, L = 0: the carry after all T steps")
    unmasked = spec_forward(data, lengths=None)  # the whole row reversed: the spec's reverse run without lengths
    close("h (empty row)", h[empty], unmasked.h_T[1][empty], F64, "flax reverse seq_lengths, L = 0")
    assert max_error(h[empty], data.h0[1][empty]) > DIFFERENT
    y, _, _ = flax_run(data, 1, seq_lengths=data.lengths, reverse=True, keep_order=False)
    for b in np.flatnonzero(full):
        L = data.lengths[b]
        close(f"row {b} y[:L]", y[:L, b], reverse_y[:L, b][::-1], F64, "flax reverse seq_lengths keep_order=False")


def test_flax_bidirectional_layout():
    """flax's nn.Bidirectional(nn.RNN(...), nn.RNN(...)) with the default merge_fn: outputs [forward ; backward] on
    the feature axis, the backward RNN run with reverse=True, keep_order=True (the spec's (11)); its carry is
    ((c_fw, h_fw), (c_bw, h_bw)) and initial_carry is read in the same nesting. With seq_lengths both directions
    are the flax behaviour above (valid steps and non-empty rows' carries: the spec's). Single layer only: a stack
    is the user's loop."""
    nn, jnp = flax_modules()
    import jax

    assert "num_layers" not in {field.name for field in dataclasses.fields(nn.RNN)}
    data = case_data("bidirectional-lengths")
    with jax.enable_x64(True):
        bi = nn.Bidirectional(nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64)), nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64)),
                              time_major=True, return_carry=True)
        params = {"params": {"forward_rnn": {"cell": flax_params(data.params.cells[0])},
                             "backward_rnn": {"cell": flax_params(data.params.cells[1])}}}
        initial = ((data.c0[0], data.h0[0]), (data.c0[1], data.h0[1]))
        results = {}
        for lengths in (None, data.lengths):
            ((c_fw, h_fw), (c_bw, h_bw)), y = bi.apply(params, data.x, initial_carry=initial, seq_lengths=lengths)
            results[lengths is None] = [np.asarray(a) for a in (y, h_fw, c_fw, h_bw, c_bw)]
    fwd = spec_forward(data, lengths=None)
    y, h_fw, c_fw, h_bw, c_bw = results[True]
    close("y", y, fwd.y, F64, "flax Bidirectional")
    for name, got, expected in (("h_fw", h_fw, fwd.h_T[0]), ("c_fw", c_fw, fwd.c_T[0]),
                                ("h_bw", h_bw, fwd.h_T[1]), ("c_bw", c_bw, fwd.c_T[1])):
        close(name, got, expected, F64, "flax Bidirectional")
    fwd = spec_forward(data)
    y, h_fw, _, h_bw, _ = results[False]
    full = data.lengths > 0
    close("y (valid steps)", y[fwd.mask], fwd.y[fwd.mask], F64, "flax Bidirectional seq_lengths")
    close("h_fw (rows with L >= 1)", h_fw[full], fwd.h_T[0][full], F64, "flax Bidirectional seq_lengths")
    close("h_bw (rows with L >= 1)", h_bw[full], fwd.h_T[1][full], F64, "flax Bidirectional seq_lengths")


# ---------------------------------------------------------------------------
# jax.experimental.rnn: lstm (cuDNN) and lstm_ref
# ---------------------------------------------------------------------------


def jax_rnn_flat_weights(data: CaseData) -> np.ndarray:
    """The flat weight vector of jax.experimental.rnn as its docstring describes cuDNN's packing: per pseudo-layer
    k = l * D + d (forward, then reverse, layer by layer) W_ih (4H, in) then W_hh (4H, H), row-major; then, in the
    same order, b_ih (4H) then b_hh (4H). Gates i, f, g, o (PyTorch's); the two biases are each half of b
    (backends/layouts/jax_rnn.py)."""
    return jax_rnn_layout.FLAT_WEIGHTS.to_native(data.params, data.layer)["weights"]


def jax_rnn():
    pytest.importorskip("jax", reason=JAX_HINT)
    from jax.experimental import rnn

    return rnn


def jax_lstm_ref(data: CaseData, lengths):
    """lstm_ref (batch-major) on the case with the flat weights unpacked by jax's own unpack_lstm_weights; float64."""
    rnn = jax_rnn()
    import jax

    case = data.case
    with jax.enable_x64(True):
        flat = jax_rnn_flat_weights(data)
        assert flat.size == rnn.get_num_params_in_lstm(I, H, case.L, case.D == 2)
        W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, I, H, case.L, case.D == 2)
        y, h_n, c_n = rnn.lstm_ref(data.x.transpose(1, 0, 2), data.h0, data.c0, W_ih, W_hh, b_ih, b_hh,
                                   np.asarray(lengths, np.int32), I, H, case.L, 0.0, case.D == 2)
        y, h_n, c_n = (np.asarray(a) for a in (y, h_n, c_n))
    assert y.dtype == np.float64
    return y.transpose(1, 0, 2), h_n, c_n


def test_jax_rnn_lstm_ref_layers_directions_lengths():
    """jax.experimental.rnn.lstm_ref, two bidirectional layers, lengths 5, 2, 0, 3, float64 (x64): with the flat
    weights packed as jax_rnn_flat_weights says (and unpacked by jax's unpack_lstm_weights), its outputs are the
    spec's (9)-(13) at every step, padded steps zero, and h_n, c_n (L * D, B, H) are layer-major, forward before
    reverse (k = l * D + d), the spec's for every row with L_b >= 1. x is batch-major (B, T, I), the states
    time-free (L * D, B, H); seq_lengths must be int32 (with x64 on, int64 raises NotImplementedError); no
    projection, no peepholes, no clip, two biases."""
    data = case_data("stacked-bidirectional-lengths")
    fwd = spec_forward(data)
    y, h_n, c_n = jax_lstm_ref(data, data.lengths)
    full = data.lengths > 0
    close("y", y, fwd.y, F64, "jax.experimental.rnn.lstm_ref")
    close("h_n (rows with L >= 1)", h_n[:, full], fwd.h_T[:, full], F64, "jax.experimental.rnn.lstm_ref")
    close("c_n (rows with L >= 1)", c_n[:, full], fwd.c_T[:, full], F64, "jax.experimental.rnn.lstm_ref")
    rnn = jax_rnn()
    import jax

    with jax.enable_x64(True), pytest.raises(NotImplementedError, match="`seq_lengths` can only be int32"):
        weights = rnn.unpack_lstm_weights(jax_rnn_flat_weights(data), I, H, 2, True)
        rnn.lstm_ref(data.x.transpose(1, 0, 2), data.h0, data.c0, *weights, np.asarray(data.lengths, np.int64),
                     I, H, 2, 0.0, True)


def test_jax_rnn_lstm_ref_empty_rows_return_the_state_after_all_steps():
    """A divergence, pinned: for a row of length 0, lstm_ref's h_n and c_n are carry[L_b - 1] = carry[-1], the
    state after running every one of the T steps unmasked (layer 0 over the row's x, the reverse direction over
    all of it reversed; layer 1 over layer 0's outputs, which are zero there), where the spec's (13) returns the
    initial state. Its outputs for that row are zeros, as the spec's."""
    data = case_data("stacked-bidirectional-lengths")
    y, h_n, c_n = jax_lstm_ref(data, data.lengths)
    b = int(np.flatnonzero(data.lengths == 0)[0])
    assert not y[:, b].any()
    for k in range(4):
        layer_input = data.x[:, b : b + 1] if k < 2 else np.zeros((T, 1, 2 * H))
        reverse = k % 2 == 1
        run = run_cell(data.params.cells[k], layer_input[::-1] if reverse else layer_input, data.h0[k, b : b + 1],
                       data.c0[k, b : b + 1])
        close(f"h_n[{k}] (empty row)", h_n[k, b], run.h_T[0], F64, "lstm_ref, L = 0: the state after all T steps")
        close(f"c_n[{k}] (empty row)", c_n[k, b], run.c_T[0], F64, "lstm_ref, L = 0: the state after all T steps")
        assert max_error(h_n[k, b], data.h0[k, b]) > DIFFERENT


def test_jax_rnn_lstm_is_cudnn_only():
    """jax.experimental.rnn.lstm, the cuDNN (or MIOpen) kernel, has no CPU implementation: on a CPU-only jaxlib it
    fails while tracing, with an AttributeError from jaxlib's gpu_rnn stub (no
    compute_rnn_workspace_reserve_space_sizes), before any computation. Its semantics (same arguments as lstm_ref,
    float32 only) are not checked here: that needs a GPU."""
    rnn = jax_rnn()
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip(f"jax runs on {jax.default_backend()}: lstm may be implemented there")
    data = case_data("stacked-bidirectional-lengths", np.float32)
    flat = jax_rnn_flat_weights(data)
    with pytest.raises(AttributeError, match="compute_rnn_workspace_reserve_space_sizes"):
        rnn.lstm(data.x.transpose(1, 0, 2), data.h0, data.c0, flat, np.asarray(NONEMPTY_LENGTHS, np.int32),
                 I, H, 2, 0.0, True)


# ---------------------------------------------------------------------------
# ONNX LSTM: layout, and the attributes onnx.reference ignores
# ---------------------------------------------------------------------------


def onnx_model(data: CaseData, dtype, *, layout=0, lengths=False, **attributes):
    """One ONNX LSTM node (opset 14) for the case's single layer, direction from its config, its W, R and B named as
    the ONNX layout names node 0's (backends/layouts/onnx.py); in ``layout`` 1 its raw batch-major shapes."""
    from onnx import TensorProto, helper

    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    D = data.case.D
    W, R, Bias = (onnx_layout.weight_name(0, t) for t in ("W", "R", "B"))
    state = [D, B, H] if layout == 0 else [B, D, H]
    inputs = [helper.make_tensor_value_info("X", elem, [T, B, I] if layout == 0 else [B, T, I]),
              helper.make_tensor_value_info(W, elem, [D, 4 * H, I]), helper.make_tensor_value_info(R, elem, [D, 4 * H, H]),
              helper.make_tensor_value_info(Bias, elem, [D, 8 * H]), helper.make_tensor_value_info("initial_h", elem, state),
              helper.make_tensor_value_info("initial_c", elem, state)]
    names = ["X", W, R, Bias, "", "initial_h", "initial_c"]
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
        names[4] = "sequence_lens"
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], hidden_size=H, direction=data.layer.direction,
                            layout=layout, **attributes)
    outputs = [helper.make_tensor_value_info(n, elem, None) for n in ("Y", "Y_h", "Y_c")]
    opsets = [helper.make_opsetid("", onnx_graphs.OPSET)]
    return helper.make_model(helper.make_graph([node], "lstm", inputs, outputs), opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets))


def onnx_feeds(data: CaseData, *, layout=0, lengths=False) -> dict[str, np.ndarray]:
    feeds = onnx_layout.LSTM_NODES.to_native(data.params, data.layer)
    if layout == 0:
        feeds.update(X=data.x, initial_h=data.h0, initial_c=data.c0)
    else:
        feeds.update(X=data.x.transpose(1, 0, 2), initial_h=data.h0.transpose(1, 0, 2), initial_c=data.c0.transpose(1, 0, 2))
    if lengths:
        feeds["sequence_lens"] = data.lengths.astype(np.int32)
    return {k: np.ascontiguousarray(v) for k, v in feeds.items()}


def onnx_reference_run(data, *, layout=0, lengths=False, **attributes):
    from onnx.reference import ReferenceEvaluator

    session = ReferenceEvaluator(onnx_model(data, np.float64, layout=layout, lengths=lengths, **attributes))
    return session.run(None, onnx_feeds(data, layout=layout, lengths=lengths))


def test_onnx_reference_batch_major_layout():
    """ONNX's layout=1 (batch-major), as onnx.reference runs it (float64): X (B, T, I), initial_h/c (B, D, H),
    Y (B, T, D, H), Y_h/Y_c (B, D, H); transposed to layout 0 (Y (T, D, B, H), Y_h (D, B, H): direction 0 forward,
    1 reverse in the original time order) it is the spec's bidirectional layer. ONNX Runtime refuses layout=1
    (test_onnxruntime_refuses_batch_major_layout)."""
    pytest.importorskip("onnx", reason=ONNX_HINT)
    data = case_data("bidirectional-lengths")
    fwd = spec_forward(data, lengths=None)
    Y, Y_h, Y_c = onnx_reference_run(data, layout=1)
    assert Y.shape == (B, T, 2, H) and Y_h.shape == (B, 2, H)
    close("Y", Y.transpose(1, 0, 2, 3).reshape(T, B, 2 * H), fwd.y, F64, "onnx.reference layout=1")
    close("Y_h", Y_h.transpose(1, 0, 2), fwd.h_T, F64, "onnx.reference layout=1")
    close("Y_c", Y_c.transpose(1, 0, 2), fwd.c_T, F64, "onnx.reference layout=1")


def test_onnxruntime_refuses_batch_major_layout():
    """ONNX Runtime's CPU LSTM refuses layout=1 when the session is created (its message is pinned): batch-major
    input must be transposed to layout 0 in the graph."""
    onnxruntime = pytest.importorskip("onnxruntime", reason=ORT_HINT)
    pytest.importorskip("onnx", reason=ORT_HINT)
    model = onnx_model(case_data("bidirectional-lengths", np.float32), np.float32, layout=1)
    with pytest.raises(Exception, match=r"Batchwise recurrent operations \(layout == 1\) are not supported"):
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("attribute", ["sequence_lens", "clip", "input_forget"])
def test_onnx_reference_ignores_the_attribute(attribute):
    """A divergence of onnx.reference (1.23) from the ONNX operator's definition and from the spec, pinned: it
    silently ignores sequence_lens, clip and input_forget. With each given, its outputs are exactly those without
    it (the spec's layer without lengths, gate clip or coupled gates), while the spec with the feature (ONNX
    Runtime's reading: tests/spec/test_layer_references.py::test_layer_matches_onnxruntime) differs by more than
    0.05. So onnx.reference is never a reference for these three."""
    pytest.importorskip("onnx", reason=ONNX_HINT)
    name, options = {
        "sequence_lens": ("bidirectional-lengths", {"lengths": True}),
        "clip": ("onnx-gate-clip", {"clip": CASES["onnx-gate-clip"].layer.gate_clip}),
        "input_forget": ("onnx-coupled", {"input_forget": 1}),
    }[attribute]
    data = case_data(name)
    Y, Y_h, _ = onnx_reference_run(data, **options)
    Y0, Y_h0, _ = onnx_reference_run(data)
    assert np.array_equal(Y, Y0) and np.array_equal(Y_h, Y_h0), f"onnx.reference now reads {attribute}: unpin"
    without = spec_forward(data, lengths=None, **with_config(data, gate_clip=None, coupled_input_forget=False))
    close("Y", Y.transpose(0, 2, 1, 3).reshape(T, B, -1), without.y, F64, f"onnx.reference with {attribute}")
    assert max_error(without.y, spec_forward(data).y) > DIFFERENT
