"""The integer reference (spec/quantized.py): each rule against hand-computed values, the checks on a model's
integers, scales and zero points (hostile input refused, naming the tensor), the saturation model, the forcing of
float32 noise, and the reference against the float spec (the quantization error is small where the scheme is sound,
large where it is not)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backends.layouts.torch import NN_LSTM
from contract.layout import fold_forget_bias
from contract.quantization import quantized_layer
from spec.cases import case_by_name, make_case_data
from spec.quantized import (
    Accumulation,
    ActivationScheme,
    EndedRows,
    Group,
    Padding,
    QuantizedCell,
    QuantizedLayer,
    QuantizedMatrix,
    Rounding,
    Scaling,
    Scheme,
    ZeroPoint,
    activation_quantization,
    layer_forward,
    quantize_activations,
    quantized_product,
    reverse_within,
    saturated_pairs,
)
from spec.validation import LSTMInputError

U8 = ActivationScheme(Group.STEP, 0, 255)
SYMMETRIC = ActivationScheme(Group.ROW, -127, 127, symmetric=True, rounding=Rounding.HALF_AWAY,
                             scaling=Scaling.RANGE_RATIO)
SCHEME = Scheme("test", input=replace(U8, group=Group.SEQUENCE), recurrent=U8)


def per_tensor(name, W):
    scale = np.abs(W).max() / 127
    return QuantizedMatrix(name, np.clip(np.rint(W / scale), -127, 127).astype(np.int8), scale, 0)


def quantized_params(params, permute=False, forget_bias=0.0):
    """Per-tensor int8 weights, the forget bias folded into b_f (as every model holds it)."""
    cells = []
    for k, cell in enumerate(params.cells):
        H, name = cell.hidden_size, params.cell_name(k)
        W = cell.W.reshape(4 * H, -1)
        if permute:  # gates i and f swapped: a silent permutation
            W = np.concatenate([W[H:2 * H], W[:H], W[2 * H:]])
        b = fold_forget_bias(cell.b, forget_bias)
        cells.append(QuantizedCell(per_tensor(f"{name} W", W), per_tensor(f"{name} U", cell.U.reshape(4 * H, -1)), b,
                                   cell.p, None if cell.W_hr is None else per_tensor(f"{name} W_hr", cell.W_hr), cell.ln,
                                   cell.b_hr))
    return QuantizedLayer(tuple(cells))


def dequantized(params, quantized):
    """The parameters with every quantized matrix replaced by its dequantized values (float32)."""
    cells = []
    for cell, q in zip(params.cells, quantized.cells):
        H = cell.hidden_size
        cells.append(replace(cell, W=q.W.dequantized().reshape(4, H, -1).astype(np.float32),
                             U=q.U.dequantized().reshape(4, H, -1).astype(np.float32),
                             W_hr=None if q.W_hr is None else q.W_hr.dequantized().astype(np.float32)))
    return replace(params, cells=tuple(cells))


# --- (Q2) the activations --------------------------------------------------------------------------------------


def test_asymmetric_parameters_include_zero_and_round_the_zero_point():
    a = np.array([[0.5, 1.5, 2.0]], np.float32)  # all positive: the range is [0, 2]
    scale, zero = activation_quantization(a, U8)
    assert scale.item() == np.float32(2.0 / 255) and zero.item() == 0
    a = np.array([[-1.0, 0.25, 3.0]], np.float32)  # [-1, 3]: s = 4 / 255, z = rint(255 / 4) = 64
    scale, zero = activation_quantization(a, U8)
    assert scale.item() == np.float32(4.0 / 255) and zero.item() == 64
    q, _, _ = quantize_activations(a, U8)
    assert q.tolist() == [[0, 80, 255]]  # -1 -> 64 - 63.75 = 0.25 -> 0; 0.25 -> 64 + 15.94 -> 80; 3 -> 255


def test_an_empty_range_takes_the_kernels_stand_in_scale():
    zeros = np.zeros((2, 3), np.float32)
    for stand_in in (1.0, 0.1):
        scale, zero = activation_quantization(zeros, replace(U8, zero_range_scale=stand_in))
        assert scale.item() == np.float32(stand_in) and zero.item() == 0
    q, scale, _ = quantize_activations(zeros, SYMMETRIC)
    assert np.all(q == 0) and np.all(scale == 1)


def test_groups_choose_one_scale_per_sequence_step_or_row():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5
    assert activation_quantization(a, replace(U8, group=Group.SEQUENCE))[0].shape == (1, 1, 1)
    assert activation_quantization(a, replace(U8, group=Group.STEP))[0].shape == (2, 1, 1)
    assert activation_quantization(a, replace(U8, group=Group.ROW))[0].shape == (2, 3, 1)


def test_ties_round_as_the_scheme_says():
    # max|a| = 127 * 0.5: s = 0.5, and 0.75 / 0.5 = 1.5 exactly: a tie
    a = np.array([[0.75, -0.75, 63.5]], np.float32)
    away, _, _ = quantize_activations(a, SYMMETRIC)
    even, _, _ = quantize_activations(a, replace(SYMMETRIC, rounding=Rounding.HALF_EVEN))
    assert away.tolist() == [[2, -2, 127]] and even.tolist() == [[2, -2, 127]]
    a = np.array([[1.25, -1.25, 63.5]], np.float32)  # 2.5: away 3, even 2
    assert quantize_activations(a, SYMMETRIC)[0].tolist() == [[3, -3, 127]]
    assert quantize_activations(a, replace(SYMMETRIC, rounding=Rounding.HALF_EVEN))[0].tolist() == [[2, -2, 127]]


def test_the_zero_point_rules_differ_only_where_the_errors_do():
    a = np.array([[-0.3, 2.9]], np.float32)
    from_min = activation_quantization(a, U8)[1].item()
    smaller = activation_quantization(a, replace(U8, zero_point=ZeroPoint.SMALLER_ERROR))[1].item()
    assert from_min == round(0.3 / (3.2 / 255)) and abs(smaller - from_min) <= 1


def test_fma_scaling_adds_the_zero_point_before_its_one_rounding():
    scheme = replace(U8, scaling=Scaling.RECIPROCAL_FMA)
    a = np.array([[-1.0, 0.5, 3.0]], np.float32)
    q, scale, zero = quantize_activations(a, scheme)
    plain, _, _ = quantize_activations(a, replace(U8, scaling=Scaling.RECIPROCAL))
    assert np.abs(q - plain).max() <= 1 and q.min() >= 0 and q.max() <= 255


# --- (Q3) the product and saturation ----------------------------------------------------------------------------


def test_the_product_is_exact_integers_dequantized():
    W = QuantizedMatrix("W", np.array([[1, -2], [3, 4]], np.int8), 0.5, 0)
    x = np.array([[2.0, 0.5]], np.float32)  # s = 2 / 255, q = [255, rint(63.75) = 64]
    result, steps = quantized_product(x, W, U8)
    acc = np.array([[255 - 128, 765 + 256]])
    assert np.array_equal(result, (acc * np.float32(np.float32(2.0 / 255) * np.float32(0.5))).astype(np.float32))
    assert steps.shape == result.shape


def test_int16_pairs_saturate_where_exact_int32_does_not():
    a = np.full((1, 4), 255, np.int64)
    W = np.full((1, 4), 127, np.int64)
    assert saturated_pairs(a, W).item() == 2 * 32767  # each pair 64770 -> 32767
    assert (a @ W.T).item() == 4 * 255 * 127
    seven_bit = np.full((1, 4), 127, np.int64)
    assert saturated_pairs(seven_bit, W).item() == (seven_bit @ W.T).item()  # 7-bit activations never saturate
    matrix = QuantizedMatrix("W", W.astype(np.int8), 1 / 127, 0)
    x = np.ones((1, 4), np.float32)
    exact, _ = quantized_product(x, matrix, U8)
    saturated, _ = quantized_product(x, matrix, U8, Accumulation.PAIRS_INT16)
    assert saturated.item() < exact.item() / 1.9


# --- a model's integers, scales and zero points: hostile input --------------------------------------------------


@pytest.mark.parametrize("scale, problem", [(np.nan, "not a finite positive"), (np.inf, "not a finite positive"),
                                            (0.0, "not a finite positive"), (-0.1, "not a finite positive"),
                                            (np.zeros(0), "missing"), (np.ones(3), "a granularity")],
                         ids=["nan", "inf", "zero", "negative", "missing", "three-scales-for-four-rows"])
def test_a_bad_scale_is_refused_naming_the_tensor(scale, problem):
    with pytest.raises(LSTMInputError, match=f"layer 0 direction 0 U scale: {problem}"):
        QuantizedMatrix("layer 0 direction 0 U", np.zeros((4, 2), np.int8), scale, 0)


def test_weights_that_do_not_fit_eight_bits_are_refused():
    with pytest.raises(LSTMInputError, match="W \\(quantized\\): does not fit 8 bits.*from -200 to 3"):
        QuantizedMatrix("W", np.array([[-200, 3]], np.int16), 0.1, 0)
    with pytest.raises(LSTMInputError, match="not integers"):
        QuantizedMatrix("W", np.array([[0.5, 3.0]]), 0.1, 0)
    with pytest.raises(LSTMInputError, match="zero point: outside"):
        QuantizedMatrix("W", np.array([[-1, 3]], np.int8), 0.1, 200)


def test_a_per_input_column_granularity_is_refused_naming_it():
    params = make_case_data(case_by_name("small"), np.float32).params
    native = NN_LSTM.to_native(params, case_by_name("small").layer)
    integers = {name: np.zeros(np.shape(value), np.int8) for name, value in native.items() if "weight" in name}
    scales = {name: np.linspace(0.1, 0.2, q.shape[-1]) for name, q in integers.items()}  # one per input column
    floats = {name: value for name, value in native.items() if name not in integers}
    with pytest.raises(LSTMInputError, match="granularity the integer reference does not model.*per-input-column"):
        quantized_layer(NN_LSTM, case_by_name("small").layer, integers=integers, scales=scales,
                        zero_points=dict.fromkeys(integers, 0), floats=floats)


def test_missing_or_non_finite_scales_in_a_model_are_refused():
    layer = case_by_name("small").layer
    native = NN_LSTM.to_native(make_case_data(case_by_name("small"), np.float32).params, layer)
    integers = {name: np.zeros(np.shape(value), np.int8) for name, value in native.items() if "weight" in name}
    floats = {name: value for name, value in native.items() if name not in integers}
    name = sorted(integers)[0]
    with pytest.raises(LSTMInputError, match=f"{name} scale: missing"):
        quantized_layer(NN_LSTM, layer, integers=integers, scales={n: 0.1 for n in integers if n != name},
                        zero_points=dict.fromkeys(integers, 0), floats=floats)
    with pytest.raises(LSTMInputError, match=f"{name} scale: not a finite positive number.*nan"):
        quantized_layer(NN_LSTM, layer, integers=integers, scales={**dict.fromkeys(integers, 0.1), name: np.nan},
                        zero_points=dict.fromkeys(integers, 0), floats=floats)
    with pytest.raises(LSTMInputError, match="zero point: missing"):
        quantized_layer(NN_LSTM, layer, integers=integers, scales=dict.fromkeys(integers, 0.1), zero_points={},
                        floats=floats)


def test_integers_that_quantize_other_weights_are_refused_before_any_comparison():
    data = make_case_data(case_by_name("stacked-bidirectional"), np.float32)
    quantized_params(data.params).check_quantizes(data.params)
    with pytest.raises(LSTMInputError, match="layer 0 direction 0 W: integers that do not quantize the given weights.*"
                                             "permuted or transposed"):
        quantized_params(data.params, permute=True).check_quantizes(data.params)


# --- the layer: against the float spec, and the forcing -------------------------------------------------------


@pytest.mark.parametrize("name", ["small", "stacked-bidirectional", "lengths", "projection", "layer-norm-full",
                                  "coupled-stack", "mask-previous", "gate-clip"])
def test_with_fine_activations_the_reference_is_the_float_lstm_of_its_weights(name):
    """The integer reference computes the LSTM of its dequantized weights, up to the activations' quantization: with
    22-bit activations it is the float spec on those weights within float32 noise; with 8-bit ones it is not."""
    data = make_case_data(case_by_name(name), np.float32)
    quantized = quantized_params(data.params, forget_bias=data.layer.forget_bias)
    float_run = data.forward(params=dequantized(data.params, quantized).astype(np.float64),
                             x=data.x.astype(np.float64), h0=data.h0.astype(np.float64), c0=data.c0.astype(np.float64),
                             dtype=np.float64)
    errors = []
    for q_max in (2**22, 255):
        scheme = Scheme("t", input=replace(U8, group=Group.SEQUENCE, q_max=q_max), recurrent=replace(U8, q_max=q_max))
        run = layer_forward(quantized, data.x, data.h0, data.c0, config=data.layer, scheme=scheme,
                            lengths=data.lengths, mask=data.mask)
        errors.append(max(float(np.abs(run.y - float_run.y).max()), float(np.abs(run.c_T - float_run.c_T).max())))
    assert errors[0] < 2e-5 < 1e-3 < errors[1], errors


def test_the_reference_takes_the_implementations_h_only_at_float32_noise():
    data = make_case_data(case_by_name("medium"), np.float32)
    quantized = quantized_params(data.params)
    run = layer_forward(quantized, data.x, data.h0, data.c0, config=data.layer, scheme=SCHEME)
    # An implementation one float32 ulp away everywhere: where its h quantizes apart, the reference follows it.
    nudged = np.nextafter(run.y, np.float32(np.inf))
    followed = layer_forward(quantized, data.x, data.h0, data.c0, config=data.layer, scheme=SCHEME, observed_y=nudged)
    assert all(f.difference <= 1e-3 * f.step_size for f in followed.forced)
    assert np.abs(followed.y - run.y).max() <= np.abs(nudged - run.y).max() * 1e4 + 1e-3 * run.step
    # One that is off by a real amount is never followed.
    off = run.y + np.float32(0.05)
    assert not layer_forward(quantized, data.x, data.h0, data.c0, config=data.layer, scheme=SCHEME,
                             observed_y=off).forced


def test_lengths_group_as_each_scheme_says():
    data = make_case_data(case_by_name("packed"), np.float32)
    quantized = quantized_params(data.params)
    runs = [layer_forward(quantized, data.x, data.h0, data.c0, config=data.layer, lengths=data.lengths,
                          scheme=replace(SCHEME, padding=padding, ended_rows=ended, reverse_within_lengths=within))
            for padding, ended, within in ((Padding.OUT_OF_RANGE, EndedRows.EXCLUDED, False),
                                           (Padding.IN_RANGE, EndedRows.ZEROED_AFTER_LAST, True))]
    assert not np.array_equal(runs[0].y, runs[1].y)  # the groups differ: each runtime's must be its own
    float_y = data.forward().y
    assert all(np.abs(run.y - float_y).max() < 0.05 for run in runs)
    lengths = np.array([3, 1, 2])
    a = np.arange(12).reshape(4, 3)
    assert reverse_within(reverse_within(a, lengths), lengths).tolist() == a.tolist()
    assert reverse_within(a, lengths)[:, 0].tolist() == [6, 3, 0, 9]


def test_a_disagreement_is_explained_only_where_an_unobserved_rounding_reaches():
    """LayerRun.explained: a forward direction's outputs from the first ambiguous step on, a reverse direction's up to
    the last; nothing is explained without an ambiguous step."""
    from spec.quantized import LayerRun

    def run(times):
        zeros = np.zeros((6, 2, 4))
        return LayerRun(zeros, zeros[:2], zeros[:2], 1.0, (), len(times), tuple(times))

    exceeded = np.zeros((6, 2, 4), bool)
    assert run(()).explained(exceeded, 2)
    exceeded[3, 0, 0] = True  # forward direction (units 0-1), step 3
    assert not run(()).explained(exceeded, 2)
    assert run((2,)).explained(exceeded, 2) and not run((4,)).explained(exceeded, 2)
    exceeded[:] = False
    exceeded[3, 1, 3] = True  # reverse direction (units 2-3), step 3
    assert run((4,)).explained(exceeded, 2) and not run((2,)).explained(exceeded, 2)
    assert run((4,)).explained(exceeded[:, :, :2] | exceeded[:, :, 2:], 1, reverse_only=True)
