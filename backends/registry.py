"""Every implementation this project ships, by stable id.

Adapter modules import their framework only inside their methods, so listing
the implementations never fails: a framework that is not installed makes its
rows unavailable (skipped with that reason), not the suite unimportable.
"""

from __future__ import annotations

import importlib

from backends.base import Implementation

#: Adapter modules, each defining IMPLEMENTATIONS; the order is the matrix's row order.
ADAPTER_MODULES = (
    "backends.torch_lstm",
    "backends.tensorflow_lstm",
    "backends.tf1_lstm",
    "backends.keras_lstm",
    "backends.jax_lstm",
    "backends.onnxruntime_lstm",
    "backends.onnx_reference_lstm",
    "backends.torch_onnx_export",
    "backends.tf2onnx_export",
)


def builtin_implementations() -> list[Implementation]:
    implementations = []
    for name in ADAPTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # an adapter not written yet is not an error of the suite
                continue
            raise
        for implementation in module.IMPLEMENTATIONS:
            implementation.origin = implementation.origin or name
        implementations.extend(module.IMPLEMENTATIONS)
    ids = [i.id for i in implementations]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise RuntimeError(f"implementation ids must be unique; repeated: {sorted(duplicates)}")
    return implementations


def implementation_by_id(implementation_id: str) -> Implementation:
    for implementation in builtin_implementations():
        if implementation.id == implementation_id:
            return implementation
    known = ", ".join(i.id for i in builtin_implementations())
    raise KeyError(f"no implementation {implementation_id!r}; the built-in ones are: {known}")
