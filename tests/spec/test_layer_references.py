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
    cell clip, projection, proj_clip, TF1's LSTMCell under (bidirectional_)dynamic_rnn, float64, forward and
    lengths (0 included), stacks    gradients: test_layer_tf1.py (it needs tf-keras, and skips without it)

onnx.reference 1.23 silently ignores clip, input_forget and sequence_lens, so it is never used for them.
The references' results depend only on the data, never on the spec: they are computed once per case
(cached), so that the meta-tests (test_layer_mutants.py) can run these checks against many broken specs.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest

from backends import onnx_lstm
from conformance.compare import assert_close
from spec.layer_cases import LayerCaseData, layer_case_by_name, make_layer_case_data
from tests.spec.checks import ONNX_REFERENCE_ATOL, ONNX_REFERENCE_RTOL, run_layer

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

#: Which layer cases each reference can run (what the framework implements).
TORCH_CASES = ("one-layer", "stacked", "stacked-bidirectional", "lstmp-torch", "medium-torch")
ONNX_REFERENCE_CASES = ("one-layer", "reverse", "bidirectional", "stacked", "stacked-bidirectional")
ORT_CASES = ("bidirectional", "stacked-bidirectional", "gate-clip", "coupled", "lengths", "coupled-stack")
TF_CASES = ("cell-clip",)
KERAS_CASES = ("mask-zero", "mask-previous")


def layer_data(name: str, dtype=np.float64) -> LayerCaseData:
    return make_layer_case_data(layer_case_by_name(name), dtype)


def rounded_to_float32(data: LayerCaseData) -> LayerCaseData:
    """The case's float32 data, back in float64: the problem a float32 framework is given, for the float64 spec."""
    d32 = make_layer_case_data(data.case, np.float32)
    as64 = {k: v.astype(np.float64) for k, v in {**d32.inputs(), **d32.cotangents()}.items()}
    return replace(d32, params=d32.params.astype(np.float64), **as64)


def compare(reference: dict[str, np.ndarray], data: LayerCaseData, *, atol, rtol, source, rows=None) -> None:
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
    case, config = data.case, data.config
    assert not (config.peephole or config.cell_clip or config.gate_clip or config.proj_clip or config.coupled_input_forget
                or data.mask is not None), f"{name}: nn.LSTM cannot run this case"
    L, D, H, P = case.L, case.D, case.H, case.P
    module = torch.nn.LSTM(case.I, H, num_layers=L, bidirectional=D == 2, proj_size=config.proj_size or 0, dtype=torch.float64)
    named = {}
    with torch.no_grad():
        for k, cell in enumerate(data.params.cells):
            suffix = f"_l{k // D}" + ("_reverse" if k % D else "")
            b = cell.b.copy()
            b[1] += config.forget_bias  # nn.LSTM has no forget bias: fold it into b_f
            tensors = {"weight_ih": cell.W.reshape(4 * H, -1), "weight_hh": cell.U.reshape(4 * H, P),
                       "bias_ih": b.reshape(4 * H) * 0.5, "bias_hh": b.reshape(4 * H) * 0.5}
            if config.proj_size:
                tensors["weight_hr"] = cell.W_hr
            for native, value in tensors.items():
                parameter = getattr(module, native + suffix)
                parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))
                named[(k, native)] = parameter
    x, h0, c0 = (torch.tensor(a, requires_grad=True) for a in (data.x, data.h0, data.c0))
    if data.lengths is not None:
        packed = pack_padded_sequence(x, torch.from_numpy(data.lengths), enforce_sorted=False)
        out, (h_n, c_n) = module(packed, (h0, c0))
        y, _ = pad_packed_sequence(out, total_length=case.T)
    else:
        y, (h_n, c_n) = module(x, (h0, c0))
    loss = (y * torch.from_numpy(data.dy)).sum() + (h_n * torch.from_numpy(data.dh_T)).sum() + (c_n * torch.from_numpy(data.dc_T)).sum()
    loss.backward()
    result = {"y": y.detach().numpy(), "h_T": h_n.detach().numpy(), "c_T": c_n.detach().numpy(),
              "grad x": x.grad.numpy(), "grad h0": h0.grad.numpy(), "grad c0": c0.grad.numpy()}
    for k, cell in enumerate(data.params.cells):
        prefix = f"grad {data.params.cell_name(k)}"
        result[f"{prefix} W"] = named[(k, "weight_ih")].grad.numpy().reshape(cell.W.shape)
        result[f"{prefix} U"] = named[(k, "weight_hh")].grad.numpy().reshape(cell.U.shape)
        result[f"{prefix} b"] = named[(k, "bias_ih")].grad.numpy().reshape(cell.b.shape)  # = bias_hh's
        if config.proj_size:
            result[f"{prefix} W_hr"] = named[(k, "weight_hr")].grad.numpy()
    return result


def check_against_torch(name: str) -> None:
    compare(torch_reference(name), layer_data(name), atol=TORCH_ATOL, rtol=TORCH_RTOL, source="torch.nn.LSTM (float64)")


@pytest.mark.parametrize("name", TORCH_CASES)
def test_layer_matches_torch(name):
    pytest.importorskip("torch", reason=TORCH_HINT)
    check_against_torch(name)


# ---------------------------------------------------------------------------
# The ONNX LSTM operator, stacked in a graph: onnx.reference (float64) and ONNX Runtime (float32).
# ---------------------------------------------------------------------------


def onnx_layer_model(data: LayerCaseData, dtype, *, attributes: bool):
    """One ONNX LSTM node per layer (direction attribute as the config), each layer's Y (T, D, B, H)
    transposed and reshaped to (T, B, D * H) for the next, the standard way to stack them.
    ``attributes`` passes clip, input_forget and sequence_lens (ONNX Runtime reads them)."""
    from onnx import TensorProto, helper

    case, config = data.case, data.config
    assert config.proj_size is None and config.cell_clip is None and data.mask is None, f"{case.name}: no ONNX LSTM for it"
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    L, D, H = case.L, case.D, case.H
    inputs, nodes, outputs = [], [], []
    info = lambda n, shape, e=elem: inputs.append(helper.make_tensor_value_info(n, e, shape))
    info("X0", [case.T, case.B, case.I])
    lengths = ""
    if attributes and data.lengths is not None:
        info("sequence_lens", [case.B], TensorProto.INT32)
        lengths = "sequence_lens"
    node_attributes = dict(hidden_size=H, direction=config.direction)
    if attributes and config.gate_clip is not None:
        node_attributes["clip"] = config.gate_clip
    if attributes and config.coupled_input_forget:
        node_attributes["input_forget"] = 1
    for l in range(L):
        width = case.I if l == 0 else D * H
        for tensor, shape in (("W", [D, 4 * H, width]), ("R", [D, 4 * H, H]), ("B", [D, 8 * H]),
                              ("initial_h", [D, case.B, H]), ("initial_c", [D, case.B, H])):
            info(f"{tensor}{l}", shape)
        node_inputs = [f"X{l}", f"W{l}", f"R{l}", f"B{l}", lengths, f"initial_h{l}", f"initial_c{l}"]
        if config.peephole:
            info(f"P{l}", [D, 3 * H])
            node_inputs.append(f"P{l}")
        nodes.append(helper.make_node("LSTM", node_inputs, [f"Y{l}", f"Y_h{l}", f"Y_c{l}"], **node_attributes))
        if l < L - 1:
            nodes.append(helper.make_node("Transpose", [f"Y{l}"], [f"Yt{l}"], perm=[0, 2, 1, 3]))
            shape_name = f"shape{l}"
            nodes.append(helper.make_node("Constant", [], [shape_name], value=helper.make_tensor(
                shape_name, TensorProto.INT64, [3], [case.T, case.B, D * H])))
            nodes.append(helper.make_node("Reshape", [f"Yt{l}", shape_name], [f"X{l + 1}"]))
        outputs += [helper.make_tensor_value_info(f"Y_h{l}", elem, None), helper.make_tensor_value_info(f"Y_c{l}", elem, None)]
    outputs.insert(0, helper.make_tensor_value_info(f"Y{L - 1}", elem, None))
    graph = helper.make_graph(nodes, "stacked_lstm", inputs, outputs)
    opsets = [helper.make_opsetid("", onnx_lstm.OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def onnx_feeds(data: LayerCaseData, dtype, *, lengths: bool) -> dict[str, np.ndarray]:
    case, D = data.case, data.case.D
    feeds = {"X0": data.x}
    for l in range(case.L):
        per_direction = [onnx_lstm.to_onnx(data.params.cell(l, d), data.config.forget_bias) for d in range(D)]
        for tensor in per_direction[0]:
            feeds[f"{tensor}{l}"] = np.concatenate([w[tensor] for w in per_direction])
        feeds[f"initial_h{l}"] = data.h0[l * D : (l + 1) * D]
        feeds[f"initial_c{l}"] = data.c0[l * D : (l + 1) * D]
    feeds = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in feeds.items()}
    if lengths and data.lengths is not None:
        feeds["sequence_lens"] = data.lengths.astype(np.int32)
    return feeds


def from_onnx_outputs(outputs, L: int) -> dict[str, np.ndarray]:
    Y, rest = outputs[0], outputs[1:]
    T, D, B, H = Y.shape
    return {
        "y": Y.transpose(0, 2, 1, 3).reshape(T, B, D * H),  # forward direction's units first
        "h_T": np.concatenate(rest[0::2]),  # layer-major: Y_h of layer 0 (D, B, H), then layer 1 ...
        "c_T": np.concatenate(rest[1::2]),
    }


@functools.cache
def onnx_reference_outputs(name: str) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    data = layer_data(name)
    assert data.lengths is None and not data.config.gate_clip and not data.config.coupled_input_forget, (
        f"{name}: onnx.reference ignores clip, input_forget and sequence_lens"
    )
    session = ReferenceEvaluator(onnx_layer_model(data, np.float64, attributes=False))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        return from_onnx_outputs(session.run(None, onnx_feeds(data, np.float64, lengths=False)), data.case.L)


def check_against_onnx_reference_layer(name: str) -> None:
    compare(onnx_reference_outputs(name), layer_data(name), atol=ONNX_REFERENCE_ATOL, rtol=ONNX_REFERENCE_RTOL,
            source="onnx.reference (float64)")


@pytest.mark.parametrize("name", ONNX_REFERENCE_CASES)
def test_layer_matches_onnx_reference(name):
    pytest.importorskip("onnx", reason="onnx.reference is the float64 reference for directions; pip install onnx")
    check_against_onnx_reference_layer(name)


@functools.cache
def onnxruntime_outputs(name: str) -> dict[str, np.ndarray]:
    import onnxruntime

    data = make_layer_case_data(layer_case_by_name(name), np.float32)
    model = onnx_layer_model(data, np.float32, attributes=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return from_onnx_outputs(session.run(None, onnx_feeds(data, np.float32, lengths=True)), data.case.L)


def ort_rows(data: LayerCaseData):
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
    onnxruntime = pytest.importorskip("onnxruntime", reason=ORT_HINT)
    data = make_layer_case_data(layer_case_by_name("coupled"), np.float32)
    session = onnxruntime.InferenceSession(onnx_layer_model(data, np.float32, attributes=True).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    base = session.run(None, onnx_feeds(data, np.float32, lengths=True))[0]
    H = data.case.H
    f_rows = slice(2 * H, 3 * H)  # ONNX's gate order i, o, f, c; peepholes i, o, f
    for tensor, index in (("W0", (0, f_rows)), ("R0", (0, f_rows)), ("B0", (0, f_rows)),
                          ("B0", (0, slice(6 * H, 7 * H))), ("P0", (0, slice(2 * H, 3 * H)))):
        feeds = onnx_feeds(data, np.float32, lengths=True)
        feeds[tensor] = feeds[tensor].copy()
        feeds[tensor][index] += 3.0
        assert np.array_equal(session.run(None, feeds)[0], base), f"ONNX Runtime uses {tensor}{index} under input_forget"
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

    data = make_layer_case_data(layer_case_by_name(name), np.float32)
    case, config = data.case, data.config
    assert case.L == 1 and config.direction == "forward" and config.proj_size is None and not config.gate_clip
    cell = data.params.cells[0]
    H = case.H
    b = cell.b.copy()
    b[1] += np.float32(config.forget_bias)  # V2 has no forget bias attribute; its gates are i, f, g, o
    w = np.concatenate([cell.W.transpose(2, 0, 1).reshape(case.I, 4 * H), cell.U.transpose(2, 0, 1).reshape(H, 4 * H)])
    p = cell.p if cell.p is not None else np.zeros((3, H), np.float32)
    out = tf.raw_ops.BlockLSTMV2(
        seq_len_max=tf.constant(case.T, tf.int64), x=data.x, cs_prev=data.c0[0], h_prev=data.h0[0], w=w,
        wci=p[0], wcf=p[1], wco=p[2], b=b.reshape(4 * H), cell_clip=config.cell_clip or 0.0,
        use_peephole=cell.p is not None,
    )
    cs, h = out[1].numpy(), out[6].numpy()
    return {"y": h, "h_T": h[-1:], "c_T": cs[-1:]}


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
    case, config = data.case, data.config
    assert case.L == 1 and config.proj_size is None and not config.peephole and not config.gate_clip and not config.cell_clip
    H = case.H
    ys, h_T, c_T = [], [], []
    for d in range(case.D):
        reverse = config.reversed(d)
        cell = data.params.cells[d]
        b = cell.b.copy()
        b[1] += config.forget_bias
        lstm = keras.layers.LSTM(H, return_sequences=True, return_state=True, go_backwards=reverse,
                                 zero_output_for_mask=config.zero_output_for_mask, dtype="float64")
        lstm.build((case.B, case.T, case.I))
        lstm.set_weights([cell.W.transpose(2, 0, 1).reshape(case.I, 4 * H), cell.U.transpose(2, 0, 1).reshape(H, 4 * H),
                          b.reshape(4 * H)])
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

    data32 = make_layer_case_data(layer_case_by_name("cell-clip"), np.float32)
    data = rounded_to_float32(layer_data("cell-clip"))
    case, cell = data32.case, data32.params.cells[0]
    order = [0, 2, 1, 3]  # V1's gates: i, g, f, o
    w = np.concatenate([cell.W[order].transpose(2, 0, 1).reshape(case.I, 4 * case.H),
                        cell.U[order].transpose(2, 0, 1).reshape(case.H, 4 * case.H)])
    x = tf.Variable(data32.x)
    with tf.GradientTape() as tape:
        out = tf.raw_ops.BlockLSTM(seq_len_max=tf.constant(case.T, tf.int64), x=x, cs_prev=data32.c0[0], h_prev=data32.h0[0],
                                   w=w, wci=cell.p[0], wcf=cell.p[1], wco=cell.p[2], b=cell.b[order].reshape(-1),
                                   forget_bias=data.config.forget_bias, cell_clip=data.config.cell_clip, use_peephole=True)
        loss = (tf.reduce_sum(out[6] * data32.dy) + tf.reduce_sum(out[6][-1] * data32.dh_T[0])
                + tf.reduce_sum(out[1][-1] * data32.dc_T[0]))
    tf_dx = tape.gradient(loss, x).numpy()
    _, spec_grads = run_layer(data)
    monkeypatch.setattr(lstm.Clip, "backward", lambda self, d: d)
    _, straight_through = run_layer(data)
    assert np.max(np.abs(tf_dx - spec_grads.x)) > 0.05, "BlockLSTM's gradient now zeroes the clipped cell state: unpin"
    assert_close("grad x", tf_dx, straight_through.x, atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL,
                 context="BlockLSTM's gradient vs the spec's with a straight-through cell clip")
