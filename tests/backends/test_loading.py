"""Loading third-party implementations (contract/loading.py) and running rows in a process of their own
(contract/remote.py, contract/serve.py).

The loader: what --backend accepts (a .py path, a module, module:object), every message it gives when it cannot load
a target (each naming the target, a plug-in written against the old modules told what they became), and the plug-in
function contracts: which of the cell's functions (forward, backward) and the layer's (forward_layer, backward_layer)
runs which case, what a plug-in declares and lacks, and its answers checked in its own names ("h_seq: wrong dtype",
"gradient W: missing"). The README's two examples pass every case they run. Rows in their own process: calls and
errors carried back as they were raised, a crash reported with its signal, a hang stopped, and a fresh child after
either.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest

from conformance.isolation import deadline
from contract.answers import Cotangents
from contract.errors import Crashed, NotSupported, ResultError, TimedOut
from contract.half_bounds import bound_cases
from contract.loading import BackendLoadError, FunctionRow, load_rows, placed
from contract.remote import Remote
from contract.row import Row
from contract.vocabulary import Feature, features_of, in_order
from spec.cases import case_by_name, case_set, is_cell, make_case_data, reference
from spec.layer import LayerConfig
from tests.suite import EXAMPLE, example_with, plugin, run_suite

LAYER_EXAMPLE = EXAMPLE.parent / "numpy_layer_lstm.py"


def data(name="small", dtype="float64"):
    return make_case_data(case_by_name(name), dtype)


def forward(row, d):
    return row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths, mask=d.mask)


def backward(row, d):
    return row.backward(d.params, d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), layer=d.layer, lengths=d.lengths,
                        mask=d.mask)


# ---------------------------------------------------------------------------
# The README's examples, through the suite
# ---------------------------------------------------------------------------


def test_the_readme_example_passes_every_plain_cell_case_and_declines_the_rest(tmp_path):
    """examples/numpy_lstm.py implements the cell (forward, backward): it runs the cases that are a plain cell, both
    dtypes, outputs and gradients, and passes them; the layer's cases are "not supported" (skipped)."""
    result = run_suite(tmp_path, "--backend", str(EXAMPLE))
    assert result.returncode == 0, result.output
    cells = sum(is_cell(case) for case in case_set())
    halves = 4 * len(bound_cases())  # declares no half type: both kinds in bfloat16 and float16, not supported
    assert f"{4 * cells} passed, {4 * (len(case_set()) - cells) + halves} skipped" in result.stdout, result.output


def test_a_plugin_with_swapped_gates_fails_and_says_where(tmp_path):
    # The classic porting bug: f and g blocks exchanged when loading W.
    broken = example_with(tmp_path, "swapped", "example/swapped", {
        "W, U, b, p = params.W, params.U, params.b, params.p": "W, U, b, p = params.W[[0, 2, 1, 3]], params.U, params.b, params.p"})
    result = run_suite(tmp_path, "--backend", broken, "--dtype", "float64", "-k", "test_outputs and small and not peephole")
    assert result.returncode == 1, result.output
    assert "example/swapped" in result.stdout
    assert "y: worst error" in result.stdout and "batch row" in result.stdout, result.output


KERNEL_EXAMPLE = EXAMPLE.parent / "torch_kernel_row.py"


def test_the_kernel_row_example_passes_its_cases_and_a_gate_swap_in_its_kernel_is_caught(tmp_path):
    """examples/torch_kernel_row.py, the README's Row subclass: only its call is its own. It passes every case with the
    features it declares (stacked); the same row with f and g read the other way round fails with that diagnosis."""
    pytest.importorskip("torch", reason="needs torch: pip install 'lstm-conformance[torch]'")
    (row,) = load_rows(str(KERNEL_EXAMPLE))
    declared = [c for c in case_set() if features_of(c.layer, make_case_data(c).lengths, make_case_data(c).mask) <= row.features]
    result = run_suite(tmp_path, "--backend", str(KERNEL_EXAMPLE))
    assert result.returncode == 0, result.output
    assert f"{4 * len(declared)} passed" in result.stdout, result.output
    swapped = plugin(tmp_path, "swapped_kernel", KERNEL_EXAMPLE.read_text().replace(
        "i, f, g, o = (x_t", "i, g, f, o = (x_t").replace('"example/torch-kernel"', '"example/swapped-kernel"'))
    result = run_suite(tmp_path, "--backend", swapped, "--dtype", "float64", "-k", "test_outputs and small and not peephole")
    assert result.returncode == 1, result.output
    assert "diagnosis: matches the spec if gates f and g are swapped" in result.stdout, result.output


def test_the_layer_example_passes_every_case_it_declares(tmp_path):
    """examples/numpy_layer_lstm.py, the layer's functions only: it runs the cell's cases too (as one-layer layers), and
    passes every case whose features it declares, both dtypes, gradients included; the others are "not supported",
    declared, with its reason naming the first feature it lacks."""
    (example,) = load_rows(str(LAYER_EXAMPLE))
    result = run_suite(tmp_path, "--backend", str(LAYER_EXAMPLE), "-n", "auto")
    assert result.returncode == 0, result.output
    assert {column: cell["status"] for column, cell in result.report["matrix"][example.id].items()} == {
        **{f"{dtype} cpu {kind}": "pass" for dtype in ("float32", "float64") for kind in ("outputs", "gradients")},
        **{f"{dtype} cpu {kind}": "not supported" for dtype in ("bfloat16", "float16") for kind in ("outputs", "gradients")}}
    unsupported = {}  # case -> the reason it must carry
    for case in case_set():
        d = make_case_data(case)
        missing = [f for f in in_order(features_of(case.layer, d.lengths, d.mask)) if f not in example.features]
        if missing:
            unsupported[case.name] = f"{example.id} does not support {missing[0].meaning}"
    assert 0 < len(unsupported) < len(case_set())
    for r in result.results(example.id):
        if r["dtype"] in ("bfloat16", "float16"):
            assert (r["status"], r["declared"]) == ("not supported", True), r
        elif r["case"] in unsupported:
            assert (r["status"], r["declared"], r["detail"]) == ("not supported", True, unsupported[r["case"]]), r
        else:
            assert r["status"] == "pass", r


# ---------------------------------------------------------------------------
# Targets, and every message the loader gives
# ---------------------------------------------------------------------------

FORWARD = "def forward(params, x, h0, c0, *, forget_bias): pass\n"
FORWARD_LAYER = "def forward_layer(params, x, h0, c0, *, config, lengths, mask): pass\n"


@pytest.mark.parametrize(
    "source, message",
    [
        ("X = 1\n", "found no implementation. Define ROWS (or ROW) holding contract.row.Row objects, or functions"),
        ("raise RuntimeError('boom')\n", "importing it failed: RuntimeError: boom"),
        ("DTYPES = ('float8',)\n" + FORWARD, "DTYPES = ('float8',): each must be one of ('float32', 'float64', 'bfloat16', "
         "'float16')"),
        # A half type is judged by the precision policy the implementation declares: every mistake in declaring one.
        ("DTYPES = ('float16',)\n" + FORWARD, "impl declares float16 without the precision policy it follows there: "
         "policies={'float16': ...}, one of half-storage-float32-accumulation, half-every-operation, float32-cell-state, "
         "mixed-precision"),
        ("DTYPES = ('bfloat16',)\nPOLICY = 'half-storage'\n" + FORWARD,
         "impl policies['bfloat16']: policy: unknown precision policy 'half-storage'; the policies are "
         "half-storage-float32-accumulation, half-every-operation"),
        ("DTYPES = ('bfloat16',)\nPOLICY = 'tf32-products'\n" + FORWARD,
         "impl policies['bfloat16']: precision policy 'tf32-products' holds float32 data, not 'bfloat16'"),
        ("POLICY = 'half-every-operation'\n" + FORWARD,
         "POLICY = 'half-every-operation' is declared, but DTYPES = ('float32', 'float64') has no half type"),
        ("DTYPES = ('float32', 'bfloat16')\nPOLICIES = {'float32': 'half-every-operation'}\n" + FORWARD,
         "impl policies: float32 is judged by the spec's tolerances, not by a precision policy"),
        ("DTYPES = ('float16',)\nPOLICIES = {'bfloat16': 'half-every-operation'}\n" + FORWARD,
         "impl policies: a policy for bfloat16, which it does not declare in dtypes"),
        ("DTYPES = ('float16',)\nPOLICY = 'half-every-operation'\nPOLICIES = {}\n" + FORWARD,
         "declare POLICY (every half type) or POLICIES (one per half type), not both"),
        ("VARIANTS = ('peepholes',)\n" + FORWARD, "VARIANTS = ('peepholes',): each must be one of ('standard', 'peephole')"),
        ("LAYER_FEATURES = ('stacked', 'lenghts')\n" + FORWARD_LAYER,
         "LAYER_FEATURES = ('stacked', 'lenghts'): each must be one of ('stacked', 'reverse',"),
        ("ROWS = [object()]\n", "ROWS must hold contract.row.Row objects; got object"),
        ("ROW = 'keras/LSTM'\n", "ROW must hold contract.row.Row objects; got str"),
        # Before: silently ignored, the layer's cases then ran the cell alone... or nothing at all.
        ("LAYER_FEATURES = ('stacked',)\n" + FORWARD,
         "LAYER_FEATURES = ('stacked',) is declared, but there is no forward_layer(): the layer features are run by"),
        # Written against the two contracts of before: told what the modules became.
        ("from backends.base import Implementation\n",
         "importing it failed: ModuleNotFoundError: No module named 'backends.base': backends.base is now contract.row.Row "
         "(subclass it and supply call(), or the hooks _outputs and _gradients)"),
        ("from backends import base\n", "importing it failed: ImportError: cannot import name 'base' from 'backends'"),
        ("from backends.plugin import FunctionImplementation\n", "backends.plugin is now contract.loading"),
        ("from backends.config import Config\n", "backends.config is now contract.vocabulary (Dtype, Device, Feature)"),
    ],
    ids=["nothing", "import-error", "bad-dtypes", "half-without-policy", "misspelled-policy", "policy-contradicts-dtype",
         "policy-without-half-type", "policy-for-float32", "policy-for-undeclared-dtype", "policy-and-policies",
         "bad-variants", "bad-layer-features", "bad-rows", "bad-row",
         "layer-features-without-forward-layer", "imports-backends.base", "from-backends-import-base", "imports-backends.plugin",
         "imports-backends.config"],
)
def test_a_target_that_cannot_be_loaded_is_told_what_to_do(tmp_path, source, message):
    path = plugin(tmp_path, "impl", source)
    with pytest.raises(BackendLoadError) as raised:
        load_rows(path)
    assert str(raised.value).startswith(f"--backend {path}: "), raised.value  # a run may name several targets
    assert message in str(raised.value)
    if "from backends import base" in source:
        assert "backends.base is now contract.row.Row" in str(raised.value)


def test_module_and_object_targets(tmp_path, monkeypatch):
    """A module, module:object (a row, or a Row subclass, made), a .py path; each row knows where it came from (a
    process of its own loads it again from there)."""
    package = tmp_path / "thirdparty"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lstms.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from contract.loading import FunctionRow
        from contract.row import Row
        from examples_numpy import forward
        ROW = FunctionRow(id="thirdparty/row", forward_function=forward, dtypes=("float64",), gradients=False)

        @dataclass(eq=False)
        class Mine(Row):
            id: str = "thirdparty/class"
    '''))
    (tmp_path / "examples_numpy.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    (row,) = load_rows("thirdparty.lstms:ROW")
    assert (row.id, row.origin, row.gradients) == ("thirdparty/row", "thirdparty.lstms:ROW", False)
    (made,) = load_rows("thirdparty.lstms:Mine")
    assert type(made).__name__ == "Mine" and made.id == "thirdparty/class"
    (module_row,) = load_rows("examples_numpy")
    assert (module_row.id, module_row.origin, module_row.gradients) == ("example/numpy", "examples_numpy", True)
    (path_row,) = load_rows(str(EXAMPLE))
    assert path_row.origin == str(EXAMPLE.resolve())
    with pytest.raises(BackendLoadError, match=r"^--backend thirdparty.lstms:NOPE: thirdparty.lstms has no attribute 'NOPE'$"):
        load_rows("thirdparty.lstms:NOPE")
    with pytest.raises(BackendLoadError, match=r"^--backend no_such_module_anywhere: cannot import module 'no_such_module_anywhere' "
                                               r"\(ModuleNotFoundError: No module named 'no_such_module_anywhere'\); give a path"):
        load_rows("no_such_module_anywhere")
    with pytest.raises(BackendLoadError, match=r"^--backend backends.plugin: cannot import module .* backends.plugin is now contract.loading"):
        load_rows("backends.plugin")
    missing = tmp_path / "missing.py"
    with pytest.raises(BackendLoadError, match=rf"^--backend {re.escape(str(missing))}: no such file \(relative paths are taken from "):
        load_rows(str(missing))


def test_an_unloadable_target_is_a_usage_error_of_the_suite(tmp_path):
    result = run_suite(tmp_path, "--backend", str(tmp_path / "missing.py"))
    assert result.returncode == 4 and "no such file" in result.stderr, result.output


# ---------------------------------------------------------------------------
# The plug-in function contracts
# ---------------------------------------------------------------------------


def test_a_plugin_declares_what_it_lacks(tmp_path):
    """Gradients without backward(), peepholes without the variant, a dtype not in DTYPES, the layer's features without
    forward_layer(): refused, each with its reason."""
    (row,) = load_rows(plugin(tmp_path, "forward_only", 'ID = "odd/forward-only"\nDTYPES = ("float64",)\n'
                                                        'VARIANTS = ("standard",)\n' + FORWARD))
    assert isinstance(row, FunctionRow) and not row.gradients and row.features == frozenset()
    refusal = lambda dtype="float64", gradients=False, **layer: row.refusal(  # noqa: E731
        dtype=dtype, device="cpu", layer=LayerConfig(**layer), gradients=gradients)
    assert refusal(gradients=True) == "the implementation defines no backward()"
    assert refusal(peephole=True) == "odd/forward-only implements the standard variant only (VARIANTS)"
    assert refusal("float32") == "odd/forward-only does not support dtype float32"
    assert refusal(num_layers=2) == "odd/forward-only does not support more than one layer"
    assert refusal() is None
    (layer_row,) = load_rows(plugin(tmp_path, "layer_only", FORWARD_LAYER))
    assert layer_row.features == set(Feature) and not layer_row.gradients  # every feature unless LAYER_FEATURES says less


#: What the plug-ins below were called with: (function, type of params, h0's number of axes).
CALLS: list[tuple[str, str, int]] = []
CELL_FUNCTIONS = '''
    from spec import layer, lstm
    from tests.backends.test_loading import CALLS

    def forward(params, x, h0, c0, *, forget_bias):
        CALLS.append(("forward", type(params).__name__, h0.ndim))
        out = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
        return out.h_seq, out.h_T, out.c_T

    def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias):
        CALLS.append(("backward", type(params).__name__, h0.ndim))
        grads = lstm.backward(lstm.forward(params, x, h0, c0, forget_bias=forget_bias), dh_seq, dh_T, dc_T)
        return grads.tensors()
'''
LAYER_FUNCTIONS = '''
    from spec import layer
    from tests.backends.test_loading import CALLS

    def forward_layer(params, x, h0, c0, *, config, lengths, mask):
        CALLS.append(("forward_layer", type(params).__name__, h0.ndim))
        out = layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)
        return out.y, out.h_T, out.c_T

    def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
        CALLS.append(("backward_layer", type(params).__name__, h0.ndim))
        out = layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)
        return layer.backward(out, dy, dh_T, dc_T).tensors()
'''
CELL, LAYER = ("forward", "LSTMParams", 2), ("forward_layer", "LayerParams", 3)


@pytest.mark.parametrize("functions, called", [(CELL_FUNCTIONS + LAYER_FUNCTIONS, {"small": CELL, "stacked": LAYER}),
                                               (LAYER_FUNCTIONS, {"small": LAYER, "stacked": LAYER})],
                         ids=["cell-and-layer", "layer-only"])
def test_the_cells_functions_run_the_plain_cell_cases_and_the_layers_the_others(tmp_path, functions, called):
    """A module with both: forward/backward get one cell (LSTMParams, h0 (B, H)) on the cases that are a plain cell,
    forward_layer/backward_layer the layer (LayerParams, h0 (L * D, B, P)) on the others; without the cell's functions,
    the layer's run every case. Either way the answers come back as the layer's, right."""
    (row,) = load_rows(plugin(tmp_path, "functions", functions))
    for case, call in called.items():
        d = data(case)
        want = reference(d)
        CALLS.clear()
        np.testing.assert_allclose(forward(row, d).y, want.outputs["y"], rtol=0, atol=1e-13)
        last = f"{d.params.cell_name(len(d.params.cells) - 1)} U"
        np.testing.assert_allclose(backward(row, d).params.tensors()[last], want.gradients[last], rtol=0, atol=1e-12)
        assert CALLS == [call, (call[0].replace("forward", "backward"), *call[1:])], case


BENT = '''
    import numpy as np
    from spec import layer, lstm

    def forward(params, x, h0, c0, *, forget_bias):
        out = lstm.forward(params, x, h0, c0, forget_bias=forget_bias)
        return BEND_OUTPUTS((out.h_seq, out.h_T, out.c_T))

    def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias):
        grads = lstm.backward(lstm.forward(params, x, h0, c0, forget_bias=forget_bias), dh_seq, dh_T, dc_T).tensors()
        return BEND_GRADIENTS(grads)

    def forward_layer(params, x, h0, c0, *, config, lengths, mask):
        out = layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)
        return BEND_OUTPUTS((out.y, out.h_T, out.c_T))

    def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
        out = layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)
        return BEND_GRADIENTS(layer.backward(out, dy, dh_T, dc_T).tensors())
'''


@pytest.mark.parametrize(
    "case, outputs, gradients, message",
    [
        ("small", "lambda a: tuple(t.astype(np.float32) for t in a)", None, "h_seq: wrong dtype: expected float64, got float32"),
        ("small", "lambda a: a[:2]", None, "outputs: wrong type: expected (h_seq, h_T, c_T), got a tuple of 2"),
        ("small", "lambda a: (a[0], a[1][None], a[2])", None, "h_T: wrong shape: expected (3, 4), got (1, 3, 4)"),
        ("small", "lambda a: (a[0], a[1], a[2] * np.nan)", None, "c_T: non-finite value"),
        ("small", None, "lambda g: {k: v for k, v in g.items() if k != 'W'}",
         "gradient W: missing: expected gradients ['x', 'h0', 'c0', 'W', 'U', 'b'], got gradients ['x', 'h0', 'c0', 'U', 'b']"),
        ("small", None, "lambda g: {**g, 'p': g['b'][:3]}", "gradient p: unexpected"),
        ("small", None, "lambda g: {**g, 'h0': g['h0'][None]}", "gradient h0: wrong shape: expected (3, 4), got (1, 3, 4)"),
        ("small", None, "lambda g: list(g.values())", "gradients: wrong type: expected a dict of gradients, got a list of 6"),
        ("stacked", "lambda a: tuple(t.astype(np.float32) for t in a)", None, "y: wrong dtype: expected float64, got float32"),
        ("stacked", None, "lambda g: {k: v for k, v in g.items() if k != 'layer 2 direction 0 W'}",
         "gradient layer 2 direction 0 W: missing"),
        ("stacked", None, "lambda g: {**g, 'W': g['layer 0 direction 0 W']}", "gradient W: unexpected"),
    ],
    ids=["cell-dtype", "cell-arity", "cell-shape", "cell-nan", "cell-missing", "cell-unexpected", "cell-gradient-shape",
         "cell-not-a-dict", "layer-dtype", "layer-missing", "layer-unexpected"],
)
def test_a_plugins_answers_are_checked_in_its_own_names(tmp_path, case, outputs, gradients, message):
    """What a plug-in's functions answer is checked before it becomes the contract's answer, and a failure names the
    tensor as the plug-in knows it: h_seq and the cell's W (not y or 'layer 0 direction 0 W') for the cell's
    functions, the layer's names for the layer's."""
    source = textwrap.dedent(BENT) + f"BEND_OUTPUTS = {outputs or 'lambda a: a'}\nBEND_GRADIENTS = {gradients or 'lambda g: g'}\n"
    (row,) = load_rows(plugin(tmp_path, "bent", source))
    d = data(case)
    with pytest.raises(ResultError) as raised:
        forward(row, d) if outputs else backward(row, d)
    assert str(raised.value).startswith(message), raised.value


@pytest.mark.parametrize(
    "source, environment",
    [
        ('ENVIRONMENT = {"mylib": "1.2"}\n', {"mylib": "1.2"}),
        ('def environment():\n    return {"mylib": "1.3", 7: "seven"}\n', {"mylib": "1.3", "7": "seven"}),
        ('ENVIRONMENT = ["mylib"]\n',
         {"environment() failed": "TypeError: ENVIRONMENT / environment() must give a dict, got list"}),
    ],
    ids=["dict", "function", "not-a-dict"],
)
def test_a_plugins_environment_is_recorded_and_never_raises(tmp_path, source, environment):
    (row,) = load_rows(plugin(tmp_path, "env", source + FORWARD))
    assert row.environment("cpu") == environment


# ---------------------------------------------------------------------------
# A row in a process of its own
# ---------------------------------------------------------------------------

OWN_PROCESS = '''
    import os, signal, time
    from dataclasses import dataclass
    from contract.errors import NotSupported
    from contract.row import Row
    from contract.vocabulary import Feature
    from spec import layer


    @dataclass(eq=False)
    class Misbehaves(Row):
        """The spec, but by the case's shape (T, B, I, H): crashes, hangs, raises, or answers in the wrong dtype."""

        def _availability(self, device):
            return None if os.environ.get("LSTMC_TEST_PROCESS") == "remote" else "not in its own process"

        def _environment(self, device):
            return {"pid": os.getpid()}

        def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
            shape = (*x.shape, params.hidden_size)
            if shape == (1, 3, 4, 5):  # T1
                os.kill(os.getpid(), signal.SIGSEGV)
            if shape == (6, 1, 3, 4):  # B1
                time.sleep(600)
            if shape == (5, 2, 3, 1):  # H1
                raise ValueError("H = 1 is beyond me")
            if shape == (5, 2, 1, 6):  # I1
                raise NotSupported("a scalar input is beyond me")
            out = layer_forward(params, x, h0, c0, layer, lengths, mask)
            if shape == (4, 3, 7, 2):  # I-ne-H
                return out.y.astype("float32"), out.h_T, out.c_T
            return out.y, out.h_T, out.c_T


    def layer_forward(params, x, h0, c0, config, lengths, mask):
        return layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)


    ROW = Misbehaves(id="odd/misbehaves", features=frozenset(Feature), gradients=False,
                     process_environment={"LSTMC_TEST_PROCESS": "remote"})
'''


@pytest.fixture
def remote(tmp_path):
    (row,) = load_rows(plugin(tmp_path, "misbehaves", OWN_PROCESS))
    assert isinstance(row, Remote)
    return row


def child_pid(row) -> int:
    return row.environment("cpu")["pid"]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_calls_and_their_errors_come_back_from_the_rows_own_process(remote):
    pid = child_pid(remote)
    assert pid != os.getpid()
    d = data("small")
    np.testing.assert_array_equal(forward(remote, d).y, reference(d).outputs["y"])
    with pytest.raises(RuntimeError, match=r"^ValueError: H = 1 is beyond me \(in its own process\)\nTraceback"):
        forward(remote, data("H1"))
    with pytest.raises(NotSupported, match="^a scalar input is beyond me$"):
        forward(remote, data("I1"))
    with pytest.raises(ResultError) as raised:  # checked there, and again here
        forward(remote, data("I-ne-H"))
    assert (raised.value.tensor, str(raised.value)) == ("y", "y: wrong dtype: expected float64, got float32")
    assert child_pid(remote) == pid  # one child served them all


def test_a_crash_in_the_rows_own_process_is_reported_with_its_signal_and_the_next_call_gets_a_fresh_one(remote):
    pid = child_pid(remote)
    with pytest.raises(Crashed) as raised:
        forward(remote, data("T1"))
    message = str(raised.value)
    assert message.startswith("crashed: signal 11 (SIGSEGV) in its own process (LSTMC_TEST_PROCESS=remote): "
                              "Fatal Python error: Segmentation fault"), message
    assert "innermost frame: File" in message and "misbehaves.py" in message, message
    assert gone(pid)
    d = data("small")
    np.testing.assert_array_equal(forward(remote, d).y, reference(d).outputs["y"])
    assert child_pid(remote) != pid


def test_a_call_that_hangs_in_the_rows_own_process_is_stopped_and_the_next_call_gets_a_fresh_one(remote):
    pid = child_pid(remote)
    with pytest.raises(TimedOut), deadline(2, "the call"):
        forward(remote, data("B1"))
    assert gone(pid)  # its state unknown, the child was ended with the call
    d = data("small")
    np.testing.assert_array_equal(forward(remote, d).y, reference(d).outputs["y"])
    assert child_pid(remote) != pid


def test_a_row_is_placed_in_a_process_of_its_own_only_where_this_ones_environment_differs(monkeypatch):
    @dataclass(eq=False)
    class Here(Row):
        pass

    row = Here(id="odd/here", process_environment={"LSTMC_TEST_PROCESS": "here"})
    with pytest.raises(ValueError, match=r"^odd/here needs its own process \(\{'LSTMC_TEST_PROCESS': 'here'\}\) but has no "
                                         r"origin to be loaded from there"):
        placed(row)
    row.origin = "somewhere.py"
    assert isinstance(placed(row), Remote) and placed(row).row is row
    monkeypatch.setenv("LSTMC_TEST_PROCESS", "here")
    assert placed(row) is row
