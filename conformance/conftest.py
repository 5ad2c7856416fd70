"""The conformance suite's options, parametrization and report header.

    pytest conformance/                                   every built-in implementation installed here
    pytest conformance/ --backend path/to/impl.py         someone else's (repeatable; module:object works too)
    pytest conformance/ --device cuda --dtype float32     one device, one dtype
    pytest conformance/ -k "torch and peephole"           test ids: implementation-variant-dtype-device-case
"""

from __future__ import annotations

import pytest

from backends.base import DTYPES, Config
from backends.plugin import BackendLoadError, load_backend
from backends.registry import builtin_implementations
from spec.cases import CASES_BY_NAME

#: The cases every implementation runs by default, each in both variants.
DEFAULT_CASES = ("small", "T1", "B1", "H1", "I-ne-H", "forget-bias", "saturating", "medium")
#: Opt-in (--large): longer and wider.
LARGE_CASES = ("long",)


def pytest_addoption(parser):
    group = parser.getgroup("lstm-conformance")
    group.addoption("--backend", action="append", default=[], metavar="TARGET",
                    help="run against this implementation instead of the built-in ones: a .py file, a module, "
                         "or module:object (repeatable); 'builtin' adds the built-in ones")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda", "all"),
                    help="auto (default): cpu, plus cuda when a CUDA GPU is visible; all: cpu and cuda")
    group.addoption("--dtype", default="all", choices=("all", *DTYPES), help="float32, float64 or all (default)")
    group.addoption("--large", action="store_true", help="also run the large cases (T=512)")


def _cuda_visible() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None


def _implementations(config):
    targets = config.getoption("--backend")
    if not targets:
        return builtin_implementations()
    found = []
    for target in targets:
        if target == "builtin":
            found.extend(builtin_implementations())
            continue
        try:
            found.extend(load_backend(target))
        except BackendLoadError as error:
            raise pytest.UsageError(str(error)) from None
    return found


def _devices(config):
    choice = config.getoption("--device")
    if choice == "auto":
        return ("cpu", "cuda") if _cuda_visible() else ("cpu",)
    return ("cpu", "cuda") if choice == "all" else (choice,)


def _dtypes(config):
    choice = config.getoption("--dtype")
    return DTYPES if choice == "all" else (choice,)


def _cases(config):
    names = DEFAULT_CASES + (LARGE_CASES if config.getoption("--large") else ())
    return [CASES_BY_NAME[n + suffix] for n in names for suffix in ("", "-peephole")]


def pytest_configure(config):
    config.addinivalue_line("markers", "peephole: cases of the peephole variant")
    config.addinivalue_line("markers", "gradients: gradient comparisons")
    config.addinivalue_line("markers", "gpu: runs on a CUDA device")
    # Loaded here so that a bad --backend stops the run at once with a usage error (exit 4).
    config._lstmc_implementations = _implementations(config)


def implementations(config):
    return config._lstmc_implementations


def pytest_generate_tests(metafunc):
    if "implementation" not in metafunc.fixturenames:
        return
    config = metafunc.config
    params = []
    for impl in implementations(config):
        for device in _devices(config):
            for dtype in _dtypes(config):
                for case in _cases(config):
                    marks = []
                    if case.peephole:
                        marks.append(pytest.mark.peephole)
                    if device == "cuda":
                        marks.append(pytest.mark.gpu)
                    run = Config(variant=case.variant, dtype=dtype, device=device)
                    params.append(pytest.param(impl, run, case, marks=marks, id=f"{impl.id}-{dtype}-{device}-{case.name}"))
    metafunc.parametrize(("implementation", "run", "case"), params)


def pytest_report_header(config):
    lines = []
    impls = implementations(config)
    lines.append(f"lstm-conformance: devices {', '.join(_devices(config))}; dtypes {', '.join(_dtypes(config))}")
    for impl in impls:
        reason = impl.availability("cpu")
        if reason:
            lines.append(f"  {impl.id}: unavailable: {reason}")
            continue
        env = impl.environment("cpu")
        described = ", ".join(f"{k}={v}" for k, v in env.items())
        lines.append(f"  {impl.id}: {described}")
    return lines
