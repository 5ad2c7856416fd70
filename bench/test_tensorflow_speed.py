"""TensorFlow's LSTMs on CPU, float32, B=64, T=25, I=H=512: each called natively vs through its adapter.

    .venv/bin/python -m pytest bench/test_tensorflow_speed.py -p no:cacheprovider

"native" calls the framework inside a tf.function on TensorFlow tensors already in its layout
(weights already set); "adapter" goes through the row's forward() (backends/rows/keras.py, backends/rows/tensorflow.py)
with the canonical NumPy inputs (the contract's checks, time-major, converted to tensors, Keras' batch-major
transposes, results back to NumPy).
Both materialise their results (.numpy()) inside the timed region. Target: the adapter adds at
most 5% (checked on interleaved rounds, so that drifts of a shared machine hit both sides;
the separately timed figures are reported beside them), judged by bench.timing.check_target: a
missed target is reported as MISSED and fails the run only with --bench-fail-on-target.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
# The Keras row runs in this process (as a user's code does) only on its own backend; elsewhere it runs in a
# child process, and this bench would time the pipe.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
pytest.importorskip("tensorflow", reason="pip install 'lstm-conformance[tensorflow]'")

from backends.layouts.keras import cell_to_native  # noqa: E402
from backends.layouts.tf_block import BLOCK_V1  # noqa: E402
from backends.registry import row_by_id  # noqa: E402
from backends.runtimes.tensorflow import tensorflow  # noqa: E402
from bench.matrix import BENCH_CASE  # noqa: E402
from bench.timing import interleaved, lstm_flop  # noqa: E402
from bench.timing import ratio as interleaved_ratio  # noqa: E402
from spec.cases import make_case_data  # noqa: E402

CASE = BENCH_CASE
LAYER = CASE.layer
FLOP = lstm_flop(CASE.T, CASE.B, CASE.I, CASE.H)
MAX_OVERHEAD = 1.05
INTERLEAVED_ROUNDS = 21

KERAS = row_by_id("keras-tensorflow/LSTM")
BLOCK = row_by_id("tensorflow/BlockLSTM")


@pytest.fixture(scope="module")
def data():
    return make_case_data(CASE, "float32")


@pytest.fixture(scope="module")
def tf():
    return tensorflow()


@pytest.fixture(scope="module")
def keras_native(tf, data):
    """keras.layers.LSTM built and loaded once, called in a tf.function on batch-major tensors."""
    import keras

    native = cell_to_native(data.params.cells[0])
    layer = keras.layers.LSTM(CASE.H, return_sequences=True, return_state=True, dtype="float32")
    layer.build((None, None, CASE.I))
    layer.set_weights([native["kernel"], native["recurrent_kernel"], native["bias"]])
    call = tf.function(lambda x, h0, c0: layer(x, initial_state=[h0, c0]))
    x = tf.constant(np.ascontiguousarray(data.x.transpose(1, 0, 2)))
    h0, c0 = tf.constant(data.h0[0]), tf.constant(data.c0[0])

    def run():
        return [t.numpy() for t in call(x, h0, c0)]

    return run


@pytest.fixture(scope="module")
def block_native(tf, data):
    """tf.raw_ops.BlockLSTM in a tf.function on time-major tensors, its attributes explicit."""
    native = BLOCK_V1.to_native(data.params, LAYER)
    w, wci, wcf, wco, b = (tf.constant(native[k]) for k in ("w", "wci", "wcf", "wco", "b"))
    attrs = {k: native[k] for k in ("forget_bias", "cell_clip", "use_peephole")}

    @tf.function
    def call(x, h0, c0):
        _, cs, _, _, _, _, h = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.constant(CASE.T, tf.int64), x=x, cs_prev=c0, h_prev=h0, w=w, wci=wci, wcf=wcf, wco=wco, b=b, **attrs
        )
        return h, h[-1], cs[-1]

    x, h0, c0 = tf.constant(data.x), tf.constant(data.h0[0]), tf.constant(data.c0[0])

    def run():
        return [t.numpy() for t in call(x, h0, c0)]

    return run


def adapter(row, data):
    return lambda: row.forward(data.params, data.x, data.h0, data.c0, layer=LAYER)


def test_keras_native_forward(measure, keras_native):
    measure("keras.LSTM native forward", keras_native, flop=FLOP)


def test_keras_adapter_forward(measure, data):
    measure("keras-tensorflow/LSTM adapter forward", adapter(KERAS, data), flop=FLOP)


def test_block_native_forward(measure, block_native):
    measure("BlockLSTM native forward", block_native, flop=FLOP)


def test_block_adapter_forward(measure, data):
    measure("tensorflow/BlockLSTM adapter forward", adapter(BLOCK, data), flop=FLOP)


#: The rows timed against each native API.
ROW_IDS = {"keras.LSTM": "keras-tensorflow/LSTM", "BlockLSTM": "tensorflow/BlockLSTM"}


@pytest.mark.parametrize("which", list(ROW_IDS))
def test_adapter_overhead_interleaved(benchmark, speed_target, which, keras_native, block_native, data):
    """Native and adapter alternate round by round (which goes first alternates too). The overhead is the
    median of the per-round ratios adapter / native: a slow spell of the shared machine hits both calls
    of a round, so it cancels in the round's ratio; its target is 5% at most."""
    native, through_adapter = (keras_native, adapter(KERAS, data)) if which == "keras.LSTM" else (block_native, adapter(BLOCK, data))
    runs = {"native": native, "adapter": through_adapter}
    medians, times = interleaved(runs, rounds=INTERLEAVED_ROUNDS, warmup=1)  # warm-up: traces, weight conversion
    ratio = interleaved_ratio(times, "adapter", "native")
    benchmark.extra_info.update({f"median_ms {name}": m * 1e3 for name, m in medians.items()})
    benchmark.extra_info.update(adapter_over_native=ratio, ratio_of_medians=medians["adapter"] / medians["native"])
    print(f"\n{which}: native {medians['native'] * 1e3:.2f} ms, adapter {medians['adapter'] * 1e3:.2f} ms (medians of "
          f"{INTERLEAVED_ROUNDS} interleaved rounds; ratio of medians {medians['adapter'] / medians['native']:.3f}); "
          f"median per-round adapter/native = {ratio:.3f} (target <= {MAX_OVERHEAD})")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the figures above are the result
    speed_target(f"{ROW_IDS[which]} adapter / native forward", ratio, at_most=MAX_OVERHEAD,
                 detail="median of per-round ratios, interleaved rounds")
