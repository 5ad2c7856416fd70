"""The tutorials' model in each framework, behind one small interface (:class:`Framework`).

Every framework gives the gradient of the same loss (training/model.py) on the same batch, in the
canonical layout, for the shared optimizer step (the "shared" runs); and a trainer with its own
RMSProp on its native parameters (the "own" runs, also what the timing column times). Its LSTM
weights go in and out through that framework's layout (backends/layouts/: the one copy, which the
conformance rows use too), with the model's LSTM as the contract's one forward layer (:data:`LAYER`);
its framework comes from its runtime (backends/runtimes/: the import, the reason it is unavailable,
the environment, threads and TF32). The dense layer's layout is a transpose, written where it is used.

Each module imports its framework only inside functions: listing the frameworks needs none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from training.model import FORGET_BIAS, ModelParams

#: The model's LSTM in the contract's terms: one forward layer with BasicLSTMCell's forget bias.
LAYER = LayerConfig(forget_bias=FORGET_BIAS)


def native_lstm(layout: Layout, lstm: LSTMParams) -> dict[str, object]:
    """The model's LSTM as ``layout``'s native parameters, the forget bias carried as that layout carries it
    (folded into a bias, or an attribute)."""
    return layout.to_native(LayerParams((lstm,)), LAYER)


def model_lstm(layout: Layout, native: Mapping[str, object]) -> LSTMParams:
    """The model's LSTM (b without the forget bias) from native parameters whose biases hold the forget bias folded
    in: the layout folds it into b_f, and it is taken out again. For a layout that keeps the forget bias as an
    attribute, read with that attribute 0 instead (no rounding of b + 1 - 1)."""
    cell = layout.from_native(native, LAYER).cells[0]
    return LSTMParams(cell.W, cell.U, fold_forget_bias(cell.b, -FORGET_BIAS))


def lstm_gradient(layout: Layout, native_gradients: Mapping[str, object], lstm: LSTMParams) -> LSTMParams:
    """The gradients of the model's W, U and b from those of the native parameters: the layout's transpose (copies:
    a framework may reuse the memory of its gradients)."""
    cell = layout.gradient(native_gradients, LayerParams((lstm,)), LAYER).cells[0]
    return LSTMParams(cell.W.copy(), cell.U.copy(), cell.b.copy())


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


def described(environment: Mapping[str, object]) -> dict[str, str]:
    """A runtime's environment as the run's record keeps it: every value a string."""
    return {str(k): str(v) for k, v in environment.items()}


def unavailable(error: Exception) -> str:
    """A reason from a check that raised: availability never raises."""
    return f"checking availability failed: {type(error).__name__}: {error}"
