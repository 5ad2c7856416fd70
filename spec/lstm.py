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
h_T (B, H), c_T (B, H). Parameters: :class:`spec.params.LSTMParams`.

The backward pass is backpropagation through time, derived by hand. Given
the cotangents of every output (dh_seq[t] for each h_t, dh_T and dc_T), it
returns the gradient of L = sum_t <dh_seq[t], h_t> + <dh_T, h_T> + <dc_T, c_T>
with respect to x, h_0, c_0, W, U, b and p. Going back from t = T, with
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

Computation: float64 unless asked for float32; every input must already be
in that dtype (nothing is cast), and the result says which it computed in.
The input projection W x_t + b is one matrix product over all steps; each
step adds one (B, H) x (H, 4H) product and elementwise work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec.params import GATES, LSTMParams, require_params
from spec.validation import LSTMInputError, check_dtype, check_tensor

__all__ = ["GATES", "Forward", "Gradients", "forward", "backward", "sigmoid", "loss"]


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


# (1) i_t = sigma(z_i + p_i * c_{t-1})  and  (2) f_t = sigma(z_f + p_f * c_{t-1} + forget_bias)
def peeking_gate(z, p_k, c_peek, bias=0.0):
    """sigma(z + p_k * c_peek + bias), computed over z's buffer; p_k is None without peepholes."""
    if p_k is not None:
        z += p_k * c_peek
    if bias:
        z += bias
    return sigmoid(z, out=z)


def peeking_gate_backward(d_gate, gate, p_k, c_peek):
    """Returns dz, the share of dc that flows back through the peephole, and dp_k."""
    dz = d_gate * gate * (1.0 - gate)
    if p_k is None:
        return dz, 0.0, None
    return dz, p_k * dz, (dz * c_peek).sum(axis=0)


# (3) g_t = tanh(z_g)
def candidate(z_g):
    return np.tanh(z_g, out=z_g)


def candidate_backward(dg, g):
    return dg * (1.0 - g * g)


# (4) c_t = f_t * c_{t-1} + i_t * g_t
def cell(f, c_prev, i, g, out):
    np.multiply(f, c_prev, out=out)
    out += i * g
    return out


def cell_backward(dc, f, c_prev, i, g):
    """Returns df, dc_{t-1} (the direct path), di, dg."""
    return dc * c_prev, dc * f, dc * g, dc * i


# (5) o_t = sigma(z_o + p_o * c_t): the output gate peeks at the NEW cell state.
def output_gate(z_o, p_o, c):
    return peeking_gate(z_o, p_o, c)


def output_gate_backward(do, o, p_o, c):
    """Returns dz_o, the share of dc_t through the peephole, and dp_o."""
    return peeking_gate_backward(do, o, p_o, c)


# (6) h_t = o_t * tanh(c_t)
def hidden(o, c, tanh_c, out):
    np.tanh(c, out=tanh_c)
    return np.multiply(o, tanh_c, out=out)


def hidden_backward(dh, o, tanh_c):
    """Returns do and the share of dc_t through tanh(c_t)."""
    return dh * tanh_c, dh * o * (1.0 - tanh_c * tanh_c)


def step(z, c_prev, p, forget_bias, c, tanh_c, h):
    """Equations (1)-(6) for one step.

    ``z`` (4, B, H) holds the pre-activations of gates i, f, g, o on entry and
    their activations on return; ``c``, ``tanh_c`` and ``h`` (B, H) are filled.
    """
    p_i, p_f, p_o = (None, None, None) if p is None else p
    i = peeking_gate(z[0], p_i, c_prev)  # (1)
    f = peeking_gate(z[1], p_f, c_prev, forget_bias)  # (2)
    g = candidate(z[2])  # (3)
    cell(f, c_prev, i, g, out=c)  # (4)
    o = output_gate(z[3], p_o, c)  # (5)
    hidden(o, c, tanh_c, out=h)  # (6)


def step_backward(dh, dc, gates, c_prev, c, tanh_c, p, dz):
    """Back through (6)..(1) for one step.

    ``dh`` and ``dc`` are the cotangents of h_t and c_t arriving from the
    outputs and from step t+1; ``gates`` (4, B, H) holds i, f, g, o. Fills
    dz (B, 4, H) with dz_t and returns dc_{t-1} and the peephole gradients of
    this step (or None).
    """
    i, f, g, o = gates
    p_i, p_f, p_o = (None, None, None) if p is None else p
    do, dc_through_tanh = hidden_backward(dh, o, tanh_c)  # (6)
    dz_o, dc_through_p_o, dp_o = output_gate_backward(do, o, p_o, c)  # (5)
    dc = dc + dc_through_tanh + dc_through_p_o
    df, dc_prev, di, dg = cell_backward(dc, f, c_prev, i, g)  # (4)
    dz_g = candidate_backward(dg, g)  # (3)
    dz_f, dc_through_p_f, dp_f = peeking_gate_backward(df, f, p_f, c_prev)  # (2)
    dz_i, dc_through_p_i, dp_i = peeking_gate_backward(di, i, p_i, c_prev)  # (1)
    dc_prev = dc_prev + dc_through_p_i + dc_through_p_f
    dz[:, 0], dz[:, 1], dz[:, 2], dz[:, 3] = dz_i, dz_f, dz_g, dz_o
    dp = None if p is None else np.stack([dp_i, dp_f, dp_o])
    return dc_prev, dp


# ---------------------------------------------------------------------------
# The whole sequence.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Forward:
    """The outputs of :func:`forward`, and what :func:`backward` needs from it."""

    h_seq: np.ndarray  # (T, B, H): h_t for every step
    h_T: np.ndarray  # (B, H)
    c_T: np.ndarray  # (B, H)
    dtype: np.dtype  # the precision the spec computed in
    # Saved for the backward pass.
    params: LSTMParams
    forget_bias: float
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    gates: np.ndarray  # (4, T, B, H): the activations i_t, f_t, g_t, o_t, gate-major
    c_seq: np.ndarray  # (T, B, H): c_t for every step
    tanh_c_seq: np.ndarray  # (T, B, H)


@dataclass(frozen=True, eq=False)
class Gradients:
    """The gradient of L with respect to each input and parameter, in the canonical layout."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    W: np.ndarray  # (4, H, I)
    U: np.ndarray  # (4, H, H)
    b: np.ndarray  # (4, H)
    p: np.ndarray | None  # (3, H), gates i, f, o; None without peepholes
    dtype: np.dtype

    def tensors(self) -> dict[str, np.ndarray]:
        named = {"x": self.x, "h0": self.h0, "c0": self.c0, "W": self.W, "U": self.U, "b": self.b}
        if self.p is not None:
            named["p"] = self.p
        return named


def forward(
    params: LSTMParams,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    *,
    forget_bias: float = 0.0,
    dtype: object = np.float64,
) -> Forward:
    """Run equations (1)-(6) over the sequence x (T, B, I) from the state (h0, c0).

    Everything must already be in ``dtype`` (float64 unless float32 is asked
    for); a mismatch is an error, never a cast.
    """
    dtype = check_dtype(dtype)
    params = require_params(params)
    _check_params_dtype(params, dtype)
    H, I = params.hidden_size, params.input_size
    check_tensor("x", x, ("T", "B", I), dtype)
    T, B = x.shape[0], x.shape[1]
    check_tensor("h0", h0, (B, H), dtype)
    check_tensor("c0", c0, (B, H), dtype)
    forget_bias = _check_forget_bias(forget_bias)

    # W x_t + b for all steps in one product. The result is laid out gate-major (4, T, B, H), in
    # the same pass that adds b, so that each gate's (B, H) block is contiguous for the elementwise
    # work; each step then adds U h_{t-1} and overwrites the pre-activations with the activations.
    gates = np.empty((4, T, B, H), dtype)
    Wx = np.ascontiguousarray(x).reshape(T * B, I) @ params.W.reshape(4 * H, I).T
    np.add(Wx.reshape(T, B, 4, H).transpose(2, 0, 1, 3), params.b[:, None, None, :], out=gates)
    U_T = params.U.reshape(4 * H, H).T
    Uh = np.empty((B, 4 * H), dtype)
    c_seq = np.empty((T, B, H), dtype)
    tanh_c_seq = np.empty((T, B, H), dtype)
    h_seq = np.empty((T, B, H), dtype)

    h, c = h0, c0
    for t in range(T):
        z = gates[:, t]
        np.matmul(h, U_T, out=Uh)
        z += Uh.reshape(B, 4, H).transpose(1, 0, 2)  # z_t = W x_t + U h_{t-1} + b
        step(z, c, params.p, forget_bias, c_seq[t], tanh_c_seq[t], h_seq[t])
        h, c = h_seq[t], c_seq[t]

    return Forward(
        h_seq=h_seq,
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
    )


def backward(
    fwd: Forward, dh_seq: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray
) -> Gradients:
    """Backpropagation through time: the gradient of L (module docstring) for the given cotangents."""
    if not isinstance(fwd, Forward):
        raise LSTMInputError("fwd", "wrong type", "spec.lstm.Forward", type(fwd).__name__)
    T, B, H = fwd.h_seq.shape
    dtype = fwd.dtype
    check_tensor("dh_seq", dh_seq, (T, B, H), dtype)
    check_tensor("dh_T", dh_T, (B, H), dtype)
    check_tensor("dc_T", dc_T, (B, H), dtype)

    params = fwd.params
    I = params.input_size
    W = params.W.reshape(4 * H, I)
    U = params.U.reshape(4 * H, H)
    p = params.p
    dz_seq = np.empty((T, B, 4, H), dtype)
    dp = None if p is None else np.zeros((3, H), dtype)

    # h_T and c_T are h_t and c_t at the last step: their cotangents start the recursion.
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(T)):
        c_prev = fwd.c_seq[t - 1] if t > 0 else fwd.c0
        dh = dh_seq[t] + dh_next
        dc_next, dp_t = step_backward(
            dh, dc_next, fwd.gates[:, t], c_prev, fwd.c_seq[t], fwd.tanh_c_seq[t], p, dz_seq[t]
        )
        if dp is not None:
            dp += dp_t
        # z_t = W x_t + U h_{t-1} + b: h_{t-1} receives U^T dz_t.
        dh_next = dz_seq[t].reshape(B, 4 * H) @ U

    # The other shares of z_t = W x_t + U h_{t-1} + b, summed over all steps at once.
    dz_all = dz_seq.reshape(T * B, 4 * H)
    x_all = np.ascontiguousarray(fwd.x).reshape(T * B, I)
    h_prev_all = np.concatenate([fwd.h0[None], fwd.h_seq[:-1]]).reshape(T * B, H)
    return Gradients(
        x=(dz_all @ W).reshape(T, B, I),
        h0=dh_next,
        c0=dc_next,
        W=(dz_all.T @ x_all).reshape(4, H, I),
        U=(dz_all.T @ h_prev_all).reshape(4, H, H),
        b=dz_all.sum(axis=0).reshape(4, H),
        p=dp,
        dtype=dtype,
    )


def loss(fwd: Forward, dh_seq: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray) -> float:
    """L = sum_t <dh_seq[t], h_t> + <dh_T, h_T> + <dc_T, c_T>: the scalar whose gradient backward() returns."""
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
