"""dev.py's setup beside tox: a .venv redirect file as tox 4.67 leaves it must not stop the setup.

tox 4.67 writes a PEP 832 redirect *file* named .venv (".tox/spec") after a run unless told not to;
dev.py keeps its environment in the directory .venv. No test here installs anything: the pip call is
replaced, and the environment is made by the real venv module without pip.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import dev

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout in tmp_path as dev.py sees it, with pip replaced by a recorder and venv made without pip."""
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(dev, "STAMP", tmp_path / ".venv" / ".lstmc-setup")
    builder = venv.EnvBuilder
    monkeypatch.setattr(dev.venv, "EnvBuilder", lambda **kw: builder(**{**kw, "with_pip": False}))
    commands: list[list[str]] = []

    def pip(command, **kwargs):
        commands.append([str(c) for c in command])
        return 0

    monkeypatch.setattr(dev, "run", pip)
    return tmp_path, commands


def tox_env(root: Path, name: str = "spec") -> Path:
    """A stand-in for a tox environment (tox checks pyvenv.cfg before pointing a redirect at one)."""
    env = root / ".tox" / name
    env.mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return env


def test_setup_replaces_the_redirect_file_tox_leaves(checkout):
    root, commands = checkout
    env = tox_env(root)
    (root / ".venv").write_text(".tox/spec\n")  # byte for byte what tox 4.67.15 writes after `tox -e spec`

    dev.setup()

    assert (root / ".venv").is_dir() and dev.venv_python().exists()
    # The project with its extras, then tf-keras alone without its dependencies (see dev.py's setup).
    assert len(commands) == 2 and commands[0][0] == str(dev.venv_python())
    assert "install" in commands[0] and "constraints.txt" in commands[0]
    assert commands[1][-2:] == ["--no-deps", "tf-keras"] and "constraints.txt" in commands[1]
    assert dev.STAMP.read_text() == dev.setup_fingerprint()
    assert (env / "pyvenv.cfg").read_text() == "home = /usr/bin\n"  # tox's environment is left as it was


def test_setup_leaves_a_foreign_redirect_and_says_why(checkout):
    root, commands = checkout
    (root / ".venv").write_text("../elsewhere/env\n")

    with pytest.raises(SystemExit, match=r"redirect file pointing at .*elsewhere.*Move"):
        dev.setup()

    assert (root / ".venv").read_text() == "../elsewhere/env\n" and not commands


@pytest.mark.parametrize("make", [lambda p: p.write_text(""), lambda p: p.symlink_to(p.parent / "gone")], ids=["empty file", "dangling link"])
def test_setup_stops_at_anything_else_named_dot_venv(checkout, make):
    root, commands = checkout
    make(root / ".venv")
    with pytest.raises(SystemExit, match=r"\.venv is not a directory; .*Move .* away and run dev.py again"):
        dev.setup()
    assert (root / ".venv").is_symlink() or (root / ".venv").is_file()
    assert not commands


def test_setup_reuses_its_own_environment(checkout):
    root, commands = checkout
    dev.setup()
    dev.setup()  # nothing changed: no second round of pip calls, the directory is kept
    assert len(commands) == 2 and (root / ".venv").is_dir()


@pytest.mark.parametrize(
    ("text", "target"),
    [(".tox/spec\n", ".tox/spec"), ("/abs/env", "/abs/env"), ("../up\nignored\n", "../up"), ("", None), ("\n", None)],
)
def test_redirect_target(tmp_path, text, target):
    redirect = tmp_path / ".venv"
    redirect.write_text(text)
    expected = None if target is None else Path(os.path.normpath(tmp_path / target))
    assert dev.redirect_target(redirect) == expected


def test_tox_ini_keeps_tox_out_of_dot_venv():
    """The collision's source: tox.ini turns tox's PEP 832 redirect off."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert ini.getboolean("tox", "venv_redirect") is False


def test_tox_writes_no_dot_venv_with_this_tox_ini(tmp_path):
    """End to end with the installed tox: this tox.ini's [tox] section and a tiny environment (no install,
    no package; the redirect goes to an environment named dev). The same run without venv_redirect = false
    must write the file, or this tox never writes one and the test says so."""
    pytest.importorskip("tox", reason="tox is not installed")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    core = "\n".join(f"{key} = {value}" for key, value in ini["tox"].items() if key != "envlist")
    project = '[testenv:dev]\npackage = skip\nset_env =\n    VIRTUALENV_NO_SEED = 1\ncommands = python -c "pass"\n'

    # Run under tox itself, the outer tox's TOX_* variables would set this tox's options (TOX_WORK_DIR); with CI
    # set (as CI sets it), tox lists the environment's packages with pip, which this pip-less environment lacks.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOX_") and key != "CI"}

    def tox(core_section: str) -> subprocess.CompletedProcess:
        (tmp_path / "tox.ini").write_text(f"[tox]\n{core_section}\n\n{project}")
        return subprocess.run(
            [sys.executable, "-m", "tox", "-e", "dev", "--workdir", str(tmp_path / ".tox")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )

    done = tox(core)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / ".venv").exists() and not (tmp_path / ".venv").is_symlink()

    control = tox(core.replace("venv_redirect = false", ""))
    assert control.returncode == 0, control.stdout[-3000:] + control.stderr[-3000:]
    if not (tmp_path / ".venv").is_file():
        pytest.skip("this tox writes no .venv redirect file (tox before 4.67?): nothing to keep out")
    assert (tmp_path / ".venv").read_text() == ".tox/dev\n"
