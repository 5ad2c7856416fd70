"""One training run's record, as its process writes it: the loss at every step, the parameters at
chosen steps, and what the report needs to know (status, timing, test accuracy, versions), in one
safetensors file per run (arrays and string metadata; nothing pickled).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load_file, safe_open, save_file

from training.model import NAMES, ModelParams

FORMAT = "lstm-conformance-training-run"


def recorded_steps(steps: int, count: int = 40) -> list[int]:
    """Where parameters are kept: every step up to 10 (where non-conformances show first), then about
    ``count`` steps spread evenly to the end, the last step always included."""
    dense = list(range(min(steps, 10) + 1))
    spread = np.linspace(10, steps, num=max(2, count), dtype=int).tolist() if steps > 10 else []
    return sorted(set(dense + spread + [steps]))


@dataclass
class Trajectory:
    run_id: str
    status: str = "ok"  # "ok", "unavailable: ...", "failed: ..."
    info: dict[str, object] = field(default_factory=dict)  # JSON-able: kind, framework, timing, test accuracy...
    loss: np.ndarray | None = None  # (steps,): the loss at step k, before its update
    steps: np.ndarray | None = None  # (R,): the steps whose parameters are kept (0: the initial ones)
    params: dict[str, np.ndarray] | None = None  # name -> (R, ...)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def save(self, path: str | os.PathLike) -> None:
        tensors: dict[str, np.ndarray] = {}
        if self.loss is not None:
            tensors["loss"] = np.asarray(self.loss, np.float64)
            tensors["steps"] = np.asarray(self.steps, np.int64)
            tensors.update({f"param.{k}": np.ascontiguousarray(v) for k, v in self.params.items()})
        else:
            tensors["loss"] = np.zeros(0)  # safetensors needs one tensor
        meta = {"format": FORMAT, "run_id": self.run_id, "status": self.status, "info": json.dumps(self.info, default=str)}
        tmp = f"{os.fspath(path)}.partial"
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trajectory:
        with safe_open(os.fspath(path), "numpy") as f:
            meta = f.metadata()
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a training run file (format {meta.get('format')!r})")
        t = load_file(os.fspath(path))
        run = cls(meta["run_id"], meta["status"], json.loads(meta["info"]))
        if "steps" in t:
            run.loss, run.steps = t["loss"], t["steps"]
            run.params = {k: t[f"param.{k}"] for k in NAMES}
        return run


class Recorder:
    """Collects a run's losses and kept parameters step by step."""

    def __init__(self, keep: list[int]):
        self.keep = set(keep)
        self.losses: list[float] = []
        self.kept_steps: list[int] = []
        self.kept: dict[str, list[np.ndarray]] = {k: [] for k in NAMES}

    def wants(self, step: int) -> bool:
        return step in self.keep

    def params(self, step: int, params: ModelParams) -> None:
        self.kept_steps.append(step)
        for k, v in params.tensors().items():
            self.kept[k].append(np.array(v))

    def trajectory(self, run_id: str, info: dict) -> Trajectory:
        return Trajectory(run_id, "ok", info, np.array(self.losses), np.array(self.kept_steps),
                          {k: np.stack(v) for k, v in self.kept.items()})
