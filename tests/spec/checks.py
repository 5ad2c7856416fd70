"""The checks that prove the spec right, as plain functions.

The tests call them on the real spec; the meta-tests (test_mutants.py, test_layer_mutants.py) call the same
functions on deliberately broken specs and require them to fail. They reach the spec through ``spec.lstm`` and
``spec.layer`` at call time, so a mutant patched into either module is what they check.

Every check takes a case's data (:class:`spec.cases.CaseData`). The cell's checks prove ``spec.lstm`` itself, not
through the layer: they take a cell case (:func:`spec.cases.is_cell`) and run its one cell (:func:`one_cell`).
The layer's checks take the data as it is.

Tolerances here are for proving the float64 spec, and each says why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from backends.layouts import onnx as onnx_layout
from backends.runtimes import onnx as onnx_graphs
from contract.compare import assert_close
from contract.vocabulary import Device
from spec import layer, lstm
from spec.cases import Case, CaseData, is_cell, rng_for
from spec.params import LayerParams, LSTMParams

# Central differences with step EPS: truncation error EPS^2/6 * |L'''| (below 1e-9 even for
# the saturating case, whose weights are 30x larger) plus rounding error
# ~1e-16 * |L| / EPS (~1e-9 here). Both are far below these tolerances; every
# mutant the meta-tests plant moves a gradient by more than 1e-3.
FD_EPS = 1e-6
FD_ATOL = 1e-7
FD_RTOL = 1e-6


def assert_caught_as_documented(check: str, mutant: str, run, must_catch: bool) -> None:
    """A meta-test's verdict: ``run`` (a check, on a spec with the bug ``mutant`` planted) must fail, saying what
    it compared, when the CATCHES table says ``check`` catches ``mutant``, and must pass when it says it is blind."""
    try:
        run()
        caught, message = False, ""
    except AssertionError as failure:
        caught, message = True, str(failure)
    if must_catch:
        assert caught, f"check {check!r} passed a spec with the bug {mutant!r}"
        assert message, f"check {check!r} caught {mutant!r} without saying what it compared"
    else:
        assert not caught, f"check {check!r} is documented as blind to {mutant!r} but caught it: {message[:300]}"


def property_on_cases(strategy, body, cases):
    """A hypothesis property as a meta-test's check: ``body`` run on exactly ``cases`` (explicit examples,
    in order, nothing drawn). Not on hypothesis' own draws: they depend on which modules the process has
    imported (hypothesis mines their source for constants), so under pytest-xdist a mutant was caught in one
    worker and missed in another. A case outside the property's assumptions is passed over; none inside
    them is an error, not a pass."""
    from hypothesis import Phase, example, given, settings

    def run():
        ran = []

        def counted(case):
            body(case)  # a case outside the property's assumptions stops here, and is not counted
            ran.append(case)

        test = given(strategy)(counted)
        for case in reversed(cases):  # the last @example applied runs first
            test = example(case)(test)
        settings(phases=(Phase.explicit,), database=None, deadline=None)(test)()
        if not ran:
            raise RuntimeError(f"{getattr(body, '__name__', body)}: none of the {len(cases)} cases meets its assumptions")

    return run

# Directional check: one scalar, relative to the size of the terms.
DIRECTIONAL_RTOL = 1e-6

# Two float64 implementations of the same equations, with a different order of
# operations: each rounding is 1.1e-16 and the LSTM's state is contractive,
# so errors stay near 1e-15 even over 512 steps (measured: 4e-16).
ONNX_REFERENCE_ATOL = 1e-12
ONNX_REFERENCE_RTOL = 1e-12

# onnx's node cases carry outputs that its own reference computed in float32:
# we compute in float64, so the difference is their rounding, a few float32
# ulps on values below 1 (float32 eps = 1.19e-7).
ONNX_NODE_CASE_ATOL = 8 * float(np.finfo(np.float32).eps)
ONNX_NODE_CASE_RTOL = 8 * float(np.finfo(np.float32).eps)

GRADIENT_NAMES = ("x", "h0", "c0", "W", "U", "b", "p")


@dataclass(frozen=True, eq=False)
class CellData:
    """A cell case's data as :mod:`spec.lstm` takes it: the one cell's weights, the states and the final-state
    cotangents without the layer's axis of cells, the outputs' cotangent as ``dh_seq``, the case's forget bias."""

    case: Case
    params: LSTMParams
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    dh_seq: np.ndarray  # (T, B, H)
    dh_T: np.ndarray  # (B, H)
    dc_T: np.ndarray  # (B, H)
    forget_bias: float

    def inputs(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0}

    def cotangents(self) -> dict[str, np.ndarray]:
        return {"dh_seq": self.dh_seq, "dh_T": self.dh_T, "dc_T": self.dc_T}


def one_cell(data: CaseData) -> CellData:
    """The one cell of a cell case's data, for the proofs of :mod:`spec.lstm` (the one place that slices it).

    Refuses any other case: its lengths, mask, clips or further cells would be dropped without a word, and a check
    would pass on a problem other than the case's."""
    if not is_cell(data.case):
        raise ValueError(f"case {data.case.name!r} is not a cell case (one forward layer, no projection, clips, coupled "
                         f"gates, lengths or mask): the cell's checks take only those")
    return CellData(case=data.case, params=data.params.cells[0], x=data.x, h0=data.h0[0], c0=data.c0[0], dh_seq=data.dy,
                    dh_T=data.dh_T[0], dc_T=data.dc_T[0], forget_bias=data.case.layer.forget_bias)


def run_spec(data: CaseData):
    """Forward and backward of the (possibly patched) cell spec, spec.lstm, on a cell case's data."""
    cell = one_cell(data)
    fwd = lstm.forward(cell.params, cell.x, cell.h0, cell.c0, forget_bias=cell.forget_bias, dtype=cell.x.dtype)
    grads = lstm.backward(fwd, cell.dh_seq, cell.dh_T, cell.dc_T)
    return fwd, grads


def _arguments(cell: CellData) -> dict[str, np.ndarray]:
    return {**cell.inputs(), **cell.params.tensors()}


def _loss(cell: CellData, arguments: dict[str, np.ndarray]) -> float:
    params = LSTMParams(**{k: arguments[k] for k in cell.params.tensors()})
    fwd = lstm.forward(params, arguments["x"], arguments["h0"], arguments["c0"], forget_bias=cell.forget_bias)
    return lstm.loss(fwd, cell.dh_seq, cell.dh_T, cell.dc_T)


def finite_difference_gradients(data: CaseData, eps: float = FD_EPS) -> dict[str, np.ndarray]:
    """dL/dθ of the cell for every element of every input and parameter, by central differences."""
    cell = one_cell(data)
    arguments = _arguments(cell)
    gradients = {}
    for name, value in arguments.items():
        gradient = np.empty_like(value)
        for index in np.ndindex(value.shape):
            shifted = dict(arguments)
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            shifted[name] = plus
            up = _loss(cell, shifted)
            shifted[name] = minus
            gradient[index] = (up - _loss(cell, shifted)) / (2 * eps)
        gradients[name] = gradient
    return gradients


def check_gradients_by_finite_differences(data: CaseData) -> None:
    """Every element of every gradient of the cell (spec.lstm) against central differences."""
    _, grads = run_spec(data)
    numeric = finite_difference_gradients(data)
    analytic = grads.tensors()
    assert sorted(analytic) == sorted(numeric), f"gradients returned for {sorted(analytic)}, expected {sorted(numeric)}"
    for name in GRADIENT_NAMES:
        if name in numeric:
            assert_close(f"grad {name}", analytic[name], numeric[name], atol=FD_ATOL, rtol=FD_RTOL, context=data.case.name)


def check_directional_derivative(data: CaseData, directions: int = 2) -> None:
    """<v, J^T u> from the cell's backward() against the central difference of <u, F(θ + εv)> along random v."""
    _, grads = run_spec(data)
    cell = one_cell(data)
    _check_along_directions(data.case.name, "backward()", grads.tensors(), _arguments(cell), lambda a: _loss(cell, a),
                            lambda label: rng_for(data.case, label), directions)


def _check_along_directions(case_name, source, analytic, arguments, loss, rng, directions) -> None:
    """The directional-derivative check itself: ``loss`` of the ``arguments`` moved by ±FD_EPS v, for
    ``directions`` random v drawn from ``rng(label)``, against <v, ``analytic``> from ``source``."""
    for k in range(directions):
        v = {name: rng(f"direction {k} {name}").normal(size=value.shape) for name, value in arguments.items()}
        lhs_terms = [float(np.vdot(v[name], analytic[name])) for name in arguments]
        lhs = sum(lhs_terms)
        plus = {name: value + FD_EPS * v[name] for name, value in arguments.items()}
        minus = {name: value - FD_EPS * v[name] for name, value in arguments.items()}
        rhs = (loss(plus) - loss(minus)) / (2 * FD_EPS)
        scale = sum(abs(t) for t in lhs_terms) + 1.0
        error = abs(lhs - rhs)
        assert error <= DIRECTIONAL_RTOL * scale, (
            f"{case_name}: directional derivative along random direction {k}: "
            f"<v, J^T u> = {lhs:.12g} from {source}, finite difference {rhs:.12g}; "
            f"error {error:.3g} > tolerance {DIRECTIONAL_RTOL * scale:.3g} "
            f"(rtol {DIRECTIONAL_RTOL:g} x the sum of |terms| + 1)"
        )


def onnx_reference_run(params: LayerParams, config: layer.LayerConfig, x, h0, c0) -> dict[str, np.ndarray]:
    """onnx.reference's LSTM operator on ``params`` (the project's graph of one LSTM node per layer,
    backends/runtimes/onnx.py, the weights in ONNX's layout, backends/layouts/onnx.py): y, h_T and c_T in the spec's
    shapes. No lengths: onnx.reference ignores sequence_lens (test_layer_semantics.py)."""
    model = onnx_graphs.layer_model(params.input_size, params.hidden_size, config, params.dtype, lengths=False,
                                    weight_name=onnx_layout.weight_name)
    runtime = onnx_graphs.ONNX_REFERENCE
    session = runtime.session(model, Device.CPU)
    feeds = onnx_graphs.layer_feeds(onnx_layout.LSTM_NODES.to_native(params, config), x, h0, c0, None)
    y, h_T, c_T = onnx_graphs.layer_outputs(runtime.run(session.run, None, feeds))
    return {"y": y, "h_T": h_T, "c_T": c_T}


def check_against_onnx_reference(data: CaseData) -> None:
    """The cell's forward outputs against onnx.reference's LSTM on the same weights (converted to ONNX's layout)."""
    fwd, _ = run_spec(data)
    cell = one_cell(data)
    config = layer.LayerConfig(peephole=cell.params.peephole, forget_bias=cell.forget_bias)
    reference = onnx_reference_run(LayerParams((cell.params,)), config, cell.x, cell.h0[None], cell.c0[None])
    for name, got, expected in (("h_seq", fwd.h_seq, reference["y"]), ("h_T", fwd.h_T, reference["h_T"][0]),
                                ("c_T", fwd.c_T, reference["c_T"][0])):
        assert_close(
            name, got, expected, atol=ONNX_REFERENCE_ATOL, rtol=ONNX_REFERENCE_RTOL, context=f"{data.case.name} vs onnx.reference"
        )


# ---------------------------------------------------------------------------
# onnx's own backend test cases for the LSTM operator.
# ---------------------------------------------------------------------------

#: The attributes of the ONNX LSTM that this spec does not model, and why. (Directions, sequence_lens, clip
#: and input_forget are spec.layer's: reverse and bidirectional, lengths, gate_clip, coupled_input_forget.)
_UNMODELLED_ATTRIBUTES = {
    "activations": "custom activation functions: the spec is the LSTM with sigmoid and tanh",
    "activation_alpha": "custom activation functions: the spec is the LSTM with sigmoid and tanh",
    "activation_beta": "custom activation functions: the spec is the LSTM with sigmoid and tanh",
}


def onnx_case_attributes(testcase) -> dict[str, object]:
    from onnx import helper

    (node,) = testcase.model.graph.node
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def onnx_case_scope(testcase) -> str | None:
    """None when the spec models everything the case uses; otherwise why it is out of scope."""
    attributes = onnx_case_attributes(testcase)
    for attribute, reason in _UNMODELLED_ATTRIBUTES.items():
        if attribute in attributes:
            return f"{attribute}: {reason}"
    return None


def _onnx_case_feeds(testcase) -> dict[str, np.ndarray]:
    names = [i.name for i in testcase.model.graph.input]
    ((inputs, _outputs),) = testcase.data_sets
    return {name: value for name, value in zip(names, inputs) if value is not None and value.size}


def check_onnx_node_case(testcase) -> None:
    """Run the spec (the layer, one ONNX node being one layer) in float64 on an in-scope onnx node case and
    compare with its stored outputs."""
    attributes = onnx_case_attributes(testcase)
    batchwise = bool(attributes.get("layout", 0))
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    feeds = _onnx_case_feeds(testcase)
    as64 = {name: value.astype(np.float64) for name, value in feeds.items() if value.dtype.kind == "f"}
    D = as64["W"].shape[0]
    cells = tuple(
        onnx_layout.from_onnx(*(as64[name][d : d + 1] if name in as64 else None for name in ("W", "R", "B", "P")))
        for d in range(D)
    )
    params = LayerParams(cells, D)
    H = params.hidden_size
    x = as64["X"].swapaxes(0, 1) if batchwise else as64["X"]
    T, B = x.shape[:2]

    def state(name):  # ONNX: (D, B, H), or (B, D, H) in layout 1
        if name not in as64:
            return np.zeros((D, B, H))
        return as64[name].swapaxes(0, 1) if batchwise else as64[name]

    config = layer.LayerConfig(direction=direction, peephole=params.peephole, gate_clip=attributes.get("clip"),
                               coupled_input_forget=bool(attributes.get("input_forget", 0)))
    lengths = feeds.get("sequence_lens")
    fwd = layer.forward(params, np.ascontiguousarray(x), np.ascontiguousarray(state("initial_h")), np.ascontiguousarray(state("initial_c")),
                        config=config, lengths=None if lengths is None else lengths.astype(np.int64))
    # ONNX shapes in layout 0: Y (T, D, B, H), Y_h and Y_c (D, B, H).
    ours = {"Y": fwd.y.reshape(T, B, D, H).transpose(0, 2, 1, 3), "Y_h": fwd.h_T, "Y_c": fwd.c_T}
    output_names = [o.name for o in testcase.model.graph.output]
    ((_inputs, outputs),) = testcase.data_sets
    (node,) = testcase.model.graph.node
    # Graph outputs map to node outputs by name; the node's positions say which is Y, Y_h, Y_c.
    role = {name: ("Y", "Y_h", "Y_c")[k] for k, name in enumerate(node.output) if name}
    assert output_names, f"{testcase.name}: no outputs to compare"
    for name, expected in zip(output_names, outputs):
        if batchwise:  # layout 1 is Y (B, T, 1, H), Y_h and Y_c (B, 1, H): back to layout 0
            expected = expected.transpose(1, 2, 0, 3) if role[name] == "Y" else expected.transpose(1, 0, 2)
        assert_close(
            role[name],
            ours[role[name]],
            expected,
            atol=ONNX_NODE_CASE_ATOL,
            rtol=ONNX_NODE_CASE_RTOL,
            context=f"onnx node case {testcase.name}",
        )


_ONNX_CASES = None


def onnx_lstm_node_cases() -> dict[str, object]:
    """onnx's LSTM node cases, regenerated from its case definitions (the wheel has no data files)."""
    global _ONNX_CASES
    if _ONNX_CASES is None:
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings():
            # Generating the cases runs every operator's definitions, some of which overflow on purpose.
            warnings.simplefilter("ignore", RuntimeWarning)
            _ONNX_CASES = {case.name: case for case in collect_testcases(op_type="LSTM")}
    return _ONNX_CASES


# ---------------------------------------------------------------------------
# The layer (spec.layer): the same proofs over every layer, direction and feature.
# They reach the spec through ``spec.layer`` and ``spec.lstm`` at call time, so
# the meta-tests (test_layer_mutants.py) can plant bugs in either.
# ---------------------------------------------------------------------------


def run_layer(data: CaseData):
    """Forward and backward of the (possibly patched) layer spec on a case's data."""
    fwd = data.forward()
    grads = layer.backward(fwd, data.dy, data.dh_T, data.dc_T)
    return fwd, grads


def _layer_arguments(data: CaseData) -> dict[str, np.ndarray]:
    return {**data.inputs(), **data.params.tensors()}


def _layer_loss(data: CaseData, arguments: dict[str, np.ndarray]) -> float:
    params = data.params.with_tensors(arguments)
    fwd = data.forward(params=params, x=arguments["x"], h0=arguments["h0"], c0=arguments["c0"])
    return layer.loss(fwd, data.dy, data.dh_T, data.dc_T)


def check_layer_gradients_by_finite_differences(data: CaseData) -> None:
    """Every element of every gradient of the layer (x, h0, c0, each cell's W, U, b, p, W_hr) against central differences."""
    _, grads = run_layer(data)
    analytic = grads.tensors()
    arguments = _layer_arguments(data)
    assert sorted(analytic) == sorted(arguments), f"gradients returned for {sorted(analytic)}, expected {sorted(arguments)}"
    for name, value in arguments.items():
        numeric = np.empty_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += FD_EPS
            minus[index] -= FD_EPS
            numeric[index] = (_layer_loss(data, {**arguments, name: plus}) - _layer_loss(data, {**arguments, name: minus})) / (2 * FD_EPS)
        # One tensor at a time: a wrong gradient fails before the rest are differenced.
        assert_close(f"grad {name}", analytic[name], numeric, atol=FD_ATOL, rtol=FD_RTOL, context=data.case.name)


def check_layer_directional_derivative(data: CaseData, directions: int = 2) -> None:
    """<v, J^T u> from layer.backward() against the central difference of <u, F(θ + εv)> along random v."""
    _, grads = run_layer(data)
    _check_along_directions(data.case.name, "layer.backward()", grads.tensors(), _layer_arguments(data),
                            lambda a: _layer_loss(data, a), lambda label: rng_for(data.case, label), directions)


def clip_passed(fwd) -> dict[tuple[int, str], np.ndarray]:
    """Every clip's [|a| <= theta] booleans, cell by cell, at the steps that ran (masked rows left out)."""
    found = {}
    for k, run in enumerate(fwd.cells):
        for name in ("gate_passed", "cell_passed", "proj_passed"):
            passed = getattr(run, name)
            if passed is None:
                continue
            if name == "gate_passed" and run.options.coupled_input_forget:
                passed = passed[[0, 2, 3]]  # f = 1 - i has no pre-activation of its own
            if run.mask is not None:
                passed = passed[:, run.mask] if name == "gate_passed" else passed[run.mask]
            found[(k, name)] = passed
    return found


#: The smallest standard deviation of a normalized pre-activation (1n) at which finite differences hold: n_k =
#: (a - mean a) / sqrt(var a + 1e-8) bends sharply where the deviation nears sqrt(1e-8) = 1e-4 (its third derivative
#: grows as 1e-8 / sigma^5), so a step of 1e-6 there errs by more than the checks' tolerance (seen: sigma 1.25e-4,
#: a directional derivative off by 1.03x its tolerance); at 3e-3 that error is below 1e-7 of it.
NORM_SIGMA_MARGIN = 3e-3


def norm_margin_holds(data: CaseData, sigma: float = NORM_SIGMA_MARGIN) -> bool:
    """Every gate's normalization (1n)-(5n), at every step and row that ran, has a standard deviation of at least
    ``sigma``, or none at all (H = 1: a - mean a is 0 whatever the parameters, and so is its derivative)."""
    if not data.layer.layer_norm or data.case.H == 1:
        return True
    for run in data.forward().cells:
        rstd = run.ln_rstd[[0, 2, 3]] if run.options.coupled_input_forget else run.ln_rstd  # f = 1 - i: no normalization
        if run.mask is not None:
            rstd = rstd[:, run.mask]
        if rstd.size and float(rstd.max()) > 1.0 / sigma:
            return False
    return True


def clip_margin_holds(data: CaseData, relative: float = 1e-3) -> bool:
    """No clipped quantity lies within ``relative`` of its threshold: moving every threshold by that
    fraction either way clips exactly the same elements. Finite differences (steps of 1e-6) and float32
    rounding (1e-7 relative) then never cross a clip's boundary."""
    config = data.layer
    thresholds = {name: getattr(config, name) for name in ("gate_clip", "cell_clip", "proj_clip") if getattr(config, name)}
    if not thresholds:
        return True
    base = clip_passed(data.forward())
    for factor in (1 - relative, 1 + relative):
        moved = replace(config, **{name: value * factor for name, value in thresholds.items()})
        other = clip_passed(data.forward(config=moved))
        if any(not np.array_equal(other[key], base[key]) for key in base):
            return False
    return True
