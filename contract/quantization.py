"""A quantized model's weights, read back into the spec's layout: integers, scales and zero points per cell.

A quantized row reads its model's 8-bit weights, their scales and zero points, and its float tensors (biases,
peepholes, layer normalization) by the model's own names; :func:`quantized_layer` lays them out as the integer
reference takes them (spec.quantized.QuantizedLayer), through the row's layout's own inverse (``from_native``), applied
to the integers, to the scales and to the zero points alike: a layout's inverse only moves, transposes and negates
elements, so it maps each of them as it maps the weights, and one copy of every layout conversion serves both. A
negated weight (TFLite's CIFG gate) comes back as -q with zero point -z, its scale's sign dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from contract.compare import Comparison, compare
from contract.layout import Layout
from contract.tolerances import quantized_tolerance
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams
from spec.quantized import LayerRun, QuantizedCell, QuantizedLayer, QuantizedMatrix, layer_forward
from spec.validation import LSTMInputError

__all__ = ["against_integer_reference", "integer_reference", "quantized_layer"]


def _checked_scale(name: str, scale: object, shape: tuple[int, ...]) -> np.ndarray:
    """A model's scale (per tensor, or one per element of an axis, broadcast by the row) as an array of ``shape``."""
    scale = np.asarray(scale, np.float64) if scale is not None else np.zeros(0)
    if scale.size == 0:
        raise LSTMInputError(f"{name} scale", "missing", "the quantized tensor's scale", "none in the model")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        bad = scale.ravel()[~(np.isfinite(scale.ravel()) & (scale.ravel() > 0))][0]
        raise LSTMInputError(f"{name} scale", "not a finite positive number", "finite scales > 0", repr(float(bad)))
    try:
        return np.broadcast_to(scale, shape)
    except ValueError:
        raise LSTMInputError(f"{name} scale", "a shape that does not fit the tensor", f"broadcastable to {shape}",
                             scale.shape) from None


def _checked_zero_point(name: str, zero_point: object, shape: tuple[int, ...]) -> np.ndarray:
    zero_point = np.asarray(zero_point) if zero_point is not None else np.zeros(0)
    if zero_point.size == 0:
        raise LSTMInputError(f"{name} zero point", "missing", "the quantized tensor's zero point", "none in the model")
    if not np.issubdtype(zero_point.dtype, np.integer) and (not np.all(np.isfinite(zero_point))
                                                             or np.any(zero_point != np.round(zero_point))):
        raise LSTMInputError(f"{name} zero point", "not an integer", "integers", repr(zero_point.ravel()[0]))
    try:
        return np.broadcast_to(zero_point.astype(np.float64), shape)
    except ValueError:
        raise LSTMInputError(f"{name} zero point", "a shape that does not fit the tensor", f"broadcastable to {shape}",
                             zero_point.shape) from None


def _matrix(name: str, q: np.ndarray, s: np.ndarray, z: np.ndarray, unused_rows: slice | None) -> QuantizedMatrix:
    """One canonical matrix (N, K) from its integers and its elementwise scales and zero points: per row at most."""
    s, z = np.abs(s), z.copy()
    if unused_rows is not None:  # a gate the model does not hold (TFLite's CIFG): zeros, any scale
        s[unused_rows], z[unused_rows] = 1.0, 0.0
    for what, value in (("scale", s), ("zero point", z)):
        if value.size and np.any(value != value[:, :1]):
            n = int(np.argwhere(np.any(value != value[:, :1], axis=1))[0][0])
            raise LSTMInputError(f"{name} {what}", "a granularity the integer reference does not model",
                                 "one per tensor or one per output row", f"values that vary along the input axis "
                                 f"(row {n}): per-input-column or blockwise quantization")
    scale, zero = s[:, 0], np.rint(z[:, 0]).astype(np.int64)
    if np.all(scale == scale[0]) and np.all(zero == zero[0]):
        scale, zero = scale[:1], zero[:1]
    return QuantizedMatrix(name, q, scale, zero)


def quantized_layer(layout: Layout, layer: LayerConfig, *, integers: Mapping[str, np.ndarray],
                    scales: Mapping[str, object], zero_points: Mapping[str, object],
                    floats: Mapping[str, np.ndarray]) -> QuantizedLayer:
    """The integer reference's weights from a model's, by the model's names (the layout's native names): ``integers``
    the 8-bit tensors, ``scales`` and ``zero_points`` for each of them (a scalar, or an array the row has shaped to
    broadcast against the tensor: one per output channel), ``floats`` every tensor the model keeps in float. Biases
    come back as the model holds them, a forget bias folded into b_f."""
    names = set(integers) | set(floats)
    for name in integers:
        if name not in scales:
            raise LSTMInputError(f"{name} scale", "missing", "the quantized tensor's scale", "none in the model")
        if name not in zero_points:
            raise LSTMInputError(f"{name} zero point", "missing", "the quantized tensor's zero point", "none in the model")
    as_q, as_s, as_z, dequantized = {}, {}, {}, {}
    for name, q in integers.items():
        q = np.asarray(q)
        if not np.issubdtype(q.dtype, np.integer):
            raise LSTMInputError(name, "not integers", "an int8 or uint8 tensor", q.dtype)
        s = _checked_scale(name, scales[name], q.shape)
        z = _checked_zero_point(name, zero_points[name], q.shape)
        as_q[name], as_s[name], as_z[name] = q.astype(np.float64), s, z
        dequantized[name] = s * (q - z)
    for name, value in floats.items():
        value = np.asarray(value, np.float64)
        as_q[name] = as_s[name] = as_z[name] = np.zeros_like(value)
        dequantized[name] = value
    assert names == set(as_q)
    canonical = {what: layout.from_native(native, layer) for what, native in
                 (("q", as_q), ("s", as_s), ("z", as_z), ("value", dequantized))}
    f = GATES.index("f")
    cells = []
    for k, value in enumerate(canonical["value"].cells):
        H = value.hidden_size
        unused = slice(f * H, (f + 1) * H) if layer.coupled_input_forget and not layout.keeps_unused_forget_gate else None
        cell_name = canonical["value"].cell_name(k)

        def matrix(tensor: str, rows_unused=None):
            parts = [getattr(canonical[what].cells[k], tensor) for what in ("q", "s", "z")]
            parts = [np.asarray(p, np.float64).reshape(-1, p.shape[-1]) for p in parts]
            q = np.rint(parts[0]).astype(np.int64)
            return _matrix(f"{cell_name} {tensor}", q, parts[1], parts[2], rows_unused)

        cells.append(QuantizedCell(
            W=matrix("W", unused), U=matrix("U", unused), b=np.asarray(value.b, np.float32),
            p=None if value.p is None else np.asarray(value.p, np.float32),
            W_hr=None if value.W_hr is None else matrix("W_hr"),
            ln=None if value.ln is None else np.asarray(value.ln, np.float32),
            b_hr=None if value.b_hr is None else np.asarray(value.b_hr, np.float32)))
    return QuantizedLayer(tuple(cells))


def integer_reference(row, params: LayerParams, x, h0, c0, *, layer: LayerConfig, lengths=None, mask=None,
                      device: str = "cpu", observed_y=None) -> LayerRun:
    """The integer reference of a quantized row's scheme (``row.quantization``) on these inputs, with the weights its
    own model holds, which must quantize ``params`` (LSTMInputError naming the tensor otherwise); ``observed_y``: the
    row's outputs, whose top layer the reference may follow at float32 noise (spec.quantized's forcing). The one path
    the suite, the benchmarks and the training view judge a quantized row by."""
    quantized = row.quantized_parameters(params, layer=layer, device=device)
    quantized.check_quantizes(params, coupled=layer.coupled_input_forget)
    return layer_forward(quantized, x, h0, c0, config=layer, scheme=row.quantization, lengths=lengths, mask=mask,
                         observed_y=observed_y)


def against_integer_reference(got: Mapping[str, np.ndarray], run: LayerRun, num_directions: int = 1) -> list[Comparison]:
    """Each of the row's outputs in ``got`` (y, h_T, c_T) against the reference's, within the quantized tolerance of the
    run's dequantization step (contract.tolerances.quantized_tolerance)."""
    tol = quantized_tolerance(run.step)
    return [compare(name, got[name], want, atol=tol.atol, rtol=tol.rtol, num_directions=num_directions)
            for name, want in run.outputs().items() if name in got]
