"""What the benchmark matrix measures: shapes, FLOP and byte counts, the roofline, and DeepBench's reference.

Conventions
- FLOPs: 8 * B * H * (I + H) * T per forward pass (the two matrix products; elementwise work is
  not counted), three times that for forward + backward. DeepBench counts only the recurrent
  product (8 * H * H * B * T per pass), so its rates are not comparable with ours; its *times*
  are shown beside ours instead.
- Bytes: what a pass must move at least, in the dtype's size: the input projection's weights once
  (4H x I), the recurrent weights once per step (4H x H, since a step's product cannot start
  before the previous step's h), the sequence in and out (x, h for every step) and the states.
  Forward + backward counts three times that.
- Roofline: min(matrix-product rate, bytes' arithmetic intensity x memory bandwidth), both rates
  measured in the same run on the same device; the fraction reported is achieved / roofline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from spec.cases import Case

PASSES = ("forward", "forward+backward")

#: The speed benches' case (DeepBench-like): B=64, T=25, I=H=512.
BENCH_CASE = Case("bench", T=25, B=64, I=512, H=512, peephole=False, seed=11)


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    I: int
    H: int
    sets: tuple[str, ...]  # "quick", "full"
    inference: bool = False  # forward only (DeepBench's inference set)

    @property
    def passes(self) -> tuple[str, ...]:
        return ("forward",) if self.inference else PASSES


def _deepbench(H, B, T, sets=("full",)):
    return Shape(f"deepbench-H{H}-B{B}-T{T}", B=B, T=T, I=H, H=H, sets=sets)


def _inference(H, B, T=25):
    return Shape(f"inference-H{H}-B{B}-T{T}", B=B, T=T, I=H, H=H, sets=("full",), inference=True)


#: The classic MNIST row-by-row LSTM, a subset of DeepBench's training set, and inference.
SHAPES: tuple[Shape, ...] = (
    Shape("mnist-rows", B=128, T=28, I=28, H=128, sets=("quick", "full")),
    _deepbench(512, 64, 25, sets=("quick", "full")),
    _deepbench(512, 16, 25),
    _deepbench(1024, 16, 25),
    _deepbench(1024, 64, 25),
    _deepbench(2048, 16, 25),
    _deepbench(2048, 64, 25),
    _deepbench(256, 64, 150),
    _inference(512, 1),
    _inference(512, 4),
    _inference(1024, 1),
    _inference(1024, 4),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}

#: DeepBench (baidu-research/DeepBench, results/train, V100 sheet of 2019-10-07), float32, cuDNN 7.6,
#: milliseconds: forward, backward-data, backward-weights. Key: (H, B, T).
DEEPBENCH_V100_TRAIN_MS = {
    (512, 64, 25): (1.34, 1.26, 0.44),
    (1024, 16, 25): (1.92, 1.66, 0.45),
    (1024, 64, 25): (2.21, 2.04, 1.16),
    (2048, 64, 25): (5.57, 4.87, 4.10),
    (256, 64, 150): (6.70, 5.80, 0.61),
}
#: DeepBench's inference results (forward only, 1080 Ti, float32), milliseconds. Key: (H, B, T).
DEEPBENCH_1080TI_INFERENCE_MS = {(512, 1, 25): 0.89, (1024, 1, 25): 1.89, (1024, 4, 25): 2.06}


def time_rounds(benchmark, run, seconds: float, least: int, most: int) -> float:
    """Time ``run`` (already warmed up) in as many rounds as fit ``seconds``, within [least, most], with
    pytest-benchmark; the median in seconds. One untimed call first sizes the rounds."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    rounds = int(max(least, min(most, seconds / max(once, 1e-6))))
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    return benchmark.stats.stats.median


def deepbench_ms(shape: Shape, pass_: str) -> tuple[float, str] | None:
    """DeepBench's published time for this shape and pass, and what it was measured on."""
    key = (shape.H, shape.B, shape.T)
    if shape.I != shape.H:
        return None
    if shape.inference:
        ms = DEEPBENCH_1080TI_INFERENCE_MS.get(key)
        return (ms, "DeepBench 1080 Ti fp32") if ms is not None and pass_ == "forward" else None
    times = DEEPBENCH_V100_TRAIN_MS.get(key)
    if times is None:
        return None
    return (times[0] if pass_ == "forward" else sum(times)), "DeepBench V100 fp32 cuDNN 7.6"


def flop(shape: Shape, pass_: str) -> float:
    forward = 8.0 * shape.B * shape.H * (shape.I + shape.H) * shape.T
    return forward * (3 if pass_ == "forward+backward" else 1)


#: Bytes per element of each dtype a benchmark runs in (NumPy has no bfloat16).
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def bytes_moved(shape: Shape, pass_: str, dtype: str) -> float:
    size = ITEMSIZE[dtype]
    B, T, I, H = shape.B, shape.T, shape.I, shape.H
    forward = size * (4 * H * I + T * 4 * H * H + T * B * (I + H) + 2 * B * H)
    return forward * (3 if pass_ == "forward+backward" else 1)


def roofline_fraction(shape: Shape, pass_: str, dtype: str, seconds: float, matmul_flops: float, bandwidth: float) -> float:
    """Achieved FLOP rate over min(matmul rate, intensity * bandwidth)."""
    intensity = flop(shape, pass_) / bytes_moved(shape, pass_, dtype)
    bound = min(matmul_flops, intensity * bandwidth)
    return flop(shape, pass_) / seconds / bound


def shapes_in(which: str) -> list[Shape]:
    if which not in ("quick", "full"):
        raise ValueError(f"benchmark set {which!r}: expected quick or full")
    return [s for s in SHAPES if which in s.sets]


# ---------------------------------------------------------------------------
# The layer: a deep bidirectional stack, padded against variable lengths
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerShape:
    """A stack of bidirectional layers at one size, run padded (every row all T steps) and with variable
    lengths (each row its own, packed or masked as the framework does it), on the same data."""

    name: str
    B: int
    T: int
    I: int
    H: int
    L: int
    sets: tuple[str, ...]
    #: The rows' lengths in the variable-length runs: evenly spaced from shortest to T, as Braun's benchmark.
    shortest: int = 0

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(int(round(v)) for v in np.linspace(self.shortest, self.T, self.B))


#: Braun, "LSTM Benchmarks for Deep Learning Frameworks" (arXiv:1806.01818; github.com/stefbraun/rnn_benchmarks):
#: 4 bidirectional layers of 320 units over 123 features, a batch of 25 sequences of 1000 steps, and for the
#: variable-length runs lengths 500 .. 1000. The quick set keeps the layers and widths at a tenth of the length.
LAYER_SHAPES: tuple[LayerShape, ...] = (
    LayerShape("braun-4x320-T100", B=25, T=100, I=123, H=320, L=4, sets=("quick", "full"), shortest=50),
    LayerShape("braun-4x320", B=25, T=1000, I=123, H=320, L=4, sets=("full",), shortest=500),
)
#: How a layer benchmark feeds its sequences: all padded, or each row its own length.
LENGTHS = ("padded", "variable")


def layer_shapes_in(set_name: str) -> list[LayerShape]:
    return [shape for shape in LAYER_SHAPES if set_name in shape.sets]


def layer_flop(shape: LayerShape, pass_: str, steps: float | None = None) -> float:
    """8 B H (I + H) per step, per direction and layer (layer 0 reads I features, the others 2H), times the
    steps computed: T for every row when padded; the sum of the lengths over B when ``steps`` (row-steps) is
    given. Forward + backward: three times the forward."""
    per_row_step = 8.0 * shape.H * ((shape.I + shape.H) + (shape.L - 1) * (2 * shape.H + shape.H)) * 2
    row_steps = shape.B * shape.T if steps is None else steps
    return per_row_step * row_steps * (3 if pass_ == "forward+backward" else 1)
