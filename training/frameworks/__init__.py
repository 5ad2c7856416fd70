"""The tutorials' model in each framework, behind one small interface (:class:`Framework`).

Every framework gives the gradient of the same loss (training/model.py) on the same batch, in the
canonical layout, for the shared optimizer step (the "shared" runs); and a trainer with its own
RMSProp on its native parameters (the "own" runs, also what the timing column times). Its LSTM
weights go in and out through the project's adapters' layout conversions (backends/); the dense
layer's layout is a transpose, written where it is used.

Each module imports its framework only inside functions: listing the frameworks needs none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.model import ModelParams


class Trainer:
    """A model with an optimizer of its own, stepping on its native parameters."""

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on x (T, B, I) float32, y (B,): the loss before the update."""
        raise NotImplementedError

    def params(self) -> ModelParams:
        """The current parameters, canonical layout, float32 (forget bias not included in b)."""
        raise NotImplementedError


@dataclass
class Framework:
    """One framework's version of the model. ``group`` names the process it runs in (training/runs.py)."""

    id: str
    group: str
    description: str = ""
    own_optimizer: str = ""

    def availability(self) -> str | None:
        """None if it can run here, else the real reason. Never raises."""
        return None

    def environment(self) -> dict[str, str]:
        return {}

    def loss_and_gradients(self, params: ModelParams, x: np.ndarray, y: np.ndarray) -> tuple[float, ModelParams]:
        raise NotImplementedError

    def logits(self, params: ModelParams, x: np.ndarray) -> np.ndarray:
        """The model's logits (N, C) for x (T, N, I), computed by the framework."""
        raise NotImplementedError

    def trainer(self, params: ModelParams) -> Trainer:
        raise NotImplementedError
