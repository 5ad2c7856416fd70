#!/usr/bin/env python3
"""Set up the project's environment and run its jobs. Needs only Python 3.10+ and pip.

    python3 dev.py               the main job: set everything up, then run the conformance suite across all backends
    python3 dev.py test          set everything up, then run the project's tests
    python3 dev.py bench [args]  set everything up, then run the benchmarks (pytest-benchmark args pass through)
    python3 dev.py setup         only set up

Setting up makes ``.venv`` in the checkout and installs the project with every
backend and the test and benchmark tools, at the versions in constraints.txt.
It is skipped when pyproject.toml and constraints.txt have not changed since
the last setup. Extra pip arguments (an index for CPU-only torch, say) go in
the environment variable LSTMC_PIP_ARGS.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".lstmc-setup"
EXTRAS = "all,test,bench"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    digest.update(EXTRAS.encode() + os.environ.get("LSTMC_PIP_ARGS", "").encode())
    return digest.hexdigest()


def run(command: list[str], **kwargs) -> int:
    print("+", " ".join(shlex.quote(str(c)) for c in command), flush=True)
    return subprocess.call([str(c) for c in command], cwd=ROOT, **kwargs)


def setup() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"lstm-conformance needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    fingerprint = setup_fingerprint()
    if venv_python().exists() and STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check"]
    pip += shlex.split(os.environ.get("LSTMC_PIP_ARGS", ""))
    code = run([*pip, "-c", "constraints.txt", "-e", f".[{EXTRAS}]"])
    if code:
        sys.exit(f"setup failed: pip exited with {code} (see above)")
    STAMP.write_text(fingerprint)


def pytest(arguments: list[str]) -> int:
    # Fail a run in which no test passed (pytest itself exits 0 when everything was skipped).
    env = {**os.environ, "LSTMC_REQUIRE_PASSES": "1"}
    return run([venv_python(), "-m", "pytest", *arguments], env=env)


def main(argv: list[str]) -> int:
    job, rest = (argv[0], argv[1:]) if argv else ("conformance", [])
    if job in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if job not in ("conformance", "test", "bench", "setup"):
        print(f"unknown job {job!r}; the jobs are conformance (the default), test, bench, setup", file=sys.stderr)
        return 2
    setup()
    if job == "setup":
        return 0
    if job == "test":
        return pytest(["tests", "conformance", *rest])
    if job == "bench":
        return pytest(["bench", "--benchmark-columns=min,median,max,rounds", *rest])
    # The main job: every installed backend against the spec.
    return pytest(["conformance", "-q", "-rs", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
