"""Properties of the layer spec over random shapes, seeds, configurations, lengths and masks (hypothesis).

Each property states one of the layer's definitions ((9)-(14) in spec/layer.py) as an identity between two
runs; most hold exactly (the two runs do the same arithmetic), the rest to a few ulps (different
matrix-product shapes). The meta-tests (test_layer_mutants.py) run the property bodies against broken specs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from contract.compare import assert_close
from spec import layer, lstm
from spec.layer import LayerConfig
from spec.cases import Case, make_case_data
from spec.params import LayerParams, LSTMParams
from tests.spec.checks import check_layer_directional_derivative, clip_margin_holds, norm_margin_holds

# Two runs of one computation whose matrix products have different shapes (a row alone, a prefix):
# BLAS may sum in another order, a few ulps (as test_properties.py's splitting and row properties).
ULPS = 1e-14


@st.composite
def layer_cases(draw, clips=True, masks=True, sequence=None):
    """Random layer cases; ``sequence`` ("none", "lengths" or "mask") fixes what rows the case has, for a property of
    lengths alone: drawing it and filtering the rest out threw away two cases in three, which hypothesis' health
    check fails at random ("filtering out a lot of inputs")."""
    T, B = draw(st.integers(1, 6), label="T"), draw(st.integers(1, 4), label="B")
    H = draw(st.integers(1, 4), label="H")
    proj = draw(st.one_of(st.none(), st.integers(1, H)), label="proj_size")
    threshold = lambda: st.one_of(st.none(), st.floats(0.05, 3.0)) if clips else st.none()
    config = LayerConfig(
        num_layers=draw(st.integers(1, 2), label="num_layers"),
        direction=draw(st.sampled_from(layer.DIRECTIONS), label="direction"),
        proj_size=proj,
        peephole=draw(st.booleans(), label="peephole"),
        forget_bias=draw(st.sampled_from([0.0, 1.0, -0.7]), label="forget_bias"),
        cell_clip=draw(threshold(), label="cell_clip"),
        gate_clip=draw(threshold(), label="gate_clip"),
        proj_clip=draw(threshold(), label="proj_clip") if proj else None,
        coupled_input_forget=draw(st.booleans(), label="coupled"),
        zero_output_for_mask=draw(st.booleans(), label="zero_output_for_mask"),
        layer_norm=draw(st.booleans(), label="layer_norm"),
        proj_bias=draw(st.booleans(), label="proj_bias") if proj else False,
    )
    lengths = mask = None
    kind = sequence or draw(st.sampled_from(["none", "lengths", "mask"] if masks else ["none"]), label="sequence")
    if kind == "lengths":
        lengths = tuple(draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths"))
    elif kind == "mask":
        rows = st.lists(st.sampled_from("01"), min_size=T, max_size=T).map("".join)
        mask = tuple(draw(st.lists(rows, min_size=B, max_size=B), label="mask"))
    return Case("hypothesis", T, B, draw(st.integers(1, 4), label="I"), H, layer=config, lengths=lengths, mask=mask,
                     seed=draw(st.integers(0, 2**32 - 1), label="seed"), weight_scale=draw(st.floats(0.5, 3.0), label="weight_scale"))


def cell_forward(params: LSTMParams, x, h0, c0, config: LayerConfig, mask=None, zero_output=None):
    """One direction of one layer, straight through spec.lstm (no layer plumbing)."""
    zero = config.zero_output_for_mask if zero_output is None else zero_output
    return lstm.forward(params, np.ascontiguousarray(x), h0, c0, mask=mask, zero_output_for_mask=zero, **config.cell_options())


def same(name, got, want, context, tol=0.0):
    if np.size(want) == 0 and np.shape(got) == np.shape(want):
        return
    assert_close(name, got, want, atol=tol, rtol=tol, context=context)


# ---------------------------------------------------------------------------
# The properties, as plain functions of a case (the meta-tests call them too).
# ---------------------------------------------------------------------------


def property_gradients(case: Case) -> None:
    data = make_case_data(case)
    assume(clip_margin_holds(data))  # finite differences must not straddle a clip's boundary
    assume(norm_margin_holds(data))  # nor a normalization's sharp bend (checks.NORM_SIGMA_MARGIN)
    check_layer_directional_derivative(data, directions=1)


def property_reverse_is_forward_on_reversed_time(case: Case) -> None:
    """(10): a reverse layer is the forward layer on R(x) (and R(mask)), its outputs reversed back."""
    case = dataclasses.replace(case, layer=dataclasses.replace(case.layer, direction="reverse"))
    data = make_case_data(case)
    reverse = data.forward()
    mask = None if reverse.mask is None else reverse.mask[::-1].copy()
    config = dataclasses.replace(case.layer, direction="forward",
                                 zero_output_for_mask=case.layer.zero_output_for_mask or case.lengths is not None)
    ahead = data.forward(x=data.x[::-1].copy(), config=config, lengths=None, mask=mask)
    context = "reverse layer vs forward layer on the reversed sequence"
    same("y", reverse.y, ahead.y[::-1], context)
    same("h_T", reverse.h_T, ahead.h_T, context)
    same("c_T", reverse.c_T, ahead.c_T, context)


def property_bidirectional_is_both_directions_side_by_side(case: Case) -> None:
    """(11): one bidirectional layer is [forward cell ; reverse cell], each with its own weights and state."""
    case = dataclasses.replace(case, layer=dataclasses.replace(case.layer, direction="bidirectional", num_layers=1))
    data = make_case_data(case)
    both = data.forward()
    mask, zero = both.mask, case.layer.zero_output_for_mask or case.lengths is not None
    f = cell_forward(data.params.cells[0], data.x, data.h0[0], data.c0[0], case.layer, mask, zero)
    r = cell_forward(data.params.cells[1], data.x[::-1], data.h0[1], data.c0[1], case.layer,
                     None if mask is None else mask[::-1], zero)
    P = case.P
    context = "bidirectional layer vs its two cells"
    same("y", both.y[:, :, :P], f.h_seq, context)
    same("y", both.y[:, :, P:], r.h_seq[::-1], context)
    same("h_T", both.h_T, np.stack([f.h_T, r.h_T]), context)
    same("c_T", both.c_T, np.stack([f.c_T, r.c_T]), context)


def property_stacking_feeds_the_layer_below(case: Case) -> None:
    """(12): layer 1 of a stack is a one-layer run on layer 0's outputs, with cells l * D + d."""
    case = dataclasses.replace(case, layer=dataclasses.replace(case.layer, num_layers=2))
    data = make_case_data(case)
    stack = data.forward()
    D, config = case.D, dataclasses.replace(case.layer, num_layers=1)
    bottom = data.forward(params=LayerParams(data.params.cells[:D], D), config=config, h0=data.h0[:D], c0=data.c0[:D])
    top = data.forward(params=LayerParams(data.params.cells[D:], D), config=config, h0=data.h0[D:], c0=data.c0[D:],
                       x=bottom.y)
    context = "two-layer stack vs two one-layer runs"
    same("y", stack.y, top.y, context)
    same("h_T", stack.h_T, np.concatenate([bottom.h_T, top.h_T]), context)
    same("c_T", stack.c_T, np.concatenate([bottom.c_T, top.c_T]), context)


def property_lengths_are_each_row_alone_on_its_prefix(case: Case) -> None:
    """(13): row b with lengths runs x[:L_b, b] alone; zero outputs after; length 0 keeps the initial state."""
    data = make_case_data(case)
    assume(data.lengths is not None)
    fwd = data.forward()
    for b, L_b in enumerate(data.lengths):
        context = f"row {b} of length {L_b} vs that row alone on its prefix"
        if L_b == 0:
            same("h_T", fwd.h_T[:, b], data.h0[:, b], context)
            same("c_T", fwd.c_T[:, b], data.c0[:, b], context)
            same("y", fwd.y[:, b], np.zeros_like(fwd.y[:, b]), context)
            continue
        alone = data.forward(x=data.x[:L_b, b : b + 1].copy(), h0=data.h0[:, b : b + 1].copy(),
                             c0=data.c0[:, b : b + 1].copy(), lengths=None, mask=None)
        same("y", fwd.y[:L_b, b], alone.y[:, 0], context, ULPS)
        same("y", fwd.y[L_b:, b], np.zeros_like(fwd.y[L_b:, b]), context)
        same("h_T", fwd.h_T[:, b], alone.h_T[:, 0], context, ULPS)
        same("c_T", fwd.c_T[:, b], alone.c_T[:, 0], context, ULPS)


def property_lengths_are_a_mask_with_zero_outputs(case: Case) -> None:
    """(13): lengths L_b are the mask t < L_b with zero outputs, forward, backward and gradients."""
    data = make_case_data(case)
    assume(data.lengths is not None)
    by_lengths = data.forward()
    config = dataclasses.replace(case.layer, zero_output_for_mask=True)
    by_mask = data.forward(lengths=None, mask=layer.mask_from_lengths(data.lengths, case.T), config=config)
    context = "lengths vs the mask t < L_b with zero outputs"
    for name in ("y", "h_T", "c_T"):
        same(name, getattr(by_lengths, name), getattr(by_mask, name), context)
    g1 = layer.backward(by_lengths, data.dy, data.dh_T, data.dc_T).tensors()
    g2 = layer.backward(by_mask, data.dy, data.dh_T, data.dc_T).tensors()
    for name in g1:
        same(f"grad {name}", g1[name], g2[name], context)


def property_all_true_mask_is_no_mask(case: Case) -> None:
    data = make_case_data(case)
    plain = data.forward(lengths=None, mask=None)
    masked = data.forward(lengths=None, mask=np.ones((case.T, case.B), bool))
    context = "an all-true mask vs no mask"
    for name in ("y", "h_T", "c_T"):
        same(name, getattr(masked, name), getattr(plain, name), context)
    g1 = layer.backward(plain, data.dy, data.dh_T, data.dc_T).tensors()
    g2 = layer.backward(masked, data.dy, data.dh_T, data.dc_T).tensors()
    for name in g1:
        same(f"grad {name}", g2[name], g1[name], context)


def property_length_zero_keeps_the_initial_state(case: Case) -> None:
    """(13): an empty row's final state is its initial state, in every layer and direction, and its outputs are zero."""
    data = make_case_data(case)
    lengths = np.full(case.B, case.T, np.int64)
    lengths[0] = 0
    fwd = data.forward(lengths=lengths, mask=None)
    context = "row 0 of length 0"
    same("h_T", fwd.h_T[:, 0], data.h0[:, 0], context)
    same("c_T", fwd.c_T[:, 0], data.c0[:, 0], context)
    same("y", fwd.y[:, 0], np.zeros_like(fwd.y[:, 0]), context)


def property_clip_above_every_value_is_no_clip(case: Case) -> None:
    """A clip whose threshold no value reaches changes nothing, forward or backward."""
    config = case.layer
    # |h| <= 1 and |a| of the gates stay below 1e3 here; |c| grows by at most 1 a step from |c_0| < 10.
    high = dict(cell_clip=1e3 if config.cell_clip else None, gate_clip=1e3 if config.gate_clip else None,
                proj_clip=1e3 if config.proj_clip else None)
    assume(any(high.values()))
    data = make_case_data(dataclasses.replace(case, layer=dataclasses.replace(config, **high)))
    clipped = data.forward()
    plain = data.forward(config=dataclasses.replace(config, cell_clip=None, gate_clip=None, proj_clip=None))
    context = "clips above every value vs no clips"
    for name in ("y", "h_T", "c_T"):
        same(name, getattr(clipped, name), getattr(plain, name), context)
    g1 = layer.backward(clipped, data.dy, data.dh_T, data.dc_T).tensors()
    g2 = layer.backward(plain, data.dy, data.dh_T, data.dc_T).tensors()
    for name in g1:
        same(f"grad {name}", g1[name], g2[name], context)


def property_identity_projection_is_no_projection(case: Case) -> None:
    """(7): with P = H and W_hr = I (and no proj_clip), the projected LSTM is the LSTM."""
    config = dataclasses.replace(case.layer, proj_size=None, proj_clip=None, proj_bias=False)
    data = make_case_data(dataclasses.replace(case, layer=config))
    H = case.H
    projected_cells = tuple(dataclasses.replace(c, W_hr=np.eye(H)) for c in data.params.cells)
    projected = data.forward(params=LayerParams(projected_cells, case.D), config=dataclasses.replace(config, proj_size=H))
    plain = data.forward()
    context = "P = H, W_hr = identity vs no projection"
    for name in ("y", "h_T", "c_T"):
        same(name, getattr(projected, name), getattr(plain, name), context)
    g1 = layer.backward(projected, data.dy, data.dh_T, data.dc_T).tensors()
    g2 = layer.backward(plain, data.dy, data.dh_T, data.dc_T).tensors()
    for name in g2:
        same(f"grad {name}", g1[name], g2[name], context)


def property_one_plain_layer_is_the_cell(case: Case) -> None:
    """The layer adds nothing to one forward layer: bit for bit spec.lstm, outputs and gradients."""
    config = dataclasses.replace(case.layer, num_layers=1, direction="forward")
    data = make_case_data(dataclasses.replace(case, layer=config))
    fwd = data.forward()
    mask = fwd.mask
    cell = cell_forward(data.params.cells[0], data.x, data.h0[0], data.c0[0], config, mask,
                        config.zero_output_for_mask or case.lengths is not None)
    context = "one forward layer vs spec.lstm"
    same("y", fwd.y, cell.h_seq, context)
    same("h_T", fwd.h_T[0], cell.h_T, context)
    g = layer.backward(fwd, data.dy, data.dh_T, data.dc_T)
    gc = lstm.backward(cell, data.dy, data.dh_T[0], data.dc_T[0])
    for name, value in gc.tensors().items():
        got = g.tensors()[name][0] if name in ("h0", "c0") else (g.x if name == "x" else g.params.cells[0].tensors()[name])
        same(f"grad {name}", got, value, context)


PROPERTIES = {
    "gradients": property_gradients,
    "reverse": property_reverse_is_forward_on_reversed_time,
    "bidirectional": property_bidirectional_is_both_directions_side_by_side,
    "stacking": property_stacking_feeds_the_layer_below,
    "lengths-rows-alone": property_lengths_are_each_row_alone_on_its_prefix,
    "lengths-are-a-mask": property_lengths_are_a_mask_with_zero_outputs,
    "all-true-mask": property_all_true_mask_is_no_mask,
    "length-zero": property_length_zero_keeps_the_initial_state,
    "clip-above-all": property_clip_above_every_value_is_no_clip,
    "identity-projection": property_identity_projection_is_no_projection,
    "one-layer-is-the-cell": property_one_plain_layer_is_the_cell,
}


@given(layer_cases())
def test_gradients_match_finite_differences(case):
    property_gradients(case)


@given(layer_cases())
def test_reverse_is_forward_on_reversed_time(case):
    property_reverse_is_forward_on_reversed_time(case)


@given(layer_cases())
def test_bidirectional_is_both_directions_side_by_side(case):
    property_bidirectional_is_both_directions_side_by_side(case)


@given(layer_cases())
def test_stacking_feeds_the_layer_below(case):
    property_stacking_feeds_the_layer_below(case)


@given(layer_cases(sequence="lengths"))
def test_lengths_are_each_row_alone_on_its_prefix(case):
    property_lengths_are_each_row_alone_on_its_prefix(case)


@given(layer_cases(sequence="lengths"))
def test_lengths_are_a_mask_with_zero_outputs(case):
    property_lengths_are_a_mask_with_zero_outputs(case)


@given(layer_cases())
def test_all_true_mask_is_no_mask(case):
    property_all_true_mask_is_no_mask(case)


@given(layer_cases())
def test_length_zero_keeps_the_initial_state(case):
    property_length_zero_keeps_the_initial_state(case)


@given(layer_cases())
def test_clip_above_every_value_is_no_clip(case):
    property_clip_above_every_value_is_no_clip(case)


@given(layer_cases())
def test_identity_projection_is_no_projection(case):
    property_identity_projection_is_no_projection(case)


@given(layer_cases())
def test_one_plain_layer_is_the_cell(case):
    property_one_plain_layer_is_the_cell(case)


@given(layer_cases(clips=False))
def test_float32_computes_in_float32_and_agrees_with_float64(case):
    d64, d32 = make_case_data(case), make_case_data(case, np.float32)
    f64, f32 = d64.forward(), d32.forward()
    g32 = layer.backward(f32, d32.dy, d32.dh_T, d32.dc_T)
    assert f32.dtype == np.float32 and f32.y.dtype == np.float32 and g32.dtype == np.float32
    assert all(t.dtype == np.float32 for t in g32.tensors().values())
    # As test_properties.py: float32 rounding through a contractive recurrence, over at most two layers.
    assert_close("y", f32.y, f64.y, atol=5e-5, rtol=5e-5, context="float32 vs float64")
