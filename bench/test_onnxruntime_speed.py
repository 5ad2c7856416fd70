"""ONNX Runtime's LSTM on CPU, float32, B=64, T=25, I=H=512: called natively vs through its adapter.

    .venv/bin/python -m pytest bench/test_onnxruntime_speed.py -p no:cacheprovider

"native" is InferenceSession.run on feeds already in ONNX's layout (the graph the row runs, made by the same
public functions, in a session of its own); "adapter" is the row's forward(): the contract's checks, the
canonical weights converted (cached per parameter set), the row's session. Target: the adapter adds
at most 5%, judged on interleaved rounds (bench.timing.interleaved) by bench.timing.check_target
(a missed target is reported as MISSED and fails the run only with --bench-fail-on-target).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install 'lstm-conformance[onnxruntime]'")
pytest.importorskip("onnx", reason="the ONNX graphs are built with onnx: pip install 'lstm-conformance[onnxruntime]'")

from backends.layouts.onnx import LSTM_NODES, weight_name  # noqa: E402
from backends.registry import row_by_id  # noqa: E402
from backends.runtimes.onnx import layer_feeds, layer_model  # noqa: E402
from backends.runtimes.onnxruntime import ONNXRUNTIME  # noqa: E402
from bench.matrix import BENCH_CASE  # noqa: E402
from bench.timing import interleaved, lstm_flop, ratio  # noqa: E402
from spec.cases import make_case_data  # noqa: E402

CASE = BENCH_CASE
LAYER = CASE.layer
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
MAX_OVERHEAD = 1.05
ADAPTER = row_by_id("onnxruntime/LSTM")


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE, "float32")


@pytest.fixture(scope="module")
def native(data):
    model = layer_model(CASE.I, CASE.H, LAYER, np.float32, lengths=False, weight_name=weight_name)
    session = ONNXRUNTIME.session(model, "cpu")
    feeds = layer_feeds(LSTM_NODES.to_native(data.params, LAYER), data.x, data.h0, data.c0, None)
    return lambda: session.run(None, feeds)


@pytest.fixture(scope="module")
def adapter(data):
    return lambda: ADAPTER.forward(data.params, data.x, data.h0, data.c0, layer=LAYER)


def test_onnxruntime_native_forward(measure, native):
    measure("onnxruntime native forward", native, flop=FLOP)


def test_onnxruntime_adapter_forward(measure, adapter):
    measure("onnxruntime/LSTM adapter forward", adapter, flop=FLOP)


def test_adapter_overhead_interleaved(benchmark, speed_target, native, adapter):
    medians, times = interleaved({"native": native, "adapter": adapter}, rounds=21, warmup=1)
    overhead = ratio(times, "adapter", "native")
    benchmark.extra_info.update({f"median_ms {k}": v * 1e3 for k, v in medians.items()}, adapter_over_native=overhead)
    print(f"\nonnxruntime/LSTM: native {medians['native'] * 1e3:.2f} ms, adapter {medians['adapter'] * 1e3:.2f} ms, "
          f"adapter/native {overhead:.3f} (target <= {MAX_OVERHEAD})")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    speed_target("onnxruntime/LSTM adapter / native forward", overhead, at_most=MAX_OVERHEAD,
                 detail="median of per-round ratios, interleaved rounds")
