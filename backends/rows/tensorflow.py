"""TensorFlow's block LSTM kernels ``tf.raw_ops.BlockLSTM`` (V1) and ``tf.raw_ops.BlockLSTMV2`` (Keras 3's layers
on the TensorFlow backend run V2; TF1's cells run V1's kernel layout). Layouts: backends/layouts/tf_block.py;
runtime: backends/runtimes/tensorflow.py.

What the ops run is the rows' layer: one forward layer over time-major x, peepholes, a forget bias (V1's attribute,
folded into b for V2) and ``cell_clip`` (the spec's (4c)). ``seq_len_max`` is one length for the whole batch, so
sequence lengths are not declared. The kernels run float32 (and half) only and cannot be XLA-compiled: the calls run
in plain ``tf.function``s.

Gradients: by ``tf.GradientTape``, i.e. the gradient TensorFlow registers for the op. TensorFlow 2.21 registers V1's
gradient for V2 too (it assumes V1's i, g, f, o column order), so tape gradients through V2 are wrong:
``tensorflow/BlockLSTMV2+registered-gradient`` ships them as they are (a known non-conformance),
``tensorflow/BlockLSTMV2+BlockLSTMGradV2`` calls ``BlockLSTMGradV2`` directly. The gradient kernels have no
cell_clip attribute and differentiate the clip as the identity: a known non-conformance of every block row's
gradients with a cell clip (findings/tensorflow_blocklstm_gradient_ignores_cell_clip.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.layouts import tf_block as layouts
from backends.runtimes.tensorflow import TENSORFLOW, tensorflow
from contract.row import KnownFailure, Row
from contract.vocabulary import Device, Dtype, Feature, Kind
from spec.precision import Policy

FLOAT32_ONLY = "TensorFlow's block LSTM kernels run float32 and half only"
NO_BFLOAT16 = (
    "TensorFlow's block LSTM ops have no bfloat16 kernel: \"Value for attr 'T' of bfloat16 is not in the list of allowed "
    "values: half, float\" (tensorflow/core/ops/rnn_ops.cc; findings/tensorflow_blocklstm_bfloat16_not_registered.py)"
)
_SEQ_LEN_MAX = (
    "BlockLSTM's only length is seq_len_max, one for the whole batch: per-row sequence lengths cannot be expressed "
    "(one length for every row is x[:length], and seq_len_max = 0 cannot return the initial state)"
)
_NO_MASK = "BlockLSTM takes no mask"
CALL_REASONS = {Feature.LENGTHS: _SEQ_LEN_MAX, Feature.EMPTY_SEQUENCES: _SEQ_LEN_MAX, Feature.MASK: _NO_MASK,
                Feature.MASK_PREVIOUS_OUTPUT: _NO_MASK}

#: Why tape gradients through BlockLSTMV2 are wrong (a known non-conformance of that row).
REGISTERED_V2_GRADIENT = (
    "TensorFlow 2.21 registers the same gradient function for BlockLSTM and BlockLSTMV2 "
    "(tensorflow/python/ops/rnn_grad.py); it calls the V1 gradient kernel, which assumes the "
    "i,g,f,o gate order, while V2 computes in i,f,g,o: tape gradients through BlockLSTMV2 are wrong "
    "(findings/tensorflow_blocklstmv2_registered_gradient.py; no upstream issue found)"
)
#: Why the block ops' float16 outputs leave half-every-operation's bounds on the longer cases (a known non-conformance).
FLOAT16_HALF_ACCUMULATION = (
    "TensorFlow 2.21's block LSTM kernels in float16 on CPU accumulate xh * w in float16, term by term (each product "
    "and partial sum rounded: the CPU GEMM, TensorBlasGemm<CPUDevice>, is an Eigen contraction in Eigen::half), where "
    "tf.matmul accumulates in float32: outside every precision policy, and the suite's diagnosis matches it bit for "
    "bit. Reproducer: findings/tensorflow_blocklstm_float16_accumulates_in_half.py; upstream: related "
    "tensorflow/tensorflow#18443, #27544, none for these ops"
)
#: The cases whose bounds its outputs exceed (the others, of a few steps or units, stay within them: saturating too,
#: since the bounds hold XLA's, flax's and jax.experimental.rnn's orders of evaluation).
FLOAT16_HALF_ACCUMULATION_CASES = ("saturating-peephole", "medium", "medium-peephole")
#: Why the block ops' gradients are not their forward pass's where cell_clip binds (a known non-conformance).
CELL_CLIP_GRADIENT = (
    "TensorFlow's block LSTM gradient kernels (BlockLSTMGrad, BlockLSTMGradV2) have no cell_clip attribute: they "
    "differentiate the cell state as if it were never clipped (the clip's derivative taken as 1, straight through), "
    "while the forward pass clips it, so every gradient is wrong where the clip binds"
)


FLOAT16_CPU = (KnownFailure(FLOAT16_HALF_ACCUMULATION, kinds=(Kind.OUTPUTS,), dtype=Dtype.FLOAT16, device=Device.CPU,
                            cases=FLOAT16_HALF_ACCUMULATION_CASES),
               # Its gradient kernel's products are the same half GEMM; saturating-peephole's gradients stay within.
               KnownFailure(FLOAT16_HALF_ACCUMULATION, kinds=(Kind.GRADIENTS,), dtype=Dtype.FLOAT16, device=Device.CPU,
                            cases=("saturating", "medium", "medium-peephole")))


def block_arguments(native, x, h0, c0) -> dict:
    """The block op's arguments for one cell: time-major x, seq_len_max = T, the state of cell 0."""
    tf = tensorflow()
    return dict(seq_len_max=tf.cast(tf.shape(x)[0], tf.int64), x=x, cs_prev=c0[0], h_prev=h0[0],
                **{name: native[name] for name in layouts.WEIGHTS})


@dataclass(eq=False)
class BlockLSTM(Row):
    """tf.raw_ops.BlockLSTM or BlockLSTMV2, as its layout (BLOCK_V1 or BLOCK_V2) says; gradients by the tape."""

    id: str = "tensorflow/BlockLSTM"
    description: str = ("tf.raw_ops.BlockLSTM (V1: gates i,g,f,o; forget_bias and cell_clip passed explicitly), "
                        "gradients by tf.GradientTape")
    runtime: object = TENSORFLOW
    layout: object = layouts.BLOCK_V1
    features: frozenset = frozenset({Feature.PEEPHOLE, Feature.CELL_CLIP})
    dtypes: tuple = (Dtype.FLOAT32, Dtype.FLOAT16)
    #: The block kernel in half (tensorflow/core/kernels/rnn/lstm_ops.h): every elementwise operation an Eigen
    #: expression in half, each result rounded; the products by a half GEMM.
    policies: dict = field(default_factory=lambda: {Dtype.FLOAT16: Policy.EVERY_OPERATION})
    devices: tuple = (Device.CPU, Device.CUDA)
    reasons: dict = field(default_factory=lambda: {Dtype.FLOAT64: FLOAT32_ONLY, Dtype.BFLOAT16: NO_BFLOAT16, **CALL_REASONS})
    known_failures: tuple = (KnownFailure(CELL_CLIP_GRADIENT, kinds=(Kind.GRADIENTS,), features=frozenset({Feature.CELL_CLIP})),
                             *FLOAT16_CPU)

    def call(self, native, x, h0, c0, lengths, mask, *, layer):
        tf = tensorflow()
        op = tf.raw_ops.BlockLSTM if self.layout.version == 1 else tf.raw_ops.BlockLSTMV2
        attributes = {name: native[name] for name in ("forget_bias", "cell_clip", "use_peephole") if name in native}
        _, cs, _, _, _, _, h = op(**block_arguments(native, x, h0, c0), **attributes)
        return h, h[-1:], cs[-1:]


def block_v2_gradients(native, x, h0, c0, dy, dh_T, dc_T):
    """BlockLSTMV2, then BlockLSTMGradV2 called directly with its outputs and the cotangents: (gradients of w, wci, wcf,
    wco and b by name, dx, dh0, dc0)."""
    tf = tensorflow()
    arguments = block_arguments(native, x, h0, c0)
    i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(**arguments, cell_clip=native["cell_clip"], use_peephole=native["use_peephole"])
    # h_T is h at T-1 and c_T is cs at T-1: their cotangents join the last step's.
    h_grad = tf.concat([dy[:-1], dy[-1:] + dh_T], axis=0)
    cs_grad = tf.concat([tf.zeros_like(dy[:-1]), dc_T], axis=0)
    # BlockLSTMGradV2 has no cell_clip attribute: CELL_CLIP_GRADIENT.
    dx, dc0, dh0, *weights = tf.raw_ops.BlockLSTMGradV2(**arguments, i=i, cs=cs, f=f, o=o, ci=ci, co=co, h=h, cs_grad=cs_grad,
                                                        h_grad=h_grad, use_peephole=native["use_peephole"])
    return dict(zip(layouts.WEIGHTS, weights)), dx, dh0[None], dc0[None]


@dataclass(eq=False)
class BlockLSTMGradV2(BlockLSTM):
    """BlockLSTMV2 with its gradients by BlockLSTMGradV2 called directly (:func:`block_v2_gradients`), not the tape."""

    def vjp(self, built, inputs, cotangents, extra, *, layer):
        return self.runtime.run(block_v2_gradients, built, *inputs, *cotangents)


ROWS = (
    BlockLSTM(),
    BlockLSTM(
        id="tensorflow/BlockLSTMV2+registered-gradient",
        description="tf.raw_ops.BlockLSTMV2 (gates i,f,g,o; forget bias folded into b), gradients by tf.GradientTape "
        "as TensorFlow 2.21 registers them (V1's gradient: wrong for V2)",
        layout=layouts.BLOCK_V2,
        known_failures=(KnownFailure(REGISTERED_V2_GRADIENT, kinds=(Kind.GRADIENTS,)), *FLOAT16_CPU),
    ),
    BlockLSTMGradV2(
        id="tensorflow/BlockLSTMV2+BlockLSTMGradV2",
        description="tf.raw_ops.BlockLSTMV2 (gates i,f,g,o; forget bias folded into b), gradients by calling "
        "tf.raw_ops.BlockLSTMGradV2 directly",
        layout=layouts.BLOCK_V2,
    ),
)
