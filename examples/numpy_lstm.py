"""A complete, minimal third-party LSTM for the conformance suite: pure NumPy, forward and backward.

    pytest conformance/ --backend examples/numpy_lstm.py

It is written independently of spec/ (it would prove nothing otherwise) and
follows the smallest contract the suite accepts (contract/loading.py): the
module-level names below. `params` has W (4, H, I), U (4, H, H), b (4, H) and
p (3, H) or None, gates in the order i, f, g, o; peepholes: i and f see
c_{t-1}, o sees the new c_t. All arrays arrive in the dtype under test.

The suite runs it on every case that is a plain cell (one forward layer, no
projection, clips, coupled gates, lengths or mask); every other case is "not
supported" and leaves its denominators.
"""

import numpy as np

ID = "example/numpy"
DTYPES = ("float32", "float64")
VARIANTS = ("standard", "peephole")


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _run(params, x, h0, c0, forget_bias):
    W, U, b, p = params.W, params.U, params.b, params.p
    peep = np.zeros((3,) + b.shape[1:], b.dtype) if p is None else p
    hs, cs, acts = [], [], []
    h, c = h0, c0
    for x_t in x:
        z = np.einsum("ghi,bi->gbh", W, x_t) + np.einsum("ghk,bk->gbh", U, h) + b[:, None, :]
        i = _sigmoid(z[0] + peep[0] * c)
        f = _sigmoid(z[1] + peep[1] * c + forget_bias)
        g = np.tanh(z[2])
        c_new = f * c + i * g
        o = _sigmoid(z[3] + peep[2] * c_new)
        h = o * np.tanh(c_new)
        acts.append((i, f, g, o, c, c_new))
        c = c_new
        hs.append(h)
        cs.append(c)
    return np.stack(hs), hs[-1], cs[-1], acts, peep


def forward(params, x, h0, c0, *, forget_bias):
    h_seq, h_T, c_T, _, _ = _run(params, x, h0, c0, forget_bias)
    return h_seq, h_T, c_T


def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias):
    h_seq, _, _, acts, peep = _run(params, x, h0, c0, forget_bias)
    W, U = params.W, params.U
    dW, dU, db, dp = np.zeros_like(W), np.zeros_like(U), np.zeros_like(params.b), np.zeros_like(peep)
    dx = np.zeros_like(x)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(len(x))):
        i, f, g, o, c_prev, c = acts[t]
        h_prev = h_seq[t - 1] if t else h0
        dh = dh_seq[t] + dh_next
        tc = np.tanh(c)
        dzo = dh * tc * o * (1 - o)
        dc = dc_next + dh * o * (1 - tc**2) + dzo * peep[2]
        dzi = dc * g * i * (1 - i)
        dzf = dc * c_prev * f * (1 - f)
        dzg = dc * i * (1 - g**2)
        dc_next = dc * f + dzi * peep[0] + dzf * peep[1]
        dz = np.stack([dzi, dzf, dzg, dzo])  # (4, B, H)
        dp += np.stack([(dzi * c_prev).sum(0), (dzf * c_prev).sum(0), (dzo * c).sum(0)])
        dW += np.einsum("gbh,bi->ghi", dz, x[t])
        dU += np.einsum("gbh,bk->ghk", dz, h_prev)
        db += dz.sum(1)
        dx[t] = np.einsum("gbh,ghi->bi", dz, W)
        dh_next = np.einsum("gbh,ghk->bk", dz, U)
    grads = {"x": dx, "h0": dh_next, "c0": dc_next, "W": dW, "U": dU, "b": db}
    if params.p is not None:
        grads["p"] = dp
    return grads
