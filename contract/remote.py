"""Rows that need a process of their own: :class:`Remote` wraps a row, and its calls run in a child process.

Some settings are fixed per process: Keras picks its backend at its first import (``KERAS_BACKEND``), TF1's
cells need ``TF_USE_LEGACY_KERAS`` before TensorFlow is imported. A row that needs such a setting says so in
``Row.process_environment``; where this process's environment differs, the loader
(:mod:`contract.loading`) wraps it in a :class:`Remote`, whose call-level hooks send each call to a child
Python process started with those variables. The child loads the row again from its ``origin`` (a module,
``module:object`` or a .py path) and runs it through its own entry points, checks included; the contract's
checks run here too, around the call.

The child stays up for the session, one per (origin, environment). Messages are frames on its stdin and
stdout: a JSON header and a safetensors blob of the arrays, nothing pickled; tensors travel under names
that say where they go (``params.3.W``: cell 3's W), never parsed back out of prose. The child's own stdout
is moved to its stderr, which goes to a log file: when the child dies during a call, the call raises
:class:`contract.errors.Crashed` with the signal and the end of that log. A call interrupted in this process
(a time limit, Ctrl-C) kills the child, whose state is then unknown; the next call starts a fresh one.

The child runs :mod:`contract.serve` (``python -m contract.serve ORIGIN``, started here, not by hand).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.answers import Gradients, Outputs
from contract.errors import Crashed, NotSupported, ResultError, Unavailable
from contract.row import Row
from contract.tensor_files import load as load_arrays
from contract.tensor_files import save as save_arrays
from spec.params import LayerParams, LSTMParams

ROOT = Path(__file__).resolve().parents[1]
_CHILDREN: dict[tuple, Child] = {}
_ERRORS = {"NotSupported": NotSupported, "Unavailable": Unavailable}


# ---------------------------------------------------------------------------
# Frames: (header, arrays) as 8-byte length + JSON, 8-byte length + safetensors
# ---------------------------------------------------------------------------


def write_frame(stream, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    body = json.dumps(header, default=str).encode()
    blob = save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()}) if arrays else b""
    stream.write(struct.pack("<Q", len(body)) + body + struct.pack("<Q", len(blob)) + blob)
    stream.flush()


def read_frame(stream) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The next frame, or None at the end of the stream."""
    size = _read_exactly(stream, 8)
    if size is None:
        return None
    header = json.loads(_read_exactly(stream, struct.unpack("<Q", size)[0]) or b"")
    blob_size = struct.unpack("<Q", _read_exactly(stream, 8) or b"\0" * 8)[0]
    blob = _read_exactly(stream, blob_size) if blob_size else b""
    if blob is None:
        return None
    return header, (load_arrays(blob) if blob else {})


def _read_exactly(stream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None  # the other end is gone (mid-frame or between frames)
        data += chunk
    return data


# ---------------------------------------------------------------------------
# Parameters and gradients as named arrays, and back, by their structure
# ---------------------------------------------------------------------------


def params_arrays(params: LayerParams, prefix: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays named '<prefix>.<cell>.<tensor>', the structure that puts them back)."""
    arrays = {f"{prefix}.{k}.{name}": t for k, cell in enumerate(params.cells) for name, t in cell.tensors().items()}
    structure = {"directions": params.num_directions, "cells": [list(cell.tensors()) for cell in params.cells]}
    return arrays, structure


def params_from_arrays(arrays: dict[str, np.ndarray], prefix: str, structure: dict) -> LayerParams:
    cells = tuple(LSTMParams(**{name: arrays[f"{prefix}.{k}.{name}"] for name in names})
                  for k, names in enumerate(structure["cells"]))
    return LayerParams(cells, structure["directions"])


def gradients_arrays(gradients: Gradients) -> dict[str, np.ndarray]:
    arrays, _ = params_arrays(gradients.params, "grad")
    return {"grad.x": gradients.x, "grad.h0": gradients.h0, "grad.c0": gradients.c0, **arrays}


def gradients_from_arrays(arrays: dict[str, np.ndarray], params: LayerParams) -> Gradients:
    """The gradients a child sent, in the structure of the parameters this process sent it."""
    _, structure = params_arrays(params, "grad")
    return Gradients(arrays["grad.x"], arrays["grad.h0"], arrays["grad.c0"], params_from_arrays(arrays, "grad", structure))


# ---------------------------------------------------------------------------
# This side: the child processes and the calls
# ---------------------------------------------------------------------------


class Child:
    """A child Python process with ``environment`` that serves the rows of ``origin``."""

    def __init__(self, origin: str, environment: dict[str, str]):
        self.environment = environment
        env = {**os.environ, **environment}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        self.log = tempfile.NamedTemporaryFile(prefix="lstmc-process-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "contract.serve", origin],
            env=env, cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )

    def call(self, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            write_frame(self.process.stdin, header, arrays)
            reply = read_frame(self.process.stdout)
        except BrokenPipeError:
            reply = None
        except BaseException:
            self.stop()  # interrupted mid-call (a time limit, Ctrl-C): its state is unknown
            raise
        if reply is None:
            raise Crashed(self._death())
        return reply

    def _death(self) -> str:
        code = self.process.wait(timeout=30)
        self.log.flush()
        tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-12:]
        fatal = next((line for line in tail if line.startswith("Fatal Python error")), "")
        where = next((line.strip() for line in tail if line.strip().startswith("File ")), "")
        how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"
        environment = " ".join(f"{k}={v}" for k, v in self.environment.items())
        detail = "; ".join(filter(None, [fatal, where and f"innermost frame: {where}"]))
        return f"crashed: {how} in its own process ({environment})" + (f": {detail}" if detail else "")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


@atexit.register
def _stop_children() -> None:
    for child in _CHILDREN.values():
        child.stop()


@dataclass(eq=False)
class Remote(Row):
    """``row`` run in a child process with its ``process_environment``: the same declarations, every call sent there."""

    row: Row | None = None

    @classmethod
    def around(cls, row: Row) -> Remote:
        if not row.origin:
            raise ValueError(f"{row.id} needs its own process ({dict(row.process_environment)}) but has no origin to be "
                             "loaded from there (set Row.origin to its module, module:object or .py path)")
        declared = {f.name: getattr(row, f.name) for f in dataclasses.fields(Row)}
        return cls(**declared, row=row)

    def _child(self) -> Child:
        key = (self.origin, tuple(sorted(self.process_environment.items())))
        child = _CHILDREN.get(key)
        if child is None or not child.alive():
            child = _CHILDREN[key] = Child(self.origin, dict(self.process_environment))
        return child

    def _ask(self, header: dict, arrays: dict[str, np.ndarray] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        reply, values = self._child().call({"id": self.id, **header}, arrays or {})
        if "error" in reply:
            if reply["error"] == "ResultError":
                raise ResultError(*reply["fields"])
            if reply["error"] in _ERRORS:
                raise _ERRORS[reply["error"]](reply["message"])
            raise RuntimeError(f"{reply['type']}: {reply['message']} (in its own process)\n{reply['traceback']}")
        return reply, values

    def _availability(self, device):
        return self._ask({"call": "availability", "device": str(device)})[0]["value"]

    def _environment(self, device):
        return self._ask({"call": "environment", "device": str(device)})[0]["value"]

    def _request(self, call: str, params, x, h0, c0, layer, lengths, mask, device, cotangents=None):
        arrays, structure = params_arrays(params, "params")
        arrays.update(x=x, h0=h0, c0=c0)
        arrays.update({name: a for name, a in (("lengths", lengths), ("mask", mask)) if a is not None})
        if cotangents is not None:
            arrays.update({f"cot.{name}": a for name, a in cotangents.tensors().items()})
        header = {"call": call, "device": str(device), "layer": dataclasses.asdict(layer), "structure": structure}
        return self._ask(header, arrays)[1]

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        values = self._request("forward", params, x, h0, c0, layer, lengths, mask, device)
        return Outputs(values["y"], values["h_T"], values["c_T"])

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device):
        values = self._request("backward", params, x, h0, c0, layer, lengths, mask, device, cotangents)
        return gradients_from_arrays(values, params)
