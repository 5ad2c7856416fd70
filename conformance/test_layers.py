"""Every implementation's LSTM layer (directions, stacks, projection, clips, coupled gates, lengths, masks:
spec/layer.py) against the spec in float64: outputs (y, h_T, c_T) and gradients (x, h0, c0, every cell's
W, U, b, p, W_hr). An implementation runs the features it declares (Implementation.layer_features)."""

import pytest

from conformance.runner import judge


def test_layer_forward(request, implementation, run, layer_case):
    judge(request, implementation, run, layer_case, "layer outputs")


@pytest.mark.gradients
def test_layer_gradients(request, implementation, run, layer_case):
    judge(request, implementation, run, layer_case, "layer gradients")
