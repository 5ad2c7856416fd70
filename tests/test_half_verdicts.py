"""The half-type columns judge what they must: every honest evaluation of a policy passes, every half-type mistake
fails and is diagnosed in its own words (conformance/half_mutants.py), through the same --backend path users use; and
every hostile declaration or file of the half-type surface gets a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conformance.half_mutants import HONEST, ROWS
from contract.errors import NotSupported
from contract.half_bounds import MISTAKES, bound_cases, compare_half
from contract.layout import fold_forget_bias
from contract.row import Row
from contract.tensor_files import load_file, save_file
from spec.cases import case_by_name, is_cell, make_case_data, reference
from spec.params import LSTMParams
from spec.precision import Policy, backward, forward
from spec.validation import LSTMInputError, check_dtype
from tests.suite import run_suite

#: What each mutant's failures must be diagnosed as (a phrase of every failing case's diagnosis).
DIAGNOSED = {
    "half-accumulation": "matches its policy half-storage-float32-accumulation with its products accumulated in the half type",
    "truncation": "matches its policy half-storage-float32-accumulation rounding toward zero instead of to nearest even",
    "cell-state-in-half": "matches half-storage-float32-accumulation",
    "every-operation-rounded": "matches half-every-operation",
    "gates-f-g-swapped": "matches the spec if gates f and g are swapped",
    "every-operation-half-accumulation": "matches its policy half-every-operation with its products accumulated",
    "float32-computes-in-bfloat16": "the error is at bfloat16's level",
}


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    result = run_suite(tmp_path_factory.mktemp("half-mutants"), "--backend", "conformance.half_mutants", "-n", "2")
    assert result.returncode == 1, "the suite must fail on the half-type mutants:\n" + result.output
    return result


def test_every_mistake_of_the_bounds_is_a_mutant():
    assert [row.id for row in ROWS] == [f"half-mutant/{m.name}" for m in MISTAKES] + ["half-mutant/float32-computes-in-bfloat16"]
    assert set(DIAGNOSED) == {row.id.split("/", 1)[1] for row in ROWS}


@pytest.mark.parametrize("row_id", [row.id for row in ROWS])
def test_a_half_type_mutant_is_caught_and_diagnosed(mutants, row_id):
    judged = [r for r in mutants.judged(row_id) if r["status"] != "not supported"]
    failures = [r for r in judged if r["status"] == "FAIL"]
    dtypes = {"float32"} if row_id.endswith("float32-computes-in-bfloat16") else {"bfloat16", "float16"}
    assert {r["dtype"] for r in failures} == dtypes, f"{row_id} passed every case in some of {dtypes}"
    if dtypes != {"float32"}:  # its backward pass too, in both half types
        assert {r["dtype"] for r in failures if r["kind"] == "gradients"} == dtypes, f"{row_id}'s gradients passed"
    if row_id not in ("half-mutant/float32-computes-in-bfloat16", "half-mutant/every-operation-half-accumulation"):
        # Caught on the layer's features too, in both half types (accumulating in half on top of every operation's
        # rounding hardly shows over the layer cases' 3 to 12 terms: caught on the plain cells).
        layered = {r["dtype"] for r in failures if not is_cell(case_by_name(r["case"]))}
        assert layered == dtypes, f"{row_id} passed every layer case in some of {dtypes}"
    phrase = DIAGNOSED[row_id.split("/", 1)[1]]
    diagnosed = [r for r in failures if any(phrase in d for d in r["diagnosis"])]
    # A gate swap's diagnosis is the catalogue's; the others name the policy or the half-type mistake. Most failing
    # cases must carry it (on a one-step case two hypotheses can be equally near).
    assert len(diagnosed) >= 0.8 * len(failures), (row_id, [(r["case"], r["diagnosis"]) for r in failures])
    # The failure names the statistic that failed, with its bound, and where the worst element is.
    detail = failures[0]["detail"]
    assert "ulps" in detail or "tolerance" in detail, detail


def test_every_honest_evaluation_of_every_policy_passes(tmp_path):
    result = run_suite(tmp_path, "--backend", "conformance.half_mutants:HONEST", "-n", "2")
    assert result.returncode == 0, result.output
    for row in HONEST:
        for dtype in ("bfloat16", "float16"):
            for kind in ("outputs", "gradients"):
                cell = result.cell(row.id, f"{dtype} cpu {kind}")
                assert cell["status"] == "pass" and cell["covered"] == len(bound_cases()), (row.id, dtype, kind, cell)
                assert cell["policy"] == row.policies[dtype].value, (row.id, dtype, cell)
    # The reports name the policy each half-type cell was judged by.
    assert f"- `{HONEST[0].id}` bfloat16: `{HONEST[0].policies['bfloat16'].value}`" in (
        result.report_dir / "conformance.md").read_text()
    assert "judged by the policy" in result.stdout
    policies = {r["policy"] for r in result.report["results"] if r["dtype"] in ("bfloat16", "float16")}
    assert policies == {p.value for p in Policy if p is not Policy.TF32}


# ---------------------------------------------------------------------------
# The comparison itself
# ---------------------------------------------------------------------------


def test_a_half_comparison_names_the_failing_statistic_its_bound_and_the_worst_element():
    data = make_case_data(case_by_name("medium"), "bfloat16")
    exact = reference(data).outputs["y"]
    got = np.asarray(exact).astype(data.x.dtype)
    assert compare_half("y", got, exact, half="bfloat16", policy=Policy.HALF_STORAGE, case="medium").ok
    off = got.astype(np.float64)
    off[2, 1, 3] += 0.25
    judged = compare_half("y", off.astype(data.x.dtype), exact, half="bfloat16", policy=Policy.HALF_STORAGE, case="medium")
    assert not judged.ok and judged.failing == ("max",)
    assert "fails max: max error" in judged.message() and "at step 2, batch row 1, unit 3" in judged.message()
    wrong = compare_half("y", got.astype(np.float16), exact, half="bfloat16", policy=Policy.HALF_STORAGE, case="medium")
    assert wrong.message() == "y: wrong dtype: expected bfloat16, got float16"
    with pytest.raises(KeyError, match="no half-type bound for bfloat16 half-storage-float32-accumulation long y"):
        compare_half("y", got, exact, half="bfloat16", policy=Policy.HALF_STORAGE, case="long")  # large: no bound


# ---------------------------------------------------------------------------
# Declarations and data
# ---------------------------------------------------------------------------


def test_a_row_declares_a_policy_for_each_half_type_it_runs():
    with pytest.raises(ValueError, match="x declares bfloat16 without the precision policy it follows there"):
        Row(id="x", dtypes=("float32", "bfloat16"))
    with pytest.raises(ValueError, match=r"x policies\['float16'\]: precision policy 'tf32-products' holds float32 data"):
        Row(id="x", dtypes=("float16",), policies={"float16": "tf32-products"})
    with pytest.raises(ValueError, match=r"x policies\['float16'\]: policy: unknown precision policy 'half-storag'"):
        Row(id="x", dtypes=("float16",), policies={"float16": "half-storag"})
    row = Row(id="x", dtypes=("bfloat16",), policies={"bfloat16": "half-every-operation"}, half_timing=("float16",))
    assert row.policy("bfloat16") is Policy.EVERY_OPERATION and row.policy("float32") is None
    layer = case_by_name("small").layer
    assert row.refusal(dtype="float16", device="cpu", layer=layer) == (
        "x declares no precision policy for float16: its float16 passes are timed by the benchmarks, not judged")
    assert row.refusal(dtype="float16", device="cpu", layer=layer, timed=True) is None


def test_data_a_half_type_cannot_hold_is_refused_naming_the_tensor():
    params = LSTMParams(np.full((4, 2, 3), 7e4), np.zeros((4, 2, 2)), np.zeros((4, 2)))
    with pytest.raises(LSTMInputError, match=r"W: beyond the range of float16: expected \|values\| at most 65504, got 70000 "
                                             r"at index \(0, 0, 0\) \(24 such values\)"):
        params.astype("float16")
    assert params.astype("bfloat16").W.dtype == check_dtype("bfloat16", storage=True)
    with pytest.raises(LSTMInputError, match="a half type is data, not arithmetic"):
        check_dtype("float16")


def test_a_forget_bias_a_half_type_cannot_fold_exactly_is_not_supported():
    b = np.full((4, 3), 0.00390625, np.float32).astype(check_dtype("bfloat16", storage=True))  # 2**-8
    with pytest.raises(NotSupported, match=r"b_f \+ 1 folded into its bias is not a bfloat16 value at 3 of 3 units"):
        fold_forget_bias(b, 1.0)
    assert fold_forget_bias(np.full((4, 3), 0.5, np.float16), 1.0)[1, 0] == 1.5


def test_the_half_case_data_is_the_float32_data_rounded_once():
    case = case_by_name("small")
    wide, half = make_case_data(case, "float32"), make_case_data(case, "bfloat16")
    assert half.x.dtype.name == "bfloat16"
    np.testing.assert_array_equal(half.x.astype(np.float32), wide.x.astype(half.x.dtype).astype(np.float32))
    np.testing.assert_array_equal(reference(half).outputs["y"], reference(make_case_data(case, "bfloat16")).outputs["y"])


# ---------------------------------------------------------------------------
# Results files of an implementation outside Python
# ---------------------------------------------------------------------------


def _export(tmp_path: Path, dtype: str) -> tuple[Path, list[dict]]:
    from conformance.golden import export

    directory = tmp_path / "golden"
    export(directory, ["small", "T1", "B1", "medium"], (dtype,))
    (directory / "results").mkdir()
    return directory, json.loads((directory / "manifest.json").read_text())["vectors"]


def _write(directory: Path, vector: dict, dtype, metadata: dict | None, policy=Policy.HALF_STORAGE,
           gradients: bool = False) -> None:
    t = load_file(directory / vector["file"])
    cell = LSTMParams(t["layer0.forward.W"], t["layer0.forward.U"], t["layer0.forward.b"], t.get("layer0.forward.p"))
    options = dict(dtype=vector["dtype"], policy=policy, forget_bias=vector["config"]["forget_bias"])
    y, h, c = forward(cell, t["x"], t["h0"][0], t["c0"][0], **options)
    answer = {"y": y.astype(dtype), "h_T": h[None].astype(dtype), "c_T": c[None].astype(dtype)}
    if gradients:  # under mixed precision the weights' gradients are float32, the rest the half type
        g = backward(cell, t["x"], t["h0"][0], t["c0"][0], t["dy"], t["dh_T"][0], t["dc_T"][0], **options)
        weights = np.float32 if policy is Policy.MIXED else dtype
        answer.update({"grad_x": g["x"].astype(dtype), "grad_h0": g["h0"][None].astype(dtype),
                       "grad_c0": g["c0"][None].astype(dtype)})
        answer.update({f"grad_layer0.forward.{name}": g[name].astype(weights) for name in ("W", "U", "b", "p") if name in g})
    save_file(answer, directory / "results" / f"{vector['id']}.safetensors", metadata=metadata)


def test_half_type_results_pass_under_the_policy_their_files_name(tmp_path):
    directory, vectors = _export(tmp_path, "bfloat16")
    assert [v["dtype"] for v in vectors] == ["bfloat16"] * 4
    for vector in vectors:  # with their gradients, the weights' in float32 as mixed precision has them
        _write(directory, vector, check_dtype("bfloat16", storage=True), {"policy": Policy.MIXED.value}, Policy.MIXED,
               gradients=True)
    result = run_suite(tmp_path, "--results", str(directory), "--dtype", "bfloat16", "-n", "0")
    assert result.returncode == 0, result.output
    judged = [r for r in result.judged(f"results/{directory.name}") if r["status"] != "not supported"]  # not exported
    assert sorted((r["case"], r["kind"]) for r in judged) == sorted(
        (case, kind) for case in ("small", "T1", "B1", "medium") for kind in ("outputs", "gradients"))
    assert {(r["status"], r["policy"]) for r in judged} == {("pass", Policy.MIXED.value)}


def test_hostile_half_type_results_are_named(tmp_path):
    directory, vectors = _export(tmp_path, "float16")
    bfloat16 = check_dtype("bfloat16", storage=True)
    _write(directory, vectors[0], bfloat16, {"policy": Policy.HALF_STORAGE.value})  # the wrong half type
    _write(directory, vectors[1], np.float16, None)  # no policy
    _write(directory, vectors[2], np.float16, {"policy": "half-storage"})  # misspelled
    _write(directory, vectors[3], np.float16, {"policy": Policy.TF32.value})  # contradicts the dtype
    result = run_suite(tmp_path, "--results", str(directory), "--dtype", "float16", "-n", "0")
    assert result.returncode == 1, result.output
    details = {r["case"]: r["detail"] for r in result.judged(f"results/{directory.name}") if r["kind"] == "outputs"}
    assert details["small"] == "y: wrong dtype: expected float16, got bfloat16"
    assert "no precision policy: expected metadata {'policy': ...}, the policy the implementation follows in float16" \
        in details["T1"]
    assert "unknown precision policy 'half-storage'" in details["B1"]
    assert "precision policy 'tf32-products' holds float32 data, not 'float16'" in details["medium"]


def test_a_half_type_answer_in_another_dtype_is_named_not_cast(tmp_path):
    """A plug-in asked for bfloat16 that answers float32 (or float16) fails naming the tensor: nothing is cast."""
    from contract.errors import ResultError
    from contract.loading import load_rows
    from tests.suite import plugin

    source = '''
        import numpy as np
        from spec.precision import forward as policy_forward
        DTYPES = ("bfloat16",)
        POLICY = "half-storage-float32-accumulation"
        ANSWER = {answer}
        def forward(params, x, h0, c0, *, forget_bias):
            y, h, c = policy_forward(params, x, h0, c0, dtype="bfloat16", policy=POLICY, forget_bias=forget_bias)
            return y.astype(ANSWER), h.astype(ANSWER), c.astype(ANSWER)
    '''
    for answer, got in (("np.float32", "float32"), ("np.float16", "float16")):
        (row,) = load_rows(plugin(tmp_path, f"wrong_{got}", source.replace("{answer}", answer)))
        d = make_case_data(case_by_name("small"), "bfloat16")
        with pytest.raises(ResultError, match=f"h_seq: wrong dtype: expected bfloat16, got {got}"):
            row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)
