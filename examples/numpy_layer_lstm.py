"""A complete third-party LSTM *layer* for the conformance suite: plain NumPy, forward and hand-written backward.

    pytest conformance/ --backend examples/numpy_layer_lstm.py

The layer's counterpart of examples/numpy_lstm.py (the cell), written
independently of spec/ (it would prove nothing otherwise), through the layer
contract of contract/loading.py: the module-level names below. What arrives,
every array in the dtype under test:

    params   params.cells[l * D + d], direction d of layer l (D = 2 when bidirectional, forward first):
             W (4, H, I) for layer 0 and (4, H, D * P) above it, U (4, H, P), b (4, H), p (3, H) or None,
             W_hr (P, H) or None (the projection h = W_hr m; P = H without one); gates i, f, g, o
    x        (T, B, I), time-major;  h0 (L * D, B, P) and c0 (L * D, B, H), cell l * D + d
    config   num_layers, direction ('forward', 'reverse', 'bidirectional'), proj_size, forget_bias,
             zero_output_for_mask (and clips and coupled gates, which this example does not run)
    lengths  (B,) or None: row b runs steps 0 .. L_b - 1, its outputs after them are zero
    mask     (T, B) or None: a masked step keeps the state; its output is zero or the previous one

It returns y (T, B, D * P) (the top layer's directions side by side, forward
first), h_T and c_T (L * D, B, .), and gradients keyed "x", "h0", "c0" and
"layer l direction d W" (U, b, p, W_hr). A reverse direction runs the cell
over the sequence backwards and hands its outputs back in time order.

What it runs is LAYER_FEATURES (names of contract.vocabulary.Feature).
Every case that needs a feature it does not list, here the clips (cell_clip,
gate_clip, proj_clip) and coupled gates (coupled), is "not supported" in the
matrix with the reason "example/numpy-layer does not support clipping the cell
state (cell_clip)", and leaves the row's denominator: the row reads "pass
n/n", never "partial". To run another feature, implement it and add its name.
Peepholes are a variant (VARIANTS); a forget bias is always part of the layer.
"""

import numpy as np

ID = "example/numpy-layer"
DTYPES = ("float32", "float64")
VARIANTS = ("standard", "peephole")
LAYER_FEATURES = ("stacked", "reverse", "bidirectional", "projection", "lengths", "empty_sequences", "mask",
                  "mask_previous_output")

# Which way each direction runs: reversed or not.
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _keep(config, lengths, mask, T, B):
    """(T, B) where each step runs, and whether the others output zero (else the previous output)."""
    if lengths is not None:
        return np.arange(T)[:, None] < lengths[None, :], True
    if mask is not None:
        return mask, config.zero_output_for_mask
    return np.ones((T, B), bool), True


def _cell_forward(cell, x, h, c, keep, show, forget_bias):
    """One direction over x (T, B, I) in the order it runs; masked rows keep their state."""
    W, U, b, W_hr = cell.W, cell.U, cell.b, cell.W_hr
    p = np.zeros((3,) + b.shape[1:], b.dtype) if cell.p is None else cell.p
    ys, steps = [], []
    for t in range(len(x)):
        z = np.einsum("ghi,bi->gbh", W, x[t]) + np.einsum("ghk,bk->gbh", U, h) + b[:, None, :]
        i = _sigmoid(z[0] + p[0] * c)
        f = _sigmoid(z[1] + p[1] * c + forget_bias)
        g = np.tanh(z[2])
        c_new = f * c + i * g
        o = _sigmoid(z[3] + p[2] * c_new)  # the output gate peeks at the new cell state
        m = o * np.tanh(c_new)
        h_new = m if W_hr is None else m @ W_hr.T
        k = keep[t][:, None]
        steps.append((h, c, i, f, g, o, c_new, m, k))
        h, c = np.where(k, h_new, h), np.where(k, c_new, c)
        ys.append(h * show[t][:, None])
    return np.stack(ys), h, c, steps


def _cell_backward(cell, x, steps, show, dy, dh_T, dc_T):
    """Backpropagation through time for _cell_forward: dx, dh0, dc0 and the cell's parameter gradients."""
    W, U, W_hr = cell.W, cell.U, cell.W_hr
    p = np.zeros((3,) + cell.b.shape[1:], cell.b.dtype) if cell.p is None else cell.p
    dW, dU, db, dp = np.zeros_like(W), np.zeros_like(U), np.zeros_like(cell.b), np.zeros_like(p)
    dW_hr = None if W_hr is None else np.zeros_like(W_hr)
    dx = np.zeros_like(x)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(len(x))):
        h_prev, c_prev, i, f, g, o, c, m, k = steps[t]
        dh = dy[t] * show[t][:, None] + dh_next
        # A masked row's state went around the step: so do its cotangents, and the step gets none.
        dh_around, dc_around = dh * ~k, dc_next * ~k
        dh, dc = dh * k, dc_next * k
        if W_hr is not None:
            dW_hr += dh.T @ m
            dh = dh @ W_hr
        tc = np.tanh(c)
        dzo = dh * tc * o * (1 - o)
        dc = dc + dh * o * (1 - tc**2) + dzo * p[2]
        dzi = dc * g * i * (1 - i)
        dzf = dc * c_prev * f * (1 - f)
        dzg = dc * i * (1 - g**2)
        dz = np.stack([dzi, dzf, dzg, dzo])  # (4, B, H)
        dp += np.stack([(dzi * c_prev).sum(0), (dzf * c_prev).sum(0), (dzo * c).sum(0)])
        dW += np.einsum("gbh,bi->ghi", dz, x[t])
        dU += np.einsum("gbh,bk->ghk", dz, h_prev)
        db += dz.sum(1)
        dx[t] = np.einsum("gbh,ghi->bi", dz, W)
        dh_next = np.einsum("gbh,ghk->bk", dz, U) + dh_around
        dc_next = dc * f + dzi * p[0] + dzf * p[1] + dc_around
    grads = {"W": dW, "U": dU, "b": db}
    if cell.p is not None:
        grads["p"] = dp
    if W_hr is not None:
        grads["W_hr"] = dW_hr
    return dx, dh_next, dc_next, grads


def _run(params, x, h0, c0, config, lengths, mask):
    """Every layer and direction; returns y, h_T, c_T and what the backward pass needs, cell by cell."""
    keep, zero_output = _keep(config, lengths, mask, *x.shape[:2])
    directions = _DIRECTIONS[config.direction]
    D = len(directions)
    h_T, c_T, saved = [], [], []
    layer_input = x
    for l in range(config.num_layers):
        outputs = []
        for d, backwards in enumerate(directions):
            k = l * D + d
            order = slice(None, None, -1) if backwards else slice(None)  # time order <-> the order it runs in
            keep_d = keep[order]
            # Masked steps show zero, or the previous output: the state, once some step has run.
            show = keep_d if zero_output else np.logical_or.accumulate(keep_d, axis=0)
            y, h, c, steps = _cell_forward(params.cells[k], layer_input[order], h0[k], c0[k], keep_d, show, config.forget_bias)
            outputs.append(y[order])
            h_T.append(h)
            c_T.append(c)
            saved.append((layer_input[order], steps, show, order))
        layer_input = np.concatenate(outputs, axis=2)  # the layer above reads both directions, forward first
    return layer_input, np.stack(h_T), np.stack(c_T), saved


def forward_layer(params, x, h0, c0, *, config, lengths, mask):
    y, h_T, c_T, _ = _run(params, x, h0, c0, config, lengths, mask)
    return y, h_T, c_T


def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
    _, _, _, saved = _run(params, x, h0, c0, config, lengths, mask)
    D = len(_DIRECTIONS[config.direction])
    P = h0.shape[2]
    grads = {}
    dh0, dc0 = np.zeros_like(h0), np.zeros_like(c0)
    d_output = dy  # the cotangent of the top layer's output, then of each layer's input from the top down
    for l in reversed(range(config.num_layers)):
        d_input = 0
        for d in range(D):
            k = l * D + d
            layer_input, steps, show, order = saved[k]
            d_y = d_output[:, :, d * P : (d + 1) * P][order]
            dx, dh0[k], dc0[k], cell_grads = _cell_backward(params.cells[k], layer_input, steps, show, d_y, dh_T[k], dc_T[k])
            d_input = d_input + dx[order]  # both directions read the same input
            grads.update({f"layer {l} direction {d} {name}": g for name, g in cell_grads.items()})
        d_output = d_input
    return {"x": d_output, "h0": dh0, "c0": dc0, **grads}
