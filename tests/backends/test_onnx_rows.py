"""The ONNX rows, what the conformance suite cannot see of them: ONNX's LSTM operator run by ONNX Runtime
(time-major, and the batch-major row ORT refuses) and by onnx.reference (backends/rows/onnx.py), and torch.nn.LSTM
exported by torch.onnx.export and run by ONNX Runtime (backends/rows/torch_onnx.py).

The layout of the operator's nodes (backends/layouts/onnx.py) round trips exactly and refuses with its reasons;
the graph is right in the batch-major layout ORT does not run yet; each known failure's mechanism is pinned where
it lives; sessions and exports are made once per architecture or shape; every row names exactly the module it
misses. Whether the rows' outputs agree with the spec is the suite's: ``pytest conformance/ -k "onnx"``.
The layout tests need NumPy only; the rest skip, with the install hint, where what they run is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import onnx as layouts
from backends.layouts.torch import NN_LSTM
from backends.rows import onnx as onnx_rows
from backends.rows import torch_onnx
from backends.runtimes.onnx import (
    GRAPH_HINT,
    ONNX_REFERENCE,
    OPSET,
    layer_feeds,
    layer_model,
    layer_outputs,
)
from backends.runtimes.onnx import INSTALL_HINT as ONNX_HINT
from backends.runtimes.onnxruntime import INSTALL_HINT as ORT_HINT
from backends.runtimes.onnxruntime import NO_CUDA_PROVIDER, ONNXRUNTIME, OnnxRuntime
from backends.runtimes.torch import INSTALL_HINT as TORCH_HINT
from contract.errors import NotSupported
from contract.runtime import framework_problem
from contract.timing import Timing
from contract.tolerances import tolerance
from contract.vocabulary import ARCHITECTURE, Device, Dtype, Feature
from spec.cases import Case, case_by_name, make_case_data, reference, widened
from spec.layer import LayerConfig
from spec.params import GATES
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[2]
ORT, ORT_BATCH_MAJOR, REFERENCE = onnx_rows.ROWS
TORCHSCRIPT, DYNAMO, TORCHSCRIPT_UNOPTIMIZED, DYNAMO_UNOPTIMIZED = torch_onnx.ROWS

#: Why each row's runtime cannot be used here (the install hint where it is missing), or None.
ONNX_PROBLEM = ONNX_REFERENCE.availability("cpu")
ORT_PROBLEM = ONNXRUNTIME.availability("cpu") or framework_problem("onnx", GRAPH_HINT)
needs_onnx = pytest.mark.skipif(ONNX_PROBLEM is not None, reason=str(ONNX_PROBLEM))
needs_ort = pytest.mark.skipif(ORT_PROBLEM is not None, reason=str(ORT_PROBLEM))
#: The export rows need torch, onnx and ONNX Runtime (and onnxscript for dynamo): the first that is missing.
needs_torchscript_row = pytest.mark.skipif(TORCHSCRIPT.availability("cpu") is not None,
                                           reason=str(TORCHSCRIPT.availability("cpu")))
needs_dynamo_row = pytest.mark.skipif(DYNAMO.availability("cpu") is not None, reason=str(DYNAMO.availability("cpu")))

F32_OUT = {"atol": tolerance("float32", "outputs").atol, "rtol": tolerance("float32", "outputs").rtol}

ARCHITECTURES = [
    dict(direction="forward"),
    dict(direction="reverse", peephole=True),
    dict(direction="bidirectional", peephole=True),
    dict(num_layers=3, direction="forward"),
    dict(num_layers=2, direction="bidirectional", peephole=True),
]


def data(dtype="float64", *, T=5, B=4, I=3, H=2, seed=61, lengths=None, **layer):
    return make_case_data(Case("unit", T, B, I, H, LayerConfig(**layer), lengths=lengths, seed=seed), dtype)


def forward(row, d, **changes):
    arguments = dict(layer=d.layer, lengths=d.lengths, mask=d.mask)
    arguments.update(changes)
    return row.forward(d.params, d.x, d.h0, d.c0, **arguments)


def architecture_id(layer: dict) -> str:
    return "-".join(str(v) for v in layer.values())


# -- the layout (NumPy only) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ARCHITECTURES, ids=architecture_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layout_round_trip_is_exact(dtype, layer):
    d = data(dtype, **layer)
    native = layouts.LSTM_NODES.to_native(d.params, d.layer)
    assert sorted(native) == sorted(layouts.weight_names(d.layer.num_layers, d.layer.peephole))
    back = layouts.LSTM_NODES.from_native(native, d.layer)
    assert back.num_directions == d.params.num_directions
    for name, tensor in d.params.tensors().items():
        got = back.tensors()[name]
        assert got.dtype == tensor.dtype and np.array_equal(got, tensor), name
    again = layouts.LSTM_NODES.to_native(back, d.layer)
    assert all(np.array_equal(again[k], native[k]) for k in native)


def test_a_node_stacks_its_directions_forward_first_each_in_onnx_gate_order():
    """layer<l>.W (D, 4H, in) holds direction 0 (forward) then 1 (reverse), each to_onnx's cell: gates i, o, f, c."""
    d = data(num_layers=2, direction="bidirectional", peephole=True)
    native = layouts.LSTM_NODES.to_native(d.params, d.layer)
    assert native["layer1.W"].shape == (2, 8, 4) and native["layer0.P"].shape == (2, 6)
    for l in range(2):
        for direction in range(2):
            cell = layouts.to_onnx(d.params.cell(l, direction))
            for tensor in layouts.TENSORS:
                assert np.array_equal(native[f"layer{l}.{tensor}"][direction], cell[tensor][0]), (l, direction, tensor)
    one = d.params.cell(0, 0)
    W = native["layer0.W"][0].reshape(4, 2, 3)
    for k, gate in enumerate(layouts.ONNX_GATES):
        np.testing.assert_array_equal(W[k], one.W[GATES.index(gate)], err_msg=gate)


def test_b_is_split_in_half_and_the_forget_bias_goes_to_wb_f_only():
    d = data(direction="bidirectional")
    plain = layouts.LSTM_NODES.to_native(d.params, d.layer)["layer0.B"]
    folded = layouts.LSTM_NODES.to_native(d.params, replace(d.layer, forget_bias=0.75))["layer0.B"]
    H = 2
    Wb, Rb = plain[:, : 4 * H], plain[:, 4 * H:]
    np.testing.assert_array_equal(Wb, Rb)  # b / 2 each
    delta = (folded - plain).reshape(2, 2, 4, H)  # (directions, [Wb, Rb], gates i, o, f, c, H)
    for k, gate in enumerate(layouts.ONNX_GATES):
        np.testing.assert_allclose(delta[:, 0, k], 0.75 if gate == "f" else 0.0, rtol=0, atol=1e-15, err_msg=gate)
    assert not delta[:, 1].any()
    back = layouts.LSTM_NODES.from_native(layouts.LSTM_NODES.to_native(d.params, replace(d.layer, forget_bias=0.75)), d.layer)
    for cell, original in zip(back.cells, d.params.cells):
        expected = original.b.copy()
        expected[GATES.index("f")] += 0.75
        np.testing.assert_allclose(cell.b, expected, rtol=0, atol=4 * np.finfo(np.float64).eps)


def test_layout_gradients_are_the_transpose_with_b_the_mean_of_wb_and_rb():
    """b feeds Wb and Rb by halves, so its gradient is the mean of theirs; a forget bias adds nothing."""
    d = data(num_layers=2, direction="bidirectional", peephole=True)
    grads = layouts.LSTM_NODES.to_native(d.params, d.layer)
    grads = {name: value * 2 if name.endswith(".B") else value for name, value in grads.items()}  # Wb = Rb = b
    back = layouts.LSTM_NODES.gradient(grads, d.params, replace(d.layer, forget_bias=1.5))
    for name, tensor in d.params.tensors().items():
        np.testing.assert_array_equal(back.tensors()[name], tensor, err_msg=name)
    grads["layer0.B"] = np.concatenate([grads["layer0.B"][:, :8] + 1.0, grads["layer0.B"][:, 8:]], axis=1)
    moved = layouts.LSTM_NODES.gradient(grads, d.params, d.layer)
    np.testing.assert_allclose(moved.cell(0, 1).b, d.params.cell(0, 1).b + 0.5, rtol=0, atol=1e-15)


@pytest.mark.parametrize("feature", sorted(ARCHITECTURE - layouts.LSTM_NODES.holds), ids=str)
def test_the_layout_refuses_what_the_operator_cannot_express_with_its_own_words(feature):
    layer = {Feature.PROJECTION: dict(proj_size=1), Feature.PROJ_CLIP: dict(proj_size=1, proj_clip=0.5),
             Feature.CELL_CLIP: dict(cell_clip=1.0), Feature.LAYER_NORM: dict(layer_norm=True),
             Feature.PROJ_BIAS: dict(proj_size=1, proj_bias=True)}[feature]
    d = data(H=3, **layer)
    with pytest.raises(NotSupported) as refused:
        layouts.LSTM_NODES.to_native(d.params, d.layer)
    assert str(refused.value) == layouts.LSTM_NODES.reasons[Feature.PROJECTION if "proj_size" in layer else feature]


def test_reading_nodes_back_names_what_is_missing_or_misshapen():
    d = data(num_layers=2, direction="bidirectional")
    native = layouts.LSTM_NODES.to_native(d.params, d.layer)
    with pytest.raises(LSTMInputError, match=r"layer1.R: missing: expected W and R of each of the 2 node\(s\)"):
        layouts.LSTM_NODES.from_native({k: v for k, v in native.items() if k != "layer1.R"}, d.layer)
    misshapen = r"layer0.B: wrong shape: expected \(2, ...\): one row per direction, got \(1, 16\)"
    with pytest.raises(LSTMInputError, match=misshapen):
        layouts.LSTM_NODES.from_native({**native, "layer0.B": native["layer0.B"][:1]}, d.layer)
    without_b = layouts.LSTM_NODES.from_native({k: v for k, v in native.items() if not k.endswith(".B")}, d.layer)
    assert not any(cell.b.any() for cell in without_b.cells)  # B is optional in ONNX: zeros


# -- the graph -------------------------------------------------------------------------------------------------------


@needs_onnx
@pytest.mark.parametrize("layer", ARCHITECTURES, ids=architecture_id)
def test_the_batch_major_graph_is_the_spec(layer):
    """The stack in layout=1 (X (B, T, I), states sliced on axis 1, no Transpose) is the spec's layer as onnx.reference
    runs it: the batch-major row is ready for the day ONNX Runtime runs it. (Layout 0 is the suite's, through
    onnx.reference/LSTM.)"""
    d = data(forget_bias=0.5, **layer)
    model = layer_model(d.params.input_size, d.params.hidden_size, d.layer, d.params.dtype, lengths=False,
                        weight_name=layouts.weight_name, layout=1)
    assert [i.name for i in model.graph.input][:3] == ["X", "initial_h", "initial_c"] and model.opset_import[0].version == OPSET
    feeds = layer_feeds(layouts.LSTM_NODES.to_native(d.params, d.layer), d.x, d.h0, d.c0, None, layout=1)
    assert feeds["X"].shape == (4, 5, 3)
    got = layer_outputs(ONNX_REFERENCE.session(model, "cpu").run(None, feeds), layout=1)
    for name, value in zip(("y", "h_T", "c_T"), got):
        np.testing.assert_allclose(value, reference(d).outputs[name], rtol=0, atol=1e-13, err_msg=name)


class ReferenceSessions(OnnxRuntime):
    """ONNX Runtime as the rows see it, its sessions made by onnx.reference (which runs layout=1), and counted."""

    def __init__(self):
        self.made = 0

    def availability(self, device):
        return ONNX_REFERENCE.availability(device)

    def session(self, model, device, *, quiet=False):
        self.made += 1
        return ONNX_REFERENCE.session(model, device)


@needs_onnx
@pytest.mark.parametrize("case", ["forget-bias-peephole", "bidirectional", "stacked"])
def test_the_batch_major_row_computes_the_spec_once_a_runtime_takes_layout_1(case):
    """The row ORT refuses today, with a runtime that accepts layout=1: it answers the spec (float32), so the day ORT
    accepts it the row is judged, not rewritten."""
    row = onnx_rows.OnnxRuntimeLSTM(id="batch-major on onnx.reference", batch_major=True, runtime=ReferenceSessions())
    assert row.availability("cpu") is None
    d = make_case_data(case_by_name(case), "float32")
    out, want = forward(row, d), reference(d).outputs
    for name, value in out.tensors().items():
        np.testing.assert_allclose(value, want[name], err_msg=name, **F32_OUT)


@needs_onnx
def test_one_session_per_architecture_serves_every_parameter_set():
    """The weights are graph inputs: other values, another forget bias (folded into them) reuse the session; lengths
    or another architecture make another. Equal parameters are converted once."""
    runtime = ReferenceSessions()
    row = onnx_rows.OnnxReferenceLSTM(runtime=runtime)
    built = []
    build = row.build
    row.build = lambda native, **kw: built.append(1) or build(native, **kw)
    d = data(direction="bidirectional", peephole=True)
    copy = d.params.with_tensors({k: v.copy() for k, v in d.params.tensors().items()})
    forward(row, d)
    row.forward(copy, d.x, d.h0, d.c0, layer=d.layer)
    assert (runtime.made, len(built)) == (1, 1)
    other = data(direction="bidirectional", peephole=True, seed=62)
    forward(row, other)
    forward(row, other, layer=replace(other.layer, forget_bias=1.0))
    assert (runtime.made, len(built)) == (1, 3)
    forward(row, d, lengths=np.array([5, 2, 1, 3]))
    assert runtime.made == 2
    wide = data(direction="bidirectional", peephole=True, H=3)
    forward(row, wide)
    assert runtime.made == 3


@needs_onnx
def test_the_timed_pass_runs_the_session_on_numpy_arrays_resident_only_on_the_cpu():
    """A session takes and answers NumPy arrays: on the CPU they stay where they are (resident), on CUDA every run
    copies them in and out, and reports must say so; there is no gradient pass to time."""
    d = make_case_data(case_by_name("stacked-bidirectional"), "float64")
    timed = REFERENCE.timed_pass(d.params, d.x, d.h0, d.c0, None, layer=d.layer, timing=Timing(Dtype.FLOAT64, Device.CPU))
    assert timed.resident
    timed.run()
    np.testing.assert_array_equal(timed.result()["y"], forward(REFERENCE, d).y)
    assert ONNXRUNTIME.resident("cpu") and not ONNXRUNTIME.resident("cuda")
    with pytest.raises(NotSupported, match="onnx.reference evaluates graphs; it has no gradients"):
        REFERENCE.timed_pass(d.params, d.x, d.h0, d.c0, None, layer=d.layer, timing=Timing(Dtype.FLOAT64, Device.CPU, True))


# -- onnx.reference -----------------------------------------------------------------------------------------------


@needs_onnx
@pytest.mark.parametrize("feature, layer, lengths", [
    (Feature.LENGTHS, dict(direction="bidirectional"), (5, 2, 1, 3)),
    (Feature.GATE_CLIP, dict(gate_clip=0.5), None),
    (Feature.COUPLED, dict(coupled_input_forget=True), None),
], ids=str)
def test_onnx_reference_ignores_exactly_its_known_features(feature, layer, lengths):
    """What each known failure says: with the input or attribute, onnx.reference answers the spec without it."""
    d = data(lengths=lengths, **layer)
    assert REFERENCE.known_failure("outputs", dtype="float64", device="cpu", features={feature}) is not None
    out = forward(REFERENCE, d)
    without = d.forward(lengths=None, config=LayerConfig(direction=d.layer.direction))
    np.testing.assert_allclose(out.y, without.y, rtol=0, atol=1e-13)
    assert np.abs(out.y - d.forward().y).max() > 0.05


@needs_onnx
def test_onnx_reference_runs_on_the_cpu_and_records_its_versions():
    import onnx

    assert REFERENCE.availability("cuda") == "onnx.reference runs on the CPU only (NumPy)"
    assert REFERENCE.environment("cpu") == {"onnx": onnx.__version__, "numpy": np.__version__, "opset": OPSET,
                                            "opset_bfloat16": 22}
    assert REFERENCE.reasons["gradients"] == "onnx.reference evaluates graphs; it has no gradients"


# -- ONNX Runtime --------------------------------------------------------------------------------------------------


@needs_ort
def test_ort_refuses_batch_major_and_the_row_says_so_in_orts_words():
    import onnxruntime

    assert ORT.availability("cpu") is None
    reason = ORT_BATCH_MAJOR.availability("cpu")
    assert reason.startswith(f"ONNX Runtime {onnxruntime.__version__} refuses layout=1 (batch-major) when the session is "
                             "created: ")
    assert "Batchwise recurrent operations (layout == 1) are not supported" in reason
    assert ORT_BATCH_MAJOR.environment("cpu")["layout"] == 1 and ORT.environment("cpu")["layout"] == 0


@needs_ort
def test_ort_zeroes_the_final_state_of_empty_rows_and_nothing_else():
    """The known failure, where it lives: rows of length 0 get zero final states where the spec keeps their initial
    state; every other row, and the outputs, are the spec's."""
    d = data("float32", num_layers=2, direction="bidirectional", lengths=(5, 2, 0, 3))
    out, want = forward(ORT, d), reference(d).outputs
    full = d.lengths > 0
    np.testing.assert_allclose(out.y, want["y"], **F32_OUT)
    np.testing.assert_allclose(out.h_T[:, full], want["h_T"][:, full], **F32_OUT)
    np.testing.assert_allclose(out.c_T[:, full], want["c_T"][:, full], **F32_OUT)
    assert not out.h_T[:, ~full].any() and not out.c_T[:, ~full].any() and np.abs(d.h0[:, ~full]).max() > 0.1


@needs_ort
def test_every_ort_session_gets_lstmc_threads(monkeypatch):
    monkeypatch.setenv("LSTMC_THREADS", "1")
    row = onnx_rows.OnnxRuntimeLSTM()
    assert row.environment("cpu")["intra_op_threads"] == 1
    session = row.session((3, 2, LayerConfig(), np.dtype(np.float32), "cpu"), False)
    assert session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("LSTMC_THREADS", "many")
    with pytest.raises(ValueError, match="LSTMC_THREADS must be a positive integer, got 'many'"):
        row.session((3, 3, LayerConfig(), np.dtype(np.float32), "cpu"), False)


@needs_ort
def test_cuda_without_a_cuda_provider_is_a_clear_reason():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA execution provider: there is no reason to report")
    for row in (ORT, ORT_BATCH_MAJOR, *(row for row in torch_onnx.ROWS if row.availability("cpu") is None)):
        assert row.availability("cuda") == NO_CUDA_PROVIDER, row.id


# -- torch.onnx.export, then ONNX Runtime ----------------------------------------------------------------------------


def test_the_export_rows_declarations():
    """The module exported is torch/nn.LSTM's (one layout, one copy); what each exporter refuses says so in its words."""
    for row in torch_onnx.ROWS:
        assert row.layout is NN_LSTM and row.dtypes == (Dtype.FLOAT32,) and not row.gradients, row.id
        assert row.devices == (Device.CPU, Device.CUDA) and row.runtime is ONNXRUNTIME, row.id
    assert TORCHSCRIPT.features == {Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.EMPTY_SEQUENCES}
    assert DYNAMO.features == {Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION}
    projected = data("float32", proj_size=1, H=2)
    assert TORCHSCRIPT.refusal(dtype="float32", device="cpu", layer=projected.layer) == torch_onnx.TORCHSCRIPT_PROJECTION
    lengths = np.array([5, 1])
    assert DYNAMO.refusal(dtype="float32", device="cpu", layer=LayerConfig(), lengths=lengths) == torch_onnx.DYNAMO_LENGTHS
    # The same exports with ONNX Runtime's graph optimisations off: the same declarations, the level recorded.
    for optimized, unoptimized in ((TORCHSCRIPT, TORCHSCRIPT_UNOPTIMIZED), (DYNAMO, DYNAMO_UNOPTIMIZED)):
        assert unoptimized.id == f"{optimized.id}(unoptimized)" and unoptimized.optimization == "none"
        assert (unoptimized.features, unoptimized.known_failures) == (optimized.features, optimized.known_failures)


@needs_torchscript_row
def test_the_torchscript_exporter_really_refuses_a_projection():
    d = data("float32", proj_size=1, H=2)
    module = torch_onnx.NN_LSTM.build(NN_LSTM.to_native(d.params, d.layer), params=d.params, layer=d.layer, device="cpu")
    with pytest.raises(Exception) as raised:
        TORCHSCRIPT.export(module, 5, 4, with_lengths=False)
    quoted = "Unsupported: ONNX export of operator LSTM, LSTMs with projections"
    assert quoted in str(raised.value) and quoted in torch_onnx.TORCHSCRIPT_PROJECTION


@needs_torchscript_row
def test_one_export_per_parameter_set_and_shape_holds_for_any_lengths():
    """Exported from example inputs (zeros, every length T), once per parameter set and (T, B, lengths or not): other
    lengths of that shape run on the same model, and agree with the same row's padded run where nothing is padded."""
    row = torch_onnx.TorchOnnxExport(id="counting", exporter="torchscript", features=TORCHSCRIPT.features)
    exported = []
    export = row.export
    row.export = lambda *a, **kw: exported.append(a[1:]) or export(*a, **kw)
    d = data("float32", num_layers=2, direction="bidirectional", lengths=(5, 2, 1, 4), H=4)
    first = forward(row, d)
    forward(row, d, lengths=np.array([3, 5, 4, 1]))
    full = forward(row, d, lengths=np.array([5, 5, 5, 5]))
    assert exported == [(5, 4, True)]
    padded = forward(row, d, lengths=None)
    np.testing.assert_allclose(full.y, padded.y, rtol=0, atol=1e-6)
    assert np.abs(first.y - padded.y).max() > 1e-3  # the lengths were not ignored
    forward(row, data("float32", num_layers=2, direction="bidirectional", T=7, H=4))
    assert exported == [(5, 4, True), (5, 4, False), (7, 4, False)]


@needs_torchscript_row
def test_the_torchscript_export_known_failure_is_only_the_empty_rows_final_state():
    """The 'lengths' case is a known failure of the TorchScript row: everything but an empty row's final state agrees
    with the spec; that state is zero where the spec has the initial state."""
    d = make_case_data(case_by_name("lengths"), "float32")
    out, want = forward(TORCHSCRIPT, d), reference(widened(d)).outputs
    empty = d.lengths == 0
    np.testing.assert_allclose(out.y, want["y"], **F32_OUT)
    np.testing.assert_allclose(out.h_T[:, ~empty], want["h_T"][:, ~empty], **F32_OUT)
    np.testing.assert_allclose(out.c_T[:, ~empty], want["c_T"][:, ~empty], **F32_OUT)
    assert not out.h_T[:, empty].any() and not out.c_T[:, empty].any() and np.abs(d.h0[:, empty]).max() > 0.1


@needs_dynamo_row
def test_the_dynamo_export_of_a_projection_is_refused_by_onnx_runtime():
    """The known failure's mechanism: the dynamo exporter writes nn.LSTM(proj_size) as an ONNX LSTM of hidden size P,
    and ONNX Runtime refuses the model when it runs."""
    d = data("float32", proj_size=2, H=4)
    with pytest.raises(Exception, match=r"ONNXRuntimeError.*Input initial_c must have shape"):
        forward(DYNAMO, d)


# -- every row names what is missing ------------------------------------------------------------------------------

#: What each row needs, in the order it checks, with its words when that is missing (onnx.reference is onnx's).
NEEDS = {
    ORT.id: [("onnxruntime", ORT_HINT), ("onnx", GRAPH_HINT)],
    ORT_BATCH_MAJOR.id: [("onnxruntime", ORT_HINT), ("onnx", GRAPH_HINT)],
    REFERENCE.id: [("onnx", ONNX_HINT)],
    TORCHSCRIPT.id: [("torch", TORCH_HINT), ("onnx", torch_onnx.ONNX_HINT), ("onnxruntime", torch_onnx.ORT_HINT)],
    DYNAMO.id: [("torch", TORCH_HINT), ("onnx", torch_onnx.ONNX_HINT), ("onnxruntime", torch_onnx.ORT_HINT),
                ("onnxscript", torch_onnx.ONNXSCRIPT_HINT)],
}
NEEDS.update({TORCHSCRIPT_UNOPTIMIZED.id: NEEDS[TORCHSCRIPT.id], DYNAMO_UNOPTIMIZED.id: NEEDS[DYNAMO.id]})
#: Modules made unimportable, one set after the other (the first: none, this environment as it is).
BLOCKED = ((), ("onnxscript",), ("onnxruntime",), ("onnx",), ("torch",))

MISSING = '''
import dataclasses, importlib.util, json, sys
from backends.rows import onnx, torch_onnx

modules = ("torch", "onnx", "onnxruntime", "onnxscript")
installed = {m: importlib.util.find_spec(m) is not None for m in modules}
answers = []
for blocked in BLOCKED:
    saved = {name: sys.modules[name] for name in list(sys.modules) if name.split(".")[0] in blocked}
    sys.modules.update({name: None for name in (*saved, *blocked)})
    rows = [dataclasses.replace(row) for row in (*onnx.ROWS, *torch_onnx.ROWS)]  # fresh: availability is kept per row
    answers.append({row.id: [row.availability("cpu"), row.environment("cpu")] for row in rows})
    for name in blocked:
        sys.modules.pop(name)
    sys.modules.update(saved)
print(json.dumps([installed, answers]))
'''


def test_every_row_names_exactly_the_module_it_misses():
    """In this environment and with modules made unimportable (in a process of its own): availability() names the first
    missing module in its own words (onnx's absence is not "onnxruntime is not installed", onnxscript's only
    concerns the dynamo exporter) and environment() names every one instead of failing."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", MISSING.replace("BLOCKED", repr(BLOCKED))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed, answers = json.loads(done.stdout.splitlines()[-1])
    for blocked, rows in zip(BLOCKED, answers, strict=True):
        for row_id, (availability, environment) in rows.items():
            missing = [(module, hint) for module, hint in NEEDS[row_id] if module in blocked or not installed[module]]
            context = (blocked, row_id, availability, environment)
            if missing:
                assert availability == missing[0][1], context
            elif row_id == ORT_BATCH_MAJOR.id:
                assert availability.startswith("ONNX Runtime ") and "refuses layout=1" in availability, context
            else:
                assert availability is None, context
            assert "environment() failed" not in environment, context
            if row_id.startswith("torch.onnx/"):
                for module, hint in NEEDS[row_id]:
                    gone = module in blocked or not installed[module]
                    assert (environment[module] == f"unavailable: {hint}") == gone, (context, module)
                dynamo = row_id in (DYNAMO.id, DYNAMO_UNOPTIMIZED.id)
                assert environment["exporter"] == f"torch.onnx.export(dynamo={dynamo})"
                assert ("onnxscript" in environment) == dynamo
                assert ("providers" in environment) == ("onnxruntime" not in blocked and installed["onnxruntime"])
            elif missing and (row_id == REFERENCE.id or missing[0][0] == "onnxruntime"):
                assert environment == {"unavailable": missing[0][1]}, context
