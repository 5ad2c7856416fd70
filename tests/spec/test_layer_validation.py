"""Bad input to the layer spec (and to the cell's new options): an LSTMInputError naming the tensor or
setting, what was expected and what was found. Nothing is cast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spec import LayerConfig, LayerParams, LSTMInputError, LSTMParams, layer, lstm
from spec.cases import case_by_name, make_case_data
from spec.layer_cases import layer_case_by_name, make_layer_case_data
from tests.spec.test_validation import expect_error

D = make_layer_case_data(layer_case_by_name("lstmp-stack"))  # T=5, B=4, I=3, H=4, P=2, two bidirectional layers
CELL = D.params.cells[0]


@pytest.mark.parametrize(
    "override, tensor, fragments",
    [
        (dict(x=D.x[:, :, :2].copy()), "x", ("wrong shape", "(T, B, 3)", "(5, 4, 2)")),
        (dict(h0=D.h0[:2].copy()), "h0", ("wrong shape", "expected (4, 4, 2)", "got (2, 4, 2)")),
        (dict(h0=np.zeros((4, 4, 4))), "h0", ("wrong shape", "(4, 4, 2)", "(4, 4, 4)")),
        (dict(c0=np.zeros((4, 4, 2))), "c0", ("wrong shape", "(4, 4, 4)", "(4, 4, 2)")),
        (dict(x=D.x.astype(np.float32)), "x", ("wrong dtype", "float32", "never casts")),
        (dict(lengths=np.array([5, 2, 6, 4])), "lengths", ("out of range", "0 .. T = 5", "6 at batch row 2")),
        (dict(lengths=np.array([5, -1, 0, 4])), "lengths", ("out of range", "-1 at batch row 1")),
        (dict(lengths=np.array([5.0, 2, 0, 4])), "lengths", ("wrong dtype", "integer", "float64")),
        (dict(lengths=np.array([5, 2, 0])), "lengths", ("wrong shape", "(4,)", "(3,)")),
        (dict(lengths=[5, 2, 0, 4]), "lengths", ("not a NumPy array", "list")),
        (dict(lengths=None, mask=np.ones((5, 4))), "mask", ("wrong dtype", "expected bool", "got float64")),
        (dict(lengths=None, mask=np.ones((4, 5), bool)), "mask", ("wrong shape", "(5, 4)", "(4, 5)")),
        (dict(mask=np.ones((5, 4), bool)), "lengths", ("given with a mask", "not both")),
        (dict(config=dataclasses.replace(D.config, proj_size=None)), "params", ("wrong projection size", "None", "2")),
        (dict(config=dataclasses.replace(D.config, num_layers=1)), "params", ("wrong number of layers", "1", "2")),
        (dict(config=dataclasses.replace(D.config, direction="forward")), "params", ("wrong number of directions",)),
        (dict(config=dataclasses.replace(D.config, peephole=False)), "params", ("wrong peephole variant",)),
        (dict(dtype=np.float32), "params", ("wrong dtype", "expected float32", "got float64")),
        (dict(config={"num_layers": 2}), "config", ("wrong type", "LayerConfig", "dict")),
        (dict(params=CELL), "params", ("wrong type", "LayerParams", "LSTMParams")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_layer_forward_rejects(override, tensor, fragments):
    with expect_error(tensor, *fragments):
        D.forward(**override)


@pytest.mark.parametrize(
    "kwargs, tensor, fragments",
    [
        (dict(num_layers=0), "config.num_layers", ("an integer >= 1", "0")),
        (dict(num_layers=True), "config.num_layers", ("an integer >= 1",)),
        (dict(direction="backward"), "config.direction", ("forward or reverse or bidirectional", "'backward'")),
        (dict(proj_size=0), "config.proj_size", ("None or an integer >= 1",)),
        (dict(peephole=1), "config.peephole", ("True or False",)),
        (dict(cell_clip=-1.0), "config.cell_clip", ("out of range", "> 0", "-1.0")),
        (dict(gate_clip=float("inf")), "config.gate_clip", ("out of range", "finite")),
        (dict(gate_clip="3"), "config.gate_clip", ("wrong type", "str")),
        (dict(proj_clip=0.5), "config.proj_clip", ("None without a projection",)),
        (dict(forget_bias=float("nan")), "forget_bias", ("non-finite",)),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_layer_config_rejects(kwargs, tensor, fragments):
    with expect_error(tensor, *fragments):
        LayerConfig(**kwargs)


def _cells(**change):
    cells = list(D.params.cells)
    for k, tensors in change.items():
        cells[int(k[1:])] = LSTMParams(**{**cells[int(k[1:])].tensors(), **tensors})
    return tuple(cells)


@pytest.mark.parametrize(
    "make, tensor, fragments",
    [
        (lambda: LayerParams(D.params.cells[:3], 2), "params.cells", ("wrong count", "multiple of num_directions = 2", "3")),
        (lambda: LayerParams(D.params.cells, 3), "params.num_directions", ("1 or 2", "3")),
        (lambda: LayerParams((), 1), "params.cells", ("non-empty",)),
        (lambda: LayerParams((CELL, "W"), 2), "layer 0 direction 1", ("wrong type", "LSTMParams", "str")),
        # layer 1 reads both directions of layer 0: D * P = 4 inputs, not P = 2
        (lambda: LayerParams(_cells(k2=dict(W=CELL.W[:, :, :2].copy())), 2), "layer 1 direction 0 W",
         ("wrong input width", "4 (2 direction(s) x 2 outputs of the layer below)", "2")),
        (lambda: LayerParams(_cells(k1=dict(W=np.zeros((4, 4, 2)))), 2), "layer 0 direction 1 W", ("wrong input width", "3")),
        (lambda: LayerParams(_cells(k3={"p": None}), 2), "layer 1 direction 1", ("wrong variant", "peephole", "standard")),
        (lambda: LayerParams(_cells(k1={"W_hr": None, "U": np.zeros((4, 4, 4))}), 2), "layer 0 direction 1",
         ("wrong projection size", "2", "None")),
        (lambda: LayerParams(D.params.cells[:2] + tuple(c.astype(np.float32) for c in D.params.cells[2:]), 2),
         "layer 1 direction 0", ("wrong dtype", "float64", "float32")),
    ],
)
def test_layer_params_reject(make, tensor, fragments):
    with expect_error(tensor, *fragments):
        make()


@pytest.mark.parametrize(
    "tensors, tensor, fragments",
    [
        (dict(U=np.zeros((4, 4, 4))), "U", ("wrong shape", "expected (4, 4, 2)", "got (4, 4, 4)")),
        (dict(W_hr=np.zeros((2, 3))), "W_hr", ("wrong shape", "(P, 4)", "(2, 3)")),
        (dict(W_hr=CELL.W_hr.astype(np.float32)), "W_hr", ("wrong dtype", "float64", "float32")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_projected_params_reject(tensors, tensor, fragments):
    with expect_error(tensor, *fragments):
        LSTMParams(**{**CELL.tensors(), **tensors})


@pytest.mark.parametrize(
    "kwargs, tensor, fragments",
    [
        (dict(gate_clip=0.0), "gate_clip", ("out of range", "> 0")),
        (dict(cell_clip=True), "cell_clip", ("wrong type", "bool")),
        (dict(proj_clip=1.0), "proj_clip", ("needs a projection", "W_hr")),
        (dict(coupled_input_forget=1), "coupled_input_forget", ("True or False", "int")),
        (dict(mask=np.ones((4, 3), np.int8)), "mask", ("wrong dtype", "bool", "int8")),
        (dict(mask=np.ones((3, 3), bool)), "mask", ("wrong shape", "(4, 3)", "(3, 3)")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_cell_options_reject(kwargs, tensor, fragments):
    d = make_case_data(case_by_name("small"))  # T=4, B=3
    with expect_error(tensor, *fragments):
        lstm.forward(d.params, d.x, d.h0, d.c0, **kwargs)


@pytest.mark.parametrize(
    "name, bad, fragments",
    [
        ("dy", D.dy[:, :, :2].copy(), ("wrong shape", "(5, 4, 4)", "(5, 4, 2)")),
        ("dh_T", D.dh_T[:2].copy(), ("wrong shape", "(4, 4, 2)")),
        ("dc_T", D.dc_T.astype(np.float32), ("wrong dtype",)),
    ],
)
def test_layer_backward_rejects(name, bad, fragments):
    fwd = D.forward()
    cotangents = {**D.cotangents(), name: bad}
    with expect_error(name, *fragments):
        layer.backward(fwd, **cotangents)


def test_layer_backward_needs_a_layer_forward_result():
    d = make_case_data(case_by_name("small"))
    with expect_error("fwd", "wrong type", "LayerForward"):
        layer.backward(lstm.forward(d.params, d.x, d.h0, d.c0), D.dy, D.dh_T, D.dc_T)


def test_errors_are_value_errors_carrying_what_was_expected_and_found():
    with pytest.raises(ValueError) as info:
        D.forward(lengths=np.array([5, 2, 9, 4]))
    error = info.value
    assert isinstance(error, LSTMInputError)
    assert (error.tensor, error.problem, error.expected, error.actual) == ("lengths", "out of range", "integers in 0 .. T = 5", "9 at batch row 2")


def test_inputs_are_not_modified():
    named = lambda: {**D.inputs(), **D.params.tensors(), **D.cotangents(), "lengths": D.lengths}
    before = {k: v.copy() for k, v in named().items()}
    layer.backward(D.forward(), D.dy, D.dh_T, D.dc_T)
    assert all(np.array_equal(before[k], v) for k, v in named().items())


def test_float32_is_computed_only_when_asked_for():
    d32 = make_layer_case_data(D.case, np.float32)
    with expect_error("params", "expected float64", "got float32"):
        d32.forward(dtype=np.float64)
    fwd = d32.forward()
    assert fwd.dtype == np.float32 and fwd.y.dtype == np.float32 and fwd.h_T.dtype == np.float32
