"""The JAX adapters: the flax tree (checked against flax's own cells), the forget bias, peepholes,
float64 through x64 (and a float64 request computed in float32 caught), matmul precision, and
jax/lax.scan against the spec."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX adapters need jax (pip install 'lstm-conformance[jax]')")

from backends import jax_lstm as jl  # noqa: E402
from backends.base import Config, NotSupported, ResultError, fold_forget_bias  # noqa: E402
from spec import lstm  # noqa: E402
from spec.cases import Case, case_by_name, make_case_data  # noqa: E402
from spec.params import GATES  # noqa: E402

IMPL = {impl.id: impl for impl in jl.IMPLEMENTATIONS}
SCAN = IMPL["jax/lax.scan"]
FLAX = [IMPL["flax/LSTMCell"], IMPL["flax/OptimizedLSTMCell"]]
ALL = [SCAN, *FLAX]
TREE_NAMES = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}


def needs_flax():
    pytest.importorskip("flax", reason="the flax adapters need flax (pip install 'lstm-conformance[jax]')")


def data(peephole=False, dtype="float64", seed=41, T=4, B=3, I=5, H=6):
    return make_case_data(Case("unit", T, B, I, H, peephole=peephole, seed=seed), dtype)


def cfg(variant="standard", dtype="float64"):
    return Config(variant=variant, dtype=dtype, device="cpu")


def test_ids_and_import_needs_no_framework():
    assert [i.id for i in jl.IMPLEMENTATIONS] == ["jax/lax.scan", "flax/LSTMCell", "flax/OptimizedLSTMCell"]
    assert SCAN.variants == ("standard", "peephole")
    assert all(i.variants == ("standard",) for i in FLAX)
    assert "import jax" not in "".join(line for line in open(jl.__file__) if not line.startswith(" "))


def test_missing_jax_or_flax_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax.linen", None)
    assert FLAX[0].availability("cpu") == "flax is not installed (pip install 'lstm-conformance[jax]')"
    assert SCAN.availability("cpu") is None
    monkeypatch.setitem(sys.modules, "jax", None)
    for impl in ALL:
        assert impl.availability("cpu") == "jax is not installed (pip install 'lstm-conformance[jax]')"


def test_cuda_unavailable_has_a_reason():
    try:
        jax.devices("gpu")
    except RuntimeError:
        for impl in ALL:
            reason = impl.availability("cuda")
            assert reason and "GPU" in reason
    else:
        pytest.skip("jax sees a GPU here")


# -- the flax tree ---------------------------------------------------------------


@pytest.mark.parametrize("impl", FLAX, ids=lambda i: i.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flax_round_trip_is_exact(impl, dtype):
    needs_flax()
    d = data(dtype=dtype)
    native = impl.to_native(d.params)
    assert set(native) == TREE_NAMES
    assert all(isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) for leaves in native.values() for a in leaves.values())
    back = impl.from_native(native)
    assert back.p is None
    for name, tensor in d.params.tensors().items():
        assert np.array_equal(back.tensors()[name], tensor), name
    # and the other way round
    again = impl.to_native(back)
    for name in TREE_NAMES:
        for leaf, array in native[name].items():
            assert np.array_equal(again[name][leaf], array), (name, leaf)


@pytest.mark.parametrize("packing", jl.PACKINGS)
def test_every_packing_gives_the_native_tree(packing):
    """The adapters build the tree on the device from packed views of W and U: the same tree as
    to_native, and back."""
    d = data(dtype="float32", I=5, H=6)
    native = FLAX[0].to_native(d.params, forget_bias=0.25)
    W_in, U_in = jl.packed(d.params.W, d.params.U, packing)
    b = fold_forget_bias(d.params.b, 0.25)
    tree = jl.flax_tree(W_in, U_in, b, packing)
    assert set(tree) == set(native)
    for name in native:
        assert set(tree[name]) == set(native[name])
        for leaf, array in native[name].items():
            assert np.array_equal(tree[name][leaf], array), (name, leaf)
    W_back, U_back, b_back = jl.packed_from_flax_tree(native, packing, np)
    assert np.array_equal(W_back, W_in) and np.array_equal(U_back, U_in) and np.array_equal(b_back, b)
    W, U = jl.unpacked(W_back, U_back, packing)
    assert np.array_equal(W, d.params.W) and np.array_equal(U, d.params.U)


@pytest.mark.parametrize("cell", ["LSTMCell", "OptimizedLSTMCell"])
def test_native_tree_is_the_one_flax_uses(cell):
    """Init a real flax cell: its tree has to_native's structure, shapes and dtypes; and flax run on
    to_native's tree for one step gives the spec's step."""
    needs_flax()
    import flax.linen as nn
    import jax.numpy as jnp

    jl._require_x64("float64")
    d = data(T=1, I=5, H=6)
    module = getattr(nn, cell)(features=6, param_dtype=jnp.float64)
    carry = (jnp.asarray(d.c0), jnp.asarray(d.h0))
    flax_params = module.init(jax.random.key(0), carry, jnp.asarray(d.x[0]))["params"]
    native = IMPL[f"flax/{cell}"].to_native(d.params)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, np.dtype(a.dtype)), tree)  # noqa: E731
    assert jax.tree_util.tree_structure(dict(flax_params)) == jax.tree_util.tree_structure(native)
    assert shapes(dict(flax_params)) == shapes(native)
    (c1, h1), _ = module.apply({"params": native}, carry, jnp.asarray(d.x[0]))
    ref = lstm.forward(d.params, d.x, d.h0, d.c0)
    np.testing.assert_allclose(np.asarray(h1), ref.h_T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(c1), ref.c_T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("impl", FLAX, ids=lambda i: i.id)
def test_forget_bias_is_folded_into_hf(impl):
    needs_flax()
    d = data()
    native = impl.to_native(d.params, forget_bias=1.5)
    for k, gate in enumerate(GATES):
        expected = d.params.b[k] + (1.5 if gate == "f" else 0.0)
        assert np.array_equal(native["h" + gate]["bias"], expected), gate
    assert np.array_equal(impl.from_native(native).b, fold_forget_bias(d.params.b, 1.5))


@pytest.mark.parametrize("impl", FLAX, ids=lambda i: i.id)
def test_flax_rejects_peepholes(impl):
    needs_flax()
    d = data(peephole=True)
    with pytest.raises(NotSupported, match="flax's LSTM cells have no peepholes"):
        impl.check(cfg("peephole"))
    with pytest.raises(NotSupported, match="flax's LSTM cells have no peepholes"):
        impl.to_native(d.params)
    with pytest.raises(NotSupported, match="flax's LSTM cells have no peepholes"):
        impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole"))


# -- dtypes, precision, environment ----------------------------------------------------


@pytest.mark.parametrize("impl", ALL, ids=lambda i: i.id)
def test_float64_results_are_float64(impl):
    if impl.framework == "flax":
        needs_flax()
    d = data()
    out = impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.5, config=cfg())
    assert jax.config.read("jax_enable_x64")
    assert all(a.dtype == np.float64 for a in out.tensors().values())
    grads = impl.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.5, config=cfg())
    assert set(grads) == {"x", "h0", "c0", "W", "U", "b"}
    assert all(g.dtype == np.float64 for g in grads.values())
    ref = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.5)
    np.testing.assert_allclose(out.h_seq, ref.h_seq, rtol=0, atol=1e-13)
    env = impl.environment("cpu")
    assert env["x64"] == "on" and env["matmul_precision"] == "highest"
    assert {"jax", "jaxlib", "device"} <= set(env) and ("flax" in env) == (impl.framework == "flax")


def test_float32_results_are_float32():
    d = data(peephole=True, dtype="float32")
    out = SCAN.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole", "float32"))
    assert all(a.dtype == np.float32 for a in out.tensors().values())


def test_a_float64_request_computed_in_float32_is_caught(monkeypatch):
    """Without x64, jax computes float64 requests in float32 (device_put truncates silently): the
    contract must notice from the outputs, and it is a failure, not "not supported" (here x64 is
    switched off and the adapter kept from switching it on)."""
    d = data()
    before = jax.config.read("jax_enable_x64")
    monkeypatch.setattr(jl, "_require_x64", lambda dtype: None)
    jax.config.update("jax_enable_x64", False)
    try:
        with warnings.catch_warnings(), pytest.raises(ResultError, match="h_seq: wrong dtype: expected float64, got float32"):
            warnings.simplefilter("ignore")
            SCAN.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg())
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("impl", ALL, ids=lambda i: i.id)
def test_every_matrix_product_is_highest_precision(impl):
    if impl.framework == "flax":
        needs_flax()
    d = data(dtype="float32")
    x, h0, c0 = d.x, d.h0, d.c0
    if impl is SCAN:
        forward, gradients = jl._scan_functions()
        args = (x, h0, c0, d.params.W, d.params.U, d.params.b, None, np.float32(0))
    else:
        _, forward, gradients = impl.native_functions(d.params.hidden_size, "float32")
        args = impl._arguments(d.params, x, h0, c0, 0.0, jax.devices("cpu")[0])
    cts = (d.dh_seq, d.dh_T, d.dc_T)
    for function, arguments in ((forward, args), (gradients, (*args, cts))):
        hlo = function.lower(*arguments).as_text()
        dots = [line for line in hlo.splitlines() if "dot_general" in line]
        assert dots and all("HIGHEST" in line for line in dots), dots


# -- jax/lax.scan against the spec -------------------------------------------------------


def test_scan_matches_the_spec_in_float64_small_peephole():
    case = case_by_name("small-peephole")
    d = make_case_data(case)
    config = cfg("peephole")
    out = SCAN.forward(d.params, d.x, d.h0, d.c0, forget_bias=case.forget_bias, config=config)
    ref = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=case.forget_bias)
    for name in ("h_seq", "h_T", "c_T"):
        np.testing.assert_allclose(getattr(out, name), getattr(ref, name), rtol=0, atol=1e-12, err_msg=name)
    grads = SCAN.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=case.forget_bias, config=config)
    expected = lstm.backward(ref, d.dh_seq, d.dh_T, d.dc_T).tensors()
    assert set(grads) == set(expected) == {"x", "h0", "c0", "W", "U", "b", "p"}
    for name, g in expected.items():
        np.testing.assert_allclose(grads[name], g, rtol=0, atol=1e-12, err_msg=name)


def test_scan_forget_bias_matches_the_spec():
    d = data(peephole=True)
    out = SCAN.forward(d.params, d.x, d.h0, d.c0, forget_bias=1.0, config=cfg("peephole"))
    ref = lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=1.0)
    np.testing.assert_allclose(out.h_seq, ref.h_seq, rtol=0, atol=1e-13)
    back = SCAN.from_native(SCAN.to_native(d.params, 1.0))
    assert np.array_equal(back.b, fold_forget_bias(d.params.b, 1.0)) and np.array_equal(back.p, d.params.p)
