"""The model trained in a half type under a precision policy: mixed-precision training, the spec's way.

Mixed-precision training keeps float32 master weights and computes in the half type: at every step the
weights and the batch are rounded to it (to nearest even, as a cast does), the LSTM's forward and backward run
under the policy (spec/precision.py), the head and its loss in float32 (training/head.py, as Keras' mixed
policies and torch.autocast keep a softmax cross-entropy in float32), the cotangent it sends back rounded to the
half type, and the gradients, widened to float32, feed the shared float32 RMSProp step.

A half type cannot hold b_f + 1 exactly, so the half-type runs train a model without a separate forget bias:
its b_f starts where the float32 model's b_f + 1 starts (:func:`forget_bias_folded`), and every
implementation, the spec and the rows, is given that b. The same model, then, in every run.

:class:`PolicyModel` is the spec under a policy, carried out one of its equally valid ways (``evaluation``,
:data:`EVALUATIONS`), or with its sums in another order (``ordering``: the float32 runs' reorderings,
training/frameworks/spec_model.py: each batch's rows, the hidden units or the input pixels permuted): the honest
bfloat16 runs whose spread is the bound a framework's bfloat16 run is judged by (training/bound.py,
training/report.py).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np

from spec.params import LSTMParams
from spec.precision import (
    STANDARD,
    Accumulation,
    Bias,
    Evaluation,
    Policy,
    Sigmoid,
    backward,
    forward,
    round_to,
)
from training import head
from training.frameworks.spec_model import Reordered, SharedStepTrainer
from training.model import FORGET_BIAS, ModelParams

#: The equally valid evaluations the honest half-type runs use, by name: other float32 accumulations (float64
#: rounded once; NumPy's pairwise blocks, too slow at B = H = 128 to run 500 steps, are not among them), the
#: activations as a float32 kernel computes them (a few ulps off: measured, oneDNN's bfloat16 backward flips about as
#: many bfloat16 roundings of dz as NumPy's float32 tanh does, and ten times as many as any float32 reordering), and
#: where the policy rounds every operation the placements the frameworks use (contract/half_bounds.py).
EVALUATIONS = {
    "exact": Evaluation(Accumulation.EXACT),
    "float32-activations": Evaluation(float32_activations=True),
    "fused": Evaluation(fused=True),
    "bias-split": Evaluation(bias=Bias.SPLIT),
    "multiply-add": Evaluation(multiply_add=True),
    "xla": Evaluation(sigmoid=Sigmoid.RECIPROCAL, bias=Bias.INPUT_AFTER),
    "eigen": Evaluation(sigmoid=Sigmoid.QUOTIENT, joint_product=True),
}
#: The evaluations that change something under a policy that rounds only at the step's end.
STORAGE_EVALUATIONS = ("exact", "float32-activations")
#: The reorderings of the honest half-type runs (spec_model's, but the float64 gradient: no policy computes in it).
ORDERINGS = ("batch-order", "unit-order", "input-order")


def forget_bias_folded(params: ModelParams) -> ModelParams:
    """The model with the forget bias in b_f: the half-type runs' model (see the module docstring)."""
    b = params.lstm.b.copy()
    b[1] = b[1] + np.asarray(FORGET_BIAS, b.dtype)
    return ModelParams(LSTMParams(params.lstm.W, params.lstm.U, b), params.Wd, params.bd)


def evaluations_of(policy: Policy) -> tuple[str, ...]:
    """The names of the evaluations that are honest variants of ``policy`` (the reference's excluded)."""
    return tuple(EVALUATIONS) if policy.rounds_every_operation else STORAGE_EVALUATIONS


@dataclass
class PolicyModel(Reordered):
    """The spec under ``policy`` in ``half``: one evaluation, or one reordering (``ordering``, seeded by ``seed``)."""

    policy: str = Policy.MIXED.value
    half: str = "bfloat16"
    evaluation: str = ""  # a name of EVALUATIONS, or "" for the reference's (the machine's BLAS, op by op)
    ordering: str = ""  # one of ORDERINGS, or "" for the sums in the model's own order
    id: str = ""
    group: str = "numpy"
    description: str = ""
    own_optimizer: str = "none: trained with the shared step only"

    def __post_init__(self):
        if self.ordering and self.ordering not in ORDERINGS:
            raise ValueError(f"ordering {self.ordering!r}: expected one of {ORDERINGS}, or none")
        if self.ordering:
            super().__post_init__()
        self._policy = Policy.parse(self.policy)
        self._evaluation = EVALUATIONS[self.evaluation] if self.evaluation else STANDARD
        self.id = self.id or f"spec/{self.half}/{self._policy.value}"
        self.description = self.description or (
            f"spec.precision under {self._policy.value} in {self.half}" + (f", evaluated {self.evaluation}" if self.evaluation else "")
            + (f", {self.ordering} (seed {self.seed})" if self.ordering else ""))

    def environment(self) -> dict[str, str]:
        return {"numpy": np.__version__, "python": platform.python_version(), "policy": self._policy.value}

    def _rounded(self, params: ModelParams, x: np.ndarray) -> tuple[LSTMParams, np.ndarray]:
        lstm = params.lstm
        return LSTMParams(*(round_to(a, self.half) for a in (lstm.W, lstm.U, lstm.b))), round_to(x, self.half)

    def _h_T(self, lstm: LSTMParams, x: np.ndarray) -> np.ndarray:
        zeros = np.zeros((x.shape[1], lstm.hidden_size), np.float32)
        return forward(lstm, x, zeros, zeros, dtype=self.half, policy=self._policy, evaluation=self._evaluation)[1]

    def loss_and_gradients(self, params, x, y):
        return super().loss_and_gradients(params, x, y) if self.ordering else self.gradients_of(params, x, y)

    def gradients_of(self, params, x, y):
        lstm, xh = self._rounded(params, x)
        zeros = np.zeros((x.shape[1], lstm.hidden_size), np.float32)
        out = head.forward(self._h_T(lstm, xh), params.Wd, params.bd, y)
        dh_T, dWd, dbd = head.backward(out, params.Wd)
        g = backward(lstm, xh, zeros, zeros, np.zeros((*x.shape[:2], lstm.hidden_size), np.float32),
                     round_to(dh_T, self.half), zeros, dtype=self.half, policy=self._policy, evaluation=self._evaluation)
        return out.loss, ModelParams(LSTMParams(g["W"], g["U"], g["b"]), dWd, dbd)

    def logits(self, params, x):
        lstm, xh = self._rounded(params, x)
        return self._h_T(lstm, xh) @ params.Wd.T + params.bd

    def trainer(self, params):
        return SharedStepTrainer(params, self.loss_and_gradients)
