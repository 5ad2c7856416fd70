"""LiteRT's fused LSTM: the layout (backends/layouts/tflite.py), the models built from TFLite's schema and what is
refused (backends/runtimes/litert.py), the row (backends/rows/litert.py). The layout needs NumPy only; the rest
skips without ai-edge-litert."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backends.layouts.tflite import FUSED_OPS, INPUTS, from_tflite, to_tflite
from backends.rows.litert import REASONS, ROWS
from contract.errors import NotSupported
from contract.vocabulary import Dtype, Feature
from spec import layer
from spec.cases import case_by_name, make_case_data
from spec.layer import LayerConfig
from spec.params import GATES

ROW = ROWS[0]


def data(name, dtype=np.float32):
    return make_case_data(case_by_name(name), dtype)


# -- the layout ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["layer-norm-full", "bidirectional", "stacked-bidirectional", "proj-bias"])
def test_the_layout_round_trips_exactly(name):
    d = data(name)
    config = replace(d.layer, forget_bias=0.0)  # a folded forget bias comes back rounded twice
    back = FUSED_OPS.from_native(FUSED_OPS.to_native(d.params, config), config)
    for key, tensor in d.params.tensors().items():
        np.testing.assert_array_equal(back.tensors()[key], tensor, err_msg=key)


def test_cifg_puts_the_negated_input_gate_in_the_forget_gate_and_reads_it_back():
    """TFLite's i = 1 - f against the spec's f = 1 - i: the forget gate's tensors are the spec's input gate negated,
    the input gate's absent; read back, the spec's f tensors (which take no part) are zeros."""
    d = data("layer-norm-cifg")
    cell = d.params.cells[0]
    native = to_tflite(cell, forget_bias=0.0, coupled=True)
    assert not any(name.startswith(("input_to_input", "recurrent_to_input", "cell_to_input", "input_gate", "input_layer"))
                   for name in native)
    i = GATES.index("i")
    np.testing.assert_array_equal(native["input_to_forget_weights"], -cell.W[i])
    np.testing.assert_array_equal(native["forget_gate_bias"], -cell.b[i])
    np.testing.assert_array_equal(native["cell_to_forget_weights"], -cell.p[0])
    np.testing.assert_array_equal(native["forget_layer_norm_coefficients"], cell.ln[i])
    back = from_tflite(native, coupled=True)
    for tensor in ("W", "U", "b", "ln"):
        np.testing.assert_array_equal(getattr(back, tensor)[i], getattr(cell, tensor)[i], err_msg=tensor)
        assert not getattr(back, tensor)[GATES.index("f")].any(), tensor
    # The spec's coupled cell ignores its f tensors, so both compute the same.
    config = d.layer
    x, h0, c0 = (a.astype(np.float64) for a in (d.x, d.h0, d.c0))
    ours = layer.forward(d.params.astype(np.float64), x, h0, c0, config=config)
    theirs = layer.forward(layer.LayerParams((back,)).astype(np.float64), x, h0, c0, config=config)
    np.testing.assert_array_equal(ours.y, theirs.y)


def test_the_forget_bias_is_folded_except_into_a_coupled_cell():
    d = data("forget-bias")
    native = FUSED_OPS.to_native(d.params, d.layer)
    f = GATES.index("f")
    np.testing.assert_array_equal(native["layer0.forward.forget_gate_bias"],
                                  (d.params.cells[0].b[f].astype(np.float64) + 1.0).astype(np.float32))
    back = FUSED_OPS.from_native(native, d.layer)  # as every layout without the attribute: b_f + 1 is its b_f
    np.testing.assert_array_equal(back.cells[0].b[f], native["layer0.forward.forget_gate_bias"])


def test_the_layout_refuses_a_gate_clip_with_tflites_words():
    d = data("gate-clip")
    with pytest.raises(NotSupported, match="not the gates"):
        FUSED_OPS.to_native(d.params, d.layer)


def test_from_tflite_names_a_missing_tensor():
    native = to_tflite(data("layer-norm").params.cells[0])
    del native["cell_layer_norm_coefficients"]
    with pytest.raises(ValueError, match="cell_layer_norm_coefficients"):
        from_tflite(native, coupled=False)


def test_the_inputs_are_the_ops_24():
    assert len(INPUTS) == 24 and INPUTS[18:20] == ("output_state", "cell_state")


# -- the row's declarations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature, config, lengths", [
    (Feature.LENGTHS, LayerConfig(), np.array([2, 1])),
    (Feature.GATE_CLIP, LayerConfig(gate_clip=1.0), None),
])
def test_what_the_op_has_not_is_refused_with_its_reason(feature, config, lengths):
    reason = ROW.refusal(dtype="float32", device="cpu", layer=config, lengths=lengths)
    assert reason == (REASONS[feature] if feature in REASONS else FUSED_OPS.reasons[feature])


def test_only_float32_forward_on_the_cpu_is_declared():
    for dtype in (Dtype.FLOAT64, Dtype.FLOAT16, Dtype.BFLOAT16):
        assert ROW.refusal(dtype=dtype, device="cpu", layer=LayerConfig()) == REASONS[dtype]
    assert ROW.refusal(dtype="float32", device="cpu", layer=LayerConfig(), gradients=True) == REASONS["gradients"]
    assert ROW.refusal(dtype="float32", device="cpu", layer=LayerConfig(layer_norm=True, proj_size=2, proj_bias=True,
                                                                          peephole=True, coupled_input_forget=True)) is None


# -- the models and LiteRT -----------------------------------------------------------------------------------------


@pytest.fixture
def litert():
    pytest.importorskip("ai_edge_litert", reason="pip install ai-edge-litert")
    from backends.runtimes import litert

    return litert


def model_of(litert, name):
    d = data(name)
    content = litert.layer_model(FUSED_OPS.to_native(d.params, d.layer), d.layer, input_size=d.params.input_size,
                                 hidden_size=d.params.hidden_size, output_size=d.params.output_size, T=d.case.T,
                                 B=d.case.B)
    return d, content


def test_the_fused_op_is_what_runs_once_per_layer_and_direction(litert):
    d, content = model_of(litert, "stacked-bidirectional")
    model = litert.LITERT.fused(content, d.layer)
    assert model.ops_run().count(litert.FUSED_LSTM) == 4
    assert {"REVERSE_V2", "CONCATENATION"} <= set(model.ops_run())
    y, h_T, c_T = model.run(d.x, d.h0, d.c0)
    fwd = layer.forward(d.params.astype(np.float64), *(a.astype(np.float64) for a in (d.x, d.h0, d.c0)), config=d.layer)
    np.testing.assert_allclose(y, fwd.y, atol=1e-5)
    np.testing.assert_allclose(c_T, fwd.c_T, atol=1e-5)


def test_a_model_with_fewer_fused_ops_than_cells_is_refused(litert):
    d, content = model_of(litert, "one-layer")
    with pytest.raises(litert.ModelError, match="mine: no tensor 'layer0.reverse.output_state'"):
        litert.LITERT.fused(content, replace(d.layer, direction="bidirectional"), where="mine")


def test_the_model_runs_another_T_but_its_own_B(litert):
    d, content = model_of(litert, "layer-norm")
    model = litert.LITERT.fused(content, d.layer)
    short = model.run(d.x[:2], d.h0, d.c0)[0]
    full = model.run(d.x, d.h0, d.c0)[0]
    np.testing.assert_array_equal(short, full[:2])


@pytest.mark.parametrize("content, fragments", [
    (b"", ("not a LiteRT (TFLite) model", "0 bytes")),
    (b"\x93NUMPY\x01\x00v\x00{'descr'", ("NumPy",)),
    (b"<?xml version='1.0'?><net name='x'>", ("XML", "OpenVINO")),
    (b"\x08\x07\x12\x07pytorch\x1a\x03", ("protobuf", "ONNX")),
    ("a string", ("bytes of a .tflite file", "str")),
], ids=["empty", "numpy", "openvino-xml", "onnx", "not-bytes"])
def test_foreign_input_is_named(litert, content, fragments):
    with pytest.raises(litert.ModelError) as refused:
        litert.read_model(content, "my.tflite")
    for fragment in ("my.tflite", *fragments):
        assert fragment in str(refused.value)


@pytest.mark.parametrize("keep", [12, 100, 0.5])
def test_a_truncated_model_is_refused_naming_it(litert, keep):
    _, content = model_of(litert, "layer-norm")
    cut = content[: int(len(content) * keep) if isinstance(keep, float) else keep]
    with pytest.raises(litert.ModelError, match="my.tflite: a truncated or corrupt TFLite flatbuffer"):
        litert.read_model(cut, "my.tflite")


def _repacked(litert, content, change):
    import flatbuffers

    S = litert.schema()
    model = S.ModelT.InitFromPackedBuf(content, 0)
    change(S, model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_an_op_version_the_spec_does_not_know_is_refused(litert):
    _, content = model_of(litert, "layer-norm")

    def version_3(S, model):
        for code in model.operatorCodes:
            code.version = 3

    model = litert.read_model(_repacked(litert, content, version_3), "asymmetric.tflite")
    with pytest.raises(litert.ModelError, match="version 3, which the spec does not know"):
        litert.fused_lstm_ops(model, "asymmetric.tflite")


def test_a_model_whose_lstm_is_not_the_fused_op_is_refused_naming_its_operators(litert):
    _, content = model_of(litert, "reverse")

    def without_the_lstm(S, model):
        graph = model.subgraphs[0]
        graph.operators = [op for op in graph.operators
                           if model.operatorCodes[op.opcodeIndex].builtinCode != S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM]

    model = litert.read_model(_repacked(litert, content, without_the_lstm), "loop.tflite")
    with pytest.raises(litert.ModelError, match="no UNIDIRECTIONAL_SEQUENCE_LSTM operator .*REVERSE_V2"):
        litert.fused_lstm_ops(model, "loop.tflite")


def test_the_row_is_unavailable_with_the_install_hint_without_litert(monkeypatch):
    import contract.runtime as runtime
    from backends.runtimes.litert import INSTALL_HINT, LiteRt

    real = runtime.importlib.import_module

    def missing(name, *args):
        if name.startswith("ai_edge_litert"):
            error = ModuleNotFoundError(f"No module named {name!r}")
            error.name = "ai_edge_litert"
            raise error
        return real(name, *args)

    monkeypatch.setattr(runtime.importlib, "import_module", missing)
    assert LiteRt().availability("cpu") == INSTALL_HINT


def _first_lstm(S, model):
    graph = model.subgraphs[0]
    return next(op for op in graph.operators
                if model.operatorCodes[op.opcodeIndex].builtinCode == S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM)


def _set_input(op, position, index):
    inputs = np.array(op.inputs)  # the object API's arrays are read-only views of the buffer
    inputs[position] = index
    op.inputs = inputs


def _input_out_of_range(S, model):
    _set_input(_first_lstm(S, model), 1, 10**6)


def _opcode_out_of_range(S, model):
    model.subgraphs[0].operators[0].opcodeIndex = 99


def _weights_without_shape(S, model):
    graph = model.subgraphs[0]
    graph.tensors[_first_lstm(S, model).inputs[1]].shape = None


def _state_absent(S, model):
    _set_input(_first_lstm(S, model), 19, -1)


def _state_not_variable(S, model):
    graph = model.subgraphs[0]
    graph.tensors[_first_lstm(S, model).inputs[18]].isVariable = False


@pytest.mark.parametrize("change, fragment", [
    (_input_out_of_range, "names input tensor 1000000, of"),
    (_opcode_out_of_range, "names operator code 99, of"),
    (_weights_without_shape, "holds data but has no shape"),
], ids=["input-index", "opcode-index", "no-shape"])
def test_a_model_whose_indices_point_nowhere_is_refused_naming_it(litert, change, fragment):
    _, content = model_of(litert, "layer-norm")
    with pytest.raises(litert.ModelError, match=f"bad.tflite: subgraph 0 .*{fragment}"):
        litert.read_model(_repacked(litert, content, change), "bad.tflite")


@pytest.mark.parametrize("change, fragment", [
    (_state_absent, "has no cell_state"),
    (_state_not_variable, "'s output_state is not a variable tensor"),
], ids=["state-absent", "state-not-variable"])
def test_a_fused_op_without_its_state_variables_is_refused(litert, change, fragment):
    _, content = model_of(litert, "layer-norm")
    model = litert.read_model(_repacked(litert, content, change), "bad.tflite")
    with pytest.raises(litert.ModelError, match=f"bad.tflite: UNIDIRECTIONAL_SEQUENCE_LSTM #0 ?{fragment}"):
        litert.fused_lstm_ops(model, "bad.tflite")


def test_a_model_refuses_another_batch_size_naming_what_it_runs(litert):
    d, content = model_of(litert, "layer-norm")
    model = litert.LITERT.fused(content, d.layer)
    with pytest.raises(litert.ModelError, match=r"x: this model runs x of shape \(T, 3, 3\)"):
        model.run(d.x[:, :2], d.h0[:, :2], d.c0[:, :2])
