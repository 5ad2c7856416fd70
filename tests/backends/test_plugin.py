"""Third-party implementations through --backend: the example passes, a broken one fails, bad targets are explained."""

from __future__ import annotations

import textwrap

import pytest

from backends.base import Config, NotSupported, ResultError
from backends.plugin import BackendLoadError, FunctionImplementation, load_backend
from spec.cases import case_by_name, make_case_data
from tests.suite import EXAMPLE, run_suite


def test_the_readme_example_passes_the_whole_suite(tmp_path):
    result = run_suite(tmp_path, "--backend", str(EXAMPLE))
    assert result.returncode == 0, result.output
    assert "72 passed" in result.stdout


def test_a_plugin_with_swapped_gates_fails_and_says_where(tmp_path):
    broken = tmp_path / "swapped.py"
    source = EXAMPLE.read_text().replace('ID = "example/numpy"', 'ID = "example/swapped"')
    # The classic porting bug: f and g blocks exchanged when loading W.
    source = source.replace("W, U, b, p = params.W, params.U, params.b, params.p", "W, U, b, p = params.W[[0, 2, 1, 3]], params.U, params.b, params.p")
    broken.write_text(source)
    result = run_suite(tmp_path, "--backend", str(broken), "--dtype", "float64", "-k", "forward and small and not peephole")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "example/swapped" in result.stdout
    assert "h_seq: worst error" in result.stdout and "batch row" in result.stdout


def test_unloadable_targets_are_usage_errors(tmp_path):
    result = run_suite(tmp_path, "--backend", str(tmp_path / "missing.py"))
    assert result.returncode == 4 and "no such file" in result.stderr


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("X = 1\n", "found no implementation"),
        ("raise RuntimeError('boom')\n", "importing it failed: RuntimeError: boom"),
        ("DTYPES = ('float16',)\ndef forward(params, x, h0, c0, *, forget_bias): pass\n", "DTYPES"),
        ("IMPLEMENTATIONS = [object()]\n", "must hold backends.base.Implementation objects"),
        # Before: silently ignored, the layer cases then ran the cell alone... or nothing at all.
        ("LAYER_FEATURES = ('stacked',)\ndef forward(params, x, h0, c0, *, forget_bias): pass\n",
         "LAYER_FEATURES = ('stacked',) is declared, but there is no forward_layer()"),
    ],
    ids=["nothing", "import-error", "bad-dtypes", "bad-implementations", "layer-features-without-forward-layer"],
)
def test_load_errors_say_what_to_do(tmp_path, source, fragment):
    path = tmp_path / "impl.py"
    path.write_text(source)
    with pytest.raises(BackendLoadError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_backend(str(path))


def test_module_and_object_targets(tmp_path, monkeypatch):
    package = tmp_path / "thirdparty"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lstms.py").write_text(textwrap.dedent('''
        from backends.plugin import FunctionImplementation
        from examples_numpy import forward
        ROW = FunctionImplementation(id="thirdparty/row", forward_function=forward, dtypes=("float64",), variants=("standard",), gradients=False)
    '''))
    (tmp_path / "examples_numpy.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    (row,) = load_backend("thirdparty.lstms:ROW")
    assert row.id == "thirdparty/row"
    (module_row,) = load_backend("examples_numpy")
    assert module_row.id == "example/numpy" and module_row.gradients
    with pytest.raises(BackendLoadError, match="has no attribute"):
        load_backend("thirdparty.lstms:NOPE")
    with pytest.raises(BackendLoadError, match="cannot import module"):
        load_backend("no_such_module_anywhere")


def test_function_implementation_declares_what_it_lacks(tmp_path):
    path = tmp_path / "forward_only.py"
    path.write_text(EXAMPLE.read_text().split("def backward")[0])
    (impl,) = load_backend(str(path))
    assert isinstance(impl, FunctionImplementation) and not impl.gradients
    with pytest.raises(NotSupported, match="no backward"):
        impl.check(Config(), gradients=True)


def test_wrong_output_dtype_is_caught_not_trusted(tmp_path):
    path = tmp_path / "downcast.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        def forward(params, x, h0, c0, *, forget_bias):
            T, B, H = x.shape[0], x.shape[1], params.W.shape[1]
            z = np.zeros((T, B, H), np.float32)
            return z, z[-1], z[-1]
    '''))
    (impl,) = load_backend(str(path))
    d = make_case_data(case_by_name("small"))
    with pytest.raises(ResultError, match="h_seq: wrong dtype: expected float64, got float32"):
        impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=Config(dtype="float64"))


def test_the_layer_example_passes_every_layer_case_it_declares(tmp_path):
    """examples/numpy_layer_lstm.py, the layer contract's example: every layer cell of the matrix passes, in both
    dtypes, gradients included; the cases that need a feature it does not declare are "not supported", declared,
    with its reason naming that feature; it implements no cell."""
    from backends.config import LAYER_FEATURES, layer_features
    from spec.layer_cases import layer_case_set, make_layer_case_data

    path = EXAMPLE.parent / "numpy_layer_lstm.py"
    (example,) = load_backend(str(path))
    result = run_suite(tmp_path, "--backend", str(path), "-n", "auto")
    assert result.returncode == 0, result.output
    row = result.report["matrix"][example.id]
    assert {column for column in row if "layer" in column} == {
        f"{dtype} cpu layer {kind}" for dtype in ("float32", "float64") for kind in ("outputs", "gradients")
    }
    for column, cell in row.items():
        expected = "pass" if "layer" in column else "not supported"
        assert cell["status"] == expected, f"{column}: {cell}"

    unsupported = {}  # case -> the reason it must carry: the first feature it needs that the example lacks
    for case in layer_case_set():
        data = make_layer_case_data(case)
        missing = [f for f in layer_features(case.config, data.lengths, data.mask) if f not in example.layer_features]
        if missing:
            unsupported[case.name] = f"{example.id} does not support {LAYER_FEATURES[missing[0]]}"
    assert 0 < len(unsupported) < len(layer_case_set())
    for r in result.results(example.id):
        if not r["kind"].startswith("layer"):
            assert r["status"] == "not supported" and "implements the layer only" in r["detail"], r
        elif r["case"] in unsupported:
            assert (r["status"], r["declared"], r["detail"]) == ("not supported", True, unsupported[r["case"]]), r
        else:
            assert r["status"] == "pass", r
