"""What goes into an implementation and what must come back, and the checks on both.

One call is the LSTM layer of :mod:`spec.layer` (the cell is its one-layer, one-direction case):

    in    params (spec.LayerParams), x (T, B, I), h0 (L * D, B, P), c0 (L * D, B, H), a
          spec.layer.LayerConfig, lengths (B,) or mask (T, B) or neither; every array in one dtype
    out   :class:`Outputs`: y (T, B, D * P), h_T (L * D, B, P), c_T (L * D, B, H), in that dtype
    back  :class:`Gradients` of <dy, y> + <dh_T, h_T> + <dc_T, c_T> (:class:`Cotangents`) with respect to x,
          h0, c0 and every parameter, the parameters' gradients as a LayerParams of the same structure

Nothing reaches an implementation unchecked (frameworks would cast or broadcast silently), and nothing it
answers is trusted: every tensor must be a finite NumPy array of exactly the dtype and shape asked for,
or the answer is a :class:`contract.errors.ResultError` naming the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.errors import ResultError
from spec import layer as spec_layer
from spec.params import LayerParams
from spec.validation import LSTMInputError, check_tensor, format_shape


@dataclass(frozen=True, eq=False)
class Outputs:
    y: np.ndarray  # (T, B, D * P): the top layer's outputs, every direction, forward first
    h_T: np.ndarray  # (L * D, B, P): every cell's final h, cell l * D + d
    c_T: np.ndarray  # (L * D, B, H)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"y": self.y, "h_T": self.h_T, "c_T": self.c_T}


@dataclass(frozen=True, eq=False)
class Cotangents:
    dy: np.ndarray
    dh_T: np.ndarray
    dc_T: np.ndarray

    def tensors(self) -> dict[str, np.ndarray]:
        return {"dy": self.dy, "dh_T": self.dh_T, "dc_T": self.dc_T}


@dataclass(frozen=True, eq=False)
class Gradients:
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    params: LayerParams  # every cell's W, U, b (p, W_hr) gradients, laid out as the parameters

    def tensors(self) -> dict[str, np.ndarray]:
        """Every gradient by name ('x', 'h0', 'c0', 'layer l direction d W', ...): for comparisons and reports."""
        return {"x": self.x, "h0": self.h0, "c0": self.c0, **self.params.tensors()}


def check_inputs(params, x, h0, c0, *, layer, lengths=None, mask=None, cotangents: Cotangents | None = None) -> None:
    """Everything must already be in one dtype (the parameters') and in shape, and finite: spec.layer's own
    rules, then the cotangents."""
    if not isinstance(params, LayerParams):
        raise LSTMInputError("params", "wrong type", "spec.LayerParams", type(params).__name__)
    dtype = params.dtype
    spec_layer.check_inputs(params, x, h0, c0, config=layer, lengths=lengths, mask=mask, dtype=dtype)
    if cotangents is not None:
        if not isinstance(cotangents, Cotangents):
            raise LSTMInputError("cotangents", "wrong type", "contract.answers.Cotangents", type(cotangents).__name__)
        T, B = x.shape[:2]
        check_tensor("dy", cotangents.dy, (T, B, layer.num_directions * params.output_size), dtype)
        check_tensor("dh_T", cotangents.dh_T, h0.shape, dtype)
        check_tensor("dc_T", cotangents.dc_T, c0.shape, dtype)


def check_answer(name: str, value: object, shape: tuple[int, ...], dtype) -> np.ndarray:
    """One tensor of an answer: a NumPy array of exactly ``dtype`` and ``shape``, every value finite."""
    dtype = np.dtype(dtype)
    if not isinstance(value, np.ndarray):
        raise ResultError(name, "not a NumPy array", f"numpy.ndarray {dtype.name} {format_shape(shape)}", type(value).__name__)
    if value.dtype != dtype:
        raise ResultError(name, "wrong dtype", dtype.name, value.dtype.name)
    if value.shape != tuple(shape):
        raise ResultError(name, "wrong shape", format_shape(shape), format_shape(value.shape))
    finite = np.isfinite(value)
    if not finite.all():
        index = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise ResultError(name, "non-finite value", "finite values", f"{value[index]!r} at index {index}")
    return value


def described(answer: object) -> str:
    """What came back instead of the expected structure: its type, and its length if it is a sequence."""
    if isinstance(answer, (tuple, list)):
        return f"a {type(answer).__name__} of {len(answer)}"
    return type(answer).__name__


def output_shapes(params: LayerParams, layer, x: np.ndarray) -> dict[str, tuple[int, ...]]:
    T, B = x.shape[:2]
    cells, P, H = len(params.cells), params.output_size, params.hidden_size
    return {"y": (T, B, layer.num_directions * P), "h_T": (cells, B, P), "c_T": (cells, B, H)}


def checked_outputs(answer: object, params: LayerParams, layer, x: np.ndarray) -> Outputs:
    """A forward pass's answer: (y, h_T, c_T) or :class:`Outputs`, each in the parameters' dtype and in shape."""
    if isinstance(answer, Outputs):
        answer = (answer.y, answer.h_T, answer.c_T)
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise ResultError("outputs", "wrong type", "(y, h_T, c_T)", described(answer))
    shapes = output_shapes(params, layer, x)
    return Outputs(*(check_answer(name, value, shapes[name], params.dtype) for name, value in zip(shapes, answer)))


def gradient_shapes(params: LayerParams, x: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Every gradient's shape by its name in :meth:`Gradients.tensors`."""
    B, cells = x.shape[1], len(params.cells)
    shapes = {"x": x.shape, "h0": (cells, B, params.output_size), "c0": (cells, B, params.hidden_size)}
    shapes.update({name: t.shape for name, t in params.tensors().items()})
    return shapes


def checked_gradients(answer: object, params: LayerParams, x: np.ndarray, *, parameters_dtype=None) -> Gradients:
    """A backward pass's answer: a :class:`Gradients` holding exactly the gradients of these parameters (the same
    cells and tensors), each in the parameters' dtype and shape; the parameters' own gradients in
    ``parameters_dtype`` where given (float32 under mixed precision, whose parameters are float32)."""
    if not isinstance(answer, Gradients):
        raise ResultError("gradients", "wrong type", "contract.answers.Gradients", described(answer))
    if not isinstance(answer.params, LayerParams):
        raise ResultError("gradients.params", "wrong type", "spec.LayerParams", described(answer.params))
    return gradients_from_names(answer.tensors(), params, x, what="gradients", parameters_dtype=parameters_dtype)


def checked_by_name(named: object, shapes: Mapping[str, tuple], dtype: np.dtype, *, what: str,
                    dtypes: Mapping[str, object] | None = None) -> dict[str, np.ndarray]:
    """Exactly the gradients ``shapes`` names, each checked (its dtype, or its own in ``dtypes``, shape, finite): a
    dict, none missing, none other, in the answer's own names."""
    if not isinstance(named, Mapping):
        raise ResultError(what, "wrong type", "a dict of gradients", described(named))
    expected = f"gradients {list(shapes)}"
    missing = [name for name in shapes if name not in named]
    if missing:
        raise ResultError(f"gradient {missing[0]}", "missing", expected, f"gradients {list(named)}")
    unexpected = [name for name in named if name not in shapes]
    if unexpected:
        raise ResultError(f"gradient {unexpected[0]}", "unexpected", expected, f"gradients {list(named)}")
    dtypes = dtypes or {}
    return {name: check_answer(f"gradient {name}", named[name], shape, dtypes.get(name, dtype))
            for name, shape in shapes.items()}


def gradients_from_names(named: Mapping[str, object], params: LayerParams, x: np.ndarray, *, what: str,
                         names: Mapping[str, str] | None = None, parameters_dtype=None) -> Gradients:
    """Gradients from tensors by name, exactly those of ``params`` (each checked): how an answer keyed by names
    (a plug-in's dict, a results file, a child process's frame) becomes :class:`Gradients`. ``names`` maps the
    suite's names (:func:`gradient_shapes`) to the names the answer uses, for its messages (default: the same);
    ``parameters_dtype``: the parameters' gradients' dtype where it is not theirs (:func:`checked_gradients`)."""
    shapes = gradient_shapes(params, x)
    names = names or {name: name for name in shapes}
    theirs = checked_by_name(named, {names[name]: shape for name, shape in shapes.items()}, params.dtype, what=what,
                             dtypes={names[name]: parameters_dtype for name in params.tensors()} if parameters_dtype else None)
    checked = {name: theirs[names[name]] for name in shapes}
    return Gradients(checked["x"], checked["h0"], checked["c0"], params.with_tensors(checked))


__all__ = [
    "Cotangents", "Gradients", "Outputs", "check_answer", "check_inputs", "checked_by_name", "checked_gradients",
    "checked_outputs",
    "described", "gradient_shapes", "gradients_from_names", "output_shapes",
]
