"""Bad input to the spec, the cell's (spec.lstm) and the layer's (spec.layer, and the cell's options the layer
uses): an LSTMInputError naming the tensor or setting, what was expected and what was found. Nothing is cast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spec import LayerConfig, LayerParams, LSTMInputError, LSTMParams, backward, forward, layer, lstm
from spec.cases import case_by_name, make_case_data
from tests.spec.checks import one_cell

D = one_cell(make_case_data(case_by_name("small-peephole")))  # the cell: T=4, B=3, I=5, H=4
STACK = make_case_data(case_by_name("lstmp-stack"))  # the layer: T=5, B=4, I=3, H=4, P=2, two bidirectional layers
STACK_CELL = STACK.params.cells[0]


def call_forward(**override):
    arguments = dict(params=D.params, x=D.x, h0=D.h0, c0=D.c0)
    arguments.update(override)
    return forward(**arguments)


def expect_error(tensor: str, *fragments: str):
    """pytest.raises for LSTMInputError on ``tensor`` whose message holds every fragment."""

    class Check:
        def __enter__(self):
            self.raises = pytest.raises(LSTMInputError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.raises.__exit__(*exc)
            error = self.info.value
            assert error.tensor == tensor, f"error names {error.tensor!r}, expected {tensor!r}: {error}"
            for fragment in fragments:
                assert fragment in str(error), f"{fragment!r} missing from: {error}"
            return suppressed

    return Check()


@pytest.mark.parametrize(
    "override, tensor, fragments",
    [
        (dict(x=D.x[:, :, :4].copy()), "x", ("wrong shape", "(T, B, 5)", "(4, 3, 4)")),
        (dict(x=D.x[0].copy()), "x", ("wrong shape", "(3, 5)")),
        (dict(h0=D.h0[:2].copy()), "h0", ("wrong shape", "expected (3, 4)", "got (2, 4)")),
        (dict(c0=D.c0.T.copy()), "c0", ("wrong shape", "(4, 3)")),
        (dict(x=D.x.astype(np.float32)), "x", ("wrong dtype", "expected float64", "got float32", "never casts")),
        (dict(h0=D.h0.astype(np.float32)), "h0", ("wrong dtype", "float32")),
        (dict(x=D.x.tolist()), "x", ("not a NumPy array", "list")),
        (dict(x=np.where(np.arange(D.x.size).reshape(D.x.shape) == 7, np.nan, D.x)), "x", ("non-finite", "nan", "(0, 1, 2)")),
        (dict(c0=np.full_like(D.c0, np.inf)), "c0", ("non-finite", "inf")),
        (dict(x=np.empty((0, 3, 5))), "x", ("empty axis", "(0, 3, 5)")),
        (dict(params=D.params.astype(np.float32)), "params", ("wrong dtype", "expected float64", "got float32")),
        (dict(params={"W": D.params.W}), "params", ("wrong type", "LSTMParams", "dict")),
        (dict(forget_bias=float("nan")), "forget_bias", ("non-finite",)),
        (dict(forget_bias="1.0"), "forget_bias", ("wrong type", "str")),
        (dict(forget_bias=True), "forget_bias", ("wrong type", "bool")),
        (dict(dtype=np.float16), "dtype", ("unsupported dtype", "float16")),
        (dict(dtype="int64"), "dtype", ("unsupported dtype", "int64")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_forward_rejects(override, tensor, fragments):
    with expect_error(tensor, *fragments):
        call_forward(**override)


@pytest.mark.parametrize(
    "kwargs, tensor, fragments",
    [
        (dict(U=D.params.U[:, :3]), "U", ("wrong shape", "expected (4, 4, 4)", "got (4, 3, 4)")),
        (dict(W=D.params.W[:3]), "W", ("wrong shape", "(4, H, I)", "(3, 4, 5)")),
        (dict(b=D.params.b.ravel()), "b", ("wrong shape", "(4, 4)", "(16,)")),
        (dict(p=D.params.p[:2]), "p", ("wrong shape", "(3, 4)", "(2, 4)")),
        (dict(U=D.params.U.astype(np.float32)), "U", ("wrong dtype", "expected float64", "got float32")),
        (dict(W=D.params.W.astype(np.int64)), "W", ("unsupported dtype", "int64")),
        (dict(W=D.params.W.astype(np.int32)), "W", ("unsupported dtype", "int32")),
        (dict(b=np.full((4, 4), np.nan)), "b", ("non-finite",)),
        (dict(W=D.params.W.tolist()), "W", ("not a NumPy array",)),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_params_reject(kwargs, tensor, fragments):
    tensors = {**D.params.tensors(), **kwargs}
    with expect_error(tensor, *fragments):
        LSTMParams(**tensors)


@pytest.mark.parametrize(
    "name, bad, fragments",
    [
        ("dh_seq", D.dh_seq[:-1].copy(), ("wrong shape", "(4, 3, 4)", "(3, 3, 4)")),
        ("dh_T", D.dh_T.astype(np.float32), ("wrong dtype",)),
        ("dc_T", np.full_like(D.dc_T, np.nan), ("non-finite",)),
    ],
)
def test_backward_rejects(name, bad, fragments):
    fwd = call_forward()
    cotangents = {**D.cotangents(), name: bad}
    with expect_error(name, *fragments):
        backward(fwd, **cotangents)


def test_backward_needs_a_forward_result():
    with expect_error("fwd", "wrong type", "Forward"):
        backward((D.x, D.h0), **D.cotangents())


# ---------------------------------------------------------------------------
# The layer (spec.layer), and the cell's options that only the layer's features use.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, tensor, fragments",
    [
        (dict(x=STACK.x[:, :, :2].copy()), "x", ("wrong shape", "(T, B, 3)", "(5, 4, 2)")),
        (dict(h0=STACK.h0[:2].copy()), "h0", ("wrong shape", "expected (4, 4, 2)", "got (2, 4, 2)")),
        (dict(h0=np.zeros((4, 4, 4))), "h0", ("wrong shape", "(4, 4, 2)", "(4, 4, 4)")),
        (dict(c0=np.zeros((4, 4, 2))), "c0", ("wrong shape", "(4, 4, 4)", "(4, 4, 2)")),
        (dict(x=STACK.x.astype(np.float32)), "x", ("wrong dtype", "float32", "never casts")),
        (dict(lengths=np.array([5, 2, 6, 4])), "lengths", ("out of range", "0 .. T = 5", "6 at batch row 2")),
        (dict(lengths=np.array([5, -1, 0, 4])), "lengths", ("out of range", "-1 at batch row 1")),
        (dict(lengths=np.array([5.0, 2, 0, 4])), "lengths", ("wrong dtype", "integer", "float64")),
        (dict(lengths=np.array([5, 2, 0])), "lengths", ("wrong shape", "(4,)", "(3,)")),
        (dict(lengths=[5, 2, 0, 4]), "lengths", ("not a NumPy array", "list")),
        (dict(lengths=None, mask=np.ones((5, 4))), "mask", ("wrong dtype", "expected bool", "got float64")),
        (dict(lengths=None, mask=np.ones((4, 5), bool)), "mask", ("wrong shape", "(5, 4)", "(4, 5)")),
        (dict(mask=np.ones((5, 4), bool)), "lengths", ("given with a mask", "not both")),
        (dict(config=dataclasses.replace(STACK.layer, proj_size=None)), "params", ("wrong projection size", "None", "2")),
        (dict(config=dataclasses.replace(STACK.layer, num_layers=1)), "params", ("wrong number of layers", "1", "2")),
        (dict(config=dataclasses.replace(STACK.layer, direction="forward")), "params", ("wrong number of directions",)),
        (dict(config=dataclasses.replace(STACK.layer, peephole=False)), "params", ("wrong peephole variant",)),
        (dict(dtype=np.float32), "params", ("wrong dtype", "expected float32", "got float64")),
        (dict(config={"num_layers": 2}), "config", ("wrong type", "LayerConfig", "dict")),
        (dict(params=STACK_CELL), "params", ("wrong type", "LayerParams", "LSTMParams")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_layer_forward_rejects(override, tensor, fragments):
    with expect_error(tensor, *fragments):
        STACK.forward(**override)


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
    cells = list(STACK.params.cells)
    for k, tensors in change.items():
        cells[int(k[1:])] = LSTMParams(**{**cells[int(k[1:])].tensors(), **tensors})
    return tuple(cells)


@pytest.mark.parametrize(
    "make, tensor, fragments",
    [
        (lambda: LayerParams(STACK.params.cells[:3], 2), "params.cells", ("wrong count", "multiple of num_directions = 2", "3")),
        (lambda: LayerParams(STACK.params.cells, 3), "params.num_directions", ("1 or 2", "3")),
        (lambda: LayerParams((), 1), "params.cells", ("non-empty",)),
        (lambda: LayerParams((STACK_CELL, "W"), 2), "layer 0 direction 1", ("wrong type", "LSTMParams", "str")),
        # layer 1 reads both directions of layer 0: D * P = 4 inputs, not P = 2
        (lambda: LayerParams(_cells(k2=dict(W=STACK_CELL.W[:, :, :2].copy())), 2), "layer 1 direction 0 W",
         ("wrong input width", "4 (2 direction(s) x 2 outputs of the layer below)", "2")),
        (lambda: LayerParams(_cells(k1=dict(W=np.zeros((4, 4, 2)))), 2), "layer 0 direction 1 W", ("wrong input width", "3")),
        (lambda: LayerParams(_cells(k3={"p": None}), 2), "layer 1 direction 1", ("wrong variant", "peephole", "standard")),
        (lambda: LayerParams(_cells(k1={"W_hr": None, "U": np.zeros((4, 4, 4))}), 2), "layer 0 direction 1",
         ("wrong projection size", "2", "None")),
        (lambda: LayerParams(STACK.params.cells[:2] + tuple(c.astype(np.float32) for c in STACK.params.cells[2:]), 2),
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
        (dict(W_hr=STACK_CELL.W_hr.astype(np.float32)), "W_hr", ("wrong dtype", "float64", "float32")),
    ],
    ids=lambda v: None if isinstance(v, (dict, tuple)) else v,
)
def test_projected_params_reject(tensors, tensor, fragments):
    with expect_error(tensor, *fragments):
        LSTMParams(**{**STACK_CELL.tensors(), **tensors})


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
    d = one_cell(make_case_data(case_by_name("small")))  # T=4, B=3
    with expect_error(tensor, *fragments):
        lstm.forward(d.params, d.x, d.h0, d.c0, **kwargs)


@pytest.mark.parametrize(
    "name, bad, fragments",
    [
        ("dy", STACK.dy[:, :, :2].copy(), ("wrong shape", "(5, 4, 4)", "(5, 4, 2)")),
        ("dh_T", STACK.dh_T[:2].copy(), ("wrong shape", "(4, 4, 2)")),
        ("dc_T", STACK.dc_T.astype(np.float32), ("wrong dtype",)),
    ],
)
def test_layer_backward_rejects(name, bad, fragments):
    fwd = STACK.forward()
    cotangents = {**STACK.cotangents(), name: bad}
    with expect_error(name, *fragments):
        layer.backward(fwd, **cotangents)


def test_layer_backward_needs_a_layer_forward_result():
    d = one_cell(make_case_data(case_by_name("small")))
    with expect_error("fwd", "wrong type", "LayerForward"):
        layer.backward(lstm.forward(d.params, d.x, d.h0, d.c0), STACK.dy, STACK.dh_T, STACK.dc_T)


# ---------------------------------------------------------------------------
# What the cell and the layer share: errors carry their parts, inputs stay unmodified, float32 only when asked.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, parts",
    [
        (lambda: forward(D.params, D.x, D.h0[:2].copy(), D.c0), ("h0", "wrong shape", "(3, 4)", "(2, 4)")),
        (lambda: STACK.forward(lengths=np.array([5, 2, 9, 4])),
         ("lengths", "out of range", "integers in 0 .. T = 5", "9 at batch row 2")),
    ],
    ids=["cell", "layer"],
)
def test_errors_are_value_errors_carrying_what_was_expected_and_found(call, parts):
    with pytest.raises(ValueError) as info:
        call()
    error = info.value
    assert isinstance(error, LSTMInputError)
    assert (error.tensor, error.problem, error.expected, error.actual) == parts


@pytest.mark.parametrize(
    "given, run",
    [
        (lambda: {**D.inputs(), **D.params.tensors(), **D.cotangents()},
         lambda: backward(forward(D.params, D.x, D.h0, D.c0), **D.cotangents())),
        (lambda: {**STACK.inputs(), **STACK.params.tensors(), **STACK.cotangents(), "lengths": STACK.lengths},
         lambda: layer.backward(STACK.forward(), STACK.dy, STACK.dh_T, STACK.dc_T)),
    ],
    ids=["cell", "layer"],
)
def test_inputs_are_not_modified(given, run):
    before = {k: v.copy() for k, v in given().items()}
    run()
    changed = [k for k, v in given().items() if not np.array_equal(before[k], v)]
    assert not changed, f"modified: {changed}"


def test_float32_is_computed_only_when_asked_for_by_the_cell():
    d32 = one_cell(make_case_data(case_by_name("small-peephole"), np.float32))
    with expect_error("params", "expected float64", "got float32"):
        forward(d32.params, d32.x, d32.h0, d32.c0)
    fwd = forward(d32.params, d32.x, d32.h0, d32.c0, dtype=np.float32)
    assert fwd.dtype == np.float32 and fwd.h_seq.dtype == np.float32


def test_float32_is_computed_only_when_asked_for_by_the_layer():
    d32 = make_case_data(STACK.case, np.float32)
    with expect_error("params", "expected float64", "got float32"):
        d32.forward(dtype=np.float64)
    fwd = d32.forward()  # CaseData.forward asks for the data's own dtype
    assert fwd.dtype == np.float32 and fwd.y.dtype == np.float32 and fwd.h_T.dtype == np.float32
