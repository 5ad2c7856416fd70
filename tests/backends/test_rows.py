"""What every built-in row must do, whatever its framework, that the conformance suite does not check: stable, unique
ids; layouts (NumPy only, so checked without any framework) whose round trips are exact on every case they hold, which
fold a forget bias into b_f, and whose gradient is the transpose of their conversion; answers that follow the parameter
values a row is given (a gate swap always shows: no build kept for other values is reused); and the pass a benchmark
times, which runs again without accumulating, in the suite's tolerance in a judged dtype and in the half type itself
where a row times one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from itertools import combinations

import numpy as np
import pytest

from backends.registry import builtin_rows
from bench import correctness
from contract.answers import Cotangents
from contract.layout import fold_forget_bias
from contract.timing import Timing
from contract.tolerances import quantized_tolerance, tolerance
from contract.vocabulary import ARCHITECTURE, Dtype, Feature, Kind, features_of
from spec.cases import case_by_name, case_set, make_case_data, reference
from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.quantized import layer_forward

#: A cell's tensors with a gate axis first (f at index 1): W, U, b, p (i, f, o), ln.
GATE_AXIS = ("W", "U", "b", "p", "ln")

ROWS = builtin_rows()
#: The rows whose calls these tests make: a compiled row compiles per shape (tests/backends/test_compiled_rows.py and
#: `pytest conformance --compiled` judge those).
EAGER_ROWS = [row for row in ROWS if not row.compiled]
LAYOUTS: dict[str, list] = defaultdict(list)  # layout name -> the rows that use it
for _row in ROWS:
    LAYOUTS[_row.layout.name].append(_row)


def needs(row) -> None:
    """Skip with the row's own reason where it cannot run here (the install hint when its framework is missing)."""
    if (reason := row.availability("cpu")) is not None:
        pytest.skip(f"{row.id}: {reason}")


def held_cases(layout) -> list:
    """The cases of the table whose architecture the layout can express."""
    return [case for case in case_set() if features_of(case.layer) & ARCHITECTURE <= layout.holds]


def test_ids_are_unique_and_stable():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)) == 47
    assert all(i.count("/") == 1 and " " not in i for i in ids), ids


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_round_trip_is_exact_on_every_case_it_holds_with_the_forget_bias_folded(name):
    layout = LAYOUTS[name][0].layout
    cases = held_cases(layout)
    assert cases, f"{name} holds no case of the table"
    for case in cases:
        for dtype in ("float32", "float64"):
            params = make_case_data(case, dtype).params
            back = layout.from_native(layout.to_native(params, case.layer), case.layer)
            assert back.num_directions == params.num_directions and back.tensors().keys() == params.tensors().keys()
            for tensor, value in params.tensors().items():
                if tensor.endswith(" b"):
                    value = fold_forget_bias(value, case.layer.forget_bias)
                if case.layer.coupled_input_forget and not layout.keeps_unused_forget_gate and tensor.split()[-1] in GATE_AXIS:
                    value = value.copy()  # the spec's unused f tensors (index 1 on axis 0) come back as zeros
                    value[1] = 0
                assert back.tensors()[tensor].dtype == value.dtype, f"{case.name} {dtype}: {tensor}"
                np.testing.assert_allclose(back.tensors()[tensor], value, rtol=0, atol=4 * np.finfo(dtype).eps,
                                           err_msg=f"{case.name} {dtype}: {tensor} changed in the round trip")


def inner(a, b) -> float:
    """<a, b> over every float array (or parameter set) of two native structures of the same shape."""
    if isinstance(a, Mapping):
        return sum(inner(a[name], b[name]) for name in a)
    if isinstance(a, LayerParams):
        return sum(float(np.sum(a.tensors()[name] * b.tensors()[name])) for name in a.tensors())
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return float(np.sum(a * b))
    return 0.0


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_gradient_is_the_transpose_of_its_conversion(name):
    """<to_native(P), G> = <P, gradient(G)> for native gradients G = to_native(Q) of random Q (to_native is linear
    without a forget bias; a framework's gradients of two tensors fed by one canonical tensor, such as PyTorch's two
    biases, are equal, as there): what the rows' gradients pass through is the adjoint of what their parameters went
    through, factors included."""
    layout = LAYOUTS[name][0].layout
    rng = np.random.default_rng(7)
    for case in held_cases(layout):
        layer = LayerConfig(**{**vars(case.layer), "forget_bias": 0.0})
        params = make_case_data(case).params
        other = params.with_tensors({tensor: rng.normal(size=t.shape) for tensor, t in params.tensors().items()})
        native, native_gradients = layout.to_native(params, layer), layout.to_native(other, layer)
        gradients = layout.gradient(native_gradients, params, case.layer)
        assert gradients.tensors().keys() == params.tensors().keys()
        assert np.isclose(inner(native, native_gradients), inner(params, gradients), rtol=1e-12, atol=0), case.name


# ---------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------


def swapped(cell: LSTMParams, a: int, b: int, peephole_pair: bool = False) -> LSTMParams:
    order = list(range(3 if peephole_pair else 4))
    order[a], order[b] = order[b], order[a]
    if peephole_pair:
        return LSTMParams(cell.W, cell.U, cell.b, cell.p[order])
    return LSTMParams(cell.W[order], cell.U[order], cell.b[order], cell.p)


@pytest.mark.parametrize("row", EAGER_ROWS, ids=lambda r: r.id)
def test_a_gate_swap_always_shows(row):
    """With gate-distinct weights, swapping any two gates (or peepholes) of the parameters a row is given changes what it
    computes: a layout bug of that kind cannot hide behind the data, and no build kept for one parameter set (rows keep
    them per values) answers for another."""
    needs(row)
    dtype = next(d for d in (Dtype.FLOAT64, Dtype.FLOAT32, Dtype.BFLOAT16, Dtype.FLOAT16)
                 if d in row.dtypes and not row.known_failure(Kind.OUTPUTS, dtype=d, device="cpu"))
    # Peepholes a row drops (a known failure) cannot show a swap.
    peephole = Feature.PEEPHOLE in row.features and not row.known_failure(Kind.OUTPUTS, dtype=dtype, device="cpu",
                                                                          features={Feature.PEEPHOLE})
    d = make_case_data(case_by_name("I-ne-H-peephole" if peephole else "I-ne-H"), str(dtype))
    y = lambda params: row.forward(params, d.x, d.h0, d.c0, layer=d.layer).y  # noqa: E731
    base = y(d.params)
    cell = d.params.cells[0]
    pairs = [(a, b, False) for a, b in combinations(range(4), 2)] + [(a, b, True) for a, b in combinations(range(3), 2) if peephole]
    for a, b, pair in pairs:
        difference = np.max(np.abs(y(LayerParams((swapped(cell, a, b, pair),))) - base))
        names = PEEPHOLE_GATES if pair else GATES
        assert difference > 1e-3, f"swapping {'peepholes' if pair else 'gates'} {names[a]} and {names[b]} changed y by {difference:.2g}"


@pytest.mark.parametrize("row", EAGER_ROWS, ids=lambda r: r.id)
def test_the_timed_pass_runs_again_without_accumulating_and_computes_in_its_dtype(row):
    """The pass a benchmark times, in every dtype the row times (forward, and forward+backward where it has gradients):
    two runs give the same result (each replaces the last, none adds to it); in a judged dtype the result is within the
    suite's tolerance of the spec (unless a known failure says otherwise); in a half type it is resident where its
    float32 pass is, within the benchmark's bound (bench/correctness.py) and really computed in that type (it differs
    from the float32 pass by more than float32 rounding)."""
    needs(row)
    float32 = {}
    for dtype in (*row.dtypes, *row.half_timing):
        timing_dtype = Dtype(dtype)
        for gradients in (False, True) if row.gradients else (False,):
            timing = Timing(timing_dtype, "cpu", gradients)
            d = make_case_data(case_by_name("I-ne-H"), str(timing.source_dtype))
            timed = row.timed_pass(d.params, d.x, d.h0, d.c0, Cotangents(d.dy, d.dh_T, d.dc_T), layer=d.layer, timing=timing)
            timed.run()
            first = timed.result()
            timed.run()
            second = timed.result()
            where = f"{row.id} {dtype} {'forward+backward' if gradients else 'forward'}"
            assert set(second) == ({"x", "h0", "c0"} if gradients else {"y"}), where
            for name in second:
                assert second[name].dtype == np.float64 and np.array_equal(second[name], first[name]), f"{where}: {name}"
            kind = Kind.GRADIENTS if gradients else Kind.OUTPUTS
            if timing_dtype is Dtype.FLOAT32:
                float32[gradients] = second
            if row.known_failure(kind, dtype=timing_dtype, device="cpu", features=features_of(d.layer), case="I-ne-H"):
                continue
            if timing.half:
                # Resident where the row's float32 pass is: a row with its own hooks is timed through NumPy, its
                # data rounded to the half type once.
                correctness.check(second, correctness.reference(d, gradients), timing_dtype)
                if gradients not in float32:  # a row of half types only (torch.autocast)
                    continue
                assert timed.resident == row.timed_pass(d.params, d.x, d.h0, d.c0, None, layer=d.layer,
                                                        timing=Timing("float32", "cpu")).resident, where
                difference = max(float(np.max(np.abs(second[k] - float32[gradients][k]))) for k in second)
                assert difference > 100 * Dtype.FLOAT32.eps, f"{where}: the same as the float32 pass ({difference:.2g})"
                continue
            if row.quantization is not None:  # judged against its integer reference, as the suite judges it
                run = layer_forward(row.quantized_parameters(d.params, layer=d.layer), d.x, d.h0, d.c0, config=d.layer,
                                    scheme=row.quantization)
                tol = quantized_tolerance(run.step)
                np.testing.assert_allclose(second["y"], run.y, rtol=tol.rtol, atol=tol.atol, err_msg=f"{where}: y")
                continue
            want = reference(d)
            want = want.gradients if gradients else want.outputs
            tol = tolerance(timing_dtype, kind)
            for name, got in second.items():
                np.testing.assert_allclose(got, want[name], rtol=tol.rtol, atol=tol.atol, err_msg=f"{where}: {name}")
