"""The LiteRT row of Keras 3's converted LSTM (backends/rows/litert_keras.py): what the conformance suite cannot see.
Its declarations and reasons (without TensorFlow), availability with the install hints when TensorFlow, Keras or
LiteRT is missing, and, where all three are installed, the fact the row is built on (TFLiteConverter turns Keras 3's
LSTM into WHILE loops, one per layer and direction, not the fused UNIDIRECTIONAL_SEQUENCE_LSTM: a release that changes
it fails here loudly), one conversion per parameter values and batch size whatever T, two cases judged against the
spec, and the model's bytes cut short refused naming the model.

Keras fixes its backend at its first import, so nothing here imports Keras in the test process: the row runs in its
own process (contract/remote.py, through the loader), and what needs the row's internals runs in a subprocess started
with its ``process_environment``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from backends.layouts import keras as layouts
from backends.rows import litert_keras
from backends.runtimes.keras import BIDIRECTIONAL_ZEROES_MASKED_STEPS, CALL_FEATURES, KERAS_HINT
from backends.runtimes.litert import INSTALL_HINT as LITERT_HINT
from backends.runtimes.litert import NO_CUDA
from backends.runtimes.tensorflow import INSTALL_HINT as TENSORFLOW_HINT
from contract.loading import load_rows
from contract.tolerances import tolerance
from contract.vocabulary import ARCHITECTURE, CONFORMANCE_DTYPES, Device, Dtype, Feature, Kind
from spec.cases import case_by_name, make_case_data, reference
from spec.layer import LayerConfig
from tests.suite import ROOT, subprocess_environment

(ROW,) = litert_keras.ROWS  # this process's copy: its declarations need no framework
MODULES = ("tensorflow", "keras", "ai_edge_litert")


def needs_everything() -> None:
    for module, hint in (("tensorflow", TENSORFLOW_HINT), ("keras", KERAS_HINT), ("ai_edge_litert", LITERT_HINT)):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{ROW.id}: {hint}")


def in_row_process(code: str, *, blocked: tuple[str, ...] = ()) -> object:
    """Run ``code`` in a Python process with the row's environment (KERAS_BACKEND=tensorflow), the ``blocked`` modules
    unimportable as if not installed; what it prints last, as JSON."""
    block = "".join(f"sys.modules[{module!r}] = None\n" for module in blocked)
    source = "import json, sys\n" + block + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False, env=subprocess_environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
                                                                  **ROW.process_environment))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Declarations (no framework needed)
# ---------------------------------------------------------------------------


def test_importing_the_row_imports_no_framework():
    imported = in_row_process("""
        import backends.rows.litert_keras
        print(json.dumps(sorted(m for m in ("tensorflow", "keras", "ai_edge_litert", "tf_keras") if m in sys.modules)))
    """)
    assert imported == []


def test_declarations():
    assert ROW.id == "litert/keras.layers.LSTM" and ROW.origin == "backends.rows.litert_keras"
    assert dict(ROW.process_environment) == {"KERAS_BACKEND": "tensorflow"}
    assert ROW.dtypes == (Dtype.FLOAT32,) and ROW.devices == (Device.CPU,) and not ROW.gradients
    assert ROW.layout is layouts.LSTM and ROW.api == "keras.layers.LSTM"
    # Keras' architecture (stacks, directions) and every call feature of a Keras stack: masks and lengths convert.
    assert ROW.features == {Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL} | CALL_FEATURES
    assert ROW.known_failures == ()
    assert ROW.policies == {}


#: One layer per architecture feature Keras' layouts cannot hold, and the reason (a projection's clip and bias need a
#: projection, which is refused first).
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


def test_refusals_and_their_reasons():
    assert set(CANNOT_HOLD) == ARCHITECTURE - ROW.layout.holds
    for layer, reason in CANNOT_HOLD.values():
        assert ROW.refusal(dtype="float32", device="cpu", layer=layer) == reason
    layer = LayerConfig()
    for dtype in CONFORMANCE_DTYPES:
        reason = ROW.refusal(dtype=dtype, device="cpu", layer=layer)
        assert (reason is None) == (dtype == Dtype.FLOAT32), dtype
    assert "refuses a float64 Keras LSTM" in ROW.refusal(dtype="float64", device="cpu", layer=layer)
    assert "dequantizes them to float32" in ROW.refusal(dtype="float16", device="cpu", layer=layer)
    assert "refuses a bfloat16 Keras LSTM" in ROW.refusal(dtype="bfloat16", device="cpu", layer=layer)
    assert ROW.refusal(dtype="float32", device="cpu", layer=layer, gradients=True) == \
        "LiteRT is an inference runtime: it has no gradients"
    assert ROW.refusal(dtype="float32", device="cuda", layer=layer) == NO_CUDA
    mask, lengths = np.ones((4, 2), bool), np.array([4, 0])
    bidirectional = LayerConfig(direction="bidirectional")
    assert ROW.refusal(dtype="float32", device="cpu", layer=bidirectional, mask=mask) == BIDIRECTIONAL_ZEROES_MASKED_STEPS
    for layer, options in ((LayerConfig(direction="bidirectional", zero_output_for_mask=True), {"mask": mask}),
                           (LayerConfig(direction="reverse", num_layers=2), {"mask": mask}),
                           (LayerConfig(direction="forward"), {"mask": mask}),  # the previous output at masked steps
                           (bidirectional, {"lengths": lengths})):
        assert ROW.refusal(dtype="float32", device="cpu", layer=layer, **options) is None, layer


# ---------------------------------------------------------------------------
# Availability: never a crash, the install hint of the first missing module
# ---------------------------------------------------------------------------

AVAILABILITY = """
    from backends.rows.litert_keras import ROWS
    (row,) = ROWS
    print(json.dumps([row.availability("cpu"), row.environment("cpu")]))
"""


@pytest.mark.parametrize("blocked", [("ai_edge_litert",), ("keras",), ("tensorflow",), ("tensorflow", "ai_edge_litert")],
                         ids="+".join)
def test_without_a_module_the_row_says_how_to_install_it(blocked):
    """The hint of the first module of NEEDED that is missing (TensorFlow before Keras, which imports it, before LiteRT);
    the environment names each missing one, and neither call raises."""
    reason, environment = in_row_process(AVAILABILITY, blocked=blocked)
    unavailable = [hint for module, hint in litert_keras.NEEDED
                   if module.split(".")[0] in blocked or importlib.util.find_spec(module.split(".")[0]) is None]
    assert reason == unavailable[0]
    assert "environment() failed" not in environment, environment
    if "ai_edge_litert" in blocked:
        assert environment["ai-edge-litert"] == f"unavailable: {LITERT_HINT}", environment
    if "tensorflow" in blocked:
        assert environment["tensorflow"] == f"unavailable: {TENSORFLOW_HINT}", environment


# ---------------------------------------------------------------------------
# With TensorFlow, Keras and LiteRT
# ---------------------------------------------------------------------------

CONVERSIONS = """
    import numpy as np
    from backends.rows import litert_keras
    from backends.runtimes.litert import ModelError
    from spec.cases import case_by_name, make_case_data
    (row,) = litert_keras.ROWS
    answers = {"availability": row.availability("cpu"), "environment": row.environment("cpu")}
    conversions = []
    convert = litert_keras.LiteRtKerasLSTM.convert
    def counting(self, *args, **kwargs):
        conversions.append(1)
        return convert(self, *args, **kwargs)
    litert_keras.LiteRtKerasLSTM.convert = counting
    d = make_case_data(case_by_name("stacked-bidirectional"), "float32")
    def copy(scale=1.0):  # the same parameter values (scale 1) in new arrays, or other values
        return d.params.with_tensors({k: v * np.float32(scale) for k, v in d.params.tensors().items()})
    counts = {}
    row.forward(copy(), d.x, d.h0, d.c0, layer=d.layer)
    counts["first"] = len(conversions)
    row.forward(copy(), d.x[:2], d.h0, d.c0, layer=d.layer)
    counts["same values, other T"] = len(conversions)
    row.forward(copy(), d.x[:, :1], d.h0[:, :1], d.c0[:, :1], layer=d.layer)
    counts["same values, other B"] = len(conversions)
    row.forward(copy(0.5), d.x, d.h0, d.c0, layer=d.layer)
    counts["other values"] = len(conversions)
    answers["conversions"] = counts
    model = row.converted(d.params, d.layer, d.x.shape[1])
    answers["plan"] = model.plan
    answers["subgraphs"] = litert_keras.every_operator(model.content)
    refusals = {}
    for cut in (4, 100, len(model.content) // 2, len(model.content) - 1):
        try:
            row.interpreter(model.content[:cut], d.layer, "the test's model")
            refusals[cut] = None
        except ModelError as error:
            refusals[cut] = str(error)
    answers["truncated"] = refusals
    import tensorflow as tf
    tanh = tf.function(tf.tanh).get_concrete_function(tf.TensorSpec((1, 2), tf.float32))
    try:  # a model that runs neither a loop nor the fused op
        row.interpreter(tf.lite.TFLiteConverter.from_concrete_functions([tanh]).convert(), d.layer, "a tanh model")
        answers["no loop"] = None
    except ModelError as error:
        answers["no loop"] = str(error)
    from backends.layouts.tflite import FUSED_OPS
    from backends.runtimes.litert import layer_model
    from spec.layer import LayerConfig
    from spec.params import LayerParams
    one = LayerConfig()  # one forward layer: one fused op, where the stack needs one per layer and direction
    native = FUSED_OPS.to_native(LayerParams(d.params.cells[:1]), one)
    fused = layer_model({name: np.asarray(value, np.float32) for name, value in native.items()}, one,
                        input_size=d.case.I, hidden_size=d.case.H, output_size=d.case.H, T=2, B=1)
    try:
        row.interpreter(fused, d.layer, "a fused model")
        answers["fused, one op"] = None
    except ModelError as error:
        answers["fused, one op"] = str(error)
    print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def converted():
    needs_everything()
    return in_row_process(CONVERSIONS)


def test_keras3_lstm_converts_to_one_while_loop_per_layer_and_direction(converted):
    """The fact this row is built on: TFLiteConverter (TensorFlow 2.21) converts Keras 3's LSTM to WHILE loops, not to
    the fused UNIDIRECTIONAL_SEQUENCE_LSTM (tensorflow/tensorflow#126061; findings/tflite_keras3_lstm_converts_to_while_loop.py).
    A release that fuses it again fails here: the row then judges the fused op, and this test, its docstring and the
    row's description need updating."""
    plan, subgraphs = converted["plan"], converted["subgraphs"]
    assert plan.count("WHILE") == 4, plan  # stacked-bidirectional: 2 layers x 2 directions
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in plan and "BIDIRECTIONAL_SEQUENCE_LSTM" not in plan, plan
    assert not any("SEQUENCE_LSTM" in op or op == "LSTM" for ops in subgraphs.values() for op in ops), subgraphs
    bodies = [ops for name, ops in subgraphs.items() if name.endswith("while_body")]
    assert len(bodies) == 4, list(subgraphs)
    for ops in bodies:  # the cell, in builtin ops
        assert {"FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL", "ADD"} <= set(ops), ops


def test_environment_records_versions_and_what_ran(converted):
    assert converted["availability"] is None
    env = converted["environment"]
    assert env["keras_backend"] == "tensorflow" and env["keras"] and env["tensorflow"] and env["ai-edge-litert"], env
    assert env["converter"] == litert_keras.CONVERTER and env["num_threads"] >= 1
    assert env["recurrence"] == "WHILE (one per layer and direction)", env
    assert "WHILE" in env["ops_run"] and "FULLY_CONNECTED" in env["loop_ops"], env


def test_one_conversion_per_parameter_values_and_batch_whatever_the_length(converted):
    assert converted["conversions"] == {"first": 1, "same values, other T": 1, "same values, other B": 2,
                                        "other values": 3}


def test_model_bytes_cut_short_are_refused_naming_the_model(converted):
    for cut, error in converted["truncated"].items():
        assert error is not None and error.startswith("the test's model: "), (cut, error)
        assert "truncated or corrupt" in error or "file identifier" in error, (cut, error)


def test_a_model_without_one_loop_or_fused_op_per_cell_is_refused(converted):
    error = converted["no loop"]
    assert error is not None and error.startswith("a tanh model: no WHILE or UNIDIRECTIONAL_SEQUENCE_LSTM"), error
    assert "TANH" in error
    error = converted["fused, one op"]
    assert error is not None and error.startswith("a fused model: {'UNIDIRECTIONAL_SEQUENCE_LSTM': 1} in LiteRT's "
                                                  "execution plan, expected 4"), error


@pytest.mark.parametrize("case_name", ["stacked-bidirectional", "lengths", "forward-mask-previous"])
def test_cases_pass_against_the_spec(case_name):
    """Through the loader, as the suite runs it (its own process): within the suite's float32 tolerances."""
    needs_everything()
    (row,) = load_rows("backends.rows.litert_keras")
    d = make_case_data(case_by_name(case_name), "float32")
    got = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths, mask=d.mask).tensors()
    expected = reference(d).outputs
    tol = tolerance("float32", Kind.OUTPUTS)
    for name, want in expected.items():
        excess = np.max(np.abs(got[name] - want) / (tol.atol + tol.rtol * np.abs(want)))
        assert excess <= 1, (name, excess)
