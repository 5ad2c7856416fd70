"""What the benchmark matrix measures: one table of shapes, their variants, FLOP and byte counts, the roofline, and
DeepBench's reference.

A shape is a layer (spec/layer.py's LayerConfig) at one size: the cell's shapes are one forward layer, timed in two
variants, without and with peepholes; a shape with variable lengths (Braun's stack) is timed padded (every row all T
steps) and with each row its own length, on the same data.

Conventions
- FLOPs: 8 * B * H * (I_l + H) per step, direction and layer (I_l: I for layer 0, D * H above it), for the steps
  computed: T per row padded, each row's length with variable lengths (the *useful* steps); three times that for
  forward + backward. For one layer this is DeepBench's 8 * B * H * (I + H) * T, but DeepBench counts only the
  recurrent product (8 * H * H * B * T per pass), so its rates are not comparable with ours; its *times* are shown
  beside ours instead.
- Bytes: what a pass must move at least, in the dtype's size, per direction and layer: the input projection's
  weights once (4H x I_l), the recurrent weights once per step (4H x H, since a step's product cannot start before
  the previous step's h), the sequence in and out (x, h for every step) and the states. Forward + backward counts
  three times that.
- Roofline: min(matrix-product rate, bytes' arithmetic intensity x memory bandwidth), both rates measured in the
  same run on the same device; the fraction reported is achieved / roofline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spec.cases import Case
from spec.layer import LayerConfig

FORWARD, FORWARD_BACKWARD = "forward", "forward+backward"
PASSES = (FORWARD, FORWARD_BACKWARD)

#: The speed benches' case (DeepBench-like): one layer, B=64, T=25, I=H=512 (the cell table's stream names, so its
#: data is what it was when the cell had a case table of its own).
BENCH_CASE = Case("bench", T=25, B=64, I=512, H=512, layer=LayerConfig(), seed=11, cell_streams=True)


@dataclass(frozen=True)
class Variant:
    """One way a shape is timed: with or without peepholes, padded or with each row its own length."""

    name: str
    peephole: bool = False
    #: Each row its own length (the shape's lengths), given as sequence lengths or a mask as the row takes them.
    variable_lengths: bool = False


#: The cell's variants, and a stack's with variable lengths (the report sets each pair side by side).
CELL_VARIANTS = (Variant("standard"), Variant("peephole", peephole=True))
LENGTH_VARIANTS = (Variant("padded"), Variant("variable", variable_lengths=True))
VARIANTS_BY_NAME = {v.name: v for v in CELL_VARIANTS + LENGTH_VARIANTS}


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    I: int
    H: int
    sets: tuple[str, ...]  # "quick", "full"
    #: The architecture: one forward layer (the cell) unless it says otherwise; peepholes are a variant.
    layer: LayerConfig = field(default_factory=LayerConfig)
    inference: bool = False  # forward only (DeepBench's inference set)
    #: Variable lengths: the rows' lengths evenly spaced from ``shortest`` to T (Braun's benchmark); None: padded only.
    shortest: int | None = None
    seed: int = 2024

    @property
    def passes(self) -> tuple[str, ...]:
        return (FORWARD,) if self.inference else PASSES

    @property
    def variants(self) -> tuple[Variant, ...]:
        return LENGTH_VARIANTS if self.shortest is not None else CELL_VARIANTS

    @property
    def L(self) -> int:
        return self.layer.num_layers

    @property
    def D(self) -> int:
        return self.layer.num_directions

    @property
    def lengths(self) -> tuple[int, ...] | None:
        if self.shortest is None:
            return None
        return tuple(int(round(v)) for v in np.linspace(self.shortest, self.T, self.B))

    def config(self, variant: Variant) -> LayerConfig:
        """The LayerConfig a variant runs (zero outputs at masked steps: what lengths mean, spec (13))."""
        layer = replace(self.layer, peephole=variant.peephole)
        return replace(layer, zero_output_for_mask=True) if variant.variable_lengths else layer

    def case(self, variant: Variant) -> Case:
        """The spec case whose data a variant runs on. Padded and variable share one, with the lengths (the padded runs
        leave them out); a one-layer shape's data is drawn from the cell table's streams, as before the tables were
        one."""
        layer = replace(self.layer, peephole=variant.peephole, zero_output_for_mask=self.shortest is not None)
        return Case(self.name + ("-peephole" if variant.peephole else ""), self.T, self.B, self.I, self.H, layer,
                    lengths=self.lengths, seed=self.seed, cell_streams=self.L == 1 and self.D == 1)

    def row_steps(self, variant: Variant) -> int:
        """The steps computed, summed over the batch: every row all T padded, each its length otherwise."""
        return int(sum(self.lengths)) if variant.variable_lengths else self.B * self.T

    @property
    def useful_row_steps(self) -> int:
        """The steps inside each row's length (all of them for a shape without lengths)."""
        return int(sum(self.lengths)) if self.lengths is not None else self.B * self.T


def _deepbench(H, B, T, sets=("full",)):
    return Shape(f"deepbench-H{H}-B{B}-T{T}", B=B, T=T, I=H, H=H, sets=sets)


def _inference(H, B, T=25):
    return Shape(f"inference-H{H}-B{B}-T{T}", B=B, T=T, I=H, H=H, sets=("full",), inference=True)


#: Braun, "LSTM Benchmarks for Deep Learning Frameworks" (arXiv:1806.01818; github.com/stefbraun/rnn_benchmarks):
#: 4 bidirectional layers of 320 units over 123 features, a batch of 25 sequences of 1000 steps, and for the
#: variable-length runs lengths 500 .. 1000. The quick set keeps the layers and widths at a tenth of the length.
BRAUN = LayerConfig(num_layers=4, direction="bidirectional")

#: The classic MNIST row-by-row LSTM, a subset of DeepBench's training set, inference, and Braun's stack.
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
    Shape("braun-4x320-T100", B=25, T=100, I=123, H=320, layer=BRAUN, sets=("quick", "full"), shortest=50, seed=2026),
    Shape("braun-4x320", B=25, T=1000, I=123, H=320, layer=BRAUN, sets=("full",), shortest=500, seed=2026),
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


def deepbench_ms(shape: Shape, pass_: str) -> tuple[float, str] | None:
    """DeepBench's published time for this shape and pass (one forward layer, I = H), and what it was measured on."""
    key = (shape.H, shape.B, shape.T)
    if shape.I != shape.H or shape.layer != LayerConfig():
        return None
    if shape.inference:
        ms = DEEPBENCH_1080TI_INFERENCE_MS.get(key)
        return (ms, "DeepBench 1080 Ti fp32") if ms is not None and pass_ == FORWARD else None
    times = DEEPBENCH_V100_TRAIN_MS.get(key)
    if times is None:
        return None
    return (times[0] if pass_ == FORWARD else sum(times)), "DeepBench V100 fp32 cuDNN 7.6"


def _widths(shape: Shape) -> list[int]:
    """Each layer's input width: I, then both directions' outputs of the layer below."""
    return [shape.I] + [shape.D * shape.H] * (shape.L - 1)


def flop(shape: Shape, pass_: str, row_steps: float | None = None) -> float:
    """8 B H (I_l + H) per step, per direction and layer, times ``row_steps`` (the steps computed summed over the
    batch; default every row all T); forward + backward three times that."""
    steps = shape.B * shape.T if row_steps is None else row_steps
    per_row_step = sum(8.0 * shape.H * (width + shape.H) * shape.D for width in _widths(shape))
    return per_row_step * steps * (3 if pass_ == FORWARD_BACKWARD else 1)


#: Bytes per element of each dtype a benchmark runs in (NumPy has no bfloat16).
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def bytes_moved(shape: Shape, pass_: str, dtype: str) -> float:
    size = ITEMSIZE[str(dtype)]
    B, T, H = shape.B, shape.T, shape.H
    forward = sum(size * shape.D * (4 * H * width + T * 4 * H * H + T * B * (width + H) + 2 * B * H) for width in _widths(shape))
    return forward * (3 if pass_ == FORWARD_BACKWARD else 1)


def roofline_fraction(shape: Shape, pass_: str, dtype: str, seconds: float, matmul_flops: float, bandwidth: float,
                      row_steps: float | None = None) -> float:
    """Achieved FLOP rate (of the steps computed) over min(matmul rate, intensity * bandwidth)."""
    intensity = flop(shape, pass_) / bytes_moved(shape, pass_, dtype)
    bound = min(matmul_flops, intensity * bandwidth)
    return flop(shape, pass_, row_steps) / seconds / bound


#: The most cells (T x layers x directions) a row that unrolls its time loop into one graph (``Row.unrolled``) is timed
#: with: beyond it the graph's build, compilation and memory, not the LSTM, are what would be measured. Measured on the
#: 2-core EPYC (23 GB), 2026-12-07, Braun's stack at T=100 (800 cells), forward + backward: keras-jax's
#: RNN(LSTMCell, unroll=True) compiled for over 5 minutes and its process was killed for memory; TF1's static_rnn built
#: its gradient graph for about 4 minutes at 8 GB. The cell's shapes (T <= 150, one layer) stay within it.
UNROLLED_CELLS = 200


def unrolled_too_long(shape: Shape) -> str | None:
    """Why a row that unrolls its time loop is not timed on ``shape``, or None when it is."""
    cells = shape.T * shape.layer.num_layers * shape.layer.num_directions
    if cells <= UNROLLED_CELLS:
        return None
    return (f"its graph unrolls {shape.T} steps x {shape.layer.num_layers} layers x {shape.layer.num_directions} "
            f"directions = {cells} cells (at most {UNROLLED_CELLS} are timed: beyond that the graph's build and "
            f"compilation, minutes and gigabytes, are what would be measured)")


def float_source(row) -> str | None:
    """The id of the float row a quantized row is made from (``Row.float_source``), or None."""
    return (row.float_source or None) if row.quantization is not None else None


def shapes_in(which: str) -> list[Shape]:
    if which not in ("quick", "full"):
        raise ValueError(f"benchmark set {which!r}: expected quick or full")
    return [s for s in SHAPES if which in s.sets]


__all__ = [
    "BENCH_CASE", "BRAUN", "CELL_VARIANTS", "DEEPBENCH_1080TI_INFERENCE_MS", "DEEPBENCH_V100_TRAIN_MS",
    "FORWARD", "FORWARD_BACKWARD", "ITEMSIZE", "LENGTH_VARIANTS", "PASSES", "SHAPES", "SHAPES_BY_NAME", "VARIANTS_BY_NAME", "Shape",
    "Variant", "bytes_moved", "deepbench_ms", "flop", "float_source", "roofline_fraction", "shapes_in", "UNROLLED_CELLS", "unrolled_too_long",
]
