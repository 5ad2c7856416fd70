"""TensorFlow's block LSTM rows (backends/rows/tensorflow.py), what the conformance suite cannot see of them: the
layouts of BlockLSTM and BlockLSTMV2 (backends/layouts/tf_block.py) with their attributes written out, against the
ops themselves; the mechanism of each known failure (the gradient TensorFlow registers for V2, the gradient kernels'
missing cell_clip); one trace per shape; availability without TensorFlow; TF32 and the thread pools recorded; the
timed pass.

Whether each row's outputs and gradients agree with the spec is the suite's: ``pytest conformance/ -k tensorflow/``.
The layout tests need NumPy only; the rest skip, with the install hint, where TensorFlow is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import tf_block as layouts
from backends.rows import tensorflow as tf_rows
from backends.runtimes.tensorflow import (
    INSTALL_HINT,
    TENSORFLOW,
    tensorflow,
    tensorflow_problem,
)
from contract.answers import Cotangents
from contract.errors import NotSupported, Unavailable
from contract.layout import fold_forget_bias
from contract.timing import Timing
from contract.tolerances import tolerance
from contract.vocabulary import ARCHITECTURE, Device, Dtype, Feature
from spec import layer as spec_layer
from spec import lstm
from spec.cases import Case, case_by_name, make_case_data, reference, widened
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.precision import Policy
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[2]
#: Why TensorFlow cannot be used here (its install hint where it is missing), or None. Asking imports it (quietly).
TF_PROBLEM = tensorflow_problem()
needs_tensorflow = pytest.mark.skipif(TF_PROBLEM is not None, reason=str(TF_PROBLEM))

BY_ID = {row.id: row for row in tf_rows.ROWS}
V1 = BY_ID["tensorflow/BlockLSTM"]
V2_TAPE = BY_ID["tensorflow/BlockLSTMV2+registered-gradient"]
V2_GRAD = BY_ID["tensorflow/BlockLSTMV2+BlockLSTMGradV2"]
LAYOUTS = (layouts.BLOCK_V1, layouts.BLOCK_V2)

#: The suite's float32 tolerances (contract/tolerances.py), as assert_allclose's arguments.
F32_OUT, F32_GRAD = ({"atol": t.atol, "rtol": t.rtol} for t in (tolerance("float32", kind) for kind in ("outputs", "gradients")))


def data(dtype="float32", *, T=5, B=3, I=4, H=6, seed=21, **layer):
    return make_case_data(Case("unit", T, B, I, H, LayerConfig(**layer), seed=seed), dtype)


def cotangents(d) -> Cotangents:
    return Cotangents(d.dy, d.dh_T, d.dc_T)


def forward(row, d):
    return row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)


def backward(row, d):
    return row.backward(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer)


def one_cell(cell: LSTMParams) -> LayerParams:
    return LayerParams((cell,))


def assert_cells_equal(got: LSTMParams, want: LSTMParams):
    assert (got.p is None) == (want.p is None)
    for name, tensor in want.tensors().items():
        np.testing.assert_array_equal(got.tensors()[name], tensor, err_msg=name)


def raw_block(d, native, version=1, **attributes):
    """The block op called by hand on the layout's w, b and peepholes (only the attributes given here; the op's
    defaults otherwise): h and cs for every step."""
    tf = tensorflow()
    op = tf.raw_ops.BlockLSTM if version == 1 else tf.raw_ops.BlockLSTMV2
    out = op(seq_len_max=tf.constant(d.x.shape[0], tf.int64), x=d.x, cs_prev=d.c0[0], h_prev=d.h0[0],
             **{name: native[name] for name in layouts.WEIGHTS}, **attributes)
    return out[6].numpy(), out[1].numpy()


# -- layouts (NumPy only) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"V{layout.version}")
@pytest.mark.parametrize("peephole", [False, True], ids=["standard", "peephole"])
@pytest.mark.parametrize("forget_bias", [0.0, 1.5])
def test_layout_round_trip_is_exact(layout, peephole, forget_bias):
    d = data(peephole=peephole, forget_bias=forget_bias)
    back = layout.from_native(layout.to_native(d.params, d.layer), d.layer)
    cell = d.params.cells[0]
    assert len(back.cells) == 1
    assert_cells_equal(back.cells[0], LSTMParams(cell.W, cell.U, fold_forget_bias(cell.b, forget_bias), cell.p))


def test_shared_gate_columns_round_trip_and_land_where_the_gate_order_says():
    blocks = np.arange(1.0, 5.0)[:, None, None] * np.ones((4, 3, 5))  # gates i, f, g, o = 1, 2, 3, 4
    for gates, firsts in ((layouts.V1_GATES, [1, 3, 2, 4]), (layouts.V2_GATES, [1, 2, 3, 4])):
        columns = layouts.to_gate_columns(blocks, gates)
        assert columns.shape == (5, 12)
        np.testing.assert_array_equal(columns[0, ::3], firsts)
        np.testing.assert_array_equal(layouts.from_gate_columns(columns, gates), blocks)


def test_v1_carries_the_forget_bias_as_an_attribute_and_reads_missing_ones_as_the_ops_defaults():
    d = data(peephole=True, forget_bias=1.5)
    cell = d.params.cells[0]
    native = layouts.BLOCK_V1.to_native(d.params, d.layer)
    assert (native["forget_bias"], native["cell_clip"], native["use_peephole"]) == (1.5, -1.0, True)
    np.testing.assert_array_equal(native["b"], cell.b[[0, 2, 1, 3]].reshape(-1))  # not folded; i, g, f, o
    native["forget_bias"] = 0.25
    np.testing.assert_array_equal(layouts.BLOCK_V1.from_native(native, d.layer).cells[0].b, fold_forget_bias(cell.b, 0.25))
    # A dict without the attributes means the op's defaults: forget_bias 1.0 (folded) and cell_clip 3.0 (refused).
    without = {k: v for k, v in native.items() if k != "forget_bias"}
    np.testing.assert_array_equal(layouts.BLOCK_V1.from_native(without, d.layer).cells[0].b, fold_forget_bias(cell.b, 1.0))
    with pytest.raises(NotSupported, match="cell_clip=3.0 clips the cell state"):
        layouts.BLOCK_V1.from_native({k: v for k, v in native.items() if k != "cell_clip"}, d.layer)


def test_v2_folds_the_forget_bias_into_b_and_has_no_attribute_for_it():
    d = data(forget_bias=1.5)
    native = layouts.BLOCK_V2.to_native(d.params, d.layer)
    assert "forget_bias" not in native and (native["cell_clip"], native["use_peephole"]) == (0.0, False)
    np.testing.assert_array_equal(native["b"], fold_forget_bias(d.params.cells[0].b, 1.5).reshape(-1))  # i, f, g, o
    assert not any(native[name].any() for name in layouts.PEEPHOLES)  # zeros, switched off by use_peephole


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"V{layout.version}")
def test_the_layer_cell_clip_is_the_ops_and_a_clip_the_layer_lacks_is_refused(layout):
    d = make_case_data(case_by_name("cell-clip"), "float32")
    native = layout.to_native(d.params, d.layer)
    assert native["cell_clip"] == 0.8 and native["use_peephole"] is True
    assert_cells_equal(layout.from_native(native, d.layer).cells[0], d.params.cells[0])
    with pytest.raises(LSTMInputError, match="cell_clip: disagrees with the layer's cell_clip: expected 0.5, got 0.8"):
        layout.from_native(native, replace(d.layer, cell_clip=0.5))
    with pytest.raises(NotSupported, match="cell_clip=0.8 clips the cell state"):
        layout.from_native(native, replace(d.layer, cell_clip=None))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"V{layout.version}")
def test_layout_gradients_carry_no_forget_bias_and_no_clip(layout):
    """The transpose only moves entries: the gradients of w and b read back with no forget bias folded in (not the
    layer's, nor V1's default 1.0) and whatever the layer's cell clip."""
    d = data(peephole=True)
    grads = {name: layout.to_native(d.params, d.layer)[name] for name in layouts.WEIGHTS}  # no forget bias, no clip
    for layer in (replace(d.layer, forget_bias=1.5), replace(d.layer, cell_clip=0.8)):
        assert_cells_equal(layout.gradient(grads, d.params, layer).cells[0], d.params.cells[0])
    plain = data()
    grads = {name: layout.to_native(plain.params, plain.layer)[name] for name in layouts.WEIGHTS}
    assert layout.gradient(grads, plain.params, plain.layer).cells[0].p is None  # no peepholes, no gradient for them


FEATURE_LAYERS = {
    Feature.STACKED: dict(num_layers=2), Feature.REVERSE: dict(direction="reverse"),
    Feature.BIDIRECTIONAL: dict(direction="bidirectional"), Feature.PROJECTION: dict(proj_size=2),
    Feature.PROJ_CLIP: dict(proj_size=2, proj_clip=0.5), Feature.GATE_CLIP: dict(gate_clip=1.0),
    Feature.COUPLED: dict(coupled_input_forget=True), Feature.LAYER_NORM: dict(layer_norm=True),
    Feature.PROJ_BIAS: dict(proj_size=2, proj_bias=True),
}


@pytest.mark.parametrize("feature", sorted(ARCHITECTURE - layouts.BLOCK_V1.holds), ids=str)
def test_the_layouts_refuse_what_the_op_cannot_express_with_its_own_words(feature):
    assert layouts.BLOCK_V1.holds == layouts.BLOCK_V2.holds == {Feature.PEEPHOLE, Feature.CELL_CLIP}
    d = data(**FEATURE_LAYERS[feature])
    expected = layouts.REASONS[Feature.PROJECTION if feature in (Feature.PROJ_CLIP, Feature.PROJ_BIAS) else feature]
    for layout in LAYOUTS:
        with pytest.raises(NotSupported) as refused:
            layout.to_native(d.params, d.layer)
        assert str(refused.value) == expected


def test_declarations():
    assert [row.layout for row in tf_rows.ROWS] == [layouts.BLOCK_V1, layouts.BLOCK_V2, layouts.BLOCK_V2]
    for row in tf_rows.ROWS:
        assert row.runtime is TENSORFLOW and row.features == {Feature.PEEPHOLE, Feature.CELL_CLIP}, row.id
        assert row.dtypes == (Dtype.FLOAT32, Dtype.FLOAT16) and row.devices == (Device.CPU, Device.CUDA) and not row.half_timing
        assert row.policy("float16") is Policy.EVERY_OPERATION and set(tf_rows.FLOAT16_CPU) <= set(row.known_failures), row.id
        assert row.refusal(dtype="bfloat16", device="cpu", layer=LayerConfig()) == tf_rows.NO_BFLOAT16
        assert row.reasons[Feature.LENGTHS].startswith("BlockLSTM's only length is seq_len_max"), row.id
        assert row.refusal(dtype="float64", device="cpu", layer=LayerConfig()) == tf_rows.FLOAT32_ONLY


# -- the ops themselves: why every attribute is written out ------------------------------------------------------


@needs_tensorflow
def test_v1_columns_really_are_i_g_f_o():
    d = data()
    expected = reference(d).outputs["y"]
    native = layouts.BLOCK_V1.to_native(d.params, d.layer)
    h, _ = raw_block(d, native, forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
    np.testing.assert_allclose(h, expected, **F32_OUT)
    # The same op fed the canonical i, f, g, o order (V2's layout) computes something else.
    h_wrong, _ = raw_block(d, layouts.BLOCK_V2.to_native(d.params, d.layer), forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
    assert np.abs(h_wrong - expected).max() > 0.05


def saturated():
    """Gates i and f near 1, g near 1, c0 = 2.5: the cell state grows past 3 within a step or two (no case of the
    suite's table does: its largest |c| is about 1, so a row that let the op clip at its default 3 would pass it)."""
    d = data(T=4, B=2, I=3, H=4, seed=22)
    cell = d.params.cells[0]
    b = cell.b.copy()
    b[0] = b[1] = b[2] = 6.0
    return replace(d, params=one_cell(LSTMParams(cell.W * np.float32(0.1), cell.U * np.float32(0.1), b)),
                   c0=np.full_like(d.c0, 2.5))


@needs_tensorflow
def test_the_op_defaults_would_clip_and_add_a_forget_bias():
    """Why the layout writes both attributes out: BlockLSTM's defaults (forget_bias 1, cell_clip 3) change the result."""
    d = saturated()
    _, cs = raw_block(d, layouts.BLOCK_V1.to_native(d.params, d.layer), use_peephole=False)  # the defaults
    assert np.abs(cs).max() <= 3.0 + 1e-6 and np.abs(reference(d).outputs["c_T"]).max() > 5.0
    plain = data()
    h, _ = raw_block(plain, layouts.BLOCK_V1.to_native(plain.params, plain.layer), cell_clip=-1.0, use_peephole=False)
    assert np.abs(h - reference(plain).outputs["y"]).max() > 1e-2


@needs_tensorflow
@pytest.mark.parametrize("row", tf_rows.ROWS, ids=lambda r: r.id)
def test_a_cell_state_beyond_3_is_not_clipped(row):
    d = saturated()
    out, want = forward(row, d), reference(d).outputs
    for name in ("y", "c_T"):
        np.testing.assert_allclose(out.tensors()[name], want[name], err_msg=name, **F32_OUT)


# -- the known failures, where they come from ------------------------------------------------------------------


@needs_tensorflow
def test_the_registered_v2_gradient_is_v1s_with_f_and_g_swapped():
    """With one step (no recurrence) the weight gradients TensorFlow registers for BlockLSTMV2 are the right ones in
    V1's gate order i, g, f, o: the registered function calls V1's gradient kernel (the known failure's cause)."""
    d = data(T=1)
    wrong, right = backward(V2_TAPE, d).params.cells[0], reference(d).gradients
    for name in ("W", "U", "b"):
        want = right[f"layer 0 direction 0 {name}"]
        np.testing.assert_allclose(getattr(wrong, name)[[0, 2, 1, 3]], want, err_msg=name, **F32_GRAD)
        assert np.abs(getattr(wrong, name) - want).max() > 0.05, name


@needs_tensorflow
@pytest.mark.parametrize("row", (V1, V2_GRAD), ids=lambda r: r.id)
def test_with_a_binding_cell_clip_the_gradients_are_the_straight_through_ones(row, monkeypatch):
    """What the known failure says, pinned: the clip binds, the forward is the spec's, and the gradients are the
    spec's with the clip's derivative taken as 1 (findings/tensorflow_blocklstm_gradient_ignores_cell_clip.py)."""
    d = make_case_data(case_by_name("cell-clip"), "float32")
    wide = widened(d)
    clipped = reference(d)
    unclipped = wide.forward(config=replace(d.layer, cell_clip=None))
    assert np.abs(clipped.outputs["y"] - unclipped.y).max() > 0.05  # the clip binds
    np.testing.assert_allclose(forward(row, d).y, clipped.outputs["y"], **F32_OUT)
    grads = backward(row, d).tensors()
    monkeypatch.setattr(lstm.Clip, "backward", lambda self, d: d)
    straight = spec_layer.backward(wide.forward(), wide.dy, wide.dh_T, wide.dc_T).tensors()
    assert np.abs(grads["x"] - clipped.gradients["x"]).max() > 0.05
    for name, value in straight.items():
        np.testing.assert_allclose(grads[name], value, err_msg=name, **F32_GRAD)


# -- one trace per shape, one conversion per parameter values ------------------------------------------------------


@needs_tensorflow
@pytest.mark.parametrize("make", [lambda: tf_rows.BlockLSTM(),
                                  lambda: tf_rows.BlockLSTMGradV2(layout=layouts.BLOCK_V2)], ids=["tape", "BlockLSTMGradV2"])
def test_repeated_calls_trace_nothing_and_convert_the_parameters_once(make, monkeypatch):
    """The op runs in a tf.function made once per row and layer: after the first forward and backward of a shape, more
    calls (other parameter values included: the weights are arguments, not constants) trace nothing; a new shape
    traces again. Equal parameters are converted once. (Python runs only while TensorFlow traces: the spy counts.)"""
    row = make()
    traced, built = [], []
    arguments, build = tf_rows.block_arguments, row.build
    monkeypatch.setattr(tf_rows, "block_arguments", lambda *a: traced.append(1) or arguments(*a))
    monkeypatch.setattr(row, "build", lambda native, **kw: built.append(1) or build(native, **kw))
    d, other = data(peephole=True), data(peephole=True, seed=5)

    def rounds(d, n):
        for _ in range(n):
            copy = d.params.with_tensors({k: v.copy() for k, v in d.params.tensors().items()})
            row.forward(copy, d.x, d.h0, d.c0, layer=d.layer)
            row.backward(copy, d.x, d.h0, d.c0, cotangents(d), layer=d.layer)

    rounds(d, 1)
    first = len(traced)
    assert first >= 2 and len(built) == 1  # the forward's trace and the gradient's
    rounds(d, 3)
    rounds(other, 2)
    assert len(traced) == first and len(built) == 2
    rounds(data(peephole=True, T=7), 1)
    assert len(traced) > first


# -- availability, environment ------------------------------------------------------------------------------------


def test_the_rows_import_and_say_why_without_tensorflow():
    code = (
        "import json, sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from backends.rows.tensorflow import ROWS\n"
        "print(json.dumps([[r.availability('cpu'), r.availability('cuda'), r.environment('cpu')] for r in ROWS]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [[INSTALL_HINT, INSTALL_HINT, {"unavailable": INSTALL_HINT}]] * 3


@needs_tensorflow
def test_cuda_is_unavailable_with_a_reason_when_tensorflow_sees_no_gpu():
    tf = tensorflow()
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: there is no reason to report")
    expected = ("this TensorFlow build has no CUDA (tensorflow-cpu); GPU runs need tensorflow[and-cuda] on a machine with "
                "a GPU" if not tf.test.is_built_with_cuda()
                else "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    d = data()
    for row in tf_rows.ROWS:
        assert row.availability("cuda") == expected and row.availability("cpu") is None
        with pytest.raises(Unavailable, match="GPU"):
            row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, device="cuda")


@needs_tensorflow
def test_environment_records_tf32_off_the_thread_pools_and_versions():
    tf = tensorflow()
    env = V1.environment("cpu")
    assert env["tf32"] is False and env["tensorflow"] == tf.__version__ and env["device"].startswith("CPU:0 ")
    assert env["intra_op_threads"] == tf.config.threading.get_intra_op_parallelism_threads()
    assert env["inter_op_threads"] == tf.config.threading.get_inter_op_parallelism_threads()
    assert env["built_with_cuda"] == tf.test.is_built_with_cuda()


# -- the timed pass --------------------------------------------------------------------------------------------------


@needs_tensorflow
@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("row", tf_rows.ROWS, ids=lambda r: r.id)
def test_the_timed_pass_is_resident_and_computes_what_the_row_does(row, gradients):
    """The benchmarks' pass runs the same tf.functions on tensors uploaded once: exactly forward()'s y, or
    backward()'s x, h0, c0 (BlockLSTMGradV2 through its own gradient call); bfloat16 is refused, with why."""
    d = make_case_data(case_by_name("cell-clip"), "float32")
    timing = Timing(Dtype.FLOAT32, Device.CPU, gradients)
    timed = row.timed_pass(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer, timing=timing)
    assert timed.resident
    timed.run()
    got = timed.result()
    answer = backward(row, d).tensors() if gradients else forward(row, d).tensors()
    assert set(got) == ({"x", "h0", "c0"} if gradients else {"y"})
    for name, value in got.items():
        np.testing.assert_array_equal(value, answer[name].astype(np.float64), err_msg=name)
    with pytest.raises(NotSupported, match="have no bfloat16 kernel"):
        row.timed_pass(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer, timing=Timing("bfloat16", Device.CPU, gradients))
    assert row.timed_pass(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer,
                          timing=Timing("float16", Device.CPU, gradients)).resident
