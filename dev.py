#!/usr/bin/env python3
"""Set up the project's environment and run its jobs. Needs only Python 3.10+ and pip.

    python3 dev.py               the main job: set everything up, then run the conformance suite across all backends
    python3 dev.py test          set everything up, then run the project's tests
    python3 dev.py bench [args]  set everything up, then run the benchmarks (pytest-benchmark args pass through)
    python3 dev.py train [args]  set everything up, then train the tutorials' digit classifier in every framework
                                 and report (python -m training.digits; --quick for a few dozen steps, --help)
    python3 dev.py setup         only set up

Setting up makes ``.venv`` in the checkout and installs the project with every
backend and the test and benchmark tools, at the versions in constraints.txt.
It is skipped when pyproject.toml and constraints.txt have not changed since
the last setup. Extra pip arguments (an index for CPU-only torch, say) go in
the environment variable LSTMC_PIP_ARGS. A ``.venv`` redirect file that tox
left (see claim_venv) is replaced by the environment.

Benchmark targets (adapter overheads, speed ratios) are reported, MISSED ones
included, without failing the run; ``python3 dev.py bench --bench-fail-on-target``
fails it when one is missed.
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
# The environment is the directory .venv in the checkout, where editors (and PEP 832) look first.
VENV = ROOT / ".venv"
STAMP = VENV / ".lstmc-setup"
EXTRAS = "all,test,bench,train"


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


def redirect_target(redirect: Path) -> Path | None:
    """Where a PEP 832 ``.venv`` redirect file points (its first line, relative to its folder); None if unreadable or empty."""
    try:
        line = redirect.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return Path(os.path.normpath(redirect.parent / line)) if line else None


def claim_venv(venv_dir: Path | None = None) -> None:
    """Make sure ``venv_dir`` (default ``.venv``) can be this project's environment directory.

    tox 4.67 (provisionally, for PEP 832's environment discovery) writes a *file* ``.venv`` after a run,
    a redirect pointing editors at one of its environments (``.tox/spec``: the first that installs the
    project in editable mode), unless something is already there. venv then cannot make its directory
    ("Unable to create directory .venv"). tox.ini turns that off (``venv_redirect = false``); a redirect
    a tox run left before that (or with another tox.ini) points into this checkout's ``.tox`` and is
    only a pointer, so it is replaced here (tox's environment itself is left alone; tox does the same
    with a redirect of its own where an environment should go). A redirect anywhere else, or any other
    non-directory, belongs to the user or another tool: stop and say so rather than discard it.
    """
    venv_dir = VENV if venv_dir is None else venv_dir
    if venv_dir.is_dir() or not (venv_dir.exists() or venv_dir.is_symlink()):
        return
    target = redirect_target(venv_dir) if venv_dir.is_file() else None
    tox_work_dir = Path(os.path.normpath(venv_dir.parent / ".tox"))
    if target is not None and target.is_relative_to(tox_work_dir):
        print(f"replacing {venv_dir}, a redirect file tox left pointing at {target}, with this project's environment", flush=True)
        venv_dir.unlink()
        return
    if target is not None:
        what, untouched = f"a redirect file pointing at {target}", " (the environment it points at is not touched)"
    else:
        what, untouched = "not a directory", ""
    sys.exit(
        f"{venv_dir} is {what}; dev.py keeps its environment in the directory {venv_dir}. "
        f"Move {venv_dir} away{untouched} and run dev.py again."
    )


def setup() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"lstm-conformance needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    claim_venv()
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
    # tf-keras (TF1's nn.rnn_cell cells, the backends.tf1_lstm rows) declares a dependency on the distribution
    # `tensorflow`, which would install beside tensorflow-cpu and overwrite the same import package. pip has no way
    # to say that tensorflow-cpu provides it (no "provides", no dependency override; a constraint can only pin or
    # fail), so tf-keras cannot be in an extra: it is installed here, alone and without its dependencies, at the
    # version constraints.txt pins (TensorFlow's own; a change there reruns this setup). `pip check` then reports
    # "tf-keras requires tensorflow, which is not installed": expected. tox.ini does the same (commands_pre).
    code = run([*pip, "-c", "constraints.txt", "--no-deps", "tf-keras"])
    if code:
        sys.exit(f"setup failed: pip exited with {code} installing tf-keras without its dependencies (see above)")
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
    if job not in ("conformance", "test", "bench", "train", "setup"):
        print(f"unknown job {job!r}; the jobs are conformance (the default), test, bench, train, setup", file=sys.stderr)
        return 2
    setup()
    if job == "setup":
        return 0
    # -n auto: one pytest-xdist worker per core (a later -n in the arguments wins).
    if job == "test":
        return pytest(["tests", "conformance", "-n", "auto", *rest])
    if job == "bench":
        return pytest(["bench", "--benchmark-columns=min,median,max,rounds", *rest])
    if job == "train":
        # Exits 1 when a framework leaves the rounding bound (training/report.py).
        return run([venv_python(), "-m", "training.digits", *rest])
    # The main job: every installed backend against the spec.
    return pytest(["conformance", "-q", "-n", "auto", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
