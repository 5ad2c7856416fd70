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
    """import backends.torch_lstm works without torch; availability() says why the rows cannot run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "torch.py").write_text(torch_module)
    code = (
        "from backends.torch_lstm import IMPLEMENTATIONS as I\n"
        "print('|'.join(i.availability('cpu') for i in I))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "|".join([reason] * 2)


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
