"""The training comparison (training/): its shared pieces, the bound's power to catch a wrong gradient, and
the quick mode end to end in every framework that is installed (TF1's rows are unavailable, with the
reason, where tf-keras is not).

No timing is asserted: speed goes into the report.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spec import LSTMParams
from training import head
from training.bound import judge, measure
from training.data import Digits, batch_schedule
from training.frameworks.spec_model import ORDERINGS, Reordered, spec_loss_and_gradients
from training.model import ModelParams
from training.optimizer import DECAY, EPSILON, LEARNING_RATE, RMSProp
from training.runs import RunSpec, all_runs
from training.trajectory import Trajectory, recorded_steps

ROOT = Path(__file__).resolve().parents[1]
EPS32 = float(np.finfo(np.float32).eps)


def small_model(rng, I=3, H=4, C=5, dtype=np.float64) -> ModelParams:
    lstm = LSTMParams(rng.normal(0, 0.5, (4, H, I)), rng.normal(0, 0.5, (4, H, H)), rng.normal(0, 0.5, (4, H)))
    return ModelParams(lstm, rng.normal(0, 0.5, (C, H)), rng.normal(0, 0.5, C)).astype(dtype)


# ---------------------------------------------------------------------------
# The NumPy head, the model's gradient, the reorderings
# ---------------------------------------------------------------------------


def test_head_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    B, H, C = 6, 5, 4
    h, Wd, bd = rng.normal(size=(B, H)), rng.normal(size=(C, H)), rng.normal(size=C)
    labels = rng.integers(0, C, B)
    dh, dWd, dbd = head.backward(head.forward(h, Wd, bd, labels), Wd)
    eps = 1e-6

    def numeric(array, loss_of):
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = loss_of()
            array[index] = saved - eps
            down = loss_of()
            array[index] = saved
            grad[index] = (up - down) / (2 * eps)
        return grad

    def loss():
        return head.forward(h, Wd, bd, labels).loss

    np.testing.assert_allclose(dh, numeric(h, loss), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dWd, numeric(Wd, loss), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dbd, numeric(bd, loss), rtol=1e-7, atol=1e-9)


def test_head_loss_is_stable_for_large_logits():
    h = np.array([[1.0]])
    out = head.forward(h, np.array([[1000.0], [0.0]]), np.zeros(2), np.array([1]))
    assert out.loss == pytest.approx(1000.0) and np.isfinite(out.probabilities).all()


def test_model_gradient_matches_a_directional_finite_difference():
    """The spec's LSTM and the head wired together (dh_seq = 0, dc_T = 0, forget bias 1): <grad, v> against
    the central difference of the loss along a random direction v."""
    rng = np.random.default_rng(1)
    params = small_model(rng)
    x, y = rng.normal(size=(3, 6, 3)), rng.integers(0, 5, 6)
    _, grads = spec_loss_and_gradients(params, x, y)
    for _ in range(3):
        v = {k: rng.normal(size=t.shape) for k, t in params.tensors().items()}
        eps = 1e-6
        shifted = [ModelParams.from_tensors({k: t + s * eps * v[k] for k, t in params.tensors().items()}) for s in (1, -1)]
        numeric = (spec_loss_and_gradients(shifted[0], x, y)[0] - spec_loss_and_gradients(shifted[1], x, y)[0]) / (2 * eps)
        analytic = sum(float(np.vdot(grads.tensors()[k], v[k])) for k in v)
        assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_reorderings_compute_the_same_gradient(ordering):
    """In float64 every reordering gives the spec's gradient to rounding: the permutations are undone exactly."""
    rng = np.random.default_rng(2)
    params = small_model(rng, I=5, H=6)
    x, y = rng.normal(size=(4, 7, 5)), rng.integers(0, 5, 7)
    loss, expected = spec_loss_and_gradients(params, x, y)
    got_loss, got = Reordered(ordering=ordering, seed=3).loss_and_gradients(params, x, y)
    assert got_loss == pytest.approx(loss, rel=1e-13)
    for name, value in expected.tensors().items():
        np.testing.assert_allclose(got.tensors()[name], value, rtol=1e-11, atol=1e-13, err_msg=name)


# ---------------------------------------------------------------------------
# The shared optimizer step
# ---------------------------------------------------------------------------


def test_rmsprop_step_matches_a_hand_computation():
    theta = {"w": np.array([1.0, -2.0], np.float32)}
    optimizer = RMSProp.init(theta)
    g1, g2 = np.array([0.5, 0.0], np.float32), np.array([-1.0, 3.0], np.float32)
    ms, expected = np.array([1.0, 1.0]), np.array([1.0, -2.0])
    for g in (g1, g2):
        ms = DECAY * ms + (1 - DECAY) * g.astype(np.float64) ** 2  # ms_0 = 1, as TF1's RMSPropOptimizer
        expected = expected - LEARNING_RATE * g / np.sqrt(ms + EPSILON)
        theta = optimizer.step(theta, {"w": g})
        assert theta["w"].dtype == np.float32
        np.testing.assert_allclose(theta["w"], expected, rtol=2 * EPS32)
    # The first step from ms_0 = 1 is about lr g, not lr sign(g): a zero gradient moves nothing.
    assert theta["w"][1] == pytest.approx(-2.0 - LEARNING_RATE * 3.0 / np.sqrt(0.9 * 0.9 + 0.1 * 9.0), rel=1e-6)


def test_rmsprop_refuses_a_gradient_of_another_dtype():
    optimizer = RMSProp.init({"w": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="gradient w"):
        optimizer.step({"w": np.zeros(2, np.float32)}, {"w": np.zeros(2, np.float64)})


# ---------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------


def test_digits_split_is_stratified_complete_and_exact():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from training.data import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    # Every image is in exactly one side (as a multiset of rows: the data set holds duplicates).
    digits = load_digits()
    everything = np.concatenate([x_train, x_test]).reshape(-1, 64) * 16
    assert np.array_equal(np.sort(everything.view(np.float32).round(), axis=0),
                          np.sort(digits.data.astype(np.float32), axis=0))
    assert np.array_equal(np.sort(np.concatenate([y_train, y_test])), np.sort(digits.target))
    # Stratified: each class's share of the test set within one image of its share of the whole.
    counts, test_counts = np.bincount(digits.target), np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - counts * 360 / 1797) <= 1)
    # Deterministic.
    assert np.array_equal(load_digits_split()[1], y_train)


def test_batch_schedule_covers_each_epoch_once_with_full_batches():
    batches = batch_schedule(300, 128, steps=7, seed=0)
    assert batches.shape == (7, 128)
    for epoch in range(3):  # 2 full batches per epoch of 300, the rest dropped
        seen = batches[2 * epoch : 2 * epoch + 2].ravel()
        assert len(set(seen.tolist())) == 256 and seen.max() < 300
    assert np.array_equal(batches, batch_schedule(300, 128, steps=7, seed=0))
    assert not np.array_equal(batches, batch_schedule(300, 128, steps=7, seed=1))
    with pytest.raises(ValueError, match="exceeds the training set"):
        batch_schedule(100, 128, 1)


def test_kept_steps_start_dense_and_end_at_the_last_step():
    kept = recorded_steps(500)
    assert kept[:11] == list(range(11)) and kept[-1] == 500 and len(kept) < 60
    assert recorded_steps(3) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------
# The bound catches a wrong gradient (in this process, a few steps)
# ---------------------------------------------------------------------------


STEPS = 6


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """A few steps of the reference, three honest reorderings, another one kept out of the bound, and two
    backward-only mutants trained through the contract, as their files."""
    pytest.importorskip("sklearn")
    from training.digits import prepare
    from training.runs import execute

    out = tmp_path_factory.mktemp("short")
    prepare(out, STEPS, seed=0)
    specs = [s for s in all_runs(frameworks=()) if s.id in (
        "spec", "spec/batch-order-1", "spec/unit-order-1", "spec/float64-gradient", "spec/input-order-1",
        "contract:mutant/bias-gradient-wrong-gate", "contract:mutant/dc-ignores-downstream")]
    (out / "runs").mkdir()
    runs = {}
    for spec in specs:
        runs[spec.id] = execute(spec, out, timing_repeats=0, progress=lambda done: None)
        runs[spec.id].save(out / "runs" / spec.file_name)
    return out, specs, runs


def test_a_wrong_gradient_leaves_the_bound_from_the_first_step(short_runs):
    _, _, runs = short_runs
    bound = measure(runs["spec"], [runs[k] for k in ("spec/batch-order-1", "spec/unit-order-1", "spec/float64-gradient")])
    assert 0 < bound.bound.max() < 100 * EPS32  # a few eps32: rounding, nothing more
    honest, _, _ = judge(runs["spec/input-order-1"], runs["spec"], bound)  # a reordering the bound did not see
    assert honest.within, honest
    for mutant in ("contract:mutant/bias-gradient-wrong-gate", "contract:mutant/dc-ignores-downstream"):
        verdict, _, _ = judge(runs[mutant], runs["spec"], bound)
        assert not verdict.within and verdict.first_step_beyond == 1, (mutant, verdict)
        assert verdict.final_ratio > 1e4, (mutant, verdict)  # not a near miss
    # Its forward is right: only the gradients are wrong (the loss of step 0 is the reference's).
    assert runs["contract:mutant/bias-gradient-wrong-gate"].loss[0] == pytest.approx(runs["spec"].loss[0], rel=1e-6)


def test_the_report_fails_when_a_framework_leaves_the_bound(short_runs):
    """A run judged as a framework with the shared step (here: the mutant relabelled) that leaves the bound
    makes the status 1, and the report names it; the known non-conformances leaving it do not."""
    pytest.importorskip("matplotlib")
    from training.report import write_report

    out, specs, _ = short_runs
    outcome = write_report(out, specs, {"mode": "test", "seconds": 0.0})
    assert outcome.status == 0, outcome.problems
    assert (out / "report.md").exists() and (out / "distance.png").read_bytes()[:4] == b"\x89PNG"

    relabelled = [RunSpec(s.id, "shared", s.group, s.framework) if s.id == "contract:mutant/dc-ignores-downstream" else s
                  for s in specs]
    outcome = write_report(out, relabelled, {"mode": "test", "seconds": 0.0})
    assert outcome.status == 1
    assert any("contract:mutant/dc-ignores-downstream leaves the bound from step 1" in p for p in outcome.problems)
    assert "**leaves the bound** from step 1" in (out / "report.md").read_text()


# ---------------------------------------------------------------------------
# TF1's rows say why they cannot run
# ---------------------------------------------------------------------------


def test_tf1_says_why_it_cannot_run_without_the_legacy_switch(monkeypatch):
    from training.frameworks.tf1_model import TF1Model

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    reason = TF1Model().availability()
    assert "TF_USE_LEGACY_KERAS=1 is not set" in reason and "tf-keras" in reason


# ---------------------------------------------------------------------------
# Rows trained through the contract
# ---------------------------------------------------------------------------


def test_an_unknown_row_is_a_reason_naming_where_it_was_looked_for():
    """A mutant comes from the catalogue conformance.mutants, loaded by name at run time (training imports no
    conformance module); an id it lacks makes the run unavailable with the ids it has, never a crash."""
    from training.frameworks.contract_model import ContractModel

    reason = ContractModel(row_id="mutant/no-such-bug").availability()
    assert "no mutant 'mutant/no-such-bug' in conformance.mutants" in reason and "mutant/dc-ignores-downstream" in reason
    assert "no row 'no/such-row'" in ContractModel(row_id="no/such-row").availability()


def test_the_contract_model_hands_the_row_the_heads_cotangent_and_reads_its_gradients():
    """Through a row, the model's gradient is the spec's (a conformant row: the spec's own layer through the contract's
    plug-in path): the head's dh_T reaches backward() as the one cell's dh_T, dy = 0 and dc_T = 0."""
    import spec.layer as spec_layer
    from contract.loading import FunctionRow
    from training.frameworks.contract_model import ContractModel

    def forward_layer(params, x, h0, c0, *, config, lengths, mask):
        out = spec_layer.forward(params, x, h0, c0, config=config, dtype=x.dtype)
        return out.y, out.h_T, out.c_T

    def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
        fwd = spec_layer.forward(params, x, h0, c0, config=config, dtype=x.dtype)
        return spec_layer.backward(fwd, dy, dh_T, dc_T).tensors()

    model = ContractModel.of(FunctionRow(id="spec-layer", forward_layer_function=forward_layer,
                                         backward_layer_function=backward_layer))
    rng = np.random.default_rng(4)
    params = small_model(rng, dtype=np.float32)
    x, y = rng.normal(size=(3, 6, 3)).astype(np.float32), rng.integers(0, 5, 6)
    loss, got = model.loss_and_gradients(params, x, y)
    expected_loss, expected = spec_loss_and_gradients(params, x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    for name, value in expected.tensors().items():
        np.testing.assert_allclose(got.tensors()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["half-storage-float32-accumulation", "half-every-operation", "mixed-precision"])
def test_the_half_type_model_is_the_float32_gradient_to_bfloat16_rounding(policy):
    """The spec under a policy in bfloat16 gives the model's gradient to bfloat16's rounding (not float32's: it does
    compute in bfloat16), the forget bias in b_f: the float32 model's gradient with it added to b_f is the target."""
    from training.frameworks.precision_model import PolicyModel, forget_bias_folded

    rng = np.random.default_rng(5)
    params = small_model(rng, I=4, H=8, dtype=np.float32)
    x, y = rng.normal(size=(5, 16, 4)).astype(np.float32), rng.integers(0, 5, 16)
    loss, got = PolicyModel(policy=policy).loss_and_gradients(forget_bias_folded(params), x, y)
    expected_loss, expected = spec_loss_and_gradients(params.astype(np.float64), x.astype(np.float64), y)
    assert loss == pytest.approx(expected_loss, rel=2e-2)
    for name, value in expected.tensors().items():
        error = np.linalg.norm(got.tensors()[name] - value) / np.linalg.norm(value)
        assert 1e-4 < error < 5e-2, (name, error)  # bfloat16's rounding, not float32's, and no more


def test_a_row_trained_in_half_through_the_contract_is_its_policy_model():
    """Through the contract in bfloat16 (the master weights and the batch rounded, the head's dh_T rounded, the
    gradients widened), an honest row of a policy gives exactly what the spec under that policy gives."""
    from contract.loading import load_rows
    from training.frameworks.contract_model import ContractModel
    from training.frameworks.precision_model import PolicyModel, forget_bias_folded

    (row,) = [r for r in load_rows("conformance.half_mutants:HONEST") if r.id == "policy/mixed-precision/exact"]
    model = ContractModel.of(row)
    model.half = "bfloat16"
    rng = np.random.default_rng(6)
    params = forget_bias_folded(small_model(rng, I=4, H=8, dtype=np.float32))
    x, y = rng.normal(size=(5, 16, 4)).astype(np.float32), rng.integers(0, 5, 16)
    loss, got = model.loss_and_gradients(params, x, y)
    expected_loss, expected = PolicyModel(policy="mixed-precision", evaluation="exact").loss_and_gradients(params, x, y)
    assert loss == expected_loss
    for name, value in expected.tensors().items():
        np.testing.assert_array_equal(got.tensors()[name], value, err_msg=name)


# ---------------------------------------------------------------------------
# The quick mode, end to end
# ---------------------------------------------------------------------------


#: The packages whose absence makes a group's rows unavailable (TF1's: tf-keras, beside TensorFlow).
PACKAGES_OF_GROUP = {"numpy": (), "torch": ("torch",), "tensorflow": ("tensorflow",), "jax": ("jax", "flax"),
                     "tf1": ("tensorflow", "tf_keras")}


def _run_cli(args, out: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.digits", *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for module in ("sklearn", "tqdm", "matplotlib"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("quick")
    result = _run_cli(["--quick", "--jobs", "2", "--keep-runs"], out)
    return out, result


def test_quick_mode_writes_the_report_and_plots(quick_run):
    out, result = quick_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "within the rounding bound" in result.stdout
    for name in ("loss.png", "distance.png", "own.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.md").read_text()
    for heading in ("## Every framework with the shared optimizer step", "## What a non-conformance costs",
                    "## bfloat16 mixed precision", "## Each framework's own RMSProp", "## The rounding bound"):
        assert heading in report
    assert (out / "half.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The inputs every framework loaded: the LSTM in the project's weight format, the dense layer beside it.
    from spec import load_weights

    assert load_weights(out / "inputs" / "lstm.safetensors").hidden_size == 128
    assert Digits.load(out / "inputs" / "digits.safetensors").steps == 30


def test_quick_mode_verdicts(quick_run):
    from training.bound import measure

    out, _ = quick_run
    runs = {s.id: Trajectory.load(out / "runs" / s.file_name) for s in all_runs()}
    reference = runs["spec"]
    bound = measure(reference, [t for t in runs.values() if t.ok and t.info["kind"] == "variant"])
    report = (out / "report.md").read_text()
    for run_id, run in runs.items():
        kind = run.info["kind"]
        if run.status.startswith("unavailable"):
            # Only a framework that is not installed here may be unavailable, and the report says why.
            missing = any(importlib.util.find_spec(p) is None for p in PACKAGES_OF_GROUP[run.info["group"]])
            assert missing, (run_id, run.status)
            assert f"| {run_id} | – | – | – | unavailable: " in report or kind != "shared"
            continue
        assert run.ok, (run_id, run.status)
        verdict, _, _ = judge(run, reference, bound)
        if kind == "shared":
            assert verdict.within, (run_id, verdict)
            errors = run.info["gradient_error_step0"]
            assert max(errors.values()) < 20 * EPS32, (run_id, errors)  # the layout conversions are right
        if kind == "contract":
            assert verdict.within == (run.info["expect"] == "conformant"), (run_id, verdict)
            if not verdict.within:
                assert verdict.first_step_beyond == 1
        if run_id == "tf1/BasicLSTMCell+own-RMSProp":
            # TF1's RMSPropOptimizer is the shared step's definition: it reproduces it to rounding.
            assert verdict.within, verdict
        if kind == "own" and not run_id.startswith("tf1/"):
            assert not verdict.within  # ms_0 = 0 (and torch's two biases): another optimizer
        if kind in ("reference", "own"):
            assert run.info["timing"]["median_s"] > 0
        assert 0 <= run.info["test_accuracy"] <= 1


def test_quick_mode_mixed_precision_verdicts(quick_run):
    """Every row trained in bfloat16 stays within the bound of the policy it declares; the gate swap leaves it at
    once; each policy's bound is measured from at least three honest runs."""
    from training.report import evaluate_half, load_runs

    out, _ = quick_run
    runs = load_runs(out, all_runs())
    bounds, problems = evaluate_half(runs)
    assert not problems, problems
    assert set(bounds) == {"mixed-precision", "half-every-operation", "half-storage-float32-accumulation"}
    assert all(len(b.runs) >= 4 for b in bounds.values())
    judged = {j.spec.row: j for j in runs.values() if j.spec.kind == "half" and j.run.ok}
    assert "half-mutant/gates-f-g-swapped" in judged and len(judged) >= 2
    for row, j in judged.items():
        if j.spec.expect == "conformant":
            assert j.verdict.within, (row, j.verdict)
        else:
            assert not j.verdict.within and j.verdict.first_step_beyond == 1, (row, j.verdict)
    assert judged["half-mutant/gates-f-g-swapped"].run.info["policy"] == "half-storage-float32-accumulation"


def test_tf1_rows_are_unavailable_with_the_real_reason_when_tf_keras_cannot_be_imported(tmp_path):
    """A tf_keras that fails to import (as a missing one does) makes TF1's rows unavailable, with the
    import's own words (TF1's runtime, backends/runtimes/tensorflow.py); the run goes on and passes."""
    for module in ("sklearn", "tqdm", "matplotlib"):
        pytest.importorskip(module)
    blocker = tmp_path / "blocker"
    (blocker / "tf_keras").mkdir(parents=True)
    (blocker / "tf_keras" / "__init__.py").write_text("raise ImportError('tf_keras blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    out = tmp_path / "out"
    result = _run_cli(["--frameworks", "tf1", "--no-non-conformance", "--steps", "2", "--timing-repeats", "0"], out, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| tf1/BasicLSTMCell |"))
    assert "unavailable: " in row and "import tf_keras failed: ImportError: tf_keras blocked by the test" in row, row


# ---------------------------------------------------------------------------
# The command line: a bad option is a usage error (exit 2, one line), never a silent default or a traceback
# ---------------------------------------------------------------------------


def _usage_error(capsys, argv: list[str]) -> str:
    """parse(argv) must stop with argparse's usage error (status 2); its one error line."""
    from training.digits import parse

    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2, stop.value.code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(("argv", "expected"), [pytest.param(argv, expected, id=" ".join(argv)) for argv, expected in [
    (["--jobs", "0"], ("--jobs", "at least 1", "0")),
    (["--jobs", "-2"], ("--jobs", "at least 1", "-2")),
    (["--timing-repeats", "-4"], ("--timing-repeats", "at least 0", "-4")),
    (["--steps", "0"], ("--steps", "at least 1", "0")),
    (["--steps", "-3", "--quick"], ("--steps", "at least 1", "-3")),
    (["--seed", "-1"], ("--seed", "from 0 to 4294967295", "-1")),
    (["--seed", str(2**32)], ("--seed", "from 0 to 4294967295", str(2**32))),
]])
def test_a_number_out_of_range_is_a_usage_error_naming_the_option_the_range_and_the_value(capsys, argv, expected):
    option, requirement, given = expected
    line = _usage_error(capsys, argv)
    assert option in line and requirement in line and f"got {given}" in line, line


@pytest.mark.parametrize("frameworks", ["", ",", " , ", "torch,pytorch", "Torch"])
def test_an_empty_or_unknown_framework_list_is_a_usage_error_naming_the_known_ones(capsys, frameworks):
    """Nothing trained is not a pass: an empty list is refused, as an unknown name is."""
    from training.runs import FRAMEWORKS

    line = _usage_error(capsys, ["--frameworks", frameworks])
    assert "--frameworks" in line and all(name in line for name in FRAMEWORKS), line
    assert repr(frameworks.strip()) in line or "pytorch" in line or "Torch" in line, line


def test_valid_options_pass_and_a_framework_list_is_cleaned(tmp_path):
    from training.digits import parse

    args = parse(["--jobs", "1", "--timing-repeats", "0", "--steps", "1", "--seed", "0", "--frameworks", " torch, ,flax,torch",
                  "--out", str(tmp_path / "new" / "folder")])
    assert (args.jobs, args.timing_repeats, args.steps, args.seed) == (1, 0, 1, 0)
    assert args.frameworks == "torch,flax"
    assert parse(["--out", str(tmp_path)]).out == tmp_path  # an existing folder is fine


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_an_out_that_is_or_lies_below_a_file_is_a_usage_error(capsys, tmp_path, where):
    existing = tmp_path / "report.md"
    existing.write_text("not a folder\n")
    out = existing if where == "file" else existing / "sub"
    line = _usage_error(capsys, ["--out", str(out)])
    assert "--out" in line and "not a folder" in line and str(existing) in line, line


@pytest.mark.parametrize("case", ["out-is-a-file", "no-frameworks"])
def test_the_command_exits_2_with_one_line_and_no_traceback_on_a_usage_error(tmp_path, case):
    """End to end: exit status 2 (1 says a framework left the bound), one error line, nothing trained."""
    existing = tmp_path / "a-file"
    existing.write_text("")
    args = ["--steps", "1", "--timing-repeats", "0", "--no-non-conformance"]
    if case == "out-is-a-file":
        out = existing
    else:
        out, args = tmp_path / "out", [*args, "--frameworks", ""]
    result = _run_cli(args, out)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "within the rounding bound" not in result.stdout, result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1, result.stderr
    assert not (tmp_path / "out").exists()
