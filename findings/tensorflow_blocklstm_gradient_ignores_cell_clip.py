"""TensorFlow's BlockLSTM gradients treat cell_clip as the identity: wrong wherever the clip binds.

Checked with: tensorflow-cpu 2.21.0 (CPU), numpy 2.4.6, Python 3.11.

tf.raw_ops.BlockLSTM (V1) and tf.raw_ops.BlockLSTMV2 clip the cell state right after its update,
c_t = clip(f_t * c_{t-1} + i_t * g_t, -cell_clip, cell_clip), and the clipped c_t feeds tanh, the output
gate's peephole and the next step. Their gradient kernels, BlockLSTMGrad (the gradient TensorFlow registers,
tensorflow/python/ops/rnn_grad.py) and BlockLSTMGradV2, have no cell_clip attribute: they cannot know where
the forward pass clipped.

Expected: the gradient of the op's forward pass, where the clip's derivative is 0 for a clipped element: the
loss's gradient with respect to x equals the gradient of the same LSTM written with TensorFlow's elementwise
ops in float64 (tf.clip_by_value), whose forward pass agrees with the op's to float32 rounding, and the
directional derivative agrees with central finite differences of the op's own forward pass.

Actual: V1's tape gradient and BlockLSTMGradV2 called directly are the gradient with the clip's derivative
taken as 1 (straight through): equal to that variant to float32 rounding (about 2e-7), off the true gradient by
up to 0.45 (the loss's gradient with respect to x; 6 steps, cell_clip 0.8, peepholes). Along a random direction
the op's own finite differences give 3.5866, the true gradient 3.5864, the op's gradient 4.3879. Without a clip
(cell_clip <= 0) the gradients are right. (The tape gradient of BlockLSTMV2 is wrong for another reason as well:
findings/tensorflow_blocklstmv2_registered_gradient.py.) TF1's LSTMCell(cell_clip) differentiates its clip
(tf.clip_by_value) and is right.

Upstream: none found (searched tensorflow/tensorflow issues and pull requests for BlockLSTM, BlockLSTMGrad,
LSTMBlockCell and LSTMBlockFusedCell gradients with cell_clip, 2026-11-23).
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

T, B, I, H, CLIP = 6, 3, 3, 4, 0.8
rng = np.random.default_rng(108)
x = rng.normal(size=(T, B, I))
h0, c0 = rng.uniform(-0.9, 0.9, (B, H)), rng.normal(size=(B, H))
W, U = rng.uniform(-1.2, 1.2, (4, H, I)), rng.uniform(-0.5, 0.5, (4, H, H))  # gates i, f, g, o
b, p = rng.uniform(-1.0, 1.0, (4, H)), rng.uniform(-0.5, 0.5, (3, H))  # peepholes i, f, o
dh, dc = rng.normal(size=(T, B, H)), rng.normal(size=(B, H))  # the loss: <dh, h> + <dc, c_T>
f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731


def op_inputs(order):
    """The op's w (I + H, 4H), rows [x; h], and b, gate columns in ``order`` (V1: i, g, f, o; V2: i, f, g, o)."""
    w = np.concatenate([W[order].transpose(2, 0, 1).reshape(I, 4 * H), U[order].transpose(2, 0, 1).reshape(H, 4 * H)])
    return dict(seq_len_max=tf.constant(T, tf.int64), cs_prev=f32(c0), h_prev=f32(h0), w=f32(w), wci=f32(p[0]),
                wcf=f32(p[1]), wco=f32(p[2]), b=f32(b[order].reshape(-1)), cell_clip=CLIP, use_peephole=True)


def op_loss(x32, order=(0, 2, 1, 3)):
    out = tf.raw_ops.BlockLSTM(x=x32, forget_bias=0.0, **op_inputs(list(order)))
    return tf.reduce_sum(out[6] * f32(dh)) + tf.reduce_sum(out[1][-1] * f32(dc)), out[6]


@tf.custom_gradient
def straight_through_clip(c):
    return tf.clip_by_value(c, -CLIP, CLIP), lambda d: d


def elementwise_loss(x64, clip):
    """The same LSTM from TensorFlow's elementwise ops, float64."""
    h, c, hs = tf.constant(h0), tf.constant(c0), []
    for t in range(T):
        z = tf.einsum("ghi,bi->gbh", W, x64[t]) + tf.einsum("ghk,bk->gbh", U, h) + b[:, None, :]
        i, f = tf.sigmoid(z[0] + p[0] * c), tf.sigmoid(z[1] + p[1] * c)
        c = clip(f * c + i * tf.tanh(z[2]))
        h = tf.sigmoid(z[3] + p[2] * c) * tf.tanh(c)
        hs.append(h)
    return tf.reduce_sum(dh * tf.stack(hs)) + tf.reduce_sum(dc * c), tf.stack(hs)


def gradient(loss_fn, value):
    variable = tf.Variable(value)
    with tf.GradientTape() as tape:
        loss, h = loss_fn(variable)
    return tape.gradient(loss, variable).numpy().astype(np.float64), h.numpy()


true_dx, h_ref = gradient(lambda v: elementwise_loss(v, lambda c: tf.clip_by_value(c, -CLIP, CLIP)), x)
straight_dx, _ = gradient(lambda v: elementwise_loss(v, straight_through_clip), x)
_, h_unclipped = gradient(lambda v: elementwise_loss(v, tf.identity), x)
v1_dx, h_op = gradient(op_loss, f32(x))

# BlockLSTMV2 forward, then BlockLSTMGradV2 called directly (it has no cell_clip attribute to pass).
inputs = op_inputs([0, 1, 2, 3])
i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(x=f32(x), **inputs)
del inputs["cell_clip"]
cs_grad = f32(np.concatenate([np.zeros((T - 1, B, H)), dc[None]]))
v2_dx = tf.raw_ops.BlockLSTMGradV2(x=f32(x), **inputs, i=i, cs=cs, f=f, o=o, ci=ci, co=co, h=h, cs_grad=cs_grad,
                                   h_grad=f32(dh))[0].numpy()

# Central finite differences of the op's own forward pass along a random direction.
direction = rng.normal(size=x.shape)
eps = 1e-3
fd = (op_loss(f32(x + eps * direction))[0].numpy() - op_loss(f32(x - eps * direction))[0].numpy()) / (2 * eps)

err = lambda a, b: float(np.max(np.abs(a - b)))  # noqa: E731
print(f"TensorFlow {tf.__version__}; T={T}, B={B}, I={I}, H={H}, cell_clip={CLIP}, peepholes")
print(f"forward: BlockLSTM h vs the float64 elementwise LSTM: {err(h_op, h_ref):.2e}; "
      f"the clip changes h by {err(h_ref, h_unclipped):.3f} (it binds)")
print(f"grad x, true (tf.clip_by_value) vs straight-through clip: {err(true_dx, straight_dx):.3f}")
for name, got in (("BlockLSTM tape (BlockLSTMGrad)", v1_dx), ("BlockLSTMGradV2 called directly", v2_dx)):
    print(f"{name}: vs true {err(got, true_dx):.3f}, vs straight-through {err(got, straight_dx):.2e}")
print(f"directional derivative: finite differences of the op {fd:.4f}, true {np.sum(true_dx * direction):.4f}, "
      f"BlockLSTM tape {np.sum(v1_dx * direction):.4f}")

reproduced = (
    err(h_op, h_ref) < 1e-5
    and err(h_ref, h_unclipped) > 0.05
    and all(err(got, true_dx) > 0.1 and err(got, straight_dx) < 1e-5 for got in (v1_dx, v2_dx))
    and abs(fd - np.sum(true_dx * direction)) < 0.1 * abs(fd - np.sum(v1_dx * direction))
)
print("REPRODUCED: the gradients take the clip as the identity" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
