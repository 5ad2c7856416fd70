"""Rows that need a process of their own: one child process per environment, the hooks run there.

Some settings are fixed per process: Keras picks its backend at its first
import (``KERAS_BACKEND``), JAX's float64 switch is process-wide. A row that
needs such a setting says so in ``Implementation.process_environment``; when
this process's environment differs, :class:`backends.base.Implementation`
sends the row's hook calls here, and they run in a child Python process started
with those variables, which loads the row again from its ``origin`` (a module,
``module:object`` or a .py path) and runs the same hook. The contract's checks
still run in this process, around the call, and again in the child before the
answer is sent (so a bad answer is described where it was made).

The child stays up for the session, one per (origin, environment). Messages
are frames on its stdin and stdout: a JSON header and a safetensors blob of
the arrays, nothing pickled. The child's own stdout is moved to its stderr,
which goes to a log file: when the child dies during a call, the call raises
:class:`backends.base.Crashed` with the signal and the end of that log (the
fatal error faulthandler wrote there). A call interrupted in this process (a
time limit, Ctrl-C) kills the child, whose state is then unknown; the next
call starts a fresh one.

    python -m backends.process ORIGIN    (started by this module, not by hand)
"""

from __future__ import annotations

import atexit
import dataclasses
import faulthandler
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
import weakref
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from backends.base import (
    Config,
    Crashed,
    LayerOutputs,
    NotSupported,
    Outputs,
    ResultError,
    Unavailable,
    checked_gradients,
    checked_layer_gradients,
    checked_layer_outputs,
    checked_outputs,
)
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import LSTMInputError

ROOT = Path(__file__).resolve().parents[1]
_CHILDREN: dict[tuple, "Child"] = {}
# A parameter set keeps one identity across calls, in the child as here: rows cache converted weights, models and
# sessions per params object (NativeCache), and a child that rebuilt them on every call had the benchmarks time
# tf2onnx's conversion (seconds) as if it were the model's forward pass. The parent names each params object
# (weakly, as NativeCache keys it); the child keeps the last few it was sent under their names and reuses one
# only while its tensors still equal what arrives (a row that changed them in place gets a fresh copy).
_PARAMS_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PARAMS_COUNTER = itertools.count()
_PARAMS_SEEN: dict[str, object] = {}
_PARAMS_KEPT = 8
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
            [sys.executable, "-m", "backends.process", origin],
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
        if code < 0:
            how = f"signal {-code} ({signal.Signals(-code).name})"
        else:
            how = f"exit status {code}"
        environment = " ".join(f"{k}={v}" for k, v in self.environment.items())
        detail = "; ".join(filter(None, [fatal, where and f"innermost frame: {where}"]))
        return f"crashed: {how} in its own process ({environment})" + (f": {detail}" if detail else "")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


def _child(implementation) -> Child:
    key = (implementation.origin, tuple(sorted(implementation.process_environment.items())))
    child = _CHILDREN.get(key)
    if child is None or not child.alive():
        if not implementation.origin:
            raise RuntimeError(
                f"{implementation.id} needs its own process ({dict(implementation.process_environment)}) but has no origin "
                "to be loaded from there (set Implementation.origin to its module, module:object or .py path)"
            )
        child = _CHILDREN[key] = Child(implementation.origin, dict(implementation.process_environment))
    return child


@atexit.register
def _stop_children() -> None:
    for child in _CHILDREN.values():
        child.stop()


def call(implementation, kind: str, **arguments):
    """Run ``implementation``'s hook ``kind`` (availability, environment, forward, backward) in its child."""
    header, arrays = _encode(implementation.id, kind, arguments)
    reply, values = _child(implementation).call(header, arrays)
    if "error" in reply:
        if reply["error"] == "ResultError":
            raise ResultError(*reply["fields"])
        if reply["error"] in _ERRORS:
            raise _ERRORS[reply["error"]](reply["message"])
        raise RuntimeError(f"{reply['type']}: {reply['message']} (in its own process)\n{reply['traceback']}")
    if kind == "forward":
        return Outputs(values["h_seq"], values["h_T"], values["c_T"])
    if kind == "forward_layer":
        return LayerOutputs(values["y"], values["h_T"], values["c_T"])
    if kind in ("backward", "backward_layer"):
        return values
    return reply["value"]


def _encode(row_id: str, kind: str, arguments: dict) -> tuple[dict, dict[str, np.ndarray]]:
    header: dict[str, object] = {"id": row_id, "kind": kind}
    arrays: dict[str, np.ndarray] = {}
    for name, value in arguments.items():
        if isinstance(value, (LSTMParams, LayerParams)):
            arrays.update({f"params.{k}": v for k, v in value.tensors().items()})
            header["params_name"] = _PARAMS_NAMES.setdefault(value, f"{os.getpid()}.{next(_PARAMS_COUNTER)}")
            if isinstance(value, LayerParams):
                header["cells"] = [len(value.cells), value.num_directions]
        elif isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, Config):
            header["config"] = [value.variant, value.dtype, value.device]
        elif isinstance(value, LayerConfig):
            header["layer"] = dataclasses.asdict(value)
        elif value is None:
            continue
        elif name == "cotangents":
            arrays.update({f"cotangents.{k}": v for k, v in value.items()})
        else:
            header[name] = value
    return header, arrays


# ---------------------------------------------------------------------------
# The child's side
# ---------------------------------------------------------------------------


def _serve(origin: str) -> int:
    from backends.plugin import load_backend

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the row prints goes to the log, not into the frames
    faulthandler.enable()
    rows = {row.id: row for row in load_backend(origin)}
    requests = sys.stdin.buffer
    while (frame := read_frame(requests)) is not None:
        header, arrays = frame
        try:
            write_frame(replies, *_answer(rows[header["id"]], header, arrays))
        except ResultError as error:
            write_frame(replies, {"error": "ResultError", "fields": [error.tensor, error.problem, str(error.expected), str(error.actual)]})
        except (NotSupported, Unavailable) as error:
            write_frame(replies, {"error": type(error).__name__, "message": str(error)})
        except (Exception, KeyboardInterrupt, SystemExit) as error:
            # A row's sys.exit() or KeyboardInterrupt inside a call is its failure, reported like any exception;
            # the child serves on (a real Ctrl-C reaches the parent too, which ends the run).
            write_frame(replies, {"error": "Exception", "type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()})
    return 0


def _answer(row, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray] | None]:
    kind = header["kind"]
    if kind == "availability":
        return {"value": row._availability(header["device"])}, None
    if kind == "environment":
        return {"value": dict(row._environment(header["device"]))}, None
    named = {k.removeprefix("params."): v for k, v in arrays.items() if k.startswith("params.")}
    config = Config(*header["config"])
    x, h0, c0 = arrays["x"], arrays["h0"], arrays["c0"]
    cotangents = {k.removeprefix("cotangents."): v for k, v in arrays.items() if k.startswith("cotangents.")}
    if kind in ("forward_layer", "backward_layer"):
        params = _same_params(header.get("params_name"), _layer_params(named, *header["cells"]))
        layer = LayerConfig(**header["layer"])
        options = dict(layer=layer, lengths=arrays.get("lengths"), mask=arrays.get("mask"), config=config)
        if kind == "forward_layer":
            answer = row._forward_layer(params=params, x=x, h0=h0, c0=c0, **options)
            return {}, checked_layer_outputs(answer, params, layer, x, config.dtype).tensors()
        answer = row._backward_layer(params=params, x=x, h0=h0, c0=c0, cotangents=cotangents, **options)
        return {}, checked_layer_gradients(answer, params, x, config.dtype)
    params = _same_params(header.get("params_name"), LSTMParams(**named))
    if kind == "forward":
        answer = row._forward(params, x, h0, c0, forget_bias=header["forget_bias"], config=config)
        return {}, checked_outputs(answer, params, x, config.dtype).tensors()
    if kind == "backward":
        answer = row._backward(params, x, h0, c0, cotangents, forget_bias=header["forget_bias"], config=config)
        return {}, checked_gradients(answer, params, x, config.dtype)
    raise LSTMInputError("kind", "unknown call", "availability, environment, forward(_layer) or backward(_layer)", kind)


def _same_params(name: str | None, params):
    """The params object this child was sent before under ``name``, if its tensors still equal ``params``'; else
    ``params``, kept under that name (the last _PARAMS_KEPT names)."""
    if name is None:
        return params
    seen = _PARAMS_SEEN.get(name)
    if type(seen) is type(params):
        kept, sent = seen.tensors(), params.tensors()
        if kept.keys() == sent.keys() and all(kept[k].dtype == sent[k].dtype and np.array_equal(kept[k], sent[k]) for k in sent):
            return seen
    _PARAMS_SEEN.pop(name, None)
    _PARAMS_SEEN[name] = params
    while len(_PARAMS_SEEN) > _PARAMS_KEPT:
        del _PARAMS_SEEN[next(iter(_PARAMS_SEEN))]
    return params


def _layer_params(named: dict[str, np.ndarray], cells: int, num_directions: int) -> LayerParams:
    """LayerParams from the tensors LayerParams.tensors() named ("layer 1 direction 0 W", ...)."""
    by_cell: list[dict[str, np.ndarray]] = [{} for _ in range(cells)]
    for name, value in named.items():
        _, l, _, d, tensor = name.split()
        by_cell[int(l) * num_directions + int(d)][tensor] = value
    return LayerParams(tuple(LSTMParams(**tensors) for tensors in by_cell), num_directions)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
