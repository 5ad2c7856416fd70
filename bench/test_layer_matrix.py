"""The layer's benchmark: a deep bidirectional stack (Braun's 4 x 320 over 123 features, bench/matrix.py), per
implementation, padded against variable lengths on the same data, forward and forward+backward.

    python3 dev.py bench bench/test_layer_matrix.py                          the quick set (T = 100)
    python3 dev.py bench bench/test_layer_matrix.py --bench-set full         Braun's T = 1000 too
    python -m bench.report RUN.json --markdown report.md                     the tables, with the ratios

"Padded" runs every row all T steps, as a framework without lengths must; "variable" gives each row its
length, through what the implementation has: sequence lengths (PyTorch's packed sequences, ONNX's
sequence_lens, flax's seq_lengths, TF1's sequence_length) or else a mask (Keras). The report sets the two side
by side: their ratio is what variable lengths cost or save in that framework (PyTorch users report packed
sequences several times slower than padded: here it is measured). Every timed result is first checked against
the spec (bench/correctness.py); rows are timed through their layer entry points (NumPy in and out, as the
report says) unless they supply a device-resident layer pass.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import pytest

from backends.base import NotSupported, Unavailable
from backends.config import layer_features
from backends.registry import builtin_implementations
from backends.timing import Timing
from bench import correctness
from bench.conftest import bench_devices
from bench.matrix import LENGTHS, PASSES, layer_flop, layer_shapes_in, time_rounds
from spec.layer import LayerConfig, mask_from_lengths
from spec.layer_cases import LayerCase, make_layer_case_data


def pytest_generate_tests(metafunc):
    if "layer_shape" not in metafunc.fixturenames:
        return
    config = metafunc.config
    wanted = config.getoption("--bench-impl")
    impls = [impl for impl in builtin_implementations() if impl.layer_features is not None and (not wanted or any(w in impl.id for w in wanted))]
    params = [
        pytest.param(impl, device, shape, lengths, pass_, id=f"{impl.id}-{device}-{shape.name}-{lengths}-{pass_}")
        for shape in layer_shapes_in(config.getoption("--bench-set"))
        for pass_ in PASSES
        for device in bench_devices(config)
        for impl in impls
        for lengths in LENGTHS
    ]
    metafunc.parametrize(("impl", "device", "layer_shape", "lengths", "pass_"), params)


@lru_cache(maxsize=2)
def _data(shape):
    """The shape's data (float32), with the variable lengths; the padded runs leave the lengths out."""
    config = LayerConfig(num_layers=shape.L, direction="bidirectional", zero_output_for_mask=True)
    case = LayerCase(shape.name, shape.T, shape.B, shape.I, shape.H, config, lengths=shape.lengths, seed=2026)
    return make_layer_case_data(case, "float32")


def _how(impl, lengths: str) -> str | None:
    """How the implementation takes variable lengths: "lengths" (packed and the like) or "mask"; None padded."""
    if lengths == "padded":
        return None
    for feature in ("lengths", "mask"):
        if feature in impl.layer_features:
            return feature
    raise NotSupported(f"{impl.id} takes neither sequence lengths nor a mask")


def test_layer(benchmark, request, impl, device, layer_shape, lengths, pass_):
    if (reason := impl.availability(device)) is not None:
        pytest.skip(f"unavailable: {reason}")
    gradients = pass_ == "forward+backward"
    timing = Timing(variant="standard", dtype="float32", device=device, gradients=gradients)
    data = _data(layer_shape)
    try:
        how = _how(impl, lengths)
        inputs = {"lengths": data.lengths if how == "lengths" else None,
                  "mask": mask_from_lengths(data.lengths, layer_shape.T) if how == "mask" else None}
        impl.check_layer(timing.source_config, data.config, inputs["lengths"], inputs["mask"], gradients=gradients)
        features = layer_features(data.config, inputs["lengths"], inputs["mask"])
        if impl.known_failure("layer gradients" if gradients else "layer outputs", timing.source_config, features, None):
            pytest.skip("known non-conformance: not timed")
        timed = impl.timed_layer_pass(data.params, data.x, data.h0, data.c0, data.cotangents(), layer=data.config,
                                      timing=timing, **inputs)
        timed.run()  # warm-up: traces, compilation, weight conversion
    except (NotSupported, Unavailable) as error:
        pytest.skip(f"not supported: {error}")
    # The padded runs compute every row all T steps: the reference is the spec with every length T.
    reference_data = data if how else _padded(data)
    error = correctness.check(timed.result(), correctness.layer_reference(reference_data, gradients), "float32")
    median = time_rounds(benchmark, timed.run, request.config.getoption("--bench-seconds"), least=3, most=50)
    useful = layer_flop(layer_shape, pass_, steps=float(np.sum(data.lengths)))
    benchmark.extra_info.update(
        layer_matrix=True, implementation=impl.id, device=device, shape=layer_shape.name, lengths=lengths,
        how=how or "padded", pass_=pass_, dtype="float32", B=layer_shape.B, T=layer_shape.T, I=layer_shape.I,
        H=layer_shape.H, L=layer_shape.L, directions=2, row_steps=int(np.sum(data.lengths)) if how else layer_shape.B * layer_shape.T,
        flop=layer_flop(layer_shape, pass_) if not how else useful, useful_gflops=useful / median / 1e9,
        relative_error_vs_spec=error, device_resident=timed.resident,
        threads=os.environ.get("LSTMC_THREADS", "framework default"),
    )


@lru_cache(maxsize=2)
def _padded(data):
    """The same data without lengths: what a padded run computes (every row all T steps)."""
    from dataclasses import replace

    return replace(data, case=replace(data.case, lengths=None), lengths=None)
