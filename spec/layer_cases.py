"""The named layer cases, and the one generator that makes their data from a seed.

Each :class:`LayerCase` is a record: sizes, a :class:`spec.layer.LayerConfig`,
sequence lengths or a mask pattern, a seed and a weight scale.
:func:`make_layer_case_data` turns it into every cell's weights, the inputs,
the initial states and the cotangents. As in :mod:`spec.cases`, every tensor
is drawn from its own stream, keyed by the case's seed and the tensor's name
(cell tensors by their full name, 'layer 1 direction 0 W'), so adding a tensor
never shifts another, and weights are random and different for every gate,
layer and direction: a permutation of gates, a swap of directions or a layer
fed the wrong input always changes the result.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from spec import layer
from spec.cases import Reference
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import check_dtype


@dataclass(frozen=True)
class LayerCase:
    name: str
    T: int
    B: int
    I: int
    H: int
    config: LayerConfig = field(default_factory=LayerConfig)
    #: Sequence lengths, one per batch row (13), or None.
    lengths: tuple[int, ...] | None = None
    #: A mask (14), one string per batch row, one character per step: '1' runs the step, '0' masks it.
    mask: tuple[str, ...] | None = None
    seed: int = 0
    #: Scales the ranges of W and b (see spec.cases.Case.weight_scale): drives the pre-activations
    #: further out, so that a gate clip has something to clip.
    weight_scale: float = 1.0
    note: str = ""

    def with_seed(self, seed: int) -> LayerCase:
        return replace(self, seed=seed)

    @property
    def P(self) -> int:
        return self.config.proj_size or self.H

    @property
    def D(self) -> int:
        return self.config.num_directions

    @property
    def L(self) -> int:
        return self.config.num_layers


@dataclass(frozen=True, eq=False)
class LayerCaseData:
    case: LayerCase
    params: LayerParams
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (L * D, B, P)
    c0: np.ndarray  # (L * D, B, H)
    dy: np.ndarray  # (T, B, D * P): cotangent of the outputs
    dh_T: np.ndarray  # (L * D, B, P)
    dc_T: np.ndarray  # (L * D, B, H)
    lengths: np.ndarray | None  # (B,) int64
    mask: np.ndarray | None  # (T, B) bool

    @property
    def config(self) -> LayerConfig:
        return self.case.config

    def inputs(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0}

    def cotangents(self) -> dict[str, np.ndarray]:
        return {"dy": self.dy, "dh_T": self.dh_T, "dc_T": self.dc_T}

    def forward(self, **override) -> layer.LayerForward:
        """spec.layer.forward on this data (keyword arguments replace any of its arguments)."""
        arguments = dict(params=self.params, x=self.x, h0=self.h0, c0=self.c0, config=self.config,
                         lengths=self.lengths, mask=self.mask, dtype=self.x.dtype)
        arguments.update(override)
        return layer.forward(**arguments)


def _config(**kw) -> LayerConfig:
    return LayerConfig(**kw)


BI = dict(direction="bidirectional")

#: The case table: each feature alone, then combinations. Small enough for full finite differences,
#: except the last two (directional checks).
LAYER_CASES: tuple[LayerCase, ...] = (
    LayerCase("one-layer", 4, 3, 5, 4, _config(), seed=101, note="the plain cell through the layer API"),
    LayerCase("reverse", 5, 3, 3, 4, _config(direction="reverse", peephole=True), seed=102, note="one reverse direction"),
    LayerCase("reverse-standard", 5, 4, 3, 4, _config(direction="reverse"), seed=125,
              note="a lone reverse direction, standard variant: flax's reverse=True, Keras' go_backwards"),
    LayerCase("bidirectional", 5, 3, 3, 4, _config(**BI, peephole=True, forget_bias=0.5), seed=103,
              note="two directions with their own weights and states"),
    LayerCase("stacked", 4, 2, 3, 3, _config(num_layers=3), seed=104, note="three forward layers"),
    LayerCase("stacked-bidirectional", 4, 3, 3, 3, _config(num_layers=2, **BI), seed=105,
              note="layer 1 reads both directions of layer 0, forward first"),
    LayerCase("projection", 5, 3, 3, 4, _config(proj_size=2, peephole=True), seed=106, note="LSTMP, P < H"),
    LayerCase("proj-clip", 5, 3, 3, 4, _config(proj_size=3, proj_clip=0.12), seed=107,
              note="TF1's proj_clip: binds on some elements of h, not on others"),
    LayerCase("cell-clip", 6, 3, 3, 4, _config(cell_clip=0.8, peephole=True), seed=108, weight_scale=2.0,
              note="TensorFlow's cell_clip: binds on some elements of c"),
    LayerCase("gate-clip", 5, 3, 3, 4, _config(gate_clip=1.2, peephole=True, forget_bias=0.5), seed=109,
              weight_scale=2.0, note="ONNX Runtime's clip: binds on some gate pre-activations"),
    LayerCase("coupled", 5, 3, 3, 4, _config(coupled_input_forget=True, peephole=True), seed=110,
              note="ONNX's input_forget: f = 1 - i"),
    LayerCase("lengths", 6, 5, 3, 3, _config(**BI), lengths=(3, 0, 6, 1, 4), seed=111,
              note="lengths 0, 1 and T in one unsorted batch"),
    LayerCase("mask-zero", 6, 5, 3, 3, _config(**BI, zero_output_for_mask=True),
              mask=("001111", "110011", "111100", "010110", "000000"), seed=112,
              note="leading, interior and trailing gaps, and a row masked throughout; zero outputs"),
    LayerCase("mask-previous", 6, 5, 3, 3, _config(**BI, zero_output_for_mask=False),
              mask=("001111", "110011", "111100", "010110", "000000"), seed=113,
              note="the same gaps; masked steps output the previous output (zero before the first)"),
    LayerCase("forward-mask-previous", 6, 4, 3, 3, _config(zero_output_for_mask=False), mask=("001111", "110011", "111100", "010110"),
              seed=126, note="one direction, masked steps output the previous output (zero before the first): Keras' default"),
    LayerCase("reverse-mask-zero", 6, 4, 3, 3, _config(direction="reverse", zero_output_for_mask=True),
              mask=("001111", "110011", "111100", "010110"), seed=127, note="a reverse direction over a mask with zero outputs"),
    LayerCase("lstmp-stack", 5, 4, 3, 4, _config(num_layers=2, **BI, proj_size=2, peephole=True, forget_bias=1.0),
              lengths=(5, 2, 0, 4), seed=114, note="two-layer bidirectional projected LSTM with lengths and peepholes"),
    LayerCase("lstmp-torch", 5, 4, 3, 4, _config(num_layers=2, **BI, proj_size=2, forget_bias=0.5), lengths=(5, 2, 1, 4),
              seed=122, note="what PyTorch's nn.LSTM runs: stacked, bidirectional, projected, packed"),
    LayerCase("lstmp-padded", 5, 4, 3, 4, _config(num_layers=2, **BI, proj_size=2), seed=123,
              note="stacked, bidirectional, projected, no lengths: what an exported projected nn.LSTM must run"),
    LayerCase("packed", 5, 4, 3, 4, _config(num_layers=2, **BI), lengths=(5, 2, 1, 4), seed=124,
              note="stacked, bidirectional, lengths all >= 1: packed sequences as every framework with lengths runs them"),
    LayerCase("clips-stack", 5, 3, 3, 4, _config(num_layers=2, **BI, proj_size=3, peephole=True, cell_clip=0.8,
                                                  gate_clip=1.5, proj_clip=0.25),
              mask=("11011", "01110", "11100"), seed=121, weight_scale=2.0, note="every clip at once, stacked, masked"),
    LayerCase("coupled-stack", 5, 3, 3, 4, _config(num_layers=2, direction="reverse", coupled_input_forget=True,
                                                    gate_clip=1.2, peephole=True, forget_bias=0.7),
              lengths=(5, 1, 3), seed=116, weight_scale=2.0, note="coupled gates under a gate clip, reverse, stacked"),
    # Larger: directional gradient checks and the references only.
    LayerCase("medium", 20, 8, 16, 12, _config(num_layers=2, **BI, proj_size=6, peephole=True, forget_bias=0.5,
                                                cell_clip=1.0, proj_clip=0.3),
              lengths=(20, 13, 1, 0, 7, 20, 19, 2), seed=117, note="a realistic combination, directional checks"),
    LayerCase("medium-torch", 20, 8, 16, 12, _config(num_layers=2, **BI, proj_size=6),
              lengths=(20, 13, 1, 3, 7, 20, 19, 2), seed=118, note="what PyTorch's nn.LSTM can run, at a larger size"),
)

LAYER_CASES_BY_NAME = {case.name: case for case in LAYER_CASES}

#: The benchmark of the layer: two bidirectional layers at DeepBench's B=64, T=25, I=H=512.
BENCH_LAYER_CASE = LayerCase("bench-layer", 25, 64, 512, 512, _config(num_layers=2, **BI), seed=131)


def layer_case_by_name(name: str) -> LayerCase:
    try:
        return LAYER_CASES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no layer case named {name!r}; the cases are {sorted(LAYER_CASES_BY_NAME)}") from None


def rng_for(case: LayerCase, tensor: str) -> np.random.Generator:
    """The random stream for one tensor of one case."""
    return np.random.default_rng([case.seed, zlib.crc32(tensor.encode())])


def mask_array(pattern: tuple[str, ...], T: int) -> np.ndarray:
    """('0110', '1111') -> the (T, B) boolean mask, one column per string."""
    if any(len(row) != T or set(row) - {"0", "1"} for row in pattern):
        raise ValueError(f"mask pattern {pattern}: every row must be {T} characters of 0 and 1")
    return np.array([[c == "1" for c in row] for row in pattern]).T.copy()


def make_layer_case_data(case: LayerCase, dtype: object = np.float64) -> LayerCaseData:
    """Draw the case's weights, inputs, initial states and cotangents from its seed.

    Values are drawn in float64 and then rounded to ``dtype``, so the float32 data of a case is the
    float64 data rounded, and both describe one problem.
    """
    dtype = check_dtype(dtype)
    T, B, I, H, P, L, D, s = case.T, case.B, case.I, case.H, case.P, case.L, case.D, case.weight_scale
    config = case.config

    def uniform(tensor, shape, bound):
        return rng_for(case, tensor).uniform(-bound, bound, size=shape)

    def normal(tensor, shape, std=1.0):
        return rng_for(case, tensor).normal(0.0, std, size=shape)

    cells = []
    for k in range(L * D):
        name = f"layer {k // D} direction {k % D}"
        width = I if k < D else D * P
        # PyTorch's initialisation range 1/sqrt(fan_in); W and b scaled (see LayerCase.weight_scale).
        cells.append(LSTMParams(
            W=uniform(f"{name} W", (4, H, width), s / np.sqrt(width)),
            U=uniform(f"{name} U", (4, H, P), 1.0 / np.sqrt(P)),
            b=uniform(f"{name} b", (4, H), s * 0.5),
            p=uniform(f"{name} p", (3, H), 0.5) if config.peephole else None,
            W_hr=uniform(f"{name} W_hr", (P, H), 1.0 / np.sqrt(H)) if config.proj_size else None,
        ).astype(dtype))
    tensors = dict(
        x=normal("x", (T, B, I)),
        h0=uniform("h0", (L * D, B, P), 0.9),
        c0=normal("c0", (L * D, B, H), 1.0),
        dy=normal("dy", (T, B, D * P)),
        dh_T=normal("dh_T", (L * D, B, P)),
        dc_T=normal("dc_T", (L * D, B, H)),
    )
    return LayerCaseData(
        case=case,
        params=LayerParams(tuple(cells), D),
        lengths=None if case.lengths is None else np.array(case.lengths, dtype=np.int64),
        mask=None if case.mask is None else mask_array(case.mask, T),
        **{k: v.astype(dtype) for k, v in tensors.items()},
    )


def layer_case_set() -> list[LayerCase]:
    """The layer cases of a conformance run: every one of :data:`LAYER_CASES` (all small or medium)."""
    return list(LAYER_CASES)


def widened(data: LayerCaseData) -> LayerCaseData:
    """The same case data in float64 (exact: float32 widens without rounding)."""
    if data.params.dtype == np.float64:
        return data
    wide = {k: v.astype(np.float64) for k, v in {**data.inputs(), **data.cotangents()}.items()}
    return replace(data, params=data.params.astype(np.float64), **wide)


def reference(data: LayerCaseData) -> Reference:
    """The spec in float64 on ``data`` (widened exactly): what layer implementations are compared with."""
    wide = widened(data)
    fwd = wide.forward(dtype=np.float64)
    grads = layer.backward(fwd, wide.dy, wide.dh_T, wide.dc_T)
    return Reference({"y": fwd.y, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors())
