"""TensorFlow registers BlockLSTM's (V1) gradient for BlockLSTMV2: tape gradients through BlockLSTMV2 are wrong.

Checked with: tensorflow-cpu 2.21.0 (CPU), numpy 2.4.6, Python 3.11.

tensorflow/python/ops/rnn_grad.py registers one function, _block_lstm_grad, for both "BlockLSTM" and
"BlockLSTMV2"; it calls gen_rnn_ops.block_lstm_grad, the V1 gradient kernel, which reads the weight columns
and the gate outputs in V1's order i, g (the candidate), f, o. BlockLSTMV2 computes in i, f, g, o (its
docstring: "this op uses IFCO"), and BlockLSTMGradV2, its own gradient kernel, is never used by tf.gradients
or tf.GradientTape.

Expected: the gradient of BlockLSTMV2's forward pass: what BlockLSTMGradV2 called directly returns, and what the
same LSTM written with TensorFlow's elementwise ops in float64 (gates i, f, g, o; its forward agrees with the op's
to float32 rounding) gives by autodiff.

Actual: the tape gradients with respect to x, w and b are off by order 1 (relative errors 1.8, 1.3 and 1.1 here,
5 steps, no clip, no peepholes); BlockLSTMGradV2 called directly agrees with the float64 gradient to float32
rounding. With one step (T = 1, no recurrence) the tape's w and b gradients are the right ones with the f and g
column blocks swapped: the V1 kernel's layout.

Upstream: none found (searched tensorflow/tensorflow issues and pull requests for BlockLSTMV2 gradient, rnn_grad.py,
_block_lstm_grad and BlockLSTMGradV2, 2026-11-23).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import tensorflow as tf
except ModuleNotFoundError as error:
    print(f"needs numpy and tensorflow: {error}")
    sys.exit(77)

B, I, H = 3, 4, 6
f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
F_AND_G_SWAPPED = [0, 2, 1, 3]  # i, f, g, o blocks read as i, g, f, o


def problem(T, seed):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.normal(size=(T, B, I)), h0=rng.uniform(-0.9, 0.9, (B, H)), c0=rng.normal(size=(B, H)),
        w=rng.uniform(-0.6, 0.6, (I + H, 4 * H)), b=rng.uniform(-0.5, 0.5, 4 * H),  # columns i, f, g, o (V2's)
        dh=rng.normal(size=(T, B, H)), dc=rng.normal(size=(B, H)),
    )


def op_gradients(d):
    """Tape gradients of <dh, h> + <dc, c_T> through BlockLSTMV2 (what TensorFlow registers), and BlockLSTMGradV2
    called directly on the same forward pass."""
    T = d["x"].shape[0]
    x, w, b = (tf.Variable(f32(d[k])) for k in ("x", "w", "b"))
    zeros = f32(np.zeros(H))
    common = dict(seq_len_max=tf.constant(T, tf.int64), cs_prev=f32(d["c0"]), h_prev=f32(d["h0"]), wci=zeros, wcf=zeros, wco=zeros)
    with tf.GradientTape() as tape:
        i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(x=x, w=w, b=b, cell_clip=0.0, use_peephole=False, **common)
        loss = tf.reduce_sum(h * f32(d["dh"])) + tf.reduce_sum(cs[-1] * f32(d["dc"]))
    tape_grads = [g.numpy() for g in tape.gradient(loss, [x, w, b])]
    cs_grad = f32(np.concatenate([np.zeros((T - 1, B, H)), d["dc"][None]]))
    direct = tf.raw_ops.BlockLSTMGradV2(x=x, w=w, b=b, use_peephole=False, **common, i=i, cs=cs, f=f, o=o, ci=ci, co=co,
                                        h=h, cs_grad=cs_grad, h_grad=f32(d["dh"]))
    direct_grads = [direct[0].numpy(), direct[3].numpy(), direct[7].numpy()]  # x, w, b (of x, cs_prev, h_prev, w, wci, wcf, wco, b)
    return tape_grads, direct_grads, h.numpy()


def reference_gradients(d):
    """The same LSTM from TensorFlow's elementwise ops in float64, gates i, f, g, o."""
    x, w, b = (tf.Variable(d[k]) for k in ("x", "w", "b"))
    with tf.GradientTape() as tape:
        h, c, hs = tf.constant(d["h0"]), tf.constant(d["c0"]), []
        for t in range(d["x"].shape[0]):
            i, f, g, o = tf.split(tf.concat([x[t], h], axis=1) @ w + b, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            hs.append(h)
        loss = tf.reduce_sum(tf.stack(hs) * d["dh"]) + tf.reduce_sum(c * d["dc"])
    return [g.numpy() for g in tape.gradient(loss, [x, w, b])], tf.stack(hs).numpy()


def relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


print(f"TensorFlow {tf.__version__}; B={B}, I={I}, H={H}, no clip, no peepholes")
d = problem(5, seed=21)
(tape, direct, h_op), (expected, h_ref) = op_gradients(d), reference_gradients(d)
print(f"T=5 forward: BlockLSTMV2 h vs float64 elementwise LSTM: {np.max(np.abs(h_op - h_ref)):.2e}")
wrong = []
for name, t, g, e in zip(("x", "w", "b"), tape, direct, expected):
    print(f"  grad {name}: tape (registered) relative error {relative(t, e):.3f}; BlockLSTMGradV2 directly {relative(g, e):.2e}")
    wrong.append(relative(t, e) > 0.1 and relative(g, e) < 1e-5)

d1 = problem(1, seed=22)
(tape1, _, _), (expected1, _) = op_gradients(d1), reference_gradients(d1)
swap = lambda a: a.reshape(*a.shape[:-1], 4, H)[..., F_AND_G_SWAPPED, :].reshape(a.shape)  # noqa: E731
swapped = [relative(swap(t), e) for t, e in zip(tape1[1:], expected1[1:])]
print(f"T=1: tape w and b with the f and g column blocks swapped back: relative errors {swapped[0]:.2e}, {swapped[1]:.2e}")

reproduced = np.max(np.abs(h_op - h_ref)) < 1e-5 and all(wrong) and max(swapped) < 1e-5
print("REPRODUCED: the registered gradient of BlockLSTMV2 is V1's" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
