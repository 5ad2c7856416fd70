"""PyTorch's speed on CPU, float32, at B=64, T=25, I=H=512: the adapters against torch.nn.LSTM called natively.

    python -m pytest bench/test_torch_speed.py -p no:cacheprovider

Targets: the torch/nn.LSTM adapter (NumPy in, NumPy out) adds at most 5% to the native module's
forward; torch/peephole (the spec's equations in torch ops) runs within 1.3x of torch.nn.LSTM,
forward and forward+backward. "Native" means the module called on torch tensors whose weights are
already in its layout: forward under torch.inference_mode() (as the adapter's forward), and
forward+backward as torch.autograd.grad of the same loss with respect to the same tensors (x, h0,
c0 and the four weights) as the adapter's backward.

Each figure has its own pytest-benchmark run (``measure``), and the ratios are also measured with
the runs interleaved round by round (test_side_by_side), so that the drifts of a shared virtual
machine hit all of them alike; the summary at the end of the run judges both (bench.timing.check_target:
a missed target is reported as MISSED and fails the run only with --bench-fail-on-target).
"""

from __future__ import annotations

import pytest

from bench.matrix import BENCH_CASE
from bench.timing import interleaved, lstm_flop, separate_run_target
from spec.cases import make_case_data

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install 'lstm-conformance[torch]'")

from backends.layouts.torch import NN_LSTM  # noqa: E402
from backends.registry import row_by_id  # noqa: E402
from backends.runtimes.torch import TORCH  # noqa: E402
from contract.answers import Cotangents  # noqa: E402

CASE = BENCH_CASE
DTYPE = "float32"
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
LAYER = CASE.layer  # one forward layer: the cell

#: (numerator, denominator, maximum time ratio, what it means)
TARGETS = (
    ("torch/nn.LSTM adapter forward", "torch nn.LSTM native forward", 1.05, "adapter overhead on nn.LSTM's forward"),
    ("torch/peephole forward", "torch nn.LSTM native forward", 1.3, "torch/peephole forward vs nn.LSTM"),
    ("torch/peephole forward+backward", "torch nn.LSTM native forward+backward", 1.3, "torch/peephole forward+backward vs nn.LSTM"),
)


@pytest.fixture(scope="module", autouse=True)
def configured(request):
    """torch's CPU settings (the runtime's, as every row call has them); the targets on the separately timed figures,
    judged at the end of the run."""
    for numerator, denominator, maximum, meaning in TARGETS:
        separate_run_target(request.config, f"{meaning} (separate runs)", numerator, denominator, of="time", at_most=maximum)
    TORCH.prepare("cpu")
    yield


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE, DTYPE)


class Native:
    """torch.nn.LSTM with the case's weights already in its layout, inputs already tensors."""

    def __init__(self, data):
        params = data.params
        self.module = torch.nn.LSTM(params.input_size, params.hidden_size, dtype=torch.float32)
        self.module.load_state_dict({k: torch.from_numpy(v) for k, v in NN_LSTM.to_native(params, LAYER).items()})
        self.x = torch.from_numpy(data.x).requires_grad_()
        self.h0 = torch.from_numpy(data.h0).requires_grad_()
        self.c0 = torch.from_numpy(data.c0).requires_grad_()
        self.cot = tuple(torch.from_numpy(a) for a in (data.dy, data.dh_T, data.dc_T))
        self.wrt = (self.x, self.h0, self.c0, *self.module.parameters())

    def forward(self):
        with torch.inference_mode():
            return self.module(self.x, (self.h0, self.c0))

    def forward_backward(self):
        y, (h_T, c_T) = self.module(self.x, (self.h0, self.c0))
        return torch.autograd.grad((y, h_T, c_T), self.wrt, grad_outputs=self.cot)


@pytest.fixture(scope="module")
def runs(data):
    native = Native(data)
    adapter, peephole = row_by_id("torch/nn.LSTM"), row_by_id("torch/peephole")
    args = (data.params, data.x, data.h0, data.c0)
    cotangents = Cotangents(data.dy, data.dh_T, data.dc_T)
    return {
        "torch nn.LSTM native forward": native.forward,
        "torch/nn.LSTM adapter forward": lambda: adapter.forward(*args, layer=LAYER),
        "torch/peephole forward": lambda: peephole.forward(*args, layer=LAYER),
        "torch nn.LSTM native forward+backward": native.forward_backward,
        "torch/peephole forward+backward": lambda: peephole.backward(*args, cotangents, layer=LAYER),
    }


def _flop(name: str) -> float:
    return 3 * FLOP if name.endswith("forward+backward") else FLOP


@pytest.mark.parametrize(
    "name",
    [
        "torch nn.LSTM native forward",
        "torch/nn.LSTM adapter forward",
        "torch/peephole forward",
        "torch nn.LSTM native forward+backward",
        "torch/peephole forward+backward",
    ],
)
def test_speed(measure, runs, name):
    measure(name, runs[name], flop=_flop(name))


def test_side_by_side(benchmark, speed_target, runs):
    """All five alternate round by round (21 rounds, after a warm-up), each round starting one further
    along the list so that none always follows the same one: the ratios' fair measurement."""
    medians, _ = interleaved(runs, rounds=21, warmup=1)
    benchmark.extra_info.update({f"median_s {name}": m for name, m in medians.items()})
    for numerator, denominator, _, _ in TARGETS:
        benchmark.extra_info[f"ratio {numerator} / {denominator}"] = medians[numerator] / medians[denominator]
    # pytest-benchmark needs one timed call; the figures above are the result.
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    for numerator, denominator, maximum, meaning in TARGETS:
        speed_target(
            f"{meaning} (interleaved)", medians[numerator] / medians[denominator], at_most=maximum,
            detail=f"{medians[numerator] * 1e3:.2f} / {medians[denominator] * 1e3:.2f} ms (medians)",
        )
