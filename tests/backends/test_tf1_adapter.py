"""The TF1 rows (backends/tf1_lstm.py): layouts and their round trips, the gate-order canary, declarations,
availability and environment that never raise, and each row through the contract in its own process.

The layout tests need only NumPy. What runs TF1's cells needs tensorflow and tf-keras (with TF_USE_LEGACY_KERAS=1,
in a subprocess) and is skipped, with the hint, without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import tf1_lstm
from backends.base import Config, NotSupported, fold_forget_bias
from backends.config import LAYER_FEATURES
from backends.tensorflow_lstm import INSTALL_HINT as TF_INSTALL_HINT
from spec import layer as spec_layer
from spec.layer_cases import layer_case_by_name, make_layer_case_data
from spec.params import LayerParams, LSTMParams
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {row.id: row for row in tf1_lstm.IMPLEMENTATIONS}
STATIC = BY_ID["tensorflow-tf1/BasicLSTMCell+static_rnn"]
BASIC_DYNAMIC = BY_ID["tensorflow-tf1/BasicLSTMCell+dynamic_rnn"]
LSTMCELL = BY_ID["tensorflow-tf1/LSTMCell+dynamic_rnn"]
BASIC = (STATIC, BASIC_DYNAMIC)
#: Layer cases each row's API expresses, every feature it declares among them.
CASES = {STATIC.id: ("one-layer", "stacked", "stacked-bidirectional", "lengths"),
         BASIC_DYNAMIC.id: ("one-layer", "stacked", "stacked-bidirectional", "lengths"),
         LSTMCELL.id: ("bidirectional", "stacked", "projection", "proj-clip", "cell-clip", "lengths", "lstmp-stack", "medium")}
#: Why TF1's cells cannot run here (None: they can): TensorFlow's absence first, as the rows say it.
TF1_MISSING = next((hint for module, hint in (("tensorflow", TF_INSTALL_HINT), ("tf_keras", tf1_lstm.TF_KERAS_HINT))
                    if importlib.util.find_spec(module) is None), None)
TF1_READY = TF1_MISSING is None
needs_tf1 = pytest.mark.skipif(not TF1_READY, reason=str(TF1_MISSING))


def folded(params: LayerParams, forget_bias: float) -> LayerParams:
    return LayerParams(tuple(LSTMParams(c.W, c.U, fold_forget_bias(c.b, forget_bias), c.p, c.W_hr) for c in params.cells),
                       params.num_directions)


def assert_layer_params_equal(a: LayerParams, b: LayerParams):
    assert a.num_directions == b.num_directions and list(a.tensors()) == list(b.tensors())
    for name, tensor in a.tensors().items():
        np.testing.assert_array_equal(tensor, b.tensors()[name], err_msg=name)


def run_with_legacy_keras(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -c code`` from the checkout with TF_USE_LEGACY_KERAS=1 (so the rows' hooks run in that process)."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- layouts: exact round trips, names, the forget bias ---------------------------------------------


@pytest.mark.parametrize("row", tf1_lstm.IMPLEMENTATIONS, ids=lambda r: r.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_round_trip_is_exact(row, dtype):
    for name in CASES[row.id]:
        data = make_layer_case_data(layer_case_by_name(name), dtype)
        native = row.to_native_layer(data.params, data.config)
        assert native["forget_bias"] == data.config.forget_bias  # an attribute: b is stored without it
        back = row.from_native_layer(native, data.config)
        assert_layer_params_equal(back, folded(data.params, data.config.forget_bias))
        assert all(v.dtype == np.dtype(dtype) for k, v in native.items() if k != "forget_bias")


@pytest.mark.parametrize("row", tf1_lstm.IMPLEMENTATIONS, ids=lambda r: r.id)
@pytest.mark.parametrize("peephole", [False, True], ids=["standard", "peephole"])
def test_cell_round_trip_is_exact(row, peephole):
    if peephole and row in BASIC:
        with pytest.raises(NotSupported, match="BasicLSTMCell has no peepholes"):
            row.to_native(make_layer_case_data(layer_case_by_name("cell-clip")).params.cells[0], 1.5)
        return
    params = make_layer_case_data(layer_case_by_name("cell-clip" if peephole else "one-layer")).params.cells[0]
    native = row.to_native(params, 1.5)
    back = row.from_native(native)
    np.testing.assert_array_equal(back.b, fold_forget_bias(params.b, 1.5))
    for name in ("W", "U", "p"):
        np.testing.assert_array_equal(getattr(back, name), getattr(params, name))


def test_variable_names_are_the_functions_default_scopes():
    stack = make_layer_case_data(layer_case_by_name("lstmp-stack"))  # 2 layers, bidirectional, projection, peepholes
    names = set(LSTMCELL.to_native_layer(stack.params, stack.config)) - {"forget_bias"}
    expected = {f"layer_{l}/bidirectional_rnn/{d}/lstm_cell/{v}" for l in (0, 1) for d in ("fw", "bw")
                for v in ("kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel")}
    assert names == expected
    one = make_layer_case_data(layer_case_by_name("one-layer"))
    assert set(STATIC.to_native_layer(one.params, one.config)) == {"rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias", "forget_bias"}
    stacked = make_layer_case_data(layer_case_by_name("stacked"))
    assert "rnn/multi_rnn_cell/cell_2/basic_lstm_cell/kernel" in BASIC_DYNAMIC.to_native_layer(stacked.params, stacked.config)
    bi = make_layer_case_data(layer_case_by_name("bidirectional"))
    assert "bidirectional_rnn/bw/lstm_cell/w_o_diag" in LSTMCELL.to_native_layer(bi.params, bi.config)


def test_kernel_columns_are_i_j_f_o_and_rows_x_then_h():
    """A canary on the layout itself: every gate's weights a different constant, so a permutation shows."""
    H, I = 2, 3
    params = LSTMParams(W=np.arange(1.0, 5.0)[:, None, None] * np.ones((4, H, I)),  # i=1, f=2, g=3, o=4
                        U=np.arange(11.0, 15.0)[:, None, None] * np.ones((4, H, H)), b=np.arange(21.0, 25.0)[:, None] * np.ones((4, H)))
    native = LSTMCELL.to_native(params)
    kernel, bias = native["rnn/lstm_cell/kernel"], native["rnn/lstm_cell/bias"]
    assert kernel.shape == (I + H, 4 * H)
    np.testing.assert_array_equal(kernel[0, ::H], [1, 3, 2, 4])  # columns i, j (= g), f, o
    np.testing.assert_array_equal(kernel[I, ::H], [11, 13, 12, 14])  # rows [x; h]
    np.testing.assert_array_equal(bias[::H], [21, 23, 22, 24])


def test_from_native_assumes_tf1s_forget_bias_when_not_given():
    data = make_layer_case_data(layer_case_by_name("lengths"))
    native = STATIC.to_native_layer(data.params, data.config)
    del native["forget_bias"]
    assert_layer_params_equal(STATIC.from_native_layer(native, data.config), folded(data.params, 1.0))


def test_from_native_names_a_missing_variable():
    data = make_layer_case_data(layer_case_by_name("projection"))
    native = LSTMCELL.to_native_layer(data.params, data.config)
    del native["rnn/lstm_cell/projection/kernel"]
    with pytest.raises(LSTMInputError, match="missing variable: expected rnn/lstm_cell/projection/kernel"):
        LSTMCELL.from_native_layer(native, data.config)


@pytest.mark.parametrize(("row", "case", "reason"), [
    (STATIC, "projection", "BasicLSTMCell has no peepholes"),
    (BASIC_DYNAMIC, "proj-clip", "BasicLSTMCell has no projection"),
    (LSTMCELL, "reverse", "a reverse direction only as the backward half"),
    (LSTMCELL, "gate-clip", "not the gate pre-activations"),
    (LSTMCELL, "coupled", "no coupled input and forget gates"),
])
def test_layouts_refuse_what_the_api_cannot_express(row, case, reason):
    data = make_layer_case_data(layer_case_by_name(case))
    with pytest.raises(NotSupported, match=reason):
        row.to_native_layer(data.params, data.config)


def test_batch_major_conversion_is_exact():
    x = np.random.default_rng(0).normal(size=(5, 3, 4))
    assert BASIC_DYNAMIC._to_native_x(x).shape == (3, 5, 4)
    np.testing.assert_array_equal(BASIC_DYNAMIC._from_native_x(BASIC_DYNAMIC._to_native_x(x)), x)
    assert STATIC._to_native_x(x) is x and LSTMCELL._to_native_x(x) is x


# -- declarations ---------------------------------------------------------------------------------


def test_declarations():
    for row in tf1_lstm.IMPLEMENTATIONS:
        assert row.process_environment == {"TF_USE_LEGACY_KERAS": "1"} and row.origin == "backends.tf1_lstm"
        assert row.dtypes == ("float32", "float64") and row.gradients and not row.known_failures
        for feature in set(LAYER_FEATURES) - set(row.layer_features):
            assert feature in row.unsupported_reasons, f"{row.id}: {feature} has no reason"
    for row in BASIC:
        assert row.variants == ("standard",) and set(row.layer_features) == {"stacked", "bidirectional", "lengths", "empty_sequences"}
    assert LSTMCELL.variants == ("standard", "peephole")
    assert set(LSTMCELL.layer_features) == {"stacked", "bidirectional", "lengths", "empty_sequences", "projection", "proj_clip", "cell_clip"}
    assert (STATIC.rnn_function, STATIC.time_major) == ("static_rnn", True)
    assert (BASIC_DYNAMIC.rnn_function, BASIC_DYNAMIC.time_major) == ("dynamic_rnn", False)
    assert (LSTMCELL.rnn_function, LSTMCELL.time_major) == ("dynamic_rnn", True)


def test_layer_cases_declared_are_the_ones_the_api_runs():
    """Through the contract's own check: the cases each row runs, and a reason for every other one."""
    from spec.layer_cases import LAYER_CASES

    for row in tf1_lstm.IMPLEMENTATIONS:
        runs = []
        for case in LAYER_CASES:
            data = make_layer_case_data(case)
            try:
                row.check_layer(Config("peephole" if case.config.peephole else "standard", "float64"), case.config,
                                data.lengths, data.mask, gradients=True)
                runs.append(case.name)
            except NotSupported as error:
                assert "does not support" not in str(error), f"{row.id} {case.name}: a generic reason: {error}"
        expected = {"one-layer", "stacked", "stacked-bidirectional", "lengths"} if row in BASIC else {
            "one-layer", "bidirectional", "stacked", "stacked-bidirectional", "projection", "proj-clip", "cell-clip",
            "lengths", "lstmp-stack", "lstmp-torch", "medium", "medium-torch"}
        assert expected <= set(runs), row.id  # at least these (a case added to the table may add to them)


# -- availability and environment never raise ----------------------------------------------------


def test_module_imports_and_reports_without_tensorflow_or_tf_keras():
    code = (
        "import sys, json; sys.modules[sys.argv[1]] = None\n"
        "from backends import tf1_lstm\n"
        "row = tf1_lstm.IMPLEMENTATIONS[2]\n"
        "print(json.dumps([row._availability('cpu'), row.environment('cpu')]))\n"
    )
    # TensorFlow is checked first: where it is not installed (tox -e spec, -e torch, ...), blocking tf_keras leaves
    # TensorFlow's absence as the reason, and the reason must not blame tf-keras; where it is, tf-keras is named.
    tensorflow_installed = importlib.util.find_spec("tensorflow") is not None
    tf_missing, tf_keras_missing = "tensorflow is not installed", "tf-keras is not installed"
    cases = (("tensorflow", tf_missing, tf_keras_missing),
             ("tf_keras", *((tf_keras_missing, tf_missing) if tensorflow_installed else (tf_missing, tf_keras_missing))))
    for blocked, expected, not_expected in cases:
        done = run_with_legacy_keras(code.replace("sys.argv[1]", repr(blocked)))
        assert done.returncode == 0, done.stderr[-2000:]
        availability, environment = json.loads(done.stdout.splitlines()[-1])
        assert expected in availability and not_expected not in availability, (blocked, availability)
        assert "environment() failed" in environment  # reported, not raised


@needs_tf1
def test_without_legacy_keras_the_cells_are_unavailable_with_the_reason():
    code = "from backends import tf1_lstm; print(tf1_lstm.IMPLEMENTATIONS[0]._availability('cpu'))"
    done = run_with_legacy_keras(code, env={"TF_USE_LEGACY_KERAS": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not available with Keras 3" in done.stdout and "TF_USE_LEGACY_KERAS=1" in done.stdout


@needs_tf1
def test_availability_and_environment_from_the_rows_own_process():
    for row in tf1_lstm.IMPLEMENTATIONS:
        assert row.availability("cpu") is None
        assert "CUDA" in row.availability("cuda") or "GPU" in row.availability("cuda")
    env = LSTMCELL.environment("cpu")
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["tf_keras"] == env["tensorflow"] and env["tf32"] is False


# -- the rows through the contract, in their own process --------------------------------------------


@needs_tf1
@pytest.mark.parametrize("row", tf1_lstm.IMPLEMENTATIONS, ids=lambda r: r.id)
def test_row_matches_the_spec_with_lengths_of_zero(row):
    """The 'lengths' case (bidirectional, lengths 3, 0, 6, 1, 4) in float64, outputs and gradients."""
    data = make_layer_case_data(layer_case_by_name("lengths"))
    options = dict(layer=data.config, lengths=data.lengths, config=Config("standard", "float64"))
    out = row.forward_layer(data.params, data.x, data.h0, data.c0, **options)
    grads = row.backward_layer(data.params, data.x, data.h0, data.c0, data.cotangents(), **options)
    fwd = spec_layer.forward(data.params, data.x, data.h0, data.c0, config=data.config, lengths=data.lengths)
    expected = spec_layer.backward(fwd, data.dy, data.dh_T, data.dc_T).tensors()
    for name in ("y", "h_T", "c_T"):
        np.testing.assert_allclose(out.tensors()[name], getattr(fwd, name), atol=1e-12, rtol=1e-12, err_msg=name)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, atol=1e-11, rtol=1e-11, err_msg=name)


@needs_tf1
def test_a_wrong_gate_order_is_caught():
    """The canary against TF1 itself: the same layer with the kernel's columns in the canonical i, f, g, o order
    (a silent permutation: j and f swapped) is off the spec by more than 0.05; in i, j, f, o it agrees."""
    code = (
        "import json, numpy as np\n"
        "from backends import tf1_lstm\n"
        "from backends.base import Config\n"
        "from spec import layer\n"
        "from spec.layer_cases import layer_case_by_name, make_layer_case_data\n"
        "d = make_layer_case_data(layer_case_by_name('stacked'))\n"
        "want = layer.forward(d.params, d.x, d.h0, d.c0, config=d.config).y\n"
        "errors = []\n"
        "for gates in (tf1_lstm.TF1_GATES, ('i', 'f', 'g', 'o')):\n"
        "    tf1_lstm.TF1_GATES = gates\n"
        "    out = tf1_lstm.IMPLEMENTATIONS[1].forward_layer(d.params, d.x, d.h0, d.c0, layer=d.config, config=Config('standard', 'float64'))\n"
        "    errors.append(float(np.abs(out.y - want).max()))\n"
        "print(json.dumps(errors))\n"
    )
    done = run_with_legacy_keras(code)
    assert done.returncode == 0, done.stderr[-3000:]
    right, wrong = json.loads(done.stdout.splitlines()[-1])
    assert right < 1e-12 and wrong > 0.05
