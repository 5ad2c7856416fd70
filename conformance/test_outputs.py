"""Every implementation's outputs (y, h_T, c_T) against the spec in float64, on every case: the cell's (one forward
layer) and the layer's (directions, stacks, projection, clips, coupled gates, lengths, masks)."""

from contract.vocabulary import Kind
from conformance.judge import judge


def test_outputs(request, row, dtype, device, case):
    judge(request, row, Kind.OUTPUTS, dtype, device, case)
