"""The OpenVINO rows (backends/rows/openvino.py) and runtime (backends/runtimes/openvino.py), what the conformance suite
cannot see of them: the precision hint is set explicitly and read back into the environment; the rows answer a few
cases right (float32) and under their declared policy (bfloat16); each known failure's mechanism is pinned; a model
OpenVINO cannot read is an error that names what was read. Whether the rows agree with the spec on every case is the
suite's: ``pytest conformance --backend backends.rows.openvino``.

The declaration tests need NumPy only; the rest skip, with the install hint, where openvino (or torch) is missing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backends.rows import openvino as rows
from backends.runtimes.openvino import (
    BF16,
    F32,
    INSTALL_HINT,
    NO_CUDA,
    OPENVINO,
    OPENVINO_BF16,
    ModelError,
    OpenVinoRuntime,
)
from contract.errors import NotSupported
from contract.tolerances import tolerance
from contract.vocabulary import Device, Dtype, Feature, Kind
from spec.cases import Case, case_by_name, make_case_data, reference, widened
from spec.layer import LayerConfig
from spec.precision import Policy

SEQUENCE, SEQUENCE_BF16, CONVERTED = rows.ROWS
F32_OUT = tolerance("float32", "outputs")
OUTPUTS = ("y", "h_T", "c_T")

OPENVINO_PROBLEM = SEQUENCE.availability(Device.CPU)
needs_openvino = pytest.mark.skipif(OPENVINO_PROBLEM is not None, reason=str(OPENVINO_PROBLEM))
needs_converter = pytest.mark.skipif(CONVERTED.availability(Device.CPU) is not None,
                                     reason=str(CONVERTED.availability(Device.CPU)))


def data(dtype="float32", *, T=5, B=4, I=3, H=4, seed=7, lengths=None, **layer):
    return make_case_data(Case("unit", T, B, I, H, LayerConfig(**layer), lengths=lengths, seed=seed), dtype)


def run(row, d):
    return row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths, mask=d.mask)


def worst(got, want) -> float:
    return max(float(np.abs(np.asarray(getattr(got, k), np.float64) - want[k]).max()) for k in OUTPUTS)


# -- declarations (NumPy only) --------------------------------------------------------------------------------------


def test_each_row_names_its_precision_and_its_dtypes():
    assert (SEQUENCE.runtime.precision, SEQUENCE_BF16.runtime.precision, CONVERTED.runtime.precision) == (F32, BF16, F32)
    assert SEQUENCE.dtypes == CONVERTED.dtypes == (Dtype.FLOAT32,)
    assert SEQUENCE_BF16.dtypes == (Dtype.BFLOAT16,)
    assert SEQUENCE_BF16.policy(Dtype.BFLOAT16) is Policy.FLOAT32_CELL_STATE
    assert not any(row.gradients for row in rows.ROWS)


def test_every_refusal_has_a_reason_in_openvinos_words():
    layer = LayerConfig()
    for row in rows.ROWS:
        assert "f64" in row.refusal(dtype=Dtype.FLOAT64, device=Device.CPU, layer=layer)
        assert "gradients" in row.refusal(dtype=row.dtypes[0], device=Device.CPU, layer=layer, gradients=True)
        assert "mask" in row.refusal(dtype=row.dtypes[0], device=Device.CPU, layer=layer, mask=np.ones((2, 1), bool))
    projection = LayerConfig(proj_size=2)
    assert CONVERTED.refusal(dtype=Dtype.FLOAT32, device=Device.CPU, layer=projection) == rows.CONVERT_PROJECTION
    assert "Unexpected length of list with weights" in rows.CONVERT_PROJECTION


def test_what_openvino_computes_wrongly_is_declared_and_known_not_refused():
    for feature in (Feature.PEEPHOLE, Feature.COUPLED, Feature.LENGTHS):
        assert feature in SEQUENCE.features
        assert SEQUENCE.known_failure(Kind.OUTPUTS, dtype=Dtype.FLOAT32, device=Device.CPU, features={feature})
    assert CONVERTED.known_failure(Kind.OUTPUTS, dtype=Dtype.FLOAT32, device=Device.CPU, features={Feature.LENGTHS})
    assert SEQUENCE.known_failure(Kind.OUTPUTS, dtype=Dtype.FLOAT32, device=Device.CPU, features={Feature.STACKED}) is None


def test_a_runtime_takes_only_the_precisions_the_cpu_plugin_has():
    with pytest.raises(ValueError, match="precision"):
        OpenVinoRuntime("f64")


def test_without_openvino_the_rows_say_how_to_install_it(monkeypatch):
    import contract.runtime

    real = contract.runtime.importlib.import_module

    def missing(name, *args):
        if name == "openvino":
            raise ModuleNotFoundError("No module named 'openvino'", name="openvino")
        return real(name, *args)

    monkeypatch.setattr(contract.runtime.importlib, "import_module", missing)
    assert OpenVinoRuntime().availability(Device.CPU) == INSTALL_HINT
    fresh = rows.OpenVinoLSTMSequence()
    assert fresh.availability(Device.CPU) == INSTALL_HINT
    assert fresh.environment(Device.CPU) == {"unavailable": INSTALL_HINT}


# -- the runtime ------------------------------------------------------------------------------------------------------


@needs_openvino
def test_cuda_is_refused_with_the_reason():
    assert OPENVINO.availability(Device.CUDA) == NO_CUDA
    with pytest.raises(ValueError, match="CPU only"):
        OPENVINO.session(b"", Device.CUDA)


@needs_openvino
def test_the_precision_hint_is_explicit_and_read_back():
    import openvino as ov  # needs_openvino skips, with the install hint, where it is missing
    for runtime, precision, mode in ((OPENVINO, "f32", "ACCURACY"), (OPENVINO_BF16, "bf16", "PERFORMANCE")):
        config = runtime.config()
        assert config[ov.properties.hint.inference_precision] == getattr(ov.Type, precision)
        environment = runtime.environment(Device.CPU)
        assert environment["precision_asked"] == precision
        assert environment["execution_mode"] == mode
        assert environment["openvino"] == ov.__version__
        assert environment["device"] and "FP32" in environment["optimization_capabilities"]
        if runtime is OPENVINO or "BF16" in environment["optimization_capabilities"]:
            assert environment["inference_precision"] == precision
    assert SEQUENCE.environment(Device.CPU)["inference_precision"] == "f32"


@needs_openvino
def test_lstmc_threads_sets_the_plugins_threads(monkeypatch):
    monkeypatch.setenv("LSTMC_THREADS", "1")
    environment = OpenVinoRuntime(F32).environment(Device.CPU)
    assert environment["threads_asked"] == 1 and environment["inference_num_threads"] == 1


@needs_openvino
@pytest.mark.parametrize("what, payload", [
    ("a truncated ONNX model", "truncated"),
    ("a PNG file", b"\x89PNG\r\n\x1a\n" + bytes(64)),
    ("nothing", b""),
    ("a truncated OpenVINO IR", b"<?xml version='1.0'?>\n<net name='lstm' version='11'>\n<layers>\n<layer id='0' na"),
])
def test_a_model_openvino_cannot_read_is_an_error_naming_what_was_read(what, payload):
    if payload == "truncated":
        from backends.layouts import onnx as layouts
        from backends.runtimes.onnx import layer_model

        whole = layer_model(3, 2, LayerConfig(), np.float32, lengths=False, weight_name=layouts.weight_name).SerializeToString()
        payload = whole[: len(whole) // 2]
    with pytest.raises(ModelError) as raised:
        OPENVINO.read(payload, what)
    message = str(raised.value)
    assert f"cannot read the {what} ({len(payload)} bytes, starting {payload[:16]!r})" in message
    assert "Exception from src/" not in message  # OpenVINO's message, without its C++ frames


# -- the rows ---------------------------------------------------------------------------------------------------------


@needs_openvino
@pytest.mark.parametrize("layer", [dict(), dict(direction="reverse"), dict(direction="bidirectional", num_layers=2),
                                   dict(gate_clip=0.6), dict(forget_bias=1.0)], ids=str)
def test_lstm_sequence_conforms_in_float32(layer):
    d = data(**layer)
    got = run(SEQUENCE, d)
    assert got.y.dtype == np.float32
    assert worst(got, reference(widened(d)).outputs) < F32_OUT.atol


@needs_openvino
def test_one_compilation_per_parameter_set_and_lengths():
    d = data(seed=11)
    run(SEQUENCE, d)
    run(SEQUENCE, replace(d, x=d.x * 0.5))
    compiled = SEQUENCE.built_for(d.params, d.layer, Device.CPU)
    assert list(compiled.sessions) == [False]


@needs_openvino
@pytest.mark.parametrize("name", ["small", "stacked-bidirectional", "reverse-standard"])
def test_the_bf16_row_is_float32_cell_state_bit_for_bit(name):
    """The fused RNN node in bf16 keeps c in float32 from step to step: the policy declared, at distance 0."""
    if OPENVINO_BF16.availability(Device.CPU) is not None or SEQUENCE_BF16.availability(Device.CPU) is not None:
        pytest.skip(str(SEQUENCE_BF16.availability(Device.CPU)))
    from contract.half_bounds import fits, layer_data

    wide = layer_data(case_by_name(name), "bfloat16")
    half = wide.params.astype(Dtype.BFLOAT16)
    bf16 = Dtype.BFLOAT16.numpy()
    got = SEQUENCE_BF16.forward(half, *(a.astype(bf16) for a in (wide.x, wide.h0, wide.c0)), layer=wide.layer)
    assert {a.dtype for a in (got.y, got.h_T, got.c_T)} == {bf16}
    nearest = fits(wide, {"y": got.y, "h_T": got.h_T, "c_T": got.c_T}, "bfloat16")[0]
    assert nearest.policy is Policy.FLOAT32_CELL_STATE and nearest.mean < 0.01


@needs_openvino
def test_the_bf16_row_refuses_float32_with_the_row_to_use():
    d = data()
    with pytest.raises(NotSupported, match="openvino/LSTMSequence"):
        run(SEQUENCE_BF16, d)


@needs_openvino
def test_known_failure_peepholes_are_dropped():
    d = data(peephole=True)
    got = run(SEQUENCE, d)
    without = replace(d, case=replace(d.case, layer=replace(d.layer, peephole=False)),
                      params=replace(d.params, cells=tuple(replace(c, p=None) for c in d.params.cells)))
    assert worst(got, reference(widened(without)).outputs) < F32_OUT.atol
    assert worst(got, reference(widened(d)).outputs) > 1e-2


@needs_openvino
def test_known_failure_lengths_are_ignored_with_dynamic_shapes():
    d = data(lengths=np.array([5, 2, 1, 4]))
    got = run(SEQUENCE, d)
    assert worst(got, reference(widened(replace(d, lengths=None))).outputs) < F32_OUT.atol
    assert worst(got, reference(widened(d)).outputs) > 1e-2


@needs_openvino
@needs_converter
def test_convert_model_conforms_and_converts_once_per_shape():
    d = data(num_layers=2, direction="bidirectional")
    got = run(CONVERTED, d)
    assert worst(got, reference(widened(d)).outputs) < F32_OUT.atol
    run(CONVERTED, replace(d, x=d.x * 0.5))
    assert list(CONVERTED.built_for(d.params, d.layer, Device.CPU).sessions) == [(5, 4, False)]
