"""TensorFlow's BlockLSTM and BlockLSTMV2 have no bfloat16 kernel (float16 and float32 only)

Checked with: tensorflow-cpu 2.21.0 (CPU), numpy 2.4.6, Python 3.11.

Expected: the fused LSTM ops run in bfloat16, the half type TensorFlow's CPUs and TPUs favour and Keras'
mixed_bfloat16 policy computes in, as they run in float16.

Actual: InvalidArgumentError (or TypeError, by path): "Value for attr 'T' of bfloat16 is not in the list of allowed
values: half, float": the ops' registration (tensorflow/core/ops/rnn_ops.cc, attr T: {half, float}) leaves bfloat16
out, so a bfloat16 LSTM in TensorFlow must be Keras' generic loop of elementwise ops. float16 runs.

Upstream: related, for Keras' LSTM layer before Keras 3: tensorflow/tensorflow#57411 and #50282 ("DataType bfloat16
not in list of allowed values"); none found for the raw ops (searched tensorflow/tensorflow issues, 2026-12-07).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import tensorflow as tf
except ImportError as error:
    print(f"this reproducer needs tensorflow: {error}")
    sys.exit(77)

T, B, I, H = 3, 2, 4, 5
rng = np.random.default_rng(0)
print(f"tensorflow {tf.__version__}")


def run(op, dtype) -> str:
    def tensor(*shape):
        return tf.constant(rng.normal(size=shape) * 0.1, dtype=dtype)

    arguments = dict(seq_len_max=tf.constant(T, tf.int64), x=tensor(T, B, I), cs_prev=tensor(B, H), h_prev=tensor(B, H),
                     w=tensor(I + H, 4 * H), wci=tensor(H), wcf=tensor(H), wco=tensor(H), b=tensor(4 * H),
                     cell_clip=-1.0, use_peephole=False)
    if op is tf.raw_ops.BlockLSTM:
        arguments["forget_bias"] = 0.0
    try:
        outputs = op(**arguments)
    except (tf.errors.InvalidArgumentError, TypeError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return f"ran ({outputs[-1].dtype.name})"


results = {(op.__name__, dtype.name): run(op, dtype)
           for op in (tf.raw_ops.BlockLSTM, tf.raw_ops.BlockLSTMV2) for dtype in (tf.float16, tf.bfloat16)}
for (op, dtype), result in results.items():
    print(f"{op} {dtype}: {result}")
reproduced = all(result.startswith("ran") for (_, dtype), result in results.items() if dtype == "float16") and all(
    "bfloat16 is not in the list of allowed values" in result for (_, dtype), result in results.items() if dtype == "bfloat16")
print("REPRODUCED: no bfloat16 BlockLSTM" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
