"""Training through the contract: any row of the suite (backends/, a mutant of the catalogue
conformance.mutants, a plug-in) as the model's LSTM, with the shared NumPy head.

Per step: the row's ``forward()`` gives h_T; the NumPy head (training/head.py) gives the loss and the
cotangent dh_T it sends back, with dy = 0 and dc_T = 0 (only the last output reaches the loss); the
row's ``backward()`` gives the LSTM's gradients. Both calls go through the contract's checks
(contract/row.py), in float32 on the CPU, the model's LSTM as the contract's one forward layer
(training.frameworks.LAYER). This is how a non-conformance that only the gradients show (TensorFlow's
registered BlockLSTMV2 gradient, a backward-only mutant) is trained with: its forward is right, so only
training can reveal what it costs.

In a half type (``half``) the row trains in mixed precision (training/frameworks/precision_model.py): the
float32 master weights and the batch rounded to the half type at every step, the row's own forward and backward
in that type (under the precision policy it declares there, which the run records), the head in float32, the
gradients widened to float32 for the shared step; the model's forget bias is in b_f (precision_model's
``forget_bias_folded``), so the layer has none.

Rows are found by id: the built-in ones through backends.registry (each where it must run); a mutant
(``mutant/...``, ``half-mutant/...``) is loaded from its catalogue by name at run time (contract.loading.load_rows),
as a plug-in is: training does not import the conformance suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.registry import row_by_id
from contract.answers import Cotangents
from contract.loading import load_rows
from contract.row import Row
from contract.vocabulary import Device
from spec.layer import LayerConfig
from spec.params import LayerParams, LSTMParams
from spec.validation import cast, check_dtype
from training import head
from training.frameworks import LAYER, Framework, described, unavailable
from training.frameworks.spec_model import SharedStepTrainer
from training.model import ModelParams

#: The catalogues of mutants, by their ids' prefix, loaded as a plug-in is (``--backend conformance.mutants``).
MUTANTS = {"mutant/": "conformance.mutants", "half-mutant/": "conformance.half_mutants"}
#: The model's LSTM in a half type: its forget bias is in b_f.
HALF_LAYER = LayerConfig()


def find_row(row_id: str) -> Row:
    """A built-in row or a mutant, by id."""
    catalogue = next((module for prefix, module in MUTANTS.items() if row_id.startswith(prefix)), None)
    if catalogue is None:
        return row_by_id(row_id)
    rows = {r.id: r for r in load_rows(catalogue)}
    if row_id not in rows:
        raise KeyError(f"no mutant {row_id!r} in {catalogue}; it has: {', '.join(rows)}")
    return rows[row_id]


@dataclass
class ContractModel(Framework):
    """The model with row ``row_id``'s LSTM, trained through forward() and backward()."""

    row_id: str = ""
    half: str = ""  # a half type: mixed-precision training (module docstring)
    id: str = ""
    group: str = "numpy"
    description: str = ""
    own_optimizer: str = "none: trained with the shared step only"

    def __post_init__(self):
        self.id = self.id or f"contract:{self.row_id}"
        self._row = None

    @classmethod
    def of(cls, row: Row) -> ContractModel:
        """The model with this row (a plug-in's, say) as its LSTM."""
        model = cls(row_id=row.id)
        model._row = row
        return model

    @property
    def row(self) -> Row:
        if self._row is None:
            self._row = find_row(self.row_id)
        return self._row

    def availability(self):
        try:
            return self.row.availability(Device.CPU)
        except Exception as error:  # noqa: BLE001 - availability never raises: an unknown id is a reason too
            return unavailable(error)

    def environment(self):
        environment = described(self.row.environment(Device.CPU))
        if self.half:
            environment["policy"] = str(self.row.policy(self.half, Device.CPU))
        return environment

    def _dtype(self) -> np.dtype:
        return check_dtype(self.half or "float32", storage=True)

    def _zeros(self, lstm: LSTMParams, x: np.ndarray) -> np.ndarray:
        """The initial state (one cell, B, H) of zeros."""
        return np.zeros((1, x.shape[1], lstm.hidden_size), self._dtype())

    def _inputs(self, lstm: LSTMParams, x: np.ndarray) -> tuple[LayerParams, np.ndarray, LayerConfig]:
        """The row's parameters, input and layer: as given in float32; in a half type, rounded to it."""
        if not self.half:
            return LayerParams((lstm,)), x, LAYER
        return LayerParams((lstm,)).astype(self.half), cast(x, self.half, "x"), HALF_LAYER

    def _h_T(self, lstm: LSTMParams, x: np.ndarray) -> np.ndarray:
        params, x, layer = self._inputs(lstm, x)
        zeros = self._zeros(lstm, x)
        return self.row.forward(params, x, zeros, zeros, layer=layer, device=Device.CPU).h_T[0].astype(np.float32)

    def loss_and_gradients(self, params, x, y):
        lstm, zeros = params.lstm, self._zeros(params.lstm, x)
        out = head.forward(self._h_T(lstm, x), params.Wd, params.bd, y)
        dh_T, dWd, dbd = head.backward(out, params.Wd)
        given, xh, layer = self._inputs(lstm, x)
        cotangents = Cotangents(np.zeros((*x.shape[:2], lstm.hidden_size), self._dtype()),
                                cast(dh_T[None], self._dtype().name, "dh_T") if self.half else dh_T[None], zeros)
        g = self.row.backward(given, xh, zeros, zeros, cotangents, layer=layer, device=Device.CPU)
        cell = g.params.cells[0]
        widened = (t.astype(np.float32) for t in (cell.W, cell.U, cell.b))
        return out.loss, ModelParams(LSTMParams(*widened), dWd, dbd)

    def logits(self, params, x):
        return self._h_T(params.lstm, x) @ params.Wd.T + params.bd

    def trainer(self, params):
        return SharedStepTrainer(params, self.loss_and_gradients)
