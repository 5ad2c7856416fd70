"""PyTorch: ``nn.LSTM`` (time-major) + ``nn.Linear`` + ``F.cross_entropy``, gradients by autograd;
its own optimizer is ``torch.optim.RMSprop(lr=0.001, alpha=0.9)``.

The LSTM's weights go in through the ``torch/nn.LSTM`` adapter's ``to_native`` (b split in half
between ``bias_ih_l0`` and ``bias_hh_l0``, the forget bias folded into ``bias_ih_l0``) and come back
through its ``from_native`` (the two biases summed; the forget bias then taken out of b_f again).
Gradients map back as the adapter maps them (``TorchLSTM._canonical_gradients``): both biases
receive the same gradient, which is the canonical b's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.base import fold_forget_bias
from backends.torch_lstm import TorchLSTM, configure
from spec import LSTMParams
from training.frameworks import Framework, Trainer
from training.model import FORGET_BIAS, ModelParams
from training.optimizer import DECAY, LEARNING_RATE, OWN_RMSPROP

ADAPTER = TorchLSTM()
LSTM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _torch():
    import torch

    configure("cpu")
    return torch


class _Model:
    """nn.LSTM + nn.Linear holding canonical parameters (float32, CPU)."""

    def __init__(self, params: ModelParams):
        torch = _torch()
        H, I = params.lstm.hidden_size, params.lstm.input_size
        self.lstm = torch.nn.LSTM(I, H)
        self.dense = torch.nn.Linear(H, params.Wd.shape[0])
        self.load(params)

    def load(self, params: ModelParams) -> None:
        torch = _torch()
        with torch.no_grad():
            for name, value in ADAPTER.to_native(params.lstm, FORGET_BIAS).items():
                getattr(self.lstm, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
            self.dense.weight.copy_(torch.from_numpy(params.Wd))
            self.dense.bias.copy_(torch.from_numpy(params.bd))

    def parameters(self):
        return [*self.lstm.parameters(), *self.dense.parameters()]

    def logits(self, x):
        _, (h_n, _) = self.lstm(x)  # zero initial state
        return self.dense(h_n[0])

    def loss(self, x, y):
        torch = _torch()
        return torch.nn.functional.cross_entropy(self.logits(x), y)

    def canonical(self) -> ModelParams:
        native = {name: getattr(self.lstm, name).detach().numpy() for name in LSTM_NAMES}
        lstm = ADAPTER.from_native(native)
        # from_native folds the forget bias carried in bias_ih_l0 into b_f; the canonical b is without it.
        lstm = LSTMParams(lstm.W, lstm.U, fold_forget_bias(lstm.b, -FORGET_BIAS))
        return ModelParams(lstm, self.dense.weight.detach().numpy().copy(), self.dense.bias.detach().numpy().copy())


class TorchTrainer(Trainer):
    def __init__(self, params: ModelParams):
        torch = _torch()
        self.model = _Model(params)
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=LEARNING_RATE, alpha=DECAY)

    def step(self, x, y) -> float:
        torch = _torch()
        self.optimizer.zero_grad()
        loss = self.model.loss(torch.from_numpy(x), torch.from_numpy(y))
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
        return ADAPTER.availability("cpu")

    def environment(self):
        torch = _torch()
        return {"torch": torch.__version__, "threads": str(torch.get_num_threads()),
                "mkldnn": str(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}

    def _loaded(self, params):
        if self._model is None:
            self._model = _Model(params)
        else:
            self._model.load(params)
        return self._model

    def loss_and_gradients(self, params, x, y):
        torch = _torch()
        model = self._loaded(params)
        for p in model.parameters():
            p.grad = None
        loss = model.loss(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        native = {name: getattr(model.lstm, name).grad.numpy() for name in LSTM_NAMES}
        # The adapter's own mapping of nn.LSTM's gradients (it also checks that both biases got the same one).
        g = ADAPTER._canonical_gradients(params.lstm, native)
        lstm = LSTMParams(g["W"].copy(), g["U"].copy(), g["b"].copy())
        return float(loss.detach()), ModelParams(lstm, model.dense.weight.grad.numpy().copy(), model.dense.bias.grad.numpy().copy())

    def logits(self, params, x):
        torch = _torch()
        with torch.no_grad():
            return self._loaded(params).logits(torch.from_numpy(x)).numpy().copy()

    def trainer(self, params):
        return TorchTrainer(params)
