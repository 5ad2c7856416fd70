"""The Keras 3 rows (backends/keras_lstm.py): declarations, the layer layout (exact round trips, Keras' own
variable paths, a permutation canary), and the rows against the spec on layer cases the suite does not run
(a lone reverse direction, masks that output the previous output, a reverse stack with empty rows).

Keras fixes its backend at its first import, so nothing here imports Keras in the test process: the rows run
in their own processes (backends/process.py), and the checks that need Keras itself run in subprocesses.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from backends import keras_lstm
from backends.base import Config, NotSupported
from backends.config import layer_features
from backends.plugin import load_backend
from conformance.tolerances import tolerance
from spec.layer import LayerConfig
from spec.layer_cases import LayerCase, make_layer_case_data
from spec.layer_cases import reference as layer_reference
from spec.params import LayerParams
from tests.suite import ROOT, subprocess_environment

ROWS = {row.id: row for row in load_backend("backends.keras_lstm")}  # origin set: they can start their processes
LSTM_ROWS = [f"keras-{backend}/LSTM" for backend in keras_lstm.BACKENDS]
RNN_ROWS = [f"keras-{backend}/RNN+LSTMCell+unroll" for backend in keras_lstm.BACKENDS]
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def needs(row):
    """Skip, with the reason, where the row's frameworks are not installed (checked without importing them)."""
    for module in ("keras", BACKEND_MODULE[row.backend]):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{row.id} needs {module} (pip install keras {module})")


def case_data(case: LayerCase, dtype="float64"):
    return make_layer_case_data(case, dtype)


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------


def test_rows_ids_and_processes():
    assert sorted(ROWS) == sorted(LSTM_ROWS + RNN_ROWS)
    for row in ROWS.values():
        assert row.process_environment["KERAS_BACKEND"] == row.backend  # every row in its own process, TF's too
        assert (row.process_environment.get("JAX_ENABLE_X64") == "1") == (row.backend == "jax")
        assert row.variants == ("standard",) and set(row.dtypes) == {"float32", "float64"}
        assert row.origin == "backends.keras_lstm"


@pytest.mark.parametrize("feature", ["projection", "proj_clip", "cell_clip", "gate_clip", "coupled"])
def test_what_keras_has_not_is_not_supported_with_a_reason(feature):
    config = {
        "projection": LayerConfig(proj_size=2),
        "proj_clip": LayerConfig(proj_size=2, proj_clip=0.5),
        "cell_clip": LayerConfig(cell_clip=1.0),
        "gate_clip": LayerConfig(gate_clip=1.0),
        "coupled": LayerConfig(coupled_input_forget=True),
    }[feature]
    for row in ROWS.values():
        assert feature not in row.layer_features
        with pytest.raises(NotSupported, match="Keras' LSTM"):
            row.check_layer(Config(), config)
        with pytest.raises(NotSupported, match="peepholes"):
            row.check_layer(Config(variant="peephole"), LayerConfig(peephole=True))


def test_bidirectional_cannot_output_the_previous_output():
    """keras.layers.Bidirectional forces zero_output_for_mask = return_sequences (tests/spec/test_layer_semantics.py):
    a bidirectional layer with the previous-output mask is not supported; one direction is, and so are zeros."""
    mask = np.ones((4, 2), bool)
    for row in ROWS.values():
        with pytest.raises(NotSupported, match="Bidirectional forces zero_output_for_mask"):
            row.check_layer(Config(), LayerConfig(direction="bidirectional"), mask=mask)
        row.check_layer(Config(), LayerConfig(direction="bidirectional", zero_output_for_mask=True), mask=mask)
        row.check_layer(Config(), LayerConfig(direction="reverse", num_layers=2), mask=mask)
        row.check_layer(Config(), LayerConfig(direction="bidirectional"), lengths=np.array([4, 0]))


def test_known_failures_are_narrowed_to_where_they_live():
    def known(row_id, dtype, config, kind="layer outputs", lengths=None, mask=None, case="x"):
        return ROWS[row_id].known_failure(kind, Config(dtype=dtype), layer_features(config, lengths, mask), case)

    mask, lengths = np.ones((4, 2), bool), np.array([4, 1])
    zero_bi = LayerConfig(direction="bidirectional", zero_output_for_mask=True)
    assert not any(known(r, d, LayerConfig()) for r in ("keras-tensorflow/LSTM", "keras-torch/LSTM") for d in ("float32", "float64"))
    assert not any(known(r, "float32", zero_bi, mask=mask) for r in LSTM_ROWS)
    assert "float32" in known("keras-jax/LSTM", "float64", LayerConfig(), kind="outputs")
    assert "float32" in known("keras-jax/RNN+LSTMCell+unroll", "float64", LayerConfig(), kind="gradients")
    assert known("keras-torch/LSTM", "float64", LayerConfig()) is None  # the unmasked LSTM runs torch's float64 lstm()
    assert "float32" in known("keras-torch/LSTM", "float64", zero_bi, mask=mask)
    assert "float32" in known("keras-torch/RNN+LSTMCell+unroll", "float64", LayerConfig(), kind="outputs")
    assert "AttributeError" in known("keras-torch/RNN+LSTMCell+unroll", "float32", LayerConfig(direction="reverse"), lengths=lengths)
    assert known("keras-torch/RNN+LSTMCell+unroll", "float32", LayerConfig(), lengths=lengths) is None
    bi = LayerConfig(direction="bidirectional")
    assert "ignores zero_output_for_mask" in known("keras-jax/RNN+LSTMCell+unroll", "float32", bi, lengths=lengths)
    assert known("keras-jax/RNN+LSTMCell+unroll", "float32", LayerConfig(direction="reverse"), lengths=lengths) is None
    assert "time order" in known("keras-tensorflow/RNN+LSTMCell+unroll", "float32", zero_bi, mask=mask)
    assert known("keras-tensorflow/RNN+LSTMCell+unroll", "float32", LayerConfig(), lengths=lengths) is None
    assert "h0" in known("keras-jax/LSTM", "float32", LayerConfig(), mask=mask)
    assert known("keras-jax/LSTM", "float32", LayerConfig(zero_output_for_mask=True), mask=mask) is None


# ---------------------------------------------------------------------------
# The layer layout
# ---------------------------------------------------------------------------

ARCHITECTURES = {
    "forward": LayerConfig(),
    "reverse-stack": LayerConfig(num_layers=2, direction="reverse"),
    "bidirectional-stack": LayerConfig(num_layers=3, direction="bidirectional"),
}


@pytest.mark.parametrize("api", ["LSTM", "RNN"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_layer_layout_round_trip_is_exact(api, name):
    config = ARCHITECTURES[name]
    for dtype in ("float32", "float64"):
        params = case_data(LayerCase("unit", 4, 2, 5, 3, config, seed=7), dtype).params
        row = ROWS["keras-tensorflow/LSTM" if api == "LSTM" else "keras-tensorflow/RNN+LSTMCell+unroll"]
        native = row.to_native_layer(params, config)
        assert len(native) == 3 * len(params.cells)
        back = row.from_native_layer(native, config)
        assert back.tensors().keys() == params.tensors().keys()
        for tensor_name, tensor in params.tensors().items():
            assert np.array_equal(back.tensors()[tensor_name], tensor), f"{tensor_name} changed in the round trip"
            assert back.tensors()[tensor_name].dtype == tensor.dtype


def test_layer_layout_names_are_keras_paths_and_the_forget_bias_is_folded():
    config = LayerConfig(num_layers=2, direction="bidirectional", forget_bias=0.75)
    params = case_data(LayerCase("unit", 4, 2, 5, 3, config, seed=8)).params
    native = keras_lstm.layer_to_native(params, config, "LSTM")
    cell = params.cell(1, 1)  # layer 1, the backward direction
    kernel = native["bidirectional_1/backward_lstm_1/lstm_cell/kernel"]
    assert np.array_equal(kernel, cell.W.reshape(12, 6).T)  # (I, 4H), gates i, f, g, o along the columns
    assert np.array_equal(native["bidirectional_1/backward_lstm_1/lstm_cell/recurrent_kernel"], cell.U.reshape(12, 3).T)
    bias = native["bidirectional_1/backward_lstm_1/lstm_cell/bias"].reshape(4, 3)
    np.testing.assert_array_equal(bias - cell.b, [[0] * 3, [0.75] * 3, [0] * 3, [0] * 3])  # into b_f only
    assert keras_lstm.cell_paths("RNN", "reverse", 2) == ["rnn_0/lstm_cell", "rnn_1/lstm_cell"]
    assert keras_lstm.cell_paths("RNN", "bidirectional", 1) == ["bidirectional_0/forward_rnn_0/lstm_cell",
                                                                "bidirectional_0/backward_rnn_0/lstm_cell"]


@pytest.mark.parametrize("config", [LayerConfig(proj_size=2), LayerConfig(peephole=True), LayerConfig(coupled_input_forget=True)],
                         ids=["projection", "peephole", "coupled"])
def test_layer_layout_refuses_what_keras_weights_cannot_hold(config):
    params = case_data(LayerCase("unit", 4, 2, 5, 3, config, seed=9)).params
    with pytest.raises(NotSupported):
        keras_lstm.layer_to_native(params, config, "LSTM")
    with pytest.raises(NotSupported):
        keras_lstm.layer_from_native({}, config, "LSTM")


def test_the_native_names_are_the_paths_keras_gives_the_variables():
    """The layers the rows build name their variables exactly as cell_paths() says (checked in Keras' own
    process, TensorFlow backend: the paths do not depend on the backend)."""
    needs(ROWS["keras-tensorflow/LSTM"])
    code = (
        "from backends import keras_lstm as k\n"
        "from spec.layer import LayerConfig\n"
        "for api in ('LSTM', 'RNN'):\n"
        "    for config in (LayerConfig(num_layers=2), LayerConfig(num_layers=2, direction='bidirectional')):\n"
        "        stack = k._Stack(api, config, False, 3, 2, 'float64', 'cpu')\n"
        "        paths = [v.path for v in stack.trainable_variables()]\n"
        "        expected = [f'{p}/{w}' for p in k.cell_paths(api, config.direction, 2) for w in k.CELL_WEIGHTS]\n"
        "        assert paths == expected, (paths, expected)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env=subprocess_environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


# ---------------------------------------------------------------------------
# Availability and environment never raise
# ---------------------------------------------------------------------------


def _in_subprocess(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env=subprocess_environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_availability_without_keras_is_a_reason():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from backends.keras_lstm import IMPLEMENTATIONS\n"
        "row = IMPLEMENTATIONS[0]\n"
        "print(repr(row.availability('cpu')), '|', row.environment('cpu'))\n"
    )
    out = _in_subprocess(code, KERAS_BACKEND="tensorflow")  # this row's own environment: it answers in this process
    assert out.startswith("'keras is not installed") and "environment() failed" in out, out


def test_availability_names_the_backend_keras_runs_here():
    """A row asked in a process whose Keras has another backend says so (the base class never sends it there:
    process_environment does)."""
    needs(ROWS["keras-jax/LSTM"])
    code = (
        "from backends.keras_lstm import IMPLEMENTATIONS\n"
        "row = next(r for r in IMPLEMENTATIONS if r.backend == 'torch')\n"
        "print(row._availability('cpu'))\n"
    )
    out = _in_subprocess(code, KERAS_BACKEND="jax")
    assert "Keras' backend is 'jax'" in out and "KERAS_BACKEND=torch" in out, out


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_environment_and_availability_in_the_rows_own_process(row_id):
    row = ROWS[row_id]
    needs(row)
    assert row.availability("cpu") is None
    env = row.environment("cpu")
    assert env["keras_backend"] == row.backend and env["keras"] and env[row.backend], env
    assert env.get("x64", True) is True
    assert isinstance(row.availability("cuda"), str)  # no GPU here: a reason, not an error


# ---------------------------------------------------------------------------
# The rows against the spec on layer cases the suite does not run
# ---------------------------------------------------------------------------

MASK = ("01101", "11100", "00000")  # leading, interior and trailing gaps, a row masked throughout
EXTRA_CASES = {
    case.name: case for case in (
        LayerCase("reverse", 5, 3, 3, 4, LayerConfig(direction="reverse", forget_bias=0.5), seed=301),
        LayerCase("reverse-stack-lengths", 5, 3, 3, 3, LayerConfig(num_layers=2, direction="reverse"), lengths=(5, 0, 2), seed=302),
        LayerCase("forward-mask-previous", 5, 3, 3, 3, LayerConfig(zero_output_for_mask=False), mask=MASK, seed=303),
        LayerCase("reverse-mask-previous", 5, 3, 3, 3, LayerConfig(direction="reverse"), mask=MASK, seed=304),
        LayerCase("reverse-mask-zero", 5, 3, 3, 3, LayerConfig(direction="reverse", zero_output_for_mask=True), mask=MASK, seed=305),
    )
}
#: Where a row departs from the spec on these cases, and the finding that says why (findings/keras_*.py).
DEPARTS = {
    ("keras-jax/LSTM", "forward-mask-previous"): "keras_jax_rolled_mask_outputs_initial_state",
    ("keras-jax/LSTM", "reverse-mask-previous"): "keras_jax_rolled_mask_outputs_initial_state",
    # (reverse-stack-lengths is right there: a lone reverse direction meets its masked steps before any unmasked one)
    ("keras-jax/RNN+LSTMCell+unroll", "reverse-mask-zero"): "keras_jax_unrolled_mask_ignores_zero_output",
    **{("keras-tensorflow/RNN+LSTMCell+unroll", c): "keras_tensorflow_unrolled_go_backwards_zeroes_mirrored_steps"
       for c in ("reverse-stack-lengths", "reverse-mask-zero")},
    **{("keras-torch/RNN+LSTMCell+unroll", c): "keras_torch_unrolled_go_backwards_mask_raises"
       for c in ("reverse-stack-lengths", "reverse-mask-previous", "reverse-mask-zero")},
}


def run_row(row, data, gradients: bool) -> dict[str, np.ndarray]:
    options = {"layer": data.config, "lengths": data.lengths, "mask": data.mask, "config": Config(dtype=str(data.x.dtype))}
    if gradients:
        return row.backward_layer(data.params, data.x, data.h0, data.c0, data.cotangents(), **options)
    return row.forward_layer(data.params, data.x, data.h0, data.c0, **options).tensors()


def worst_excess(got, want, kind: str) -> float:
    """The largest |got - want| / (atol + rtol |want|) over every tensor: at most 1 is within the suite's tolerance."""
    tol = tolerance("float32", kind)
    return max(float(np.max(np.abs(got[k] - want[k]) / (tol.atol + tol.rtol * np.abs(want[k])))) for k in want)


@pytest.mark.parametrize("kind", ["layer outputs", "layer gradients"])
@pytest.mark.parametrize("case_name", EXTRA_CASES)
@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_rows_on_cases_the_suite_does_not_run(row_id, case_name, kind):
    """float32 (every backend computes float32 in float32), the suite's tolerances; where a row departs from
    the spec, by more than 1000 tolerances or by raising, the finding says why."""
    row, case = ROWS[row_id], EXTRA_CASES[case_name]
    needs(row)
    data = case_data(case, "float32")
    expected = layer_reference(data)
    want = expected.gradients if kind == "layer gradients" else expected.outputs
    finding = DEPARTS.get((row_id, case_name))
    try:
        excess = worst_excess(run_row(row, data, kind == "layer gradients"), want, kind)
    except RuntimeError as error:  # what the row's process raised
        assert finding == "keras_torch_unrolled_go_backwards_mask_raises" and "AttributeError" in str(error), error
        return
    if finding is None:
        assert excess <= 1, f"{row_id} {case_name}: {excess:.3g} tolerances off the spec"
    else:
        assert excess > 1000, f"{row_id} {case_name} now follows the spec: update findings/{finding}.py and the known failures"


def test_a_reverse_direction_comes_back_in_time_order_and_gate_swaps_show():
    """The permutation canary on the layer: swapping two gates of a reverse cell changes the outputs; and the
    adapter's outputs are in time order (go_backwards' processing order would be the spec's y reversed)."""
    row = ROWS["keras-tensorflow/LSTM"]
    needs(row)
    data = case_data(EXTRA_CASES["reverse"], "float64")
    y = run_row(row, data, gradients=False)["y"]
    spec_y = layer_reference(data).outputs["y"]
    np.testing.assert_allclose(y, spec_y, atol=1e-13, rtol=1e-13)
    assert np.max(np.abs(y - spec_y[::-1])) > 0.05
    cell = data.params.cells[0]
    for a, b in combinations(range(4), 2):
        order = list(range(4))
        order[a], order[b] = b, a
        swapped = replace(data, params=LayerParams((replace(cell, W=cell.W[order], U=cell.U[order], b=cell.b[order]),)))
        assert np.max(np.abs(run_row(row, swapped, gradients=False)["y"] - y)) > 1e-3, f"gates {a} and {b}"
