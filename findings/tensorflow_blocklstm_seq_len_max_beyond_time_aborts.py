"""TensorFlow's BlockLSTM and BlockLSTMV2 abort the Python process when seq_len_max exceeds x's time dimension.

Checked with: tensorflow-cpu 2.21.0 (CPU), numpy 2.4.6, Python 3.11.

seq_len_max is the ops' one length for the whole batch ("Maximum time length actually used by this input"). It
is checked for rank only, never against x's time dimension T.

Expected: an error the caller can catch (tf.errors.InvalidArgumentError), as for every other bad argument of
the ops; a length beyond T has no meaning (this project's spec has no seq_len_max: its lengths are per row,
0 <= L_b <= T, and an adapter never passes more than T).

Actual: with seq_len_max = T + 1 both ops fail a CHECK in Tensor::Slice ("Check failed: limit <= dim0_size")
and the whole process dies with SIGABRT: nothing is raised, nothing can be caught. Each op runs here in a child
process.

Upstream: known and fixed after 2.21.0. tensorflow/tensorflow#124974 ("tf.raw_ops.BlockLSTMGrad crashes with
fatal check failure (SIGABRT) in Tensor::Slice when seq_len_max exceeds tensor dimension size", filed against
2.21.0, closed); the fix, https://github.com/tensorflow/tensorflow/pull/125400 (merged; also
https://github.com/tensorflow/tensorflow/pull/125038), validates seq_len_max in [0, timelen] in both BlockLSTMOp
and BlockLSTMGradOp, the forward ops reproduced here included. The V2 gradient op's report,
tensorflow/tensorflow#106407, is the same bug. Nothing new to report upstream: this script pins that the
release this project uses still aborts; under a TensorFlow with the fix it exits 1 (then update the finding).
"""

import importlib.util
import signal
import subprocess
import sys

missing = [name for name in ("numpy", "tensorflow") if importlib.util.find_spec(name) is None]
if missing:
    print(f"needs numpy and tensorflow: {', '.join(missing)} not installed")
    sys.exit(77)

CHILD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
T, B, I, H = 4, 2, 3, 5
rng = np.random.default_rng(0)
f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)
op = getattr(tf.raw_ops, sys.argv[1])
try:
    op(seq_len_max=tf.constant(T + 1, tf.int64), x=f32(T, B, I), cs_prev=f32(B, H), h_prev=f32(B, H), w=f32(I + H, 4 * H),
       wci=f32(H), wcf=f32(H), wco=f32(H), b=f32(4 * H), cell_clip=0.0)
except tf.errors.OpError as error:
    print("raised", type(error).__name__, error)
    sys.exit(3)
print("returned")
"""

results = {}
for op in ("BlockLSTM", "BlockLSTMV2"):
    done = subprocess.run([sys.executable, "-c", CHILD, op], capture_output=True, text=True, timeout=300)
    check = next((line.strip() for line in done.stderr.splitlines() if "Check failed" in line), "")
    how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else f"exit status {done.returncode}"
    print(f"{op}(seq_len_max = T + 1): the process ended with {how}; {check or done.stdout.strip()}")
    results[op] = done.returncode == -signal.SIGABRT and "Check failed: limit <= dim0_size" in check

reproduced = all(results.values())
print("REPRODUCED: seq_len_max > T aborts the process" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
