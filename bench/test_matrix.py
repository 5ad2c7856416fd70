"""The benchmark matrix: row x device x shape x pass x variant x dtype, on one table of shapes (bench/matrix.py).

    python3 dev.py bench bench/test_matrix.py                       the quick set, every installed backend
    python3 dev.py bench bench/test_matrix.py --bench-set full --benchmark-save=full
    python -m bench.report .benchmarks/*/0001_full.json --plots bench/results/plots

The cell's shapes (one forward layer: the MNIST row-by-row LSTM, DeepBench's shapes) are timed without and with
peepholes; Braun's stack of bidirectional layers padded (every row all T steps) and with each row its own length,
through what the row takes (sequence lengths: PyTorch's packed sequences, ONNX's sequence_lens, flax's and
jax.experimental.rnn's seq_lengths, TF1's sequence_length; else a mask: Keras), on the same data; the report sets
the two side by side.

float32 everywhere; float16 and bfloat16 for the rows judged in them (on a GPU also for the rows that only time
them), each row's half-type outputs first judged under the precision policy it declares (bench/correctness.py:
half_conformance; ``--bench-dtype`` chooses). Each
configuration is timed through the row's :meth:`~contract.row.Row.timed_pass`: the weights and inputs are
uploaded (and rounded to a half type) once, outside the timed region, and every timed call ends when the device has
finished (CUDA synchronised, jax blocked until ready, TensorFlow's results materialised); a row that cannot keep its
inputs on the device (its own hooks, its own process) is timed through NumPy, and the report says so. The first call
compiles, traces, builds and autotunes (its time is recorded as ``first_call_s``); the second, timed, sizes the
rounds (``--bench-seconds`` of them, within their bounds), and its result is checked against the spec before
anything is kept (bench/correctness.py); a quantized row's (``Row.quantization``) against the integer reference of
its scheme instead, its distance from the spec (the quantization error) recorded beside, with its float source's id
(``Row.float_source``) for the report to set the two side by side. A known non-conformance (declared with
its row) is not timed: it is skipped with its reason (the conformance suite is where it is judged, as a strict
xfail). Every result carries, in pytest-benchmark's extra_info: GFLOP/s (of the steps computed, and of the useful
ones, inside the lengths) and time steps per second at the median, the fraction of the roofline measured in the same
run for that device and dtype,
the error against the spec, whether the inputs stayed on the device, and DeepBench's published time for the shape
where there is one (see bench/matrix.py for the conventions).
"""

from __future__ import annotations

import os
import time
from functools import cache, lru_cache

import numpy as np
import pytest

from backends.runtimes.torch import TORCH, torch
from bench import correctness
from bench.matrix import (
    FORWARD_BACKWARD,
    Shape,
    Variant,
    bytes_moved,
    deepbench_ms,
    float_source,
    flop,
    roofline_fraction,
    shapes_in,
    unrolled_too_long,
)
from bench.timing import Rounds, bench_devices, bench_dtypes, bench_rows, time_rounds, timed_call
from contract.answers import Cotangents
from contract.errors import NotSupported, Unavailable
from contract.row import Row
from contract.timing import Timing
from contract.vocabulary import HALF_DTYPES, Device, Feature, Kind, features_of
from spec.cases import Case, CaseData, make_case_data
from spec.layer import mask_from_lengths

#: Rounds per configuration: as many as fit --bench-seconds (0.5 s: 50 rounds of a 10 ms call), at least LEAST (the
#: median of three for a call slower than S / 3: Braun's stack forward+backward takes 0.4 to 10 s a call), at most MOST.
LEAST_ROUNDS, MOST_ROUNDS = 3, 100


def pytest_generate_tests(metafunc):
    if "row" not in metafunc.fixturenames:
        return
    config = metafunc.config
    rows = bench_rows(config)
    params = []
    # Shape-major, so that consecutive configurations share the shape's data and the spec's answer on it; a row's
    # variants next to each other, so that the two the report compares are timed minutes apart at most.
    for shape in shapes_in(config.getoption("--bench-set")):
        for pass_ in shape.passes:
            for device in bench_devices(config):
                for dtype in bench_dtypes(config, device):
                    for row in rows:
                        for variant in shape.variants:
                            params.append(pytest.param(
                                row, device, shape, pass_, variant, dtype,
                                id=f"{row.id}-{device}-{shape.name}-{pass_}-{variant.name}-{dtype}",
                            ))
    metafunc.parametrize(("row", "device", "shape", "pass_", "variant", "dtype"), params)


def shape_data(shape: Shape, variant: Variant, dtype: str) -> CaseData:
    """The data of a shape's variant in the dtype the timed pass starts from (float32 for a half pass); padded and
    variable lengths share one."""
    return _case_data(shape.case(variant), str(dtype))


@lru_cache(maxsize=4)
def _case_data(case: Case, dtype: str) -> CaseData:
    return make_case_data(case, dtype)


def lengths_or_mask(row: Row, data: CaseData, variant: Variant) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """What a variant gives the row: (lengths, mask, how): nothing padded; else sequence lengths where the row takes
    them, a mask (t < L_b, zero outputs) where it takes only that, and lengths (refused with its reason) otherwise."""
    if not variant.variable_lengths:
        return None, None, "padded"
    if Feature.MASK in row.features and Feature.LENGTHS not in row.features:
        return None, mask_from_lengths(data.lengths, data.case.T), "mask"
    return data.lengths, None, "lengths"


@cache
def roofline(device: str, dtype: str) -> tuple[float, float] | None:
    """(matrix-product FLOP/s in ``dtype``, memory bandwidth in bytes/s) on ``device``, measured now;
    None where it cannot be measured (a half type on the CPU without torch)."""
    # Large enough to reach the device's rates: an 8192^3 product and a 1 GiB copy on a GPU.
    n, big = (8192, 2**28) if device == Device.CUDA else (2048, 2**24)
    if device == Device.CPU and dtype in HALF_DTYPES:
        # A half-type product on a CPU may have no fast kernel (float16 without AVX-512 FP16: one 2048^3 product took
        # 42 s in torch 2.13 on an AVX-512 BF16 EPYC, bfloat16 0.04 s): a smaller one measures the same rate sooner.
        n = 512
    t = torch() if TORCH.availability(str(device)) is None else None
    if device == Device.CUDA or dtype in HALF_DTYPES:
        if t is None:
            return None
        TORCH.prepare(str(device))  # TF32 off, as every timed pass has it
        generator = t.Generator(str(device)).manual_seed(0)
        a = t.randn(n, n, device=str(device), generator=generator).to(getattr(t, str(dtype)))
        src = t.randn(big, device=str(device), generator=generator)
        sync = lambda: TORCH.synchronize(str(device))  # noqa: E731
        matmul_seconds = _median_seconds(lambda: (a @ a, sync()))
        return 2.0 * n**3 / matmul_seconds, 2 * 4 * big / _median_seconds(lambda: (src.clone(), sync()))
    a = np.random.default_rng(0).standard_normal((n, n)).astype(str(dtype))
    src = np.random.default_rng(1).standard_normal(big).astype(np.float32)
    dst = np.empty_like(src)
    matmul_seconds = _median_seconds(lambda: a @ a)
    if t is not None:  # the machine's rate is the fastest product here: torch's BLAS may beat NumPy's
        tensor = t.from_numpy(a)
        matmul_seconds = min(matmul_seconds, _median_seconds(lambda: tensor @ tensor))
    # A copy reads and writes every byte.
    return 2.0 * n**3 / matmul_seconds, 2 * 4 * big / _median_seconds(lambda: np.copyto(dst, src))


def _median_seconds(run) -> float:
    """The median of 7 timed calls, after one untimed."""
    run()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def test_lstm(benchmark, request, row, device, shape, pass_, variant, dtype):
    if (reason := row.availability(device)) is not None:
        pytest.skip(f"unavailable: {reason}")
    timing = Timing(dtype, device, gradients=pass_ == FORWARD_BACKWARD)
    layer = shape.config(variant)
    data = shape_data(shape, variant, timing.source_dtype)
    lengths, mask, how = lengths_or_mask(row, data, variant)
    reason = row.refusal(dtype=dtype, device=device, layer=layer, lengths=lengths, mask=mask, gradients=timing.gradients,
                         timed=True)
    if reason is not None:
        pytest.skip(f"not supported: {reason}")
    if timing.half and device == Device.CPU and dtype not in row.dtypes:
        pytest.skip(f"not timed: {row.id} is timed in {dtype} on a GPU only (it declares no precision policy for it)")
    if row.unrolled and (reason := unrolled_too_long(shape)) is not None:
        pytest.skip(f"not timed: {reason}")
    kind = Kind.GRADIENTS if timing.gradients else Kind.OUTPUTS
    known = row.known_failure(kind, dtype=timing.source_dtype, device=device, features=features_of(layer, lengths, mask))
    if known is not None:
        pytest.skip(f"known non-conformance, not timed: {known}")
    if timing.half and (known := row.known_failure(Kind.OUTPUTS, dtype=dtype, device=device, case=correctness.HALF_CASE)):
        pytest.skip(f"known non-conformance in {dtype}, not timed: {known}")
    if timing.half and (problem := correctness.half_conformance(row, str(dtype), str(device))) is not None:
        pytest.fail(f"not timed: {problem}", pytrace=False)
    cotangents = Cotangents(data.dy, data.dh_T, data.dc_T) if timing.gradients else None
    try:
        timed = row.timed_pass(data.params, data.x, data.h0, data.c0, cotangents, layer=layer, lengths=lengths, mask=mask,
                               timing=timing)
        first = timed_call(timed.run)  # traces, compiles, converts the weights, autotunes
        once = timed_call(timed.run)  # warm: sizes the rounds; its result is the one checked
    except (NotSupported, Unavailable) as error:
        pytest.skip(f"not supported: {error}")
    # A padded run computes every row all T steps: its reference is the spec with every length T.
    checked = correctness.padded(data) if how == "padded" else data
    result, error, quantized = timed.result(), None, None
    if row.quantization is None:
        error = correctness.check(result, correctness.reference(checked, timing.gradients), dtype)
    else:  # its integer reference, not the spec (bench/correctness.py)
        quantized = correctness.check_quantized(row, result, checked, layer=layer, lengths=lengths, mask=mask,
                                                device=device)
    absolute = None if timing.gradients else correctness.max_abs_error(result["y"], correctness.reference(checked, False)["y"])
    rounds = Rounds(request.config.getoption("--bench-seconds"), LEAST_ROUNDS, MOST_ROUNDS)
    median = time_rounds(benchmark, timed.run, rounds, once)
    measured = roofline(device, dtype)
    matmul_rate, bandwidth = measured if measured else (None, None)
    reference = deepbench_ms(shape, pass_)
    steps, useful = shape.row_steps(variant), shape.useful_row_steps
    benchmark.extra_info.update(
        matrix=True, implementation=row.id, device=str(device), shape=shape.name, pass_=pass_, variant=variant.name,
        dtype=str(dtype), B=shape.B, T=shape.T, I=shape.I, H=shape.H, L=shape.L, directions=shape.D, how=how,
        row_steps=steps, flop=flop(shape, pass_, steps), bytes=bytes_moved(shape, pass_, dtype),
        gflops=flop(shape, pass_, steps) / median / 1e9, useful_gflops=flop(shape, pass_, useful) / median / 1e9,
        steps_per_s=shape.T / median,
        roofline_fraction=roofline_fraction(shape, pass_, dtype, median, matmul_rate, bandwidth, steps) if measured else None,
        matmul_gflops=matmul_rate / 1e9 if measured else None, bandwidth_gbs=bandwidth / 1e9 if measured else None,
        relative_error_vs_spec=error, device_resident=timed.resident, first_call_s=first,
        deepbench_ms=reference[0] if reference else None, deepbench_source=reference[1] if reference else None,
        threads=os.environ.get("LSTMC_THREADS", "framework default"), max_abs_error_vs_spec=absolute,
    )
    if quantized is not None:
        benchmark.extra_info.update(
            quantization=row.quantization.name, float_source=float_source(row), row_threads=row_threads(row, device),
            quantization_error=quantized.quantization_error, dequantization_step=quantized.step,
            worst_steps_vs_integer_reference=quantized.worst_steps, forced_steps=quantized.forced,
            unverified=quantized.unverified)
    else:  # every row's threads: a quantized row's float source is set beside it with them
        benchmark.extra_info.update(row_threads=row_threads(row, device))


def row_threads(row: Row, device: str):
    """The threads the row runs on, as its runtime's environment records them (None where it records none)."""
    environment = row.environment(device)
    return next((environment[k] for k in ("intra_op_threads", "num_threads", "threads") if k in environment), None)
