"""torch.autocast("cpu", dtype=torch.float16) around nn.LSTM crashes on a CPU without oneDNN float16 support

Checked with: torch 2.13.0+cpu, on an AMD EPYC with AVX-512 and AVX-512 BF16 but no AVX-512 FP16 or AMX
(torch.ops.mkldnn._is_mkldnn_fp16_supported() is False).

Expected: a float32 nn.LSTM under float16 autocast runs in float16 (or in float32, where autocast keeps it), as the
same module run in float16 without autocast does on this CPU (ATen's own cell), and as bfloat16 autocast does.

Actual: RuntimeError: could not create a primitive descriptor for the LSTM forward propagation primitive.
aten/src/ATen/native/RNN.cpp decides to use oneDNN on the float32 input (use_mkldnn: float32 always qualifies),
then autocast (autocast_mode.cpp: KERNEL_CPU(mkldnn_rnn_layer, lower_precision_fp)) casts the layer's tensors to
float16, which oneDNN refuses on a CPU without float16 support; the float16 check in use_mkldnn
(mkldnn_fp16_device_check) is never reached. The same under torch.no_grad(). With oneDNN off
(torch.backends.mkldnn.flags(enabled=False)) it runs.

Upstream: related, not this case: pytorch/pytorch#88136 (the same message for bfloat16 LSTMs on CPU, in its
comments), intel/torch-xpu-ops#4066 (bfloat16 autocast, fixed by pytorch/pytorch PR #187334); none found for
float16 autocast (searched pytorch/pytorch issues, 2026-12-07).
"""

import sys

try:
    import torch
except ImportError as error:
    print(f"this reproducer needs torch: {error}")
    sys.exit(77)

print(f"torch {torch.__version__}; oneDNN float16 support: {torch.ops.mkldnn._is_mkldnn_fp16_supported()}")
if torch.ops.mkldnn._is_mkldnn_fp16_supported():
    print("this CPU has oneDNN float16 support: the crash needs one without it (AVX-512 FP16 or AMX-FP16 absent)")
    sys.exit(77)

torch.manual_seed(0)
lstm = torch.nn.LSTM(4, 8)
x = torch.randn(5, 2, 4)


def run(**autocast) -> str:
    try:
        with torch.autocast("cpu", **autocast):
            y, _ = lstm(x)
    except RuntimeError as error:
        return f"RuntimeError: {str(error).splitlines()[0]}"
    return f"ran ({y.dtype})"


results = {"bfloat16": run(dtype=torch.bfloat16), "float16": run(dtype=torch.float16)}
with torch.backends.mkldnn.flags(enabled=False):
    results["float16, oneDNN off"] = run(dtype=torch.float16)
for what, result in results.items():
    print(f"autocast {what}: {result}")
reproduced = (results["float16"].startswith("RuntimeError: could not create a primitive descriptor for the LSTM")
              and results["float16, oneDNN off"].startswith("ran"))
print("REPRODUCED: float16 autocast crashes in oneDNN's LSTM" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
