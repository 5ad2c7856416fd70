"""Bugs seen in real LSTM code, as one NumPy LSTM (forward and backward) with switches.

The diagnoses use it to ask "would this bug reproduce the result?", and the
mutants (conformance/mutants.py) use it to plant the bugs in implementations
that the suite must catch. With no switch on it computes the spec's LSTM
(tests check that it agrees with spec/ exactly enough). It is deliberately
plain (per-step einsums), not fast: it runs on small cases only.

Bugs that only rearrange parameters (a gate permutation, a transposed matrix,
a forget bias missing or doubled) need no switch: callers transform the
parameters they pass in.
"""

from __future__ import annotations

import numpy as np

from spec.lstm import sigmoid

#: Switchable bugs: name -> what the diagnosis says ("matches the spec if ...").
BUGS = {
    "o_peeks_prev": "the output gate peeks at c_{t-1} instead of the new c_t",
    "h_without_tanh": "h = o * c, without the tanh",
    "cell_clip": "the cell state is clipped to [-3, 3] (TensorFlow's default cell_clip)",
    "dc_without_peepholes": "the peephole paths are dropped from the cell-state gradient",
    "dc_without_downstream": "the cell-state gradient ignores the dc arriving from the next step",
    "last_step_missing": "the last time step is missing from the backward pass",
    "db_gates_f_g": "the bias gradient of gates f and g are taken from each other",
}


#: Bugs whose backward pass the model does not have: callers that need gradients leave them out.
WITHOUT_BACKWARD = frozenset({"cell_clip"})


def _check(bugs):
    unknown = set(bugs) - set(BUGS)
    if unknown:
        raise ValueError(f"unknown bugs {sorted(unknown)}; known: {sorted(BUGS)}")


def forward(params, x, h0, c0, forget_bias=0.0, bugs=frozenset()):
    """Returns h_seq, h_T, c_T and the per-step values the backward pass needs."""
    _check(bugs)
    W, U, b = params.W, params.U, params.b
    p = np.zeros((3,) + b.shape[1:], b.dtype) if params.p is None else params.p
    h, c = h0, c0
    hs, steps = [], []
    for x_t in x:
        z = np.einsum("ghi,bi->gbh", W, x_t) + np.einsum("ghk,bk->gbh", U, h) + b[:, None, :]
        i = sigmoid(z[0] + p[0] * c)
        f = sigmoid(z[1] + p[1] * c + forget_bias)
        g = np.tanh(z[2])
        c_new = f * c + i * g
        if "cell_clip" in bugs:
            c_new = np.clip(c_new, -3.0, 3.0)
        o = sigmoid(z[3] + p[2] * (c if "o_peeks_prev" in bugs else c_new))
        squashed = c_new if "h_without_tanh" in bugs else np.tanh(c_new)
        steps.append((h, c, i, f, g, o, c_new, squashed))
        h, c = o * squashed, c_new
        hs.append(h)
    return np.stack(hs), h, c, (p, steps)


def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, forget_bias=0.0, bugs=frozenset()):
    """Gradients of sum <dh_seq, h_seq> + <dh_T, h_T> + <dc_T, c_T> (of the buggy forward, with any backward bug)."""
    if bugs & WITHOUT_BACKWARD:
        raise ValueError(f"the backward pass of {sorted(bugs & WITHOUT_BACKWARD)} is not modelled")
    _, _, _, (p, steps) = forward(params, x, h0, c0, forget_bias, bugs - {"dc_without_peepholes", "dc_without_downstream", "last_step_missing", "db_gates_f_g"})
    W, U = params.W, params.U
    grads = {name: np.zeros_like(value) for name, value in (("x", x), ("W", W), ("U", U), ("b", params.b), ("p", p))}
    dh_next, dc_next = dh_T, dc_T
    T = len(x)
    for t in reversed(range(T - 1 if "last_step_missing" in bugs else T)):
        h_prev, c_prev, i, f, g, o, c, squashed = steps[t]
        dh = dh_seq[t] + dh_next
        d_squashed = dh * o
        dzo = dh * squashed * o * (1 - o)
        dc = (0.0 if "dc_without_downstream" in bugs else dc_next) + d_squashed * (1.0 if "h_without_tanh" in bugs else 1 - squashed**2)
        peepholes_in_dc = "dc_without_peepholes" not in bugs
        o_peek_state = c_prev if "o_peeks_prev" in bugs else c
        if peepholes_in_dc and "o_peeks_prev" not in bugs:
            dc = dc + dzo * p[2]
        dzi = dc * g * i * (1 - i)
        dzf = dc * c_prev * f * (1 - f)
        dzg = dc * i * (1 - g**2)
        dc_next = dc * f
        if peepholes_in_dc:
            dc_next = dc_next + dzi * p[0] + dzf * p[1] + (dzo * p[2] if "o_peeks_prev" in bugs else 0.0)
        dz = np.stack([dzi, dzf, dzg, dzo])
        grads["p"] += np.stack([(dzi * c_prev).sum(0), (dzf * c_prev).sum(0), (dzo * o_peek_state).sum(0)])
        grads["W"] += np.einsum("gbh,bi->ghi", dz, x[t])
        grads["U"] += np.einsum("gbh,bk->ghk", dz, h_prev)
        grads["b"] += dz.sum(1)
        grads["x"][t] = np.einsum("gbh,ghi->bi", dz, W)
        dh_next = np.einsum("gbh,ghk->bk", dz, U)
    if "db_gates_f_g" in bugs:
        grads["b"] = grads["b"][[0, 2, 1, 3]]
    grads["h0"], grads["c0"] = dh_next, dc_next
    if params.p is None:
        del grads["p"]
    return grads
