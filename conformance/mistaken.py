"""The LSTM with mistakes: the spec's layer with the catalogue's mistakes switched on, forward and backward.

The diagnoses use it to ask "would this mistake reproduce the answer?" (conformance/diagnose.py), and the
mutants (conformance/mutants.py) use it to make implementations with a mistake, which the suite must catch.
:func:`forward` takes the names of mistakes of :mod:`conformance.mistakes` that have a model: a
:class:`~conformance.mistakes.Misread` is the spec on the parameters or the configuration read wrongly; a
:data:`~conformance.mistakes.SWITCH` is a switch here, under the mistake's name.

It is not a second LSTM. The plumbing below mirrors :func:`spec.layer.forward` and :func:`spec.layer.backward`
(loops over layers and directions) and calls the spec's own rules (``run_direction``, ``direction_backward``,
``join_directions``, ``next_layer_input``, and the cell, :func:`spec.lstm.forward` / :func:`spec.lstm.backward`);
each switch is one of

- the spec's cell with other options or other inputs: the clips swapped, the coupled gate off, outputs not
  zeroed, the mask left in time order for a reversed input, no mask for the state;
- post-processing of what the spec computed, with its transpose in the backward pass: outputs left in
  processing order, directions swapped, the layer above fed zeros for the reverse direction, final states
  reordered or read from the last output, cotangents dropped, two gates' bias gradients exchanged;
- where neither can say it (a mistake inside the cell's step: the output gate peeking at c_{t-1}, h without its
  tanh, the projection in the wrong place; the cell-state gradient missing a path, the backward loop one step
  short), the minimal piece: the cell's loop over the spec's step rules with the mistake (:func:`_cell_forward`,
  :func:`_cell_backward`), used only for a cell the mistake can change.

A forward mistake's backward pass is the gradient of its own forward (what autodiff of the mistaken code gives),
so that the gradients of a forward mistake are recognised as that mistake, and the backward mistakes do not fire
on them. With no mistake on, it is the spec, operation for operation (tests/test_diagnose.py checks bitwise
equality). Everything is computed in x's dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from conformance import mistakes as catalogue
from conformance.mistakes import SWITCH, Misread
from contract.answers import Gradients, Outputs
from spec import layer, lstm
from spec.layer import LayerConfig, reverse_time
from spec.params import LayerParams


def _switch(name: str) -> str:
    """A switch's name, checked against the catalogue when this module is imported (a typo cannot hide)."""
    if catalogue.named(name).model is not SWITCH:
        raise ValueError(f"{name} is not a switch of the mistaken LSTM in the catalogue")
    return name


# The cell's switches (inside its loop), forward and backward.
O_PEEKS_C_PREV = _switch("o-peeks-c_prev")
H_WITHOUT_TANH = _switch("h-without-tanh")
PROJECTION_BEFORE_TANH = _switch("projection-before-tanh")
PROJECTION_OF_C = _switch("projection-of-c")
PEEPHOLES_DROPPED_FROM_DC = _switch("peepholes-dropped-from-dc")
DC_IGNORES_DOWNSTREAM = _switch("dc-ignores-downstream")
LAST_STEP_MISSING = _switch("last-step-missing-from-gradient")
# The layer's switches.
REVERSE_OUTPUTS_IN_PROCESSING_ORDER = _switch("reverse-outputs-in-processing-order")
DIRECTIONS_SWAPPED = _switch("directions-swapped")
LAYER_ABOVE_READS_FORWARD_ONLY = _switch("layer-above-reads-forward-only")
FINAL_STATES_DIRECTION_MAJOR = _switch("final-states-direction-major")
PADDED_OUTPUTS_NOT_ZEROED = _switch("padded-outputs-not-zeroed")
ZERO_OUTPUT_FOR_MASK_FLIPPED = _switch("zero-output-for-mask-flipped")
FINAL_H_AT_T_1 = _switch("final-h-at-T-1")
REVERSE_STARTS_AT_T_1 = _switch("reverse-starts-at-T-1")
REVERSE_MASK_NOT_REVERSED = _switch("reverse-mask-not-reversed")
MASKED_STEP_UPDATES_STATE = _switch("masked-step-updates-state")
CLIPS_SWAPPED = _switch("clips-swapped")
COUPLED_FORGET_FROM_FORGET_WEIGHTS = _switch("coupled-forget-from-forget-weights")
REVERSE_DX_NOT_REVERSED = _switch("reverse-dx-not-reversed")
CLIP_GRADIENT_STRAIGHT_THROUGH = _switch("clip-gradient-straight-through")
BIAS_GRADIENT_WRONG_GATE = _switch("bias-gradient-wrong-gate")
DC_T_IGNORED = _switch("dc-T-ignored")
DH_T_IGNORED = _switch("dh-T-ignored")
DY_AT_T_1_IGNORED = _switch("dy-at-T-1-ignored")

#: The switches inside the cell's step (forward) and inside its backward loop: the cell's loop runs them.
CELL_FORWARD = frozenset({O_PEEKS_C_PREV, H_WITHOUT_TANH, PROJECTION_BEFORE_TANH, PROJECTION_OF_C})
CELL_BACKWARD = frozenset({PEEPHOLES_DROPPED_FROM_DC, DC_IGNORES_DOWNSTREAM, LAST_STEP_MISSING})


def _in_cell(switches: frozenset, params) -> frozenset:
    """The cell's switches that can change this cell: the peephole ones need its p, the projection ones its W_hr.
    A cell none of them changes is the spec's own (and so bitwise the spec)."""
    inert = set()
    if params.p is None:
        inert |= {O_PEEKS_C_PREV, PEEPHOLES_DROPPED_FROM_DC}
    if params.W_hr is None:
        inert |= {PROJECTION_BEFORE_TANH, PROJECTION_OF_C}
    return (switches & (CELL_FORWARD | CELL_BACKWARD)) - inert


# ---------------------------------------------------------------------------
# One direction of one layer: the spec's run_direction, and what the mistakes do around it
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Direction:
    """One direction of one layer as the (mistaken) layer ran it: what the backward pass needs."""

    run: lstm.Forward  # the cell's run in processing order (a _CellRun where the cell's loop ran it)
    reverse: bool
    h_final: np.ndarray  # the final h it reports
    show: np.ndarray | None  # masked-step-updates-state: the output mask applied after a run without one (time order)


def _cell_options(config: LayerConfig, switches: frozenset) -> dict:
    """The cell's options, as a mistaken layer passes them on."""
    options = config.cell_options()
    if CLIPS_SWAPPED in switches:
        options.update(cell_clip=config.gate_clip, gate_clip=config.cell_clip)
    if COUPLED_FORGET_FROM_FORGET_WEIGHTS in switches:  # f = sigma(W_f x + U_f h + b_f ...): the uncoupled gate
        options["coupled_input_forget"] = False
    return options


def _time_order(a: np.ndarray, reverse: bool) -> np.ndarray:
    """A direction's processing order to time order and back (R is its own inverse)."""
    return reverse_time(a) if reverse else a


def _direction_forward(params, layer_input, h0, c0, mask, reverse, switches, lengths_given, **options) -> tuple[Direction, np.ndarray]:
    """(10) with the mistakes: the direction's run and its output in time order, as the layer uses it."""
    cell_mask = mask
    mask_not_reversed = REVERSE_STARTS_AT_T_1 if lengths_given else REVERSE_MASK_NOT_REVERSED
    if reverse and mask is not None and mask_not_reversed in switches:
        # run_direction reverses the mask with the input; reversed once more here, it reaches the cell in time order.
        cell_mask = reverse_time(mask)
    show = None
    if cell_mask is not None and MASKED_STEP_UPDATES_STATE in switches:
        # The state runs through every step; only the outputs see the mask, s_t of (8).
        processing = _time_order(cell_mask, reverse)
        show = _time_order(lstm.shown(processing, options["zero_output_for_mask"]), reverse)
        cell_mask = None
    run, output = _run_direction(params, layer_input, h0, c0, cell_mask, reverse, switches, **options)
    if show is not None:
        output = np.where(show[:, :, None], output, 0.0)
    if reverse and REVERSE_OUTPUTS_IN_PROCESSING_ORDER in switches:
        output = reverse_time(output)
    # The output[-1] mistake: the output at the last step it processed, zero (or stale) for a row that ended earlier.
    h_final = run.h_seq[-1] if FINAL_H_AT_T_1 in switches else run.h_T
    return Direction(run, reverse, h_final, show), output


def _run_direction(params, layer_input, h0, c0, mask, reverse, switches, **options):
    """spec.layer.run_direction, or the same over the cell's loop where a switch of the cell's step changes the cell."""
    forward_switches = _in_cell(switches, params) & CELL_FORWARD
    if not forward_switches:
        return layer.run_direction(params, layer_input, h0, c0, mask, reverse, **options)
    run = _cell_forward(params, _time_order(layer_input, reverse), h0, c0, mask=None if mask is None else _time_order(mask, reverse),
                        switches=forward_switches, **options)
    return run, _time_order(run.h_seq, reverse)


def _direction_backward(direction: Direction, d_output, dh_T, dc_T, switches):
    """The transpose of :func:`_direction_forward`, in reverse order, around the spec's direction_backward."""
    reverse = direction.reverse
    if reverse and REVERSE_OUTPUTS_IN_PROCESSING_ORDER in switches:
        d_output = reverse_time(d_output)
    if direction.show is not None:
        d_output = np.where(direction.show[:, :, None], d_output, 0.0)
    if FINAL_H_AT_T_1 in switches:
        # h_T was the output at the last processed step: its cotangent joins that step's, none reaches the state.
        d_output = d_output.copy()
        d_output[0 if reverse else -1] += dh_T
        dh_T = np.zeros_like(dh_T)
    run = direction.run
    if CLIP_GRADIENT_STRAIGHT_THROUGH in switches:
        run = _straight_through(run)
    cell_switches = _in_cell(switches, run.params)
    if cell_switches:
        grads = _cell_backward(run, _time_order(d_output, reverse), dh_T, dc_T, cell_switches)
        dx = _time_order(grads.x, reverse)
    else:
        grads, dx = layer.direction_backward(run, d_output, dh_T, dc_T, reverse)
    if reverse and REVERSE_DX_NOT_REVERSED in switches:
        dx = reverse_time(dx)
    return grads, dx


def _straight_through(run):
    """The run as if every clip had let every value pass: the spec's backward then takes each clip's derivative as 1."""
    clips = ("gate_passed", "cell_passed", "proj_passed")
    return replace(run, **{name: np.ones_like(getattr(run, name)) for name in clips if getattr(run, name) is not None})


# ---------------------------------------------------------------------------
# The layer: (11), (12) and the final states, with their mistakes
# ---------------------------------------------------------------------------


def _joined(outputs: list, switches) -> np.ndarray:
    """(11): forward first; swapped, reverse first."""
    return layer.join_directions(outputs[::-1] if DIRECTIONS_SWAPPED in switches else outputs)


def _joined_backward(d: np.ndarray, D: int, P: int, switches) -> list:
    """The transpose of :func:`_joined`: each direction's slice of the cotangent."""
    slices = [d] if D == 1 else [d[:, :, k * P : (k + 1) * P] for k in range(D)]
    return slices[::-1] if DIRECTIONS_SWAPPED in switches else slices


def _next_layer_input(outputs: list, switches) -> np.ndarray:
    """(12): the layer above reads both directions; mistaken, zeros where the reverse direction belongs."""
    if LAYER_ABOVE_READS_FORWARD_ONLY in switches and len(outputs) == 2:
        outputs = [outputs[0], np.zeros_like(outputs[1])]
    return layer.next_layer_input(outputs[::-1] if DIRECTIONS_SWAPPED in switches else outputs)


def _next_layer_input_backward(d: np.ndarray, D: int, P: int, switches) -> list:
    slices = _joined_backward(d, D, P, switches)
    if LAYER_ABOVE_READS_FORWARD_ONLY in switches and D == 2:
        slices[1] = np.zeros_like(slices[1])
    return slices


def _final_order(L: int, D: int, switches) -> list[int]:
    """Which cell's state each row of h_T, c_T holds: layer-major l * D + d, or mistaken, direction-major."""
    if FINAL_STATES_DIRECTION_MAJOR in switches:
        return [l * D + d for d in range(D) for l in range(L)]
    return list(range(L * D))


@dataclass(frozen=True, eq=False)
class Run:
    """The outputs of :func:`forward`, and what :func:`backward` needs."""

    y: np.ndarray
    h_T: np.ndarray
    c_T: np.ndarray
    config: LayerConfig  # as the mistaken layer read it
    switches: frozenset
    directions: tuple[Direction, ...]  # cell k = l * D + d
    num_directions: int
    output_size: int

    def outputs(self) -> Outputs:
        return Outputs(self.y, self.h_T, self.c_T)


def _resolve(names: Iterable[str]) -> tuple[list[Misread], frozenset]:
    """The misreadings and the switches that ``names`` (mistakes of the catalogue with a model) stand for."""
    misreads, switches = [], set()
    for name in names:
        try:
            mistake = catalogue.named(name)
        except KeyError as error:
            raise ValueError(f"unknown mistake {name!r}: {error.args[0]}") from None
        if mistake.model is None:
            raise ValueError(f"mistake {name!r} has no model (it is planted into the spec only)")
        if isinstance(mistake.model, Misread):
            misreads.append(mistake.model)
        else:
            switches.add(name)
    return misreads, frozenset(switches)


def forward(params: LayerParams, x, h0, c0, *, layer: LayerConfig, lengths=None, mask=None, mistakes: Iterable[str] = ()) -> Run:
    """The layer of :func:`spec.layer.forward` with the ``mistakes`` (names in the catalogue), in x's dtype."""
    misreads, switches = _resolve(mistakes)
    config = layer
    for misread in misreads:
        params = LayerParams(tuple(misread.cell(cell) for cell in params.cells), params.num_directions)
        config = misread.layer(config)
    return _layer_forward(params, x, h0, c0, config, lengths, mask, switches)


def _layer_forward(params, x, h0, c0, config, lengths, mask, switches) -> Run:
    dtype = x.dtype
    mask, zero_output = layer.check_inputs(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=dtype)
    if lengths is not None and PADDED_OUTPUTS_NOT_ZEROED in switches:
        zero_output = False  # the lengths' mask with the previous output at padded steps, Keras's default
    if lengths is None and mask is not None and ZERO_OUTPUT_FOR_MASK_FLIPPED in switches:
        zero_output = not zero_output
    options = dict(dtype=dtype, zero_output_for_mask=zero_output, **_cell_options(config, switches))
    L, D = config.num_layers, config.num_directions
    directions, layer_input = [], x
    for l in range(L):
        outputs = []
        for d in range(D):
            k = l * D + d
            direction, output = _direction_forward(
                params.cells[k], layer_input, h0[k], c0[k], mask, config.reversed(d), switches, lengths is not None, **options
            )
            directions.append(direction)
            outputs.append(output)
        if l < L - 1:
            layer_input = _next_layer_input(outputs, switches)
    order = _final_order(L, D, switches)
    return Run(
        y=_joined(outputs, switches),
        h_T=np.stack([directions[k].h_final for k in order]),
        c_T=np.stack([directions[k].run.c_T for k in order]),
        config=config,
        switches=switches,
        directions=tuple(directions),
        num_directions=D,
        output_size=params.output_size,
    )


def backward(run: Run, dy, dh_T, dc_T) -> Gradients:
    """The gradients of <dy, y> + <dh_T, h_T> + <dc_T, c_T> for the mistaken layer (for a misreading: those of the
    parameters as it used them)."""
    switches, L, D, P = run.switches, run.config.num_layers, run.num_directions, run.output_size
    if DH_T_IGNORED in switches:
        dh_T = np.zeros_like(dh_T)
    if DC_T_IGNORED in switches:
        dc_T = np.zeros_like(dc_T)
    if DY_AT_T_1_IGNORED in switches:
        dy = dy.copy()
        dy[-1] = 0.0
    # Row j of h_T is cell order[j]'s: its cotangent goes back to that cell.
    dh_cell, dc_cell = [None] * (L * D), [None] * (L * D)
    for j, k in enumerate(_final_order(L, D, switches)):
        dh_cell[k], dc_cell[k] = dh_T[j], dc_T[j]
    grads = [None] * (L * D)
    d_joined = dy
    for l in reversed(range(L)):
        slices = _joined_backward(d_joined, D, P, switches) if l == L - 1 else _next_layer_input_backward(d_joined, D, P, switches)
        d_input = None
        for d in range(D):
            k = l * D + d
            grads[k], dx = _direction_backward(run.directions[k], slices[d], dh_cell[k], dc_cell[k], switches)
            d_input = dx if d_input is None else d_input + dx  # (9): both directions read x^l
        d_joined = d_input
    cells = [g.params() for g in grads]
    if BIAS_GRADIENT_WRONG_GATE in switches:  # each cell's b gradient with the blocks of f and g written to each other
        cells = [replace(cell, b=cell.b[[0, 2, 1, 3]]) for cell in cells]
    return Gradients(d_joined, np.stack([g.h0 for g in grads]), np.stack([g.c0 for g in grads]), LayerParams(tuple(cells), D))


# ---------------------------------------------------------------------------
# The cell's loop: the spec's step rules, with the mistakes inside the step
# ---------------------------------------------------------------------------
#
# The spec's (5), (6p), (7): o_t = sigma(z_o + p_o * c_t), m_t = o_t * tanh(c_t), h_t = clip(W_hr m_t). The mistakes:
#   o-peeks-c_prev:          o_t = sigma(z_o + p_o * c_{t-1})
#   h-without-tanh:          m_t = o_t * c_t
#   projection-before-tanh:  m_t = o_t * c_t,  h_t = clip(tanh(W_hr m_t))
#   projection-of-c:         m_t = c_t,        h_t = clip(W_hr m_t)
# and in the backward pass, the peephole paths left out of dc, the dc from step t+1 ignored, the loop one step short.
# Everything else (the gates, the cell, clips, coupling, masks) is the spec's step, carry and clip rules.


@dataclass(frozen=True, eq=False)
class _CellRun(lstm.Forward):
    """spec.lstm.Forward's fields, with the cell's mistakes in them: tanh_c_seq holds what multiplies o (c itself
    where the tanh is missing), m_seq the mistaken m_t; and tanh(W_hr m_t) before the clip (projection-before-tanh)."""

    tanh_a_seq: np.ndarray | None = None


def _cell_forward(params, x, h0, c0, *, mask, switches, dtype, forget_bias, gate_clip, cell_clip, proj_clip,
                  coupled_input_forget, zero_output_for_mask) -> _CellRun:
    """spec.lstm.forward's loop with the mistakes of the cell's step (the comment above)."""
    options = lstm.Options(gate_clip, cell_clip, proj_clip, coupled_input_forget, zero_output_for_mask)
    T, B, _ = x.shape
    H, P = params.hidden_size, params.output_size
    gates = np.empty((4, T, B, H), dtype)
    layer_norm = params.ln is not None  # (1n): b is the shift after the normalization
    np.add(np.einsum("tbi,ghi->gtbh", x, params.W), 0.0 if layer_norm else params.b[:, None, None, :], out=gates)
    ln_n = np.zeros((4, T, B, H), dtype) if layer_norm else None
    ln_rstd = np.zeros((4, T, B), dtype) if layer_norm else None
    c_seq, squashed_seq = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    h_seq = np.empty((T, B, P), dtype)
    m_seq = None if params.W_hr is None else np.empty((T, B, H), dtype)
    tanh_a_seq = np.empty((T, B, P), dtype) if PROJECTION_BEFORE_TANH in switches else None
    gate_passed = None if gate_clip is None else np.ones((4, T, B, H), bool)
    cell_passed = None if cell_clip is None else np.empty((T, B, H), bool)
    proj_passed = None if proj_clip is None else np.empty((T, B, P), bool)
    h, c = h0, c0
    for t in range(T):
        z = gates[:, t]
        z += np.einsum("ghp,bp->gbh", params.U, h)
        features = lstm.step_features_of(options, gate_passed, cell_passed, t, params, ln_n, ln_rstd)
        _step(z, c, params.p, forget_bias, c_seq[t], squashed_seq[t], h_seq[t] if m_seq is None else m_seq[t], features,
              switches)
        if m_seq is not None:  # (7)
            a = m_seq[t] @ params.W_hr.T
            if params.b_hr is not None:  # (7b)
                a += params.b_hr
            if tanh_a_seq is not None:
                a = tanh_a_seq[t] = np.tanh(a)
            h_seq[t] = a
            if proj_clip is not None:
                lstm.Clip(proj_clip, proj_passed[t])(h_seq[t])
        if mask is not None:  # (8)
            lstm.carry(mask[t], h, out=h_seq[t])
            lstm.carry(mask[t], c, out=c_seq[t])
        h, c = h_seq[t], c_seq[t]
    y, show = h_seq, None
    if mask is not None:
        show = lstm.shown(mask, zero_output_for_mask)
        y = np.where(show[:, :, None], h_seq, 0.0)
    return _CellRun(h_seq=y, h_T=h_seq[-1].copy(), c_T=c_seq[-1].copy(), dtype=np.dtype(dtype), params=params,
                    forget_bias=forget_bias, x=x, h0=h0, c0=c0, gates=gates, c_seq=c_seq, tanh_c_seq=squashed_seq,
                    options=options, h_state_seq=h_seq, m_seq=m_seq, mask=mask, show=show, gate_passed=gate_passed,
                    cell_passed=cell_passed, proj_passed=proj_passed, ln_n=ln_n, ln_rstd=ln_rstd, tanh_a_seq=tanh_a_seq)


def _step(z, c_prev, p, forget_bias, c, squashed, m, features, switches):
    """spec.lstm.step with the cell's mistakes: fills c, what multiplies o (``squashed``) and m."""
    p_i, p_f, p_o = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, clip_o = features.gate_clips
    norm_i, norm_f, norm_g, norm_o = features.norms
    i = lstm.peeking_gate(z[0], p_i, c_prev, 0.0, clip_i, norm_i)  # (1)
    if features.coupled_input_forget:
        f = lstm.coupled_forget_gate(i, out=z[1])  # (2c)
    else:
        f = lstm.peeking_gate(z[1], p_f, c_prev, forget_bias, clip_f, norm_f)  # (2)
    g = lstm.candidate(z[2], clip_g, norm_g)  # (3)
    lstm.cell(f, c_prev, i, g, out=c, clip=features.cell_clip)  # (4)
    o = lstm.output_gate(z[3], p_o, c_prev if O_PEEKS_C_PREV in switches else c, clip_o, norm_o)  # (5)
    if switches & {H_WITHOUT_TANH, PROJECTION_BEFORE_TANH}:
        np.copyto(squashed, c)
    else:
        np.tanh(c, out=squashed)
    if PROJECTION_OF_C in switches:
        np.copyto(m, c)
    else:
        np.multiply(o, squashed, out=m)  # (6)


def _clip_backward(clip, d):
    return d if clip is None else clip.backward(d)


def _step_backward(dm, dc, gates, c_prev, c, squashed, p, dz, features, switches):
    """spec.lstm.step_backward for :func:`_step`, with the backward pass's own mistakes."""
    i, f, g, o = gates
    p_i, p_f, p_o = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, clip_o = features.gate_clips
    norm_i, norm_f, norm_g, norm_o = features.norms
    if PROJECTION_OF_C in switches:  # m = c: nothing reaches o through m
        do, dc_through_m = np.zeros_like(dm), dm
    elif switches & {H_WITHOUT_TANH, PROJECTION_BEFORE_TANH}:  # m = o * c
        do, dc_through_m = dm * c, dm * o
    else:
        do, dc_through_m = lstm.hidden_backward(dm, o, squashed)  # (6)
    do = _clip_backward(clip_o, do)  # (5g)
    peeks_back = O_PEEKS_C_PREV in switches
    dz_o, dc_through_p_o, dp_o = lstm.output_gate_backward(do, o, p_o, c_prev if peeks_back else c, norm_o)  # (5)
    if PEEPHOLES_DROPPED_FROM_DC in switches:
        dc_through_p_o = 0.0
    if DC_IGNORES_DOWNSTREAM in switches:
        dc = np.zeros_like(dc)
    dc = dc + dc_through_m + (0.0 if peeks_back else dc_through_p_o)
    dc = _clip_backward(features.cell_clip, dc)  # (4c)
    df, dc_prev, di, dg = lstm.cell_backward(dc, f, c_prev, i, g)  # (4)
    dg = _clip_backward(clip_g, dg)  # (3g)
    dz_g = lstm.candidate_backward(dg, g, norm_g)  # (3)
    if features.coupled_input_forget:
        di = lstm.coupled_forget_gate_backward(df, di)  # (2c)
        dz_f, dc_through_p_f, dp_f = 0.0, 0.0, None if p is None else np.zeros_like(dp_o)
    else:
        df = _clip_backward(clip_f, df)  # (2g)
        dz_f, dc_through_p_f, dp_f = lstm.peeking_gate_backward(df, f, p_f, c_prev, norm_f)  # (2)
    di = _clip_backward(clip_i, di)  # (1g)
    dz_i, dc_through_p_i, dp_i = lstm.peeking_gate_backward(di, i, p_i, c_prev, norm_i)  # (1)
    if PEEPHOLES_DROPPED_FROM_DC in switches:
        dc_through_p_i = dc_through_p_f = 0.0
    dc_prev = dc_prev + dc_through_p_i + dc_through_p_f + (dc_through_p_o if peeks_back else 0.0)
    dz[:, 0], dz[:, 1], dz[:, 2], dz[:, 3] = dz_i, dz_f, dz_g, dz_o
    return dc_prev, None if p is None else np.stack([dp_i, dp_f, dp_o])


def _cell_backward(run: lstm.Forward, dh_seq, dh_T, dc_T, switches) -> lstm.Gradients:
    """spec.lstm.backward's loop with the cell's mistakes, over the spec's run or a :class:`_CellRun`."""
    params = run.params
    T, B, P = run.h_seq.shape
    H = run.c_seq.shape[2]
    dtype = run.x.dtype
    dz_seq = np.zeros((T, B, 4, H), dtype)  # a step the loop leaves out keeps zeros
    da_seq = None if params.W_hr is None else np.zeros((T, B, P), dtype)  # cotangents of W_hr m_t
    dp = None if params.p is None else np.zeros((3, H), dtype)
    dz_norm_seq = None if params.ln is None else np.zeros((T, B, 4, H), dtype)  # (1n): cotangents of z_k
    tanh_a_seq = getattr(run, "tanh_a_seq", None)
    if run.mask is not None:
        dh_seq = np.where(run.show[:, :, None], dh_seq, 0.0)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(T - 1 if LAST_STEP_MISSING in switches else T)):
        c_prev = run.c_seq[t - 1] if t > 0 else run.c0
        dh, dc = dh_seq[t] + dh_next, dc_next
        if run.mask is not None:
            dh, dh_carried = lstm.carry_backward(run.mask[t], dh)
            dc, dc_carried = lstm.carry_backward(run.mask[t], dc)
        if tanh_a_seq is not None:  # tanh's derivative; elementwise, it commutes with the clip's
            dh = dh * (1.0 - tanh_a_seq[t] ** 2)
        if da_seq is not None:
            dh, da_seq[t] = lstm.project_backward(dh, params.W_hr, run.proj_clip(t))
        dc_next, dp_t = _step_backward(dh, dc, run.gates[:, t], c_prev, run.c_seq[t], run.tanh_c_seq[t], params.p,
                                       dz_seq[t], run.step_features(t, None if dz_norm_seq is None else dz_norm_seq[t]),
                                       switches)
        if dp is not None:
            dp += dp_t
        dh_next = dz_seq[t].reshape(B, 4 * H) @ params.U.reshape(4 * H, P)
        if run.mask is not None:
            dh_next += dh_carried
            dc_next = dc_next + dc_carried
    dz_all = dz_seq.reshape(T * B, 4 * H)
    I = params.input_size
    h_prev_all = np.concatenate([run.h0[None], run.h_state_seq[:-1]]).reshape(T * B, P)
    db, dln = dz_all.sum(axis=0).reshape(4, H), None
    if dz_norm_seq is not None:  # (1n)
        db, dln = lstm.norm_gradients(dz_norm_seq, run.ln_n)
    return lstm.Gradients(
        x=(dz_all @ params.W.reshape(4 * H, I)).reshape(T, B, I),
        h0=dh_next,
        c0=dc_next,
        W=(dz_all.T @ run.x.reshape(T * B, I)).reshape(4, H, I),
        U=(dz_all.T @ h_prev_all).reshape(4, H, P),
        b=db,
        p=dp,
        dtype=dtype,
        W_hr=None if da_seq is None else da_seq.reshape(T * B, P).T @ run.m_seq.reshape(T * B, H),
        ln=dln,
        b_hr=None if params.b_hr is None else da_seq.reshape(T * B, P).sum(axis=0),
    )


__all__ = ["Direction", "Run", "backward", "forward"]
