r"""The dynamically quantized LSTM, exactly: the integer reference.

A dynamically quantized LSTM (PyTorch's ``quantized.dynamic.LSTM``, ONNX Runtime's ``DynamicQuantizeLSTM``, LiteRT's
hybrid fused LSTM) keeps each weight matrix as 8-bit integers with a scale and a zero point, quantizes the other
operand of each product (the layer's input x, the previous output h, the projection's m) when the product is
computed, from that operand's own range, multiplies in integers, and dequantizes. Everything else (the bias, the
gates, the cell state, clips, layer normalization) is the float32 arithmetic of :mod:`spec.lstm`. With [.] rounding to
an integer (:class:`Rounding`) and clamp to [q_min, q_max]:

    (Q1)  weights      W ~ s_W (W_q - z_W)         W_q int8 (or uint8), s_W > 0 per tensor or per output row;
                                                    read from the implementation's model, never re-derived
    (Q2)  activations  a ~ s_a (a_q - z_a),   a_q = clamp([a / s_a] + z_a)
                       over a group of a (:class:`Group`: the whole sequence, one step, one batch row of a step),
                       asymmetric: s_a = (max(a_max, 0) - min(a_min, 0)) / (q_max - q_min), z_a = clamp([q_min - min / s_a])
                       symmetric:  s_a = max|a| / q_max, z_a = 0
    (Q3)  product      acc[b, n] = sum_k (a_q[b, k] - z_a)(W_q[n, k] - z_W)   in int32, exactly
                       (:class:`Accumulation`: or with u8 x s8 pairs summed in int16 first, saturating)
    (Q4)  dequantize   (W a)[b, n] ~ s_a s_W[n] acc[b, n]                    in float32
    then (1)-(8) of spec.lstm on  z = deq(W x) + deq(U h) + b  in float32 (with layer normalization b is the shift
    after it, (1n)), and (7) h = clip(deq(W_hr m) + b_hr).

The reference takes the weights' integers, scales and zero points from the implementation (:class:`QuantizedCell`)
and checks that they quantize the float weights it was given (``check_quantizes``: every |s_W (W_q - z_W) - W| within
half a step): a model that quantized other weights (a gate permutation, a transposed matrix) is refused there, before
any comparison. The activations' rule is the implementation's (:class:`ActivationScheme`), as its kernel computes it;
what rule each runtime follows is declared by its row, with the source it was read from.

**Where float32 noise meets rounding.** An activation that lands within a float32 rounding of a quantization
boundary can round either way: the implementation's h_{t-1}, one ulp from the reference's, may quantize one level
apart, and its next product then differs by |W_q| dequantization steps. Where the implementation's own previous output
is known (the outputs y of the top layer), :func:`layer_forward` takes it (``observed``) and, at a step where it
quantizes differently from the reference's own although the two differ by less than a thousandth of the quantization
step (:data:`FORCE_WITHIN`), computes that step's product from the implementation's activations; each such step is
reported (:class:`Forced`), never hidden. The layer's input x is never forced: the reference quantizes it exactly as
the implementation must.

**Saturation.** x86 CPUs without VNNI multiply u8 by s8 with vpmaddubsw, which sums adjacent pairs of products in int16
and saturates at +-32767: a pair of large activations against large weights of one sign loses its excess.
Quantizing activations to 7 bits (q_max = 127, ``reduce_range``) keeps every pair below 2 * 127 * 128 = 32512.
:data:`Accumulation.PAIRS_INT16` models that instruction over adjacent k (2j, 2j + 1), on the raw u8 and s8 values
before the zero points' corrections, as the kernels do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from types import SimpleNamespace

import numpy as np

from spec import layer as spec_layer
from spec.lstm import Clip, Options, carry, shown, step, step_features_of
from spec.params import LayerParams, LSTMParams
from spec.validation import LSTMInputError

__all__ = ["Accumulation", "ActivationScheme", "EndedRows", "FORCE_WITHIN", "Forced", "Group", "Padding", "QuantizedCell", "QuantizedLayer",
           "QuantizedMatrix", "Rounding", "Scaling", "Scheme", "ZeroPoint", "activation_quantization", "layer_forward", "near_ties",
           "quantize_activations", "quantized_product", "saturated_pairs"]

#: An implementation's activations replace the reference's at a step only where the two differ by less than this
#: fraction of the activations' quantization step (float32 noise; a real difference is a whole step or more).
FORCE_WITHIN = 1e-3


class Word(str, Enum):
    def __str__(self) -> str:
        return self.value


class Group(Word):
    """Over which values one activation scale and zero point are chosen."""

    SEQUENCE = "sequence"  # the whole (T, B, K) operand of a product computed for every step at once
    STEP = "step"  # each step's (B, K)
    ROW = "row"  # each batch row of each step (B scales per step)


class Rounding(Word):
    HALF_EVEN = "half-even"  # nearbyint / rint under the default rounding mode
    HALF_AWAY = "half-away"  # std::round: ties away from zero


class ZeroPoint(Word):
    """How an asymmetric scheme picks z_a from s_a and the range [lo, hi] (lo <= 0 <= hi)."""

    FROM_MIN = "from-min"  # z = clamp([q_min - lo / s])
    SMALLER_ERROR = "smaller-error"  # gemmlowp's and fbgemm's: from lo or from hi, whichever errs less, then clamped


class Scaling(Word):
    """How a kernel computes a / s_a before rounding (in float32: the results differ in the last bit)."""

    DIVIDE = "divide"  # a / s
    RECIPROCAL = "reciprocal"  # a * (1 / s), the reciprocal rounded once (MLAS, fbgemm's vectorised quantize)
    RANGE_RATIO = "range-ratio"  # a * (q_max / r), r = max|a| (TFLite's symmetric quantization: 127 / r, not 1 / s)
    RECIPROCAL_FMA = "reciprocal-fma"  # fma(a, 1 / s, z) rounded once, the zero point added before rounding (QNNPACK)


class Padding(Word):
    """Whether the padded steps of a batch with sequence lengths (steps t >= L_b) count in the input's range."""

    IN_RANGE = "in-range"  # the padded (T', B, I) block as it is, up to the longest length (ONNX Runtime)
    OUT_OF_RANGE = "out-of-range"  # only each row's own steps (PyTorch's packed sequences)


class EndedRows(Word):
    """With sequence lengths, what a step's block of h_{t-1} holds for rows that have ended (zeros count in no range)."""

    EXCLUDED = "excluded"  # only the rows that run step t (PyTorch's packed batch at t)
    ZEROED_AFTER_LAST = "zeroed-after-last"  # every row: a row's last output until the step after it, zeros then (ORT)


class Accumulation(Word):
    EXACT = "int32"  # every product summed exactly in int32
    PAIRS_INT16 = "int16-pairs"  # vpmaddubsw: u8 x s8 products of adjacent k summed in int16, saturating


@dataclass(frozen=True)
class ActivationScheme:
    """How a kernel quantizes a product's activation operand (Q2)."""

    group: Group
    q_min: int
    q_max: int
    symmetric: bool = False
    zero_point: ZeroPoint = ZeroPoint.FROM_MIN
    rounding: Rounding = Rounding.HALF_EVEN
    scaling: Scaling = Scaling.DIVIDE
    #: s_a when the group's range is empty (all zeros): the kernels' own stand-in (fbgemm's 0.1, MLAS's 1.0)
    zero_range_scale: float = 1.0
    #: s_a and z_a computed in float64, then s_a rounded to float32 (fbgemm, PyTorch); else in float32 (MLAS)
    float64_parameters: bool = False

    def describe(self) -> str:
        kind = "symmetric" if self.symmetric else f"asymmetric ({self.zero_point} zero point)"
        how = {Scaling.DIVIDE: "a / s", Scaling.RECIPROCAL: "a * (1 / s)", Scaling.RANGE_RATIO: "a * (q_max / max|a|)",
               Scaling.RECIPROCAL_FMA: "fma(a, 1 / s, z)"}[self.scaling]
        return (f"{kind} {self.q_min}..{self.q_max} per {self.group}, [{how}] rounded {self.rounding}")


@dataclass(frozen=True)
class Scheme:
    """A runtime's dynamic quantization: the activation rule of each product, and how its kernel accumulates."""

    name: str
    input: ActivationScheme  # W x (and the input of every layer above the first)
    recurrent: ActivationScheme  # U h_{t-1}
    projection: ActivationScheme | None = None  # W_hr m_t
    accumulation: Accumulation = Accumulation.EXACT
    #: With sequence lengths: whether padded steps count in the input's range (rows that have ended never count in
    #: h's: their h is zero, or left out, in the step's block), and whether a reverse direction reverses each row
    #: within its own length (ONNX) or the padded sequence, its padded steps first (PyTorch's packed sequences).
    padding: Padding = Padding.OUT_OF_RANGE
    ended_rows: EndedRows = EndedRows.EXCLUDED
    reverse_within_lengths: bool = False
    source: str = ""  # where the rule was read (kernel source, file and function)

    def describe(self) -> str:
        lines = [f"{self.name}: x by {self.input.describe()}; h by {self.recurrent.describe()}"]
        if self.projection is not None:
            lines.append(f"m by {self.projection.describe()}")
        return "; ".join(lines) + f"; accumulated in {self.accumulation}"


# ---------------------------------------------------------------------------
# (Q1) the weights, as the implementation stores them
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """One weight matrix (N, K) as integers with per-tensor or per-row (output channel) scales and zero points.

    ``name`` names it in every error (``cell 0 W``)."""

    name: str
    q: np.ndarray  # (N, K) integers within int8 or uint8
    scale: np.ndarray  # () or (N,) float32, finite and > 0
    zero_point: np.ndarray  # () or (N,) integers within q's type

    def __post_init__(self):
        q = np.asarray(self.q)
        if q.ndim != 2:
            raise LSTMInputError(f"{self.name} (quantized)", "wrong shape", "a matrix (N, K)", q.shape)
        if not np.issubdtype(q.dtype, np.integer):
            if not np.issubdtype(q.dtype, np.floating) or not np.all(np.isfinite(q)) or np.any(q != np.round(q)):
                raise LSTMInputError(f"{self.name} (quantized)", "not integers", "int8 or uint8 values",
                                     f"{q.dtype} values such as {q.ravel()[0]!r}")
        lo, hi = int(q.min(initial=0)), int(q.max(initial=0))
        if lo < -128 or hi > 255 or (lo < 0 and hi > 127):
            raise LSTMInputError(f"{self.name} (quantized)", "does not fit 8 bits", "int8 (-128..127) or uint8 (0..255)",
                                 f"values from {lo} to {hi}")
        signed = lo < 0 or (np.issubdtype(q.dtype, np.signedinteger) and q.dtype.itemsize == 1)
        scale = np.asarray(self.scale, np.float64)
        zero_point = np.asarray(self.zero_point)
        N = q.shape[0]
        for what, value in (("scale", scale), ("zero point", zero_point)):
            if value.size == 0:
                raise LSTMInputError(f"{self.name} {what}", "missing", "one per tensor or one per output row", "none")
            if value.size not in (1, N) or value.ndim > 1:
                raise LSTMInputError(f"{self.name} {what}", "a granularity the integer reference does not model",
                                     f"one per tensor or one per output row ({N})",
                                     f"shape {value.shape} (per-input-column or blockwise quantization)")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise LSTMInputError(f"{self.name} scale", "not a finite positive number", "finite scales > 0",
                                 f"{scale.ravel()[~(np.isfinite(scale.ravel()) & (scale.ravel() > 0))][0]!r}")
        if not np.issubdtype(zero_point.dtype, np.integer) and np.any(zero_point != np.round(zero_point)):
            raise LSTMInputError(f"{self.name} zero point", "not an integer", "integers", zero_point.ravel()[0])
        z_lo, z_hi = (-128, 127) if signed else (0, 255)
        if zero_point.min() < z_lo or zero_point.max() > z_hi:
            raise LSTMInputError(f"{self.name} zero point", "outside the integers' type", f"{z_lo}..{z_hi}",
                                 f"{zero_point.min()}..{zero_point.max()}")
        object.__setattr__(self, "q", q.astype(np.int64))
        object.__setattr__(self, "scale", scale.astype(np.float32).reshape(-1))
        object.__setattr__(self, "zero_point", zero_point.astype(np.int64).reshape(-1))

    @property
    def per_row(self) -> bool:
        return self.scale.size > 1 or self.zero_point.size > 1

    def dequantized(self) -> np.ndarray:
        """s_W (W_q - z_W) in float64."""
        return (self.q - self.zero_point[:, None] if self.zero_point.size > 1 else self.q - self.zero_point[0]) * \
            self.scale.astype(np.float64).reshape(-1, 1)

    def check_quantizes(self, W: np.ndarray, where: str = "", unused: slice | None = None) -> None:
        """Refuse integers that do not quantize ``W`` (N, K): every element within half a step of its dequantized value
        (and the step's float32 rounding), so that the reference computes with the weights it was given; ``unused``:
        rows that take no part (f's under coupled gates, which a model need not hold)."""
        W = np.asarray(W, np.float64)
        if W.shape != self.q.shape:
            raise LSTMInputError(self.name, "quantized weights of another shape", W.shape, self.q.shape)
        step = np.broadcast_to(self.scale.astype(np.float64).reshape(-1, 1), W.shape)
        error = np.abs(self.dequantized() - W)
        # Clamped weights (beyond the integers' range) are the scale's choice, not a misplaced weight: allowed only
        # at the range's ends.
        allowed = step * (0.5 + 1e-3) + np.abs(W) * 2.0**-22
        bad = error > allowed
        if unused is not None:
            bad[unused] = False
        used = np.ones(W.shape[0], bool)
        if unused is not None:
            used[unused] = False
        # Within half a step is no proof on its own: integers of zero with a coarse scale are "within half a step" of
        # small weights. Each scale must also be one the weights it serves need: their largest uses 32 levels at least
        # (per tensor, s = max|W| / 127 by every runtime's rule; 64 with ORT's reduce_range).
        row_scale = np.broadcast_to(self.scale.reshape(-1), (W.shape[0],))
        for value in np.unique(row_scale[used]):
            rows = used & (row_scale == value)
            top = float(np.abs(W[rows]).max(initial=0.0))
            if top > 0 and value > top / 32 * (1 + 1e-6):
                n = int(np.argwhere(rows)[0][0])
                raise LSTMInputError(self.name, "a scale coarser than its weights need", f"s <= max|W| / 32 = {top / 32:.6g} "
                                     f"(the largest weight quantized to 32 levels or more){where}",
                                     f"s = {value:.6g} for rows from {n} (largest |q - z| "
                                     f"{int(np.abs(self.q[rows] - (self.zero_point if self.zero_point.size == 1 else self.zero_point[rows, None])).max())}"
                                     f"): a product dropped, or integers quantized from other weights")
        if bad.any():
            n, k = (int(i) for i in np.argwhere(bad)[0])
            raise LSTMInputError(self.name, "integers that do not quantize the given weights",
                                 f"|s (q - z) - W| <= s / 2 everywhere{where}",
                                 f"at row {n}, column {k}: q = {self.q[n, k]}, s = {step[n, k]:.6g}, dequantized "
                                 f"{self.dequantized()[n, k]:.6g} against W = {W[n, k]:.6g} "
                                 f"({int(bad.sum())} of {bad.size} elements; a permuted or transposed matrix?)")


@dataclass(frozen=True, eq=False)
class QuantizedCell:
    """One direction of one layer as the implementation holds it: the quantized products' weights, and the float32
    parameters it keeps in float (b, and p, ln, b_hr where present, as the model holds them)."""

    W: QuantizedMatrix  # (4H, I)
    U: QuantizedMatrix  # (4H, P)
    b: np.ndarray  # (4, H)
    p: np.ndarray | None = None  # (3, H)
    W_hr: QuantizedMatrix | None = None  # (P, H)
    ln: np.ndarray | None = None  # (4, H)
    b_hr: np.ndarray | None = None  # (P,)

    def check_quantizes(self, params: LSTMParams, name: str, coupled: bool = False) -> None:
        H = params.hidden_size
        unused = slice(H, 2 * H) if coupled else None  # (2c): W_f and U_f take no part
        self.W.check_quantizes(params.W.reshape(4 * H, -1), f" ({name} W, rows gate-major i, f, g, o)", unused)
        self.U.check_quantizes(params.U.reshape(4 * H, -1), f" ({name} U, rows gate-major i, f, g, o)", unused)
        if (self.W_hr is None) != (params.W_hr is None):
            raise LSTMInputError(f"{name} W_hr", "a projection where the parameters have none, or none where they do",
                                 "the same architecture", "another one")
        if self.W_hr is not None:
            self.W_hr.check_quantizes(params.W_hr, f" ({name} W_hr)")


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    cells: tuple[QuantizedCell, ...]  # cell k = l * D + d, as spec.params.LayerParams

    def check_quantizes(self, params: LayerParams, coupled: bool = False) -> None:
        """Refuse a model whose integers do not quantize ``params`` (QuantizedMatrix.check_quantizes), cell by cell."""
        if len(self.cells) != len(params.cells):
            raise LSTMInputError("quantized cells", "another number of cells", len(params.cells), len(self.cells))
        for k, (quantized, given) in enumerate(zip(self.cells, params.cells)):
            quantized.check_quantizes(given, params.cell_name(k), coupled)


# ---------------------------------------------------------------------------
# (Q2) the activations, (Q3) the product, (Q4) dequantization
# ---------------------------------------------------------------------------


def _round(a: np.ndarray, rounding: Rounding) -> np.ndarray:
    return np.rint(a) if rounding is Rounding.HALF_EVEN else np.sign(a) * np.floor(np.abs(a) + 0.5)


def _axes(a: np.ndarray, group: Group) -> tuple[int, ...]:
    return {Group.SEQUENCE: tuple(range(a.ndim)), Group.STEP: tuple(range(a.ndim))[-2:], Group.ROW: (a.ndim - 1,)}[group]


def activation_quantization(a: np.ndarray, scheme: ActivationScheme) -> tuple[np.ndarray, np.ndarray]:
    """(s_a, z_a) of (Q2) for ``a`` (..., K), one per group: arrays shaped to broadcast against ``a``."""
    a = np.asarray(a, np.float32)
    axes = _axes(a, scheme.group)
    f32 = np.float32
    if scheme.symmetric:
        top = np.max(np.abs(a), axis=axes, keepdims=True).astype(f32)
        scale = top / f32(scheme.q_max)
        zero = np.zeros_like(scale, dtype=np.int64)
    else:
        lo = np.minimum(np.min(a, axis=axes, keepdims=True), f32(0)).astype(f32)
        hi = np.maximum(np.max(a, axis=axes, keepdims=True), f32(0)).astype(f32)
        levels = scheme.q_max - scheme.q_min
        if scheme.float64_parameters:  # fbgemm's and PyTorch's: the scale and zero point in double
            wide = (hi.astype(np.float64) - lo.astype(np.float64)) / levels
            divisor, lo_, hi_ = np.where(wide > 0, wide, 1.0), lo.astype(np.float64), hi.astype(np.float64)
        else:  # MLAS's: float32 throughout
            wide = ((hi - lo) / f32(levels)).astype(f32)
            divisor, lo_, hi_ = np.where(wide > 0, wide, f32(1)), lo, hi
        from_min = scheme.q_min - lo_ / divisor
        if scheme.zero_point is ZeroPoint.SMALLER_ERROR:
            from_max = scheme.q_max - hi_ / divisor
            error_min = abs(scheme.q_min) + np.abs(lo_ / divisor)
            error_max = abs(scheme.q_max) + np.abs(hi_ / divisor)
            initial = np.where(error_min < error_max, from_min, from_max)
        else:
            initial = from_min
        zero = _round(np.clip(initial, scheme.q_min, scheme.q_max), scheme.rounding).astype(np.int64)
        scale = wide.astype(f32)
    empty = ~(scale > 0)
    scale = np.where(empty, f32(scheme.zero_range_scale), scale).astype(f32)
    if not scheme.symmetric:
        zero = np.where(empty, 0, zero)
    return scale, zero


def quantize_activations(a: np.ndarray, scheme: ActivationScheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a_q, s_a, z_a): ``a`` quantized by (Q2) as ``scheme`` says."""
    a = np.asarray(a, np.float32)
    scale, zero = activation_quantization(a, scheme)
    if scheme.scaling is Scaling.DIVIDE:
        scaled = a / scale
    elif scheme.scaling is Scaling.RECIPROCAL:
        scaled = a * (np.float32(1) / scale)
    elif scheme.scaling is Scaling.RECIPROCAL_FMA:  # one rounding of the exact a * (1 / s) + z (exact in float64)
        shifted = (a.astype(np.float64) * (np.float32(1) / scale).astype(np.float64) + zero).astype(np.float32)
        q = np.clip(_round(shifted, scheme.rounding), scheme.q_min, scheme.q_max).astype(np.int64)
        return q, scale, zero
    else:
        top = np.max(np.abs(a), axis=_axes(a, scheme.group), keepdims=True).astype(np.float32)
        scaled = a * np.where(top > 0, np.float32(scheme.q_max) / np.where(top > 0, top, 1), np.float32(0))
    q = np.clip(_round(scaled.astype(np.float32), scheme.rounding) + zero, scheme.q_min, scheme.q_max).astype(np.int64)
    return q, scale, zero


def near_ties(a: np.ndarray, scheme: ActivationScheme) -> np.ndarray:
    """Which activations of ``a`` lie within :data:`FORCE_WITHIN` of a level of a rounding boundary of ``scheme``:
    where float32 noise upstream (a kernel's own sigmoid, its order of additions) may round them either way."""
    a = np.asarray(a, np.float32)
    scale, zero = activation_quantization(a, scheme)
    if scheme.scaling is Scaling.RANGE_RATIO:
        top = np.max(np.abs(a), axis=_axes(a, scheme.group), keepdims=True).astype(np.float64)
        scaled = a * np.where(top > 0, scheme.q_max / np.where(top > 0, top, 1), 0.0)
    else:
        scaled = a.astype(np.float64) / scale.astype(np.float64)
    level = scaled + zero
    inside = (level > scheme.q_min - 0.5) & (level < scheme.q_max + 0.5)
    return inside & (np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < FORCE_WITHIN)


def saturated_pairs(a_q: np.ndarray, W_q: np.ndarray) -> np.ndarray:
    """sum_j sat16(a_q[2j] W_q[2j] + a_q[2j+1] W_q[2j+1]) for a_q (B, K) and W_q (N, K): vpmaddubsw, then exact sums."""
    K = a_q.shape[1]
    if K % 2:
        a_q, W_q = np.pad(a_q, ((0, 0), (0, 1))), np.pad(W_q, ((0, 0), (0, 1)))
    products = a_q[:, None, :] * W_q[None, :, :]  # (B, N, K)
    pairs = products[:, :, 0::2] + products[:, :, 1::2]
    return np.clip(pairs, -32768, 32767).sum(axis=2)


def quantized_product(a: np.ndarray, weights: QuantizedMatrix, scheme: ActivationScheme,
                      accumulation: Accumulation = Accumulation.EXACT) -> tuple[np.ndarray, np.ndarray]:
    """(Q2)-(Q4): deq(W a) for ``a`` (..., K) in float32, and the dequantization steps s_a s_W it used (one per group
    and output row, broadcast against the result; 0 where the activations or the weights are all zero)."""
    shape = a.shape
    q, scale, zero = quantize_activations(a, scheme)
    q2 = q.reshape(-1, shape[-1])
    z = np.broadcast_to(zero, shape[:-1] + (1,)).reshape(-1, 1)
    s = np.broadcast_to(scale, shape[:-1] + (1,)).reshape(-1, 1)
    W_q, z_W = weights.q, weights.zero_point
    if accumulation is Accumulation.PAIRS_INT16:
        if q2.min(initial=0) < 0 or W_q.min(initial=0) < -128 or W_q.max(initial=0) > 127:
            raise ValueError("int16 pair saturation models u8 activations times s8 weights (vpmaddubsw)")
        # The kernels multiply the raw u8 and s8 values and correct for the zero points with row and column sums.
        raw = saturated_pairs(q2, W_q)
        K = shape[-1]
        acc = raw - z * W_q.sum(axis=1)[None, :] - z_W[None, :] * q2.sum(axis=1, keepdims=True) + K * z * z_W[None, :]
    else:
        acc = (q2 - z) @ (W_q - z_W[:, None]).T
    if np.abs(acc).max(initial=0) >= 2**31:
        raise OverflowError(f"{weights.name}: an accumulator beyond int32 ({np.abs(acc).max()})")
    steps = np.broadcast_to(s * weights.scale[None, :], acc.shape).astype(np.float32)  # (rows, N)
    # A step where the activations or the weights are all zero is a stand-in scale's, not a step of any value.
    silent = np.all(q2 == z, axis=1)[:, None] | np.all(W_q == z_W[:, None], axis=1)[None, :]
    steps = np.where(silent, np.float32(0), steps)
    result = acc.astype(np.float32) * steps
    return result.reshape(shape[:-1] + (W_q.shape[0],)), steps.reshape(shape[:-1] + (W_q.shape[0],))


# ---------------------------------------------------------------------------
# The cell and the layer
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forced:
    """A step whose product took the implementation's own activations (module docstring)."""

    cell: int
    step: int  # in processing order
    levels: int  # how many activations quantized differently
    difference: float  # the largest |h_impl - h_ref| there
    step_size: float  # the activations' quantization step there


@dataclass
class Run:
    """One direction's integer-reference run."""

    h_seq: np.ndarray
    h_T: np.ndarray
    c_T: np.ndarray
    steps: list[float] = field(default_factory=list)  # each product's dequantization steps s_a s_W, per group and row
    forced: list[Forced] = field(default_factory=list)
    #: activations the reference could not follow the implementation on: within float32 noise of a rounding boundary
    #: where the implementation's own values are not observed (a lower layer's outputs, the projection's operand)
    ambiguous: int = 0
    ambiguous_steps: set = field(default_factory=set)  # the steps (processing order) where they were


def cell_forward(cell: QuantizedCell, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, scheme: Scheme,
                 forget_bias: float = 0.0, gate_clip=None, cell_clip=None, proj_clip=None, coupled_input_forget=False,
                 mask=None, zero_output_for_mask=False, observed: np.ndarray | None = None, index: int = 0,
                 given_input: bool = True) -> Run:
    """(Q1)-(Q4) and spec.lstm's (1)-(8) over x (T, B, I), in float32, in processing order; ``observed`` (T, B, P): the
    implementation's own h_t for every step, where known (module docstring); ``given_input``: x is the caller's data
    (the first layer's), not an output the reference computed (whose near-ties it counts as ambiguous)."""
    f32 = np.float32
    x, h0, c0 = (np.asarray(a, f32) for a in (x, h0, c0))
    T, B, _ = x.shape
    H = cell.b.shape[1]
    P = cell.U.q.shape[1]
    options = Options(gate_clip=gate_clip, cell_clip=cell_clip, proj_clip=proj_clip,
                      coupled_input_forget=coupled_input_forget, zero_output_for_mask=zero_output_for_mask)
    layer_norm = cell.ln is not None
    # What spec.lstm's step reads of the parameters: the float32 bias (the shift, with layer normalization) and ln.
    float_params = SimpleNamespace(b=np.asarray(cell.b, f32), ln=None if cell.ln is None else np.asarray(cell.ln, f32),
                                   p=None if cell.p is None else np.asarray(cell.p, f32))
    run = Run(np.empty((T, B, P), f32), h0, c0)

    def note_steps(steps):
        run.steps.extend(np.unique(steps[steps > 0]).tolist())

    if mask is not None:  # padded steps (lengths): in the input's range as the scheme says; never in h's
        keep = mask if scheme.padding is Padding.OUT_OF_RANGE else np.broadcast_to(mask.any(axis=1, keepdims=True), mask.shape)
        x = np.where(keep[:, :, None], x, f32(0))
    if not given_input:
        tied = near_ties(x, scheme.input)
        run.ambiguous += int(tied.sum())
        run.ambiguous_steps.update(np.flatnonzero(tied.any(axis=(1, 2))).tolist())
    # W x_t for every step; per-step groups quantize each step's slice, as the sequence group quantizes the whole.
    Wx, steps = quantized_product(x, cell.W, scheme.input, scheme.accumulation)
    note_steps(steps)
    bias = np.zeros((4, H), f32) if layer_norm else np.asarray(cell.b, f32)
    gates = np.empty((4, T, B, H), f32)
    np.add(Wx.reshape(T, B, 4, H).transpose(2, 0, 1, 3), bias[:, None, None, :], out=gates)
    c_seq = np.empty((T, B, H), f32)
    tanh_c = np.empty((B, H), f32)
    m_seq = None if cell.W_hr is None else np.empty((T, B, H), f32)
    gate_passed = None if gate_clip is None else np.ones((4, T, B, H), bool)
    cell_passed = None if cell_clip is None else np.empty((T, B, H), bool)
    proj_passed = None if proj_clip is None else np.empty((T, B, P), bool)
    ln_n = np.zeros((4, T, B, H), f32) if layer_norm else None
    ln_rstd = np.zeros((4, T, B), f32) if layer_norm else None
    h, c = h0, c0
    for t in range(T):
        operand = h
        if mask is not None and scheme.ended_rows is EndedRows.EXCLUDED:
            operand = np.where(mask[t][:, None], h, f32(0))
        elif mask is not None and t > 0:
            operand = np.where(mask[t - 1][:, None], h, f32(0))
        if observed is not None and t > 0:
            operand = _forced_operand(h, observed[t - 1], scheme.recurrent, run, index, t)
        elif t > 0 and (tied := int(near_ties(operand, scheme.recurrent).sum())):
            run.ambiguous += tied
            run.ambiguous_steps.add(t)
        Uh, steps = quantized_product(operand, cell.U, scheme.recurrent, scheme.accumulation)
        note_steps(steps)
        z = gates[:, t]
        z += Uh.reshape(B, 4, H).transpose(1, 0, 2)
        out = run.h_seq[t] if m_seq is None else m_seq[t]
        features = step_features_of(options, gate_passed, cell_passed, t, float_params, ln_n, ln_rstd)
        step(z, c, float_params.p, f32(forget_bias), c_seq[t], tanh_c, out, features)
        if m_seq is not None:  # (7), (7b): the projection, a quantized product of m_t
            if tied := int(near_ties(m_seq[t], scheme.projection or scheme.recurrent).sum()):
                run.ambiguous += tied
                run.ambiguous_steps.add(t)
            Wm, steps = quantized_product(m_seq[t], cell.W_hr, scheme.projection or scheme.recurrent, scheme.accumulation)
            note_steps(steps)
            run.h_seq[t] = Wm
            if cell.b_hr is not None:
                run.h_seq[t] += np.asarray(cell.b_hr, f32)
            if proj_passed is not None:
                Clip(proj_clip, proj_passed[t])(run.h_seq[t])
        if mask is not None:
            carry(mask[t], h, out=run.h_seq[t])
            carry(mask[t], c, out=c_seq[t])
        h, c = run.h_seq[t], c_seq[t]
    run.h_T, run.c_T = h.copy(), c.copy()
    if mask is not None:
        run.h_seq = np.where(shown(mask, zero_output_for_mask)[:, :, None], run.h_seq, f32(0))
    return run


def _forced_operand(h_ref: np.ndarray, h_obs: np.ndarray, scheme: ActivationScheme, run: Run, index: int, t: int):
    """The reference's own h_{t-1}, or the implementation's where the two quantize apart by float32 noise alone."""
    h_obs = np.asarray(h_obs, np.float32)
    if h_obs.shape != h_ref.shape or not np.all(np.isfinite(h_obs)):
        return h_ref
    q_ref, s_ref, _ = quantize_activations(h_ref, scheme)
    q_obs, _, _ = quantize_activations(h_obs, scheme)
    if np.array_equal(q_ref, q_obs):
        return h_ref
    difference = float(np.abs(h_obs - h_ref).max())
    step_size = float(np.min(s_ref))
    if difference > FORCE_WITHIN * step_size:
        return h_ref
    run.forced.append(Forced(index, t, int(np.count_nonzero(q_ref != q_obs)), difference, step_size))
    return h_obs


def reverse_within(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each batch row's first L_b steps in reverse order, its padded steps where they are (ONNX's reverse direction
    over sequence_lens): its own inverse."""
    out = np.array(a)
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


@dataclass(frozen=True, eq=False)
class LayerRun:
    y: np.ndarray  # (T, B, D * P)
    h_T: np.ndarray  # (L * D, B, P)
    c_T: np.ndarray  # (L * D, B, H)
    step: float  # the median dequantization step s_a s_W over every product's groups and rows: the verdict's unit
    forced: tuple[Forced, ...]
    ambiguous: int = 0  # Run.ambiguous, over every cell
    #: The original-time steps those activations reach first: a forward direction's step t, a reverse direction's
    #: T - 1 - t (within lengths, the earliest a row of the shortest length could put it)
    ambiguous_times: tuple[int, ...] = ()

    def explained(self, exceeded: np.ndarray, num_directions: int, reverse_only: bool = False) -> bool:
        """Whether every element of y where the row disagrees (``exceeded``, (T, B, D * P) booleans) lies where a
        rounding the reference could not observe can reach it: a forward direction's outputs from the first such step
        on, a reverse direction's up to the last one."""
        if not self.ambiguous_times or not exceeded.any():
            return not exceeded.any()
        width = exceeded.shape[2] // num_directions
        first, last = min(self.ambiguous_times), max(self.ambiguous_times)
        for d in range(num_directions):
            times = np.flatnonzero(exceeded[:, :, d * width:(d + 1) * width].any(axis=(1, 2)))
            if not times.size:
                continue
            reverse = reverse_only or d == 1
            if (times.max() > last) if reverse else (times.min() < first):
                return False
        return True

    def outputs(self) -> dict[str, np.ndarray]:
        return {"y": self.y, "h_T": self.h_T, "c_T": self.c_T}


def layer_forward(quantized: QuantizedLayer, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *,
                  config: spec_layer.LayerConfig, scheme: Scheme, lengths=None, mask=None,
                  observed_y: np.ndarray | None = None) -> LayerRun:
    """spec.layer's directions, stacks, lengths and masks (9)-(14) over the integer reference's cell; ``observed_y``
    (T, B, D * P): the implementation's outputs, whose top layer's steps the reference may take (module docstring)."""
    if mask is None and lengths is not None:
        mask, zero_output = spec_layer.lengths_as_mask(np.asarray(lengths), x.shape[0])
    else:
        zero_output = config.zero_output_for_mask
    # b as the model holds it: every layout folds a forget bias into b_f.
    options = {**config.cell_options(), "forget_bias": 0.0, "zero_output_for_mask": zero_output}
    L, D = config.num_layers, config.num_directions
    if len(quantized.cells) != L * D:
        raise LSTMInputError("quantized cells", "another number of cells", L * D, len(quantized.cells))
    P = quantized.cells[0].U.q.shape[1]
    runs: list[Run] = []
    times: set[int] = set()
    T = x.shape[0]
    shortest = T if lengths is None else int(np.min(lengths))
    layer_input = np.asarray(x, np.float32)
    outputs: list[np.ndarray] = []
    for l in range(L):
        outputs = []
        for d in range(D):
            k = l * D + d
            reverse = config.reversed(d)
            if reverse and lengths is not None and scheme.reverse_within_lengths:
                flip = partial(reverse_within, lengths=np.asarray(lengths))
                cell_mask = mask
            else:
                flip = spec_layer.reverse_time if reverse else (lambda a: a)
                cell_mask = None if mask is None else flip(mask)
            seen = None
            if observed_y is not None and l == L - 1 and mask is None:
                seen = flip(np.asarray(observed_y, np.float32)[:, :, d * P:(d + 1) * P])
            run = cell_forward(quantized.cells[k], flip(layer_input), h0[k], c0[k], scheme=scheme, mask=cell_mask,
                               observed=seen, index=k, given_input=l == 0, **options)
            runs.append(run)
            outputs.append(flip(run.h_seq))
            within = reverse and lengths is not None and scheme.reverse_within_lengths
            times.update((max(shortest - 1 - t, 0) if within else T - 1 - t) if reverse else t for t in run.ambiguous_steps)
        if l < L - 1:
            layer_input = spec_layer.next_layer_input(outputs)
    y = spec_layer.join_directions(outputs)
    return LayerRun(y, np.stack([r.h_T for r in runs]), np.stack([r.c_T for r in runs]),
                    float(np.median([s for r in runs for s in r.steps] or [np.nan])), tuple(f for r in runs for f in r.forced),
                    sum(r.ambiguous for r in runs), tuple(sorted(times)))
