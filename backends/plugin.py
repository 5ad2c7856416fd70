"""Loading someone else's implementation: ``pytest conformance/ --backend path/to/impl.py`` or
``--backend package.module:object``.

What is loaded may be

- an :class:`backends.base.Implementation` instance or subclass, or a module whose
  ``IMPLEMENTATIONS`` (a sequence) or ``IMPLEMENTATION`` holds such objects; or
- a plain module (or object) with functions, the smallest contract::

      ID = "my-lstm"                           # optional: the row's name (default: the file or module name)
      DTYPES = ("float32", "float64")          # optional: what it computes in (default: both)
      VARIANTS = ("standard", "peephole")      # optional (default: both)
      ENVIRONMENT = {"mylib": "1.2"}           # optional: recorded in the report (or a function environment())
      def forward(params, x, h0, c0, *, forget_bias): return h_seq, h_T, c_T
      def backward(params, x, h0, c0, dh_seq, dh_T, dc_T, *, forget_bias): return {"x": ..., "W": ..., ...}  # optional

  and for the layer (spec/layer.py), optionally, beside or instead of the cell::

      LAYER_FEATURES = ("stacked", "bidirectional", ...)   # what it runs (backends.config.LAYER_FEATURES);
                                                           # default: every feature, so nothing is hidden
      def forward_layer(params, x, h0, c0, *, config, lengths, mask): return y, h_T, c_T
      def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask): return {"x": ..., "h0": ...,
          "c0": ..., "layer 0 direction 0 W": ..., ...}    # optional; names as LayerParams.tensors()

  ``params`` is a :class:`spec.LSTMParams` (W (4, H, I), U (4, H, H), b (4, H),
  p (3, H) or None; gates i, f, g, o) and every array is a NumPy array in the
  requested dtype. Gradients come back in the same canonical layout.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from backends.base import DTYPES, LAYER_FEATURES, VARIANTS, Config, Implementation, NotSupported


class BackendLoadError(Exception):
    """--backend names something that cannot be loaded as an implementation; the message says how to fix it."""


@dataclass
class FunctionImplementation(Implementation):
    """An implementation made of two plain functions (the smallest third-party contract)."""

    forward_function: Callable | None = None
    backward_function: Callable | None = None
    forward_layer_function: Callable | None = None
    backward_layer_function: Callable | None = None
    #: ENVIRONMENT (a dict) or environment() (a function returning one) of the module, for the report.
    environment_source: object = None
    unsupported_reasons: dict = field(default_factory=dict)

    def check(self, config: Config, *, gradients: bool = False) -> None:
        if self.forward_function is None:
            raise NotSupported(f"{self.id} defines no forward(): it implements the layer only")
        if gradients and self.backward_function is None:
            raise NotSupported("the implementation defines no backward()")
        super().check(config, gradients=gradients)

    def check_layer(self, config: Config, layer, lengths=None, mask=None, *, gradients: bool = False) -> None:
        if gradients and self.forward_layer_function is not None and self.backward_layer_function is None:
            raise NotSupported("the implementation defines no backward_layer()")
        super().check_layer(config, layer, lengths, mask, gradients=gradients)

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        return self.forward_function(params, x, h0, c0, forget_bias=forget_bias)

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        return self.forward_layer_function(params, x, h0, c0, config=layer, lengths=lengths, mask=mask)

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        return self.backward_layer_function(
            params, x, h0, c0, cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"], config=layer, lengths=lengths, mask=mask
        )

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        return self.backward_function(params, x, h0, c0, cotangents["dh_seq"], cotangents["dh_T"], cotangents["dc_T"], forget_bias=forget_bias)

    def _environment(self, device: str) -> dict[str, object]:
        source = self.environment_source() if callable(self.environment_source) else self.environment_source
        if source is None:
            return {}
        if not isinstance(source, dict):
            raise TypeError(f"ENVIRONMENT / environment() must give a dict, got {type(source).__name__}")
        return {str(k): v for k, v in source.items()}


def load_backend(target: str) -> list[Implementation]:
    """The implementations named by ``target`` (a .py path, ``module`` or ``module:object``)."""
    module, attribute = _import_target(target)
    obj = module if attribute is None else _get_attribute(module, attribute, target)
    implementations = _implementations_from(obj, default_id=_default_id(target, attribute))
    for implementation in implementations:
        # How a child process finds this row again (rows with their own process environment).
        implementation.origin = implementation.origin or (str(Path(target).resolve()) if target.endswith(".py") else target)
    if not implementations:
        raise BackendLoadError(
            f"--backend {target}: found no implementation. Define IMPLEMENTATIONS (or IMPLEMENTATION) "
            "holding backends.base.Implementation objects, or functions forward(params, x, h0, c0, *, forget_bias) "
            "[and backward(...)] and/or forward_layer(params, x, h0, c0, *, config, lengths, mask) [and "
            "backward_layer(...)]; see backends/plugin.py and the README."
        )
    return implementations


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
            raise BackendLoadError(f"--backend {target}: importing it failed: {type(error).__name__}: {error}") from error
        return module, None
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendLoadError(
            f"--backend {target}: cannot import module {module_name!r} ({error}); give a path to a .py file "
            "or an importable module, optionally with :object"
        ) from error
    return module, attribute or None


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


def _implementations_from(obj, default_id: str) -> list[Implementation]:
    if isinstance(obj, Implementation):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, Implementation):
        return [obj()]
    for name in ("IMPLEMENTATIONS", "IMPLEMENTATION"):
        found = getattr(obj, name, None)
        if found is not None:
            found = list(found) if isinstance(found, (list, tuple)) else [found]
            bad = [f for f in found if not isinstance(f, Implementation)]
            if bad:
                raise BackendLoadError(f"{name} must hold backends.base.Implementation objects; got {type(bad[0]).__name__}")
            return found
    forward = getattr(obj, "forward", None)
    forward_layer = getattr(obj, "forward_layer", None)
    if callable(forward) and not callable(forward_layer) and hasattr(obj, "LAYER_FEATURES"):
        raise BackendLoadError(
            f"LAYER_FEATURES = {getattr(obj, 'LAYER_FEATURES')!r} is declared, but there is no forward_layer(): the "
            "layer features are run by forward_layer(params, x, h0, c0, *, config, lengths, mask); define it, or "
            "remove LAYER_FEATURES (forward() is the cell alone)"
        )
    if callable(forward) or callable(forward_layer):
        dtypes = tuple(getattr(obj, "DTYPES", DTYPES))
        variants = tuple(getattr(obj, "VARIANTS", VARIANTS))
        features = tuple(getattr(obj, "LAYER_FEATURES", LAYER_FEATURES)) if callable(forward_layer) else None
        for name, values, allowed in (("DTYPES", dtypes, DTYPES), ("VARIANTS", variants, VARIANTS),
                                      ("LAYER_FEATURES", features or (), tuple(LAYER_FEATURES))):
            if not set(values) <= set(allowed):
                raise BackendLoadError(f"{name} = {values}: each must be one of {allowed}")
        backward = getattr(obj, "backward", None)
        backward_layer = getattr(obj, "backward_layer", None)
        return [
            FunctionImplementation(
                id=str(getattr(obj, "ID", default_id)),
                framework="",
                description=(getattr(obj, "__doc__", None) or "").strip().splitlines()[0] if getattr(obj, "__doc__", None) else "",
                variants=variants,
                dtypes=dtypes,
                devices=("cpu",),
                gradients=callable(backward) or callable(backward_layer),
                forward_function=forward if callable(forward) else None,
                backward_function=backward if callable(backward) else None,
                layer_features=features,
                forward_layer_function=forward_layer if callable(forward_layer) else None,
                backward_layer_function=backward_layer if callable(backward_layer) else None,
                environment_source=getattr(obj, "ENVIRONMENT", None) or getattr(obj, "environment", None),
                unsupported_reasons={"gradients": "the implementation defines no backward()"},
            )
        ]
    return []


__all__ = ["BackendLoadError", "FunctionImplementation", "NotSupported", "load_backend"]
