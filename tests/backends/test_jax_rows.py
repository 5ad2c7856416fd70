"""The JAX rows (backends/rows/jax.py: jax/lax.scan, flax's two cells in nn.RNN stacks, jax.experimental.rnn): what
the conformance suite cannot see. Their declarations and reasons, availability with the install hint when jax or
flax is missing (and the modules importing without them), their layouts (exact round trips, the trees flax itself
makes, jax's own flat-weight packing), x64 switched on at the first float64 array and a float64 request computed in
float32 caught, every matrix product at precision "highest", one compilation per shape, and the mechanisms of their
known failures (flax's padded outputs and empty rows, lstm_ref's empty rows: wrong there, right everywhere else).

The layout tests are NumPy only and run without jax; the others skip with the row's own install hint.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from backends.layouts import flax as flax_layouts
from backends.layouts import jax_rnn as rnn_layouts
from backends.rows import jax as jax_rows
from backends.runtimes import jax as jax_runtime
from backends.runtimes.jax import (
    FLAX_MISSING,
    JAX_MISSING,
    MATMUL_PRECISION,
    JaxRuntime,
)
from contract.answers import Cotangents
from contract.errors import NotSupported, ResultError, Unavailable
from contract.layout import CELL_ARRAYS, fold_forget_bias
from contract.tolerances import tolerance
from contract.vocabulary import HALF_DTYPES, Feature, Kind
from spec import lstm
from spec.cases import Case, case_by_name, make_case_data, reference
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams
from spec.precision import Policy
from tests.suite import ROOT, subprocess_environment

ROWS = {row.id: row for row in jax_rows.ROWS}
SCAN = ROWS["jax/lax.scan"]
FLAX = [ROWS["flax/LSTMCell"], ROWS["flax/OptimizedLSTMCell"]]
RNN_REF, RNN_CUDNN = ROWS["jax/rnn.lstm_ref"], ROWS["jax/rnn.lstm"]
RUNNABLE = [SCAN, *FLAX, RNN_REF]  # on a CPU (rnn.lstm is cuDNN's)
TREE_NAMES = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
ARCHITECTURES = {
    "forward": LayerConfig(),
    "reverse": LayerConfig(direction="reverse"),
    "bidirectional": LayerConfig(direction="bidirectional"),
    "stacked": LayerConfig(num_layers=3),
    "bidirectional-stack": LayerConfig(num_layers=2, direction="bidirectional"),
}


def needs(row) -> None:
    """Skip with the row's own reason (the install hint when jax or flax is missing)."""
    if (reason := row.availability("cpu")) is not None:
        pytest.skip(f"{row.id}: {reason}")


def fresh(row):
    """The row with a runtime of its own: its own compilations, counted and inspected without touching the shared one."""
    return dataclasses.replace(row, runtime=JaxRuntime(row.runtime.name, with_flax=row.runtime.with_flax))


def params_for(layer: LayerConfig, dtype="float64", seed=51, I=3, H=2) -> LayerParams:
    return make_case_data(Case("unit", 5, 4, I, H, layer, seed=seed), dtype).params


def run_python(code: str, blocked: tuple[str, ...] = ()) -> object:
    """``code`` in a fresh Python process (jax not yet imported, x64 off), the ``blocked`` modules unimportable as if not
    installed; what it prints last, as JSON."""
    block = "".join(f"sys.modules[{module!r}] = None\n" for module in blocked)
    done = subprocess.run([sys.executable, "-c", "import json, sys\n" + block + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=subprocess_environment(PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def x64():
    """jax's x64 mode on, as the runtime switches it on at the first float64 array; as it was afterwards."""
    jax = pytest.importorskip("jax", reason=JAX_MISSING)
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", before)


# ---------------------------------------------------------------------------
# Declarations, and availability without jax or flax
# ---------------------------------------------------------------------------


def test_rows_and_the_reasons_they_give():
    assert list(ROWS) == ["jax/lax.scan", "flax/LSTMCell", "flax/OptimizedLSTMCell", "jax/rnn.lstm_ref", "jax/rnn.lstm"]

    def refusal(row, dtype="float64", **layer):
        return row.refusal(dtype=dtype, device="cpu", layer=LayerConfig(**layer))

    assert refusal(SCAN, peephole=True) is None
    assert refusal(SCAN, num_layers=2) == CELL_ARRAYS.reasons[Feature.STACKED]
    assert SCAN.refusal(dtype="float64", device="cpu", layer=LayerConfig(), lengths=np.array([1])) == jax_rows.NOT_A_LAYER
    for row in FLAX:
        assert refusal(row, peephole=True) == flax_layouts.NO_PEEPHOLES
        assert refusal(row, num_layers=2, direction="reverse") is None
        assert row.refusal(dtype="float64", device="cpu", layer=LayerConfig(), mask=np.ones((2, 1), bool)) == jax_rows.FLAX_NO_MASK
    for row in (RNN_REF, RNN_CUDNN):
        assert refusal(row, dtype="float32", direction="reverse") == rnn_layouts.REASONS[Feature.REVERSE]
        assert refusal(row, dtype="float32", peephole=True) == rnn_layouts.NO_PEEPHOLES
        assert row.refusal(dtype="float32", device="cpu", layer=LayerConfig(), mask=np.ones((2, 1), bool)) == jax_rows.RNN_NO_MASK
    assert refusal(RNN_REF, dtype="float16") is None
    assert "float32 only" in refusal(RNN_CUDNN) and "float32 only" in refusal(RNN_CUDNN, dtype="bfloat16")
    # Every runnable row is judged in both half types under half-every-operation, the policy JAX follows there.
    for row in RUNNABLE:
        assert {row.policy(half) for half in HALF_DTYPES} == {Policy.EVERY_OPERATION}, row.id


def test_known_failures_are_narrowed_to_where_they_live():
    def known(row, *features):
        return row.known_failure(Kind.OUTPUTS, dtype="float32", device="cpu", features=frozenset(features))

    lengths, empty = Feature.LENGTHS, Feature.EMPTY_SEQUENCES
    for row in FLAX:
        assert (known(row), known(row, lengths), known(row, lengths, empty)) == (
            None, jax_rows.FLAX_PADDED_OUTPUTS, jax_rows.FLAX_EMPTY_ROWS)
    assert (known(RNN_REF, lengths), known(RNN_REF, lengths, empty)) == (None, jax_rows.RNN_EMPTY_ROWS)
    # The scan's one: its float16 bias gradient on medium, where it was measured (AVX-512 CPUs).
    (bias,) = SCAN.known_failures
    assert (bias.reason, bias.kinds, bias.dtype, bias.cases, bias.cpu_has) == (
        jax_rows.BIAS_GRADIENT_IN_HALF, (Kind.GRADIENTS,), "float16", ("medium",), ("avx512f",))
    assert SCAN.known_failure(Kind.OUTPUTS, dtype="float16", device="cpu", case="medium") is None


AVAILABILITY = """
    from backends.rows.jax import ROWS
    imported = sorted(m for m in ("jax", "flax") if sys.modules.get(m) is not None)
    print(json.dumps({"imported": imported, **{r.id: [r.availability("cpu"), r.environment("cpu")] for r in ROWS}}))
"""


def test_without_jax_every_row_says_how_to_install_it_and_the_module_imports():
    answers = run_python(AVAILABILITY, blocked=("jax",))
    assert answers.pop("imported") == []  # the row module imports no framework of its own
    for row_id, (reason, environment) in answers.items():
        assert reason == JAX_MISSING, row_id
        assert environment.pop("unavailable") == JAX_MISSING  # environment() never raises
        assert environment == ({"function": f"jax.experimental.rnn.{ROWS[row_id].function}"} if "rnn" in row_id else {})


def test_without_flax_the_flax_rows_say_how_to_install_it():
    needs(SCAN)
    answers = run_python(AVAILABILITY, blocked=("flax",))
    answers.pop("imported")
    assert {row_id: reason for row_id, (reason, _) in answers.items()} == {
        "jax/lax.scan": None, "flax/LSTMCell": FLAX_MISSING, "flax/OptimizedLSTMCell": FLAX_MISSING,
        "jax/rnn.lstm_ref": None, "jax/rnn.lstm": answers["jax/rnn.lstm"][0]}
    assert answers["flax/LSTMCell"][1]["unavailable"] == FLAX_MISSING


def test_cuda_without_a_gpu_is_a_reason():
    needs(SCAN)
    jax = pytest.importorskip("jax", reason=JAX_MISSING)
    try:
        jax.devices("gpu")
    except RuntimeError:
        for row in (row for row in RUNNABLE if row.availability("cpu") is None):  # flax's rows want flax first
            assert "jax sees no GPU" in row.availability("cuda"), row.id
            assert row.environment("cuda")["unavailable"] == row.availability("cuda")
    else:
        pytest.skip("jax sees a GPU here")


def test_rnn_lstm_is_unavailable_on_a_cpu_with_jax_s_own_error_as_the_reason():
    """rnn.lstm is cuDNN's: on a CPU jaxlib, running it once is how the row learns why not (not a guess); its calls say so."""
    needs(RNN_REF)
    if pytest.importorskip("jax", reason=JAX_MISSING).default_backend() != "cpu":
        pytest.skip("jax runs on a GPU here: rnn.lstm may be available")
    reason = RNN_CUDNN.availability("cpu")
    assert reason.startswith("jax.experimental.rnn.lstm is cuDNN's LSTM (GPU only): on cpu it fails while tracing: AttributeError")
    d = make_case_data(case_by_name("small"), "float32")
    with pytest.raises(Unavailable, match="cuDNN"):
        RNN_CUDNN.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)
    assert RNN_CUDNN.environment("cpu")["function"] == "jax.experimental.rnn.lstm"


# ---------------------------------------------------------------------------
# The layouts (NumPy only)
# ---------------------------------------------------------------------------


def assert_same_params(got: LayerParams, want: LayerParams) -> None:
    assert got.num_directions == want.num_directions and got.tensors().keys() == want.tensors().keys()
    for name, tensor in want.tensors().items():
        assert got.tensors()[name].dtype == tensor.dtype and np.array_equal(got.tensors()[name], tensor), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_flax_stack_round_trip_is_exact_and_named_as_flax_names_it(name, dtype):
    layer = ARCHITECTURES[name]
    params = params_for(layer, dtype)
    native = flax_layouts.STACK.to_native(params, layer)
    assert list(native) == [f"layers_{l}" for l in range(layer.num_layers)]
    cells = [entry["cell"] for entry in native.values()] if layer.num_directions == 1 else \
        [entry[d]["cell"] for entry in native.values() for d in ("forward_rnn", "backward_rnn")]
    for tree, cell in zip(cells, params.cells, strict=True):
        assert set(tree) == TREE_NAMES
        assert np.array_equal(tree["ig"]["kernel"], cell.W[2].T) and np.array_equal(tree["hf"]["bias"], cell.b[1])
        assert all(a.dtype == np.dtype(dtype) and a.flags.c_contiguous for leaves in tree.values() for a in leaves.values())
    assert_same_params(flax_layouts.STACK.from_native(native, layer), params)
    # A gradient has no forget bias to fold, whatever the layer's.
    assert_same_params(flax_layouts.STACK.gradient(native, params, dataclasses.replace(layer, forget_bias=1.5)), params)


def test_the_forget_bias_is_folded_into_b_f():
    layer = LayerConfig(direction="bidirectional", forget_bias=0.75)
    params = params_for(layer)
    folded = LayerParams(tuple(dataclasses.replace(c, b=fold_forget_bias(c.b, 0.75)) for c in params.cells), 2)
    native = flax_layouts.STACK.to_native(params, layer)
    for k, gate in enumerate(GATES):
        assert np.array_equal(native["layers_0"]["backward_rnn"]["cell"]["h" + gate]["bias"],
                              params.cells[1].b[k] + (0.75 if gate == "f" else 0.0)), gate
    assert_same_params(flax_layouts.STACK.from_native(native, layer), folded)
    assert_same_params(rnn_layouts.FLAT_WEIGHTS.from_native(rnn_layouts.FLAT_WEIGHTS.to_native(params, layer), layer), folded)
    cell = params_for(LayerConfig(peephole=True, forget_bias=0.75))
    back = CELL_ARRAYS.from_native(CELL_ARRAYS.to_native(cell, LayerConfig(peephole=True, forget_bias=0.75)), LayerConfig(peephole=True))
    assert np.array_equal(back.cells[0].b, fold_forget_bias(cell.cells[0].b, 0.75))
    assert np.array_equal(back.cells[0].p, cell.cells[0].p)


def test_the_one_cell_layouts_hold_one_cell():
    """flax's cell tree (the benchmark's) and the spec's arrays (jax/lax.scan's): exact round trips, and a stack refused
    with the layout's reason."""
    params = params_for(LayerConfig(), I=5, H=6)
    tree = flax_layouts.CELL.to_native(params, LayerConfig())
    assert set(tree) == TREE_NAMES and tree["ii"]["kernel"].shape == (5, 6) and tree["hi"]["kernel"].shape == (6, 6)
    assert_same_params(flax_layouts.CELL.from_native(tree, LayerConfig()), params)
    peephole = params_for(LayerConfig(peephole=True))
    assert_same_params(CELL_ARRAYS.from_native(CELL_ARRAYS.to_native(peephole, LayerConfig(peephole=True)), LayerConfig()), peephole)
    for layout in (flax_layouts.CELL, CELL_ARRAYS):
        with pytest.raises(NotSupported, match=re.escape(layout.reasons[Feature.STACKED])):
            layout.to_native(params_for(LayerConfig(num_layers=2)), LayerConfig(num_layers=2))


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "reverse"])
def test_flat_weights_round_trip_is_exact_and_splits_b_into_halves(name):
    """b goes to b_ih and b_hh as two exact halves (an implementation that drops one cannot pass by luck); the gradient of
    b is the transpose of that split, the mean of the halves' gradients."""
    layer = ARCHITECTURES[name]
    params = params_for(layer)
    native = rnn_layouts.FLAT_WEIGHTS.to_native(params, layer)
    assert native["weights"].ndim == 1 and native["bidirectional"] == (layer.direction == "bidirectional")
    for (_, _, b_ih, b_hh), cell in zip(rnn_layouts.rnn_unpacked(native["weights"], 3, 2, layer.num_layers,
                                                                  native["bidirectional"]), params.cells, strict=True):
        assert np.array_equal(b_ih, cell.b.reshape(-1) / 2) and np.array_equal(b_hh, b_ih)
    assert_same_params(rnn_layouts.FLAT_WEIGHTS.from_native(native, layer), params)
    gradients = rnn_layouts.FLAT_WEIGHTS.gradient({"weights": native["weights"]}, params, layer)
    halved = LayerParams(tuple(dataclasses.replace(c, b=c.b / 2) for c in params.cells), params.num_directions)
    assert_same_params(gradients, halved)
    with pytest.raises(ValueError, match=r"^weights: expected shape \(\d+,\) for input_size=3"):
        rnn_layouts.rnn_unpacked(native["weights"][:-1], 3, 2, layer.num_layers, native["bidirectional"])


def test_layouts_refuse_what_their_framework_cannot_hold():
    for layout, feature, layer in ((flax_layouts.STACK, Feature.PEEPHOLE, LayerConfig(peephole=True)),
                                   (flax_layouts.STACK, Feature.PROJECTION, LayerConfig(proj_size=1)),
                                   (rnn_layouts.FLAT_WEIGHTS, Feature.REVERSE, LayerConfig(direction="reverse")),
                                   (rnn_layouts.FLAT_WEIGHTS, Feature.PEEPHOLE, LayerConfig(peephole=True))):
        with pytest.raises(NotSupported) as raised:
            layout.to_native(params_for(layer, H=3), layer)
        assert str(raised.value) == layout.reasons[feature]
    assert flax_layouts.STACK.holds == {Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL}
    assert rnn_layouts.FLAT_WEIGHTS.holds == {Feature.STACKED, Feature.BIDIRECTIONAL}


# ---------------------------------------------------------------------------
# The layouts against the frameworks' own
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("cell", ["LSTMCell", "OptimizedLSTMCell"])
def test_the_stack_tree_is_the_one_flax_inits(cell, name):
    """The module the rows apply, initialised by flax: the layout's tree has its structure, shapes and dtypes."""
    needs(FLAX[0])
    import jax

    layer = ARCHITECTURES[name]
    d = make_case_data(Case("unit", 5, 4, 3, 2, layer, seed=52), "float32")
    stack = jax_rows.flax_stack(cell, 2, layer.num_layers, layer.direction, "float32")
    cells = [(d.c0[k], d.h0[k]) for k in range(len(d.params.cells))]
    carries = [cells[l] if layer.num_directions == 1 else (cells[2 * l], cells[2 * l + 1]) for l in range(layer.num_layers)]
    flax_params = stack.init(jax.random.key(0), d.x, carries, None)["params"]
    native = flax_layouts.STACK.to_native(d.params, layer)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, np.dtype(a.dtype)), tree)  # noqa: E731
    assert jax.tree_util.tree_structure(dict(flax_params)) == jax.tree_util.tree_structure(native)
    assert shapes(dict(flax_params)) == shapes(native)


@pytest.mark.parametrize("cell", ["LSTMCell", "OptimizedLSTMCell"])
def test_the_cell_tree_is_the_one_flax_uses(cell, x64):
    """A real flax cell: its tree has the layout's structure, shapes and dtypes, and one step of it on the layout's tree
    is the spec's step."""
    needs(FLAX[0])
    import flax.linen as nn

    d = make_case_data(Case("unit", 1, 3, 5, 6, LayerConfig(), seed=41))
    module = getattr(nn, cell)(features=6, param_dtype=x64.numpy.float64)
    carry = (x64.numpy.asarray(d.c0[0]), x64.numpy.asarray(d.h0[0]))
    flax_params = module.init(x64.random.key(0), carry, x64.numpy.asarray(d.x[0]))["params"]
    native = flax_layouts.CELL.to_native(d.params, LayerConfig())
    shapes = lambda tree: x64.tree_util.tree_map(lambda a: (a.shape, np.dtype(a.dtype)), tree)  # noqa: E731
    assert shapes(dict(flax_params)) == shapes(native)
    (c1, h1), _ = module.apply({"params": native}, carry, x64.numpy.asarray(d.x[0]))
    step = lstm.forward(d.params.cells[0], d.x, d.h0[0], d.c0[0])
    np.testing.assert_allclose(np.asarray(h1), step.h_T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(c1), step.c_T, rtol=0, atol=1e-14)


def test_flax_keep_order_false_would_return_processing_order(x64):
    """Why the rows pass keep_order=True: flax's default returns a reverse direction's outputs in processing order, the
    spec's y reversed in time."""
    needs(FLAX[0])
    import flax.linen as nn

    d = make_case_data(Case("unit", 5, 4, 3, 2, LayerConfig(direction="reverse"), seed=53))
    tree = flax_layouts.STACK.to_native(d.params, d.layer)["layers_0"]
    rnn = nn.RNN(nn.LSTMCell(2, param_dtype=x64.numpy.float64), time_major=True, reverse=True)  # keep_order=False
    y = np.asarray(rnn.apply({"params": tree}, d.x, initial_carry=(d.c0[0], d.h0[0])))
    spec_y = reference(d).outputs["y"]
    np.testing.assert_allclose(y[::-1], spec_y, rtol=0, atol=1e-12)
    assert np.abs(y - spec_y).max() > 0.05


def test_flat_weights_are_jax_s_own_packing():
    """What rnn_flat_weights packs, jax's unpack_lstm_weights unpacks (W_ih = W (4H, in), W_hh = U, two bias halves,
    pseudo-layer k = l * D + d), its size is get_num_params_in_lstm's, and rnn_unpacked unpacks it as jax does."""
    needs(RNN_REF)
    from jax.experimental import rnn

    layer = LayerConfig(num_layers=2, direction="bidirectional")
    params = params_for(layer)
    flat = rnn_layouts.FLAT_WEIGHTS.to_native(params, layer)["weights"]
    assert flat.size == rnn.get_num_params_in_lstm(3, 2, 2, True)
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, 3, 2, 2, True)
    for k, (cell, ours) in enumerate(zip(params.cells, rnn_layouts.rnn_unpacked(flat, 3, 2, 2, True), strict=True)):
        assert np.array_equal(W_ih[k], cell.W.reshape(8, -1)) and np.array_equal(W_hh[k], cell.U.reshape(8, 2))
        assert np.array_equal(b_ih[k], cell.b.reshape(-1) / 2) and np.array_equal(b_hh[k], cell.b.reshape(-1) / 2)
        assert all(np.array_equal(a, b) for a, b in zip(ours, (W_ih[k], W_hh[k], b_ih[k], b_hh[k]), strict=True))


# ---------------------------------------------------------------------------
# Numerics: x64, matmul precision; one compilation per shape
# ---------------------------------------------------------------------------


def test_x64_is_switched_on_at_the_first_float64_array_and_the_environment_says_so():
    needs(FLAX[0])
    found = run_python("""
        from backends.rows.jax import ROWS
        from spec.cases import case_by_name, make_case_data
        flax = next(r for r in ROWS if r.id == "flax/LSTMCell")
        seen = {"before": flax.environment("cpu")}
        for dtype in ("float32", "float64"):
            d = make_case_data(case_by_name("small"), dtype)
            out = flax.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)
            seen[dtype] = [flax.environment("cpu")["x64"], str(out.y.dtype)]
        print(json.dumps(seen))
    """)
    before = found.pop("before")
    assert before["x64"] == "off (switched on at the first float64 run)" and before["matmul_precision"] == MATMUL_PRECISION
    assert {"jax", "jaxlib", "flax", "device", "default_backend", "cpu_count"} <= set(before), before
    assert found == {"float32": [before["x64"], "float32"], "float64": ["on", "float64"]}


def test_a_float64_request_computed_in_float32_is_caught(monkeypatch, x64):
    """Without x64 jax computes a float64 request in float32 (device_put truncates silently): the contract notices from
    the answer's dtype, and it is a failure, not "not supported" (here x64 is off and the runtime kept from switching it
    on)."""
    needs(SCAN)
    d = make_case_data(case_by_name("small"))
    monkeypatch.setattr(jax_runtime, "x64_enabled", lambda: True)
    x64.config.update("jax_enable_x64", False)
    with warnings.catch_warnings(), pytest.raises(ResultError, match="^y: wrong dtype: expected float64, got float32"):
        warnings.simplefilter("ignore")
        fresh(SCAN).forward(d.params, d.x, d.h0, d.c0, layer=d.layer)


CASES = {"jax/lax.scan": "small-peephole", "flax/LSTMCell": "stacked-bidirectional", "flax/OptimizedLSTMCell": "reverse-standard",
         "jax/rnn.lstm_ref": "packed"}


class Recorded:
    """A jitted function that keeps its last arguments, to lower it again."""

    def __init__(self, jitted):
        self.jitted, self.arguments = jitted, None

    def __call__(self, *arguments):
        self.arguments = arguments
        return self.jitted(*arguments)

    def hlo(self) -> str:
        return self.jitted.lower(*self.arguments).as_text()


@pytest.mark.parametrize("row", RUNNABLE, ids=lambda r: r.id)
def test_every_matrix_product_is_highest_precision(row, monkeypatch):
    """In what the runtime compiles, forward and gradients: no TF32 or bf16 pass on a GPU."""
    needs(row)
    import jax

    jax_runtime.experimental_rnn()  # imported (with its own jitted helpers) before jax.jit is watched
    recorded = []
    jit = jax.jit

    def watched(function=None, **options):
        if function is None:  # jax.jit(static_argnames=...) as a decorator: not the runtime's
            return jit(**options)
        recorded.append(Recorded(jit(function, **options)))
        return recorded[-1]

    monkeypatch.setattr(jax, "jit", watched)
    d = make_case_data(case_by_name(CASES[row.id]), "float32")
    row = fresh(row)
    row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
    row.backward(d.params, d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), layer=d.layer, lengths=d.lengths)
    assert len(recorded) == 2
    for function in recorded:
        dots = [line for line in function.hlo().splitlines() if "dot_general" in line]
        assert dots and all("precision = [HIGHEST, HIGHEST]" in line for line in dots), dots


@pytest.mark.parametrize("row", RUNNABLE, ids=lambda r: r.id)
def test_one_compilation_per_shape(row):
    """jax traces the row's call once per input shape and dtype, whatever the parameter values; gradients once more."""
    needs(row)
    row = fresh(row)
    traces = []
    call = row.call
    row.call = lambda *arguments, **options: traces.append(1) or call(*arguments, **options)
    d = make_case_data(case_by_name(CASES[row.id]), "float32")
    other_values = d.params.with_tensors({name: t * np.float32(0.5) for name, t in d.params.tensors().items()})
    twice = lambda a: None if a is None else np.concatenate([a, a], axis=-1 if a.ndim == 1 else 1)  # noqa: E731
    counts = []
    for params, x, h0, c0, extra in ((d.params, d.x, d.h0, d.c0, d.lengths),
                                     (other_values, d.x * 2, d.h0, d.c0, d.lengths),
                                     (d.params, twice(d.x), twice(d.h0), twice(d.c0), twice(d.lengths))):
        row.forward(params, x, h0, c0, layer=d.layer, lengths=extra)
        counts.append(len(traces))
    cotangents = Cotangents(d.dy, d.dh_T, d.dc_T)
    for scale in (1.0, 0.5):
        row.backward(d.params, d.x * scale, d.h0, d.c0, cotangents, layer=d.layer, lengths=d.lengths)
        counts.append(len(traces))
    assert counts == [1, 1, 2, 3, 3]


# ---------------------------------------------------------------------------
# The known failures' mechanisms: wrong where declared, right everywhere else
# ---------------------------------------------------------------------------


def within(got, want, kind=Kind.OUTPUTS, dtype="float64"):
    tol = tolerance(dtype, kind)
    np.testing.assert_allclose(got, want, rtol=tol.rtol, atol=tol.atol)


@pytest.mark.parametrize("row", FLAX, ids=lambda r: r.id)
def test_flax_leaves_padded_outputs_and_nothing_else_wrong(row):
    """Lengths >= 1 in a stacked bidirectional layer: valid steps and final states are the spec's; the padded steps'
    outputs are not zeroed (FLAX_PADDED_OUTPUTS, flax's documented behaviour)."""
    needs(row)
    d = make_case_data(case_by_name("packed"))
    out, want = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths), reference(d).outputs
    valid = np.arange(d.x.shape[0])[:, None] < d.lengths[None, :]
    within(out.y[valid], want["y"][valid])
    within(out.h_T, want["h_T"])
    within(out.c_T, want["c_T"])
    assert np.abs(out.y[~valid]).min() > 0


@pytest.mark.parametrize("row", [*FLAX, RNN_REF], ids=lambda r: r.id)
def test_an_empty_row_gets_the_state_after_all_steps_and_the_others_are_right(row):
    """A row of length 0 comes back with the final state of the same row run over all T steps (both pick
    carry[seq_lengths - 1], index -1), where the spec keeps its initial state; every other row's final state is the
    spec's, and lstm_ref's outputs for the empty row are zeros, as the spec's."""
    needs(row)
    d = make_case_data(case_by_name("lengths"))
    empty = d.lengths == 0
    out = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
    full = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=np.where(empty, d.x.shape[0], d.lengths))
    want = reference(d).outputs
    within(out.h_T[:, empty], full.h_T[:, empty])
    assert np.abs(out.h_T[:, empty] - want["h_T"][:, empty]).max() > 0.01
    within(out.h_T[:, ~empty], want["h_T"][:, ~empty])
    within(out.c_T[:, ~empty], want["c_T"][:, ~empty])
    if row is RNN_REF:
        within(out.y, want["y"])
