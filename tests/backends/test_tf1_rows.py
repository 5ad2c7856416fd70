"""TensorFlow 1's rows (backends/rows/tf1.py), what the conformance suite cannot see of them: the layout of TF1's
variables (backends/layouts/tf1.py), its names, round trips and refusals; the declarations; the process of their own
the rows run in (TF_USE_LEGACY_KERAS=1); availability and environment without TensorFlow or tf-keras; one graph per
case shape; a gate-order canary against TF1 itself; the timed pass.

Whether each row's outputs and gradients agree with the spec is the suite's: ``pytest conformance/ -k tensorflow-tf1``.
The layout and declaration tests need NumPy only. What runs TF1's cells needs tensorflow and tf-keras, with
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, so it runs in a process of its own; it is skipped, with the
hint, where either is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import tf1 as layouts
from backends.registry import builtin_rows
from backends.rows import tf1
from backends.runtimes.tensorflow import (
    INSTALL_HINT,
    TF1,
    TF_KERAS_HINT,
    tensorflow_problem,
)
from contract.errors import NotSupported
from contract.layout import fold_forget_bias
from contract.loading import placed
from contract.remote import Remote
from contract.vocabulary import CONFORMANCE_DTYPES, HALF_DTYPES, Device, Feature
from spec.cases import case_by_name, case_set, make_case_data
from spec.params import LayerParams, LSTMParams
from spec.precision import Policy
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {row.id: row for row in tf1.ROWS}
STATIC = BY_ID["tensorflow-tf1/BasicLSTMCell+static_rnn"]
BASIC_DYNAMIC = BY_ID["tensorflow-tf1/BasicLSTMCell+dynamic_rnn"]
LSTMCELL = BY_ID["tensorflow-tf1/LSTMCell+dynamic_rnn"]
BASIC = (STATIC, BASIC_DYNAMIC)


def installed(module: str) -> bool:
    """Whether ``module`` can be found (without importing it here: tf-keras is imported only where
    TF_USE_LEGACY_KERAS=1); a module made unimportable (None in sys.modules) is not."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return False


#: Why TF1's cells cannot run here (None: they can): TensorFlow's absence first, as the rows say it.
TF1_PROBLEM = tensorflow_problem() or (None if installed("tf_keras") else TF_KERAS_HINT)
needs_tf1 = pytest.mark.skipif(TF1_PROBLEM is not None, reason=str(TF1_PROBLEM))

#: The architectures each layout holds, as the cases that use them.
LAYOUT_CASES = [
    (layouts.BASIC_LSTM_CELL, ("one-layer", "stacked", "stacked-bidirectional", "packed")),
    (layouts.LSTM_CELL, ("small-peephole", "bidirectional", "stacked", "projection", "proj-clip", "cell-clip", "lstmp-stack",
                         "medium-combined")),
]


def folded(params: LayerParams, forget_bias: float) -> LayerParams:
    return LayerParams(tuple(LSTMParams(c.W, c.U, fold_forget_bias(c.b, forget_bias), c.p, c.W_hr) for c in params.cells),
                       params.num_directions)


def assert_params_equal(got: LayerParams, want: LayerParams):
    assert got.num_directions == want.num_directions and list(got.tensors()) == list(want.tensors())
    for name, tensor in want.tensors().items():
        assert got.tensors()[name].dtype == tensor.dtype, name
        np.testing.assert_array_equal(got.tensors()[name], tensor, err_msg=name)


def run_python(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -c code`` from the checkout, with TF_USE_LEGACY_KERAS=1 unless ``env`` says otherwise: the rows'
    hooks then run in that process, as in the process of their own the suite gives them."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout, check=False)


def last_json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# -- the layout (NumPy only) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,cases", LAYOUT_CASES, ids=lambda v: getattr(v, "cell_name", "cases"))
def test_layout_round_trip_is_exact_with_the_forget_bias_an_attribute(layout, cases, dtype):
    for name in cases:
        d = make_case_data(case_by_name(name), dtype)
        native = layout.to_native(d.params, d.layer)
        assert native["forget_bias"] == d.layer.forget_bias, name  # an attribute: b is stored without it
        assert all(v.dtype == np.dtype(dtype) for k, v in native.items() if k != "forget_bias"), name
        assert_params_equal(layout.from_native(native, d.layer), folded(d.params, d.layer.forget_bias))


def test_variable_names_are_the_functions_default_scopes():
    stack = make_case_data(case_by_name("lstmp-stack"))  # 2 layers, bidirectional, projection, peepholes
    names = set(layouts.LSTM_CELL.to_native(stack.params, stack.layer)) - {"forget_bias"}
    assert names == {f"layer_{l}/bidirectional_rnn/{d}/lstm_cell/{v}" for l in (0, 1) for d in ("fw", "bw")
                     for v in ("kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel")}
    one = make_case_data(case_by_name("one-layer"))
    assert set(layouts.BASIC_LSTM_CELL.to_native(one.params, one.layer)) == {
        "rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias", "forget_bias"}
    stacked = make_case_data(case_by_name("stacked"))
    assert "rnn/multi_rnn_cell/cell_2/basic_lstm_cell/kernel" in layouts.BASIC_LSTM_CELL.to_native(stacked.params, stacked.layer)
    bi = make_case_data(case_by_name("bidirectional"))
    assert "bidirectional_rnn/bw/lstm_cell/w_o_diag" in layouts.LSTM_CELL.to_native(bi.params, bi.layer)


def test_kernel_columns_are_i_j_f_o_and_rows_x_then_h():
    """Every gate's weights a different constant, so that a permutation shows."""
    H, I = 2, 3
    cell = LSTMParams(W=np.arange(1.0, 5.0)[:, None, None] * np.ones((4, H, I)),  # i=1, f=2, g=3, o=4
                      U=np.arange(11.0, 15.0)[:, None, None] * np.ones((4, H, H)),
                      b=np.arange(21.0, 25.0)[:, None] * np.ones((4, H)))
    native = layouts.LSTM_CELL.to_native(LayerParams((cell,)), make_case_data(case_by_name("one-layer")).layer)
    kernel, bias = native["rnn/lstm_cell/kernel"], native["rnn/lstm_cell/bias"]
    assert kernel.shape == (I + H, 4 * H)
    np.testing.assert_array_equal(kernel[0, ::H], [1, 3, 2, 4])  # columns i, j (= g), f, o
    np.testing.assert_array_equal(kernel[I, ::H], [11, 13, 12, 14])  # rows [x; h]
    np.testing.assert_array_equal(bias[::H], [21, 23, 22, 24])


def test_from_native_assumes_tf1s_forget_bias_when_not_given():
    d = make_case_data(case_by_name("packed"))
    native = layouts.BASIC_LSTM_CELL.to_native(d.params, d.layer)
    del native["forget_bias"]
    assert_params_equal(layouts.BASIC_LSTM_CELL.from_native(native, d.layer), folded(d.params, layouts.DEFAULT_FORGET_BIAS))


def test_from_native_names_a_missing_variable():
    d = make_case_data(case_by_name("projection"))
    native = layouts.LSTM_CELL.to_native(d.params, d.layer)
    del native["rnn/lstm_cell/projection/kernel"]
    with pytest.raises(LSTMInputError, match="missing variable: expected rnn/lstm_cell/projection/kernel"):
        layouts.LSTM_CELL.from_native(native, d.layer)


def test_layout_gradients_carry_no_forget_bias():
    """The variables' gradients read back as the parameters' (the layout only moves entries): neither the layer's
    forget bias nor TF1's default 1.0 is folded into b's."""
    d = make_case_data(case_by_name("lstmp-stack"))  # forget_bias 1.0
    grads = {k: v for k, v in layouts.LSTM_CELL.to_native(d.params, d.layer).items() if k != "forget_bias"}
    assert_params_equal(layouts.LSTM_CELL.gradient(grads, d.params, d.layer), d.params)


@pytest.mark.parametrize(("layout", "case", "feature"), [
    (layouts.BASIC_LSTM_CELL, "projection", Feature.PEEPHOLE),
    (layouts.BASIC_LSTM_CELL, "proj-clip", Feature.PROJECTION),
    (layouts.BASIC_LSTM_CELL, "cell-clip", Feature.PEEPHOLE),
    (layouts.LSTM_CELL, "reverse", Feature.REVERSE),
    (layouts.LSTM_CELL, "gate-clip", Feature.GATE_CLIP),
    (layouts.LSTM_CELL, "coupled", Feature.COUPLED),
], ids=lambda v: getattr(v, "cell_name", None) or str(v))
def test_layouts_refuse_what_the_api_cannot_express_with_its_own_words(layout, case, feature):
    d = make_case_data(case_by_name(case))
    with pytest.raises(NotSupported) as refused:
        layout.to_native(d.params, d.layer)
    assert str(refused.value) == layout.reasons[feature]


# -- declarations (NumPy only) ---------------------------------------------------------------------------------------


def test_declarations():
    rnn = {Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES}
    assert {row.id: row.features for row in tf1.ROWS} == {
        STATIC.id: rnn, BASIC_DYNAMIC.id: rnn,
        LSTMCELL.id: rnn | {Feature.PEEPHOLE, Feature.PROJECTION, Feature.PROJ_CLIP, Feature.CELL_CLIP}}
    assert [row.layout for row in tf1.ROWS] == [layouts.BASIC_LSTM_CELL, layouts.BASIC_LSTM_CELL, layouts.LSTM_CELL]
    assert [(row.cell, row.rnn_function, row.time_major) for row in tf1.ROWS] == [
        ("BasicLSTMCell", "static_rnn", True), ("BasicLSTMCell", "dynamic_rnn", False), ("LSTMCell", "dynamic_rnn", True)]
    for row in tf1.ROWS:
        assert row.runtime is TF1 and row.process_environment == {"TF_USE_LEGACY_KERAS": "1"}, row.id
        assert row.origin == "backends.rows.tf1" and row.gradients and not row.known_failures, row.id
        assert row.dtypes == CONFORMANCE_DTYPES and row.devices == (Device.CPU, Device.CUDA), row.id
        for half in HALF_DTYPES:  # TensorFlow's ops one by one
            assert row.policy(half) is Policy.EVERY_OPERATION, row.id


#: The cases of the table each row runs (every other one refused with a reason of its own).
RUNS = {
    "basic": {"one-layer", "stacked", "stacked-bidirectional", "lengths", "packed"},
    "lstm_cell": {"one-layer", "bidirectional", "stacked", "stacked-bidirectional", "projection", "proj-clip", "cell-clip",
                  "lengths", "lstmp-stack", "lstmp-torch", "lstmp-padded", "packed", "medium-combined", "medium-torch"},
}


@pytest.mark.parametrize("row", tf1.ROWS, ids=lambda r: r.id)
def test_the_cases_a_row_runs_are_the_ones_its_api_runs_and_others_say_why(row):
    runs = set()
    for case in case_set(large=True):
        d = make_case_data(case)
        reason = row.refusal(dtype="float64", device="cpu", layer=case.layer, lengths=d.lengths, mask=d.mask, gradients=True)
        if reason is None:
            runs.add(case.name)
        else:
            assert "does not support" not in reason, f"{row.id} {case.name}: a generic reason: {reason}"
    cells = {case.name for case in case_set(large=True) if case.cell_streams and (row is LSTMCELL or not case.layer.peephole)}
    assert runs == cells | RUNS["basic" if row in BASIC else "lstm_cell"]


# -- a process of their own -----------------------------------------------------------------------------------------


def test_the_rows_run_in_a_process_of_their_own_unless_this_one_has_legacy_keras(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    registered = {row.id: row for row in builtin_rows()}
    for row in tf1.ROWS:
        assert isinstance(placed(row), Remote) and isinstance(registered[row.id], Remote), row.id
        assert registered[row.id].process_environment == {"TF_USE_LEGACY_KERAS": "1"}
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    assert all(placed(row) is row for row in tf1.ROWS)


@needs_tf1
def test_availability_and_environment_come_from_the_rows_own_process(monkeypatch):
    """This process has no TF_USE_LEGACY_KERAS (Keras 3, the Keras rows' world); the rows' answers come from a child
    that has it: the cells are there, TF32 is off, tf-keras is TensorFlow's version."""
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    for row in tf1.ROWS:
        remote = placed(replace(row))
        assert isinstance(remote, Remote) and remote.availability("cpu") is None, row.id
        assert "CUDA" in remote.availability("cuda") or "GPU" in remote.availability("cuda")
    env = placed(replace(LSTMCELL)).environment("cpu")
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["tf_keras"] == env["tensorflow"] and env["tf32"] is False
    assert env["mode"] == "graph (tf.Graph, tf.compat.v1.Session)" and "TF_USE_LEGACY_KERAS" not in os.environ


def test_the_rows_import_and_say_why_without_tensorflow_or_tf_keras():
    """Availability names the first of TensorFlow and tf-keras that is missing (TensorFlow first: where it is not
    installed, blocking tf-keras must not blame tf-keras); environment() says it too instead of failing."""
    code = (
        "import importlib.util, json, sys\n"
        "tensorflow = importlib.util.find_spec('tensorflow') is not None\n"
        "sys.modules[sys.argv[1]] = None\n"
        "from backends.rows.tf1 import ROWS\n"
        "print(json.dumps([tensorflow, [[r.availability('cpu'), r.environment('cpu')] for r in ROWS]]))\n"
    )
    for blocked in ("tensorflow", "tf_keras"):
        tensorflow_installed, answers = last_json(run_python(code.replace("sys.argv[1]", repr(blocked))))
        expected = TF_KERAS_HINT if blocked == "tf_keras" and tensorflow_installed else INSTALL_HINT
        assert answers == [[expected, {"unavailable": expected}]] * len(tf1.ROWS), blocked


@needs_tf1
def test_without_legacy_keras_the_cells_are_unavailable_with_the_reason():
    code = "import json\nfrom backends.rows.tf1 import ROWS\nprint(json.dumps([r.availability('cpu') for r in ROWS]))\n"
    for reason, row in zip(last_json(run_python(code, env={"TF_USE_LEGACY_KERAS": ""})), tf1.ROWS):
        assert reason.startswith(f"tf.compat.v1.nn.rnn_cell.{row.cell} is unavailable: "), reason
        assert "not available with Keras 3" in reason and "TF_USE_LEGACY_KERAS=1" in reason


# -- in the rows' own process: graphs, the gate-order canary, the timed pass ---------------------------------------

IN_ITS_PROCESS = '''
import json
import numpy as np
from backends.layouts import tf1 as layouts
from backends.rows.tf1 import ROWS
from backends.runtimes.tensorflow import TF1
from contract.answers import Cotangents
from contract.timing import Timing
from spec.cases import case_by_name, make_case_data, reference

out = {}
row = ROWS[2]
d = make_case_data(case_by_name("lengths"))
copy = lambda p: p.with_tensors({k: v.copy() for k, v in p.tensors().items()})
built = [TF1.graphs_built]
row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
built.append(TF1.graphs_built)
row.backward(copy(d.params), d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), layer=d.layer, lengths=d.lengths)
other = make_case_data(case_by_name("lengths").with_seed(5))
row.forward(other.params, other.x, other.h0, other.c0, layer=other.layer, lengths=other.lengths)
built.append(TF1.graphs_built)
row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)
built.append(TF1.graphs_built)
wider = make_case_data(case_by_name("packed"))
row.forward(wider.params, wider.x, wider.h0, wider.c0, layer=wider.layer, lengths=wider.lengths)
built.append(TF1.graphs_built)
out["graphs built"] = built
out["environment"] = row.environment("cpu")

timed = row.timed_pass(d.params, d.x, d.h0, d.c0, None, layer=d.layer, lengths=d.lengths, timing=Timing("float64", "cpu", False))
timed.run()
y = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths).y
out["timed"] = [timed.resident, bool(np.array_equal(timed.result()["y"], y))]

s = make_case_data(case_by_name("stacked"))
want = reference(s).outputs["y"]
errors = []
for gates in (layouts.TF1_GATES, ("i", "f", "g", "o")):
    layouts.TF1_GATES = gates
    errors.append(float(np.abs(ROWS[1].forward(s.params, s.x, s.h0, s.c0, layer=s.layer).y - want).max()))
out["gate orders"] = errors
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def in_its_process():
    """What the rows do in a process with TF_USE_LEGACY_KERAS=1 (and LSTMC_THREADS=1), asked once."""
    return last_json(run_python(IN_ITS_PROCESS, env={"LSTMC_THREADS": "1"}))


@needs_tf1
def test_one_graph_per_case_shape_serves_outputs_gradients_and_every_parameter_set(in_its_process):
    """Forward and backward of a case share its graph (weights assigned, not baked in): other parameter values of the
    same shape reuse it, no lengths or another shape builds another."""
    assert in_its_process["graphs built"] == [0, 1, 1, 2, 3]


@needs_tf1
def test_a_session_gets_lstmc_threads(in_its_process):
    env = in_its_process["environment"]
    assert env["session_threads"] == 1 and env["TF_USE_LEGACY_KERAS"] == "1" and env["tf32"] is False


@needs_tf1
def test_a_wrong_gate_order_is_caught(in_its_process):
    """The canary against TF1 itself: the kernel's columns in the canonical i, f, g, o order (j and f swapped) put
    the stacked case off the spec by more than 0.05; in i, j, f, o it agrees."""
    right, wrong = in_its_process["gate orders"]
    assert right < 1e-12 and wrong > 0.05


@needs_tf1
def test_the_timed_pass_goes_through_numpy_and_computes_what_forward_does(in_its_process):
    """A graph fed from NumPy has no device-resident pass: the pass is forward() itself (resident False)."""
    assert in_its_process["timed"] == [False, True]
