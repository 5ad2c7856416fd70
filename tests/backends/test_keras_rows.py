"""The Keras 3 rows (backends/rows/keras.py) and the tf2onnx row built on them (backends/rows/tf2onnx.py): what the
conformance suite cannot see. Their declarations and the reasons they give, where their known failures live, the
Keras layouts (exact round trips, Keras' own variable paths, what they cannot hold), availability with the install
hint when Keras, its backend, tf2onnx or ONNX Runtime is missing, the environment each row records, one trace per
input shape and one ONNX conversion per parameter set, and two layer cases the suite does not run.

Keras fixes its backend at its first import, so nothing here imports Keras in the test process: the rows run in
their own processes (contract/remote.py, through the loader), and what needs Keras itself runs in a subprocess
started with the row's own ``process_environment``, where the row answers unwrapped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from backends.layouts import keras as layouts
from backends.rows import keras as keras_rows
from backends.rows import tf2onnx
from backends.runtimes.keras import BACKEND_MODULES, BIDIRECTIONAL_ZEROES_MASKED_STEPS, KERAS_HINT, keras_dtype
from contract.answers import Cotangents
from contract.errors import NotSupported
from contract.loading import load_rows
from contract.remote import Remote
from contract.tolerances import tolerance
from contract.vocabulary import ARCHITECTURE, CONFORMANCE_DTYPES, Dtype, Feature, Kind, features_of
from spec.cases import Case, make_case_data, reference
from spec.layer import LayerConfig
from spec.precision import Policy
from spec.params import LayerParams
from tests.suite import ROOT, subprocess_environment

ROWS = {row.id: row for row in load_rows("backends.rows.keras")}  # each in its own process (Remote) unless this one fits
TF2ONNX, TF2ONNX_UNOPTIMIZED = load_rows("backends.rows.tf2onnx")  # the second: ONNX Runtime's optimisations off
EVERY_ROW = {**ROWS, TF2ONNX.id: TF2ONNX}
BACKENDS = tuple(keras_rows.RUNTIMES)
LSTM_ROWS = [f"keras-{backend}/LSTM" for backend in BACKENDS]
RNN_ROWS = [f"keras-{backend}/RNN+LSTMCell+unroll" for backend in BACKENDS]


def backend_of(row) -> str:
    return row.process_environment["KERAS_BACKEND"]


def needed(row) -> list[tuple[str, str]]:
    """The modules a row imports, with the hint a user gets when one is missing."""
    if row.id == TF2ONNX.id:
        return list(tf2onnx.NEEDED)
    return [("keras", KERAS_HINT), BACKEND_MODULES[backend_of(row)]]


def needs(row) -> None:
    """Skip, with the install hint, where the row's frameworks are not installed (found without importing them)."""
    for module, hint in needed(row):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{row.id}: {hint}")


def in_keras_process(backend: str, code: str, *, blocked: tuple[str, ...] = ()) -> dict:
    """Run ``code`` in a Python process whose Keras backend is ``backend`` (its rows' own environment, so they answer
    there unwrapped), with the ``blocked`` modules made unimportable as if not installed; what it prints last, as
    JSON."""
    environment = dict(ROWS[f"keras-{backend}/LSTM"].process_environment)
    block = "".join(f"sys.modules[{module!r}] = None\n" for module in blocked)
    source = "import json, sys\n" + block + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False, env=subprocess_environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
                                                                  **environment))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def params_for(layer: LayerConfig, dtype="float64", seed=7) -> LayerParams:
    return make_case_data(Case("unit", 4, 2, 5, 3, layer, seed=seed), dtype).params


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------


def test_rows_ids_and_processes():
    assert list(ROWS) == [f"keras-{backend}/{api}" for backend in BACKENDS for api in ("LSTM", "RNN+LSTMCell+unroll")]
    for row in EVERY_ROW.values():
        # Every row in a process of its own (TF's too), unless this one has the environment it needs.
        assert isinstance(row, Remote) or all(os.environ.get(k) == v for k, v in row.process_environment.items()), row.id
        assert (row.process_environment.get("JAX_ENABLE_X64") == "1") == (backend_of(row) == "jax"), row.id
        assert row.gradients == (row is not TF2ONNX)
        assert row.dtypes == ((Dtype.FLOAT32,) if row is TF2ONNX else CONFORMANCE_DTYPES)
    assert {row.origin for row in ROWS.values()} == {"backends.rows.keras"}
    assert dict(TF2ONNX.process_environment) == {"KERAS_BACKEND": "tensorflow"} and TF2ONNX.origin == "backends.rows.tf2onnx"


#: One layer per architecture feature Keras' layouts cannot hold, and the reason a row gives for it (a projection clip
#: needs a projection, which is refused first).
CANNOT_HOLD = {
    Feature.PEEPHOLE: (LayerConfig(peephole=True), layouts.NOT_IN_KERAS[Feature.PEEPHOLE]),
    Feature.PROJECTION: (LayerConfig(proj_size=2), layouts.NOT_IN_KERAS[Feature.PROJECTION]),
    Feature.PROJ_CLIP: (LayerConfig(proj_size=2, proj_clip=0.5), layouts.NOT_IN_KERAS[Feature.PROJECTION]),
    Feature.CELL_CLIP: (LayerConfig(cell_clip=1.0), layouts.NOT_IN_KERAS[Feature.CELL_CLIP]),
    Feature.GATE_CLIP: (LayerConfig(gate_clip=1.0), layouts.NOT_IN_KERAS[Feature.GATE_CLIP]),
    Feature.COUPLED: (LayerConfig(coupled_input_forget=True), layouts.NOT_IN_KERAS[Feature.COUPLED]),
    Feature.LAYER_NORM: (LayerConfig(layer_norm=True), layouts.NOT_IN_KERAS[Feature.LAYER_NORM]),
    Feature.PROJ_BIAS: (LayerConfig(proj_size=2, proj_bias=True), layouts.NOT_IN_KERAS[Feature.PROJECTION]),
}


@pytest.mark.parametrize("row_id", EVERY_ROW)
def test_what_keras_has_not_is_refused_with_keras_reason(row_id):
    """Every architecture feature the layouts cannot hold is refused with the layout's reason, Bidirectional with the
    previous output at masked steps with why; what a Keras stack does run is not refused; the dtypes it does not run
    are refused with their reasons."""
    row = EVERY_ROW[row_id]
    assert set(CANNOT_HOLD) == ARCHITECTURE - row.layout.holds
    for layer, reason in CANNOT_HOLD.values():
        assert row.refusal(dtype="float32", device="cpu", layer=layer) == reason
    mask, lengths = np.ones((4, 2), bool), np.array([4, 0])
    bidirectional = LayerConfig(direction="bidirectional")
    assert row.refusal(dtype="float32", device="cpu", layer=bidirectional, mask=mask) == BIDIRECTIONAL_ZEROES_MASKED_STEPS
    for layer, options in ((LayerConfig(direction="bidirectional", zero_output_for_mask=True), {"mask": mask}),
                           (LayerConfig(direction="reverse", num_layers=2), {"mask": mask}),
                           (bidirectional, {"lengths": lengths})):
        assert row.refusal(dtype="float32", device="cpu", layer=layer, **options) is None, layer
    for half in ("float16", "bfloat16"):  # Keras' mixed-precision policy; ONNX Runtime has no half LSTM
        reason = row.refusal(dtype=half, device="cpu", layer=LayerConfig())
        if row is TF2ONNX:
            assert reason.endswith("LSTM kernel is float32 only")
        else:
            assert reason is None and row.policy(half) is Policy.MIXED and keras_dtype(half) == f"mixed_{half}"
    if row is TF2ONNX:
        assert "rejects double" in row.refusal(dtype="float64", device="cpu", layer=LayerConfig())
        assert "no gradient for LSTM" in row.refusal(dtype="float32", device="cpu", layer=LayerConfig(), gradients=True)


def test_known_failures_are_narrowed_to_where_they_live():
    def known(row_id, dtype, layer, kind=Kind.OUTPUTS, lengths=None, mask=None):
        return ROWS[row_id].known_failure(kind, dtype=dtype, device="cpu", features=features_of(layer, lengths, mask))

    mask, lengths = np.ones((4, 2), bool), np.array([4, 1])
    zero_bi = LayerConfig(direction="bidirectional", zero_output_for_mask=True)
    assert not any(known(r, d, LayerConfig()) for r in ("keras-tensorflow/LSTM", "keras-torch/LSTM") for d in ("float32", "float64"))
    assert not any(known(r, "float32", zero_bi, mask=mask) for r in LSTM_ROWS)
    assert known("keras-jax/LSTM", "float64", LayerConfig()) == keras_rows.JAX_FLOAT64
    assert known("keras-jax/RNN+LSTMCell+unroll", "float64", LayerConfig(), kind=Kind.GRADIENTS) == keras_rows.JAX_FLOAT64
    assert known("keras-torch/LSTM", "float64", LayerConfig()) is None  # the unmasked LSTM runs torch's float64 lstm()
    assert known("keras-torch/LSTM", "float64", zero_bi, mask=mask) == keras_rows.TORCH_FLOAT64
    assert known("keras-torch/RNN+LSTMCell+unroll", "float64", LayerConfig()) == keras_rows.TORCH_FLOAT64
    reverse = LayerConfig(direction="reverse")
    assert known("keras-torch/RNN+LSTMCell+unroll", "float32", reverse, lengths=lengths) == keras_rows.TORCH_UNROLLED_BACKWARDS
    assert known("keras-torch/RNN+LSTMCell+unroll", "float32", LayerConfig(), lengths=lengths) is None
    bi = LayerConfig(direction="bidirectional")
    assert known("keras-jax/RNN+LSTMCell+unroll", "float32", bi, lengths=lengths) == keras_rows.JAX_UNROLLED_MASK
    assert known("keras-jax/RNN+LSTMCell+unroll", "float32", reverse, lengths=lengths) is None
    assert known("keras-tensorflow/RNN+LSTMCell+unroll", "float32", zero_bi, mask=mask) == keras_rows.TENSORFLOW_UNROLLED_BACKWARDS
    assert known("keras-tensorflow/RNN+LSTMCell+unroll", "float32", LayerConfig(), lengths=lengths) is None
    assert known("keras-jax/LSTM", "float32", LayerConfig(), mask=mask) == keras_rows.JAX_ROLLED_MASK
    assert known("keras-jax/LSTM", "float32", LayerConfig(zero_output_for_mask=True), mask=mask) is None
    assert TF2ONNX.known_failures == ()


# ---------------------------------------------------------------------------
# The layouts (NumPy only: no Keras needed)
# ---------------------------------------------------------------------------

ARCHITECTURES = {
    "forward": LayerConfig(),
    "reverse-stack": LayerConfig(num_layers=2, direction="reverse"),
    "bidirectional-stack": LayerConfig(num_layers=3, direction="bidirectional"),
}
LAYOUTS = {"LSTM": layouts.LSTM, "RNN": layouts.RNN}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("api", LAYOUTS)
def test_layout_round_trip_is_exact_and_the_gradient_folds_no_forget_bias(api, name, dtype):
    layout, layer = LAYOUTS[api], ARCHITECTURES[name]
    params = params_for(layer, dtype)
    native = layout.to_native(params, layer)
    assert len(native) == 3 * len(params.cells) and all(a.dtype == np.dtype(dtype) for a in native.values())
    back = layout.from_native(native, layer)
    assert back.tensors().keys() == params.tensors().keys()
    for tensor_name, tensor in params.tensors().items():
        assert back.tensors()[tensor_name].dtype == tensor.dtype
        assert np.array_equal(back.tensors()[tensor_name], tensor), f"{tensor_name} changed in the round trip"
    # A gradient has no forget bias to fold, whatever the layer's: the native gradients read back unchanged.
    gradients = layout.gradient(native, params, LayerConfig(**{**vars(layer), "forget_bias": 0.75}))
    for tensor_name, tensor in params.tensors().items():
        assert np.array_equal(gradients.tensors()[tensor_name], tensor), tensor_name


def test_layout_names_are_keras_paths_and_the_forget_bias_is_folded():
    layer = LayerConfig(num_layers=2, direction="bidirectional", forget_bias=0.75)
    params = params_for(layer, seed=8)
    native = layouts.LSTM.to_native(params, layer)
    cell = params.cell(1, 1)  # layer 1, the backward direction
    kernel = native["bidirectional_1/backward_lstm_1/lstm_cell/kernel"]
    assert np.array_equal(kernel, cell.W.reshape(12, 6).T)  # (I, 4H), gates i, f, g, o along the columns
    assert np.array_equal(native["bidirectional_1/backward_lstm_1/lstm_cell/recurrent_kernel"], cell.U.reshape(12, 3).T)
    bias = native["bidirectional_1/backward_lstm_1/lstm_cell/bias"].reshape(4, 3)
    np.testing.assert_array_equal(bias - cell.b, [[0] * 3, [0.75] * 3, [0] * 3, [0] * 3])  # into b_f only
    assert layouts.RNN.cell_paths(LayerConfig(num_layers=2, direction="reverse")) == ["rnn_0/lstm_cell", "rnn_1/lstm_cell"]
    assert layouts.RNN.cell_paths(LayerConfig(direction="bidirectional")) == ["bidirectional_0/forward_rnn_0/lstm_cell",
                                                                              "bidirectional_0/backward_rnn_0/lstm_cell"]


@pytest.mark.parametrize("feature", CANNOT_HOLD)
def test_layouts_refuse_what_keras_weights_cannot_hold(feature):
    layer, reason = CANNOT_HOLD[feature]
    params = make_case_data(Case("unit", 4, 2, 5, 3, layer, seed=9)).params
    for layout in LAYOUTS.values():
        assert layout.holds == {Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL}
        with pytest.raises(NotSupported, match=f"^{re.escape(reason)}$"):
            layout.to_native(params, layer)
        with pytest.raises(NotSupported):
            layout.from_native({}, layer)


def test_the_native_names_are_the_paths_keras_gives_the_variables():
    """The stacks the rows build name their variables exactly as the layouts do, in the order Keras creates them
    (TensorFlow backend: the paths do not depend on the backend)."""
    needs(ROWS["keras-tensorflow/LSTM"])
    got = in_keras_process("tensorflow", """
        from backends.rows.keras import ROWS
        from spec.cases import Case, make_case_data
        from spec.layer import LayerConfig
        found = []
        for row in ROWS:
            if row.id.startswith("keras-tensorflow/"):
                for layer in (LayerConfig(num_layers=2), LayerConfig(num_layers=2, direction="bidirectional")):
                    params = make_case_data(Case("unit", 4, 2, 3, 2, layer)).params
                    with row.runtime.on("cpu"):
                        stack = row.stack(layer, False, 3, 2, "float64", "cpu")
                    found.append([[v.path for v in stack.variables()], list(row.layout.to_native(params, layer))])
        print(json.dumps(found))
    """)
    assert len(got) == 4
    for paths, native_names in got:
        assert paths == native_names


# ---------------------------------------------------------------------------
# Availability (the install hints) and environment; neither ever raises
# ---------------------------------------------------------------------------

ROW_AVAILABILITY = """
    from backends.rows.keras import ROWS
    from backends.rows.tf2onnx import ROWS as EXPORT
    print(json.dumps({row.id: [row.availability("cpu"), row.environment("cpu")] for row in (*ROWS, *EXPORT)
                      if row.id.startswith(f"keras-{BACKEND}/") or (BACKEND == "tensorflow" and row in EXPORT)}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_keras_the_rows_say_how_to_install_it(backend):
    """Keras blocked: its hint, unless the backend is missing too (a core-only environment), whose hint comes first."""
    module, backend_hint = BACKEND_MODULES[backend]
    expected = KERAS_HINT if importlib.util.find_spec(module) is not None else backend_hint
    answers = in_keras_process(backend, f"BACKEND = {backend!r}\n" + textwrap.dedent(ROW_AVAILABILITY), blocked=("keras",))
    assert len(answers) == (4 if backend == "tensorflow" else 2)  # tensorflow's: both tf2onnx rows too
    for row_id, (reason, environment) in answers.items():
        if row_id in (TF2ONNX.id, TF2ONNX_UNOPTIMIZED.id):
            assert reason == expected and environment["keras"] == f"unavailable: {KERAS_HINT}", environment
        else:
            assert (reason, environment) == (expected, {"unavailable": expected}), row_id


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_its_backend_a_row_says_how_to_install_the_backend(backend):
    """Keras imports its backend when it is imported: a missing backend must be named with its hint, not reported as
    Keras failing to import."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip(KERAS_HINT)
    module, hint = BACKEND_MODULES[backend]
    answers = in_keras_process(backend, f"BACKEND = {backend!r}\n" + textwrap.dedent(ROW_AVAILABILITY), blocked=(module,))
    for row_id, (reason, environment) in answers.items():
        assert reason == hint, (row_id, reason)
        assert (environment.get("unavailable") or environment.get(module)).endswith(hint), environment


@pytest.mark.parametrize("module", ["tf2onnx", "onnxruntime"])
def test_without_the_converter_or_onnxruntime_the_export_row_says_how_to_install_it(module):
    """The blocked module's hint, unless one named before it in NEEDED is missing too (an environment with TensorFlow
    but not the converter), whose hint comes first; the environment names each missing one."""
    needs(ROWS["keras-tensorflow/LSTM"])
    hint = dict(tf2onnx.NEEDED)[module]
    missing = [h for m, h in tf2onnx.NEEDED if m == module or importlib.util.find_spec(m) is None]
    answers = in_keras_process("tensorflow", "BACKEND = 'tensorflow'\n" + textwrap.dedent(ROW_AVAILABILITY), blocked=(module,))
    reason, environment = answers[TF2ONNX.id]
    assert reason == missing[0]
    assert environment[module] == f"unavailable: {hint}" and environment["keras_backend"] == "tensorflow", environment


def test_a_row_asked_in_a_process_with_another_keras_backend_says_so():
    """The loader never sends a row there (process_environment does), but a row asked anyway answers why."""
    for backend in ("jax", "torch"):
        needs(ROWS[f"keras-{backend}/LSTM"])
    answers = in_keras_process("jax", """
        from backends.rows.keras import ROWS
        print(json.dumps([row.availability("cpu") for row in ROWS if row.id == "keras-torch/LSTM"]))
    """)
    assert answers == ["Keras' backend is 'jax' in this process; this row needs KERAS_BACKEND=torch"]


@pytest.mark.parametrize("row_id", EVERY_ROW)
def test_environment_and_availability_in_the_rows_own_process(row_id):
    row = EVERY_ROW[row_id]
    needs(row)
    assert row.availability("cpu") is None
    env = row.environment("cpu")
    backend = backend_of(row)
    assert env["keras_backend"] == backend and env["keras"] and env[backend] and env["api"] == row.row.api, env
    assert env.get("x64", True) is True  # keras-jax: without x64 a float64 request comes back as float32 arrays
    assert env["device"].startswith("CPU")
    if row is TF2ONNX:
        assert env["converter"] == "tf2onnx.convert.from_function" and env["opset"] == tf2onnx.OPSET
        assert env["intra_op_threads"] >= 1 and "CPUExecutionProvider" in env["providers"]
    assert isinstance(row.availability("cuda"), str)  # no GPU here: a reason, not an error


# ---------------------------------------------------------------------------
# Compilations, weights and conversions kept
# ---------------------------------------------------------------------------

REUSE = """
    from backends.rows.keras import ROWS
    from backends.runtimes import keras as runtime
    from contract.answers import Cotangents
    from spec.cases import case_by_name, make_case_data
    row = next(r for r in ROWS if r.id == f"keras-{BACKEND}/LSTM")
    traces, assigned = [], []
    run = runtime.Stack.run
    def tracing(self, *args, **kwargs):
        traces.append(1)
        return run(self, *args, **kwargs)
    runtime.Stack.run = tracing
    d = make_case_data(case_by_name("stacked-bidirectional"), "float32")
    def copy(scale=1.0):  # the same parameter values (scale 1) in new arrays, or other values
        return d.params.with_tensors({k: v * np.float32(scale) for k, v in d.params.tensors().items()})
    counts = {}
    def forward(params, T=None):
        row.forward(params, d.x[:T], d.h0, d.c0, layer=d.layer)
    forward(copy())
    variables = row.stack(d.layer, False, d.case.I, d.case.H, "float32", "cpu").variables()
    assign = type(variables[0]).assign
    def assigning(self, value):
        assigned.append(1)
        return assign(self, value)
    type(variables[0]).assign = assigning
    for what, call in (("same values", lambda: forward(copy())), ("other values", lambda: forward(copy(0.5))),
                       ("other T", lambda: forward(copy(0.5), T=2))):
        call()
        counts[what] = [len(traces), len(assigned)]
    cotangents = Cotangents(d.dy, d.dh_T, d.dc_T)
    for what, scale in (("backward", 0.5), ("backward, other values", 2.0)):
        row.backward(copy(scale), d.x, d.h0, d.c0, cotangents, layer=d.layer)
        counts[what] = [len(traces), len(assigned)]
    counts["variables"] = len(variables)
    print(json.dumps(counts))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_trace_per_input_shape_and_weights_assigned_only_when_they_change(backend):
    """tf.function and jax.jit trace the stack once per input shape, whatever the parameter values; TensorFlow's and
    PyTorch's stacks assign the weights to their variables only when the values change (the row keeps one set of
    tensors per parameter values); PyTorch runs eagerly: a trace is a call."""
    needs(ROWS[f"keras-{backend}/LSTM"])
    counts = in_keras_process(backend, f"import numpy as np\nBACKEND = {backend!r}\n" + textwrap.dedent(REUSE))
    n = counts.pop("variables")
    assert n == 12  # 2 layers x 2 directions x (kernel, recurrent_kernel, bias)
    traces = [2, 3, 4, 5, 6] if backend == "torch" else [1, 1, 2, 3, 3]  # so far, after each call below
    assigned = [0, n, n, n, 2 * n] if backend != "jax" else [0] * 5  # JAX's stack is stateless: the weights are arguments
    calls = ["same values", "other values", "other T", "backward", "backward, other values"]
    assert counts == {call: [t, a] for call, t, a in zip(calls, traces, assigned)}


def test_tf2onnx_converts_once_per_parameter_values_for_any_batch_and_length():
    """A conversion takes seconds: the row keeps the ONNX model per parameter values (not per array objects), and
    that model takes any batch size and sequence length, as a user's converted model must."""
    needs(TF2ONNX)
    counts = in_keras_process("tensorflow", """
        import numpy as np
        from backends.rows.tf2onnx import ROWS, Tf2OnnxExport
        from spec.cases import case_by_name, make_case_data
        row = ROWS[0]
        exports = []
        export = Tf2OnnxExport.export
        def counting(self, *args, **kwargs):
            exports.append(1)
            return export(self, *args, **kwargs)
        Tf2OnnxExport.export = counting
        d = make_case_data(case_by_name("stacked-bidirectional"), "float32")
        def copy(scale=1.0):
            return d.params.with_tensors({k: v * np.float32(scale) for k, v in d.params.tensors().items()})
        counts = {}
        row.forward(copy(), d.x, d.h0, d.c0, layer=d.layer)
        counts["first"] = len(exports)
        row.forward(copy(), d.x[:2, :1], d.h0[:, :1], d.c0[:, :1], layer=d.layer)
        counts["same values, other T and B"] = len(exports)
        row.forward(copy(0.5), d.x, d.h0, d.c0, layer=d.layer)
        counts["other values"] = len(exports)
        print(json.dumps(counts))
    """)
    assert counts == {"first": 1, "same values, other T and B": 1, "other values": 2}


# ---------------------------------------------------------------------------
# Two layer cases the suite does not run
# ---------------------------------------------------------------------------

EXTRA_CASES = {
    case.name: case for case in (
        Case("reverse-stack-lengths", 5, 3, 3, 3, LayerConfig(num_layers=2, direction="reverse"), lengths=(5, 0, 2), seed=302),
        Case("reverse-mask-previous", 5, 3, 3, 3, LayerConfig(direction="reverse"), mask=("01101", "11100", "00000"), seed=304),
    )
}
#: Where a row departs from the spec on these cases, and the finding that says why (findings/keras_*.py).
DEPARTS = {
    ("keras-jax/LSTM", "reverse-mask-previous"): "keras_jax_rolled_mask_outputs_initial_state",
    # (reverse-stack-lengths is right there: a lone reverse direction meets its masked steps before any unmasked one)
    ("keras-tensorflow/RNN+LSTMCell+unroll", "reverse-stack-lengths"): "keras_tensorflow_unrolled_go_backwards_zeroes_mirrored_steps",
    **{("keras-torch/RNN+LSTMCell+unroll", c): "keras_torch_unrolled_go_backwards_mask_raises"
       for c in ("reverse-stack-lengths", "reverse-mask-previous")},
}


def worst_excess(got: dict, want: dict, kind: Kind) -> float:
    """The largest |got - want| / (atol + rtol |want|) over every tensor: at most 1 is within the suite's tolerance."""
    tol = tolerance("float32", kind)
    return max(float(np.max(np.abs(got[k] - want[k]) / (tol.atol + tol.rtol * np.abs(want[k])))) for k in want)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("case_name", EXTRA_CASES)
@pytest.mark.parametrize("row_id", EVERY_ROW)
def test_rows_on_cases_the_suite_does_not_run(row_id, case_name, kind):
    """A lone reverse direction over lengths in a stack, and over a mask whose masked steps output the previous
    output: float32 (every backend computes float32 in float32), the suite's tolerances. Where a row departs from the
    spec (by more than 1000 tolerances, or by raising) the finding says why, and the row declares it a known failure
    there."""
    row, case = EVERY_ROW[row_id], EXTRA_CASES[case_name]
    if kind is Kind.GRADIENTS and not row.gradients:
        pytest.skip(f"{row_id} computes no gradients")
    needs(row)
    d = make_case_data(case, "float32")
    options = dict(layer=d.layer, lengths=d.lengths, mask=d.mask)
    finding = DEPARTS.get((row_id, case_name))
    if finding is not None:
        assert row.known_failure(kind, dtype="float32", device="cpu", features=features_of(**options), case=case_name), \
            f"{row_id} departs from the spec on {case_name} (findings/{finding}.py) but declares no known failure there"
    expected = reference(d)
    try:
        if kind is Kind.GRADIENTS:
            got = row.backward(d.params, d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), **options).tensors()
        else:
            got = row.forward(d.params, d.x, d.h0, d.c0, **options).tensors()
    except RuntimeError as error:  # what the row's own process raised
        assert finding == "keras_torch_unrolled_go_backwards_mask_raises" and str(error).startswith("AttributeError"), error
        return
    excess = worst_excess(got, expected.gradients if kind is Kind.GRADIENTS else expected.outputs, kind)
    if finding is None:
        assert excess <= 1, f"{row_id} {case_name}: {excess:.3g} tolerances off the spec"
    else:
        assert excess > 1000, f"{row_id} {case_name} now follows the spec: update findings/{finding}.py and the known failures"
