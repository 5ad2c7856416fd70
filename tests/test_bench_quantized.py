"""The benchmark's quantized rows: a timed result checked against the integer reference of the row's scheme (not the
spec, which it is off by its quantization error), and the report's table of each quantized row beside its float
source (bench/correctness.py, bench/report.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import correctness, report
from bench.matrix import float_source
from contract.errors import NotSupported
from contract.quantization import integer_reference
from spec.cases import Case, make_case_data
from spec.layer import LayerConfig

LAYERED = make_case_data(Case("bench-quantized", T=6, B=4, I=3, H=4,
                              layer=LayerConfig(num_layers=2, direction="bidirectional", zero_output_for_mask=True),
                              lengths=(6, 2, 5, 3), seed=12), "float32")
FBGEMM = "torch.ao/quantized.dynamic.LSTM(fbgemm)"


def fbgemm_row():
    pytest.importorskip("torch", reason="needs torch: pip install 'lstm-conformance[torch]'")
    from backends.registry import row_by_id

    row = row_by_id(FBGEMM)
    if (reason := row.availability("cpu")) is not None:
        pytest.skip(f"unavailable: {reason}")
    return row


@pytest.mark.parametrize("with_lengths", [False, True], ids=["padded", "lengths"])
def test_a_quantized_result_is_checked_against_its_integer_reference_not_the_spec(with_lengths):
    row = fbgemm_row()
    data = LAYERED if with_lengths else correctness.padded(LAYERED)
    layer = LAYERED.layer if with_lengths else LayerConfig(num_layers=2, direction="bidirectional")
    y = row.forward(data.params, data.x, data.h0, data.c0, layer=layer, lengths=data.lengths).y.astype(np.float64)
    # Off the spec by its quantization error: the float32 check refuses it, rightly for a float row.
    with pytest.raises(AssertionError, match="from the spec"):
        correctness.check({"y": y}, correctness.reference(data, False), "float32")
    checked = correctness.check_quantized(row, {"y": y}, data, layer=layer, lengths=data.lengths)
    assert checked.worst_ratio <= 1 and checked.worst_steps < 0.5 and checked.step > 0
    assert checked.quantization_error == correctness.max_abs_error(y, correctness.reference(data, False)["y"]) > 1e-4
    # A few dequantization steps off (a stale buffer, another rounding) is refused, and so is the float answer.
    with pytest.raises(AssertionError, match=r"integer reference of fbgemm-dynamic-7bit .* its time is not kept"):
        correctness.check_quantized(row, {"y": y + 3 * checked.step}, data, layer=layer, lengths=data.lengths)
    with pytest.raises(AssertionError, match="integer reference"):
        correctness.check_quantized(row, correctness.reference(data, False), data, layer=layer, lengths=data.lengths)
    with pytest.raises(AssertionError, match="returned"):
        correctness.check_quantized(row, {"x": y}, data, layer=layer, lengths=data.lengths)


def test_a_float_row_has_no_integer_reference_and_every_quantized_row_a_source():
    from backends.registry import builtin_rows, row_by_id

    rows = {row.id: row for row in builtin_rows()}
    quantized = [row for row in rows.values() if row.quantization is not None]
    assert quantized and all(float_source(row) in rows for row in quantized)
    assert all(rows[row.float_source].quantization is None for row in quantized)
    assert float_source(row_by_id("torch/nn.LSTM")) is None
    with pytest.raises(NotSupported, match="not a quantized row"):
        integer_reference(row_by_id("torch/nn.LSTM"), LAYERED.params, LAYERED.x, LAYERED.h0, LAYERED.c0,
                          layer=LAYERED.layer)


def entry(impl, median, variant="standard", shape="mnist-rows", **extra):
    return {"stats": {"median": median}, "extra_info": {
        "matrix": True, "implementation": impl, "variant": variant, "dtype": "float32", "device": "cpu", "shape": shape,
        "pass_": "forward", "gflops": 1.0, "roofline_fraction": 0.5, "relative_error_vs_spec": 1e-7,
        "device_resident": True, "max_abs_error_vs_spec": 2e-7, "how": "padded", **extra}}


def quantized_entry(impl, median, source, threads=2, **extra):
    return entry(impl, median, quantization="some-scheme", float_source=source, relative_error_vs_spec=None,
                 max_abs_error_vs_spec=3e-3, worst_steps_vs_integer_reference=0.01, dequantization_step=2e-5,
                 forced_steps=0, row_threads=threads, **extra)


def test_the_report_sets_each_quantized_row_beside_its_source(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": [
        entry("float/LSTM", 0.004, row_threads=2),
        quantized_entry("quantized/LSTM", 0.002, "float/LSTM"),
        quantized_entry("quantized/LSTM(one thread)", 0.008, "float/LSTM", threads=1),
        quantized_entry("orphan/LSTM", 0.001, "absent/LSTM"),
    ]}))
    results, machines = report.load([path])
    text = report.render(results, machines)
    # The float tables hold the float row only: a quantized row is not checked against the spec.
    forward = text.split("## forward, float32")[1].split("# Quantized rows")[0]
    assert "`float/LSTM`" in forward and "quantized/LSTM" not in forward and "orphan" not in forward
    table = text.split("# Quantized rows beside their float sources")[1]
    line = next(l for l in table.splitlines() if "`quantized/LSTM` (some-scheme)" in l)
    assert "| 2 ms | `float/LSTM` | 4 ms | 0.50x | 0.003 (2e-07) | 0.01 (2e-05) |" in line
    slower = next(l for l in table.splitlines() if "`quantized/LSTM(one thread)`" in l)
    assert "2.00x ‡ (1 vs 2 threads)" in slower and "different thread counts" in table
    orphan = next(l for l in table.splitlines() if "`orphan/LSTM`" in l)
    assert "`absent/LSTM` | - | - |" in orphan
