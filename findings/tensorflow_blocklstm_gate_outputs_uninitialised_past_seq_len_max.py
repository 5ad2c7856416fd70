"""TensorFlow's BlockLSTM / BlockLSTMV2 leave the gate outputs i, f, o, ci, co uninitialised past seq_len_max.

Checked with: tensorflow-cpu 2.21.0 (CPU), numpy 2.4.6, Python 3.11.

The ops return seven tensors (T, B, H): the gates i, f, o, the candidate ci, the cell state cs, co = tanh(cs) and
the output h. Their documentation of seq_len_max says: "Maximum time length actually used by this input.
Outputs are padded with zeros beyond this length."

Expected: every output zero at steps t >= seq_len_max (the documentation; this project's spec, whose lengths are
per row, also has zero outputs past a row's length).

Actual: cs and h are zero there, but i, f, o, ci and co hold whatever the allocator left in the buffer: seen
values up to 1e36, and NaN, varying from call to call (so the script calls each op up to 20 times). Code that
reads a gate tensor (to inspect the gates, or a gradient that used them) over the whole padded length reads
garbage. In-range steps are right. This project's adapters pass seq_len_max = T and read only cs and h, so no
conformance row is affected.

Upstream: none found (searched tensorflow/tensorflow issues and pull requests for BlockLSTM seq_len_max padding,
uninitialised outputs, 2026-11-23). The nearest, microsoft/onnxruntime#1193, fixed the same corner (outputs
between the longest sequence_lens and T left uninitialised) in ONNX Runtime's LSTM.
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

T, B, I, H, SEQ_LEN_MAX, TRIALS = 8, 3, 3, 4, 3, 20
NAMES = ("i", "cs", "f", "o", "ci", "co", "h")
rng = np.random.default_rng(0)


def call(op):
    """The seven outputs of one call with seq_len_max < T, as NumPy arrays by name."""
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    zeros = np.zeros(H, np.float32)
    out = op(seq_len_max=tf.constant(SEQ_LEN_MAX, tf.int64), x=f32(T, B, I), cs_prev=f32(B, H), h_prev=f32(B, H),
             w=f32(I + H, 4 * H), wci=zeros, wcf=zeros, wco=zeros, b=f32(4 * H), cell_clip=0.0, use_peephole=False)
    return dict(zip(NAMES, (o.numpy() for o in out)))


documented = "padded with zeros beyond this length" in " ".join(tf.raw_ops.BlockLSTMV2.__doc__.split())
print(f"TensorFlow {tf.__version__}; T={T}, seq_len_max={SEQ_LEN_MAX}; documented as zero-padded: {documented}")
reproduced = documented
for name in ("BlockLSTM", "BlockLSTMV2"):
    op = getattr(tf.raw_ops, name)
    garbage, state_zero = {}, True
    for trial in range(TRIALS):
        out = call(op)
        state_zero &= not out["cs"][SEQ_LEN_MAX:].any() and not out["h"][SEQ_LEN_MAX:].any()
        for gate in ("i", "f", "o", "ci", "co"):
            past = out[gate][SEQ_LEN_MAX:]
            if past.any():
                finite = past[np.isfinite(past)]
                garbage.setdefault(gate, (trial, float(np.abs(finite).max()) if finite.size else 0.0, not np.isfinite(past).all()))
    for gate, (trial, largest, nonfinite) in sorted(garbage.items()):
        print(f"{name}: {gate} past seq_len_max, first seen in call {trial + 1}: largest |value| {largest:.3g}"
              + (", and non-finite values" if nonfinite else ""))
    print(f"{name}: cs and h past seq_len_max zero in every call: {state_zero}")
    reproduced = reproduced and bool(garbage) and state_zero

print("REPRODUCED: gate outputs past seq_len_max are not zero" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
