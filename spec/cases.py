"""The named cases, one table, and the one generator that makes their data from a seed.

A :class:`Case` is a record: sizes, a :class:`spec.layer.LayerConfig` (the architecture and the features),
sequence lengths or a mask pattern, a seed and a weight scale. The cell is the layer with one forward
layer and no lengths or mask: the first part of the table is the cell's cases (every size edge, with and
without peepholes), the second the layer's (each feature alone, then combinations).

:func:`make_case_data` turns a case into every cell's weights, the inputs, the initial states and the
cotangents. Seeding happens here and nowhere else: every tensor is drawn from its own stream, keyed by the
case's seed and the tensor's name (a cell's tensors by their full name, 'layer 1 direction 0 W'), so adding
a tensor never shifts another. The cell's cases keep the stream names they had when the cell had a table of
its own ('W', 'U', 'b', 'p' for their one cell, 'dh_seq' for the outputs' cotangent: ``Case.cell_streams``),
so their data, and golden vectors exported from them, did not change when the tables became one.

Weights are random and different for every gate, layer and direction: a permutation of gates, a swap of
directions or a layer fed the wrong input always changes the result (unlike all-ones or constant weights,
under which gates are interchangeable).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from spec import layer
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import cast, check_dtype


@dataclass(frozen=True)
class Case:
    name: str
    T: int
    B: int
    I: int
    H: int
    layer: LayerConfig = field(default_factory=LayerConfig)
    #: Sequence lengths, one per batch row (13), or None.
    lengths: tuple[int, ...] | None = None
    #: A mask (14), one string per batch row, one character per step: '1' runs the step, '0' masks it.
    mask: tuple[str, ...] | None = None
    seed: int = 0
    #: Scales the ranges of the input weights W and the biases b: large values drive the pre-activations into the
    #: tails of sigma and tanh (and give a clip something to clip). The recurrent, peephole and projection weights
    #: keep their ordinary range: scaled alike, they amplify rounding several-fold at every step (the spec's own
    #: float32 run then drifts 640 eps32 from float64 within 6 steps), which would test float32's conditioning
    #: rather than an implementation.
    weight_scale: float = 1.0
    note: str = ""
    #: The cell table's stream names (module docstring): this case's data is what it was before the tables were one.
    cell_streams: bool = False
    #: Only in runs that ask for the large cases (--large).
    large: bool = False

    def with_seed(self, seed: int) -> Case:
        return replace(self, seed=seed)

    @property
    def P(self) -> int:
        return self.layer.proj_size or self.H

    @property
    def D(self) -> int:
        return self.layer.num_directions

    @property
    def L(self) -> int:
        return self.layer.num_layers


@dataclass(frozen=True, eq=False)
class CaseData:
    case: Case
    params: LayerParams
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (L * D, B, P)
    c0: np.ndarray  # (L * D, B, H)
    dy: np.ndarray  # (T, B, D * P): the cotangent of the outputs
    dh_T: np.ndarray  # (L * D, B, P)
    dc_T: np.ndarray  # (L * D, B, H)
    lengths: np.ndarray | None  # (B,) int64
    mask: np.ndarray | None  # (T, B) bool

    @property
    def layer(self) -> LayerConfig:
        return self.case.layer

    def inputs(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0}

    def cotangents(self) -> dict[str, np.ndarray]:
        return {"dy": self.dy, "dh_T": self.dh_T, "dc_T": self.dc_T}

    def forward(self, **override) -> layer.LayerForward:
        """spec.layer.forward on this data (keyword arguments replace any of its arguments)."""
        arguments = dict(params=self.params, x=self.x, h0=self.h0, c0=self.c0, config=self.layer,
                         lengths=self.lengths, mask=self.mask, dtype=self.x.dtype)
        arguments.update(override)
        return layer.forward(**arguments)


def _cell(name, T, B, I, H, *, forget_bias=0.0, large=False, **kw) -> tuple[Case, Case]:
    """A cell case, without and with peepholes."""
    return tuple(Case(name + suffix, T, B, I, H, LayerConfig(peephole=peephole, forget_bias=forget_bias), cell_streams=True,
                      large=large, **kw)
                 for suffix, peephole in (("", False), ("-peephole", True)))


BI = dict(direction="bidirectional")

#: The case table. The cell: every size edge the spec must get right, each with and without peepholes. The
#: layer: each feature alone, then combinations; small enough for full finite differences, except the two
#: medium ones (directional checks).
CASES: tuple[Case, ...] = (
    *_cell("small", 4, 3, 5, 4, seed=1, note="the everyday case, small enough for full finite differences"),
    *_cell("T1", 1, 3, 4, 5, seed=2, note="a single step: no recurrence"),
    *_cell("B1", 6, 1, 3, 4, seed=3, note="a single batch row"),
    *_cell("H1", 5, 2, 3, 1, seed=4, note="one unit: every gate is a scalar"),
    *_cell("I-ne-H", 4, 3, 7, 2, seed=5, note="input wider than the state"),
    *_cell("I1", 5, 2, 1, 6, seed=6, note="scalar input, state wider than the input"),
    *_cell("forget-bias", 5, 2, 3, 4, forget_bias=1.0, seed=7, note="TF's forget_bias of 1"),
    *_cell("saturating", 6, 3, 4, 5, weight_scale=30.0, seed=8, note="pre-activations far out in the tails of sigma and tanh"),
    *_cell("medium", 25, 8, 32, 32, seed=9, note="a realistic shape, directional gradient checks"),
    *_cell("long", 512, 2, 4, 8, seed=10, large=True, note="a long sequence: errors and gradients over 512 steps"),
    Case("one-layer", 4, 3, 5, 4, LayerConfig(), seed=101, note="the plain cell through the layer API"),
    Case("reverse", 5, 3, 3, 4, LayerConfig(direction="reverse", peephole=True), seed=102, note="one reverse direction"),
    Case("reverse-standard", 5, 4, 3, 4, LayerConfig(direction="reverse"), seed=125,
         note="a lone reverse direction, standard variant: flax's reverse=True, Keras' go_backwards"),
    Case("bidirectional", 5, 3, 3, 4, LayerConfig(**BI, peephole=True, forget_bias=0.5), seed=103,
         note="two directions with their own weights and states"),
    Case("stacked", 4, 2, 3, 3, LayerConfig(num_layers=3), seed=104, note="three forward layers"),
    Case("stacked-bidirectional", 4, 3, 3, 3, LayerConfig(num_layers=2, **BI), seed=105,
         note="layer 1 reads both directions of layer 0, forward first"),
    Case("projection", 5, 3, 3, 4, LayerConfig(proj_size=2, peephole=True), seed=106, note="LSTMP, P < H"),
    Case("proj-clip", 5, 3, 3, 4, LayerConfig(proj_size=3, proj_clip=0.12), seed=107,
         note="TF1's proj_clip: binds on some elements of h, not on others"),
    Case("cell-clip", 6, 3, 3, 4, LayerConfig(cell_clip=0.8, peephole=True), seed=108, weight_scale=2.0,
         note="TensorFlow's cell_clip: binds on some elements of c"),
    Case("gate-clip", 5, 3, 3, 4, LayerConfig(gate_clip=1.2, peephole=True, forget_bias=0.5), seed=109, weight_scale=2.0,
         note="ONNX Runtime's clip: binds on some gate pre-activations"),
    Case("coupled", 5, 3, 3, 4, LayerConfig(coupled_input_forget=True, peephole=True), seed=110,
         note="ONNX's input_forget: f = 1 - i"),
    Case("lengths", 6, 5, 3, 3, LayerConfig(**BI), lengths=(3, 0, 6, 1, 4), seed=111,
         note="lengths 0, 1 and T in one unsorted batch"),
    Case("mask-zero", 6, 5, 3, 3, LayerConfig(**BI, zero_output_for_mask=True),
         mask=("001111", "110011", "111100", "010110", "000000"), seed=112,
         note="leading, interior and trailing gaps, and a row masked throughout; zero outputs"),
    Case("mask-previous", 6, 5, 3, 3, LayerConfig(**BI, zero_output_for_mask=False),
         mask=("001111", "110011", "111100", "010110", "000000"), seed=113,
         note="the same gaps; masked steps output the previous output (zero before the first)"),
    Case("forward-mask-previous", 6, 4, 3, 3, LayerConfig(zero_output_for_mask=False), mask=("001111", "110011", "111100", "010110"),
         seed=126, note="one direction, masked steps output the previous output (zero before the first): Keras' default"),
    Case("reverse-mask-zero", 6, 4, 3, 3, LayerConfig(direction="reverse", zero_output_for_mask=True),
         mask=("001111", "110011", "111100", "010110"), seed=127, note="a reverse direction over a mask with zero outputs"),
    Case("lstmp-stack", 5, 4, 3, 4, LayerConfig(num_layers=2, **BI, proj_size=2, peephole=True, forget_bias=1.0),
         lengths=(5, 2, 0, 4), seed=114, note="two-layer bidirectional projected LSTM with lengths and peepholes"),
    Case("lstmp-torch", 5, 4, 3, 4, LayerConfig(num_layers=2, **BI, proj_size=2, forget_bias=0.5), lengths=(5, 2, 1, 4),
         seed=122, note="what PyTorch's nn.LSTM runs: stacked, bidirectional, projected, packed"),
    Case("lstmp-padded", 5, 4, 3, 4, LayerConfig(num_layers=2, **BI, proj_size=2), seed=123,
         note="stacked, bidirectional, projected, no lengths: what an exported projected nn.LSTM must run"),
    Case("packed", 5, 4, 3, 4, LayerConfig(num_layers=2, **BI), lengths=(5, 2, 1, 4), seed=124,
         note="stacked, bidirectional, lengths all >= 1: packed sequences as every framework with lengths runs them"),
    Case("clips-stack", 5, 3, 3, 4, LayerConfig(num_layers=2, **BI, proj_size=3, peephole=True, cell_clip=0.8,
                                                gate_clip=1.5, proj_clip=0.25),
         mask=("11011", "01110", "11100"), seed=121, weight_scale=2.0, note="every clip at once, stacked, masked"),
    Case("coupled-stack", 5, 3, 3, 4, LayerConfig(num_layers=2, direction="reverse", coupled_input_forget=True,
                                                  gate_clip=1.2, peephole=True, forget_bias=0.7),
         lengths=(5, 1, 3), seed=116, weight_scale=2.0, note="coupled gates under a gate clip, reverse, stacked"),
    Case("medium-combined", 20, 8, 16, 12, LayerConfig(num_layers=2, **BI, proj_size=6, peephole=True, forget_bias=0.5,
                                                       cell_clip=1.0, proj_clip=0.3),
         lengths=(20, 13, 1, 0, 7, 20, 19, 2), seed=117, note="a realistic combination, directional checks"),
    Case("medium-torch", 20, 8, 16, 12, LayerConfig(num_layers=2, **BI, proj_size=6),
         lengths=(20, 13, 1, 3, 7, 20, 19, 2), seed=118, note="what PyTorch's nn.LSTM can run, at a larger size"),
    Case("layer-norm", 5, 3, 3, 5, LayerConfig(layer_norm=True), seed=128,
         note="TFLite's layer-normalized LSTM: each gate normalized over its H units, b the shift"),
    Case("layer-norm-cifg", 5, 3, 3, 5, LayerConfig(layer_norm=True, peephole=True, coupled_input_forget=True,
                                                    cell_clip=1.0), seed=129, weight_scale=2.0,
         note="layer normalization over the peepholes' shares, coupled gates, a cell clip: TFLite's CIFG LSTM"),
    Case("proj-bias", 5, 3, 3, 4, LayerConfig(proj_size=3, proj_bias=True, proj_clip=0.5), seed=130,
         note="a projection with its bias, clipped: TFLite's projection_bias and proj_clip"),
    Case("layer-norm-full", 6, 3, 4, 5, LayerConfig(num_layers=2, layer_norm=True, peephole=True, proj_size=3,
                                                    proj_bias=True, cell_clip=1.0, proj_clip=0.4, forget_bias=1.0),
         seed=132, weight_scale=2.0, note="every feature of TFLite's fused LSTM at once, two layers"),
)

CASES_BY_NAME = {case.name: case for case in CASES}

#: Cases renamed when the cell's and the layer's tables became one (old name -> new name, for the layer's cases):
#: reports and golden manifests written before read with it.
RENAMED_LAYER_CASES = {"medium": "medium-combined"}

#: The benchmark of the layer: two bidirectional layers at DeepBench's B=64, T=25, I=H=512.
BENCH_LAYER_CASE = Case("bench-layer", 25, 64, 512, 512, LayerConfig(num_layers=2, **BI), seed=131)


def case_set(*, large: bool = False) -> list[Case]:
    """The cases of a run, in the table's order: every case, and the large ones (T = 512) only when asked."""
    return [case for case in CASES if large or not case.large]


def case_by_name(name: str) -> Case:
    try:
        return CASES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no case named {name!r}; the cases are {sorted(CASES_BY_NAME)}") from None


def is_cell(case: Case) -> bool:
    """Whether a case is a plain cell: one forward layer, no projection, clips, coupled gates, lengths or mask."""
    plain = LayerConfig(peephole=case.layer.peephole, forget_bias=case.layer.forget_bias)
    return case.layer == plain and case.lengths is None and case.mask is None


def rng_for(case: Case, tensor: str) -> np.random.Generator:
    """The random stream for one tensor of one case."""
    return np.random.default_rng([case.seed, zlib.crc32(tensor.encode())])


def mask_array(pattern: tuple[str, ...], T: int) -> np.ndarray:
    """('0110', '1111') -> the (T, B) boolean mask, one column per string."""
    if any(len(row) != T or set(row) - {"0", "1"} for row in pattern):
        raise ValueError(f"mask pattern {pattern}: every row must be {T} characters of 0 and 1")
    return np.array([[c == "1" for c in row] for row in pattern]).T.copy()


def cell_stream(case: Case, k: int, tensor: str) -> str:
    """The stream name of cell k's ``tensor``: 'layer 1 direction 0 W', or 'W' for a cell case (module docstring)."""
    return tensor if case.cell_streams else f"layer {k // case.D} direction {k % case.D} {tensor}"


def make_case_data(case: Case, dtype: object = np.float64) -> CaseData:
    """Draw the case's weights, inputs, initial states and cotangents from its seed.

    Values are drawn in float64 and then rounded to ``dtype``, so the float32 data of a case is the float64
    data rounded, and both describe one problem. A half type's data is the float32 data rounded once more, to
    nearest even (what a float32 model cast to half holds, and what spec/precision.py evaluates policies on).
    """
    dtype = check_dtype(dtype, storage=True)
    if dtype.itemsize == 2:
        return _rounded(make_case_data(case, np.float32), dtype)
    T, B, I, H, P, L, D, s = case.T, case.B, case.I, case.H, case.P, case.L, case.D, case.weight_scale

    def uniform(tensor, shape, bound):
        return rng_for(case, tensor).uniform(-bound, bound, size=shape)

    def normal(tensor, shape, std=1.0):
        return rng_for(case, tensor).normal(0.0, std, size=shape)

    cells = []
    for k in range(L * D):
        width = I if k < D else D * P
        name = lambda tensor: cell_stream(case, k, tensor)  # noqa: E731
        # PyTorch's initialisation range 1/sqrt(fan_in); W and b scaled (see Case.weight_scale).
        cells.append(LSTMParams(
            W=uniform(name("W"), (4, H, width), s / np.sqrt(width)),
            U=uniform(name("U"), (4, H, P), 1.0 / np.sqrt(P)),
            b=uniform(name("b"), (4, H), s * 0.5),
            p=uniform(name("p"), (3, H), 0.5) if case.layer.peephole else None,
            W_hr=uniform(name("W_hr"), (P, H), 1.0 / np.sqrt(H)) if case.layer.proj_size else None,
            # gamma around 1, different for every gate and unit: a gate normalized with another's gamma is wrong.
            ln=1.0 + uniform(name("ln"), (4, H), 0.5) if case.layer.layer_norm else None,
            b_hr=uniform(name("b_hr"), (P,), 0.5) if case.layer.proj_bias else None,
        ).astype(dtype))
    tensors = dict(
        x=normal("x", (T, B, I)),
        h0=uniform("h0", (L * D, B, P), 0.9),
        c0=normal("c0", (L * D, B, H), 1.0),
        dy=normal("dh_seq" if case.cell_streams else "dy", (T, B, D * P)),
        dh_T=normal("dh_T", (L * D, B, P)),
        dc_T=normal("dc_T", (L * D, B, H)),
    )
    return CaseData(
        case=case,
        params=LayerParams(tuple(cells), D),
        lengths=None if case.lengths is None else np.array(case.lengths, dtype=np.int64),
        mask=None if case.mask is None else mask_array(case.mask, T),
        **{k: v.astype(dtype) for k, v in tensors.items()},
    )


def _rounded(data: CaseData, dtype: np.dtype) -> CaseData:
    """float32 case data rounded to the half type ``dtype``: the cast rounds to nearest even (NumPy's for float16,
    ml_dtypes' for bfloat16); the cases' values all lie well inside both types' ranges."""
    rounded = {k: cast(v, dtype, k) for k, v in {**data.inputs(), **data.cotangents()}.items()}
    return replace(data, params=data.params.astype(dtype), **rounded)


@dataclass(frozen=True, eq=False)
class Reference:
    """What the spec computes for a case: outputs (y, h_T, c_T) and gradients (x, h0, c0, every cell's), float64."""

    outputs: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]


def widened(data: CaseData) -> CaseData:
    """The same case data in float64 (exact: float32 widens without rounding)."""
    if data.params.dtype == np.float64:
        return data
    wide = {k: v.astype(np.float64) for k, v in {**data.inputs(), **data.cotangents()}.items()}
    return replace(data, params=data.params.astype(np.float64), **wide)


def reference(data: CaseData) -> Reference:
    """The spec in float64 on ``data`` (in whatever dtype it was drawn, widened exactly): what every implementation
    is compared with, what golden vectors carry and what diagnoses start from."""
    wide = widened(data)
    fwd = wide.forward(dtype=np.float64)
    grads = layer.backward(fwd, wide.dy, wide.dh_T, wide.dc_T)
    return Reference({"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors())


__all__ = [
    "BENCH_LAYER_CASE", "CASES", "CASES_BY_NAME", "RENAMED_LAYER_CASES", "Case", "CaseData", "Reference", "case_by_name",
    "case_set", "cell_stream", "is_cell", "make_case_data", "mask_array", "reference", "rng_for", "widened",
]
