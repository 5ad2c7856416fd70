"""The quantized rows (torch.ao's dynamic LSTM, ONNX Runtime's DynamicQuantizeLSTM, LiteRT's hybrid fused LSTM):
what they read from their models, the hostile models they refuse (naming the tensor), and the suite catching a
quantized row that misbehaves: a scheme other than its kernel's, integers of another layout, a model that dropped a
product. Each part skips without its framework."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spec.cases import case_by_name, make_case_data
from spec.validation import LSTMInputError
from tests.suite import plugin, run_suite


def data(name):
    return make_case_data(case_by_name(name), np.float32)


def litert_module():
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed (pip install "
                        "'lstm-conformance[litert]')")
    from backends.rows import litert

    return litert


def test_the_integers_read_back_quantize_the_given_weights_in_every_layout():
    """Each available row's model: integers, scales and zero points, laid out canonically, quantize the case's weights
    (a layout inverse that moved a gate would be refused here)."""
    from backends.registry import builtin_rows

    checked = 0
    for row in builtin_rows():
        if row.quantization is None or row.availability("cpu") is not None:
            continue
        for name in ("stacked-bidirectional", "coupled-stack" if "onnxruntime" in row.id else "layer-norm-cifg"):
            d = data(name)
            if row.refusal(dtype="float32", device="cpu", layer=d.layer, lengths=d.lengths, mask=d.mask) is not None:
                continue
            quantized = row.quantized_parameters(d.params, layer=d.layer)
            quantized.check_quantizes(d.params, coupled=d.layer.coupled_input_forget)
            for cell in quantized.cells:
                assert cell.W.q.min() >= -128 and cell.W.q.max() <= 127 and np.all(cell.W.scale > 0)
            checked += 1
    if not checked:
        pytest.skip("no quantized row's framework is installed")


def test_litert_refuses_a_per_channel_weight_naming_it():
    """LiteRT runs a per-channel hybrid weight with a scale of 0 (a finding): the row refuses such a model."""
    litert = litert_module()
    import flatbuffers

    from backends.runtimes import litert as runtime

    row = litert.LiteRtHybridLSTM()
    d = data("small")
    stack = row.built_for(d.params, d.layer, "cpu")
    content = row.model(stack, d.layer, d.x.shape[0], d.x.shape[1]).content
    S = runtime.schema()
    model = S.ModelT.InitFromPackedBuf(content, 0)
    for tensor in model.subgraphs[0].tensors:
        if tensor.name.decode().endswith("input_to_forget_weights"):
            tensor.quantization.scale = [0.01] * tensor.shape[0]
            tensor.quantization.zeroPoint = [0] * tensor.shape[0]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    stack.models = {(d.x.shape[0], d.x.shape[1]): row.runtime.fused(bytes(builder.Output()), d.layer)}
    with pytest.raises(runtime.ModelError, match="input_to_forget_weights is quantized per channel \\(4 scales\\).*"
                                                 "reads one scale per weight tensor"):
        row.quantized(stack, params=d.params, layer=d.layer)


@pytest.mark.parametrize("value, problem", [(np.nan, "not a finite positive number"), (-1.0, "not a finite positive"),
                                            (None, "missing")], ids=["nan", "negative", "missing"])
def test_onnxruntime_refuses_a_model_with_bad_scales_naming_the_tensor(value, problem):
    pytest.importorskip("onnxruntime.quantization", reason="onnxruntime is not installed (pip install "
                        "'lstm-conformance[onnxruntime]')")
    from onnx import numpy_helper

    from backends.rows.onnxruntime_quantized import OP, OnnxRuntimeDynamicQuantizeLSTM

    row = OnnxRuntimeDynamicQuantizeLSTM()
    d = data("small")
    graph = row.built_for(d.params, d.layer, "cpu")
    model = type(graph.model)()
    model.CopyFrom(graph.model)
    node = next(n for n in model.graph.node if n.op_type == OP)
    scale_name = node.input[10]  # R_scale
    kept = [t for t in model.graph.initializer if t.name != scale_name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if value is not None:
        model.graph.initializer.append(numpy_helper.from_array(np.array([value], np.float32), scale_name))
    with pytest.raises(LSTMInputError, match=f"layer0.R scale: {problem}"):
        row.quantized(replace(graph, model=model), params=d.params, layer=d.layer)


MISBEHAVING = """
from dataclasses import dataclass, replace

import numpy as np

from backends.rows.litert import HYBRID, LiteRtHybridLSTM
from spec.quantized import Group


@dataclass(eq=False)
class OtherScheme(LiteRtHybridLSTM):
    # claims one scale per step where LiteRT quantizes each batch row apart
    id: str = "mistaken/step-scales"
    quantization: object = replace(HYBRID, recurrent=replace(HYBRID.recurrent, group=Group.STEP))


@dataclass(eq=False)
class DroppedProduct(LiteRtHybridLSTM):
    # a model whose recurrent weights of gate g were quantized to zero (a product dropped), read back as they are
    id: str = "mistaken/dropped-product"

    def build(self, native, *, params, layer, device, half=None):
        native = {k: (np.zeros_like(v) if k.endswith("recurrent_to_cell_weights") else v) for k, v in native.items()}
        return super().build(native, params=params, layer=layer, device=device)


ROWS = (OtherScheme(), DroppedProduct())
"""


def test_the_suite_catches_a_quantized_row_that_misbehaves(tmp_path):
    litert_module()
    run = run_suite(tmp_path, "--backend", plugin(tmp_path, "mistaken_quantized", MISBEHAVING), "--dtype", "float32",
                    "-k", "outputs and (small or stacked)")
    assert run.returncode == 1, run.output
    scheme = run.judged("mistaken/step-scales")
    assert scheme and all(r["status"] == "FAIL" for r in scheme), scheme
    assert "against the integer reference of litert-hybrid" in scheme[0]["detail"]
    assert "worst error" in scheme[0]["detail"] and "dequantization step" in scheme[0]["detail"]
    dropped = run.judged("mistaken/dropped-product")
    assert dropped and all(r["status"] == "FAIL" for r in dropped), dropped
    assert all("U: a scale coarser than its weights need" in r["detail"] for r in dropped), dropped


def _near_ties(scheme, shape, seed):
    """x whose activations lie one float32 ulp from a rounding tie of ``scheme``'s own quantization (its range fixed by
    two extreme values per group): where two rules of rounding differ, they differ here."""
    from spec.quantized import activation_quantization

    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.9, 0.9, shape).astype(np.float32)
    x[..., 0], x[..., 1] = -0.9, 1.1  # each group's range (per row or per tensor alike)
    s, z = activation_quantization(x, scheme)
    s = np.broadcast_to(s, shape).astype(np.float64)
    z = np.broadcast_to(z, shape)
    k = np.floor(x / s)
    ties = ((k + 0.5) * s).astype(np.float32)
    nudged = np.nextafter(ties, ties + rng.choice([-1.0, 1.0], shape).astype(np.float32))
    x[..., 2:] = nudged[..., 2:]
    assert np.array_equal(activation_quantization(x, scheme)[0], activation_quantization(x, scheme)[0])
    return x


def test_every_quantized_row_rounds_near_ties_as_its_scheme_says():
    """An LSTM whose candidate gate reads x through the identity (W_g = I, the rest zero, one step from zero states)
    shows each quantized activation in c_T = sigma(0) tanh(deq x): on activations one ulp from a tie, the declared
    scheme matches the row and a scheme that rounds otherwise does not."""
    from backends.registry import builtin_rows
    from spec.layer import LayerConfig
    from spec.params import GATES, LayerParams, LSTMParams
    from spec.quantized import Rounding, Scaling, layer_forward

    K, B = 16, 4
    W = np.zeros((4, K, K), np.float32)
    W[GATES.index("g")] = np.eye(K)
    cell = LSTMParams(W, np.zeros((4, K, K), np.float32), np.zeros((4, K), np.float32))
    params, layer = LayerParams((cell,), 1), LayerConfig()
    zeros = np.zeros((1, B, K), np.float32)
    checked = 0
    for row in builtin_rows():
        if row.quantization is None or row.availability("cpu") is not None:
            continue
        scheme = row.quantization
        x = _near_ties(scheme.input, (1, B, K), seed=checked)
        got = row.forward(params, x, zeros, zeros, layer=layer).tensors()["c_T"]
        quantized = row.quantized_parameters(params, layer=layer)
        other_scaling = Scaling.DIVIDE if scheme.input.scaling is not Scaling.DIVIDE else Scaling.RECIPROCAL_FMA
        other_rounding = Rounding.HALF_AWAY if scheme.input.rounding is Rounding.HALF_EVEN else Rounding.HALF_EVEN
        errors = {}
        for name, variant in (("declared", scheme.input), ("scaling", replace(scheme.input, scaling=other_scaling)),
                              ("rounding", replace(scheme.input, rounding=other_rounding))):
            run = layer_forward(quantized, x, zeros, zeros, config=layer, scheme=replace(scheme, input=variant))
            errors[name] = float(np.abs(run.c_T - got).max() / run.step)
        assert errors["declared"] < 0.5, (row.id, errors)
        assert errors["scaling"] > 1 or errors["rounding"] > 1, (row.id, errors)  # the probe has teeth
        checked += 1
    if not checked:
        pytest.skip("no quantized row's framework is installed")
