"""The PyTorch adapters: layouts (checked against torch.nn.LSTM itself), the forget bias, peepholes,
the environment and numerics, caching, dtypes, and torch/peephole against the spec."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch adapters need torch (pip install 'lstm-conformance[torch]')")

from backends import torch_lstm as tl  # noqa: E402
from backends.base import Config, NotSupported, Unavailable, fold_forget_bias  # noqa: E402
from spec import lstm  # noqa: E402
from spec.cases import Case, case_by_name, make_case_data  # noqa: E402
from spec.params import GATES  # noqa: E402
from spec.validation import LSTMInputError  # noqa: E402

NN = tl.TorchLSTM()
PEEP = tl.TorchPeepholeLSTM()
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device visible to torch (torch.cuda.is_available() is False)")


def data(peephole=False, dtype="float64", forget_bias=0.0, seed=31, T=5, B=3, I=4, H=6):
    return make_case_data(Case("unit", T, B, I, H, peephole=peephole, forget_bias=forget_bias, seed=seed), dtype)


def cfg(variant="standard", dtype="float64", device="cpu"):
    return Config(variant=variant, dtype=dtype, device=device)


def spec_forward(d, forget_bias=0.0):
    return lstm.forward(d.params, d.x, d.h0, d.c0, forget_bias=forget_bias)


# -- layouts -------------------------------------------------------------------


@pytest.mark.parametrize("impl,peephole", [(NN, False), (PEEP, False), (PEEP, True)], ids=["nn.LSTM", "peephole-standard", "peephole-peephole"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact(impl, peephole, dtype):
    d = data(peephole, dtype)
    native = impl.to_native(d.params)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.dtype(dtype) for v in native.values())
    back = impl.from_native(native)
    assert back.tensors().keys() == d.params.tensors().keys()
    for name, tensor in d.params.tensors().items():
        assert np.array_equal(back.tensors()[name], tensor), name


def test_nn_lstm_native_names_and_shapes():
    d = data(I=4, H=6)
    native = NN.to_native(d.params)
    assert {k: v.shape for k, v in native.items()} == {
        "weight_ih_l0": (24, 4),
        "weight_hh_l0": (24, 6),
        "bias_ih_l0": (24,),
        "bias_hh_l0": (24,),
    }
    # b is split exactly in half, so that code which drops one of torch's two biases gets a wrong answer.
    np.testing.assert_array_equal(native["bias_hh_l0"], (d.params.b * 0.5).reshape(-1))
    np.testing.assert_array_equal(native["bias_ih_l0"] + native["bias_hh_l0"], d.params.b.reshape(-1))
    assert native["weight_ih_l0"].base is None, "to_native must not hand out views of the canonical params"


def test_the_native_layout_is_what_torch_nn_lstm_uses():
    """Load to_native's arrays into a plain torch.nn.LSTM (not through the adapter) and compare with the spec."""
    d = data(T=6, B=3, I=5, H=4)
    module = torch.nn.LSTM(5, 4, dtype=torch.float64)
    assert {k for k, _ in module.named_parameters()} == set(NN.to_native(d.params))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in NN.to_native(d.params, 0.5).items()})
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(d.x), (torch.from_numpy(d.h0)[None], torch.from_numpy(d.c0)[None]))
    ref = spec_forward(d, 0.5)
    np.testing.assert_allclose(y.numpy(), ref.h_seq, rtol=0, atol=1e-13)
    np.testing.assert_allclose(h[0].numpy(), ref.h_T, rtol=0, atol=1e-13)
    np.testing.assert_allclose(c[0].numpy(), ref.c_T, rtol=0, atol=1e-13)


def test_nn_lstm_from_native_sums_the_two_biases():
    d = data()
    native = NN.to_native(d.params)
    H = d.params.hidden_size
    total = native["bias_ih_l0"] + native["bias_hh_l0"]
    native["bias_ih_l0"], native["bias_hh_l0"] = total / 3, total - total / 3  # any split: only the sum counts
    np.testing.assert_allclose(NN.from_native(native).b, d.params.b, rtol=0, atol=1e-15)
    assert NN.from_native(native).b.shape == (4, H)


@pytest.mark.parametrize("impl", [NN, PEEP], ids=lambda i: i.id)
def test_the_forget_bias_is_folded_into_the_f_block_only(impl):
    d = data()
    plain, folded = impl.to_native(d.params, 0.0), impl.to_native(d.params, 1.25)
    bias = "bias_ih_l0" if impl is NN else "bias"
    delta = (folded[bias] - plain[bias]).reshape(4, -1)
    order = GATES if impl is NN else tl.PEEPHOLE_ORDER
    for k, gate in enumerate(order):
        np.testing.assert_allclose(delta[k], 1.25 if gate == "f" else 0.0, rtol=0, atol=1e-15, err_msg=gate)
    # (b/2 + 1.25) + b/2 and b + 1.25 round differently: a few eps apart.
    np.testing.assert_allclose(impl.from_native(folded).b, fold_forget_bias(d.params.b, 1.25), rtol=0, atol=4 * np.finfo(np.float64).eps)


def test_peephole_native_layout_orders_gates_i_f_o_g():
    d = data(peephole=True, I=4, H=6)
    native = PEEP.to_native(d.params)
    W = native["weight_ih"].reshape(4, 6, 4)
    for k, gate in enumerate(tl.PEEPHOLE_ORDER):
        np.testing.assert_array_equal(W[k], d.params.W[GATES.index(gate)])
    np.testing.assert_array_equal(native["peephole"], d.params.p.reshape(-1))
    assert "peephole" not in PEEP.to_native(d.params.without_peepholes())


# -- what is supported -----------------------------------------------------------


def test_nn_lstm_rejects_peepholes():
    with pytest.raises(NotSupported, match="torch.nn.LSTM has no peepholes"):
        NN.check(cfg("peephole"))
    d = data(peephole=True)
    with pytest.raises(NotSupported, match="no peepholes"):
        NN.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole"))
    with pytest.raises(NotSupported, match="no peepholes"):
        NN.to_native(d.params)


def test_inputs_must_arrive_in_the_requested_dtype():
    d = data(dtype="float32")
    with pytest.raises(LSTMInputError, match="params"):
        NN.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg(dtype="float64"))
    d64 = data()
    with pytest.raises(LSTMInputError, match="x"):
        PEEP.forward(d64.params, d.x, d64.h0, d64.c0, forget_bias=0.0, config=cfg(dtype="float64"))


@pytest.mark.parametrize("impl", [NN, PEEP], ids=lambda i: i.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_and_gradients_come_back_in_the_requested_dtype(impl, dtype):
    d = data(dtype=dtype)
    out = impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg(dtype=dtype))
    assert {k: v.dtype for k, v in out.tensors().items()} == dict.fromkeys(("h_seq", "h_T", "c_T"), np.dtype(dtype))
    grads = impl.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=cfg(dtype=dtype))
    assert set(grads) == {"x", "h0", "c0", "W", "U", "b"}
    assert all(isinstance(g, np.ndarray) and g.dtype == np.dtype(dtype) for g in grads.values())


def test_cuda_unavailable_is_a_clear_reason():
    if CUDA:
        pytest.skip("a CUDA device is visible: nothing to report")
    for impl in (NN, PEEP):
        reason = impl.availability("cuda")
        assert reason and "CUDA" in reason
        d = data()
        with pytest.raises(Unavailable):
            impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg(device="cuda"))


@pytest.mark.parametrize(
    "torch_module, reason",
    [
        # What Python raises when torch is not installed at all: the install hint.
        ("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n", tl.INSTALL_HINT),
        # A torch that is there but broken (a CUDA library that does not load): the real error, not "not installed".
        ("raise OSError('libcudnn.so.9: cannot open shared object file')\n",
         "import torch failed: OSError: libcudnn.so.9: cannot open shared object file"),
    ],
    ids=["missing", "broken"],
)
def test_without_a_working_torch_the_module_imports_and_says_why(tmp_path, torch_module, reason):
    """import backends.torch_lstm (and torch_onnx_export) works without torch; availability() says why the rows
    cannot run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "torch.py").write_text(torch_module)
    code = (
        "from backends.torch_lstm import IMPLEMENTATIONS as I\n"
        "from backends.torch_onnx_export import IMPLEMENTATIONS as E\n"
        "print('|'.join(i.availability('cpu') for i in (*I, *E)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "|".join([reason] * (len(tl.IMPLEMENTATIONS) + 2))


# -- environment and numerics ------------------------------------------------------


@pytest.mark.parametrize("impl", [NN, PEEP], ids=lambda i: i.id)
def test_environment_keys(impl):
    env = impl.environment("cpu")
    for key in ("torch", "device", "threads", "tf32_matmul", "tf32_cudnn"):
        assert key in env, key
    assert env["torch"] == torch.__version__
    assert env["threads"] == torch.get_num_threads()


def test_lstmc_threads_is_honoured(monkeypatch):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv("LSTMC_THREADS", str(wanted))
    try:
        assert NN.environment("cpu")["threads"] == wanted
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


@needs_cuda
@pytest.mark.parametrize("impl", [NN, PEEP], ids=lambda i: i.id)
def test_tf32_is_off_after_running_on_cuda(impl):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    d = data(dtype="float32")
    impl.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg(dtype="float32", device="cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False
    env = impl.environment("cuda")
    assert env["tf32_matmul"] is False and env["tf32_cudnn"] is False and "cudnn" in env


# -- caching ------------------------------------------------------------------------


def test_converted_parameters_are_cached_per_params_object():
    d = data()
    assert NN.module(d.params, 0.0, "float64", "cpu") is NN.module(d.params, 0.0, "float64", "cpu")
    assert NN.module(d.params, 1.0, "float64", "cpu") is not NN.module(d.params, 0.0, "float64", "cpu")
    assert PEEP.weights(d.params, 0.0, "float64", "cpu") is PEEP.weights(d.params, 0.0, "float64", "cpu")
    other = make_case_data(d.case, "float64").params  # equal values, another object: converted again
    assert NN.module(other, 0.0, "float64", "cpu") is not NN.module(d.params, 0.0, "float64", "cpu")


def test_repeated_calls_do_not_accumulate_gradients():
    d = data()
    first = NN.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=cfg())
    second = NN.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=cfg())
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# -- against the spec ------------------------------------------------------------------


def test_nn_lstm_matches_the_spec_with_a_forget_bias():
    d = make_case_data(case_by_name("forget-bias"))
    out = NN.forward(d.params, d.x, d.h0, d.c0, forget_bias=d.forget_bias, config=cfg())
    ref = spec_forward(d, d.forget_bias)
    np.testing.assert_allclose(out.h_seq, ref.h_seq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.c_T, ref.c_T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["standard", "peephole"])
def test_peephole_implementation_matches_the_spec_on_small_peephole(variant):
    d = make_case_data(case_by_name("small-peephole"))
    params = d.params if variant == "peephole" else d.params.without_peepholes()
    out = PEEP.forward(params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg(variant))
    fwd = lstm.forward(params, d.x, d.h0, d.c0)
    for name, got in out.tensors().items():
        np.testing.assert_allclose(got, getattr(fwd, name), rtol=1e-12, atol=1e-12, err_msg=name)
    grads = PEEP.backward(params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=cfg(variant))
    ref = lstm.backward(fwd, d.dh_seq, d.dh_T, d.dc_T).tensors()
    assert set(grads) == set(ref)
    for name, expected in ref.items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-11, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("peephole", [False, True])
def test_peephole_inference_and_autograd_paths_agree(peephole):
    """forward() runs in place without autograd; backward() builds the graph out of place: same values."""
    d = data(peephole=peephole, forget_bias=0.5, T=7)
    w = PEEP.weights(d.params, 0.5, "float64", "cpu")
    args = [torch.from_numpy(a) for a in (d.x, d.h0, d.c0)]
    with torch.no_grad():
        fast = tl._peephole_forward(torch, w, *args)
        graph = tl._peephole_forward_autograd(torch, w, *args)
    for a, b in zip(fast, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-15)


def test_inputs_are_not_modified():
    d = data(peephole=True)
    copies = {k: v.copy() for k, v in {**d.inputs(), **d.cotangents(), **d.params.tensors()}.items()}
    PEEP.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole"))
    PEEP.backward(d.params, d.x, d.h0, d.c0, d.cotangents(), forget_bias=0.0, config=cfg("peephole"))
    dn = data()
    NN.forward(dn.params, dn.x, dn.h0, dn.c0, forget_bias=0.0, config=cfg())
    for name, value in {**d.inputs(), **d.cotangents(), **d.params.tensors()}.items():
        np.testing.assert_array_equal(value, copies[name], err_msg=name)


def test_reused_workspace_leaves_earlier_outputs_intact():
    """forward() reuses a workspace per shape: what it returned before must not change."""
    d, other = data(peephole=True, seed=1), data(peephole=True, seed=2)
    first = PEEP.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole"))
    kept = {k: v.copy() for k, v in first.tensors().items()}
    PEEP.forward(other.params, other.x, other.h0, other.c0, forget_bias=0.0, config=cfg("peephole"))
    again = PEEP.forward(d.params, d.x, d.h0, d.c0, forget_bias=0.0, config=cfg("peephole"))
    for name, value in kept.items():
        np.testing.assert_array_equal(first.tensors()[name], value, err_msg=name)
        np.testing.assert_array_equal(again.tensors()[name], value, err_msg=name)


def test_environment_of_an_unavailable_device_says_why():
    if CUDA:
        pytest.skip("a CUDA device is visible")
    assert NN.environment("cuda") == {"unavailable": NN.availability("cuda")}


# ---------------------------------------------------------------------------------------------------------------
# The layer: torch/nn.LSTM (three calls), torch/nn.LSTMCell, and nn.LSTM exported to ONNX
# ---------------------------------------------------------------------------------------------------------------

from backends import torch_onnx_export as te  # noqa: E402
from backends.config import LAYER_FEATURES, layer_features  # noqa: E402
from spec import layer as spec_layer  # noqa: E402
from spec.layer import LayerConfig  # noqa: E402
from spec.layer_cases import LayerCase, layer_case_by_name, make_layer_case_data  # noqa: E402

NN_ROWS = {impl.id: impl for impl in tl.IMPLEMENTATIONS if isinstance(impl, tl.TorchLSTM)}
BATCH_FIRST, SORTED = NN_ROWS["torch/nn.LSTM(batch_first)"], NN_ROWS["torch/nn.LSTM(enforce_sorted)"]
CELL = next(impl for impl in tl.IMPLEMENTATIONS if isinstance(impl, tl.TorchLSTMCell))
TS, DYN = (next(i for i in te.IMPLEMENTATIONS if i.exporter == kind) for kind in ("torchscript", "dynamo"))
F32 = Config(dtype="float32")


def layer_data(dtype="float64", lengths=None, mask=None, T=5, B=4, I=3, H=4, seed=7, **config):
    return make_layer_case_data(LayerCase("unit-layer", T, B, I, H, LayerConfig(**config), lengths=lengths, mask=mask, seed=seed), dtype)


def run_layer(impl, d, config=None, **override):
    arguments = dict(layer=d.config, lengths=d.lengths, mask=d.mask, config=config or cfg(dtype=d.x.dtype.name))
    arguments.update(override)
    return impl.forward_layer(d.params, d.x, d.h0, d.c0, **arguments)


def spec_layer_forward(d):
    return spec_layer.forward(d.params, d.x, d.h0, d.c0, config=d.config, lengths=d.lengths, mask=d.mask)


LSTMP_STACK = dict(num_layers=2, direction="bidirectional", proj_size=2, forget_bias=0.0)
CELL_STACK = dict(num_layers=2, direction="bidirectional")


# -- layouts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl,config", [(NN, LSTMP_STACK), (NN, {}), (CELL, CELL_STACK), (CELL, dict(num_layers=3, direction="reverse"))],
                         ids=["nn.LSTM-lstmp-stack", "nn.LSTM-one-layer", "LSTMCell-stack", "LSTMCell-reverse"])
def test_layer_round_trip_is_exact(impl, config, dtype):
    d = layer_data(dtype, **config)
    native = impl.to_native_layer(d.params, d.config)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.dtype(dtype) for v in native.values())
    back = impl.from_native_layer(native, d.config)
    assert back.num_directions == d.params.num_directions
    assert back.tensors().keys() == d.params.tensors().keys()
    for name, tensor in d.params.tensors().items():
        assert np.array_equal(back.tensors()[name], tensor), name


def test_the_export_rows_use_nn_lstm_layout():
    """The exported module is torch/nn.LSTM's: its state_dict is both export rows' layout (one copy)."""
    d = layer_data(**LSTMP_STACK)
    want = NN.to_native_layer(d.params, d.config)
    for impl in (TS, DYN):
        native = impl.to_native_layer(d.params, d.config)
        assert native.keys() == want.keys() and all(np.array_equal(native[k], want[k]) for k in want)
        back = impl.from_native_layer(native, d.config)
        assert all(np.array_equal(back.tensors()[k], v) for k, v in d.params.tensors().items())


def test_nn_lstm_layer_layout_is_the_state_dict_of_a_plain_nn_lstm():
    """Loaded into a torch.nn.LSTM built here (not through the adapter, strict load_state_dict), to_native_layer's
    arrays compute the spec's answer: names, shapes, directions, the projection and the forget bias all land."""
    d = layer_data(**{**LSTMP_STACK, "forget_bias": 0.5})
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    native = NN.to_native_layer(d.params, d.config)
    assert {k: v.shape for k, v in native.items()} == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in native.items()})
    with torch.no_grad():
        y, (h, c) = module(*(torch.from_numpy(a) for a in (d.x,)), (torch.from_numpy(d.h0), torch.from_numpy(d.c0)))
    ref = spec_layer_forward(d)
    for got, want in ((y, ref.y), (h, ref.h_T), (c, ref.c_T)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-13)


def test_lstmcell_layer_layout_is_the_state_dict_of_a_module_list():
    d = layer_data(**CELL_STACK)
    cells = torch.nn.ModuleList(torch.nn.LSTMCell(c.input_size, c.hidden_size, dtype=torch.float64) for c in d.params.cells)
    native = CELL.to_native_layer(d.params, d.config)
    assert {k: v.shape for k, v in native.items()} == {k: tuple(v.shape) for k, v in cells.state_dict().items()}
    assert set(CELL.to_native(d.params.cells[0])) == set(torch.nn.LSTMCell(3, 4).state_dict())


def test_nn_lstm_from_native_layer_sums_the_two_biases_and_keeps_the_forget_bias_in_b_f():
    d = layer_data(**LSTMP_STACK)
    native = NN.to_native_layer(d.params, LayerConfig(**{**LSTMP_STACK, "forget_bias": 1.25}))
    total = native["bias_ih_l1_reverse"] + native["bias_hh_l1_reverse"]
    native["bias_ih_l1_reverse"], native["bias_hh_l1_reverse"] = total / 3, total - total / 3  # only the sum counts
    back = NN.from_native_layer(native, d.config)
    np.testing.assert_allclose(back.cell(1, 1).b, fold_forget_bias(d.params.cell(1, 1).b, 1.25), rtol=0, atol=1e-14)
    np.testing.assert_allclose(back.cell(0, 0).b, fold_forget_bias(d.params.cell(0, 0).b, 1.25), rtol=0, atol=1e-14)


@pytest.mark.parametrize("impl", [NN, CELL], ids=lambda i: i.id)
def test_every_cell_and_gate_reaches_the_layer(impl):
    """Layer permutation canary: swapping two gates of any one cell (every layer and direction), or the two
    directions' weights, changes the outputs, so a layout that misplaces a cell cannot hide behind the data."""
    d = layer_data(**(CELL_STACK if impl is CELL else LSTMP_STACK))
    base = run_layer(impl, d)
    for k in range(len(d.params.cells)):
        for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
            order = [0, 1, 2, 3]
            order[a], order[b] = b, a
            cell = d.params.cells[k]
            swapped = type(cell)(cell.W[order], cell.U[order], cell.b[order], cell.p, cell.W_hr)
            params = type(d.params)(tuple(swapped if j == k else c for j, c in enumerate(d.params.cells)), d.params.num_directions)
            out = impl.forward_layer(params, d.x, d.h0, d.c0, layer=d.config, config=cfg())
            assert max(np.max(np.abs(out.y - base.y)), np.max(np.abs(out.h_T - base.h_T))) > 1e-3, (k, a, b)
    cells = list(d.params.cells)
    cells[0], cells[1] = cells[1], cells[0]  # layer 0's directions swapped (same shapes)
    out = impl.forward_layer(type(d.params)(tuple(cells), 2), d.x, d.h0, d.c0, layer=d.config, config=cfg())
    assert np.max(np.abs(out.y - base.y)) > 1e-3


@pytest.mark.parametrize("config,feature", [
    (dict(direction="reverse"), "reverse"), (dict(cell_clip=1.0), "cell_clip"), (dict(gate_clip=1.0), "gate_clip"),
    (dict(proj_size=2, proj_clip=0.5), "proj_clip"), (dict(coupled_input_forget=True), "coupled"),
])
def test_nn_lstm_layout_refuses_what_nn_lstm_cannot_run(config, feature):
    d = layer_data(**{k: v for k, v in config.items() if k not in ("cell_clip", "gate_clip", "proj_clip", "coupled_input_forget")})
    with pytest.raises(NotSupported) as raised:
        NN.to_native_layer(d.params, LayerConfig(**config))
    assert str(raised.value) == NN.unsupported_reasons[feature]
    with pytest.raises(NotSupported, match="no peepholes"):
        NN.to_native_layer(layer_data(peephole=True).params, LayerConfig(peephole=True))


def test_lstmcell_layout_refuses_a_projection():
    d = layer_data(proj_size=2)
    with pytest.raises(NotSupported, match="LSTMCell has no projection"):
        CELL.to_native_layer(d.params, d.config)


# -- declarations -----------------------------------------------------------------------------------------------


def test_layer_declarations():
    assert NN.layer_features == BATCH_FIRST.layer_features == SORTED.layer_features == ("stacked", "bidirectional", "projection", "lengths")
    assert set(CELL.layer_features) == {"stacked", "reverse", "bidirectional", "lengths", "empty_sequences", "mask", "mask_previous_output"}
    assert TS.layer_features == ("stacked", "bidirectional", "lengths", "empty_sequences")
    assert DYN.layer_features == ("stacked", "bidirectional", "projection")
    for impl in (*NN_ROWS.values(), CELL, TS, DYN):  # every feature it lacks has a reason a user can read
        missing = [f for f in LAYER_FEATURES if f not in impl.layer_features and f not in impl.unsupported_reasons]
        assert not missing, f"{impl.id}: no reason for {missing}"
    assert (TS.gradients, DYN.gradients, TS.dtypes, DYN.dtypes) == (False, False, ("float32",), ("float32",))


def test_the_empty_sequence_reason_is_what_pytorch_says():
    """The declared reason quotes PyTorch's own refusal (pinned in tests/spec/test_layer_semantics.py)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    d = layer_data(direction="bidirectional", lengths=(3, 0, 5, 1))
    with pytest.raises(RuntimeError) as raised:
        pack_padded_sequence(torch.from_numpy(d.x), torch.from_numpy(d.lengths), enforce_sorted=False)
    for impl in NN_ROWS.values():
        with pytest.raises(NotSupported) as declared:
            impl.check_layer(cfg(), d.config, d.lengths)
        assert str(raised.value) in str(declared.value)


def test_the_torchscript_exporter_really_refuses_a_projection():
    d = layer_data("float32", proj_size=2)
    with pytest.raises(Exception, match="LSTMs with projections"):
        TS.export(d.params, d.config, 5, 4, with_lengths=False)
    with pytest.raises(NotSupported, match="LSTMs with projections"):
        TS.check_layer(F32, d.config)
    with pytest.raises(NotSupported, match="pack_padded_sequence"):
        DYN.check_layer(F32, LayerConfig(), np.array([5, 1, 2, 3]))


# -- the three calls of nn.LSTM ----------------------------------------------------------------------------------


def test_batch_first_and_sorted_rows_take_their_own_paths(monkeypatch):
    """Each row really calls nn.LSTM its way (so a defect in that path shows in its row), and all three agree."""
    from torch.nn.utils import rnn

    calls = []
    original = rnn.pack_padded_sequence

    def spy(x, lengths, batch_first=False, enforce_sorted=True):
        calls.append((tuple(x.shape), batch_first, enforce_sorted, lengths.tolist()))
        return original(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)

    monkeypatch.setattr(rnn, "pack_padded_sequence", spy)
    d = layer_data(lengths=(3, 5, 1, 4), T=5, B=4, **LSTMP_STACK)
    results = {}
    for impl in NN_ROWS.values():
        calls.clear()
        results[impl.id] = run_layer(impl, d)
        assert len(calls) == 1
        shape, batch_first, enforce_sorted, lengths = calls[0]
        assert batch_first == impl.batch_first and shape == ((4, 5, 3) if impl.batch_first else (5, 4, 3))
        assert enforce_sorted == impl.enforce_sorted
        assert lengths == ([5, 4, 3, 1] if impl.enforce_sorted else [3, 5, 1, 4])
        assert impl.layer_module(d.params, d.config, "float64", "cpu").batch_first == impl.batch_first
    ref = spec_layer_forward(d)
    for got in results.values():
        for name, want in (("y", ref.y), ("h_T", ref.h_T), ("c_T", ref.c_T)):
            np.testing.assert_allclose(getattr(got, name), want, rtol=0, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("impl", [NN, BATCH_FIRST, SORTED, CELL], ids=lambda i: i.id)
def test_layer_gradients_match_the_spec(impl):
    d = layer_data(lengths=(3, 5, 1, 4), **(CELL_STACK if impl is CELL else LSTMP_STACK))
    grads = impl.backward_layer(d.params, d.x, d.h0, d.c0, d.cotangents(), layer=d.config, lengths=d.lengths, config=cfg())
    want = spec_layer.backward(spec_layer_forward(d), d.dy, d.dh_T, d.dc_T).tensors()
    assert set(grads) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-11, atol=1e-11, err_msg=name)


def test_layer_modules_are_cached_per_params_object():
    d = layer_data(**LSTMP_STACK)
    assert NN.layer_module(d.params, d.config, "float64", "cpu") is NN.layer_module(d.params, d.config, "float64", "cpu")
    c = layer_data(**CELL_STACK)
    assert CELL.layer_module(c.params, c.config, "float64", "cpu") is CELL.layer_module(c.params, c.config, "float64", "cpu")
    other = make_layer_case_data(d.case, "float64").params
    assert NN.layer_module(other, d.config, "float64", "cpu") is not NN.layer_module(d.params, d.config, "float64", "cpu")


# -- nn.LSTMCell in a loop: masks and empty rows as its users write them -------------------------------------------


@pytest.mark.parametrize("zero_output", [True, False])
def test_lstmcell_loop_masks_match_the_spec(zero_output):
    d = layer_data(mask=("01111", "11011", "00000", "11100"), zero_output_for_mask=zero_output, **CELL_STACK)
    out, ref = run_layer(CELL, d), spec_layer_forward(d)
    for name, want in (("y", ref.y), ("h_T", ref.h_T), ("c_T", ref.c_T)):
        np.testing.assert_allclose(getattr(out, name), want, rtol=0, atol=1e-13, err_msg=name)
    np.testing.assert_array_equal(out.h_T[:, 2], d.h0[:, 2])  # a row masked throughout keeps its initial state


# -- exported to ONNX, run by ONNX Runtime -------------------------------------------------------------------------


#: Where ONNX Runtime (or onnx) is not installed (tox -e torch), the TorchScript row cannot run: skip with its reason.
needs_torchscript_row = pytest.mark.skipif(TS.availability("cpu") is not None, reason=f"unavailable: {TS.availability('cpu')}")


@needs_torchscript_row
def test_the_torchscript_export_takes_lengths_and_holds_for_lengths_other_than_the_examples():
    """Exported once from example lengths (all T), the graph takes lengths as an input and agrees with the spec
    for others: a stacked bidirectional case with lengths 5, 2, 1, 4 (no 0: the known failure is elsewhere)."""
    d = layer_data("float32", lengths=(5, 2, 1, 4), **CELL_STACK)
    session = TS.session(d.params, d.config, 5, 4, True, "cpu")
    assert [i.name for i in session.get_inputs()] == ["x", "h0", "c0", "lengths"]
    out, ref = run_layer(TS, d, config=F32), spec_layer_forward(layer_data(lengths=(5, 2, 1, 4), **CELL_STACK))
    for name, want in (("y", ref.y), ("h_T", ref.h_T), ("c_T", ref.c_T)):
        np.testing.assert_allclose(getattr(out, name), want, rtol=2e-5, atol=2e-5, err_msg=name)


@needs_torchscript_row
def test_the_torchscript_export_known_failure_is_only_the_empty_rows_final_state():
    """The 'lengths' case is a known failure of the TorchScript row: everything but an empty row's final state agrees
    with the spec; that state is zero where the spec has the initial state."""
    d = make_layer_case_data(layer_case_by_name("lengths"), "float32")
    ref = spec_layer_forward(make_layer_case_data(layer_case_by_name("lengths"), "float64"))
    out = run_layer(TS, d, config=F32)
    empty = d.lengths == 0
    np.testing.assert_allclose(out.y, ref.y, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out.h_T[:, ~empty], ref.h_T[:, ~empty], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out.c_T[:, ~empty], ref.c_T[:, ~empty], rtol=2e-5, atol=2e-5)
    assert not out.h_T[:, empty].any() and not out.c_T[:, empty].any() and np.abs(d.h0[:, empty]).max() > 0.1
    assert TS.known_failure("layer outputs", F32, layer_features(d.config, d.lengths), "lengths")
    assert not TS.known_failure("layer outputs", F32, layer_features(d.config, np.array([5, 2, 1, 4, 6])), "x")


@pytest.mark.skipif(DYN.availability("cpu") is not None, reason=f"unavailable: {DYN.availability('cpu')}")
def test_the_dynamo_export_of_a_projection_is_refused_by_onnx_runtime():
    """The suite has no projection case without lengths (which the dynamo row cannot run), so the known failure is
    pinned here: ONNX Runtime refuses the exported nn.LSTM(proj_size=2), one layer and stacked bidirectional."""
    for config in (dict(proj_size=2), LSTMP_STACK):
        d = layer_data("float32", **config)
        with pytest.raises(Exception, match="ONNXRuntimeError"):
            run_layer(DYN, d, config=F32)
        assert DYN.known_failure("layer outputs", F32, layer_features(d.config), "x")
    d = layer_data("float32", **CELL_STACK)  # without a projection the same export is right
    out, ref = run_layer(DYN, d, config=F32), spec_layer_forward(layer_data(**CELL_STACK))
    np.testing.assert_allclose(out.y, ref.y, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", [TS, DYN], ids=lambda i: i.id)
def test_export_rows_environment_and_availability(impl):
    """In any environment: the row runs where ONNX Runtime (and, for dynamo, onnxscript) is installed, else names
    what is missing; environment() names every module's version or its absence, never fails. (Each missing module
    made to go missing: tests/backends/test_onnx_adapters.py.)"""
    import importlib.util

    needed = {"onnxruntime": te.ORT_HINT, **({"onnxscript": te.ONNXSCRIPT_HINT} if impl.exporter == "dynamo" else {})}
    missing = [hint for module, hint in needed.items() if importlib.util.find_spec(module) is None]
    assert impl.availability("cpu") == (missing[0] if missing else None)
    if missing:
        assert impl.availability("cuda") == missing[0]
    else:
        assert impl.availability("cuda") is not None or "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
    env = impl.environment("cpu")
    assert "environment() failed" not in env and env["torch"] == torch.__version__
    assert env["exporter"] == f"torch.onnx.export(dynamo={impl.exporter == 'dynamo'})"
    for module, hint in needed.items():
        assert (env[module] == f"unavailable: {hint}") == (hint in missing), (module, env[module])
    assert ("onnxscript" in env) == (impl.exporter == "dynamo")


def test_the_dynamo_row_without_onnxscript_says_it_is_needed(tmp_path):
    """What a new user of the dynamo exporter meets first: onnxscript missing. The row says so, installing hint included."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "onnxscript.py").write_text("raise ModuleNotFoundError(\"No module named 'onnxscript'\", name='onnxscript')\n")
    code = "from backends.torch_onnx_export import IMPLEMENTATIONS as E\nprint('|'.join(str(i.availability('cpu')) for i in E))\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    # Where ONNX Runtime is missing too (tox -e torch), both rows name it first, as they do here.
    here = TS.availability("cpu")
    assert result.stdout.strip() == f"{here}|{here or te.ONNXSCRIPT_HINT}"
    assert here is None or here == te.ORT_HINT
