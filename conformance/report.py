"""The conformance matrix: implementation x dtype x device, outputs and gradients, as terminal tables, JSON and Markdown.

Each test records one :class:`Result` (data, built by conformance/judge.py;
nothing here is read back out of messages). A cell of the matrix summarises the
results of one implementation, kind (outputs or gradients), dtype and device
over the cases the run asked for, and says how many it covers:

    pass 18/18      every case within tolerance (with the worst error in eps and the margin)
    FAIL 3/18       cases out of tolerance, crashed, timed out or answering outside the contract
    partial 14/18   no failure, but not every case passed (some not supported at run time, unavailable)
    known 18/18     a documented known non-conformance (strict xfail) behaved as documented in every case
    known 1 + pass 10/11   in one case; the other ten passed (with their worst error)
    incomplete 2/18 (16 not run)   no failure so far, but the run ended before these cases were judged
    not supported   the implementation declares that it does not do any of these cases
    unavailable     it could, but not here (framework missing or broken, no GPU)

A run that ends early (Ctrl-C, -x, workers lost) still writes its report: every
test it had selected and did not judge is a "not run" result, the cells count
them, and the report says at its top that the run is incomplete and how much
was not run (:class:`RunState`).

The denominator is the number of cases the run asked for minus those the
implementation declares it does not support (a standard-only LSTM's peephole
cases), so "FAIL 9/9" reads as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contract.vocabulary import Dtype, Kind, Word


class Status(Word):
    """A test's verdict."""

    PASS = "pass"
    FAIL = "FAIL"
    KNOWN = "known"
    NOT_SUPPORTED = "not supported"
    UNAVAILABLE = "unavailable"
    NOT_RUN = "not run"


class CellStatus(Word):
    """A matrix cell's summary of its tests' verdicts (the module docstring)."""

    PASS = "pass"
    FAIL = "FAIL"
    PARTIAL = "partial"
    KNOWN = "known"
    INCOMPLETE = "incomplete"
    NOT_SUPPORTED = "not supported"
    UNAVAILABLE = "unavailable"


@dataclass
class Result:
    """One test's verdict, as data (plain strings: it travels from pytest-xdist workers to the controller)."""

    implementation: str
    kind: str  # a Kind
    dtype: str
    device: str
    case: str
    status: str  # a Status
    worst_error: float | None = None  # largest |got - spec| over the case's tensors
    worst_ratio: float | None = None  # largest error over its tolerance (<= 1 passes)
    detail: str = ""  # the reason for a skip, the failure's first line
    diagnosis: list[str] = field(default_factory=list)  # known mistakes that reproduce a failing result
    declared: bool = False  # "not supported" because the implementation declares it (not raised at run time)
    policy: str | None = None  # the precision policy a half-type answer was judged by (spec.precision.Policy)
    # A quantized row (spec/quantized.py): its dequantization step (the unit of its verdict), how many steps the
    # integer reference took the implementation's own activations at, and its distance from the float spec.
    step: float | None = None
    forced_steps: int = 0
    quantization_error: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cell:
    status: str  # a CellStatus
    asked: int = 0  # cases the run asked for
    covered: int = 0  # of them, passed (for "known": passed or behaved as documented)
    known: int = 0  # of them, behaved as documented (a known non-conformance)
    denominator: int = 0  # asked minus those declared not supported
    failed: int = 0
    not_run: int = 0  # of them, never judged: the run ended before (RunState)
    worst_error_eps: float | None = None
    margin: float | None = None  # tolerance over the worst error (> 1 passes)
    detail: str = ""
    policy: str = ""  # in a half type: the precision policy its answers were judged by
    worst_steps: float | None = None  # a quantized row's worst error in dequantization steps (instead of eps)

    def text(self, short: bool = False) -> str:
        """The cell as a matrix shows it; ``short``: the margin without its word (the terminal's tables)."""
        if self.status in (CellStatus.NOT_SUPPORTED, CellStatus.UNAVAILABLE):
            return self.status
        if self.status == CellStatus.FAIL:
            return f"FAIL {self.failed}/{self.denominator}" + (f" ({self.not_run} not run)" if self.not_run else "")
        if self.status == CellStatus.INCOMPLETE:
            return f"incomplete {self.covered}/{self.denominator} ({self.not_run} not run)"
        text = f"{self.status} {self.covered}/{self.denominator}"
        if self.status == CellStatus.KNOWN and self.known < self.covered:  # "known 11/11" would read as 11 known failures
            text = f"known {self.known} + pass {self.covered - self.known}/{self.denominator}"
        if self.status in (CellStatus.PASS, CellStatus.PARTIAL, CellStatus.KNOWN) and self.worst_steps is not None:
            text += f" ({self.worst_steps:.3g} steps, {'' if short else 'margin '}{self.margin:.3g}x)"
        elif self.status in (CellStatus.PASS, CellStatus.PARTIAL, CellStatus.KNOWN) and self.worst_error_eps is not None:
            text += f" ({self.worst_error_eps:.3g} eps, {'' if short else 'margin '}{self.margin:.3g}x)"
        return text


@dataclass
class RunState:
    """Whether the run judged every test it selected: ``expected`` selected, ``judged`` with a verdict (skips
    included), ``ended`` how it ended when it did not finish (interrupted, stopped early)."""

    expected: int
    judged: int
    ended: str = ""

    @property
    def complete(self) -> bool:
        return self.judged >= self.expected and not self.ended

    @property
    def not_run(self) -> int:
        return max(0, self.expected - self.judged)

    def line(self) -> str:
        """The report's first line when the run is incomplete."""
        how = f" ({self.ended})" if self.ended else ""
        return (f"INCOMPLETE RUN{how}: {self.not_run} of {self.expected} selected tests were not run; "
                "their cells say 'not run', and nothing here is a verdict on them")

    def as_dict(self) -> dict:
        return {"complete": self.complete, "expected": self.expected, "judged": self.judged, "not_run": self.not_run,
                "ended": self.ended}


@dataclass
class Matrix:
    columns: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, dtype, device)
    rows: dict[str, dict[tuple[str, str, str], Cell]] = field(default_factory=dict)
    environment: dict[str, object] = field(default_factory=dict)
    run: RunState | None = None  # None: not known (a matrix built from results alone)


def build_matrix(results: list[Result], environment: dict | None = None, run: RunState | None = None) -> Matrix:
    """Rows in the order their implementations first appear in ``results``; columns by device, dtype, kind."""
    groups: dict[str, dict[tuple[str, str, str], list[Result]]] = {}
    for r in results:
        groups.setdefault(r.implementation, {}).setdefault((r.kind, r.dtype, r.device), []).append(r)
    kinds = [str(k) for k in Kind]
    columns = sorted({key for row in groups.values() for key in row}, key=lambda k: (k[2], k[1], kinds.index(k[0])))
    matrix = Matrix(columns=columns, environment=dict(environment or {}), run=run)
    for impl, row in groups.items():
        matrix.rows[impl] = {key: summarise(cell_results) for key, cell_results in row.items()}
    return matrix


def _count(results: list[Result], status: str, declared: bool | None = None) -> list[Result]:
    return [r for r in results if r.status == status and (declared is None or r.declared == declared)]


def summarise(results: list[Result]) -> Cell:
    asked = len(results)
    declared = _count(results, Status.NOT_SUPPORTED, declared=True)
    denominator = asked - len(declared)
    failed = _count(results, Status.FAIL)
    passed = _count(results, Status.PASS)
    known = _count(results, Status.KNOWN)
    unavailable = _count(results, Status.UNAVAILABLE)
    not_run = _count(results, Status.NOT_RUN)
    cell = Cell(CellStatus.PARTIAL.value, asked=asked, covered=len(passed), denominator=denominator, failed=len(failed),
                known=len(known), not_run=len(not_run))
    cell.policy = ", ".join(sorted({r.policy for r in results if r.policy}))
    measured = [r for r in passed if r.worst_error is not None]
    if measured:
        eps = Dtype(results[0].dtype).eps
        worst = max(measured, key=lambda r: r.worst_ratio)
        cell.worst_error_eps = max(r.worst_error for r in measured) / eps
        stepped = [r for r in measured if r.step]
        if stepped:  # a quantized row: its errors in its own dequantization steps
            cell.worst_steps = max(r.worst_error / r.step for r in stepped)
        cell.margin = (1.0 / worst.worst_ratio) if worst.worst_ratio > 0 else float("inf")
    if failed:
        diagnoses = sorted({d for r in failed for d in r.diagnosis})
        cell.status, cell.detail = CellStatus.FAIL.value, "; ".join(diagnoses) if diagnoses else failed[0].detail
    elif not_run:
        cell.status, cell.detail = CellStatus.INCOMPLETE.value, not_run[0].detail
    elif denominator == 0:
        cell.status, cell.detail = CellStatus.NOT_SUPPORTED.value, declared[0].detail
    elif len(unavailable) == denominator:
        cell.status, cell.detail = CellStatus.UNAVAILABLE.value, unavailable[0].detail
    elif len(passed) == denominator:
        cell.status = CellStatus.PASS.value
    elif known and len(passed) + len(known) == denominator:
        cell.status, cell.covered, cell.detail = CellStatus.KNOWN.value, len(passed) + len(known), known[0].detail
    else:
        missing = [r for r in results if r.status not in (Status.PASS, Status.KNOWN) and not r.declared]
        reasons = {}
        for r in missing:
            reasons.setdefault(f"{r.status}: {r.detail}", []).append(r.case)
        cell.detail = "; ".join(f"{len(cases)} {reason} ({', '.join(cases)})" for reason, cases in reasons.items())
    return cell


def _header(column: tuple[str, str, str]) -> str:
    kind, dtype, device = column
    return f"{dtype} {device} {kind}"


def _incomplete(matrix: Matrix) -> list[str]:
    return [matrix.run.line()] if matrix.run is not None and not matrix.run.complete else []


def row_status(row: dict[tuple[str, str, str], Cell]) -> CellStatus:
    """A row's verdict over its cells: FAIL if any cell fails, then the first of incomplete, known, partial that any
    cell is; unavailable or not supported if every cell is (unavailable first); else pass."""
    statuses = {CellStatus(cell.status) for cell in row.values()}
    for status in (CellStatus.FAIL, CellStatus.INCOMPLETE, CellStatus.KNOWN, CellStatus.PARTIAL):
        if status in statuses:
            return status
    if statuses <= {CellStatus.UNAVAILABLE, CellStatus.NOT_SUPPORTED}:
        return CellStatus.UNAVAILABLE if CellStatus.UNAVAILABLE in statuses else CellStatus.NOT_SUPPORTED
    return CellStatus.PASS


def summary_line(matrix: Matrix) -> str:
    """How many rows pass, fail, are known, ..., in a line: the run's last word."""
    counts: dict[CellStatus, int] = {}
    for row in matrix.rows.values():
        status = row_status(row)
        counts[status] = counts.get(status, 0) + 1
    parts = [f"{counts[status]} {status}" for status in CellStatus if counts.get(status)]
    return f"{len(matrix.rows)} rows: " + ", ".join(parts)


def _policies(row: dict, columns: list[tuple[str, str, str]]) -> str:
    return ", ".join(sorted({row[c].policy for c in columns if c in row and row[c].policy})) or "-"


def _table(matrix: Matrix, columns: list[tuple[str, str, str]], title: str) -> list[str]:
    half = any(row[c].policy for row in matrix.rows.values() for c in columns if c in row)
    headers = [title] + [kind for kind, _, _ in columns] + ["judged by the policy"] * half
    body = [[impl] + [row[c].text(short=True) if c in row else "-" for c in columns] + [_policies(row, columns)] * half
            for impl, row in matrix.rows.items()]
    widths = [max(len(line[k]) for line in [headers] + body) for k in range(len(headers))]
    fmt = lambda line: "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()  # noqa: E731
    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(line) for line in body]


def render_text(matrix: Matrix, width: int = 120) -> str:
    """One table per device and dtype (outputs and gradients side by side), or per column where that is wider than
    ``width``; an incomplete run says so first."""
    blocks = {}
    for column in matrix.columns:
        blocks.setdefault(column[1:], []).append(column)
    lines = _incomplete(matrix)
    for (dtype, device), columns in blocks.items():
        table = _table(matrix, columns, f"{dtype} {device}")
        if max(map(len, table)) > width:
            table = [line for column in columns for line in [""] + _table(matrix, [column], f"{dtype} {device}")][1:]
        lines += [""] * bool(lines) + table
    return "\n".join(lines)


def render_markdown(matrix: Matrix) -> str:
    headers = ["implementation"] + [_header(c) for c in matrix.columns]
    lines = [f"**{line}**" for line in _incomplete(matrix)] + [""] * bool(_incomplete(matrix))
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for impl, row in matrix.rows.items():
        lines.append("| " + " | ".join([f"`{impl}`"] + [row[c].text() if c in row else "-" for c in matrix.columns]) + " |")
    policies = sorted({(impl, column[1], cell.policy) for impl, row in matrix.rows.items() for column, cell in row.items()
                       if cell.policy})
    if policies:
        lines += ["", "Precision policies (a half type's answers judged by the bounds of the policy its row declares):", ""]
        lines += [f"- `{impl}` {dtype}: `{policy}`" for impl, dtype, policy in policies]
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
            "run": None if matrix.run is None else matrix.run.as_dict(),
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
    paths[1].write_text("# Conformance matrix\n\n" + summary_line(matrix) + "\n\n" + render_markdown(matrix))
    return paths
