"""Loading an implementation: ``pytest conformance/ --backend path/to/impl.py`` or ``--backend package.module:object``.

What is loaded may be

- a :class:`contract.row.Row` instance or subclass, or a module whose ``ROWS`` (a sequence) or ``ROW`` holds
  such objects; or
- a plain module (or object) with functions. The smallest contract is the LSTM cell::

      ID = "my-lstm"                           # optional: the row's name (default: the file or module name)
      DTYPES = ("float32", "float64")          # optional: what it computes in (default: both; also "bfloat16",
                                               # "float16", NumPy arrays of ml_dtypes.bfloat16 and numpy.float16)
      POLICY = "half-storage-float32-accumulation"  # with a half type: the precision policy it follows there
                                               # (spec.precision.Policy), or POLICIES = {"bfloat16": ..., ...}
      VARIANTS = ("standard", "peephole")      # optional (default: both)
      ENVIRONMENT = {"mylib": "1.2"}           # optional: recorded in the report (or a function environment())
      def forward(params, x, h0, c0, *, forget_bias): return h_seq, h_T, c_T
      def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias): return {"x": ..., "W": ..., ...}  # optional

  ``params`` is a :class:`spec.LSTMParams` (W (4, H, I), U (4, H, H), b (4, H), p (3, H) or None; gates
  i, f, g, o) and every array a NumPy array in the requested dtype; gradients come back in the same layout.
  It runs every case that is a plain cell: one forward layer, no projection, clips, coupled gates, lengths
  or mask (peepholes as VARIANTS say). The layer (spec/layer.py), beside or instead of the cell::

      LAYER_FEATURES = ("stacked", "bidirectional", ...)   # what it runs (contract.vocabulary.Feature names;
                                                           # default: every one, so nothing is hidden)
      def forward_layer(params, x, h0, c0, *, config, lengths, mask): return y, h_T, c_T
      def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask): return {"x": ..., "h0": ...,
          "c0": ..., "layer 0 direction 0 W": ..., ...}    # optional; names as LayerParams.tensors()

  A module with both runs the cell's functions on the plain-cell cases and the layer's on the others.

Rows whose ``process_environment`` differs from this process's are wrapped to run in a process of their own
(:func:`placed`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from contract.answers import (
    Gradients,
    check_answer,
    checked_by_name,
    described,
    gradients_from_names,
)
from contract.errors import NotSupported, ResultError
from contract.remote import Remote
from contract.row import Row
from contract.vocabulary import (
    CONFORMANCE_DTYPES,
    FULL_DTYPES,
    Dtype,
    Feature,
    features_of,
)
from spec.params import LayerParams, LSTMParams
from spec.precision import Policy

DTYPE_NAMES = tuple(str(d) for d in CONFORMANCE_DTYPES)
DEFAULT_DTYPES = tuple(str(d) for d in FULL_DTYPES)
VARIANT_NAMES = ("standard", "peephole")
FEATURE_NAMES = tuple(str(f) for f in Feature if f is not Feature.PEEPHOLE)
#: What the cell's functions run: one forward layer, peepholes.
CELL_FEATURES = frozenset({Feature.PEEPHOLE})
#: The module names of the contract before it was one (backends.base.Implementation): a plug-in that imports them
#: is told what they became.
_RENAMED = {
    "backends.base": "contract.row.Row (subclass it and supply call(), or the hooks _outputs and _gradients)",
    "backends.plugin": "contract.loading",
    "backends.config": "contract.vocabulary (Dtype, Device, Feature)",
}


class BackendLoadError(Exception):
    """--backend names something that cannot be loaded as an implementation; the message says how to fix it."""


def placed(row: Row) -> Row:
    """The row itself, or the row in a process of its own where it needs environment variables this process lacks."""
    if any(os.environ.get(name) != value for name, value in row.process_environment.items()):
        return Remote.around(row)
    return row


def load_rows(target: str) -> list[Row]:
    """The rows named by ``target`` (a .py path, ``module`` or ``module:object``), each where it must run."""
    module, attribute = _import_target(target)
    obj = module if attribute is None else _get_attribute(module, attribute, target)
    try:
        rows = _rows_from(obj, default_id=_default_id(target, attribute))
    except BackendLoadError as error:  # name the target: a run may have several
        raise BackendLoadError(f"--backend {target}: {error}") from None
    if not rows:
        raise BackendLoadError(
            f"--backend {target}: found no implementation. Define ROWS (or ROW) holding contract.row.Row objects, or "
            "functions forward(params, x, h0, c0, *, forget_bias) [and backward(...)] and/or forward_layer(params, x, "
            "h0, c0, *, config, lengths, mask) [and backward_layer(...)]; see contract/loading.py and the README."
        )
    for row in rows:
        # How a process of its own finds this row again.
        row.origin = row.origin or (str(Path(target).resolve()) if target.endswith(".py") else target)
    return [placed(row) for row in rows]


def _import_target(target: str) -> tuple[ModuleType, str | None]:
    path = Path(target)
    if target.endswith(".py") or path.suffix == ".py" or (path.exists() and path.is_file()):
        if not path.is_file():
            raise BackendLoadError(f"--backend {target}: no such file (relative paths are taken from {Path.cwd()})")
        name = f"lstm_conformance_backend_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise BackendLoadError(f"--backend {target}: importing it failed: {_import_failure(error)}") from error
        return module, None
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendLoadError(
            f"--backend {target}: cannot import module {module_name!r} ({_import_failure(error)}); give a path to a .py "
            "file or an importable module, optionally with :object"
        ) from error
    return module, attribute or None


def _import_failure(error: Exception) -> str:
    described = f"{type(error).__name__}: {error}"
    missing = getattr(error, "name", None)
    if isinstance(error, ModuleNotFoundError) and missing in _RENAMED:
        return f"{described}: {missing} is now {_RENAMED[missing]}"
    if isinstance(error, ImportError) and missing is not None:
        # ``from backends import base``: the package imports, the name does not (Python 3.12 on says which name).
        taken = getattr(error, "name_from", None)
        renamed = [old for old in _RENAMED
                   if old.rpartition(".")[0] == missing and (taken is None or old == f"{missing}.{taken}")]
        if renamed:
            return f"{described}: " + "; ".join(f"{old} is now {_RENAMED[old]}" for old in renamed)
    return described


def _get_attribute(module, attribute, target):
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise BackendLoadError(f"--backend {target}: {module.__name__} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def _default_id(target: str, attribute: str | None) -> str:
    if attribute:
        return attribute
    return Path(target).stem if target.endswith(".py") else target


def _rows_from(obj, default_id: str) -> list[Row]:
    if isinstance(obj, Row):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, Row):
        return [obj()]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, Row) for r in obj):
        return list(obj)  # module:SEQUENCE of rows
    for name in ("ROWS", "ROW"):
        found = getattr(obj, name, None)
        if found is not None:
            found = list(found) if isinstance(found, (list, tuple)) else [found]
            bad = [f for f in found if not isinstance(f, Row)]
            if bad:
                raise BackendLoadError(f"{name} must hold contract.row.Row objects; got {type(bad[0]).__name__}")
            return found
    forward = getattr(obj, "forward", None)
    forward_layer = getattr(obj, "forward_layer", None)
    if callable(forward) and not callable(forward_layer) and hasattr(obj, "LAYER_FEATURES"):
        raise BackendLoadError(
            f"LAYER_FEATURES = {getattr(obj, 'LAYER_FEATURES')!r} is declared, but there is no forward_layer(): the "
            "layer features are run by forward_layer(params, x, h0, c0, *, config, lengths, mask); define it, or "
            "remove LAYER_FEATURES (forward() is the cell alone)"
        )
    if not (callable(forward) or callable(forward_layer)):
        return []
    dtypes = tuple(getattr(obj, "DTYPES", DEFAULT_DTYPES))
    variants = tuple(getattr(obj, "VARIANTS", VARIANT_NAMES))
    layer_features = tuple(getattr(obj, "LAYER_FEATURES", FEATURE_NAMES)) if callable(forward_layer) else ()
    for name, values, allowed in (("DTYPES", dtypes, DTYPE_NAMES), ("VARIANTS", variants, VARIANT_NAMES),
                                  ("LAYER_FEATURES", layer_features, FEATURE_NAMES)):
        if not set(values) <= set(allowed):
            raise BackendLoadError(f"{name} = {values}: each must be one of {allowed}")
    backward, backward_layer = getattr(obj, "backward", None), getattr(obj, "backward_layer", None)
    doc = (getattr(obj, "__doc__", None) or "").strip()
    try:
        return [FunctionRow(
            id=str(getattr(obj, "ID", default_id)),
            description=doc.splitlines()[0] if doc else "",
            dtypes=dtypes,
            policies=_policies(obj, dtypes),
            features=frozenset(layer_features) | ({Feature.PEEPHOLE} if "peephole" in variants else set()),
            gradients=callable(backward) or callable(backward_layer),
            reasons={"gradients": "the implementation defines no backward()",
                     Feature.PEEPHOLE: f"{getattr(obj, 'ID', default_id)} implements the standard variant only (VARIANTS)"},
            forward_function=forward if callable(forward) else None,
            backward_function=backward if callable(backward) else None,
            forward_layer_function=forward_layer if callable(forward_layer) else None,
            backward_layer_function=backward_layer if callable(backward_layer) else None,
            environment_source=getattr(obj, "ENVIRONMENT", None) or getattr(obj, "environment", None),
        )]
    except ValueError as error:  # a declaration the row refuses (a policy that is not one, or holds no such dtype)
        raise BackendLoadError(str(error)) from None


def _policies(obj, dtypes: tuple[str, ...]) -> dict[str, str]:
    """POLICY (one policy for every half type of DTYPES) or POLICIES (one per half type), checked by the row."""
    halves = [d for d in dtypes if Dtype(d).half]
    if hasattr(obj, "POLICY") and hasattr(obj, "POLICIES"):
        raise BackendLoadError("declare POLICY (every half type) or POLICIES (one per half type), not both")
    if hasattr(obj, "POLICY"):
        if not halves:
            raise BackendLoadError(f"POLICY = {obj.POLICY!r} is declared, but DTYPES = {dtypes} has no half type "
                                   "(bfloat16, float16) for it to describe")
        return {d: obj.POLICY for d in halves}
    policies = getattr(obj, "POLICIES", {})
    if not isinstance(policies, Mapping):
        raise BackendLoadError(f"POLICIES must be a dict of half type to policy name, got {type(policies).__name__}")
    return dict(policies)


@dataclass(eq=False)
class FunctionRow(Row):
    """A row made of plain functions: the cell's (forward, backward), the layer's (forward_layer, backward_layer),
    or both. Their answers are checked in their own names (h_seq, gradient W) before they become the contract's."""

    forward_function: Callable | None = None
    backward_function: Callable | None = None
    forward_layer_function: Callable | None = None
    backward_layer_function: Callable | None = None
    #: ENVIRONMENT (a dict) or environment() (a function returning one) of the module, for the report.
    environment_source: object = None

    def _cell(self, layer, lengths, mask, gradients: bool) -> bool:
        """Whether the cell's functions run this case: a plain cell (peepholes at most), and they are defined."""
        plain = features_of(layer, lengths, mask) <= CELL_FEATURES
        cell = self.backward_function if gradients else self.forward_function
        layered = self.backward_layer_function if gradients else self.forward_layer_function
        if plain and cell is not None:
            return True
        if layered is not None:
            return False
        if not plain and self.forward_layer_function is None:
            raise NotSupported(f"{self.id} implements the LSTM cell (forward()), not the layer's features "
                               f"(forward_layer())")
        raise NotSupported(f"the implementation defines no {'backward' if gradients else 'forward'}"
                           f"{'' if plain else '_layer'}()")

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        if not self._cell(layer, lengths, mask, gradients=False):
            return self.forward_layer_function(params, x, h0, c0, config=layer, lengths=lengths, mask=mask)
        answer = self.forward_function(params.cells[0], x, h0[0], c0[0], forget_bias=layer.forget_bias)
        if not isinstance(answer, (tuple, list)) or len(answer) != 3:
            raise ResultError("outputs", "wrong type", "(h_seq, h_T, c_T)", described(answer))
        T, B, H = x.shape[0], x.shape[1], params.hidden_size
        shapes = {"h_seq": (T, B, H), "h_T": (B, H), "c_T": (B, H)}
        h_seq, h_T, c_T = (check_answer(name, value, shapes[name], params.dtype) for name, value in zip(shapes, answer))
        return h_seq, h_T[None], c_T[None]

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device) -> Gradients:
        mixed = self.policy(params.dtype.name, device) is Policy.MIXED  # float32 parameters: float32 gradients
        parameters_dtype = np.float32 if mixed else None
        if not self._cell(layer, lengths, mask, gradients=True):
            answer = self.backward_layer_function(params, x, h0, c0, cotangents.dy, cotangents.dh_T, cotangents.dc_T,
                                                  config=layer, lengths=lengths, mask=mask)
            return gradients_from_names(answer, params, x, what="gradients", parameters_dtype=parameters_dtype)
        answer = self.backward_function(params.cells[0], x, h0[0], c0[0], cotangents.dy, cotangents.dh_T[0], cotangents.dc_T[0],
                                        forget_bias=layer.forget_bias)
        return cell_gradients(answer, params, x, parameters_dtype=parameters_dtype)

    def _environment(self, device: str) -> Mapping[str, object]:
        source = self.environment_source() if callable(self.environment_source) else self.environment_source
        if source is None:
            return {}
        if not isinstance(source, Mapping):
            raise TypeError(f"ENVIRONMENT / environment() must give a dict, got {type(source).__name__}")
        return {str(k): v for k, v in source.items()}


def cell_gradients(answer: object, params: LayerParams, x: np.ndarray, *, parameters_dtype=None) -> Gradients:
    """The cell contract's gradients (x, h0, c0 of one cell; W, U, b, p) as the layer's: checked in the cell's own names
    and shapes ("gradient W: wrong dtype"; the parameters' in ``parameters_dtype`` where given: float32 under mixed
    precision), then h0 and c0 given their one cell axis."""
    cell = params.cells[0]
    B = x.shape[1]
    shapes = {"x": x.shape, "h0": (B, cell.output_size), "c0": (B, cell.hidden_size)}
    shapes.update({name: t.shape for name, t in cell.tensors().items()})
    dtypes = None if parameters_dtype is None else {name: parameters_dtype for name in cell.tensors()}
    g = checked_by_name(answer, shapes, params.dtype, what="gradients", dtypes=dtypes)
    weights = LSTMParams(**{name: g[name] for name in cell.tensors()})
    return Gradients(g["x"], g["h0"][None], g["c0"][None], LayerParams((weights,), params.num_directions))


__all__ = ["BackendLoadError", "FunctionRow", "cell_gradients", "load_rows", "placed"]
