"""The catalogue of LSTM mistakes: every mistake this project knows, once, under one name.

Each :class:`Mistake` is a bug seen in real LSTM code, and says

- ``name``: kebab-case, the one spelling everywhere: the spec's meta-tests are parametrized by it
  (tests/spec/test_mutants.py, test_layer_mutants.py), a mutant row is ``mutant/<name>``
  (:mod:`conformance.mutants`);
- ``description``: what the diagnoses say, completing "matches the spec if ...";
- ``pass_``: the pass it is in (:class:`Pass`): a forward mistake changes the outputs (and with them the
  gradients), a backward one only the gradients;
- ``needs``: what a case must have for the mistake to change anything on it (:class:`Needs`): the diagnoses
  try it only there, and a mutant of a mistake that a plain cell shows runs the plain cell's cases only;
- how it is realised, one way or both:

  - ``plant``: patches into ``spec.lstm`` / ``spec.layer`` (:class:`Patch`), the spec's own functions with the
    mistake; the spec's meta-tests apply them and require the checks that prove the spec to fail;
  - ``model``: the mistaken LSTM, outputs and gradients (:mod:`conformance.mistaken`): a :class:`Misread`
    (the spec run on parameters or a configuration read wrongly, in every cell) or :data:`SWITCH` (a switch
    of the mistaken LSTM under the mistake's name). The diagnoses ask every model "would this mistake
    reproduce the answer?"; a mistake with a model and ``mutant=True`` is a mutant row the suite must catch
    and diagnose.

Adding a mistake is one entry here, and its plant or its switch in conformance/mistaken.py if it is new
behaviour. The entries are in the order the diagnoses report them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import combinations, permutations
from typing import NamedTuple

import numpy as np

from contract.vocabulary import Feature, Word, features_of
from spec import layer, lstm
from spec.cases import Case
from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LSTMParams


class Pass(Word):
    """Which pass a mistake is in."""

    FORWARD = "forward"
    BACKWARD = "backward"


FORWARD, BACKWARD = Pass.FORWARD, Pass.BACKWARD


@dataclass(frozen=True)
class Needs:
    """What a case must have for a mistake to change anything on it (a necessary condition, never a guess: the
    diagnoses skip a mistake where it is not met, so it must not leave out a case the mistake could explain)."""

    every: frozenset = frozenset()  # every one of these features (contract.vocabulary.Feature)
    some: frozenset = frozenset()  # at least one of these, when given
    #: Beyond the features, on the case's record (a forget bias, a square U); None: nothing more.
    condition: Callable[[Case], bool] | None = None

    def met(self, case: Case) -> bool:
        used = features_of(case.layer, case.lengths, case.mask)
        return (self.every <= used and (not self.some or bool(self.some & used))
                and (self.condition is None or self.condition(case)))

    @property
    def plain_cell(self) -> bool:
        """Whether a plain cell (one forward layer, peepholes at most) can show the mistake."""
        plain = {Feature.PEEPHOLE}
        return self.every <= plain and (not self.some or bool(self.some & plain))


def needs(*every: Feature, some=(), condition: Callable[[Case], bool] | None = None) -> Needs:
    """Needs every one of ``every``, at least one of ``some`` (when given), and ``condition``."""
    return Needs(frozenset(every), frozenset(some), condition)


ANY_CASE = Needs()
REVERSED = (Feature.REVERSE, Feature.BIDIRECTIONAL)
MASKED = (Feature.LENGTHS, Feature.MASK)  # lengths are a mask too (spec.layer (13))


def _forget_bias(case: Case) -> bool:
    """A forget bias other than 0: something to lose or to double."""
    return case.layer.forget_bias != 0


def _square_U(case: Case) -> bool:
    """U (4, H, P) can be read transposed only when it is square: P = H."""
    return case.P == case.H


def _no_cell_clip(case: Case) -> bool:
    """A default clip at 3 where the case asks for none: a case with a cell clip of its own has it used instead."""
    return case.layer.cell_clip is None


class Patch(NamedTuple):
    """One attribute of a spec module (or class) replaced: ``setattr(target, attribute, replacement)``."""

    target: object
    attribute: str
    replacement: Callable


@dataclass(frozen=True, eq=False)
class Misread:
    """A mistake in reading the parameters or the configuration: every cell computes the spec with these instead of
    what it was given. Its gradients are those of the parameters as it used them; ``map_back`` (gradients laid out
    as one cell's parameters -> those of the parameters given, the chain rule back through the misreading) is there
    when it is a rearrangement, None otherwise (a bias halved: the gradient of the one bias used is what such an
    implementation reports)."""

    cell: Callable[[LSTMParams], LSTMParams] = lambda c: c
    layer: Callable[[LayerConfig], LayerConfig] = lambda config: config
    map_back: Callable[[LSTMParams], LSTMParams] | None = None


class Switch:
    """The model of a mistake that is a switch of the mistaken LSTM (conformance/mistaken.py), under its name."""

    def __repr__(self) -> str:
        return "SWITCH"


SWITCH = Switch()


@dataclass(frozen=True, eq=False)
class Mistake:
    """One mistake: its name, what the diagnoses say, its pass, what a case needs to show it, how it is realised."""

    name: str
    description: str  # completes "matches the spec if ..."
    pass_: Pass
    needs: Needs = ANY_CASE
    plant: tuple[Patch, ...] = ()
    model: Misread | Switch | None = None
    #: A mutant row (mutant/<name>) of the model, which the suite must catch and diagnose with the description.
    mutant: bool = False

    def __post_init__(self):
        if not self.plant and self.model is None:
            raise ValueError(f"mistake {self.name}: neither planted nor modelled")
        if self.mutant and self.model is None:
            raise ValueError(f"mistake {self.name}: a mutant needs a model")
        if self.pass_ is BACKWARD and isinstance(self.model, Misread):
            raise ValueError(f"mistake {self.name}: a misreading changes the forward pass")


# ---------------------------------------------------------------------------
# Plants: the spec's own functions with the mistake (the originals, taken before any patch)
# ---------------------------------------------------------------------------

_step, _hidden, _carry_backward = lstm.step, lstm.hidden, lstm.carry_backward
_output_gate_backward, _peeking_gate_backward, _cell_backward = (
    lstm.output_gate_backward, lstm.peeking_gate_backward, lstm.cell_backward)
_run_direction, _direction_backward, _join_directions = layer.run_direction, layer.direction_backward, layer.join_directions


def _input_forget_candidate(z, c_prev, p, forget_bias, features):
    """The spec's i, f and g of one step, for the mistakes that go wrong only after them."""
    p_i, p_f, _ = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, _ = features.gate_clips
    i = lstm.peeking_gate(z[0], p_i, c_prev, 0.0, clip_i)
    f = (lstm.coupled_forget_gate(i, out=z[1]) if features.coupled_input_forget
         else lstm.peeking_gate(z[1], p_f, c_prev, forget_bias, clip_f))
    return i, f, lstm.candidate(z[2], clip_g)


def _o_peeks_c_prev(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    p_o, clip_o = (None if p is None else p[2]), features.gate_clips[3]
    i, f, g = _input_forget_candidate(z, c_prev, p, forget_bias, features)
    lstm.cell(f, c_prev, i, g, out=c, clip=features.cell_clip)
    o = lstm.output_gate(z[3], p_o, c_prev, clip_o)  # the mistake: c_{t-1} instead of c_t
    lstm.hidden(o, c, tanh_c, out=h)


def _gates_f_and_g_swapped(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    z[[1, 2]] = z[[2, 1]]
    _step(z, c_prev, p, forget_bias, c, tanh_c, h, features)


def _peepholes_i_and_f_swapped(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    _step(z, c_prev, None if p is None else p[[1, 0, 2]], forget_bias, c, tanh_c, h, features)


def _forget_bias_dropped(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    _step(z, c_prev, p, 0.0, c, tanh_c, h, features)


def _o_times_c(o, c, tanh_c, out):
    """m_t = o_t * c_t: (6) without its tanh (tanh_c is still filled: the backward pass reads it)."""
    np.tanh(c, out=tanh_c)
    return np.multiply(o, c, out=out)


def _p_o_dropped_from_dc(do, o, p_o, c, norm=None):
    dz, _, dp = _output_gate_backward(do, o, p_o, c, norm)
    return dz, 0.0, dp


def _peepholes_dropped_from_dc(d_gate, gate, p_k, c_peek, norm=None):
    dz, _, dp = _peeking_gate_backward(d_gate, gate, p_k, c_peek, norm)
    return dz, 0.0, dp


def _dc_prev_ignores_f(dc, f, c_prev, i, g):
    df, _, di, dg = _cell_backward(dc, f, c_prev, i, g)
    return df, dc, di, dg


def _tanh_derivative_wrong(dg, g, norm=None):
    return lstm._norm_backward(norm, dg * (1.0 - g))


def _reverse_outputs_in_processing_order(params, layer_input, h0, c0, mask, reverse, cell=lstm.forward, **options):
    if not reverse:
        return _run_direction(params, layer_input, h0, c0, mask, reverse, cell, **options)
    run = cell(params, layer_input[::-1], h0, c0, mask=None if mask is None else mask[::-1], **options)
    return run, run.h_seq  # the mistake: not reversed back to the original time order


def _directions_swapped(outputs):
    return _join_directions(outputs[::-1])


def _layer_above_reads_forward_only(outputs):
    if len(outputs) == 1:
        return outputs[0]
    return np.concatenate([outputs[0], np.zeros_like(outputs[1])], axis=2)


def _final_states_direction_major(runs):
    cells = [layer_runs[d] for d in range(len(runs[0])) for layer_runs in runs]
    return np.stack([run.h_T for run in cells]), np.stack([run.c_T for run in cells])


def _final_h_from_last_output(runs):
    """h_T read from the output at the last step: zero for a padded row (the output[-1] bug)."""
    cells = [run for layer_runs in runs for run in layer_runs]
    return np.stack([run.h_seq[-1] for run in cells]), np.stack([run.c_T for run in cells])


def _padded_outputs_not_zeroed(lengths, T):
    return layer.mask_from_lengths(lengths, T), False


def _reverse_mask_in_time_order(params, layer_input, h0, c0, mask, reverse, cell=lstm.forward, **options):
    """The reverse direction reads the reversed sequence with the mask not reversed: with lengths, it starts at
    x_{T-1} (and with a mask, it reads the mask in time order: reverse-mask-not-reversed)."""
    if not reverse:
        return _run_direction(params, layer_input, h0, c0, mask, reverse, cell, **options)
    run = cell(params, layer_input[::-1], h0, c0, mask=mask, **options)
    return run, run.h_seq[::-1]


def _reverse_dx_not_reversed(run, d_y, dh_T, dc_T, reverse, cell_backward=lstm.backward):
    g, _ = _direction_backward(run, d_y, dh_T, dc_T, reverse, cell_backward)
    return g, g.x  # the mistake: a reverse direction's dx left in its processing order


def _masked_step_updates_state(mu, previous, out):
    return out


def _mask_inverted(mu, previous, out):
    """True read as 'padding' (PyTorch's key_padding_mask convention) instead of Keras's 'keep'."""
    np.copyto(out, previous, where=mu[:, None])
    return out


def _masked_cotangent_not_carried(mu, d):
    step_share, _ = _carry_backward(mu, d)
    return step_share, np.zeros_like(d)


def _projection_before_tanh_project(m, W_hr, out, clip=None, b_hr=None):
    np.tanh(m @ W_hr.T if b_hr is None else m @ W_hr.T + b_hr, out=out)
    if clip is not None:
        clip(out)
    return out


def _projection_of_c(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    np.copyto(out, c)
    return out


def _cell_clip_after_output(z, c_prev, p, forget_bias, c, tanh_c, h, features=lstm.PLAIN_STEP):
    """TF's clip, misplaced: o's peephole and tanh see the unclipped c_t; only step t+1 sees it clipped."""
    p_o, clip_o = (None if p is None else p[2]), features.gate_clips[3]
    i, f, g = _input_forget_candidate(z, c_prev, p, forget_bias, features)
    lstm.cell(f, c_prev, i, g, out=c)
    o = lstm.output_gate(z[3], p_o, c, clip_o)
    lstm.hidden(o, c, tanh_c, out=h)
    if features.cell_clip is not None:
        features.cell_clip(c)


def _gate_clip_before_peephole(z, p_k, c_peek, bias=0.0, clip=None, norm=None):
    """ONNX's clip, misread: applied to W x + U h + b before the peephole and forget bias are added."""
    if clip is not None:
        clip(z)
    if p_k is not None:
        z += p_k * c_peek
    lstm._norm(norm, z)
    if bias:
        z += bias
    return lstm.sigmoid(z, out=z)


def _coupled_forget_from_forget_weights(i, out):
    """f = sigma(W_f x + U_f h + b_f) (``out`` holds that pre-activation) instead of 1 - i."""
    return lstm.sigmoid(out, out=out)


def _coupled_backward_ignores_f(df, di):
    return di


def _clip_gradient_straight_through(self, d):
    """The clip's derivative taken as 1 everywhere (TensorFlow's BlockLSTM gradient does this for cell_clip)."""
    return d


def _clip_gradient_inverted(self, d):
    """The clip's derivative taken as 1 where it clipped and 0 where the value passed."""
    return np.where(self.passed, 0.0, d)


# (1n)-(5n) and (7b), misread.
def _layer_norm_of_the_biased_sum(self, a):
    """The bias added before the normalization (W x + U h + b normalized) and no shift after it."""
    a += self.b
    np.subtract(a, a.mean(axis=1, keepdims=True), out=self.n)
    np.divide(1.0, np.sqrt(np.mean(self.n * self.n, axis=1) + lstm.LN_EPSILON), out=self.rstd)
    self.n *= self.rstd[:, None]
    return np.multiply(self.gamma, self.n, out=a)


def _layer_norm_unbiased_variance(self, a):
    """The variance divided by H - 1 (the sample variance) instead of H."""
    H = a.shape[1]
    np.subtract(a, a.mean(axis=1, keepdims=True), out=self.n)
    np.divide(1.0, np.sqrt(np.sum(self.n * self.n, axis=1) / max(H - 1, 1) + lstm.LN_EPSILON), out=self.rstd)
    self.n *= self.rstd[:, None]
    np.multiply(self.gamma, self.n, out=a)
    a += self.b
    return a


def _layer_norm_gradient_without_mean(self, dz):
    """da = (dn - n mean(dn n)) / sigma: the mean's share of the normalization left out of its derivative."""
    if self.dz is not None:
        self.dz[...] = dz
    dn = dz * self.gamma
    return (dn - self.n * (dn * self.n).mean(axis=1, keepdims=True)) * self.rstd[:, None]


def _layer_norm_gradient_without_variance(self, dz):
    """da = (dn - mean(dn)) / sigma: the variance's share of the normalization left out of its derivative."""
    if self.dz is not None:
        self.dz[...] = dz
    dn = dz * self.gamma
    return (dn - dn.mean(axis=1, keepdims=True)) * self.rstd[:, None]


def _proj_bias_after_clip(m, W_hr, out, clip=None, b_hr=None):
    """h_t = clip(W_hr m_t) + b_hr: the bias added after the projection's clip."""
    np.matmul(m, W_hr.T, out=out)
    if clip is not None:
        clip(out)
    if b_hr is not None:
        out += b_hr
    return out


# ---------------------------------------------------------------------------
# Misreadings of the parameters
# ---------------------------------------------------------------------------

#: Gate orders with a name of their own.
ORDER_NAMES = {("i", "g", "f", "o"): "TensorFlow's BlockLSTM order", ("i", "o", "f", "g"): "ONNX's order"}


def gates_in_order(cell: LSTMParams, order) -> LSTMParams:
    """The cell's W, U and b (and ln) with their gate blocks in ``order`` (used[k] = given[order[k]])."""
    order = list(order)
    return replace(cell, W=cell.W[order], U=cell.U[order], b=cell.b[order], ln=None if cell.ln is None else cell.ln[order])


def _gates_stacked(order: tuple[int, ...]) -> Mistake:
    inverse = tuple(int(k) for k in np.argsort(order))
    misread = Misread(cell=lambda c: gates_in_order(c, order), map_back=lambda g: gates_in_order(g, inverse))
    names = tuple(GATES[k] for k in order)
    moved = [GATES[k] for k in range(4) if order[k] != k]
    if len(moved) == 2:
        a, b = moved
        plant = (Patch(lstm, "step", _gates_f_and_g_swapped),) if moved == ["f", "g"] else ()  # the one planted
        return Mistake(f"gates-{a}-{b}-swapped", f"gates {a} and {b} are swapped", FORWARD, plant=plant, model=misread,
                       mutant=True)
    label = ORDER_NAMES.get(names)
    return Mistake(f"gates-stacked-{'-'.join(names)}",
                   f"its gates are stacked {','.join(names)}" + (f" ({label})" if label else "") + " instead of i,f,g,o",
                   FORWARD, model=misread)


def _peepholes_swapped(a: int, b: int) -> Mistake:
    order = [0, 1, 2]
    order[a], order[b] = b, a
    # Its own inverse; a cell without peepholes has nothing to swap (a mutant runs such cases too).
    swap = lambda c: replace(c, p=None if c.p is None else c.p[order])  # noqa: E731
    first, second = PEEPHOLE_GATES[a], PEEPHOLE_GATES[b]
    i_and_f = (first, second) == ("i", "f")  # the one planted, and a mutant
    return Mistake(f"peepholes-{first}-{second}-swapped", f"the peepholes of {first} and {second} are swapped", FORWARD,
                   needs(Feature.PEEPHOLE), plant=(Patch(lstm, "step", _peepholes_i_and_f_swapped),) if i_and_f else (),
                   model=Misread(cell=swap, map_back=swap), mutant=i_and_f)


_transposed_U = lambda c: replace(c, U=c.U.transpose(0, 2, 1).copy())  # noqa: E731

# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------

CATALOGUE: tuple[Mistake, ...] = (
    # --- The parameters or the configuration misread, in every cell -------------------------------------------
    *(_gates_stacked(order) for order in permutations(range(4)) if order != (0, 1, 2, 3)),
    Mistake("recurrent-matrix-transposed", "the recurrent matrix U is transposed", FORWARD,
            needs(condition=_square_U), model=Misread(cell=_transposed_U, map_back=_transposed_U), mutant=True),
    Mistake("forget-bias-missing", "the forget bias is missing", FORWARD, needs(condition=_forget_bias),
            plant=(Patch(lstm, "step", _forget_bias_dropped),),
            model=Misread(layer=lambda config: replace(config, forget_bias=0.0)), mutant=True),
    Mistake("forget-bias-doubled", "the forget bias is added twice", FORWARD, needs(condition=_forget_bias),
            model=Misread(layer=lambda config: replace(config, forget_bias=2 * config.forget_bias)), mutant=True),
    Mistake("forget-bias-of-1-added", "a forget bias of 1 is added (TensorFlow's default)", FORWARD,
            model=Misread(layer=lambda config: replace(config, forget_bias=config.forget_bias + 1.0))),
    # This project's layouts split b in half between a framework's two biases (PyTorch, ONNX).
    Mistake("one-of-two-biases-dropped", "only one of two biases is used (b is split in half between them)", FORWARD,
            model=Misread(cell=lambda c: replace(c, b=c.b * 0.5)), mutant=True),
    *(_peepholes_swapped(a, b) for a, b in combinations(range(3), 2)),
    # The spec without peepholes predicts no gradient for p: what such an implementation reports for the p it
    # ignores is left open; the other gradients decide.
    Mistake("peepholes-ignored", "the peepholes are ignored", FORWARD, needs(Feature.PEEPHOLE),
            model=Misread(cell=lambda c: c.without_peepholes(), layer=lambda config: replace(config, peephole=False))),
    # --- The cell ---------------------------------------------------------------------------------------------
    Mistake("h-without-tanh", "h = o * c, without the tanh", FORWARD, plant=(Patch(lstm, "hidden", _o_times_c),),
            model=SWITCH, mutant=True),
    # A framework whose cell clip defaults to 3 (BlockLSTM's) and takes the configuration's where there is one.
    Mistake("cell-clip-at-3", "the cell state is clipped to [-3, 3] (TensorFlow's default cell_clip)", FORWARD,
            needs(condition=_no_cell_clip),
            model=Misread(layer=lambda config: config if config.cell_clip is not None else replace(config, cell_clip=3.0))),
    Mistake("o-peeks-c_prev", "the output gate peeks at c_{t-1} instead of the new c_t", FORWARD, needs(Feature.PEEPHOLE),
            plant=(Patch(lstm, "step", _o_peeks_c_prev),), model=SWITCH, mutant=True),
    Mistake("dc-ignores-downstream", "the cell-state gradient ignores the dc arriving from the next step", BACKWARD,
            model=SWITCH, mutant=True),
    Mistake("last-step-missing-from-gradient", "the last time step is missing from the backward pass", BACKWARD,
            model=SWITCH, mutant=True),
    Mistake("peepholes-dropped-from-dc", "the peephole paths are dropped from the cell-state gradient", BACKWARD,
            needs(Feature.PEEPHOLE), plant=(Patch(lstm, "peeking_gate_backward", _peepholes_dropped_from_dc),),
            model=SWITCH, mutant=True),
    Mistake("bias-gradient-wrong-gate", "the bias gradients of gates f and g are written to each other", BACKWARD,
            model=SWITCH, mutant=True),
    Mistake("p_o-dropped-from-dc_t", "the output gate's peephole path is dropped from the cell-state gradient dc_t",
            BACKWARD, needs(Feature.PEEPHOLE), plant=(Patch(lstm, "output_gate_backward", _p_o_dropped_from_dc),)),
    Mistake("dc_prev-ignores-f", "the cell-state gradient reaches c_{t-1} without the factor f_t", BACKWARD,
            plant=(Patch(lstm, "cell_backward", _dc_prev_ignores_f),)),
    Mistake("tanh-derivative-wrong", "the candidate's tanh derivative is taken as 1 - g instead of 1 - g^2", BACKWARD,
            plant=(Patch(lstm, "candidate_backward", _tanh_derivative_wrong),)),
    # --- Layer normalization and the projection's bias (TFLite's fused LSTM) ------------------------------------
    Mistake("layer-norm-coefficients-ignored", "layer normalization's coefficients are ignored (gamma taken as 1)",
            FORWARD, needs(Feature.LAYER_NORM),
            model=Misread(cell=lambda c: c if c.ln is None else replace(c, ln=np.ones_like(c.ln))), mutant=True),
    Mistake("layer-norm-of-the-biased-sum", "the bias is normalized with the gate's pre-activation (W x + U h + b "
            "normalized, no shift after it) instead of shifting it", FORWARD, needs(Feature.LAYER_NORM),
            plant=(Patch(lstm.Norm, "__call__", _layer_norm_of_the_biased_sum),)),
    Mistake("layer-norm-unbiased-variance", "the normalization divides by the sample variance (over H - 1) instead of "
            "the mean of the squared deviations", FORWARD, needs(Feature.LAYER_NORM),
            plant=(Patch(lstm.Norm, "__call__", _layer_norm_unbiased_variance),)),
    Mistake("layer-norm-gradient-without-mean", "the normalization's gradient leaves out the mean's share", BACKWARD,
            needs(Feature.LAYER_NORM), plant=(Patch(lstm.Norm, "backward", _layer_norm_gradient_without_mean),)),
    Mistake("layer-norm-gradient-without-variance", "the normalization's gradient leaves out the variance's share",
            BACKWARD, needs(Feature.LAYER_NORM),
            plant=(Patch(lstm.Norm, "backward", _layer_norm_gradient_without_variance),)),
    Mistake("proj-bias-ignored", "the projection's bias is ignored", FORWARD, needs(Feature.PROJ_BIAS),
            model=Misread(cell=lambda c: c if c.b_hr is None else replace(c, b_hr=np.zeros_like(c.b_hr))), mutant=True),
    Mistake("proj-bias-after-clip", "the projection's bias is added after its clip: h = clip(W_hr m) + b_hr", FORWARD,
            needs(Feature.PROJ_BIAS, Feature.PROJ_CLIP), plant=(Patch(lstm, "project", _proj_bias_after_clip),)),
    # --- The layer --------------------------------------------------------------------------------------------
    Mistake("reverse-outputs-in-processing-order",
            "the reverse direction's outputs are left in processing order (not reversed back to time order)", FORWARD,
            needs(some=REVERSED), plant=(Patch(layer, "run_direction", _reverse_outputs_in_processing_order),),
            model=SWITCH, mutant=True),
    Mistake("directions-swapped", "the two directions' outputs are swapped (reverse first instead of forward first)",
            FORWARD, needs(Feature.BIDIRECTIONAL), plant=(Patch(layer, "join_directions", _directions_swapped),),
            model=SWITCH, mutant=True),
    Mistake("layer-above-reads-forward-only", "the layer above is fed only the forward direction's outputs", FORWARD,
            needs(Feature.BIDIRECTIONAL, Feature.STACKED),
            plant=(Patch(layer, "next_layer_input", _layer_above_reads_forward_only),), model=SWITCH, mutant=True),
    Mistake("final-states-direction-major",
            "the final states are ordered direction-major (cell d * L + l) instead of layer-major (cell l * D + d)",
            FORWARD, needs(Feature.BIDIRECTIONAL, Feature.STACKED),
            plant=(Patch(layer, "final_states", _final_states_direction_major),), model=SWITCH, mutant=True),
    # The plants patch hidden(), which the plain cell shares: they change every cell, projected or not.
    Mistake("projection-before-tanh",
            "the projection is applied before the tanh: h = tanh(W_hr (o * c)) instead of W_hr (o * tanh(c))", FORWARD,
            needs(Feature.PROJECTION),
            plant=(Patch(lstm, "hidden", _o_times_c), Patch(lstm, "project", _projection_before_tanh_project)),
            model=SWITCH, mutant=True),
    Mistake("projection-of-c", "the projection is applied to c: h = W_hr c instead of W_hr (o * tanh(c))", FORWARD,
            needs(Feature.PROJECTION), plant=(Patch(lstm, "hidden", _projection_of_c),), model=SWITCH, mutant=True),
    Mistake("padded-outputs-not-zeroed", "outputs past a row's length are not zeroed (they repeat its last output)",
            FORWARD, needs(Feature.LENGTHS), plant=(Patch(layer, "lengths_as_mask", _padded_outputs_not_zeroed),),
            model=SWITCH, mutant=True),
    Mistake("zero-output-for-mask-flipped", "masked steps output zero where the previous output is meant, or the other "
            "way round (zero_output_for_mask flipped)", FORWARD, needs(Feature.MASK), model=SWITCH, mutant=True),
    Mistake("final-h-at-T-1",
            "the final h is the output at step T - 1 instead of the state after the row's last step (L_b - 1)", FORWARD,
            needs(some=MASKED), plant=(Patch(layer, "final_states", _final_h_from_last_output),), model=SWITCH,
            mutant=True),
    # The plant leaves the mask in time order with a mask as well: it makes reverse-mask-not-reversed too.
    Mistake("reverse-starts-at-T-1",
            "the reverse direction starts at step T - 1 instead of L_b - 1 (it reads the padding first)", FORWARD,
            needs(Feature.LENGTHS, some=REVERSED), plant=(Patch(layer, "run_direction", _reverse_mask_in_time_order),),
            model=SWITCH, mutant=True),
    Mistake("reverse-mask-not-reversed",
            "the reverse direction reads the mask in time order while its input runs backwards", FORWARD,
            needs(Feature.MASK, some=REVERSED), model=SWITCH, mutant=True),
    Mistake("masked-step-updates-state", "a masked step updates the state instead of carrying it", FORWARD,
            needs(some=MASKED), plant=(Patch(lstm, "carry", _masked_step_updates_state),), model=SWITCH, mutant=True),
    Mistake("mask-inverted", "the mask is read the other way round (True as padding, PyTorch's key_padding_mask)",
            FORWARD, needs(some=MASKED), plant=(Patch(lstm, "carry", _mask_inverted),)),
    Mistake("clips-swapped",
            "the clips are applied to the wrong quantity (cell_clip to the gate pre-activations, gate_clip to the cell "
            "state)", FORWARD, needs(some=(Feature.CELL_CLIP, Feature.GATE_CLIP)), model=SWITCH, mutant=True),
    Mistake("cell-clip-after-output", "the cell clip is applied after the output: o's peephole and tanh see the "
            "unclipped c_t", FORWARD, needs(Feature.CELL_CLIP), plant=(Patch(lstm, "step", _cell_clip_after_output),)),
    Mistake("gate-clip-before-peephole", "the gate clip is applied to W x + U h + b before the peephole and the forget "
            "bias are added", FORWARD, needs(Feature.GATE_CLIP),
            plant=(Patch(lstm, "peeking_gate", _gate_clip_before_peephole),)),
    Mistake("coupled-forget-from-forget-weights",
            "the coupled forget gate is taken from the forget weights (sigma(W_f x + U_f h + b_f) instead of 1 - i)",
            FORWARD, needs(Feature.COUPLED),
            plant=(Patch(lstm, "coupled_forget_gate", _coupled_forget_from_forget_weights),), model=SWITCH, mutant=True),
    Mistake("reverse-dx-not-reversed",
            "the reverse direction's input gradient is left in processing order (not reversed back to time order)",
            BACKWARD, needs(some=REVERSED), plant=(Patch(layer, "direction_backward", _reverse_dx_not_reversed),),
            model=SWITCH, mutant=True),
    Mistake("masked-cotangent-not-carried", "a masked step's state cotangent is not carried to the step before",
            BACKWARD, needs(some=MASKED), plant=(Patch(lstm, "carry_backward", _masked_cotangent_not_carried),)),
    Mistake("coupled-backward-ignores-f", "the coupled gate's gradient ignores f = 1 - i (nothing of df reaches i)",
            BACKWARD, needs(Feature.COUPLED),
            plant=(Patch(lstm, "coupled_forget_gate_backward", _coupled_backward_ignores_f),)),
    Mistake("clip-gradient-straight-through",
            "the clips' gradient is 1 everywhere (clipped elements pass the gradient straight through)", BACKWARD,
            needs(some=(Feature.CELL_CLIP, Feature.GATE_CLIP, Feature.PROJ_CLIP)),
            plant=(Patch(lstm.Clip, "backward", _clip_gradient_straight_through),), model=SWITCH, mutant=True),
    Mistake("clip-gradient-inverted", "the clips' gradient is 1 where they clipped and 0 where the value passed",
            BACKWARD, needs(some=(Feature.CELL_CLIP, Feature.GATE_CLIP, Feature.PROJ_CLIP)),
            plant=(Patch(lstm.Clip, "backward", _clip_gradient_inverted),)),
    # --- Cotangents ignored by a backward pass that is otherwise right ----------------------------------------
    Mistake("dc-T-ignored", "the cotangent of c_T (dc_T) is ignored", BACKWARD, model=SWITCH, mutant=True),
    Mistake("dh-T-ignored", "the cotangent of h_T (dh_T) is ignored", BACKWARD, model=SWITCH),
    Mistake("dy-at-T-1-ignored", "the last time step's cotangent dy[T-1] is ignored", BACKWARD, model=SWITCH),
)

BY_NAME: dict[str, Mistake] = {mistake.name: mistake for mistake in CATALOGUE}
if len(BY_NAME) != len(CATALOGUE):
    raise ValueError("a name is repeated in the catalogue of mistakes: one name, one mistake")


def named(name: str) -> Mistake:
    """The mistake of this name; a KeyError that lists the catalogue otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no mistake named {name!r} in the catalogue; it has: {', '.join(BY_NAME)}") from None


def modelled() -> tuple[Mistake, ...]:
    return tuple(mistake for mistake in CATALOGUE if mistake.model is not None)


def planted() -> tuple[Mistake, ...]:
    return tuple(mistake for mistake in CATALOGUE if mistake.plant)


__all__ = [
    "ANY_CASE", "BACKWARD", "BY_NAME", "CATALOGUE", "FORWARD", "ORDER_NAMES", "SWITCH", "Misread", "Mistake", "Needs",
    "Pass", "Patch", "Switch", "gates_in_order", "modelled", "named", "needs", "planted",
]
