"""The known-bug model and the diagnoses built on it."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import known_bugs
from conformance.diagnose import diagnose_gradients, diagnose_outputs
from spec import lstm
from spec.cases import case_by_name, make_case_data
from spec.params import LSTMParams

DATA = make_case_data(case_by_name("forget-bias-peephole"))


def spec_run(params=DATA.params, forget_bias=DATA.forget_bias, cotangents=None):
    fwd = lstm.forward(params, DATA.x, DATA.h0, DATA.c0, forget_bias=forget_bias)
    grads = lstm.backward(fwd, *(cotangents or (DATA.dh_seq, DATA.dh_T, DATA.dc_T)))
    return {"h_seq": fwd.h_seq, "h_T": fwd.h_T, "c_T": fwd.c_T}, grads.tensors()


def test_the_model_without_bugs_is_the_spec():
    outputs, grads = spec_run()
    h_seq, h_T, c_T, _ = known_bugs.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.forget_bias)
    np.testing.assert_allclose(h_seq, outputs["h_seq"], rtol=0, atol=1e-14)
    model = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias)
    assert model.keys() == grads.keys()
    for name in grads:
        np.testing.assert_allclose(model[name], grads[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("bug", sorted(set(known_bugs.BUGS) - {"cell_clip"}))
def test_every_bug_changes_something(bug):
    clean = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias)
    buggy = known_bugs.backward(DATA.params, DATA.x, DATA.h0, DATA.c0, DATA.dh_seq, DATA.dh_T, DATA.dc_T, DATA.forget_bias, frozenset([bug]))
    assert max(np.max(np.abs(buggy[k] - clean[k])) for k in clean) > 1e-3


def test_unknown_bugs_are_refused():
    with pytest.raises(ValueError, match="unknown bugs"):
        known_bugs.forward(DATA.params, DATA.x, DATA.h0, DATA.c0, 0.0, frozenset({"typo"}))


def test_a_correct_result_has_no_diagnosis():
    outputs, grads = spec_run()
    assert diagnose_outputs(DATA, outputs, "float64") == []
    assert diagnose_gradients(DATA, grads, grads, "float64") == []


def test_a_permuted_result_is_recognised_by_name():
    p = DATA.params
    order = [0, 2, 1, 3]  # i, g, f, o: TensorFlow BlockLSTM's column order
    outputs, _ = spec_run(LSTMParams(p.W[order], p.U[order], p.b[order], p.p))
    assert "matches the spec if gates f and g are swapped" in diagnose_outputs(DATA, outputs, "float64")
    cyclic = [0, 3, 1, 2]  # ONNX's i, o, f, c read as i, f, g, o
    outputs, _ = spec_run(LSTMParams(p.W[cyclic], p.U[cyclic], p.b[cyclic], p.p))
    assert any("ONNX's order" in d for d in diagnose_outputs(DATA, outputs, "float64"))


def test_an_ignored_cotangent_is_recognised():
    _, expected = spec_run()
    _, got = spec_run(cotangents=(DATA.dh_seq, np.zeros_like(DATA.dh_T), DATA.dc_T))
    assert "matches the spec if the cotangent of h_T (dh_T) is ignored" in diagnose_gradients(DATA, got, expected, "float64")
