"""The training-side view of dynamic quantization (training/quantized.py): the digit classifier trained briefly in
float, its LSTM run through each quantized row on a few test images. The numbers must be sane: the accuracy close to the
float model's, the output error small but not zero at every step, each row matching its integer reference. Each row
skips, with its install hint, where its framework is missing.

No number of the real run is asserted: that run's results are in training/results/quantized.md.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'lstm-conformance[train]')")

from training import quantized  # noqa: E402
from training.digits import QUICK_STEPS  # noqa: E402

#: A few test images: enough for an accuracy, few enough for seconds.
SAMPLES = quantized.QUICK_SAMPLES
#: How far a row's accuracy may be from the float model's: a few flipped predictions out of SAMPLES. The model is barely
#: trained (QUICK_STEPS), so its logits are close together and an error of ~1e-3 on h_T could flip one or two.
ACCURACY_SLACK = 0.05
#: The largest sane output error: h lies in [-1, 1] and int8 quantizes its products' operands in steps of about 1/127
#: of their range; an error of this size (several percent of the range) would mean a broken row, not rounding.
LARGEST_ERROR = 0.05
ROW_IDS = [r.id for r in quantized.quantized_rows()]


@pytest.fixture(scope="module")
def model():
    params, digits, training = quantized.trained(None, QUICK_STEPS, seed=0)
    return params, digits, training


@pytest.fixture(scope="module")
def float_only(model):
    params, digits, training = model
    return quantized.evaluate(params, digits, [], SAMPLES, training)


def test_there_are_quantized_rows():
    assert len(ROW_IDS) >= 4, ROW_IDS


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_each_row_on_the_trained_classifier_is_sane(row_id, model, float_only):
    row = quantized.row_by_id(row_id)
    if (reason := row.availability("cpu")) is not None:
        pytest.skip(reason)
    params, digits, training = model
    result = quantized.evaluate(params, digits, [row], SAMPLES, training).rows[0]
    assert result.status == "ok", result.status
    assert abs(result.accuracy - float_only.accuracy) <= ACCURACY_SLACK, (result.accuracy, float_only.accuracy)
    assert result.flipped <= ACCURACY_SLACK * SAMPLES
    T = digits.sequence_shape[0]
    assert result.step_max.shape == result.step_mean.shape == (T,)
    # Quantization changes every step's output (an error of exactly zero would mean the float path ran), and a little.
    assert np.all(result.step_max > 0) and np.all(result.step_mean > 0)
    assert np.all(result.step_mean <= result.step_max)
    assert np.all(result.step_max < LARGEST_ERROR), result.step_max
    # The row computes what its scheme says on these images, as the conformance suite judges it.
    assert result.matches, f"{row_id} leaves its integer reference: {result.where}"
    assert 0 <= result.worst_steps and result.step > 0


def test_the_command_writes_the_report_and_plot(tmp_path):
    available = [r for r in ROW_IDS if quantized.row_by_id(r).availability("cpu") is None]
    if not available:
        pytest.skip("no quantized row's framework is installed (pip install 'lstm-conformance[onnxruntime]', "
                    "'lstm-conformance[litert]' or torch)")
    status = quantized.main(["--quick", "--samples", "16", "--rows", available[0], "--out", str(tmp_path)])
    assert status == 0
    text = (tmp_path / "quantized.md").read_text()
    assert available[0] in text and "float spec (float32)" in text and "t = 8" in text
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'lstm-conformance[train]')")
    assert (tmp_path / "quantized.png").stat().st_size > 0


@pytest.mark.parametrize("argv, says", [(["--samples", "0"], "--samples must be at least 1"),
                                        (["--rows", "torch/nn.LSTM"], "--rows must name quantized rows"),
                                        (["--from", "/nonexistent"], "--from must be")])
def test_usage_errors_exit_2_naming_the_option(argv, says, capsys):
    with pytest.raises(SystemExit) as exit:
        quantized.parse(argv)
    assert exit.value.code == 2
    assert says in capsys.readouterr().err
