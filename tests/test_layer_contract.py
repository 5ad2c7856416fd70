"""The layer's side of the contract (backends/base.py): what an implementation declares, the inputs it may be
given, the answers it may give, and a layer row in its own process."""

from __future__ import annotations

import numpy as np
import pytest

from backends.base import Config, Implementation, NotSupported, ResultError
from backends.config import LAYER_FEATURES, layer_features
from spec import layer
from spec.layer_cases import layer_case_by_name, make_layer_case_data
from spec.validation import LSTMInputError
from tests.suite import plugin


class SpecLayer(Implementation):
    """The spec itself behind the contract (a stand-in for an implementation whose answers can be bent)."""

    bend = staticmethod(lambda answer: answer)

    def _forward_layer(self, params, x, h0, c0, *, layer: layer.LayerConfig, lengths, mask, config):
        fwd = layer_forward(params, x, h0, c0, layer, lengths, mask)
        return self.bend((fwd.y, fwd.h_T, fwd.c_T))

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config):
        fwd = layer_forward(params, x, h0, c0, layer, lengths, mask)
        return self.bend(spec_layer_backward(fwd, cotangents))


def layer_forward(params, x, h0, c0, config, lengths, mask):
    return layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)


def spec_layer_backward(fwd, cotangents):
    return layer.backward(fwd, cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"]).tensors()


def case(name="lstmp-stack", dtype="float64"):
    data = make_layer_case_data(layer_case_by_name(name), dtype)
    run = Config("peephole" if data.config.peephole else "standard", dtype)
    return data, run


def forward(impl, data, run, **changes):
    arguments = dict(x=data.x, h0=data.h0, c0=data.c0, lengths=data.lengths, mask=data.mask)
    arguments.update(changes)
    return impl.forward_layer(data.params, layer=data.config, config=run, **arguments)


def test_features_are_read_off_the_configuration_and_inputs():
    data, _ = case("lstmp-stack")
    assert layer_features(data.config, data.lengths, data.mask) == ("stacked", "bidirectional", "projection", "lengths", "empty_sequences")
    data, _ = case("mask-previous")
    assert layer_features(data.config, data.lengths, data.mask) == ("bidirectional", "mask", "mask_previous_output")


def test_a_cell_only_implementation_and_an_undeclared_feature_are_not_supported():
    data, run = case("lstmp-stack")
    with pytest.raises(NotSupported, match="implements the LSTM cell, not the layer API"):
        SpecLayer(id="cell-only").check_layer(run, data.config, data.lengths, data.mask)
    no_empty = SpecLayer(id="no-empty", layer_features=("stacked", "bidirectional", "projection", "lengths"),
                         unsupported_reasons={"empty_sequences": "PyTorch refuses sequences of length 0"})
    with pytest.raises(NotSupported, match="PyTorch refuses sequences of length 0"):
        forward(no_empty, data, run)
    with pytest.raises(NotSupported, match="does not support sequence lengths of 0"):
        SpecLayer(id="x", layer_features=("stacked", "bidirectional", "projection", "lengths")).check_layer(
            run, data.config, data.lengths, data.mask)


ALL = SpecLayer(id="spec-layer", layer_features=tuple(LAYER_FEATURES))


@pytest.mark.parametrize("changes, tensor, problem", [
    (lambda d: {"h0": d.h0[:1]}, "h0", "wrong shape"),
    (lambda d: {"lengths": np.array([5, 2, 9, 4])}, "lengths", "out of range"),
    (lambda d: {"lengths": d.lengths.astype(np.float64)}, "lengths", "wrong dtype"),
    (lambda d: {"lengths": None, "mask": np.ones(d.x.shape[:2])}, "mask", "wrong dtype"),
    (lambda d: {"x": np.where(np.arange(d.x.size).reshape(d.x.shape) == 7, np.nan, d.x)}, "x", "non-finite value"),
], ids=["h0-shape", "lengths-range", "lengths-dtype", "mask-dtype", "x-nan"])
def test_bad_layer_inputs_never_reach_the_hook(changes, tensor, problem):
    data, run = case("lstmp-stack")
    with pytest.raises(LSTMInputError) as info:
        forward(ALL, data, run, **changes(data))
    assert info.value.tensor == tensor and info.value.problem == problem


def test_a_layer_answer_outside_the_contract_is_a_result_error():
    data, run = case("lstmp-stack", "float32")
    bent = SpecLayer(id="bent", layer_features=ALL.layer_features)
    bent.bend = staticmethod(lambda answer: (answer[0][..., :2], answer[1], answer[2]) if isinstance(answer, tuple) else answer)
    with pytest.raises(ResultError, match=r"y: wrong shape: expected \(5, 4, 4\), got \(5, 4, 2\)"):
        forward(bent, data, run)
    bent.bend = staticmethod(lambda answer: {k: v for k, v in answer.items() if k != "layer 1 direction 1 W_hr"} if isinstance(answer, dict) else answer)
    with pytest.raises(ResultError, match="gradient layer 1 direction 1 W_hr: missing"):
        bent.backward_layer(data.params, data.x, data.h0, data.c0, data.cotangents(), layer=data.config,
                            lengths=data.lengths, mask=data.mask, config=run)


def test_a_layer_row_in_its_own_process(tmp_path):
    path = plugin(tmp_path, "own_layer", '''
        import os
        from tests.test_layer_contract import SpecLayer
        from backends.config import LAYER_FEATURES

        class Here(SpecLayer):
            def _availability(self, device):
                return None if os.environ.get("LSTMC_TEST_PROCESS") == "layer" else "not in its own process"

        IMPLEMENTATION = Here(id="odd/layer-process", layer_features=tuple(LAYER_FEATURES),
                              process_environment={"LSTMC_TEST_PROCESS": "layer"})
    ''')
    from backends.plugin import load_backend

    (row,) = load_backend(path)
    data, run = case("lstmp-stack")
    expected = layer.forward(data.params, data.x, data.h0, data.c0, config=data.config, lengths=data.lengths)
    outputs = forward(row, data, run)
    assert np.array_equal(outputs.y, expected.y) and np.array_equal(outputs.c_T, expected.c_T)
    grads = row.backward_layer(data.params, data.x, data.h0, data.c0, data.cotangents(), layer=data.config,
                               lengths=data.lengths, config=run)
    assert np.array_equal(grads["layer 1 direction 1 W_hr"], layer.backward(expected, data.dy, data.dh_T, data.dc_T).params.cells[3].W_hr)


def test_a_row_in_its_own_process_sees_one_params_object_per_parameter_set(tmp_path):
    """Rows cache converted weights, models and sessions per params object: in a child process the same
    parameter set must arrive as the same object (a child that rebuilt them on every call had the benchmarks
    time tf2onnx's conversion), and a changed one as a new object."""
    path = plugin(tmp_path, "counting", '''
        import os
        from backends.base import NativeCache
        from tests.test_layer_contract import SpecLayer
        from backends.config import LAYER_FEATURES

        CONVERSIONS = NativeCache()
        BUILT = []

        class Counting(SpecLayer):
            def _availability(self, device):
                return None if os.environ.get("LSTMC_TEST_PROCESS") == "counting" else "not in its own process"

            def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config):
                CONVERSIONS.get(params, (), lambda: BUILT.append(1))
                y, h_T, c_T = super()._forward_layer(params, x, h0, c0, layer=layer, lengths=lengths, mask=mask, config=config)
                h_T = h_T.copy()
                h_T.flat[0] = len(BUILT)  # how many conversions this child has made, read by the test
                return y, h_T, c_T

        IMPLEMENTATION = Counting(id="odd/counting", layer_features=tuple(LAYER_FEATURES),
                                  process_environment={"LSTMC_TEST_PROCESS": "counting"})
    ''')
    from backends.plugin import load_backend
    from spec.params import LayerParams

    (row,) = load_backend(path)
    data, run = case("lstmp-stack")
    built = [forward(row, data, run).h_T.flat[0] for _ in range(3)]
    assert built == [1, 1, 1]
    other = LayerParams(tuple(c.astype(np.float64) for c in data.params.cells), data.params.num_directions)
    again = row.forward_layer(other, data.x, data.h0, data.c0, layer=data.config, lengths=data.lengths, config=run)
    assert again.h_T.flat[0] == 2


def test_a_known_failure_narrowed_to_a_feature_is_known_there_and_nowhere_else(tmp_path):
    """As ONNX Runtime does: rows of length 0 get zeros as their final state. Declared as a known
    non-conformance of the cases with empty sequences only: those are "known", every other case must pass, and
    a declaration that no case needs (a strict xfail that passes) fails the run."""
    from tests.suite import run_suite

    source = '''
        import numpy as np
        from backends.base import KnownFailure
        from backends.config import LAYER_FEATURES
        from tests.test_layer_contract import SpecLayer

        class ZeroesEmptyRows(SpecLayer):
            def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config):
                y, h_T, c_T = super()._forward_layer(params, x, h0, c0, layer=layer, lengths=lengths, mask=mask, config=config)
                if lengths is not None:
                    h_T, c_T = h_T.copy(), c_T.copy()
                    h_T[:, lengths == 0] = 0.0
                    c_T[:, lengths == 0] = 0.0
                return y, h_T, c_T

        REASON = "zeros as the final state of empty rows (as ONNX Runtime)"
        IMPLEMENTATIONS = [
            ZeroesEmptyRows(id="odd/zeroes-empty-rows", layer_features=tuple(LAYER_FEATURES), gradients=False,
                            known_failures=(KnownFailure("layer outputs", REASON, features=("empty_sequences",)),)),
            ZeroesEmptyRows(id="odd/declares-too-much", layer_features=tuple(LAYER_FEATURES), gradients=False,
                            known_failures=(KnownFailure("layer outputs", REASON, features=("bidirectional",)),)),
        ]
    '''
    run = run_suite(tmp_path, "--backend", plugin(tmp_path, "zeroes", source), "--dtype", "float64", "-k", "test_layer_forward")
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("odd/zeroes-empty-rows")}
    assert {name for name, r in by_case.items() if r["status"] == "known"} == {"lengths", "lstmp-stack", "medium"}
    assert all(r["status"] == "pass" for name, r in by_case.items() if name not in ("lengths", "lstmp-stack", "medium"))
    assert run.cell("odd/zeroes-empty-rows", "float64 cpu layer outputs")["status"] == "known"
    too_much = {r["case"]: r for r in run.results("odd/declares-too-much")}
    assert too_much["bidirectional"]["status"] == "FAIL" and "known non-conformance passed" in too_much["bidirectional"]["detail"]
