"""Every finding's reproducer (findings/*.py) still reproduces its finding: exit status 0 (findings/README.md).
A reproducer that stops reproducing means the framework changed: update the finding, its xfail, its README line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.suite import ROOT, subprocess_environment

FINDINGS = sorted(path for path in (ROOT / "findings").glob("*.py") if not path.name.startswith("_"))
REPRODUCED, NOT_REPRODUCED, FRAMEWORK_MISSING = 0, 1, 77


def test_every_finding_has_a_documented_reproducer():
    for path in FINDINGS:
        doc = path.read_text().split('"""')
        assert len(doc) >= 3 and "Upstream" in doc[1] and "Expected" in doc[1], f"{path.name}: its docstring must say Expected, Actual, Upstream"


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: p.stem)
def test_the_finding_reproduces(path):
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_environment())
    output = done.stdout[-3000:] + done.stderr[-2000:]
    if done.returncode == FRAMEWORK_MISSING:
        pytest.skip(f"unavailable: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'its framework is not installed'}")
    assert done.returncode == REPRODUCED, f"{path.name} no longer reproduces its finding (exit {done.returncode}):\n{output}"
