"""The contract (contract/row.py): what a row declares and how it is refused, the inputs it may be given, the
answers it may give, the parameters built once per value, and a row in its own process."""

from __future__ import annotations

import numpy as np
import pytest

from contract.answers import Cotangents, Gradients
from contract.errors import NotSupported, ResultError
from contract.layout import CANONICAL, Layout
from contract.loading import load_rows
from contract.row import KnownFailure, Row
from contract.vocabulary import Feature, Kind, features_of
from spec import layer
from spec.cases import case_by_name, make_case_data
from spec.params import LayerParams
from spec.validation import LSTMInputError
from tests.suite import plugin, run_suite


class SpecRow(Row):
    """The spec itself behind the contract (a stand-in for an implementation whose answers can be bent)."""

    bend = staticmethod(lambda answer: answer)

    def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
        fwd = spec_forward(params, x, h0, c0, layer, lengths, mask)
        return self.bend((fwd.y, fwd.h_T, fwd.c_T))

    def _gradients(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, device):
        grads = spec_backward(spec_forward(params, x, h0, c0, layer, lengths, mask), cotangents)
        return self.bend(Gradients(grads.x, grads.h0, grads.c0, grads.params))


def spec_forward(params, x, h0, c0, config, lengths, mask):
    return layer.forward(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype)


def spec_backward(fwd, cotangents: Cotangents):
    return layer.backward(fwd, cotangents.dy, cotangents.dh_T, cotangents.dc_T)


ALL = SpecRow(id="spec", features=frozenset(Feature))


def data_of(name="lstmp-stack", dtype="float64"):
    return make_case_data(case_by_name(name), dtype)


def forward(row, data, **changes):
    arguments = dict(x=data.x, h0=data.h0, c0=data.c0, lengths=data.lengths, mask=data.mask)
    arguments.update(changes)
    return row.forward(data.params, layer=data.layer, **arguments)


def backward(row, data):
    return row.backward(data.params, data.x, data.h0, data.c0, Cotangents(data.dy, data.dh_T, data.dc_T), layer=data.layer,
                        lengths=data.lengths, mask=data.mask)


def test_features_are_read_off_the_configuration_and_inputs():
    d = data_of("lstmp-stack")
    assert features_of(d.layer, d.lengths, d.mask) == {Feature.PEEPHOLE, Feature.STACKED, Feature.BIDIRECTIONAL,
                                                       Feature.PROJECTION, Feature.LENGTHS, Feature.EMPTY_SEQUENCES}
    d = data_of("mask-previous")
    assert features_of(d.layer, d.lengths, d.mask) == {Feature.BIDIRECTIONAL, Feature.MASK, Feature.MASK_PREVIOUS_OUTPUT}
    assert features_of(data_of("small").layer) == frozenset()  # the cell is the layer with no feature


def test_refusals_come_from_declarations_layout_first_then_the_row_then_combinations():
    d = data_of("lstmp-stack")
    holds_no_projection = Layout(name="no projection", holds=frozenset(Feature) - {Feature.PROJECTION} & CANONICAL.holds,
                                 reasons={Feature.PROJECTION: "this layout has no W_hr"})
    row = SpecRow(id="x", layout=holds_no_projection, features=frozenset({Feature.PEEPHOLE}))
    assert row.refusal(dtype="float64", device="cpu", layer=d.layer, lengths=d.lengths) == "x does not support more than one layer"
    row = SpecRow(id="x", layout=holds_no_projection, features=frozenset(Feature) - {Feature.PROJECTION})
    assert row.refusal(dtype="float64", device="cpu", layer=d.layer, lengths=d.lengths) == "this layout has no W_hr"
    no_empty = SpecRow(id="no-empty", features=frozenset(Feature) - {Feature.EMPTY_SEQUENCES},
                       reasons={Feature.EMPTY_SEQUENCES: "PyTorch refuses sequences of length 0"})
    with pytest.raises(NotSupported, match="PyTorch refuses sequences of length 0"):
        forward(no_empty, d)
    assert SpecRow(id="x", dtypes=("float32",)).refusal(dtype="float64", device="cpu", layer=d.layer) == \
        "x does not support dtype float64"
    assert SpecRow(id="x", features=frozenset(Feature), gradients=False).refusal(
        dtype="float64", device="cpu", layer=d.layer, lengths=d.lengths, gradients=True) == "x computes no gradients"
    # A combination: each feature alone runs, the two together do not.
    combined = SpecRow(id="keras-like", features=frozenset(Feature),
                       combinations={frozenset({Feature.BIDIRECTIONAL, Feature.MASK_PREVIOUS_OUTPUT}): "Bidirectional zeroes masked steps"})
    m = data_of("mask-previous")
    assert combined.refusal(dtype="float64", device="cpu", layer=m.layer, mask=m.mask) == "Bidirectional zeroes masked steps"
    f = data_of("forward-mask-previous")
    assert combined.refusal(dtype="float64", device="cpu", layer=f.layer, mask=f.mask) is None


def test_a_row_declaring_more_than_its_layout_holds_is_refused_when_defined():
    with pytest.raises(ValueError, match="declares .*peephole.* which its layout no peepholes cannot hold"):
        SpecRow(id="x", layout=Layout(name="no peepholes", holds=frozenset(), reasons={f: "-" for f in Feature}),
                features=frozenset({Feature.PEEPHOLE}))


def test_entry_points_cannot_be_overridden():
    for entry in ("forward", "backward", "refusal", "timed_pass"):
        with pytest.raises(TypeError, match=f"overrides {entry}"):
            type("Sneaky", (Row,), {entry: lambda self, *a, **k: None})


@pytest.mark.parametrize("changes, tensor, problem", [
    (lambda d: {"h0": d.h0[:1]}, "h0", "wrong shape"),
    (lambda d: {"lengths": np.array([5, 2, 9, 4])}, "lengths", "out of range"),
    (lambda d: {"lengths": d.lengths.astype(np.float64)}, "lengths", "wrong dtype"),
    (lambda d: {"lengths": None, "mask": np.ones(d.x.shape[:2])}, "mask", "wrong dtype"),
    (lambda d: {"x": np.where(np.arange(d.x.size).reshape(d.x.shape) == 7, np.nan, d.x)}, "x", "non-finite value"),
    (lambda d: {"x": d.x.astype(np.float32)}, "x", "wrong dtype"),
], ids=["h0-shape", "lengths-range", "lengths-dtype", "mask-dtype", "x-nan", "x-float32-for-float64-params"])
def test_bad_inputs_never_reach_the_implementation(changes, tensor, problem):
    reached = []
    row = SpecRow(id="spec", features=frozenset(Feature))
    row.bend = staticmethod(lambda answer: reached.append(1) or answer)
    with pytest.raises(LSTMInputError) as info:
        forward(row, data_of(), **changes(data_of()))
    assert (info.value.tensor, info.value.problem) == (tensor, problem) and not reached


def test_answers_outside_the_contract_are_result_errors():
    d = data_of("lstmp-stack", "float32")
    bent = SpecRow(id="bent", features=frozenset(Feature))
    bent.bend = staticmethod(lambda a: (a[0][..., :2], a[1], a[2]))
    with pytest.raises(ResultError, match=r"y: wrong shape: expected \(5, 4, 4\), got \(5, 4, 2\)"):
        forward(bent, d)
    bent.bend = staticmethod(lambda a: (a[0], a[1]))
    with pytest.raises(ResultError, match="outputs: wrong type: expected \\(y, h_T, c_T\\), got a tuple of 2"):
        forward(bent, d)
    bent.bend = staticmethod(lambda g: Gradients(g.x, g.h0, g.c0, LayerParams(g.params.cells[:2], 2)))
    with pytest.raises(ResultError, match="gradient layer 1 direction 0 W: missing"):
        backward(bent, d)
    bent.bend = staticmethod(lambda g: g.tensors())
    with pytest.raises(ResultError, match="gradients: wrong type: expected contract.answers.Gradients, got dict"):
        backward(bent, d)
    bent.bend = staticmethod(lambda g: Gradients(g.x.astype(np.float64), g.h0, g.c0, g.params))
    with pytest.raises(ResultError, match="gradient x: wrong dtype: expected float32, got float64"):
        backward(bent, d)


def test_parameters_are_built_once_per_value_not_per_object():
    built = []

    class Counting(Row):
        def build(self, native, **kwargs):
            built.append(1)
            return native

        def call(self, native, x, h0, c0, lengths, mask, *, layer):
            fwd = spec_forward(native["params"], x, h0, c0, layer, lengths, mask)
            return fwd.y, fwd.h_T, fwd.c_T

    row = Counting(id="counting", features=frozenset(Feature))
    d = data_of("lstmp-stack")
    copies = [d.params.with_tensors({k: v.copy() for k, v in d.params.tensors().items()}) for _ in range(3)]
    for params in copies:
        row.forward(params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
    assert len(built) == 1
    changed = d.params.with_tensors({"layer 0 direction 0 b": d.params.cells[0].b + 1.0})
    row.forward(changed, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
    assert len(built) == 2


OWN_PROCESS = '''
    import os
    from contract.vocabulary import Feature
    from tests.test_contract import SpecRow

    class Here(SpecRow):
        def _availability(self, device):
            return None if os.environ.get("LSTMC_TEST_PROCESS") == "own" else "not in its own process"

        def _environment(self, device):
            return {"pid": os.getpid()}

    ROW = Here(id="odd/own-process", features=frozenset(Feature), process_environment={"LSTMC_TEST_PROCESS": "own"},
               combinations={frozenset({Feature.BIDIRECTIONAL, Feature.MASK_PREVIOUS_OUTPUT}): "not these two"})
'''


def test_a_row_in_its_own_process_answers_from_there_with_its_declarations(tmp_path):
    import os

    (row,) = load_rows(plugin(tmp_path, "own", OWN_PROCESS))
    assert type(row).__name__ == "Remote" and row.environment()["pid"] != os.getpid()
    d = data_of("lstmp-stack")
    expected = spec_forward(d.params, d.x, d.h0, d.c0, d.layer, d.lengths, None)
    assert np.array_equal(forward(row, d).y, expected.y)
    grads = backward(row, d)
    assert np.array_equal(grads.params.cells[3].W_hr, spec_backward(expected, Cotangents(d.dy, d.dh_T, d.dc_T)).params.cells[3].W_hr)
    m = data_of("mask-previous")  # its combinations travel with it: declared, not found in the child
    assert row.refusal(dtype="float64", device="cpu", layer=m.layer, mask=m.mask) == "not these two"


def test_a_known_failure_narrowed_to_a_feature_is_known_there_and_nowhere_else(tmp_path):
    """As ONNX Runtime does: rows of length 0 get zeros as their final state. Declared as a known non-conformance of
    the cases with empty sequences only: those are "known", every other case passes, and a declaration that no case
    needs (a strict xfail that passes) fails the run."""
    source = '''
        from contract.row import KnownFailure
        from contract.vocabulary import Feature, Kind
        from tests.test_contract import SpecRow

        class ZeroesEmptyRows(SpecRow):
            def _outputs(self, params, x, h0, c0, *, layer, lengths, mask, device):
                y, h_T, c_T = super()._outputs(params, x, h0, c0, layer=layer, lengths=lengths, mask=mask, device=device)
                if lengths is not None:
                    h_T, c_T = h_T.copy(), c_T.copy()
                    h_T[:, lengths == 0] = 0.0
                    c_T[:, lengths == 0] = 0.0
                return y, h_T, c_T

        REASON = "zeros as the final state of empty rows (as ONNX Runtime)"
        ROWS = [
            ZeroesEmptyRows(id="odd/zeroes-empty-rows", features=frozenset(Feature), gradients=False,
                            known_failures=(KnownFailure(REASON, kinds=(Kind.OUTPUTS,), features={Feature.EMPTY_SEQUENCES}),)),
            ZeroesEmptyRows(id="odd/declares-too-much", features=frozenset(Feature), gradients=False,
                            known_failures=(KnownFailure(REASON, kinds=(Kind.OUTPUTS,), features={Feature.BIDIRECTIONAL}),)),
        ]
    '''
    run = run_suite(tmp_path, "--backend", plugin(tmp_path, "zeroes", source), "--dtype", "float64", "-k", "test_outputs")
    assert run.returncode == 1, run.output
    by_case = {r["case"]: r for r in run.results("odd/zeroes-empty-rows")}
    assert {name for name, r in by_case.items() if r["status"] == "known"} == {"lengths", "lstmp-stack", "medium-combined"}
    assert all(r["status"] == "pass" for name, r in by_case.items() if name not in ("lengths", "lstmp-stack", "medium-combined"))
    assert run.cell("odd/zeroes-empty-rows", "float64 cpu outputs")["status"] == "known"
    too_much = {r["case"]: r for r in run.results("odd/declares-too-much")}
    assert too_much["bidirectional"]["status"] == "FAIL" and "known non-conformance passed" in too_much["bidirectional"]["detail"]


def test_known_failures_apply_by_kind_dtype_device_features_and_case():
    known = KnownFailure("r", kinds=(Kind.GRADIENTS,), dtype="float64", features={Feature.LENGTHS}, cases=("lengths",))
    assert known.applies(Kind.GRADIENTS, "float64", "cpu", {Feature.LENGTHS, Feature.BIDIRECTIONAL}, "lengths")
    assert not known.applies(Kind.OUTPUTS, "float64", "cpu", {Feature.LENGTHS}, "lengths")
    assert not known.applies(Kind.GRADIENTS, "float32", "cpu", {Feature.LENGTHS}, "lengths")
    assert not known.applies(Kind.GRADIENTS, "float64", "cpu", set(), "lengths")
    assert not known.applies(Kind.GRADIENTS, "float64", "cpu", {Feature.LENGTHS}, "packed")
    with pytest.raises(ValueError, match="KnownFailure.features: expected one of"):
        KnownFailure("r", features={"lenghts"})


def test_a_row_may_declare_with_plain_class_attributes():
    # As a plug-in author writes it, without @dataclass: Row's generated __init__ must not put its defaults over them.
    class Mine(SpecRow):
        id = "mine/lstm"
        features = frozenset({Feature.PEEPHOLE})
        gradients = False
        reasons = {"gradients": "mine has no backward"}

    mine = Mine()
    d = data_of("small-peephole")
    assert (mine.id, mine.features, mine.gradients) == ("mine/lstm", {Feature.PEEPHOLE}, False)
    assert mine.refusal(dtype="float64", device="cpu", layer=d.layer, gradients=True) == "mine has no backward"
    assert np.array_equal(forward(mine, d).y, spec_forward(d.params, d.x, d.h0, d.c0, d.layer, None, None).y)


def test_a_known_failure_that_depends_on_the_cpu_applies_only_where_the_cpu_lacks_the_feature(monkeypatch):
    """Narrowed to CPUs without any of ``cpu_lacks``: on a CPU with one of them the same result is judged as any other
    (the strict xfail would otherwise turn red there); a misspelled feature is refused when declared."""
    from contract import row as row_module
    from contract.row import KnownFailure
    from contract.vocabulary import Kind

    known = KnownFailure("oneDNN refuses float16 here", kinds=(Kind.OUTPUTS,), cpu_lacks=("avx512_fp16", "amx_fp16"))
    monkeypatch.setattr(row_module, "cpu_features", lambda: ["avx2", "avx512f", "avx512_bf16"])
    assert known.applies(Kind.OUTPUTS, "float32", "cpu")
    assert not known.applies(Kind.OUTPUTS, "float32", "cuda")
    monkeypatch.setattr(row_module, "cpu_features", lambda: ["avx2", "avx512f", "amx_fp16"])
    assert not known.applies(Kind.OUTPUTS, "float32", "cpu")
    assert KnownFailure("everywhere", kinds=(Kind.OUTPUTS,)).applies(Kind.OUTPUTS, "float32", "cpu")
    with pytest.raises(ValueError, match="unknown CPU feature 'avx512fp16'; the features are avx2, fma"):
        KnownFailure("typo", cpu_lacks=("avx512fp16",))
