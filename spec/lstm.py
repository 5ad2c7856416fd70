r"""The LSTM, as this project defines it: forward and backward, in NumPy.

Every backend of this project is judged against this module.

For t = 1 .. T, with sigma the logistic sigmoid and * the elementwise product
(Hochreiter & Schmidhuber 1997; the forget gate of Gers, Schmidhuber &
Cummins 2000; the peepholes of Gers & Schmidhuber 2000):

    (1)  i_t = sigma(W_i x_t + U_i h_{t-1} + p_i * c_{t-1} + b_i)
    (2)  f_t = sigma(W_f x_t + U_f h_{t-1} + p_f * c_{t-1} + b_f + forget_bias)
    (3)  g_t = tanh (W_g x_t + U_g h_{t-1} + b_g)
    (4)  c_t = f_t * c_{t-1} + i_t * g_t
    (5)  o_t = sigma(W_o x_t + U_o h_{t-1} + p_o * c_t + b_o)
    (6)  h_t = o_t * tanh(c_t)

Without peepholes the p terms are absent. As in ONNX and TensorFlow, the
input and forget gates peek at the previous cell state c_{t-1} and the output
gate at the new one, c_t. ``forget_bias`` is a constant added to the forget
gate's pre-activation (TensorFlow's cells default it to 1; here it is 0).

Gate order: i, f, g, o (:data:`GATES`), everywhere in this project. The gate
pre-activations z_t = W x_t + U h_{t-1} + b are stacked in that order along
one axis of length 4H.

Shapes: x (T, B, I), h_0 and c_0 (B, H)  ->  h_t for every step (T, B, H),
h_T (B, H), c_T (B, H) (with a projection, (7) below, h is (B, P) and c stays
(B, H)). Parameters: :class:`spec.params.LSTMParams`. This is one direction of
one layer; directions, stacks and sequence lengths are :mod:`spec.layer`.

Optional features, each off by default (then (1)-(6) above are exact), each
selectable alone or with any other; clip_theta(a) = min(max(a, -theta), theta):

    (1g)-(3g), (5g)  gate clip, ``gate_clip=gamma`` (ONNX's ``clip`` as ONNX Runtime
         reads it, "applied to the input of activations"): every gate's
         pre-activation, complete with bias, forget bias and peephole, is clipped
         before its activation, e.g. i_t = sigma(clip_gamma(W_i x_t + U_i h_{t-1}
         + p_i * c_{t-1} + b_i)); the cell state is not clipped.
    (2c) coupled input and forget gates, ``coupled_input_forget=True`` (ONNX's
         ``input_forget=1``):  f_t = 1 - i_t.  W_f, U_f, b_f, p_f and forget_bias
         then take no part (their gradients are zero), as in ONNX Runtime.
    (4c) cell clip, ``cell_clip=theta`` (TensorFlow's BlockLSTM, LSTMBlockCell and
         TF1 LSTMCell(cell_clip)):  c_t = clip_theta(f_t * c_{t-1} + i_t * g_t);
         the clipped c_t feeds tanh in (6), the peephole in (5) and step t+1.
    (6p) with a projection, (6) names m_t = o_t * tanh(c_t), and
    (7)  h_t = W_hr m_t  (LSTMP: Sak, Senior & Beaufays 2014; PyTorch's proj_size,
         TF1's num_proj), of size P; U is then (4, H, P), h_0 and h_T are (B, P),
         c stays (B, H).  ``proj_clip=pi`` (TF1):  h_t = clip_pi(W_hr m_t).
    (8)  a mask mu (T, B) of booleans (Keras's mask): where mu_t[b] is false the
         step leaves row b's state as it was, (h_t, c_t) = (h_{t-1}, c_{t-1}), and
         the output is  y_t = s_t * h_t,  with s_t = mu_t (``zero_output_for_mask``:
         zero at masked steps) or s_t = [mu_tau for some tau <= t] (the previous
         output: the state carried since the last unmasked step, and zero before
         the first one). h_T, c_T are the state after the last unmasked step.
         Without a mask y_t = h_t. A sequence length L_b is the mask t < L_b with
         zero outputs (:mod:`spec.layer`).
    (1n)-(3n), (5n)  layer normalization (Ba, Kiros & Hinton 2016, per gate, as TFLite's
         fused LSTM applies it: tensorflow/lite/kernels/lstm_eval.cc), with the
         coefficients gamma (params.ln): each gate's pre-activation without its bias,
         a_k = W_k x_t + U_k h_{t-1} (+ p_k * c for i, f, o), is normalized over the H
         units of each row,  n_k = (a_k - mean(a_k)) / sqrt(var(a_k) + epsilon),  with
         var the mean of the squared deviations and epsilon = 1e-8 (LN_EPSILON); then
         z_k = gamma_k * n_k + b_k takes the pre-activation's place: the bias is the
         shift, the forget bias and the gate clip come after, the activation last.
    (7b) the projection's bias (params.b_hr, TFLite's projection_bias):
         h_t = clip_pi(W_hr m_t + b_hr).

The backward pass is backpropagation through time, derived by hand. Given
the cotangents of every output (dh_seq[t] for each output y_t, dh_T and dc_T),
it returns the gradient of L = sum_t <dh_seq[t], y_t> + <dh_T, h_T> + <dc_T, c_T>
with respect to x, h_0, c_0, W, U, b, p (and W_hr, ln, b_hr). Going back from t = T, with
dh_t = dh_seq[t] + (dh_T at t = T) + U^T dz_{t+1}:

    (6)  do_t  = dh_t * tanh(c_t)          dc_t += dh_t * o_t * (1 - tanh^2(c_t))
    (5)  dz_o  = do_t * o_t (1 - o_t)      dc_t += p_o * dz_o     dp_o += sum_b dz_o * c_t
    (4)  di_t  = dc_t * g_t   df_t = dc_t * c_{t-1}   dg_t = dc_t * i_t   dc_{t-1} = dc_t * f_t
    (3)  dz_g  = dg_t (1 - g_t^2)
    (2)  dz_f  = df_t f_t (1 - f_t)        dc_{t-1} += p_f * dz_f  dp_f += sum_b dz_f * c_{t-1}
    (1)  dz_i  = di_t i_t (1 - i_t)        dc_{t-1} += p_i * dz_i  dp_i += sum_b dz_i * c_{t-1}
         z_t = W x_t + U h_{t-1} + b:      dh_{t-1} = U^T dz_t,  dx_t = W^T dz_t,
                                           dW += dz_t x_t^T,  dU += dz_t h_{t-1}^T,  db += sum_b dz_t

The order matters: dc_t is complete only once the output-gate peephole (5)
has added its share, and dc_{t-1} only once (1) and (2) have added theirs.

The features' rules, where the derivative of clip_theta(a) is [|a| <= theta]
(one where the value passed, zero where it was clipped; frameworks' autodiff
takes the same convention at |a| = theta, a point the tests keep away from):

    (8)  dh_t = s_t * dh_seq[t] + (from t+1);  at a masked row dh_t and dc_t pass
         unchanged to h_{t-1} and c_{t-1}, and the step receives zero cotangents;
         at an unmasked row the step receives them and nothing passes around it.
    (7)  da_t = dh_t * [|W_hr m_t| <= pi]:  dm_t = W_hr^T da_t,  dW_hr += da_t m_t^T;
         then (6) with dm_t in place of dh_t.
    (4c) once dc_t is complete:  dc_t *= [|f_t c_{t-1} + i_t g_t| <= theta], then (4).
    (2c) di_t -= df_t  and dz_f = 0, before (1).
    (1g)-(3g), (5g)  each gate's cotangent is multiplied by [|a_k| <= gamma] before its
         rule above; the peephole shares then carry the clipped cotangent.
    (1n)-(3n), (5n)  with dz_k the cotangent of z_k = gamma_k n_k + b_k (the gate's rule
         above, before its peephole share):  db_k += sum_b dz_k,  dgamma_k += sum_b dz_k * n_k,
         dn = gamma_k * dz_k,  da_k = (dn - mean(dn) - n_k * mean(dn * n_k)) / sqrt(var(a_k) + epsilon)
         (means over the H units); da_k then takes dz_k's place in the peephole's share and
         in the products' rules (dW, dU, dx, dh_{t-1}).
    (7b) db_hr += sum_b da_t.

Computation: float64 unless asked for float32; every input must already be
in that dtype (nothing is cast), and the result says which it computed in.
The input projection W x_t + b is one matrix product over all steps; each
step adds one (B, P) x (P, 4H) product and elementwise work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec.params import GATES, LSTMParams, require_params
from spec.validation import LSTMInputError, check_dtype, check_tensor

__all__ = ["GATES", "LN_EPSILON", "Forward", "Gradients", "forward", "backward", "sigmoid", "loss"]

#: epsilon of (1n)-(3n), (5n): TFLite's kNormalizationConstant.
LN_EPSILON = 1e-8


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), without overflow for any z and within a few ulp.

    With e = exp(-|z|), which lies in (0, 1] and cannot overflow,
    sigma(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) for z < 0. The second
    form keeps full relative precision where sigma is tiny (the tanh form
    0.5 + 0.5 tanh(z/2) would lose it to cancellation). The numerator is
    written max(e, [z >= 0]) because it is 1 where z >= 0 and e < 1 where
    z < 0; on this project's CPUs that is four times faster than np.where.
    """
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    numerator = np.maximum(e, z >= 0)
    e += 1.0
    return np.divide(numerator, e, out=out)


# ---------------------------------------------------------------------------
# One time step. Each equation's forward rule is followed by the rule that
# differentiates it. The forward rules compute in place in the buffers they
# are given (the step runs T times over large arrays); the backward rules take
# the cotangent of their output and return the cotangents of their inputs.
# ---------------------------------------------------------------------------


# clip_theta(a) = min(max(a, -theta), theta): in (1g)-(3g), (5g) with gamma, (4c) with theta, (7) with pi.
class Clip:
    """One clip at one step: the threshold, and the booleans [|a| <= theta] that backward needs.

    The forward rule records where the value passed (the clipped value alone cannot tell: a value
    clipped to theta and one that was exactly theta look the same); the backward rule lets the
    cotangent through there and nowhere else.
    """

    __slots__ = ("passed", "theta")

    def __init__(self, theta: float, passed: np.ndarray):
        self.theta, self.passed = theta, passed

    def __call__(self, a: np.ndarray) -> np.ndarray:
        np.less_equal(np.abs(a), self.theta, out=self.passed)
        return np.clip(a, -self.theta, self.theta, out=a)

    def backward(self, d: np.ndarray) -> np.ndarray:
        return np.where(self.passed, d, 0.0)


def _clip_backward(clip: Clip | None, d):
    return d if clip is None else clip.backward(d)


# (1n)-(3n), (5n): z_k = gamma_k * n_k + b_k,  n_k = (a_k - mean(a_k)) / sqrt(var(a_k) + epsilon).
class Norm:
    """One gate's layer normalization at one step: gamma and b of the gate, and the buffers of what backward needs
    (n_k and 1 / sqrt(var + epsilon) per row), filled by the forward rule; ``dz`` (B, H), when given, receives the
    cotangent of z_k in the backward rule (db and dgamma are summed from it at the end, as db is without it).
    """

    __slots__ = ("gamma", "b", "n", "rstd", "dz")

    def __init__(self, gamma, b, n, rstd, dz=None):
        self.gamma, self.b, self.n, self.rstd, self.dz = gamma, b, n, rstd, dz

    def __call__(self, a: np.ndarray) -> np.ndarray:
        np.subtract(a, a.mean(axis=1, keepdims=True), out=self.n)
        variance = np.mean(self.n * self.n, axis=1)
        np.divide(1.0, np.sqrt(variance + LN_EPSILON), out=self.rstd)
        self.n *= self.rstd[:, None]
        np.multiply(self.gamma, self.n, out=a)
        a += self.b
        return a

    def backward(self, dz: np.ndarray) -> np.ndarray:
        """da_k from dz_k."""
        if self.dz is not None:
            self.dz[...] = dz
        dn = dz * self.gamma
        centred = dn - dn.mean(axis=1, keepdims=True) - self.n * (dn * self.n).mean(axis=1, keepdims=True)
        return centred * self.rstd[:, None]


def norm_gradients(dz_norm_seq: np.ndarray, ln_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """db and dgamma of (1n)-(5n) from every step's cotangents of z_k (T, B, 4, H) and n_k (4, T, B, H): b is the shift
    of z_k, gamma its scale, summed over the steps and rows."""
    T, B, _, H = dz_norm_seq.shape
    dz = dz_norm_seq.transpose(2, 0, 1, 3).reshape(4, T * B, H)
    return dz.sum(axis=1), (dz * ln_n.reshape(4, T * B, H)).sum(axis=1)


def _norm(norm: Norm | None, a):
    return a if norm is None else norm(a)


def _norm_backward(norm: Norm | None, dz):
    return dz if norm is None else norm.backward(dz)


# (1) i_t = sigma(z_i + p_i * c_{t-1})  and  (2) f_t = sigma(z_f + p_f * c_{t-1} + forget_bias)
# (1g), (2g): the whole pre-activation clipped before sigma; (1n), (2n): normalized before the forget bias.
def peeking_gate(z, p_k, c_peek, bias=0.0, clip=None, norm=None):
    """sigma(clip(norm(z + p_k * c_peek) + bias)), computed over z's buffer; p_k is None without peepholes."""
    if p_k is not None:
        z += p_k * c_peek
    _norm(norm, z)
    if bias:
        z += bias
    if clip is not None:
        clip(z)
    return sigmoid(z, out=z)


def peeking_gate_backward(d_gate, gate, p_k, c_peek, norm=None):
    """Returns dz (da_k with layer normalization), the share of dc that flows back through the peephole, and dp_k.

    With a gate clip, d_gate arrives already multiplied by the clip's [|a| <= gamma] (step_backward).
    """
    dz = _norm_backward(norm, d_gate * gate * (1.0 - gate))
    if p_k is None:
        return dz, 0.0, None
    return dz, p_k * dz, (dz * c_peek).sum(axis=0)


# (2c) f_t = 1 - i_t: coupled input and forget gates; z_f, p_f and forget_bias take no part.
def coupled_forget_gate(i, out):
    return np.subtract(1.0, i, out=out)


def coupled_forget_gate_backward(df, di):
    """Returns di with f's share added (df/di = -1); nothing flows to z_f."""
    return di - df


# (3) g_t = tanh(z_g); (3g) tanh(clip(z_g)); (3n) tanh(norm(z_g))
def candidate(z_g, clip=None, norm=None):
    _norm(norm, z_g)
    if clip is not None:
        clip(z_g)
    return np.tanh(z_g, out=z_g)


def candidate_backward(dg, g, norm=None):
    return _norm_backward(norm, dg * (1.0 - g * g))


# (4) c_t = f_t * c_{t-1} + i_t * g_t; (4c) clipped to [-theta, theta] right after the update.
def cell(f, c_prev, i, g, out, clip=None):
    np.multiply(f, c_prev, out=out)
    out += i * g
    if clip is not None:
        clip(out)
    return out


def cell_backward(dc, f, c_prev, i, g):
    """Returns df, dc_{t-1} (the direct path), di, dg.

    With a cell clip, dc arrives already multiplied by [|f c_{t-1} + i g| <= theta] (step_backward).
    """
    return dc * c_prev, dc * f, dc * g, dc * i


# (5) o_t = sigma(z_o + p_o * c_t): the output gate peeks at the NEW cell state; (5g) clipped before sigma.
def output_gate(z_o, p_o, c, clip=None, norm=None):
    return peeking_gate(z_o, p_o, c, 0.0, clip, norm)


def output_gate_backward(do, o, p_o, c, norm=None):
    """Returns dz_o, the share of dc_t through the peephole, and dp_o."""
    return peeking_gate_backward(do, o, p_o, c, norm)


# (6) h_t = o_t * tanh(c_t)  (m_t with a projection)
def hidden(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    return np.multiply(o, tanh_c, out=out)


def hidden_backward(dh, o, tanh_c):
    """Returns do and the share of dc_t through tanh(c_t)."""
    return dh * tanh_c, dh * o * (1.0 - tanh_c * tanh_c)


@dataclass(frozen=True)
class StepFeatures:
    """The optional features of one step: each gate's clip (i, f, g, o), the cell clip, coupled gates, each gate's
    layer normalization."""

    gate_clips: tuple = (None, None, None, None)
    cell_clip: Clip | None = None
    coupled_input_forget: bool = False
    norms: tuple = (None, None, None, None)


PLAIN_STEP = StepFeatures()


def step(z, c_prev, p, forget_bias, c, tanh_c, h, features=PLAIN_STEP):
    """Equations (1)-(6) for one step, with the features of (1g)-(5g), (2c), (4c), (1n)-(5n).

    ``z`` (4, B, H) holds the pre-activations of gates i, f, g, o on entry and
    their activations on return; ``c``, ``tanh_c`` and ``h`` (B, H) are filled
    (``h`` is m_t when a projection follows, (6p)).
    """
    p_i, p_f, p_o = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, clip_o = features.gate_clips
    norm_i, norm_f, norm_g, norm_o = features.norms
    i = peeking_gate(z[0], p_i, c_prev, 0.0, clip_i, norm_i)  # (1)
    if features.coupled_input_forget:
        f = coupled_forget_gate(i, out=z[1])  # (2c)
    else:
        f = peeking_gate(z[1], p_f, c_prev, forget_bias, clip_f, norm_f)  # (2)
    g = candidate(z[2], clip_g, norm_g)  # (3)
    cell(f, c_prev, i, g, out=c, clip=features.cell_clip)  # (4)
    o = output_gate(z[3], p_o, c, clip_o, norm_o)  # (5)
    hidden(o, c, tanh_c, out=h)  # (6)


def step_backward(dh, dc, gates, c_prev, c, tanh_c, p, dz, features=PLAIN_STEP):
    """Back through (6)..(1) for one step.

    ``dh`` and ``dc`` are the cotangents of h_t (m_t with a projection) and
    c_t arriving from the outputs and from step t+1; ``gates`` (4, B, H) holds
    i, f, g, o. Fills dz (B, 4, H) with dz_t and returns dc_{t-1} and the
    peephole gradients of this step (or None).
    """
    i, f, g, o = gates
    p_i, p_f, p_o = (None, None, None) if p is None else p
    clip_i, clip_f, clip_g, clip_o = features.gate_clips
    norm_i, norm_f, norm_g, norm_o = features.norms
    do, dc_through_tanh = hidden_backward(dh, o, tanh_c)  # (6)
    do = _clip_backward(clip_o, do)  # (5g)
    dz_o, dc_through_p_o, dp_o = output_gate_backward(do, o, p_o, c, norm_o)  # (5), (5n)
    dc = dc + dc_through_tanh + dc_through_p_o
    dc = _clip_backward(features.cell_clip, dc)  # (4c)
    df, dc_prev, di, dg = cell_backward(dc, f, c_prev, i, g)  # (4)
    dg = _clip_backward(clip_g, dg)  # (3g)
    dz_g = candidate_backward(dg, g, norm_g)  # (3), (3n)
    if features.coupled_input_forget:
        di = coupled_forget_gate_backward(df, di)  # (2c)
        dz_f, dc_through_p_f, dp_f = 0.0, 0.0, None if p is None else np.zeros_like(dp_o)
    else:
        df = _clip_backward(clip_f, df)  # (2g)
        dz_f, dc_through_p_f, dp_f = peeking_gate_backward(df, f, p_f, c_prev, norm_f)  # (2), (2n)
    di = _clip_backward(clip_i, di)  # (1g)
    dz_i, dc_through_p_i, dp_i = peeking_gate_backward(di, i, p_i, c_prev, norm_i)  # (1), (1n)
    dc_prev = dc_prev + dc_through_p_i + dc_through_p_f
    dz[:, 0], dz[:, 1], dz[:, 2], dz[:, 3] = dz_i, dz_f, dz_g, dz_o
    dp = None if p is None else np.stack([dp_i, dp_f, dp_o])
    return dc_prev, dp


# (7) h_t = clip_pi(W_hr m_t): the projection, after the step (like U h_{t-1}, before it, a product);
# (7b) with its bias, clip_pi(W_hr m_t + b_hr).
def project(m, W_hr, out, clip=None, b_hr=None):
    np.matmul(m, W_hr.T, out=out)
    if b_hr is not None:
        out += b_hr
    if clip is not None:
        clip(out)
    return out


def project_backward(dh, W_hr, clip=None):
    """Returns dm_t and da_t, the cotangent of W_hr m_t (+ b_hr): backward() sums dW_hr = sum_t da_t m_t^T and
    db_hr = sum_t sum_b da_t at the end."""
    da = _clip_backward(clip, dh)
    return da @ W_hr, da


# (8) a masked row keeps its state: state_t = mu_t ? (the step's new value) : state_{t-1}.
def carry(mu, previous, out):
    """Overwrites the rows of ``out`` (B, .) where mu (B,) is false with ``previous``."""
    np.copyto(out, previous, where=~mu[:, None])
    return out


def carry_backward(mu, d):
    """Splits the cotangent of state_t into the step's share and the share carried to state_{t-1}."""
    kept = mu[:, None]
    return np.where(kept, d, 0.0), np.where(kept, 0.0, d)


def shown(mask, zero_output_for_mask):
    """s in y_t = s_t * h_t (8): mu itself, or 'some step up to t was unmasked'."""
    return mask if zero_output_for_mask else np.logical_or.accumulate(mask, axis=0)


# ---------------------------------------------------------------------------
# The whole sequence.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The optional features of one direction of one layer; the defaults switch every one off."""

    gate_clip: float | None = None  # gamma of (1g)-(3g), (5g)
    cell_clip: float | None = None  # theta of (4c)
    proj_clip: float | None = None  # pi of (7); needs a projection
    coupled_input_forget: bool = False  # (2c)
    zero_output_for_mask: bool = False  # (8): zero at masked steps, or the previous output (Keras's default)

    @property
    def plain_step(self) -> bool:
        return self.gate_clip is None and self.cell_clip is None and not self.coupled_input_forget


@dataclass(frozen=True, eq=False)
class Forward:
    """The outputs of :func:`forward`, and what :func:`backward` needs from it."""

    h_seq: np.ndarray  # (T, B, P): the output y_t for every step (h_t itself without a mask)
    h_T: np.ndarray  # (B, P)
    c_T: np.ndarray  # (B, H)
    dtype: np.dtype  # the precision the spec computed in
    # Saved for the backward pass.
    params: LSTMParams
    forget_bias: float
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)
    gates: np.ndarray  # (4, T, B, H): the activations i_t, f_t, g_t, o_t, gate-major
    c_seq: np.ndarray  # (T, B, H): c_t for every step (the state: carried where masked)
    tanh_c_seq: np.ndarray  # (T, B, H)
    # The features (all None or off without them).
    options: Options = Options()
    h_state_seq: np.ndarray | None = None  # (T, B, P): the state h_t (h_seq itself without a mask)
    m_seq: np.ndarray | None = None  # (T, B, H): m_t = o_t * tanh(c_t), with a projection
    mask: np.ndarray | None = None  # (T, B): mu
    show: np.ndarray | None = None  # (T, B): s in y_t = s_t * h_t
    gate_passed: np.ndarray | None = None  # (4, T, B, H): [|a_k| <= gamma], with a gate clip
    cell_passed: np.ndarray | None = None  # (T, B, H): with a cell clip
    proj_passed: np.ndarray | None = None  # (T, B, P): with a projection clip
    ln_n: np.ndarray | None = None  # (4, T, B, H): n_k of (1n)-(5n), with layer normalization
    ln_rstd: np.ndarray | None = None  # (4, T, B): 1 / sqrt(var(a_k) + epsilon)

    def step_features(self, t: int, dz_norm: np.ndarray | None = None) -> StepFeatures:
        """The features of step t, over the booleans and normalizations saved by the forward pass; ``dz_norm``
        (B, 4, H) receives the cotangents of the normalized pre-activations z_k."""
        return step_features_of(self.options, self.gate_passed, self.cell_passed, t, self.params, self.ln_n,
                                self.ln_rstd, dz_norm)

    def proj_clip(self, t: int) -> Clip | None:
        return None if self.options.proj_clip is None else Clip(self.options.proj_clip, self.proj_passed[t])


def step_features_of(options: Options, gate_passed, cell_passed, t: int, params: LSTMParams | None = None,
                     ln_n=None, ln_rstd=None, dz_norm=None) -> StepFeatures:
    layer_norm = params is not None and params.ln is not None
    if options.plain_step and not layer_norm:
        return PLAIN_STEP
    norms = (None,) * 4
    if layer_norm:
        norms = tuple(Norm(params.ln[k], params.b[k], ln_n[k, t], ln_rstd[k, t],
                           None if dz_norm is None else dz_norm[:, k]) for k in range(4))
        if options.coupled_input_forget:  # f = 1 - i: f's own pre-activation is not computed
            norms = (norms[0], None, *norms[2:])
    gate_clips = (None,) * 4
    if options.gate_clip is not None:
        gate_clips = tuple(Clip(options.gate_clip, gate_passed[k, t]) for k in range(4))
        if options.coupled_input_forget:  # f = 1 - i: f's own pre-activation is neither used nor clipped
            gate_clips = (gate_clips[0], None, *gate_clips[2:])
    cell_clip = None if options.cell_clip is None else Clip(options.cell_clip, cell_passed[t])
    return StepFeatures(gate_clips, cell_clip, options.coupled_input_forget, norms)


@dataclass(frozen=True, eq=False)
class Gradients:
    """The gradient of L with respect to each input and parameter, in the canonical layout."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)
    W: np.ndarray  # (4, H, I)
    U: np.ndarray  # (4, H, P)
    b: np.ndarray  # (4, H)
    p: np.ndarray | None  # (3, H), gates i, f, o; None without peepholes
    dtype: np.dtype
    W_hr: np.ndarray | None = None  # (P, H); None without a projection
    ln: np.ndarray | None = None  # (4, H); None without layer normalization
    b_hr: np.ndarray | None = None  # (P,); None without a projection bias

    def tensors(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0, **self.params().tensors()}

    def params(self) -> LSTMParams:
        """The parameters' gradients, laid out as the parameters."""
        return LSTMParams(self.W, self.U, self.b, self.p, self.W_hr, self.ln, self.b_hr)


def forward(
    params: LSTMParams,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    *,
    forget_bias: float = 0.0,
    dtype: object = np.float64,
    gate_clip: float | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    coupled_input_forget: bool = False,
    mask: np.ndarray | None = None,
    zero_output_for_mask: bool = False,
) -> Forward:
    """Run equations (1)-(6) over the sequence x (T, B, I) from the state (h0, c0), with the features asked for.

    Everything must already be in ``dtype`` (float64 unless float32 is asked
    for); a mismatch is an error, never a cast. ``mask`` is a boolean (T, B)
    array, (8); the other options are described in the module docstring.
    """
    dtype = check_dtype(dtype)
    params = require_params(params)
    _check_params_dtype(params, dtype)
    H, I, P = params.hidden_size, params.input_size, params.output_size
    check_tensor("x", x, ("T", "B", I), dtype)
    T, B = x.shape[0], x.shape[1]
    check_tensor("h0", h0, (B, P), dtype)
    check_tensor("c0", c0, (B, H), dtype)
    forget_bias = _check_forget_bias(forget_bias)
    options = Options(
        gate_clip=_check_threshold("gate_clip", gate_clip),
        cell_clip=_check_threshold("cell_clip", cell_clip),
        proj_clip=_check_threshold("proj_clip", proj_clip),
        coupled_input_forget=_check_flag("coupled_input_forget", coupled_input_forget),
        zero_output_for_mask=_check_flag("zero_output_for_mask", zero_output_for_mask),
    )
    if options.proj_clip is not None and params.W_hr is None:
        raise LSTMInputError("proj_clip", "needs a projection", "params with W_hr (or proj_clip=None)", proj_clip)
    if mask is not None:
        check_tensor("mask", mask, (T, B), np.dtype(bool), finite=False)

    # W x_t + b for all steps in one product. The result is laid out gate-major (4, T, B, H), in
    # the same pass that adds b, so that each gate's (B, H) block is contiguous for the elementwise
    # work; each step then adds U h_{t-1} and overwrites the pre-activations with the activations.
    # With layer normalization b is the shift after the normalization (1n): not added here.
    gates = np.empty((4, T, B, H), dtype)
    Wx = np.ascontiguousarray(x).reshape(T * B, I) @ params.W.reshape(4 * H, I).T
    layer_norm = params.ln is not None
    b = np.zeros_like(params.b) if layer_norm else params.b
    np.add(Wx.reshape(T, B, 4, H).transpose(2, 0, 1, 3), b[:, None, None, :], out=gates)
    U_T = params.U.reshape(4 * H, P).T
    Uh = np.empty((B, 4 * H), dtype)
    c_seq = np.empty((T, B, H), dtype)
    tanh_c_seq = np.empty((T, B, H), dtype)
    h_seq = np.empty((T, B, P), dtype)
    # With a projection the step's own output is m_t (6p), kept for dW_hr; without, it is h_t.
    m_seq = None if params.W_hr is None else np.empty((T, B, H), dtype)
    # Where each clip passed its value, for the backward pass.
    gate_passed = None if options.gate_clip is None else np.ones((4, T, B, H), bool)  # f's stays 1 under (2c)
    cell_passed = None if options.cell_clip is None else np.empty((T, B, H), bool)
    proj_passed = None if options.proj_clip is None else np.empty((T, B, P), bool)
    # Each gate's n_k and 1 / sqrt(var + epsilon), for the backward pass (f's stay 0 under (2c)).
    ln_n = np.zeros((4, T, B, H), dtype) if layer_norm else None
    ln_rstd = np.zeros((4, T, B), dtype) if layer_norm else None
    plain = options.plain_step and not layer_norm

    h, c = h0, c0
    for t in range(T):
        z = gates[:, t]
        np.matmul(h, U_T, out=Uh)
        z += Uh.reshape(B, 4, H).transpose(1, 0, 2)  # z_t = W x_t + U h_{t-1} + b
        out = h_seq[t] if m_seq is None else m_seq[t]
        if plain:  # (1)-(6) as they stand
            step(z, c, params.p, forget_bias, c_seq[t], tanh_c_seq[t], out)
        else:
            features = step_features_of(options, gate_passed, cell_passed, t, params, ln_n, ln_rstd)
            step(z, c, params.p, forget_bias, c_seq[t], tanh_c_seq[t], out, features)
        if m_seq is not None:  # (7), (7b)
            proj = None if proj_passed is None else Clip(options.proj_clip, proj_passed[t])
            project(m_seq[t], params.W_hr, out=h_seq[t], clip=proj, b_hr=params.b_hr)
        if mask is not None:  # (8): masked rows keep (h_{t-1}, c_{t-1})
            carry(mask[t], h, out=h_seq[t])
            carry(mask[t], c, out=c_seq[t])
        h, c = h_seq[t], c_seq[t]

    # (8) y_t = s_t * h_t; without a mask the outputs are the states.
    y, show = h_seq, None
    if mask is not None:
        show = shown(mask, options.zero_output_for_mask)
        y = np.where(show[:, :, None], h_seq, 0.0)
    return Forward(
        h_seq=y,
        h_T=h_seq[-1].copy(),
        c_T=c_seq[-1].copy(),
        dtype=dtype,
        params=params,
        forget_bias=forget_bias,
        x=x,
        h0=h0,
        c0=c0,
        gates=gates,
        c_seq=c_seq,
        tanh_c_seq=tanh_c_seq,
        options=options,
        h_state_seq=h_seq,
        m_seq=m_seq,
        mask=mask,
        show=show,
        gate_passed=gate_passed,
        cell_passed=cell_passed,
        proj_passed=proj_passed,
        ln_n=ln_n,
        ln_rstd=ln_rstd,
    )


def backward(
    fwd: Forward, dh_seq: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray
) -> Gradients:
    """Backpropagation through time: the gradient of L (module docstring) for the given cotangents."""
    if not isinstance(fwd, Forward):
        raise LSTMInputError("fwd", "wrong type", "spec.lstm.Forward", type(fwd).__name__)
    T, B, P = fwd.h_seq.shape
    H = fwd.c_seq.shape[2]
    dtype = fwd.dtype
    check_tensor("dh_seq", dh_seq, (T, B, P), dtype)
    check_tensor("dh_T", dh_T, (B, P), dtype)
    check_tensor("dc_T", dc_T, (B, H), dtype)

    params = fwd.params
    I = params.input_size
    W = params.W.reshape(4 * H, I)
    U = params.U.reshape(4 * H, P)
    p = params.p
    dz_seq = np.empty((T, B, 4, H), dtype)
    dp = None if p is None else np.zeros((3, H), dtype)
    da_seq = None if params.W_hr is None else np.empty((T, B, P), dtype)  # (7): cotangents of W_hr m_t
    dz_norm_seq = None if params.ln is None else np.zeros((T, B, 4, H), dtype)  # (1n): cotangents of z_k
    mask = fwd.mask
    if mask is not None:  # (8): y_t = s_t * h_t sends s_t * dy_t to h_t
        dh_seq = np.where(fwd.show[:, :, None], dh_seq, 0.0)

    # h_T and c_T are h_t and c_t at the last step: their cotangents start the recursion.
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(T)):
        c_prev = fwd.c_seq[t - 1] if t > 0 else fwd.c0
        dh = dh_seq[t] + dh_next
        dc = dc_next
        if mask is not None:  # (8): a masked row's cotangents go around the step, to step t-1
            dh, dh_carried = carry_backward(mask[t], dh)
            dc, dc_carried = carry_backward(mask[t], dc)
        if da_seq is not None:  # (7): back through the projection to m_t
            dh, da_seq[t] = project_backward(dh, params.W_hr, fwd.proj_clip(t))
        features = fwd.step_features(t, None if dz_norm_seq is None else dz_norm_seq[t])
        dc_next, dp_t = step_backward(dh, dc, fwd.gates[:, t], c_prev, fwd.c_seq[t], fwd.tanh_c_seq[t], p, dz_seq[t],
                                      features)
        if dp is not None:
            dp += dp_t
        # z_t = W x_t + U h_{t-1} + b: h_{t-1} receives U^T dz_t.
        dh_next = dz_seq[t].reshape(B, 4 * H) @ U
        if mask is not None:
            dh_next += dh_carried
            dc_next = dc_next + dc_carried

    # The other shares of z_t = W x_t + U h_{t-1} + b (and of W_hr m_t), summed over all steps at once.
    dz_all = dz_seq.reshape(T * B, 4 * H)
    x_all = np.ascontiguousarray(fwd.x).reshape(T * B, I)
    h_prev_all = np.concatenate([fwd.h0[None], fwd.h_state_seq[:-1]]).reshape(T * B, P)
    dW_hr = db_hr = None
    if da_seq is not None:
        dW_hr = da_seq.reshape(T * B, P).T @ fwd.m_seq.reshape(T * B, H)
        if params.b_hr is not None:  # (7b)
            db_hr = da_seq.reshape(T * B, P).sum(axis=0)
    db, dln = dz_all.sum(axis=0).reshape(4, H), None
    if dz_norm_seq is not None:  # (1n)-(5n)
        db, dln = norm_gradients(dz_norm_seq, fwd.ln_n)
    return Gradients(
        x=(dz_all @ W).reshape(T, B, I),
        h0=dh_next,
        c0=dc_next,
        W=(dz_all.T @ x_all).reshape(4, H, I),
        U=(dz_all.T @ h_prev_all).reshape(4, H, P),
        b=db,
        p=dp,
        dtype=dtype,
        W_hr=dW_hr,
        ln=dln,
        b_hr=db_hr,
    )


def loss(fwd: Forward, dh_seq: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray) -> float:
    """L = sum_t <dh_seq[t], y_t> + <dh_T, h_T> + <dc_T, c_T>: the scalar whose gradient backward() returns."""
    return float(
        np.vdot(dh_seq, fwd.h_seq) + np.vdot(dh_T, fwd.h_T) + np.vdot(dc_T, fwd.c_T)
    )


def _check_params_dtype(params: LSTMParams, dtype: np.dtype) -> None:
    if params.dtype != dtype:
        raise LSTMInputError(
            "params",
            "wrong dtype",
            dtype.name,
            params.dtype.name,
            "the spec never casts; use params.astype(...) or ask for the matching dtype",
        )


def _check_forget_bias(forget_bias: object) -> float:
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.floating)):
        raise LSTMInputError("forget_bias", "wrong type", "a real number", type(forget_bias).__name__)
    if not np.isfinite(forget_bias):
        raise LSTMInputError("forget_bias", "non-finite value", "a finite number", forget_bias)
    return float(forget_bias)


def _check_threshold(name: str, value: object) -> float | None:
    """A clip threshold: None (no clip) or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LSTMInputError(name, "wrong type", "None or a number > 0", type(value).__name__)
    if not (np.isfinite(value) and value > 0):
        raise LSTMInputError(name, "out of range", "None or a finite number > 0", value)
    return float(value)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise LSTMInputError(name, "wrong type", "True or False", type(value).__name__)
    return bool(value)
