"""The PyTorch rows (backends/rows/torch.py), what the conformance suite cannot see of them: their layouts
(backends/layouts/torch.py) against torch's own modules, round trips and refusals; the declarations and their
reasons; availability without a working torch; the numerics set before each call (threads, TF32, cuDNN); what
is built once and reused; the calls each row makes of torch; and the timed passes, half types included.

Whether each row's outputs and gradients agree with the spec is the suite's: ``pytest conformance/ -k torch/``.
The layout tests need NumPy only; the rest skip, with the install hint, where torch is missing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import torch as layouts
from backends.rows import torch as rows
from backends.runtimes.torch import INSTALL_HINT, TORCH, cudnn_wanted, lstm_cpu_kernels
from bench.correctness import check
from bench.correctness import reference as timed_reference
from contract.answers import Cotangents
from contract.errors import NotSupported, Unavailable
from contract.layout import fold_forget_bias
from contract.runtime import framework_problem
from contract.timing import Timing
from contract.vocabulary import ARCHITECTURE, HALF_DTYPES, Device, Dtype, Feature
from spec.cases import Case, case_by_name, make_case_data, reference
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams
from spec.precision import Policy

ROOT = Path(__file__).resolve().parents[2]
#: Why torch cannot be used here (its install hint where it is missing), or None.
TORCH_PROBLEM = framework_problem("torch", INSTALL_HINT)
needs_torch = pytest.mark.skipif(TORCH_PROBLEM is not None, reason=str(TORCH_PROBLEM))
torch = None if TORCH_PROBLEM else importlib.import_module("torch")
CUDA = torch is not None and torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason=str(TORCH_PROBLEM or "no CUDA device visible to torch "
                                                                     "(torch.cuda.is_available() is False)"))

BY_ID = {row.id: row for row in rows.ROWS}
NN, BATCH_FIRST, SORTED = (BY_ID[i] for i in ("torch/nn.LSTM", "torch/nn.LSTM(batch_first)", "torch/nn.LSTM(enforce_sorted)"))
CELL, PEEPHOLE, AUTOCAST = BY_ID["torch/nn.LSTMCell"], BY_ID["torch/peephole"], BY_ID["torch/nn.LSTM(autocast)"]
NN_ROWS = (NN, BATCH_FIRST, SORTED)
#: The rows that run float32 and float64 (every one but autocast's, which is half types only).
FULL_ROWS = tuple(row for row in rows.ROWS if row is not AUTOCAST)

LSTMP_STACK = dict(num_layers=2, direction="bidirectional", proj_size=2)
CELL_STACK = dict(num_layers=2, direction="bidirectional")


def data(dtype="float64", *, T=5, B=4, I=3, H=4, seed=7, lengths=None, mask=None, **layer):
    return make_case_data(Case("unit", T, B, I, H, LayerConfig(**layer), lengths=lengths, mask=mask, seed=seed), dtype)


def cotangents(d) -> Cotangents:
    return Cotangents(d.dy, d.dh_T, d.dc_T)


def forward(row, d, device=Device.CPU):
    return row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths, mask=d.mask, device=device)


def backward(row, d):
    return row.backward(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer, lengths=d.lengths, mask=d.mask)


def assert_params_equal(got: LayerParams, want: LayerParams):
    assert got.num_directions == want.num_directions and list(got.tensors()) == list(want.tensors())
    for name, tensor in want.tensors().items():
        assert got.tensors()[name].dtype == tensor.dtype, name
        np.testing.assert_array_equal(got.tensors()[name], tensor, err_msg=name)


# -- layouts (NumPy only) ----------------------------------------------------------------------------------------


ROUND_TRIPS = [
    (layouts.NN_LSTM, LSTMP_STACK), (layouts.NN_LSTM, {}), (layouts.CELLS, CELL_STACK),
    (layouts.CELLS, dict(num_layers=3, direction="reverse")), (layouts.PEEPHOLE, {}), (layouts.PEEPHOLE, dict(peephole=True)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,layer", ROUND_TRIPS,
                         ids=lambda v: getattr(v, "name", None) or "-".join(map(str, v.values())) or "one-layer")
def test_layout_round_trip_is_exact_and_hands_out_no_views(layout, layer, dtype):
    d = data(dtype, **layer)
    native = layout.to_native(d.params, d.layer)
    for name, value in native.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.dtype(dtype), name
        assert not any(np.shares_memory(value, t) for t in d.params.tensors().values()), f"{name} is a view of the params"
    assert_params_equal(layout.from_native(native, d.layer), d.params)


def test_nn_lstm_layout_splits_b_exactly_in_half_and_only_the_sum_counts():
    """Half of b in each of torch's two biases: code that drops one of them gets a wrong answer, not a lucky pass."""
    d = data(**LSTMP_STACK)
    native = layouts.NN_LSTM.to_native(d.params, d.layer)
    cell = d.params.cell(1, 1)
    np.testing.assert_array_equal(native["bias_hh_l1_reverse"], (cell.b * 0.5).reshape(-1))
    np.testing.assert_array_equal(native["bias_ih_l1_reverse"] + native["bias_hh_l1_reverse"], cell.b.reshape(-1))
    total = native["bias_ih_l1_reverse"] + native["bias_hh_l1_reverse"]
    native["bias_ih_l1_reverse"], native["bias_hh_l1_reverse"] = total / 3, total - total / 3
    np.testing.assert_allclose(layouts.NN_LSTM.from_native(native, d.layer).cell(1, 1).b, cell.b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("layout,bias,order", [
    (layouts.NN_LSTM, "bias_ih_l0", GATES), (layouts.CELLS, "0.bias_ih", GATES),
    (layouts.PEEPHOLE, "bias", layouts.PEEPHOLE_ORDER),
], ids=lambda v: getattr(v, "name", None))
def test_the_forget_bias_is_folded_into_the_f_block_only(layout, bias, order):
    d = data(peephole=layout is layouts.PEEPHOLE)
    plain = layout.to_native(d.params, d.layer)
    folded = layout.to_native(d.params, replace(d.layer, forget_bias=1.25))
    delta = (folded[bias] - plain[bias]).reshape(4, -1)
    for k, gate in enumerate(order):
        np.testing.assert_allclose(delta[k], 1.25 if gate == "f" else 0.0, rtol=0, atol=1e-15, err_msg=gate)
    # (b/2 + 1.25) + b/2 and b + 1.25 round differently: a few eps apart.
    back = layout.from_native(folded, d.layer).cells[0].b
    np.testing.assert_allclose(back, fold_forget_bias(d.params.cells[0].b, 1.25), rtol=0, atol=4 * np.finfo(np.float64).eps)


def test_peephole_layout_orders_the_rows_i_f_o_g():
    d = data(peephole=True, I=4, H=6)
    native = layouts.PEEPHOLE.to_native(d.params, d.layer)
    cell = d.params.cells[0]
    W = native["weight_ih"].reshape(4, 6, 4)
    for k, gate in enumerate(layouts.PEEPHOLE_ORDER):
        np.testing.assert_array_equal(W[k], cell.W[GATES.index(gate)], err_msg=gate)
    np.testing.assert_array_equal(native["peephole"], cell.p.reshape(-1))
    plain = data(I=4, H=6)
    assert "peephole" not in layouts.PEEPHOLE.to_native(plain.params, plain.layer)


def test_layout_gradients_are_the_transpose_with_b_the_mean_of_the_two_biases():
    """b feeds both biases, so its gradient is the mean of theirs (which torch computes equal); a forget bias is a
    constant and adds nothing; two bias gradients that disagree mean the layout is wrong, and say so."""
    d = data(**LSTMP_STACK)
    layer = replace(d.layer, forget_bias=1.5)
    native = layouts.NN_LSTM.to_native(d.params, replace(layer, forget_bias=0.0))
    native = {name: value * 2 if name.startswith("bias") else value for name, value in native.items()}  # each b/2 -> b
    assert_params_equal(layouts.NN_LSTM.gradient(native, d.params, layer), d.params)
    native["bias_hh_l0"] = native["bias_hh_l0"] + 1e-3
    with pytest.raises(AssertionError, match="the gradients of bias_ih_l0 and bias_hh_l0 differ by up to 0.001"):
        layouts.NN_LSTM.gradient(native, d.params, layer)
    p = data(peephole=True)
    grads = layouts.PEEPHOLE.to_native(p.params, p.layer)
    assert_params_equal(layouts.PEEPHOLE.gradient(grads, p.params, replace(p.layer, forget_bias=1.5)), p.params)


#: A layer that uses one architecture feature (and what it needs).
FEATURE_LAYERS = {
    Feature.PEEPHOLE: dict(peephole=True), Feature.STACKED: dict(num_layers=2), Feature.REVERSE: dict(direction="reverse"),
    Feature.BIDIRECTIONAL: dict(direction="bidirectional"), Feature.PROJECTION: dict(proj_size=2),
    Feature.PROJ_CLIP: dict(proj_size=2, proj_clip=0.5), Feature.CELL_CLIP: dict(cell_clip=1.0),
    Feature.GATE_CLIP: dict(gate_clip=1.0), Feature.COUPLED: dict(coupled_input_forget=True),
    Feature.LAYER_NORM: dict(layer_norm=True), Feature.PROJ_BIAS: dict(proj_size=2, proj_bias=True),
}
REFUSED = [(layout, feature) for layout in (layouts.NN_LSTM, layouts.CELLS, layouts.PEEPHOLE)
           for feature in sorted(ARCHITECTURE - layout.holds)]


@pytest.mark.parametrize("layout,feature", REFUSED, ids=lambda v: getattr(v, "name", None) or str(v))
def test_a_layout_refuses_what_it_cannot_hold_with_its_own_words(layout, feature):
    d = data(**FEATURE_LAYERS[feature])
    for convert, argument in ((layout.to_native, d.params), (layout.from_native, {})):
        with pytest.raises(NotSupported) as refused:
            convert(argument, d.layer)
        assert str(refused.value) == layout.reasons[feature]


# -- declarations (no torch needed) ------------------------------------------------------------------------------


def test_declarations():
    for row in NN_ROWS:
        assert row.features == {Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION, Feature.LENGTHS}, row.id
    assert CELL.features == {Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.LENGTHS,
                             Feature.EMPTY_SEQUENCES, Feature.MASK, Feature.MASK_PREVIOUS_OUTPUT}
    assert PEEPHOLE.features == {Feature.PEEPHOLE}
    assert [row.layout for row in rows.ROWS] == [layouts.NN_LSTM] * 3 + [layouts.CELLS, layouts.PEEPHOLE, layouts.NN_LSTM]
    for row in FULL_ROWS:
        assert row.runtime is TORCH and set(HALF_DTYPES) <= set(row.dtypes) and row.gradients, row.id
        # The policy of the kernel the row's call takes: oneDNN's fused LSTM (half-storage) where the CPU has it for
        # the dtype, ATen's cell (every operation) otherwise.
        for half in HALF_DTYPES if torch is not None else ():
            onednn = row in NN_ROWS and lstm_cpu_kernels(torch)[half.value] == "oneDNN"
            assert row.policy(half) is (Policy.HALF_STORAGE if onednn else Policy.EVERY_OPERATION), (row.id, half)
            # nn.LSTM: packed sequences and projections take ATen's cell on the CPU whatever oneDNN supports.
            for feature in (Feature.LENGTHS, Feature.PROJECTION):
                assert row.policy(half, Device.CPU, {feature, Feature.STACKED}) is Policy.EVERY_OPERATION, (row.id, feature)
            if row in NN_ROWS:
                assert row.policy(half, Device.CUDA, {Feature.LENGTHS}) is Policy.HALF_STORAGE, row.id
        assert row.devices == (Device.CPU, Device.CUDA), row.id
        assert not row.known_failures and not row.process_environment, row.id
    assert [(row.batch_first, row.enforce_sorted) for row in NN_ROWS] == [(False, False), (True, False), (False, True)]
    # torch.autocast: half types only, forward only, oneDNN's half-storage where it runs, its crashes narrowed to the
    # CPUs that lack oneDNN's support for the type.
    assert AUTOCAST.dtypes == HALF_DTYPES and not AUTOCAST.gradients and AUTOCAST.features == NN.features
    assert {AUTOCAST.policy(half) for half in HALF_DTYPES} == {Policy.HALF_STORAGE}
    assert [k.cpu_lacks for k in AUTOCAST.known_failures] == [(), (), ("avx512_fp16", "avx_ne_convert", "amx_fp16"),
                                                               ("avx512f", "avx_ne_convert")]
    # Autocast does not reach packed sequences or projections (they never take oneDNN's layer op): in every half type.
    assert [set(k.features) for k in AUTOCAST.known_failures[:2]] == [{Feature.LENGTHS}, {Feature.PROJECTION}]
    assert all(k.reason == rows.AUTOCAST_NOT_REACHED and k.dtype is None for k in AUTOCAST.known_failures[:2])
    assert AUTOCAST.refusal(dtype="float32", device="cpu", layer=LayerConfig()) == rows.AUTOCAST_FULL


# -- the layouts against torch's own modules ----------------------------------------------------------------------


@needs_torch
def test_nn_lstm_layout_is_the_state_dict_of_a_plain_nn_lstm():
    """Loaded strictly into a torch.nn.LSTM built here (not by the row), the layout's arrays compute the spec's
    answer: names, shapes, directions, the projection and the forget bias all land where torch reads them."""
    d = data(**LSTMP_STACK, forget_bias=0.5)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    native = layouts.NN_LSTM.to_native(d.params, d.layer)
    assert {k: v.shape for k, v in native.items()} == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in native.items()})
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(d.x), (torch.from_numpy(d.h0), torch.from_numpy(d.c0)))
    want = reference(d).outputs
    for name, got in (("y", y), ("h_T", h), ("c_T", c)):
        np.testing.assert_allclose(got.numpy(), want[name], rtol=0, atol=1e-13, err_msg=name)


@needs_torch
def test_cells_layout_is_the_state_dict_of_a_module_list_of_lstmcells():
    d = data(**CELL_STACK)
    cells = torch.nn.ModuleList(torch.nn.LSTMCell(c.input_size, c.hidden_size, dtype=torch.float64) for c in d.params.cells)
    native = layouts.CELLS.to_native(d.params, d.layer)
    assert {k: v.shape for k, v in native.items()} == {k: tuple(v.shape) for k, v in cells.state_dict().items()}
    cells.load_state_dict({k: torch.from_numpy(v) for k, v in native.items()})  # strict: every name torch has


@needs_torch
def test_the_empty_sequence_reason_is_what_pytorch_says():
    """The declared reason quotes PyTorch's own refusal, word for word."""
    from torch.nn.utils.rnn import pack_padded_sequence

    d = data(direction="bidirectional", lengths=(3, 0, 5, 1))
    with pytest.raises(RuntimeError) as raised:
        pack_padded_sequence(torch.from_numpy(d.x), torch.from_numpy(d.lengths), enforce_sorted=False)
    for row in NN_ROWS:
        with pytest.raises(NotSupported) as declared:
            row.check(dtype="float64", device="cpu", layer=d.layer, lengths=d.lengths)
        assert str(raised.value) in str(declared.value)


# -- the calls each row makes ------------------------------------------------------------------------------------


@needs_torch
def test_each_nn_lstm_row_packs_its_own_way(monkeypatch):
    """Each row really calls nn.LSTM its way (so a defect in that path shows in that row): batch-major x for
    batch_first, the batch sorted by length for enforce_sorted, torch's own unsorted packing otherwise."""
    from torch.nn.utils import rnn

    calls = []
    original = rnn.pack_padded_sequence

    def spy(x, lengths, batch_first=False, enforce_sorted=True):
        calls.append((tuple(x.shape), batch_first, enforce_sorted, lengths.tolist()))
        return original(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)

    monkeypatch.setattr(rnn, "pack_padded_sequence", spy)
    d = data(lengths=(3, 5, 1, 4), **LSTMP_STACK)
    for row in NN_ROWS:
        calls.clear()
        forward(row, d)
        assert calls == [((4, 5, 3) if row.batch_first else (5, 4, 3), row.batch_first, row.enforce_sorted,
                          [5, 4, 3, 1] if row.enforce_sorted else [3, 5, 1, 4])], row.id
        assert row.built_for(d.params, d.layer, "cpu").batch_first == row.batch_first


@needs_torch
@pytest.mark.parametrize("peephole", [False, True], ids=["standard", "peephole"])
def test_peephole_inference_and_autograd_paths_agree(peephole):
    """forward() runs the equations in place without autograd, backward() out of place with it: the same values."""
    d = data(peephole=peephole, forget_bias=0.5, T=7, B=3)
    weights = PEEPHOLE.built_for(d.params, d.layer, "cpu")
    x, h0, c0 = (torch.from_numpy(a) for a in (d.x, d.h0[0], d.c0[0]))
    workspace = torch.empty(rows.workspace_size(7, 3, 4), dtype=torch.float64)
    with torch.no_grad():
        fast = rows.peephole_forward(weights, x, h0, c0, workspace)
        graph = rows.peephole_forward_autograd(weights, x, h0, c0)
    for name, a, b in zip(("h_seq", "h_T", "c_T"), fast, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-15, err_msg=name)


@needs_torch
def test_the_reused_workspace_leaves_earlier_outputs_intact():
    """torch/peephole's forward reuses one workspace per shape: what it returned before must not change."""
    d, other = data(peephole=True, seed=1), data(peephole=True, seed=2)
    first = forward(PEEPHOLE, d)
    kept = {k: v.copy() for k, v in first.tensors().items()}
    forward(PEEPHOLE, other)
    again = forward(PEEPHOLE, d)
    for name, value in kept.items():
        np.testing.assert_array_equal(first.tensors()[name], value, err_msg=name)
        np.testing.assert_array_equal(again.tensors()[name], value, err_msg=name)


@needs_torch
@pytest.mark.parametrize("make", [rows.TorchLSTM, rows.TorchLSTMCell, rows.TorchPeepholeLSTM], ids=lambda m: m.__name__)
def test_a_module_is_built_once_per_parameter_values_and_gathers_no_gradients(make, monkeypatch):
    """Forward and backward of equal parameters (the suite hands every call its own copy) share one module; the
    gradients come from torch.autograd.grad, so nothing accumulates in the module's .grad between calls."""
    row = make()
    built = []
    build = row.build
    monkeypatch.setattr(row, "build", lambda native, **kw: built.append(1) or build(native, **kw))
    d = data(peephole=True) if make is rows.TorchPeepholeLSTM else data(**CELL_STACK)
    copies = [d.params.with_tensors({k: v.copy() for k, v in d.params.tensors().items()}) for _ in range(2)]
    first = row.backward(copies[0], d.x, d.h0, d.c0, cotangents(d), layer=d.layer)
    second = row.backward(copies[1], d.x, d.h0, d.c0, cotangents(d), layer=d.layer)
    row.forward(copies[1], d.x, d.h0, d.c0, layer=d.layer)
    assert len(built) == 1
    for name, value in first.tensors().items():
        np.testing.assert_array_equal(second.tensors()[name], value, err_msg=name)
    module = row.built_for(d.params, d.layer, "cpu")
    tensors = module.values() if isinstance(module, dict) else module.parameters()
    assert all(t.grad is None for t in tensors if torch.is_tensor(t))
    row.forward(d.params.with_tensors({"layer 0 direction 0 b": d.params.cells[0].b + 1.0}), d.x, d.h0, d.c0, layer=d.layer)
    assert len(built) == 2


# -- availability and environment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("torch_module, reason", [
    # What Python raises when torch is not installed at all: the install hint.
    ("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n", INSTALL_HINT),
    # A torch that is there but broken (a CUDA library that does not load): the real error, not "not installed".
    ("raise OSError('libcudnn.so.9: cannot open shared object file')\n",
     "import torch failed: OSError: libcudnn.so.9: cannot open shared object file"),
], ids=["missing", "broken"])
def test_without_a_working_torch_the_rows_import_and_say_why(tmp_path, torch_module, reason):
    """The row modules (and the torch.onnx export rows) import without torch; availability() says why the rows
    cannot run and environment() says it too instead of failing."""
    (tmp_path / "torch.py").write_text(torch_module)
    code = (
        "import json\n"
        "from backends.rows.torch import ROWS\n"
        "from backends.rows.torch_onnx import ROWS as EXPORTS\n"
        "print(json.dumps([[r.availability('cpu'), r.availability('cuda'), r.environment('cpu')] for r in (*ROWS, *EXPORTS)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.splitlines()[-1])
    assert len(answers) == len(rows.ROWS) + 4  # the two exporters, each with ONNX Runtime's optimisations on and off
    for cpu, cuda, environment in answers[: len(rows.ROWS)]:
        assert cpu == cuda == reason and environment == {"unavailable": reason}
    for cpu, cuda, environment in answers[len(rows.ROWS):]:
        assert cpu == cuda == reason and environment["torch"] == f"unavailable: {reason}"


@needs_torch
def test_cuda_unavailable_is_a_clear_reason():
    if CUDA:
        pytest.skip("a CUDA device is visible: there is no reason to report")
    expected = (f"no CUDA: this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None
                else "no CUDA device visible to torch (torch.cuda.is_available() is False)")
    for row in rows.ROWS:
        assert row.availability("cuda") == expected and row.availability("cpu") is None
        assert row.environment("cuda") == {"unavailable": expected}
        with pytest.raises(Unavailable, match="CUDA"):
            d = data("bfloat16" if row is AUTOCAST else "float64", peephole=row is PEEPHOLE)
            forward(row, d, device="cuda")


@needs_torch
@pytest.mark.parametrize("row", rows.ROWS, ids=lambda r: r.id)
def test_environment_records_versions_threads_and_tf32(row):
    env = row.environment("cpu")
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    for key in ("device", "threads_env", "tf32_matmul", "tf32_cudnn", "mkldnn"):
        assert key in env, key


@needs_torch
def test_lstmc_threads_is_set_before_every_call(monkeypatch):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv("LSTMC_THREADS", str(wanted))
    try:
        torch.set_num_threads(before)
        forward(NN, data())
        assert torch.get_num_threads() == wanted
        env = NN.environment("cpu")
        assert env["threads"] == wanted and env["threads_env"] == str(wanted)
        monkeypatch.setenv("LSTMC_THREADS", "0")
        with pytest.raises(ValueError, match="LSTMC_THREADS must be a positive integer, got '0'"):
            forward(NN, data())
        assert "LSTMC_THREADS must be a positive integer" in NN.environment("cpu")["environment() failed"]
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def tf32_switched_on():
    """TF32 on for matrix products and cuDNN (as a user's script may leave it), and every flag restored after."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.enabled)
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.enabled = saved


@needs_torch
def test_preparing_for_cuda_switches_tf32_off_and_honours_lstmc_cudnn(monkeypatch):
    """What prepare('cuda') sets needs no GPU to be checked: TF32 off for products and cuDNN, LSTMC_CUDNN=0 turns
    cuDNN off (PyTorch's own kernels), and anything but 0 or 1 is refused."""
    with tf32_switched_on():
        monkeypatch.setenv("LSTMC_CUDNN", "0")
        TORCH.prepare("cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.enabled is False
        monkeypatch.setenv("LSTMC_CUDNN", "1")
        TORCH.prepare("cuda")
        assert torch.backends.cudnn.enabled is True
    monkeypatch.setenv("LSTMC_CUDNN", "yes")
    with pytest.raises(ValueError, match="LSTMC_CUDNN must be 0 or 1, got 'yes'"):
        cudnn_wanted()
    monkeypatch.delenv("LSTMC_CUDNN")
    assert cudnn_wanted() is None


@needs_cuda
@pytest.mark.parametrize("row", rows.ROWS, ids=lambda r: r.id)
def test_tf32_is_off_after_running_on_cuda(row):
    with tf32_switched_on():
        forward(row, data("float32", peephole=row is PEEPHOLE), device="cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        env = row.environment("cuda")
    assert env["tf32_matmul"] is False and env["tf32_cudnn"] is False and "cudnn" in env


# -- timed passes -------------------------------------------------------------------------------------------------


#: A case each row runs, with the features it declares (lengths, masks, peepholes).
TIMED_CASES = {NN.id: "packed", BATCH_FIRST.id: "packed", SORTED.id: "packed", CELL.id: "mask-previous",
               PEEPHOLE.id: "small-peephole"}


@needs_torch
@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("dtype", [Dtype.FLOAT32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("row", FULL_ROWS, ids=lambda r: r.id)
def test_the_timed_pass_is_resident_and_computes_the_layer(row, dtype, gradients):
    """The benchmarks' pass: device-resident, the inputs (and for a half type the weights) converted once. In
    float32 it computes exactly what forward()/backward() return; in a half type it passes the benchmark's own guard
    against the spec (bench/correctness.py: relative error within the type's bound, where a gate swap or a stale
    buffer would be off by 0.1 to 1). Half types run here on the CPU; on a GPU the same path runs with device='cuda'."""
    d = make_case_data(case_by_name(TIMED_CASES[row.id]), "float32")
    timing = Timing(dtype, Device.CPU, gradients)
    timed = row.timed_pass(d.params, d.x, d.h0, d.c0, cotangents(d), layer=d.layer, lengths=d.lengths, mask=d.mask,
                           timing=timing)
    assert timed.resident
    timed.run()
    got = timed.result()
    assert set(got) == ({"x", "h0", "c0"} if gradients else {"y"})
    assert all(value.dtype == np.float64 for value in got.values())
    if dtype == Dtype.FLOAT32:
        answer = backward(row, d).tensors() if gradients else forward(row, d).tensors()
        for name, value in got.items():
            np.testing.assert_array_equal(value, answer[name].astype(np.float64), err_msg=name)
    else:
        check(got, timed_reference(d, gradients), dtype)


def test_the_cpu_environment_names_the_lstm_kernel_per_dtype_and_pins_onednn_s_float32_knob():
    """Which kernel nn.LSTM takes decides the policy of a half LSTM (oneDNN: half-storage; ATen: every operation), so
    the environment records it; and oneDNN's fp32_precision knob, which would make a float32 LSTM compute in
    bfloat16, is pinned to full float32 before any float32 row runs."""
    torch = pytest.importorskip("torch", reason="needs torch: pip install 'lstm-conformance[torch]'")
    from backends.runtimes.torch import TORCH

    previous = torch.backends.mkldnn.rnn.fp32_precision
    try:
        torch.backends.mkldnn.rnn.fp32_precision = "bf16"
        env = TORCH.environment("cpu")
        assert torch.backends.mkldnn.rnn.fp32_precision == "ieee" and env["mkldnn_rnn_fp32_precision"] == "ieee"
    finally:
        torch.backends.mkldnn.rnn.fp32_precision = previous
    kernels = env["lstm_cpu_kernels"]
    assert kernels["packed sequences, projections"] == "ATen"
    assert kernels["bfloat16"] == ("oneDNN" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "ATen")
    with torch.backends.mkldnn.flags(enabled=False):
        assert set(TORCH.environment("cpu")["lstm_cpu_kernels"].values()) == {"ATen"}
    # The rule agrees with the evidence: the rnn primitive oneDNN's verbose mode saw executed, or none (ATen).
    seen = env["lstm_cpu_kernels_seen"]
    for dtype in ("float32", "bfloat16"):
        assert seen[dtype].startswith("oneDNN") == (kernels[dtype] == "oneDNN"), (dtype, seen[dtype], kernels[dtype])
    assert seen["float16"].startswith("oneDNN") == kernels["float16"].startswith("oneDNN"), seen
