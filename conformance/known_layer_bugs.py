"""Bugs seen in real LSTM-layer code, as the spec's own layer with switches: forward and backward.

The layer's counterpart of :mod:`conformance.known_bugs`. The diagnoses use it
to ask "would this mistake reproduce the result?", and the layer mutants
(:mod:`conformance.mutants`) use it to plant the mistakes in implementations
that the suite must catch.

It is not a second LSTM. The layer's plumbing below mirrors
:func:`spec.layer.forward` and :func:`spec.layer.backward` (loops over layers
and directions) and calls the spec's own rules (``run_direction``,
``direction_backward``, ``join_directions``, ``next_layer_input``, and the
cell, :func:`spec.lstm.forward` / :func:`spec.lstm.backward`); each mistake is
one of

- the spec's cell with other options or other inputs: the clips swapped, the
  coupled gate off, outputs not zeroed, the mask left in time order for a
  reversed input, no mask for the state;
- post-processing of what the spec computed, with its transpose in the
  backward pass: outputs left in processing order, directions swapped, the
  layer above fed zeros for the reverse direction, final states reordered or
  read from the last output;
- where neither can say it (the projection in the wrong place), the minimal
  piece: a cell loop over the spec's step, carry and clip rules with another
  hidden rule (:func:`_projected_forward`).

A forward mistake's backward pass is the gradient of its own forward (what
autodiff of the buggy code gives), so that the gradients of a forward bug are
recognised as that bug, and the backward-only mistakes (:data:`BACKWARD_BUGS`)
do not fire on it. With no switch on, it is the spec, operation for operation
(tests/test_layer_diagnose.py checks bitwise equality).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spec import layer, lstm
from spec.layer import LayerConfig, reverse_time
from spec.params import LayerParams

#: Mistakes of the forward pass (each with its consistent backward): name -> what the diagnosis says
#: ("matches the spec if ...").
FORWARD_BUGS = {
    "reverse_outputs_in_processing_order":
        "the reverse direction's outputs are left in processing order (not reversed back to time order)",
    "directions_swapped": "the two directions' outputs are swapped (reverse first instead of forward first)",
    "layer_above_reads_forward_only": "the layer above is fed only the forward direction's outputs",
    "final_states_direction_major":
        "the final states are ordered direction-major (cell d * L + l) instead of layer-major (cell l * D + d)",
    "projection_before_tanh": "the projection is applied before the tanh: h = tanh(W_hr (o * c)) instead of W_hr (o * tanh(c))",
    "projection_of_c": "the projection is applied to c: h = W_hr c instead of W_hr (o * tanh(c))",
    "padded_outputs_not_zeroed": "outputs past a row's length are not zeroed (they repeat its last output)",
    "zero_output_for_mask_flipped":
        "masked steps output zero where the previous output is meant, or the other way round (zero_output_for_mask flipped)",
    "final_h_at_T_minus_1": "the final h is the output at step T - 1 instead of the state after the row's last step (L_b - 1)",
    "reverse_starts_at_T_minus_1": "the reverse direction starts at step T - 1 instead of L_b - 1 (it reads the padding first)",
    "reverse_mask_not_reversed": "the reverse direction reads the mask in time order while its input runs backwards",
    "masked_step_updates_state": "a masked step updates the state instead of carrying it",
    "clips_swapped":
        "the clips are applied to the wrong quantity (cell_clip to the gate pre-activations, gate_clip to the cell state)",
    "coupled_forget_from_forget_weights":
        "the coupled forget gate is taken from the forget weights (sigma(W_f x + U_f h + b_f) instead of 1 - i)",
}

#: Mistakes of the backward pass alone (the forward is the spec's).
BACKWARD_BUGS = {
    "reverse_dx_not_reversed":
        "the reverse direction's input gradient is left in processing order (not reversed back to time order)",
    "clip_gradient_straight_through": "the clips' gradient is 1 everywhere (clipped elements pass the gradient straight through)",
    "dh_T_ignored": "the cotangent of the final states h_T (dh_T) is ignored",
    "dc_T_ignored": "the cotangent of the final cell states c_T (dc_T) is ignored",
}

BUGS = {**FORWARD_BUGS, **BACKWARD_BUGS}


def applies(bug: str, config: LayerConfig, lengths: np.ndarray | None = None, mask: np.ndarray | None = None) -> bool:
    """Whether ``bug`` can change anything on a case with this configuration, lengths and mask."""
    reverse = config.direction != "forward"
    both = config.num_directions == 2
    stacked = config.num_layers > 1
    clipped = config.cell_clip is not None or config.gate_clip is not None
    return {
        "reverse_outputs_in_processing_order": reverse,
        "directions_swapped": both,
        "layer_above_reads_forward_only": both and stacked,
        "final_states_direction_major": both and stacked,
        "projection_before_tanh": config.proj_size is not None,
        "projection_of_c": config.proj_size is not None,
        "padded_outputs_not_zeroed": lengths is not None,
        "zero_output_for_mask_flipped": mask is not None,
        "final_h_at_T_minus_1": lengths is not None or mask is not None,
        "reverse_starts_at_T_minus_1": reverse and lengths is not None,
        "reverse_mask_not_reversed": reverse and mask is not None,
        "masked_step_updates_state": lengths is not None or mask is not None,
        "clips_swapped": clipped,
        "coupled_forget_from_forget_weights": config.coupled_input_forget,
        "reverse_dx_not_reversed": reverse,
        "clip_gradient_straight_through": clipped or config.proj_clip is not None,
        "dh_T_ignored": True,
        "dc_T_ignored": True,
    }[bug]


def _check(bugs) -> frozenset:
    bugs = frozenset(bugs)
    unknown = bugs - set(BUGS)
    if unknown:
        raise ValueError(f"unknown layer bugs {sorted(unknown)}; known: {sorted(BUGS)}")
    return bugs


# ---------------------------------------------------------------------------
# One direction of one layer: the spec's run_direction, and what the mistakes do around it
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Direction:
    """One direction of one layer as the (mistaken) layer ran it: what the backward pass needs."""

    run: object  # the cell's run in processing order: spec.lstm.Forward, or _ProjectedRun
    reverse: bool
    h_final: np.ndarray  # the final h it reports
    show: np.ndarray | None  # masked_step_updates_state: the output mask applied after a run without one (time order)


def _cell_options(config: LayerConfig, bugs: frozenset) -> dict:
    """The cell's options, as a mistaken layer passes them on."""
    options = config.cell_options()
    if "clips_swapped" in bugs:
        options.update(cell_clip=config.gate_clip, gate_clip=config.cell_clip)
    if "coupled_forget_from_forget_weights" in bugs:  # f = sigma(W_f x + U_f h + b_f ...): the uncoupled gate
        options["coupled_input_forget"] = False
    return options


def _time_order(a: np.ndarray, reverse: bool) -> np.ndarray:
    """A direction's processing order to time order and back (R is its own inverse)."""
    return reverse_time(a) if reverse else a


def _direction_forward(params, layer_input, h0, c0, mask, reverse, bugs, lengths_given, **options) -> tuple[Direction, np.ndarray]:
    """(10) with the mistakes: the direction's run and its output in time order, as the layer uses it."""
    cell_mask = mask
    mask_not_reversed = "reverse_starts_at_T_minus_1" if lengths_given else "reverse_mask_not_reversed"
    if reverse and mask is not None and mask_not_reversed in bugs:
        # run_direction reverses the mask with the input; reversed once more here, it reaches the cell in time order.
        cell_mask = reverse_time(mask)
    show = None
    if cell_mask is not None and "masked_step_updates_state" in bugs:
        # The state runs through every step; only the outputs see the mask, s_t of (8).
        processing = _time_order(cell_mask, reverse)
        show = _time_order(lstm.shown(processing, options["zero_output_for_mask"]), reverse)
        cell_mask = None
    run, output = _run_direction(params, layer_input, h0, c0, cell_mask, reverse, bugs, **options)
    if show is not None:
        output = np.where(show[:, :, None], output, 0.0)
    if reverse and "reverse_outputs_in_processing_order" in bugs:
        output = reverse_time(output)
    # The output[-1] bug: the output at the last step it processed, zero (or stale) for a row that ended earlier.
    h_final = run.h_seq[-1] if "final_h_at_T_minus_1" in bugs else run.h_T
    return Direction(run, reverse, h_final, show), output


def _direction_backward(direction: Direction, d_output, dh_T, dc_T, bugs):
    """The transpose of :func:`_direction_forward`, in reverse order, around the spec's direction_backward."""
    reverse = direction.reverse
    if reverse and "reverse_outputs_in_processing_order" in bugs:
        d_output = reverse_time(d_output)
    if direction.show is not None:
        d_output = np.where(direction.show[:, :, None], d_output, 0.0)
    if "final_h_at_T_minus_1" in bugs:
        # h_T was the output at the last processed step: its cotangent joins that step's, none reaches the state.
        d_output = d_output.copy()
        d_output[0 if reverse else -1] += dh_T
        dh_T = np.zeros_like(dh_T)
    run = direction.run
    if "clip_gradient_straight_through" in bugs:
        run = _straight_through(run)
    if isinstance(run, lstm.Forward):
        grads, dx = layer.direction_backward(run, d_output, dh_T, dc_T, reverse)
    else:
        grads, dx = _projected_direction_backward(run, d_output, dh_T, dc_T, reverse)
    if reverse and "reverse_dx_not_reversed" in bugs:
        dx = reverse_time(dx)
    return grads, dx


def _straight_through(run):
    """The run as if every clip had let every value pass: the spec's backward then takes each clip's derivative as 1."""
    clips = ("gate_passed", "cell_passed", "proj_passed")
    return replace(run, **{name: np.ones_like(getattr(run, name)) for name in clips if getattr(run, name) is not None})


# ---------------------------------------------------------------------------
# The layer: (11), (12) and the final states, with their mistakes
# ---------------------------------------------------------------------------


def _joined(outputs: list, bugs) -> np.ndarray:
    """(11): forward first; swapped, reverse first."""
    return layer.join_directions(outputs[::-1] if "directions_swapped" in bugs else outputs)


def _joined_backward(d: np.ndarray, D: int, P: int, bugs) -> list:
    """The transpose of :func:`_joined`: each direction's slice of the cotangent."""
    slices = [d] if D == 1 else [d[:, :, k * P : (k + 1) * P] for k in range(D)]
    return slices[::-1] if "directions_swapped" in bugs else slices


def _next_layer_input(outputs: list, bugs) -> np.ndarray:
    """(12): the layer above reads both directions; mistaken, zeros where the reverse direction belongs."""
    if "layer_above_reads_forward_only" in bugs and len(outputs) == 2:
        outputs = [outputs[0], np.zeros_like(outputs[1])]
    return layer.next_layer_input(outputs[::-1] if "directions_swapped" in bugs else outputs)


def _next_layer_input_backward(d: np.ndarray, D: int, P: int, bugs) -> list:
    slices = _joined_backward(d, D, P, bugs)
    if "layer_above_reads_forward_only" in bugs and D == 2:
        slices[1] = np.zeros_like(slices[1])
    return slices


def _final_order(L: int, D: int, bugs) -> list[int]:
    """Which cell's state each row of h_T, c_T holds: layer-major l * D + d, or mistaken, direction-major."""
    if "final_states_direction_major" in bugs:
        return [l * D + d for d in range(D) for l in range(L)]
    return list(range(L * D))


@dataclass(frozen=True, eq=False)
class LayerRun:
    """The outputs of :func:`forward`, and what :func:`backward` needs."""

    y: np.ndarray
    h_T: np.ndarray
    c_T: np.ndarray
    config: LayerConfig
    bugs: frozenset
    directions: tuple[Direction, ...]  # cell k = l * D + d
    num_directions: int
    output_size: int

    def outputs(self) -> dict[str, np.ndarray]:
        return {"y": self.y, "h_T": self.h_T, "c_T": self.c_T}


def forward(params: LayerParams, x, h0, c0, *, config: LayerConfig, lengths=None, mask=None, bugs=frozenset()) -> LayerRun:
    """The layer of :func:`spec.layer.forward` with the mistakes ``bugs`` (names of :data:`BUGS`), in x's dtype."""
    bugs = _check(bugs)
    dtype = x.dtype
    mask, zero_output = layer.check_inputs(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=dtype)
    if lengths is not None and "padded_outputs_not_zeroed" in bugs:
        zero_output = False  # the lengths' mask with the previous output at padded steps, Keras's default
    if lengths is None and mask is not None and "zero_output_for_mask_flipped" in bugs:
        zero_output = not zero_output
    options = dict(dtype=dtype, zero_output_for_mask=zero_output, **_cell_options(config, bugs))
    L, D = config.num_layers, config.num_directions
    directions, layer_input = [], x
    for l in range(L):
        outputs = []
        for d in range(D):
            k = l * D + d
            direction, output = _direction_forward(
                params.cells[k], layer_input, h0[k], c0[k], mask, config.reversed(d), bugs, lengths is not None, **options
            )
            directions.append(direction)
            outputs.append(output)
        if l < L - 1:
            layer_input = _next_layer_input(outputs, bugs)
    order = _final_order(L, D, bugs)
    return LayerRun(
        y=_joined(outputs, bugs),
        h_T=np.stack([directions[k].h_final for k in order]),
        c_T=np.stack([directions[k].run.c_T for k in order]),
        config=config,
        bugs=bugs,
        directions=tuple(directions),
        num_directions=D,
        output_size=params.output_size,
    )


def backward(run: LayerRun, dy, dh_T, dc_T) -> dict[str, np.ndarray]:
    """The gradients of <dy, y> + <dh_T, h_T> + <dc_T, c_T> for the mistaken layer, keyed as
    :meth:`spec.layer.LayerGradients.tensors` (x, h0, c0, 'layer l direction d W', ...)."""
    bugs, L, D, P = run.bugs, run.config.num_layers, run.num_directions, run.output_size
    if "dh_T_ignored" in bugs:
        dh_T = np.zeros_like(dh_T)
    if "dc_T_ignored" in bugs:
        dc_T = np.zeros_like(dc_T)
    # Row j of h_T is cell order[j]'s: its cotangent goes back to that cell.
    dh_cell, dc_cell = [None] * (L * D), [None] * (L * D)
    for j, k in enumerate(_final_order(L, D, bugs)):
        dh_cell[k], dc_cell[k] = dh_T[j], dc_T[j]
    grads = [None] * (L * D)
    d_joined = dy
    for l in reversed(range(L)):
        slices = _joined_backward(d_joined, D, P, bugs) if l == L - 1 else _next_layer_input_backward(d_joined, D, P, bugs)
        d_input = None
        for d in range(D):
            k = l * D + d
            grads[k], dx = _direction_backward(run.directions[k], slices[d], dh_cell[k], dc_cell[k], bugs)
            d_input = dx if d_input is None else d_input + dx  # (9): both directions read x^l
        d_joined = d_input
    params = LayerParams(tuple(g.params() for g in grads), D)
    return {"x": d_joined, "h0": np.stack([g.h0 for g in grads]), "c0": np.stack([g.c0 for g in grads]), **params.tensors()}


# ---------------------------------------------------------------------------
# The projection in the wrong place: the one mistake the spec's cell cannot be asked to make
# ---------------------------------------------------------------------------
#
# The spec's (6p), (7): m_t = o_t * tanh(c_t), h_t = clip(W_hr m_t). The mistakes:
#   projection_before_tanh:  m_t = o_t * c_t,  h_t = clip(tanh(W_hr m_t))
#   projection_of_c:         m_t = c_t,        h_t = clip(W_hr m_t)
# Everything else (the gates, the cell, clips, coupling, masks) is the spec's step, carry and clip rules.


def _run_direction(params, layer_input, h0, c0, mask, reverse, bugs, **options):
    """spec.layer.run_direction, or the same over the cell with the projection in the wrong place."""
    rule = next((bug for bug in ("projection_before_tanh", "projection_of_c") if bug in bugs), None)
    if rule is None or params.W_hr is None:
        return layer.run_direction(params, layer_input, h0, c0, mask, reverse, **options)
    processing_mask = None if mask is None else _time_order(mask, reverse)
    run = _projected_forward(rule, params, _time_order(layer_input, reverse), h0, c0, mask=processing_mask, **options)
    return run, _time_order(run.h_seq, reverse)


@dataclass(frozen=True, eq=False)
class _ProjectedRun:
    """What :func:`_projected_backward` needs: spec.lstm.Forward's fields, m_t being the mistaken one."""

    rule: str
    params: object
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    options: lstm.Options
    forget_bias: float
    h_seq: np.ndarray  # the outputs y_t (T, B, P)
    h_T: np.ndarray
    c_T: np.ndarray
    gates: np.ndarray  # (4, T, B, H)
    c_seq: np.ndarray  # the state c_t (carried where masked)
    tanh_c_seq: np.ndarray
    h_state_seq: np.ndarray  # the state h_t
    m_seq: np.ndarray  # what W_hr multiplies
    tanh_a_seq: np.ndarray | None  # tanh(W_hr m_t) before the clip (projection_before_tanh)
    mask: np.ndarray | None
    show: np.ndarray | None
    gate_passed: np.ndarray | None
    cell_passed: np.ndarray | None
    proj_passed: np.ndarray | None

    def proj_clip(self, t: int):
        return None if self.options.proj_clip is None else lstm.Clip(self.options.proj_clip, self.proj_passed[t])


def _projected_forward(rule, params, x, h0, c0, *, mask, dtype, forget_bias, gate_clip, cell_clip, proj_clip,
                       coupled_input_forget, zero_output_for_mask) -> _ProjectedRun:
    """spec.lstm.forward's loop with the mistaken hidden rule (the comment above)."""
    options = lstm.Options(gate_clip, cell_clip, proj_clip, coupled_input_forget, zero_output_for_mask)
    T, B, _ = x.shape
    H, P = params.hidden_size, params.output_size
    gates = np.empty((4, T, B, H), dtype)
    np.add(np.einsum("tbi,ghi->gtbh", x, params.W), params.b[:, None, None, :], out=gates)
    c_seq, tanh_c_seq, m_seq = (np.empty((T, B, H), dtype) for _ in range(3))
    h_seq = np.empty((T, B, P), dtype)
    tanh_a_seq = np.empty((T, B, P), dtype) if rule == "projection_before_tanh" else None
    spec_m = np.empty((B, H), dtype)  # the spec's m_t, which step() computes and this cell does not use
    gate_passed = None if gate_clip is None else np.ones((4, T, B, H), bool)
    cell_passed = None if cell_clip is None else np.empty((T, B, H), bool)
    proj_passed = None if proj_clip is None else np.empty((T, B, P), bool)
    h, c = h0, c0
    for t in range(T):
        z = gates[:, t]
        z += np.einsum("ghp,bp->gbh", params.U, h)
        lstm.step(z, c, params.p, forget_bias, c_seq[t], tanh_c_seq[t], spec_m,
                  lstm.step_features_of(options, gate_passed, cell_passed, t))
        m_seq[t] = gates[3, t] * c_seq[t] if rule == "projection_before_tanh" else c_seq[t]
        a = m_seq[t] @ params.W_hr.T
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
    return _ProjectedRun(rule, params, x, h0, c0, options, forget_bias, y, h_seq[-1].copy(), c_seq[-1].copy(), gates, c_seq,
                         tanh_c_seq, h_seq, m_seq, tanh_a_seq, mask, show, gate_passed, cell_passed, proj_passed)


def _projected_backward(run: _ProjectedRun, dh_seq, dh_T, dc_T) -> lstm.Gradients:
    """spec.lstm.backward's loop for :func:`_projected_forward`."""
    params = run.params
    T, B, P = run.h_seq.shape
    H = run.c_seq.shape[2]
    dz_seq = np.empty((T, B, 4, H), run.x.dtype)
    da_seq = np.empty((T, B, P), run.x.dtype)  # cotangents of W_hr m_t
    dp = None if params.p is None else np.zeros((3, H), run.x.dtype)
    if run.mask is not None:
        dh_seq = np.where(run.show[:, :, None], dh_seq, 0.0)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(T)):
        c_prev = run.c_seq[t - 1] if t > 0 else run.c0
        c = run.c_seq[t]
        dh, dc = dh_seq[t] + dh_next, dc_next
        if run.mask is not None:
            dh, dh_carried = lstm.carry_backward(run.mask[t], dh)
            dc, dc_carried = lstm.carry_backward(run.mask[t], dc)
        if run.tanh_a_seq is not None:  # tanh's derivative; elementwise, it commutes with the clip's
            dh = dh * (1.0 - run.tanh_a_seq[t] ** 2)
        dm, da_seq[t] = lstm.project_backward(dh, params.W_hr, run.proj_clip(t))
        features = lstm.step_features_of(run.options, run.gate_passed, run.cell_passed, t)
        if run.rule == "projection_before_tanh":
            # step_backward differentiates m = o * tanh(c) from tanh(c); handed c in its place, it differentiates
            # m = o * c, but for tanh's derivative 1 - tanh^2 on the cell's share (dm * o * (1 - c^2)): adding the
            # missing dm * o * c^2 to dc makes that derivative 1.
            o = run.gates[3, t]
            dc_next, dp_t = lstm.step_backward(dm, dc + dm * o * c * c, run.gates[:, t], c_prev, c, c, params.p, dz_seq[t],
                                               features)
        else:
            # m = c: nothing reaches o through m, and c receives dm directly.
            dc_next, dp_t = lstm.step_backward(np.zeros_like(dm), dc + dm, run.gates[:, t], c_prev, c, run.tanh_c_seq[t],
                                               params.p, dz_seq[t], features)
        if dp is not None:
            dp += dp_t
        dh_next = dz_seq[t].reshape(B, 4 * H) @ params.U.reshape(4 * H, P)
        if run.mask is not None:
            dh_next += dh_carried
            dc_next = dc_next + dc_carried
    dz_all = dz_seq.reshape(T * B, 4 * H)
    I = params.input_size
    h_prev_all = np.concatenate([run.h0[None], run.h_state_seq[:-1]]).reshape(T * B, P)
    return lstm.Gradients(
        x=(dz_all @ params.W.reshape(4 * H, I)).reshape(T, B, I),
        h0=dh_next,
        c0=dc_next,
        W=(dz_all.T @ run.x.reshape(T * B, I)).reshape(4, H, I),
        U=(dz_all.T @ h_prev_all).reshape(4, H, P),
        b=dz_all.sum(axis=0).reshape(4, H),
        p=dp,
        dtype=run.x.dtype,
        W_hr=da_seq.reshape(T * B, P).T @ run.m_seq.reshape(T * B, H),
    )


def _projected_direction_backward(run: _ProjectedRun, d_y, dh_T, dc_T, reverse):
    """spec.layer.direction_backward for a :class:`_ProjectedRun`."""
    grads = _projected_backward(run, _time_order(d_y, reverse), dh_T, dc_T)
    return grads, _time_order(grads.x, reverse)
