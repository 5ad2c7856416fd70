"""torch.autocast("cpu", dtype=torch.bfloat16) leaves nn.LSTM over packed sequences in float32, and a projected nn.LSTM
with its cell state in float32

Checked with: torch 2.13.0+cpu, on an AMD EPYC with AVX-512 and AVX-512 BF16 (oneDNN bfloat16 support), 2026-12-07.

Expected: a float32 nn.LSTM under bfloat16 autocast computes in bfloat16 whatever its input, as it does on a padded
tensor without a projection (y, h_n and c_n come back bfloat16).

Actual: over a PackedSequence the LSTM runs entirely in float32 (y, h_n, c_n float32); with proj_size (padded or
packed) y and h_n come back bfloat16 and c_n float32. Autocast reaches nn.LSTM on the CPU only through oneDNN's
layer op (autocast_mode.cpp: KERNEL_CPU(mkldnn_rnn_layer, lower_precision_fp)); packed sequences and projections
never take oneDNN (aten/src/ATen/native/RNN.cpp, use_mkldnn), so ATen's cell runs: over packed data no op of it is
on autocast's list, and with a projection only its products (linear, matmul) are, so the gates and h are bfloat16
while c, updated from the float32 c_0, stays float32.

Upstream: none found (searched pytorch/pytorch issues for autocast with LSTM packed sequences and proj_size,
2026-12-07); related: pytorch/pytorch#88136 (bfloat16 LSTMs on the CPU).
"""

import sys

try:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError as error:
    print(f"this reproducer needs torch: {error}")
    sys.exit(77)

print(f"torch {torch.__version__}; oneDNN bfloat16 support: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
    print("this CPU has no oneDNN bfloat16 support: bfloat16 autocast around nn.LSTM crashes here (the README's finding)")
    sys.exit(77)

torch.manual_seed(0)
x, lengths = torch.randn(5, 4, 3), torch.tensor([5, 2, 1, 4])


def dtypes(proj_size: int, packed: bool) -> tuple:
    lstm = torch.nn.LSTM(3, 4, proj_size=proj_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if packed:
            y, (h_n, c_n) = lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
            y = pad_packed_sequence(y)[0]
        else:
            y, (h_n, c_n) = lstm(x)
    return y.dtype, h_n.dtype, c_n.dtype


bf16, f32 = torch.bfloat16, torch.float32
seen = {(proj, packed): dtypes(proj, packed) for proj in (0, 2) for packed in (False, True)}
for (proj, packed), (y, h_n, c_n) in seen.items():
    print(f"proj_size={proj} {'packed' if packed else 'padded'}: y {y}, h_n {h_n}, c_n {c_n}")
reproduced = (seen[(0, False)] == (bf16, bf16, bf16) and seen[(0, True)] == (f32, f32, f32)
              and seen[(2, False)] == (bf16, bf16, f32) and seen[(2, True)] == (bf16, bf16, f32))
print("REPRODUCED: autocast leaves packed and projected nn.LSTMs (partly) in float32" if reproduced else "NOT REPRODUCED")
sys.exit(0 if reproduced else 1)
