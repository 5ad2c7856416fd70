"""bench/correctness.py: the benchmark's refusal to time a wrong answer, and the timing contract's checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from bench import correctness
from contract.answers import Cotangents, Gradients, Outputs
from contract.errors import NotSupported
from contract.row import Row
from contract.timing import Timing
from contract.vocabulary import Dtype, Feature
from spec import layer as spec_layer
from spec.cases import Case, make_case_data
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams

DATA = make_case_data(Case("bench-check", T=6, B=3, I=5, H=4, layer=LayerConfig(), seed=11), "float32")
LAYERED = make_case_data(Case("bench-check-layer", T=6, B=4, I=3, H=4, layer=LayerConfig(num_layers=2, direction="bidirectional"),
                              lengths=(6, 2, 5, 3), seed=12), "float32")


def spec_y(data, dtype=np.float32, **override) -> np.ndarray:
    return data.forward(dtype=dtype, **override).y


def test_reference_is_the_spec_in_float64_on_the_float32_data_computed_once():
    correctness.spec_answer.cache_clear()
    ref = correctness.reference(DATA, False)
    wide = {k: a.astype(np.float64) for k, a in DATA.inputs().items()}
    expected = spec_layer.forward(DATA.params.astype(np.float64), **wide, config=DATA.layer, dtype=np.float64).y
    assert ref["y"].dtype == np.float64 and np.array_equal(ref["y"], expected)
    assert set(correctness.reference(DATA, True)) == {"x", "h0", "c0"}
    # Forward and forward+backward were answered from one spec run.
    assert correctness.spec_answer.cache_info().misses == 1


def test_a_padded_run_is_checked_against_the_spec_without_the_lengths():
    padded = correctness.padded(LAYERED)
    assert padded.lengths is None and padded.case.lengths is None and padded.params is LAYERED.params
    wide = {k: a.astype(np.float64) for k, a in LAYERED.inputs().items()}
    expected = spec_layer.forward(LAYERED.params.astype(np.float64), **wide, config=LAYERED.layer, dtype=np.float64).y
    assert np.array_equal(correctness.reference(padded, False)["y"], expected)
    with pytest.raises(AssertionError, match="y is .* from the spec"):  # padding is not what lengths compute
        correctness.check({"y": spec_y(LAYERED, lengths=None)}, correctness.reference(LAYERED, False), "float32")


def test_float32_result_passes_and_reports_its_error():
    error = correctness.check({"y": spec_y(DATA)}, correctness.reference(DATA, False), "float32")
    assert 0 < error < 1e-6
    assert correctness.check({"y": spec_y(LAYERED)}, correctness.reference(LAYERED, False), Dtype.FLOAT32) < 1e-6


def test_a_gate_swap_is_refused_in_every_dtype():
    cell = DATA.params.cells[0]
    W, U, b = (a.copy() for a in (cell.W, cell.U, cell.b))
    for a in (W, U, b):
        a[[1, 2]] = a[[2, 1]]  # f and g swapped
    swapped = spec_y(DATA, params=LayerParams((LSTMParams(W, U, b),)))
    for dtype in ("float32", "float16", "bfloat16"):
        with pytest.raises(AssertionError, match=r"y is .* from the spec .* its time is not kept"):
            correctness.check({"y": swapped}, correctness.reference(DATA, False), dtype)


def test_nan_unwritten_output_and_wrong_keys_are_refused():
    ref = correctness.reference(DATA, False)
    poisoned = ref["y"].copy()
    poisoned[3, 1, 2] = np.nan
    assert correctness.relative_error(poisoned, ref["y"]) == float("inf")
    with pytest.raises(AssertionError):
        correctness.check({"y": poisoned}, ref, "bfloat16")
    with pytest.raises(AssertionError, match="returned"):
        correctness.check({"x": ref["y"]}, ref, "float32")
    with pytest.raises(ValueError, match="shape"):
        correctness.relative_error(ref["y"][:-1], ref["y"])
    with pytest.raises(ValueError, match="dtype: expected one of"):
        correctness.check(ref, ref, "int8")


def test_bounds_grow_with_the_unit_roundoff_and_each_has_a_reason():
    bounds = [correctness.BOUNDS[d][0] for d in ("float64", "float32", "float16", "bfloat16")]
    assert bounds == sorted(bounds) and all(len(correctness.BOUNDS[d][1]) > 30 for d in correctness.BOUNDS)
    assert set(correctness.BOUNDS) == set(Dtype)


@dataclass(eq=False)
class SpecHooks(Row):
    """A row with its own call-level hooks (the spec itself): the base times it through forward() and backward()."""

    id: str = "spec-hooks"
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS})

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        fwd = layer_forward(params, x, h0, c0, layer, lengths)
        return Outputs(fwd.y, fwd.h_T, fwd.c_T)

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device):
        grads = spec_layer.backward(layer_forward(params, x, h0, c0, layer, lengths), cotangents.dy, cotangents.dh_T, cotangents.dc_T)
        return Gradients(grads.x, grads.h0, grads.c0, grads.params)


def layer_forward(params, x, h0, c0, config, lengths):
    return spec_layer.forward(params, x, h0, c0, config=config, lengths=lengths, dtype=x.dtype)


def cotangents(data) -> Cotangents:
    return Cotangents(data.dy, data.dh_T, data.dc_T)


@pytest.mark.parametrize("data", [DATA, LAYERED], ids=["cell", "layer"])
def test_a_row_with_its_own_hooks_is_timed_through_numpy_and_checked(data):
    row = SpecHooks()
    for gradients in (False, True):
        timed = row.timed_pass(data.params, data.x, data.h0, data.c0, cotangents(data), layer=data.layer,
                               lengths=data.lengths, timing=Timing("float32", "cpu", gradients))
        timed.run()
        assert timed.resident is False
        assert correctness.check(timed.result(), correctness.reference(data, gradients), "float32") < 1e-5


def test_half_types_need_a_declaration_and_a_device_resident_pass():
    row = SpecHooks()
    timing = Timing("bfloat16", "cpu")
    with pytest.raises(NotSupported, match="does not support dtype bfloat16"):
        row.timed_pass(DATA.params, DATA.x, DATA.h0, DATA.c0, None, layer=DATA.layer, timing=timing)
    declared = replace(SpecHooks(), half_timing=(Dtype.BFLOAT16,))
    with pytest.raises(NotSupported, match="declares bfloat16 but gives no device-resident pass"):
        declared.timed_pass(DATA.params, DATA.x, DATA.h0, DATA.c0, None, layer=DATA.layer, timing=timing)
    with pytest.raises(ValueError, match="Timing.dtype"):
        Timing("int8", "cpu")
    assert Timing(dtype="float16").source_dtype == Dtype.FLOAT32 and Timing(dtype="float64").source_dtype == Dtype.FLOAT64


def test_a_half_type_pass_is_timed_only_after_its_row_passes_its_policy_s_bounds():
    """The benchmarks' half-type check first (bench/correctness.py: half_conformance): an honest evaluation of a policy
    passes it, a half-type mistake is refused with the statistic that failed, and a row that declares no policy for
    the type (timed, not judged) is left to the relative guard."""
    from conformance.half_mutants import HONEST, ROWS

    honest = next(row for row in HONEST if row.id.startswith("policy/half-storage-float32-accumulation/"))
    assert correctness.half_conformance(honest, "bfloat16", "cpu") is None
    mistaken = next(row for row in ROWS if row.id == "half-mutant/half-accumulation")
    problem = correctness.half_conformance(mistaken, "float16", "cpu")
    assert problem.startswith("its float16 outputs on the case medium are outside the bounds of the policy it declares")
    assert "under half-storage-float32-accumulation: fails" in problem
    assert correctness.half_conformance(Row(id="timed-only", half_timing=("bfloat16",)), "bfloat16", "cpu") is None
