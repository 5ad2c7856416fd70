"""Who may import whom (tests/layering.py): the project's own tree keeps the rules, and each rule catches what it
is for, shown on a planted tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.layering import violations
from tests.suite import ROOT


def test_the_project_keeps_the_layering():
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in {"spec/__init__.py": "", "contract/__init__.py": "", "backends/__init__.py": "",
                         "conformance/__init__.py": "", "bench/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return tmp_path


@pytest.mark.parametrize("files, fragment", [
    ({"spec/model.py": "from contract import row\n", "contract/row.py": ""},
     "spec.model imports contract.row: contract/ is a folder above it"),
    ({"contract/row.py": "def f():\n    from backends import rows\n", "backends/rows.py": ""},
     "contract.row imports backends.rows: backends/ is a folder above it"),
    ({"backends/port.py": "import conformance.compare\n", "conformance/compare.py": ""},
     "backends.port imports conformance.compare: conformance/ is a folder above it"),
    ({"bench/speed.py": "from conformance.judge import judge\n", "conformance/judge.py": "def judge(): pass\n"},
     "bench.speed imports conformance.judge: conformance/ is a sibling at the top"),
    ({"backends/a.py": "from backends import b\n", "backends/b.py": "def f():\n    from backends import a\n"},
     "a circle of imports: backends.a -> backends.b"),
    ({"conformance/x.py": "from backends.rows import _helper\n", "backends/rows.py": "def _helper(): pass\n"},
     "conformance.x takes private _helper from backends.rows (another folder)"),
    ({"conformance/x.py": "from backends.rows import Row\nRow._cache\n", "backends/rows.py": "class Row: pass\n"},
     "conformance.x reads private ._cache of what it imported from backends.rows"),
    ({"bench/speed.py": "from bench.conftest import ratio\n", "bench/conftest.py": "def ratio(): pass\n"},
     "bench.speed imports bench.conftest, a conftest"),
], ids=["spec-imports-contract", "function-local-upward", "backends-imports-conformance", "siblings", "circle",
        "private-name", "private-attribute", "conftest"])
def test_a_planted_violation_is_found(tmp_path, files, fragment):
    found = violations(_tree(tmp_path, files))
    assert any(fragment in line for line in found), found


def test_allowed_imports_are_not_violations(tmp_path):
    tree = _tree(tmp_path, {
        "spec/model.py": "import numpy\n",
        "contract/row.py": "from spec import model\nfrom spec.model import numpy\n",
        "backends/rows.py": "from contract.row import model\nfrom backends import layouts\n",
        "backends/layouts.py": "from spec.model import numpy\n",
        "conformance/judge.py": "from backends.rows import model\nfrom conformance import report\n",
        "conformance/report.py": "",
    })
    assert violations(tree) == []
