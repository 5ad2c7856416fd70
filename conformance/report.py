"""The conformance matrix: implementation x dtype x device, outputs and gradients, as a terminal table, JSON and Markdown.

Each test records one :class:`Result`; a cell of the matrix summarises the
results of one implementation, kind (outputs or gradients), dtype and device
over all cases:

    pass            every case within tolerance (with the worst error in eps and the margin)
    FAIL            at least one case out of tolerance (how many)
    known           a documented known non-conformance (strict xfail) behaved as documented
    not supported   the implementation declares it does not do this
    unavailable     it could, but not here (framework missing, no GPU)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

STATUSES = ("pass", "FAIL", "known", "not supported", "unavailable")
KINDS = ("outputs", "gradients")


@dataclass
class Result:
    implementation: str
    kind: str  # outputs | gradients
    dtype: str
    device: str
    case: str
    status: str  # one of STATUSES
    worst_error: float | None = None  # largest |got - spec| over the case's tensors
    worst_ratio: float | None = None  # largest error over its tolerance (<= 1 passes)
    detail: str = ""  # the reason for a skip, the failure's first line
    diagnosis: list[str] = field(default_factory=list)  # known mistakes that reproduce a failing result


@dataclass
class Cell:
    status: str
    cases: int = 0
    failed: int = 0
    worst_error_eps: float | None = None
    margin: float | None = None  # tolerance over the worst error (> 1 passes)
    detail: str = ""

    def text(self) -> str:
        if self.status == "pass":
            if self.worst_error_eps is None:
                return "pass"
            return f"pass ({self.worst_error_eps:.3g} eps, margin {self.margin:.3g}x)"
        if self.status == "FAIL":
            return f"FAIL ({self.failed}/{self.cases} cases)"
        return self.status


@dataclass
class Matrix:
    columns: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, dtype, device)
    rows: dict[str, dict[tuple[str, str, str], Cell]] = field(default_factory=dict)
    environment: dict[str, object] = field(default_factory=dict)


def build_matrix(results: list[Result], environment: dict | None = None) -> Matrix:
    groups: dict[str, dict[tuple[str, str, str], list[Result]]] = {}
    for r in results:
        groups.setdefault(r.implementation, {}).setdefault((r.kind, r.dtype, r.device), []).append(r)
    columns = sorted({key for row in groups.values() for key in row}, key=lambda k: (k[2], k[1], KINDS.index(k[0])))
    matrix = Matrix(columns=columns, environment=dict(environment or {}))
    for impl, row in groups.items():
        matrix.rows[impl] = {key: summarise(cell_results) for key, cell_results in row.items()}
    return matrix


def summarise(results: list[Result]) -> Cell:
    failed = [r for r in results if r.status == "FAIL"]
    measured = [r for r in results if r.status == "pass" and r.worst_error is not None]
    dtype = results[0].dtype
    eps = float(np.finfo(dtype).eps)
    if failed:
        diagnoses = sorted({d for r in failed for d in r.diagnosis})
        detail = "; ".join(diagnoses) if diagnoses else failed[0].detail
        return Cell("FAIL", cases=len(results), failed=len(failed), detail=detail)
    for status in ("known", "not supported", "unavailable"):
        if any(r.status == status for r in results) and not any(r.status == "pass" for r in results):
            return Cell(status, cases=len(results), detail=next(r.detail for r in results if r.status == status))
    if measured:
        worst = max(measured, key=lambda r: r.worst_ratio)
        return Cell(
            "pass",
            cases=len(results),
            worst_error_eps=max(r.worst_error for r in measured) / eps,
            margin=(1.0 / worst.worst_ratio) if worst.worst_ratio > 0 else float("inf"),
        )
    return Cell("pass", cases=len(results))


def _header(column: tuple[str, str, str]) -> str:
    kind, dtype, device = column
    return f"{dtype} {device} {kind}"


def render_text(matrix: Matrix) -> str:
    headers = ["implementation"] + [_header(c) for c in matrix.columns]
    body = [[impl] + [row[c].text() if c in row else "-" for c in matrix.columns] for impl, row in matrix.rows.items()]
    widths = [max(len(line[k]) for line in [headers] + body) for k in range(len(headers))]
    fmt = lambda line: "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(line) for line in body])


def render_markdown(matrix: Matrix) -> str:
    headers = ["implementation"] + [_header(c) for c in matrix.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for impl, row in matrix.rows.items():
        lines.append("| " + " | ".join([f"`{impl}`"] + [row[c].text() if c in row else "-" for c in matrix.columns]) + " |")
    notes = sorted({(impl, cell.status, cell.detail) for impl, row in matrix.rows.items() for cell in row.values() if cell.detail})
    if notes:
        lines += ["", "Reasons:", ""]
        lines += [f"- `{impl}` {status}: {detail}" for impl, status, detail in notes]
    if matrix.environment:
        lines += ["", "Environment:", ""]
        lines += [f"- `{name}`: {value}" for name, value in matrix.environment.items()]
    return "\n".join(lines) + "\n"


def to_json(matrix: Matrix, results: list[Result]) -> str:
    return json.dumps(
        {
            "environment": matrix.environment,
            "matrix": {
                impl: {_header(c): asdict(cell) for c, cell in row.items()} for impl, row in matrix.rows.items()
            },
            "results": [asdict(r) for r in results],
        },
        indent=2,
        default=str,
    )


def write_reports(matrix: Matrix, results: list[Result], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "conformance.json", directory / "conformance.md"]
    paths[0].write_text(to_json(matrix, results))
    paths[1].write_text("# Conformance matrix\n\n" + render_markdown(matrix))
    return paths
