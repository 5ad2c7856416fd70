"""Who may import whom: the benchmark does not need the conformance suite, and no library module imports a
conftest (each checked in a fresh interpreter, where nothing else has imported them first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.suite import ROOT, subprocess_environment


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("bench.test_matrix", "conformance"),  # known non-conformances come from the implementations
        ("bench.correctness", "conformance"),
        ("conformance.golden", "conformance.conftest"),  # case sets come from spec.cases
        ("conformance.runner", "conformance.conftest"),
        ("backends.registry", "conformance"),
    ],
)
def test_module_does_not_import(module, forbidden):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == {forbidden!r} or m.startswith({forbidden!r} + '.')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=subprocess_environment())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"
