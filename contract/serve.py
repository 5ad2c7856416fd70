"""The child side of :mod:`contract.remote`: a process that serves the calls of the rows of one origin.

    python -m contract.serve ORIGIN    (started by contract.remote, not by hand)

It loads the rows of ``ORIGIN`` (this process has the environment they need, so none of them is wrapped
again), then answers each frame on stdin with a frame on stdout, by calling the row's own entry points
(checks included). Whatever the row raises is sent back as data: a ResultError's fields, NotSupported and
Unavailable with their messages, anything else (a sys.exit() or a KeyboardInterrupt of the row's own
included) as a failure with its traceback; the child serves on.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import traceback

import numpy as np

from contract.answers import Cotangents
from contract.errors import NotSupported, ResultError, Unavailable
from contract.loading import load_rows
from contract.remote import gradients_arrays, params_from_arrays, read_frame, write_frame
from contract.row import Row
from spec.layer import LayerConfig
from spec.validation import LSTMInputError


def serve(origin: str) -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the row prints goes to the log, not into the frames
    faulthandler.enable()
    rows = {row.id: row for row in load_rows(origin)}
    requests = sys.stdin.buffer
    while (frame := read_frame(requests)) is not None:
        header, arrays = frame
        try:
            write_frame(replies, *answer(rows[header["id"]], header, arrays))
        except ResultError as error:
            write_frame(replies, {"error": "ResultError", "fields": [error.tensor, error.problem, str(error.expected), str(error.actual)]})
        except (NotSupported, Unavailable) as error:
            write_frame(replies, {"error": type(error).__name__, "message": str(error)})
        except (Exception, KeyboardInterrupt, SystemExit) as error:
            # A row's sys.exit() or KeyboardInterrupt inside a call is its failure, reported like any exception;
            # the child serves on (a real Ctrl-C reaches the parent too, which ends the run).
            write_frame(replies, {"error": "Exception", "type": type(error).__name__, "message": str(error),
                                  "traceback": traceback.format_exc()})
    return 0


def answer(row: Row, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray] | None]:
    call = header["call"]
    if call == "availability":
        return {"value": row.availability(header["device"])}, None
    if call == "environment":
        return {"value": row.environment(header["device"])}, None
    params = params_from_arrays(arrays, "params", header["structure"])
    options = dict(layer=LayerConfig(**header["layer"]), lengths=arrays.get("lengths"), mask=arrays.get("mask"),
                   device=header["device"])
    if call == "forward":
        return {}, row.forward(params, arrays["x"], arrays["h0"], arrays["c0"], **options).tensors()
    if call == "backward":
        cotangents = Cotangents(arrays["cot.dy"], arrays["cot.dh_T"], arrays["cot.dc_T"])
        return {}, gradients_arrays(row.backward(params, arrays["x"], arrays["h0"], arrays["c0"], cotangents, **options))
    raise LSTMInputError("call", "unknown call", "availability, environment, forward or backward", call)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
