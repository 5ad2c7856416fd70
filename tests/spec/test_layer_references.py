"""The layer spec against independent implementations, feature by feature.

    feature                         reference (what it checks)
    reverse, bidirectional, stacks  onnx.reference, float64, forward; PyTorch nn.LSTM, float64, forward and gradients
    projection                      PyTorch nn.LSTM(proj_size), float64, forward and gradients
    lengths                         PyTorch packed sequences (float64, forward and gradients); ONNX Runtime's
                                    sequence_lens (float32, forward; rows of length >= 1: for length 0 it
                                    returns zeros where the spec says the initial state)
    gate clip, coupled gates        ONNX Runtime's LSTM clip and input_forget, float32, forward
    cell clip                       TensorFlow's BlockLSTMV2 cell_clip, float32, forward
    masks                           Keras 3's LSTM (TensorFlow backend) with a mask, float64, forward
    layer normalization, projection LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM (TFLite's lstm_eval.cc), float32,
    bias (and with them peepholes,  forward, in models built from TFLite's schema (backends/runtimes/litert.py)
    CIFG, cell and projection clips)
    cell clip, projection, proj_clip, TF1's LSTMCell under (bidirectional_)dynamic_rnn, float64, forward and
    lengths (0 included), stacks    gradients: test_layer_tf1.py (it needs tf-keras, and skips without it)

onnx.reference 1.23 silently ignores clip, input_forget and sequence_lens, so it is never used for them.
The references' results depend only on the data, never on the spec: they are computed once per case
(cached), so that the meta-tests (test_layer_mutants.py) can run these checks against many broken specs.
Each framework gets the case's weights through the project's one layout of its parameters (backends/layouts),
which refuses what the framework cannot hold; the ONNX graphs are the project's (backends/runtimes/onnx.py).
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import numpy as np
import pytest

from backends.layouts import keras as keras_layout
from backends.layouts import onnx as onnx_layout
from backends.layouts import tf_block
from backends.layouts import torch as torch_layout
from backends.runtimes import onnx as onnx_graphs
from backends.runtimes.onnxruntime import ONNXRUNTIME
from contract.compare import assert_close
from contract.vocabulary import Device
from spec.cases import CaseData, case_by_name, make_case_data
from tests.spec.checks import ONNX_REFERENCE_ATOL, ONNX_REFERENCE_RTOL, onnx_reference_run, run_layer

# float64 frameworks (PyTorch, Keras, TF1; onnx.reference uses checks.ONNX_REFERENCE_*): another order of the
# same operations; the errors stay at a few 1e-16 (measured: at most 3.3e-16 on outputs, 5.3e-15 on gradients
# over 20 steps and two layers), so 1e-12 is as tight as onnx.reference's bound.
TORCH_ATOL = TORCH_RTOL = 1e-12

# float32 implementations (ONNX Runtime, TensorFlow) on the float32-rounded data, against the float64 spec on
# the same rounded data: a few float32 roundings per step through a contractive recurrence (eps32 = 1.2e-7;
# measured: at most 1.3e-7 on these cases), over two layers. 1e-5 is 80 eps32; the bugs test_layer_mutants.py plants move an
# output by more than 1e-3.
FLOAT32_ATOL = FLOAT32_RTOL = 1e-5

TORCH_HINT = "PyTorch's nn.LSTM is the reference for projection, stacking and packed sequences; pip install torch"
ORT_HINT = "ONNX Runtime is the reference for clip, input_forget and sequence_lens; pip install onnxruntime"
TF_HINT = "TensorFlow's BlockLSTMV2 is the reference for cell_clip; pip install tensorflow-cpu"
KERAS_HINT = "Keras' LSTM (TensorFlow backend) is the reference for masks; pip install tensorflow-cpu"
LITERT_HINT = "LiteRT's fused LSTM is the reference for layer normalization and the projection bias; pip install ai-edge-litert"

#: Which cases each reference can run (what the framework implements).
TORCH_CASES = ("one-layer", "stacked", "stacked-bidirectional", "lstmp-torch", "medium-torch")
ONNX_REFERENCE_CASES = ("one-layer", "reverse", "bidirectional", "stacked", "stacked-bidirectional")
ORT_CASES = ("bidirectional", "stacked-bidirectional", "gate-clip", "coupled", "lengths", "coupled-stack")
TF_CASES = ("cell-clip",)
KERAS_CASES = ("mask-zero", "mask-previous")
LITERT_CASES = ("layer-norm", "layer-norm-cifg", "proj-bias", "layer-norm-full")


def layer_data(name: str, dtype=np.float64) -> CaseData:
    return make_case_data(case_by_name(name), dtype)


def rounded_to_float32(data: CaseData) -> CaseData:
    """The case's float32 data, back in float64: the problem a float32 framework is given, for the float64 spec."""
    d32 = make_case_data(data.case, np.float32)
    as64 = {k: v.astype(np.float64) for k, v in {**d32.inputs(), **d32.cotangents()}.items()}
    return replace(d32, params=d32.params.astype(np.float64), **as64)


def gradient_entries(x, h0, c0, params) -> dict[str, np.ndarray]:
    """A reference's gradients as :func:`compare` reads them: 'grad x', ..., and every cell's parameters by the spec's
    own names (LayerParams.tensors())."""
    named = {"x": x, "h0": h0, "c0": c0, **params.tensors()}
    return {f"grad {name}": np.asarray(value) for name, value in named.items()}


def compare(reference: dict[str, np.ndarray], data: CaseData, *, atol, rtol, source, rows=None) -> None:
    """The spec's outputs (and gradients, where the reference has them) against a reference's.

    ``rows``: the batch rows to compare (all by default).
    """
    fwd, grads = run_layer(data)
    ours = {"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}
    if any(name.startswith("grad ") for name in reference):
        ours.update({f"grad {name}": value for name, value in grads.tensors().items()})
    for name, expected in reference.items():
        got = ours[name]
        if rows is not None and name in ("y", "h_T", "c_T", "grad x", "grad h0", "grad c0"):
            got, expected = got[:, rows], expected[:, rows]
        assert_close(name, got, expected, atol=atol, rtol=rtol, context=f"{data.case.name} vs {source}")


# ---------------------------------------------------------------------------
# PyTorch nn.LSTM, float64: forward and gradients.
# ---------------------------------------------------------------------------


@functools.cache
def torch_reference(name: str) -> dict[str, np.ndarray]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    data = layer_data(name)
    case, config = data.case, data.layer
    assert data.mask is None, f"{name}: nn.LSTM takes no mask"
    state = torch_layout.NN_LSTM.to_native(data.params, config)  # refuses what nn.LSTM cannot hold
    module = torch.nn.LSTM(case.I, case.H, num_layers=case.L, bidirectional=case.D == 2, proj_size=config.proj_size or 0,
                           dtype=torch.float64)
    module.load_state_dict({native: torch.from_numpy(value) for native, value in state.items()})
    x, h0, c0 = (torch.tensor(a, requires_grad=True) for a in (data.x, data.h0, data.c0))
    if data.lengths is not None:
        packed = pack_padded_sequence(x, torch.from_numpy(data.lengths), enforce_sorted=False)
        out, (h_n, c_n) = module(packed, (h0, c0))
        y, _ = pad_packed_sequence(out, total_length=case.T)
    else:
        y, (h_n, c_n) = module(x, (h0, c0))
    loss = (y * torch.from_numpy(data.dy)).sum() + (h_n * torch.from_numpy(data.dh_T)).sum() + (c_n * torch.from_numpy(data.dc_T)).sum()
    loss.backward()
    native_gradients = {native: parameter.grad.numpy() for native, parameter in module.named_parameters()}
    params = torch_layout.NN_LSTM.gradient(native_gradients, data.params, config)
    return {"y": y.detach().numpy(), "h_T": h_n.detach().numpy(), "c_T": c_n.detach().numpy(),
            **gradient_entries(x.grad.numpy(), h0.grad.numpy(), c0.grad.numpy(), params)}


def check_against_torch(name: str) -> None:
    compare(torch_reference(name), layer_data(name), atol=TORCH_ATOL, rtol=TORCH_RTOL, source="torch.nn.LSTM (float64)")


@pytest.mark.parametrize("name", TORCH_CASES)
def test_layer_matches_torch(name):
    pytest.importorskip("torch", reason=TORCH_HINT)
    check_against_torch(name)


# ---------------------------------------------------------------------------
# The ONNX LSTM operator, stacked in a graph: onnx.reference (float64) and ONNX Runtime (float32).
# ---------------------------------------------------------------------------


def onnx_graph(data: CaseData):
    """The project's ONNX graph of the case's stack (backends/runtimes/onnx.py: one LSTM node per layer, the
    direction, clip and input_forget attributes from the case, sequence_lens where it has lengths) in the data's
    dtype, and its feeds (the weights in ONNX's layout, backends/layouts/onnx.py)."""
    params, config = data.params, data.layer
    model = onnx_graphs.layer_model(params.input_size, params.hidden_size, config, params.dtype,
                                    lengths=data.lengths is not None, weight_name=onnx_layout.weight_name)
    weights = onnx_layout.LSTM_NODES.to_native(params, config)  # refuses what ONNX's operator cannot hold
    return model, onnx_graphs.layer_feeds(weights, data.x, data.h0, data.c0, data.lengths)


@functools.cache
def onnx_reference_outputs(name: str) -> dict[str, np.ndarray]:
    data = layer_data(name)
    assert data.lengths is None and not data.layer.gate_clip and not data.layer.coupled_input_forget, (
        f"{name}: onnx.reference ignores clip, input_forget and sequence_lens"
    )
    return onnx_reference_run(data.params, data.layer, data.x, data.h0, data.c0)


def check_against_onnx_reference_layer(name: str) -> None:
    compare(onnx_reference_outputs(name), layer_data(name), atol=ONNX_REFERENCE_ATOL, rtol=ONNX_REFERENCE_RTOL,
            source="onnx.reference (float64)")


@pytest.mark.parametrize("name", ONNX_REFERENCE_CASES)
def test_layer_matches_onnx_reference(name):
    pytest.importorskip("onnx", reason="onnx.reference is the float64 reference for directions; pip install onnx")
    check_against_onnx_reference_layer(name)


def onnxruntime_session(data: CaseData):
    """An ONNX Runtime session (CPU) of the case's float32 graph, and its feeds."""
    model, feeds = onnx_graph(data)
    return ONNXRUNTIME.session(model, Device.CPU), feeds


@functools.cache
def onnxruntime_outputs(name: str) -> dict[str, np.ndarray]:
    session, feeds = onnxruntime_session(layer_data(name, np.float32))
    y, h_T, c_T = onnx_graphs.layer_outputs(session.run(None, feeds))
    return {"y": y, "h_T": h_T, "c_T": c_T}


def ort_rows(data: CaseData):
    """Rows of length 0 are left out: ONNX Runtime returns zeros for their final state (see module docstring)."""
    return None if data.lengths is None else np.flatnonzero(data.lengths > 0)


def check_against_onnxruntime(name: str) -> None:
    data = rounded_to_float32(layer_data(name))
    compare(onnxruntime_outputs(name), data, atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL,
            source="ONNX Runtime (float32)", rows=ort_rows(data))


@pytest.mark.parametrize("name", ORT_CASES)
def test_layer_matches_onnxruntime(name):
    pytest.importorskip("onnxruntime", reason=ORT_HINT)
    check_against_onnxruntime(name)


def test_onnxruntime_input_forget_ignores_the_forget_weights():
    """Which tensors ONNX Runtime leaves unused under input_forget=1: W_f, R_f, both f biases and P_f (and so any
    forget bias). Perturbing them changes nothing, as (2c) says; the spec's gradients for them are zero."""
    pytest.importorskip("onnxruntime", reason=ORT_HINT)
    session, base_feeds = onnxruntime_session(layer_data("coupled", np.float32))
    base = session.run(None, base_feeds)[0]
    H = layer_data("coupled").case.H
    f_rows = slice(2 * H, 3 * H)  # ONNX's gate order i, o, f, c; peepholes i, o, f
    for tensor, index in (("W", (0, f_rows)), ("R", (0, f_rows)), ("B", (0, f_rows)),
                          ("B", (0, slice(6 * H, 7 * H))), ("P", (0, slice(2 * H, 3 * H)))):
        name = onnx_layout.weight_name(0, tensor)
        feeds = {**base_feeds, name: base_feeds[name].copy()}
        feeds[name][index] += 3.0
        assert np.array_equal(session.run(None, feeds)[0], base), f"ONNX Runtime uses {name}{index} under input_forget"
    _, grads = run_layer(layer_data("coupled"))
    cell = grads.params.cells[0]
    for tensor in (cell.W[1], cell.U[1], cell.b[1], cell.p[1]):
        assert not tensor.any(), "the spec's gradient of an unused forget-gate tensor is not zero"


def test_onnxruntime_zeroes_the_final_state_of_empty_rows():
    """The divergence the spec does not follow (13): for L_b = 0, ONNX Runtime's Y_h and Y_c are zero, the spec's
    the initial state. Pinned so that a change in ONNX Runtime is noticed."""
    pytest.importorskip("onnxruntime", reason=ORT_HINT)
    data = layer_data("lengths")
    empty = np.flatnonzero(data.lengths == 0)
    ort = onnxruntime_outputs("lengths")
    assert empty.size and not ort["h_T"][:, empty].any() and not ort["c_T"][:, empty].any()
    fwd, _ = run_layer(data)
    assert np.array_equal(fwd.h_T[:, empty], data.h0[:, empty]) and np.array_equal(fwd.c_T[:, empty], data.c0[:, empty])


# ---------------------------------------------------------------------------
# TensorFlow's BlockLSTMV2: cell_clip (float32, forward).
# ---------------------------------------------------------------------------


@functools.cache
def blocklstm_outputs(name: str) -> dict[str, np.ndarray]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    data = layer_data(name, np.float32)
    native = tf_block.BLOCK_V2.to_native(data.params, data.layer)  # refuses what one BlockLSTMV2 cannot hold
    out = tf.raw_ops.BlockLSTMV2(seq_len_max=tf.constant(data.case.T, tf.int64), x=data.x, cs_prev=data.c0[0],
                                 h_prev=data.h0[0], **native)
    cs, h = out[1].numpy(), out[6].numpy()
    return {"y": h, "h_T": h[-1:], "c_T": cs[-1:]}


@functools.cache
def litert_outputs(name: str) -> dict[str, np.ndarray]:
    from backends.layouts.tflite import FUSED_OPS
    from backends.runtimes.litert import LITERT, layer_model

    data = layer_data(name, np.float32)
    params, case = data.params, data.case
    content = layer_model(FUSED_OPS.to_native(params, data.layer), data.layer, input_size=params.input_size,
                          hidden_size=params.hidden_size, output_size=params.output_size, T=case.T, B=case.B)
    y, h_T, c_T = LITERT.fused(content, data.layer).run(data.x, data.h0, data.c0)
    return {"y": y, "h_T": h_T, "c_T": c_T}


def check_against_litert(name: str) -> None:
    compare(litert_outputs(name), rounded_to_float32(layer_data(name)), atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL,
            source="LiteRT UNIDIRECTIONAL_SEQUENCE_LSTM (float32)")


@pytest.mark.parametrize("name", LITERT_CASES)
def test_layer_matches_litert(name):
    pytest.importorskip("ai_edge_litert", reason=LITERT_HINT)
    check_against_litert(name)


def check_against_blocklstm(name: str) -> None:
    compare(blocklstm_outputs(name), rounded_to_float32(layer_data(name)), atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL,
            source="tf.raw_ops.BlockLSTMV2 (float32)")


@pytest.mark.parametrize("name", TF_CASES)
def test_cell_clip_matches_tensorflow_blocklstm(name):
    pytest.importorskip("tensorflow", reason=TF_HINT)
    check_against_blocklstm(name)


# ---------------------------------------------------------------------------
# Keras 3's LSTM with a mask (TensorFlow backend, float64).
# ---------------------------------------------------------------------------


@functools.cache
def keras_outputs(name: str) -> dict[str, np.ndarray]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras' backend is {keras.backend.backend()!r}; the mask reference is the TensorFlow backend's loop")
    data = layer_data(name)
    case, config = data.case, data.layer
    assert case.L == 1 and config.proj_size is None and not config.peephole and not config.gate_clip and not config.cell_clip
    ys, h_T, c_T = [], [], []
    for d in range(case.D):
        reverse = config.reversed(d)
        native = keras_layout.cell_to_native(data.params.cells[d], config.forget_bias)
        lstm = keras.layers.LSTM(case.H, return_sequences=True, return_state=True, go_backwards=reverse,
                                 zero_output_for_mask=config.zero_output_for_mask, dtype="float64")
        lstm.build((case.B, case.T, case.I))
        lstm.set_weights([native[weight] for weight in keras_layout.CELL_WEIGHTS])
        y, h, c = lstm(data.x.transpose(1, 0, 2), mask=data.mask.T, initial_state=[data.h0[d], data.c0[d]])
        y = np.asarray(y).transpose(1, 0, 2)
        ys.append(y[::-1] if reverse else y)  # go_backwards returns the outputs in its processing order
        h_T.append(np.asarray(h))
        c_T.append(np.asarray(c))
    return {"y": np.concatenate(ys, axis=2), "h_T": np.stack(h_T), "c_T": np.stack(c_T)}


def check_against_keras(name: str) -> None:
    compare(keras_outputs(name), layer_data(name), atol=TORCH_ATOL, rtol=TORCH_RTOL, source="keras.layers.LSTM (float64)")


@pytest.mark.parametrize("name", KERAS_CASES)
def test_masks_match_keras(name):
    pytest.importorskip("keras", reason=KERAS_HINT)
    pytest.importorskip("tensorflow", reason=KERAS_HINT)
    check_against_keras(name)


def test_tensorflow_blocklstm_gradient_ignores_cell_clip(monkeypatch):
    """A finding, pinned so that a fix is noticed: BlockLSTM's (V1) registered gradient, which is correct without a
    clip, treats cell_clip as the identity. Where the clip binds, its gradient is the spec's with the clip's
    derivative taken as 1 (straight through), not the derivative of its own forward pass (TF1's LSTMCell, whose
    gradient does zero it, agrees with the spec: test_layer_tf1.py)."""
    pytest.importorskip("tensorflow", reason=TF_HINT)
    import tensorflow as tf

    from spec import lstm

    data32 = layer_data("cell-clip", np.float32)
    data = rounded_to_float32(layer_data("cell-clip"))
    native = tf_block.BLOCK_V1.to_native(data32.params, data32.layer)  # V1: gates i, g, f, o; forget_bias, cell_clip
    x = tf.Variable(data32.x)
    with tf.GradientTape() as tape:
        out = tf.raw_ops.BlockLSTM(seq_len_max=tf.constant(data32.case.T, tf.int64), x=x, cs_prev=data32.c0[0],
                                   h_prev=data32.h0[0], **native)
        loss = (tf.reduce_sum(out[6] * data32.dy) + tf.reduce_sum(out[6][-1] * data32.dh_T[0])
                + tf.reduce_sum(out[1][-1] * data32.dc_T[0]))
    tf_dx = tape.gradient(loss, x).numpy()
    _, spec_grads = run_layer(data)
    monkeypatch.setattr(lstm.Clip, "backward", lambda self, d: d)
    _, straight_through = run_layer(data)
    assert np.max(np.abs(tf_dx - spec_grads.x)) > 0.05, "BlockLSTM's gradient now zeroes the clipped cell state: unpin"
    assert_close("grad x", tf_dx, straight_through.x, atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL,
                 context="BlockLSTM's gradient vs the spec's with a straight-through cell clip")
