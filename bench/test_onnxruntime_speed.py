"""ONNX Runtime's LSTM on CPU, float32, B=64, T=25, I=H=512: called natively vs through its adapter.

    .venv/bin/python -m pytest bench/test_onnxruntime_speed.py -p no:cacheprovider

"native" is InferenceSession.run on feeds already in ONNX's layout; "adapter" converts the
canonical weights (cached per parameter set) and runs the same session. Target: the adapter adds
at most 5%, judged on interleaved rounds (bench.conftest.interleaved) by bench.conftest.check_target
(a missed target is reported as MISSED and fails the run only with --bench-fail-on-target).
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="pip install 'lstm-conformance[onnxruntime]'")

from backends import onnx_lstm  # noqa: E402
from backends.base import Config  # noqa: E402
from backends.onnxruntime_lstm import OnnxRuntimeLSTM, _session  # noqa: E402
from bench.conftest import interleaved, lstm_flop, ratio  # noqa: E402
from bench.matrix import BENCH_CASE  # noqa: E402
from spec.cases import make_case_data  # noqa: E402

CASE = BENCH_CASE
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
CONFIG = Config("standard", "float32", "cpu")
MAX_OVERHEAD = 1.05
ADAPTER = OnnxRuntimeLSTM()


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE, "float32")


@pytest.fixture(scope="module")
def native(data):
    session = _session(CASE.I, CASE.H, False, "cpu")
    feeds = onnx_lstm.feeds(onnx_lstm.to_onnx(data.params), data.x, data.h0, data.c0)
    return lambda: session.run(None, feeds)


@pytest.fixture(scope="module")
def adapter(data):
    return lambda: ADAPTER.forward(data.params, data.x, data.h0, data.c0, forget_bias=0.0, config=CONFIG)


def test_onnxruntime_native_forward(measure, native):
    measure("onnxruntime native forward", native, flop=FLOP)


def test_onnxruntime_adapter_forward(measure, adapter):
    measure("onnxruntime/LSTM adapter forward", adapter, flop=FLOP)


def test_adapter_overhead_interleaved(benchmark, speed_target, native, adapter):
    medians, times = interleaved({"native": native, "adapter": adapter})
    overhead = ratio(times, "adapter", "native")
    benchmark.extra_info.update({f"median_ms {k}": v * 1e3 for k, v in medians.items()}, adapter_over_native=overhead)
    print(f"\nonnxruntime/LSTM: native {medians['native'] * 1e3:.2f} ms, adapter {medians['adapter'] * 1e3:.2f} ms, "
          f"adapter/native {overhead:.3f} (target <= {MAX_OVERHEAD})")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    speed_target("onnxruntime/LSTM adapter / native forward", overhead, at_most=MAX_OVERHEAD,
                 detail="median of per-round ratios, interleaved rounds")
