"""PyTorch: ``nn.LSTM`` (time-major) + ``nn.Linear`` + ``F.cross_entropy``, gradients by autograd;
its own optimizer is ``torch.optim.RMSprop(lr=0.001, alpha=0.9)``.

The LSTM's weights go in and out through torch.nn.LSTM's layout (backends/layouts/torch.py, ``NN_LSTM``:
b split in half between ``bias_ih_l0`` and ``bias_hh_l0``, the forget bias folded into ``bias_ih_l0``; read
back, the two biases summed and the forget bias taken out of b_f again), and its gradients through the
layout's transpose: both biases receive the canonical b's gradient (their mean, checked to agree). torch
comes from its runtime (backends/runtimes/torch.py), which sets the thread count (LSTMC_THREADS) before
every use, as it does for the conformance rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.layouts.torch import NN_LSTM
from backends.runtimes.torch import TORCH, torch
from contract.vocabulary import Device
from training.frameworks import Framework, Trainer, described, lstm_gradient, model_lstm, native_lstm, unavailable
from training.model import ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

LAYOUT = NN_LSTM


def prepared():
    """torch, with this process's numerics set (threads)."""
    TORCH.prepare(Device.CPU)
    return torch()


class _Model:
    """nn.LSTM + nn.Linear holding canonical parameters (float32, CPU)."""

    def __init__(self, params: ModelParams):
        t = prepared()
        self.lstm = t.nn.LSTM(params.lstm.input_size, params.lstm.hidden_size)
        self.dense = t.nn.Linear(params.lstm.hidden_size, params.Wd.shape[0])
        self.load(params)

    def load(self, params: ModelParams) -> None:
        t = prepared()
        native = native_lstm(LAYOUT, params.lstm)
        lstm = dict(self.lstm.named_parameters())
        if set(native) != set(lstm):
            raise RuntimeError(f"nn.LSTM's parameters {sorted(lstm)} are not the layout's {sorted(native)}")
        with t.no_grad():
            for name, value in native.items():
                lstm[name].copy_(t.from_numpy(np.ascontiguousarray(value)))
            self.dense.weight.copy_(t.from_numpy(params.Wd))
            self.dense.bias.copy_(t.from_numpy(params.bd))

    def parameters(self):
        return [*self.lstm.parameters(), *self.dense.parameters()]

    def logits(self, x):
        _, (h_n, _) = self.lstm(x)  # zero initial state
        return self.dense(h_n[0])

    def loss(self, x, y):
        return torch().nn.functional.cross_entropy(self.logits(x), y)

    def canonical(self) -> ModelParams:
        native = {name: p.detach().numpy() for name, p in self.lstm.named_parameters()}
        return ModelParams(model_lstm(LAYOUT, native), self.dense.weight.detach().numpy().copy(),
                           self.dense.bias.detach().numpy().copy())


class TorchTrainer(Trainer):
    def __init__(self, params: ModelParams):
        self.model = _Model(params)
        self.optimizer = torch().optim.RMSprop(self.model.parameters(), lr=LEARNING_RATE, alpha=DECAY)

    def step(self, x, y) -> float:
        t = prepared()
        self.optimizer.zero_grad()
        loss = self.model.loss(t.from_numpy(x), t.from_numpy(y))
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def params(self) -> ModelParams:
        return self.model.canonical()


@dataclass
class TorchModel(Framework):
    id: str = "torch/nn.LSTM"
    group: str = "torch"
    description: str = "torch.nn.LSTM + nn.Linear + F.cross_entropy, autograd"
    own_optimizer: str = OWN_RMSPROP["torch"]

    def __post_init__(self):
        self._model = None

    def availability(self):
        try:
            return TORCH.availability(Device.CPU)
        except Exception as error:  # noqa: BLE001 - availability never raises
            return unavailable(error)

    def environment(self):
        return described(TORCH.environment(Device.CPU))

    def _loaded(self, params):
        if self._model is None:
            self._model = _Model(params)
        else:
            self._model.load(params)
        return self._model

    def loss_and_gradients(self, params, x, y):
        t = prepared()
        model = self._loaded(params)
        for p in model.parameters():
            p.grad = None
        loss = model.loss(t.from_numpy(x), t.from_numpy(y))
        loss.backward()
        native = {name: p.grad.numpy() for name, p in model.lstm.named_parameters()}
        lstm = lstm_gradient(LAYOUT, native, params.lstm)
        return float(loss.detach()), ModelParams(lstm, model.dense.weight.grad.numpy().copy(), model.dense.bias.grad.numpy().copy())

    def logits(self, params, x):
        t = prepared()
        with t.no_grad():
            return self._loaded(params).logits(t.from_numpy(x)).numpy().copy()

    def trainer(self, params):
        return TorchTrainer(params)
