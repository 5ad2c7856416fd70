"""Running the conformance suite as a user would, in a subprocess, and reading what it reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "numpy_lstm.py"


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    report_dir: Path

    @property
    def report(self) -> dict:
        return json.loads((self.report_dir / "conformance.json").read_text())

    def results(self, implementation: str) -> list[dict]:
        return [r for r in self.report["results"] if r["implementation"] == implementation]

    def judged(self, implementation: str) -> list[dict]:
        """The results of the cases the implementation runs (those it declares it does not leave out)."""
        return [r for r in self.results(implementation) if not r["declared"]]

    def cell(self, implementation: str, column: str) -> dict:
        return self.report["matrix"][implementation][column]

    @property
    def output(self) -> str:
        return self.stdout[-4000:] + self.stderr[-3000:]


def subprocess_environment(**extra: str) -> dict[str, str]:
    """The environment for a pytest run started by a test: this one without what belongs to the outer run
    (an xdist worker's variables would switch pytest-benchmark off in it; the outer run's pass requirement)."""
    environment = {k: v for k, v in os.environ.items() if k != "LSTMC_REQUIRE_PASSES" and not k.startswith("PYTEST_")}
    environment.update(extra)
    return environment


def _default_sigint() -> None:
    """In the suite's process, Ctrl-C as a terminal delivers it: a run started in the background (a shell without job
    control, some CI runners) inherits SIGINT ignored, and the suite's interrupt handling could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_suite(tmp_path: Path, *args: str, env: dict | None = None, timeout: float = 900) -> SuiteRun:
    """``pytest conformance <args>`` in a subprocess, its report written under ``tmp_path``."""
    report_dir = tmp_path / "report"
    environment = subprocess_environment(**(env or {}))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--report-dir", str(report_dir), *args],
        cwd=ROOT, capture_output=True, text=True, env=environment, timeout=timeout, preexec_fn=_default_sigint,
    )
    return SuiteRun(done.returncode, done.stdout, done.stderr, report_dir)


def plugin(tmp_path: Path, name: str, source: str) -> str:
    """Write a plug-in file (dedented) and return its path, for --backend."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def example_with(tmp_path: Path, name: str, row_id: str, replacements: dict[str, str] | None = None, append: str = "") -> str:
    """The README's example plug-in under another id, with its source edited: a misbehaving plug-in whose
    arithmetic is otherwise right."""
    source = EXAMPLE.read_text().replace('ID = "example/numpy"', f'ID = "{row_id}"')
    for old, new in (replacements or {}).items():
        assert old in source, f"the example no longer contains {old!r}"
        source = source.replace(old, new)
    return plugin(tmp_path, name, source + textwrap.dedent(append))
