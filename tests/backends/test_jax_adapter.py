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
    assert [i.id for i in jl.IMPLEMENTATIONS] == ["jax/lax.scan", "flax/LSTMCell", "flax/OptimizedLSTMCell", "jax/rnn.lstm_ref", "jax/rnn.lstm"]
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


# -- the layer: flax's nn.RNN / nn.Bidirectional stacks and jax.experimental.rnn ------------------------

from backends.base import Unavailable  # noqa: E402
from backends.config import LAYER_FEATURES  # noqa: E402
from spec import layer as spec_layer  # noqa: E402
from spec.layer import LayerConfig  # noqa: E402
from spec.layer_cases import LayerCase, make_layer_case_data  # noqa: E402

RNN_REF = IMPL["jax/rnn.lstm_ref"]
RNN_CUDNN = IMPL["jax/rnn.lstm"]
LAYERED = [*FLAX, RNN_REF]


def layer_data(dtype="float64", lengths=None, seed=51, T=5, B=4, I=3, H=2, **config):
    return make_layer_case_data(LayerCase("unit-layer", T, B, I, H, LayerConfig(**config), lengths=lengths, seed=seed), dtype)


def run_layer(impl, d, dtype="float64", gradients=False):
    options = dict(layer=d.config, lengths=d.lengths, mask=d.mask, config=cfg(dtype=dtype))
    if gradients:
        return impl.backward_layer(d.params, d.x, d.h0, d.c0, d.cotangents(), **options)
    return impl.forward_layer(d.params, d.x, d.h0, d.c0, **options)


def assert_layer_matches_spec(impl, d, atol=1e-12):
    """Outputs and every gradient against the spec's layer, float64."""
    expected = d.forward()
    out = run_layer(impl, d)
    for name in ("y", "h_T", "c_T"):
        np.testing.assert_allclose(getattr(out, name), getattr(expected, name), rtol=0, atol=atol, err_msg=name)
    grads = run_layer(impl, d, gradients=True)
    want = spec_layer.backward(expected, d.dy, d.dh_T, d.dc_T).tensors()
    assert set(grads) == set(want)
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=0, atol=atol, err_msg=name)


ARCHITECTURES = [
    dict(direction="forward"),
    dict(direction="reverse"),
    dict(direction="bidirectional"),
    dict(num_layers=3, direction="forward"),
    dict(num_layers=2, direction="bidirectional"),
]


def layer_id(config):
    return "-".join(f"{v}" for v in config.values())


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_declarations(impl):
    """What the layer rows run, and what they refuse with a reason a user reads (every other feature)."""
    assert set(impl.layer_features) <= set(LAYER_FEATURES)
    for feature in set(LAYER_FEATURES) - set(impl.layer_features):
        assert feature in impl.unsupported_reasons, feature
    assert "empty_sequences" in impl.layer_features and "projection" not in impl.layer_features
    assert ("reverse" in impl.layer_features) == (impl.framework == "flax")
    # Known failures are narrowed to the features where the upstream behaviour lives.
    narrowed = {known.features for known in impl.known_failures}
    assert narrowed == ({("empty_sequences",), ("lengths",)} if impl.framework == "flax" else {("empty_sequences",)})
    assert all(known.kind.startswith("layer") for known in impl.known_failures)


@pytest.mark.parametrize("config", ARCHITECTURES, ids=layer_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_round_trip_is_exact(impl, dtype, config):
    if impl.framework == "flax":
        needs_flax()
    d = layer_data(dtype, **config)
    if config["direction"] == "reverse" and impl is RNN_REF:
        with pytest.raises(NotSupported, match="no reverse-only direction"):
            impl.to_native_layer(d.params, d.config)
        return
    native = impl.to_native_layer(d.params, d.config)
    back = impl.from_native_layer(native, d.config)
    assert back.num_directions == d.params.num_directions
    assert back.tensors().keys() == d.params.tensors().keys()
    for name, tensor in d.params.tensors().items():
        assert back.tensors()[name].dtype == tensor.dtype and np.array_equal(back.tensors()[name], tensor), name


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_forget_bias_is_folded_into_b_f(impl):
    if impl.framework == "flax":
        needs_flax()
    d = layer_data(direction="bidirectional", forget_bias=0.75)
    back = impl.from_native_layer(impl.to_native_layer(d.params, d.config), d.config)
    for cell, original in zip(back.cells, d.params.cells):
        np.testing.assert_allclose(cell.b, fold_forget_bias(original.b, 0.75), rtol=0, atol=4 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_layouts_refuse_what_they_cannot_hold(impl):
    if impl.framework == "flax":
        needs_flax()
    with pytest.raises(NotSupported, match="no peepholes"):
        d = layer_data(peephole=True)
        impl.to_native_layer(d.params, d.config)
    with pytest.raises(NotSupported, match="no projection"):
        d = layer_data(proj_size=1, H=3)
        impl.to_native_layer(d.params, d.config)


@pytest.mark.parametrize("cell", ["LSTMCell", "OptimizedLSTMCell"])
@pytest.mark.parametrize("config", ARCHITECTURES, ids=layer_id)
def test_flax_layer_tree_is_the_one_flax_inits(cell, config):
    """The stack module's own init: to_native_layer's tree has its structure, shapes and dtypes."""
    needs_flax()
    jl._require_x64("float64")
    d = layer_data(**config)
    impl = IMPL[f"flax/{cell}"]
    stack = jl._flax_stack(cell, 2, d.config.num_layers, d.config.direction, "float64")
    D = d.config.num_directions
    carries = jl._flax_carries(d.h0, d.c0, d.config.num_layers, D)
    flax_params = stack.init(jax.random.key(0), d.x, carries, None)["params"]
    native = impl.to_native_layer(d.params, d.config)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, np.dtype(a.dtype)), tree)  # noqa: E731
    assert jax.tree_util.tree_structure(dict(flax_params)) == jax.tree_util.tree_structure(native)
    assert shapes(dict(flax_params)) == shapes(native)


@pytest.mark.parametrize("impl", FLAX, ids=lambda i: i.id)
@pytest.mark.parametrize("lengths", [None, (5, 2, 1, 3)], ids=["all-steps", "lengths"])
def test_flax_reverse_direction_matches_the_spec(impl, lengths):
    """nn.RNN(reverse=True, keep_order=True), outputs and gradients: the suite's reverse cases all have peepholes,
    which flax's cells lack, so the reverse direction is checked here (lengths >= 1: reversed within each
    length; padded outputs aside, which flax leaves non-zero, compared separately)."""
    needs_flax()
    if lengths is None:
        assert_layer_matches_spec(impl, layer_data(direction="reverse", num_layers=2))
        return
    d = layer_data(direction="reverse", lengths=lengths)
    out, expected = run_layer(impl, d), d.forward()
    valid = expected.mask
    np.testing.assert_allclose(out.y[valid], expected.y[valid], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.h_T, expected.h_T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.c_T, expected.c_T, rtol=0, atol=1e-12)
    assert np.abs(out.y[~valid]).min() > 0  # flax's documented padding behaviour: its known failure


def test_flax_keep_order_false_would_return_processing_order():
    """Why the row passes keep_order=True: flax's default returns a reverse direction's outputs in processing
    order, the spec's y reversed in time."""
    needs_flax()
    import flax.linen as nn
    import jax.numpy as jnp

    jl._require_x64("float64")
    d = layer_data(direction="reverse")
    tree = IMPL["flax/LSTMCell"].to_native_layer(d.params, d.config)["layers_0"]
    rnn = nn.RNN(nn.LSTMCell(2, param_dtype=jnp.float64), time_major=True, reverse=True)  # keep_order=False
    y = np.asarray(rnn.apply({"params": tree}, d.x, initial_carry=(d.c0[0], d.h0[0])))
    np.testing.assert_allclose(y[::-1], d.forward().y, rtol=0, atol=1e-12)
    assert np.abs(y - d.forward().y).max() > 0.05


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_direction_canary(impl):
    """Swapping a bidirectional layer's two cells changes what the row computes: a layout that mixed up
    forward_rnn/backward_rnn (or rnn's pseudo-layers) cannot hide behind the data."""
    if impl.framework == "flax":
        needs_flax()
    d = layer_data(direction="bidirectional")
    swapped = spec_layer.LayerParams(d.params.cells[::-1], 2)
    base = run_layer(impl, d).y
    other = impl.forward_layer(swapped, d.x, d.h0, d.c0, layer=d.config, lengths=None, mask=None, config=cfg()).y
    assert np.abs(base - other).max() > 1e-3


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
def test_layer_matches_the_spec_without_empty_rows(impl):
    """Lengths >= 1 in a stacked bidirectional layer: outputs and gradients (flax: valid steps and final states
    only; its padded outputs are its documented known failure)."""
    if impl.framework == "flax":
        needs_flax()
    d = layer_data(num_layers=2, direction="bidirectional", lengths=(5, 2, 1, 3), forget_bias=0.5)
    if impl is RNN_REF:
        assert_layer_matches_spec(impl, d)
        return
    out, expected = run_layer(impl, d), d.forward()
    np.testing.assert_allclose(out.y[expected.mask], expected.y[expected.mask], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.h_T, expected.h_T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.c_T, expected.c_T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_answers_are_in_the_requested_dtype(impl, dtype):
    if impl.framework == "flax":
        needs_flax()
    d = layer_data(dtype, direction="bidirectional")
    out = run_layer(impl, d, dtype)
    assert all(a.dtype == np.dtype(dtype) for a in out.tensors().values())
    grads = run_layer(impl, d, dtype, gradients=True)
    assert all(g.dtype == np.dtype(dtype) for g in grads.values())


def test_rnn_flat_weights_are_jax_s_layout():
    """rnn_flat_weights packs what jax's own unpack_lstm_weights unpacks: W_ih = W (4H, in), W_hh = U, two half
    biases, pseudo-layer k = l * D + d; its size is get_num_params_in_lstm's."""
    from jax.experimental import rnn

    d = layer_data(num_layers=2, direction="bidirectional")
    cells = jl.folded_cells(d.params, 0.0)
    flat = jl.rnn_flat_weights(cells, np)
    assert flat.size == rnn.get_num_params_in_lstm(3, 2, 2, True)
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, 3, 2, 2, True)
    for k, cell in enumerate(d.params.cells):
        assert np.array_equal(W_ih[k], cell.W.reshape(8, -1)) and np.array_equal(W_hh[k], cell.U.reshape(8, 2))
        assert np.array_equal(b_ih[k], cell.b.reshape(-1) / 2) and np.array_equal(b_hh[k], cell.b.reshape(-1) / 2)


def test_rnn_cell_contract_is_a_one_layer_call():
    """The rnn rows' cell contract: native = rnn.lstm's arguments for one forward layer; round trip exact."""
    d = data(I=5, H=6)
    native = RNN_REF.to_native(d.params)
    assert {k: v for k, v in native.items() if k != "weights"} == {"input_size": 5, "hidden_size": 6, "num_layers": 1, "bidirectional": False}
    back = RNN_REF.from_native(native)
    assert all(np.array_equal(back.tensors()[n], t) for n, t in d.params.tensors().items())
    out = RNN_REF.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.5, config=cfg())
    np.testing.assert_allclose(out.h_seq, lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.5).h_seq, rtol=0, atol=1e-13)


def test_rnn_lstm_is_unavailable_on_cpu_with_the_real_reason():
    """rnn.lstm is cuDNN's: on a CPU jaxlib its own error is the reason (not a guess), and its calls say so."""
    if jax.default_backend() != "cpu":
        pytest.skip("jax runs on a GPU here: rnn.lstm may be available")
    reason = RNN_CUDNN.availability("cpu")
    assert reason.startswith("jax.experimental.rnn.lstm is cuDNN's LSTM (GPU only): on cpu it fails while tracing: AttributeError")
    assert "compute_rnn_workspace_reserve_space_sizes" in reason
    assert RNN_CUDNN.dtypes == ("float32",) and "float64" in RNN_CUDNN.unsupported_reasons
    d = layer_data("float32", direction="bidirectional")
    with pytest.raises(Unavailable, match="cuDNN"):
        run_layer(RNN_CUDNN, d, "float32")
    assert "function" in RNN_CUDNN.environment("cpu")


def test_rnn_lengths_must_be_int32_and_are_converted():
    """jax.experimental.rnn refuses int64 seq_lengths (NotImplementedError under x64): the row converts the
    contract's int64 lengths."""
    d = layer_data(direction="bidirectional", lengths=(5, 2, 1, 3))
    assert d.lengths.dtype == np.int64
    run_layer(RNN_REF, d)  # no NotImplementedError


def test_missing_jax_makes_the_rnn_rows_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    for impl in (RNN_REF, RNN_CUDNN):
        assert impl.availability("cpu") == "jax is not installed (pip install 'lstm-conformance[jax]')"
        assert isinstance(impl.environment("cpu"), dict)  # never raises


@pytest.mark.parametrize("impl", LAYERED, ids=lambda i: i.id)
@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "forward+backward"])
def test_timed_layer_pass_is_device_resident_and_right(impl, gradients):
    """The layer benchmark's pass: on the device, its result (y, or the gradients of x, h0, c0) the spec's."""
    from backends.timing import Timing
    from bench import correctness

    if impl.framework == "flax":
        needs_flax()
    d = layer_data("float32", num_layers=2, direction="bidirectional", lengths=(5, 2, 1, 3))
    lengths = d.lengths if impl is RNN_REF else None  # flax's padded outputs are its known failure
    if lengths is None:
        from dataclasses import replace

        d = replace(d, case=replace(d.case, lengths=None), lengths=None)
    timing = Timing(variant="standard", dtype="float32", device="cpu", gradients=gradients)
    timed = impl.timed_layer_pass(d.params, d.x, d.h0, d.c0, d.cotangents(), layer=d.config, lengths=lengths, timing=timing)
    assert timed.resident
    timed.run()
    correctness.check(timed.result(), correctness.layer_reference(d, gradients), "float32")
    with pytest.raises(NotSupported):  # flax times its cell in the half types, not its layer; rnn neither
        half = Timing(variant="standard", dtype="bfloat16", device="cpu", gradients=gradients)
        impl.timed_layer_pass(d.params, d.x, d.h0, d.c0, d.cotangents(), layer=d.config, lengths=lengths, timing=half)
