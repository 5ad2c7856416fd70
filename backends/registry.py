"""Every row this project ships, by stable id, each where it must run (contract.loading.placed).

Row modules import their framework only when a row first needs it, so listing the rows never fails: a framework
that is not installed makes its rows unavailable (skipped with that reason), not the suite unimportable.
"""

from __future__ import annotations

import importlib

from contract.loading import placed
from contract.row import Row

#: The row modules, each defining ROWS; the order is the matrix's row order.
ROW_MODULES = (
    "backends.rows.torch",
    "backends.rows.torch_quantized",
    "backends.rows.torch_compiled",
    "backends.rows.tensorflow",
    "backends.rows.tf1",
    "backends.rows.keras",
    "backends.rows.jax",
    "backends.rows.onnx",
    "backends.rows.onnxruntime_quantized",
    "backends.rows.torch_onnx",
    "backends.rows.tf2onnx",
    "backends.rows.openvino",
    "backends.rows.litert",
    "backends.rows.litert_keras",
)


def builtin_rows() -> list[Row]:
    rows = []
    for name in ROW_MODULES:
        for row in importlib.import_module(name).ROWS:
            row.origin = row.origin or name
            rows.append(placed(row))
    ids = [row.id for row in rows]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise RuntimeError(f"row ids must be unique; repeated: {repeated}")
    return rows


def row_by_id(row_id: str) -> Row:
    rows = builtin_rows()
    for row in rows:
        if row.id == row_id:
            return row
    raise KeyError(f"no row {row_id!r}; the built-in ones are: {', '.join(row.id for row in rows)}")
