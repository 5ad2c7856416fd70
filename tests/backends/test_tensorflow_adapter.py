"""The TensorFlow adapters: layouts, explicit attributes, the V2 gradient bug, dtypes, caching."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
pytest.importorskip("tensorflow", reason="the TensorFlow adapters need tensorflow (pip install 'lstm-conformance[tensorflow]')")

from backends import tensorflow_lstm as tfl  # noqa: E402
from backends.base import Config, NotSupported, fold_forget_bias  # noqa: E402
from spec import lstm  # noqa: E402
from spec.cases import Case, make_case_data  # noqa: E402
from spec.params import LSTMParams  # noqa: E402
from spec.validation import LSTMInputError  # noqa: E402

BY_ID = {impl.id: impl for impl in tfl.IMPLEMENTATIONS}
V1 = BY_ID["tensorflow/BlockLSTM"]
V2_TAPE = BY_ID["tensorflow/BlockLSTMV2+registered-gradient"]
V2_GRAD = BY_ID["tensorflow/BlockLSTMV2+BlockLSTMGradV2"]
BLOCKS = (V1, V2_TAPE, V2_GRAD)
ROOT = Path(__file__).resolve().parents[2]

F32_OUT = dict(atol=2e-5, rtol=2e-5)  # conformance/tolerances.py, float32 outputs
F32_GRAD = dict(atol=2e-4, rtol=2e-4)  # float32 gradients


def data(peephole: bool, dtype="float32", forget_bias=0.0, seed=21, T=5, B=3, I=4, H=6, scale=1.0):
    return make_case_data(Case("unit", T, B, I, H, peephole=peephole, forget_bias=forget_bias, seed=seed, weight_scale=scale), dtype)


def spec_forward(d, forget_bias=0.0):
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    return lstm.forward(d.params.astype(np.float64), wide(d.x), wide(d.h0), wide(d.c0), forget_bias=forget_bias)


def spec_gradients(d, forget_bias=0.0):
    wide = lambda a: a.astype(np.float64)  # noqa: E731
    fwd = spec_forward(d, forget_bias)
    return lstm.backward(fwd, wide(d.dh_seq), wide(d.dh_T), wide(d.dc_T)).tensors()


def raw_block(d, native, version=1, **attrs):
    """The block op called by hand on native tensors (attributes given here, defaults otherwise)."""
    tf = tfl._tf()
    op = tf.raw_ops.BlockLSTM if version == 1 else tf.raw_ops.BlockLSTMV2
    out = op(
        seq_len_max=tf.constant(d.x.shape[0], tf.int64), x=d.x, cs_prev=d.c0, h_prev=d.h0,
        w=native["w"], wci=native["wci"], wcf=native["wcf"], wco=native["wco"], b=native["b"], **attrs,
    )
    return out[6].numpy(), out[1].numpy()  # h, cs


def assert_params_equal(a: LSTMParams, b: LSTMParams):
    assert (a.p is None) == (b.p is None)
    for name, tensor in a.tensors().items():
        np.testing.assert_array_equal(tensor, b.tensors()[name], err_msg=name)


# -- layouts --------------------------------------------------------------------


@pytest.mark.parametrize("impl", tfl.IMPLEMENTATIONS, ids=lambda i: i.id)
@pytest.mark.parametrize("peephole", [False, True], ids=["standard", "peephole"])
@pytest.mark.parametrize("forget_bias", [0.0, 1.5])
def test_round_trip_is_exact(impl, peephole, forget_bias):
    params = data(peephole).params
    back = impl.from_native(impl.to_native(params, forget_bias))
    expected = LSTMParams(params.W, params.U, fold_forget_bias(params.b, forget_bias), params.p)
    assert_params_equal(back, expected)


def test_v1_carries_the_forget_bias_as_an_attribute_and_from_native_folds_it():
    params = data(True).params
    native = V1.to_native(params, 1.5)
    assert native["forget_bias"] == 1.5 and native["cell_clip"] == -1.0 and native["use_peephole"] is True
    np.testing.assert_array_equal(native["b"], params.b[[0, 2, 1, 3]].reshape(-1))  # not folded, i,g,f,o
    native["forget_bias"] = 0.25
    np.testing.assert_array_equal(V1.from_native(native).b, fold_forget_bias(params.b, 0.25))
    # A dict without the attributes means the op's defaults: forget_bias 1.0 (folded) and cell_clip 3.0 (refused).
    no_clip = {k: v for k, v in native.items() if k != "forget_bias"}
    np.testing.assert_array_equal(V1.from_native(no_clip).b, fold_forget_bias(params.b, 1.0))
    with pytest.raises(NotSupported, match="cell_clip=3.0"):
        V1.from_native({k: v for k, v in native.items() if k != "cell_clip"})


def test_v2_folds_the_forget_bias_into_b_and_has_no_attribute_for_it():
    params = data(False).params
    native = V2_GRAD.to_native(params, 1.5)
    assert "forget_bias" not in native and native["cell_clip"] == 0.0 and native["use_peephole"] is False
    np.testing.assert_array_equal(native["b"], fold_forget_bias(params.b, 1.5).reshape(-1))  # i,f,g,o


def test_v1_columns_really_are_i_g_f_o():
    d = data(False)
    expected = spec_forward(d).h_seq
    native = V1.to_native(d.params)
    h, _ = raw_block(d, native, forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
    np.testing.assert_allclose(h, expected, **F32_OUT)
    # The same op fed the canonical i,f,g,o order (V2's layout) computes something else.
    canonical = V2_GRAD.to_native(d.params)
    h_wrong, _ = raw_block(d, canonical, forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
    assert np.abs(h_wrong - expected).max() > 0.05


# -- explicit attributes ---------------------------------------------------------


def saturated_cell_data():
    """Gates i and f near 1, g near 1, c0 = 2.5: the cell state grows past 3 within a step or two."""
    d = data(False, T=4, B=2, I=3, H=4, seed=22)
    b = d.params.b.copy()
    b[0] = b[1] = b[2] = 6.0
    params = LSTMParams(d.params.W * 0.1, d.params.U * 0.1, b)
    return d.__class__(d.case, params, d.x, d.h0, np.full_like(d.c0, 2.5), d.dh_seq, d.dh_T, d.dc_T)


@pytest.mark.parametrize("impl", BLOCKS, ids=lambda i: i.id)
def test_cell_state_beyond_3_is_not_clipped(impl):
    d = saturated_cell_data()
    expected = spec_forward(d)
    assert np.abs(expected.c_T).max() > 5.0
    out = impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=Config("standard", "float32"))
    np.testing.assert_allclose(out.c_T, expected.c_T, **F32_OUT)
    np.testing.assert_allclose(out.h_seq, expected.h_seq, **F32_OUT)


def test_the_op_defaults_would_clip_and_add_a_forget_bias():
    """Why the adapter passes both attributes: BlockLSTM's defaults (forget_bias 1, cell_clip 3) change the result."""
    d = saturated_cell_data()
    native = V1.to_native(d.params)
    _, cs = raw_block(d, native, use_peephole=False)  # defaults
    assert np.abs(cs).max() <= 3.0 + 1e-6
    d2 = data(False)
    h_default_bias, _ = raw_block(d2, V1.to_native(d2.params), cell_clip=-1.0, use_peephole=False)
    assert np.abs(h_default_bias - spec_forward(d2).h_seq).max() > 1e-2


@pytest.mark.parametrize("impl", BLOCKS, ids=lambda i: i.id)
@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_forget_bias_is_honoured(impl, forget_bias):
    d = data(True)
    out = impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=forget_bias, config=Config("peephole", "float32"))
    np.testing.assert_allclose(out.h_seq, spec_forward(d, forget_bias).h_seq, **F32_OUT)
    other = spec_forward(d, 1.0 - forget_bias).h_seq
    assert np.abs(out.h_seq - other).max() > 1e-2


# -- gradients ------------------------------------------------------------------


def _grads(impl, d, forget_bias=0.0):
    return impl.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=forget_bias, config=Config(d.case.variant, "float32"))


@pytest.mark.parametrize("peephole", [False, True], ids=["standard", "peephole"])
def test_registered_v2_gradient_is_wrong_and_block_lstm_grad_v2_is_right(peephole):
    """TensorFlow 2.21 registers V1's gradient (gates i,g,f,o) for BlockLSTMV2 (i,f,g,o): the upstream bug."""
    d = data(peephole)
    expected = spec_gradients(d, 0.5)
    right = _grads(V2_GRAD, d, 0.5)
    wrong = _grads(V2_TAPE, d, 0.5)
    v1 = _grads(V1, d, 0.5)
    for name, e in expected.items():
        np.testing.assert_allclose(right[name], e, err_msg=f"BlockLSTMGradV2 {name}", **F32_GRAD)
        np.testing.assert_allclose(v1[name], e, err_msg=f"BlockLSTM tape {name}", **F32_GRAD)
    for name in ("x", "W", "U", "b"):
        assert np.abs(wrong[name] - expected[name]).max() > 0.1 * np.abs(expected[name]).max(), name


def test_registered_v2_weight_gradients_have_f_and_g_swapped_for_one_step():
    """With T=1 (no recurrence) the registered gradient's weight blocks are the right ones in V1's order."""
    d = data(False, T=1)
    expected = spec_gradients(d)
    wrong = _grads(V2_TAPE, d)
    for name in ("W", "U", "b"):
        np.testing.assert_allclose(wrong[name][[0, 2, 1, 3]], expected[name], err_msg=name, **F32_GRAD)


# -- dtypes ---------------------------------------------------------------------


def test_block_ops_refuse_float64():
    for impl in BLOCKS:
        with pytest.raises(NotSupported, match="float32 and half only"):
            impl.check(Config("standard", "float64"))


def test_inputs_in_another_dtype_are_refused_not_cast():
    d = data(False)
    with pytest.raises(LSTMInputError, match="x: wrong dtype"):
        V1.forward(d.params, d.x.astype(np.float64), d.h0, d.c0, forget_bias=0.0, config=Config("standard", "float32"))
    with pytest.raises(LSTMInputError, match="params"):
        V1.forward(d.params.astype(np.float64), d.x, d.h0, d.c0, forget_bias=0.0, config=Config("standard", "float32"))


# -- caching, availability, environment -------------------------------------------


def test_repeated_calls_do_not_retrace_and_reuse_converted_weights():
    d = data(True)
    config = Config("peephole", "float32")
    no_clip = tfl.NO_CLIP[2]
    functions = (tfl._block_forward_fn(2, True, 0.0, no_clip, "/CPU:0"), tfl._block_v2_explicit_gradient_fn(True, no_clip, "/CPU:0"))
    V2_GRAD.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=config)
    _grads(V2_GRAD, d)
    traced = [f.experimental_get_tracing_count() for f in functions]
    for _ in range(3):
        V2_GRAD.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=config)
        _grads(V2_GRAD, d)
    assert [f.experimental_get_tracing_count() for f in functions] == traced
    _, first, _ = V2_GRAD._prepare(d.params, 0.0, config)
    _, again, _ = V2_GRAD._prepare(d.params, 0.0, config)
    assert first is again


def test_cuda_is_unavailable_with_a_reason_when_tensorflow_sees_no_gpu():
    tf = tfl._tf()
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    for impl in tfl.IMPLEMENTATIONS:
        reason = impl.availability("cuda")
        assert reason and ("CUDA" in reason or "GPU" in reason)
        assert impl.availability("cpu") is None


def test_environment_records_tf32_threads_and_versions():
    env = V1.environment("cpu")
    assert env["tf32"] is False
    for key in ("tensorflow", "device", "intra_op_threads", "inter_op_threads", "built_with_cuda"):
        assert key in env


def test_module_imports_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import backends.tensorflow_lstm as m\n"
        "print(m.IMPLEMENTATIONS[0].availability()); print(m.IMPLEMENTATIONS[1].availability('cuda'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [tfl.INSTALL_HINT] * 2


# -- the block ops' layer: one forward cell, cell_clip -------------------------------------------------


def layer_data(name, dtype="float32"):
    from spec.layer_cases import layer_case_by_name, make_layer_case_data

    return make_layer_case_data(layer_case_by_name(name), dtype)


def test_shared_gate_columns_round_trip_and_land_where_the_gate_order_says():
    blocks = np.arange(1.0, 5.0)[:, None, None] * np.ones((4, 3, 5))  # gates i, f, g, o = 1, 2, 3, 4
    for gates, firsts in ((tfl.V1_GATES, [1, 3, 2, 4]), (tfl.V2_GATES, [1, 2, 3, 4])):
        columns = tfl.to_gate_columns(blocks, gates)
        assert columns.shape == (5, 12)
        np.testing.assert_array_equal(columns[0, ::3], firsts)
        np.testing.assert_array_equal(tfl.from_gate_columns(columns, gates), blocks)


@pytest.mark.parametrize("impl", BLOCKS, ids=lambda i: i.id)
@pytest.mark.parametrize("name", ["one-layer", "cell-clip"])
def test_layer_round_trip_is_exact_and_carries_the_cell_clip(impl, name):
    d = layer_data(name)
    native = impl.to_native_layer(d.params, d.config)
    assert native["cell_clip"] == (d.config.cell_clip or tfl.NO_CLIP[impl.version])
    assert native["use_peephole"] is d.config.peephole
    back = impl.from_native_layer(native, d.config)
    cell = d.params.cells[0]
    assert len(back.cells) == 1
    assert_params_equal(back.cells[0], LSTMParams(cell.W, cell.U, fold_forget_bias(cell.b, d.config.forget_bias), cell.p))


def test_from_native_layer_refuses_a_cell_clip_the_layer_does_not_have():
    d = layer_data("cell-clip")
    native = V1.to_native_layer(d.params, d.config)
    with pytest.raises(LSTMInputError, match="cell_clip: disagrees with the layer's cell_clip: expected 0.5, got 0.8"):
        V1.from_native_layer(native, replace(d.config, cell_clip=0.5))
    with pytest.raises(NotSupported, match="cell_clip=0.8 clips the cell state"):
        V1.from_native_layer(native, replace(d.config, cell_clip=None))


@pytest.mark.parametrize(("name", "reason"), [
    ("stacked", "one layer"), ("reverse", "forward in time only"), ("bidirectional", "forward in time only"),
    ("projection", "no projection"), ("gate-clip", "not the gate pre-activations"), ("coupled", "no coupled"),
])
def test_layer_layout_refuses_what_the_op_cannot_express(name, reason):
    d = layer_data(name)
    for impl in BLOCKS:
        with pytest.raises(NotSupported, match=reason):
            impl.to_native_layer(d.params, d.config)


def test_layer_declarations_and_known_failures():
    from backends.config import LAYER_FEATURES

    for impl in BLOCKS:
        assert impl.layer_features == ("cell_clip",)
        for feature in set(LAYER_FEATURES) - {"cell_clip"}:
            assert feature in impl.unsupported_reasons, feature
        assert "seq_len_max" in impl.unsupported_reasons["lengths"]
    run = Config("peephole", "float32")
    for impl in (V1, V2_GRAD):  # the clip's gradient: known with a cell clip only
        assert impl.known_failure("layer gradients", run, ("cell_clip",)) == tfl.CELL_CLIP_GRADIENT
        assert impl.known_failure("layer gradients", run, ()) is None
        assert impl.known_failure("layer outputs", run, ("cell_clip",)) is None
    assert V2_TAPE.known_failure("layer gradients", run, ()) == tfl.REGISTERED_V2_GRADIENT


@pytest.mark.parametrize("impl", (V1, V2_GRAD), ids=lambda i: i.id)
def test_layer_gradient_with_a_binding_cell_clip_is_the_straight_through_one(impl, monkeypatch):
    """What the known failure says, pinned: the clip binds, the forward is the spec's, and the gradients are the
    spec's with the clip's derivative taken as 1 (findings/tensorflow_blocklstm_gradient_ignores_cell_clip.py)."""
    from spec import layer as spec_layer

    d = layer_data("cell-clip")
    wide = {k: v.astype(np.float64) for k, v in (*d.inputs().items(), *d.cotangents().items())}
    params = d.params.astype(np.float64)
    options = dict(layer=d.config, config=Config("peephole", "float32"))
    out = impl.forward_layer(d.params, d.x, d.h0, d.c0, **options)
    grads = impl.backward_layer(d.params, d.x, d.h0, d.c0, d.cotangents(), **options)
    fwd = spec_layer.forward(params, wide["x"], wide["h0"], wide["c0"], config=d.config)
    unclipped = spec_layer.forward(params, wide["x"], wide["h0"], wide["c0"], config=replace(d.config, cell_clip=None))
    assert np.abs(fwd.y - unclipped.y).max() > 0.05  # the clip binds
    np.testing.assert_allclose(out.y, fwd.y, **F32_OUT)
    true = spec_layer.backward(fwd, wide["dy"], wide["dh_T"], wide["dc_T"]).tensors()
    monkeypatch.setattr(lstm.Clip, "backward", lambda self, dv: dv)
    straight = spec_layer.backward(spec_layer.forward(params, wide["x"], wide["h0"], wide["c0"], config=d.config),
                                   wide["dy"], wide["dh_T"], wide["dc_T"]).tensors()
    assert np.abs(grads["x"] - true["x"]).max() > 0.05
    for name, value in straight.items():
        np.testing.assert_allclose(grads[name], value, err_msg=name, **F32_GRAD)


@pytest.mark.parametrize("impl", (V1, V2_GRAD), ids=lambda i: i.id)
def test_layer_without_a_clip_is_the_spec_outputs_and_gradients(impl):
    from spec import layer as spec_layer

    d = layer_data("one-layer")
    wide = {k: v.astype(np.float64) for k, v in (*d.inputs().items(), *d.cotangents().items())}
    options = dict(layer=d.config, config=Config("standard", "float32"))
    out = impl.forward_layer(d.params, d.x, d.h0, d.c0, **options)
    grads = impl.backward_layer(d.params, d.x, d.h0, d.c0, d.cotangents(), **options)
    fwd = spec_layer.forward(d.params.astype(np.float64), wide["x"], wide["h0"], wide["c0"], config=d.config)
    for name in ("y", "h_T", "c_T"):
        np.testing.assert_allclose(out.tensors()[name], getattr(fwd, name), err_msg=name, **F32_OUT)
    for name, value in spec_layer.backward(fwd, wide["dy"], wide["dh_T"], wide["dc_T"]).tensors().items():
        np.testing.assert_allclose(grads[name], value, err_msg=name, **F32_GRAD)


@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "forward+backward"])
def test_timed_layer_pass_is_resident_and_computes_what_the_layer_does(gradients):
    from backends.timing import Timing

    d = layer_data("cell-clip")
    timing = Timing(variant="peephole", dtype="float32", device="cpu", gradients=gradients)
    timed = V1.timed_layer_pass(d.params, d.x, d.h0, d.c0, d.cotangents(), layer=d.config, timing=timing)
    assert timed.resident
    timed.run()
    got = timed.result()
    options = dict(layer=d.config, config=Config("peephole", "float32"))
    if gradients:
        expected = V1.backward_layer(d.params, d.x, d.h0, d.c0, d.cotangents(), **options)
        assert set(got) == {"x", "h0", "c0"}
    else:
        expected = V1.forward_layer(d.params, d.x, d.h0, d.c0, **options).tensors()
        assert set(got) == {"y"}
    for name, value in got.items():
        np.testing.assert_array_equal(value, expected[name].astype(np.float64), err_msg=name)
