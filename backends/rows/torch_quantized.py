"""PyTorch's dynamically quantized LSTM, ``torch.ao.nn.quantized.dynamic.LSTM``: ``torch.nn.LSTM`` holding the
case's weights, quantized by ``torch.ao.quantization.quantize_dynamic`` (its default dynamic qconfig: int8 weights per
tensor, symmetric) under one quantized engine, called as ``torch/nn.LSTM`` is (packed sequences for lengths); layout
backends/layouts/torch.py.

    torch.ao/quantized.dynamic.LSTM(fbgemm)    FBGEMM's kernels (x86): activations quantized to 7 bits
    torch.ao/quantized.dynamic.LSTM(qnnpack)   QNNPACK's kernels: 8 bits (it ignores reduce_range, and warns)

Each judged against the integer reference of its engine's scheme (spec/quantized.py), the integers, scales and zero
points unpacked from the quantized module. torch.ao.quantization is deprecated towards torchao (which has no
quantized LSTM); torch 2.13 still ships it. Forward only, float32, CPU (the quantized engines are CPU kernels).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from backends.rows.torch import TorchLSTM, _load, _module, run_lstm
from backends.runtimes.torch import torch
from contract.quantization import quantized_layer
from contract.row import KnownFailure
from contract.vocabulary import Device, Dtype, Feature, Kind
from spec.quantized import ActivationScheme, EndedRows, Group, Padding, Rounding, Scaling, Scheme

#: FBGEMM (aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp apply_dynamic; QuantUtils.h
#: ChooseQuantizationParams): the input product computed for every step at
#: once (RNN.cpp FullLayer: linear_ih over the whole (T, B, I)), so x, and each layer's input, is quantized as one
#: tensor; h_{t-1} each step; lo = min(a, 0), hi = max(a, 0), s = (hi - lo) / 127 in double (the LSTM always passes
#: reduce_range: 7-bit activations), 0.1 when the range is empty, z = rint(-lo / s); q = rint(fma(a, fl32(1 / s), z))
#: within 0..127, the zero point added before the one rounding (measured on activations one ulp from a tie: every one
#: as the fma rounds, thousands apart from rint(a / s) + z; tests/backends/test_quantized_rows.py); int8 weights (zero point 0) summed exactly in int32 (with 7-bit activations no int16 pair of AVX2's
#: vpmaddubsw can saturate: 127 * 128 * 2 < 32767); out = fma(acc, fl32(s s_W), bias). With packed sequences the
#: padded steps are no part of the data, and a step's h block holds the rows that run it.
_FBGEMM = ActivationScheme(Group.SEQUENCE, 0, 127, rounding=Rounding.HALF_EVEN, scaling=Scaling.RECIPROCAL_FMA,
                           zero_range_scale=0.1, float64_parameters=True)
FBGEMM = Scheme("fbgemm-dynamic-7bit", input=_FBGEMM, recurrent=replace(_FBGEMM, group=Group.STEP),
                padding=Padding.OUT_OF_RANGE, ended_rows=EndedRows.EXCLUDED,
                source="aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp, QuantUtils.h, RNN.cpp (FullLayer); "
                       "the rounding measured on near-ties")
#: QNNPACK (aten/src/ATen/native/quantized/cpu/qnnpack, 4x4c2-dq-sse2.c): the same grouping, parameters and rounding
#: over 0..255 (reduce_range ignored),
#: the weights stored as uint8 = int8 + 128 with zero point 128 (the same products), summed in int32 by 16-bit
#: multiplies (no saturation); out = acc * fl32(s_W s) + bias.
_QNNPACK = replace(_FBGEMM, q_max=255)
QNNPACK = Scheme("qnnpack-dynamic-8bit", input=_QNNPACK, recurrent=replace(_QNNPACK, group=Group.STEP),
                 padding=Padding.OUT_OF_RANGE, ended_rows=EndedRows.EXCLUDED,
                 source="aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp (qnnpack), qnnpack 4x4c2-dq-sse2.c")

NO_PROJECTION = (
    "torch.ao.quantization.quantize_dynamic quantizes a projected nn.LSTM (proj_size) without a word and its forward "
    "then raises \"The number of rows in the packB should be equal to K\": the quantized LSTM packs no projection "
    "(pytorch/pytorch#74953, #60008, open). Reproducer: findings/torch_quantize_dynamic_lstm_projection_fails.py")


@contextlib.contextmanager
def engine(name: str):
    """torch.backends.quantized.engine set to ``name`` for the block (it is global state), restored after."""
    backends = torch().backends.quantized
    previous = backends.engine
    backends.engine = name
    try:
        yield
    finally:
        backends.engine = previous


@dataclass(eq=False)
class TorchDynamicQuantizedLSTM(TorchLSTM):
    id: str = "torch.ao/quantized.dynamic.LSTM(fbgemm)"
    description: str = ("torch.ao.nn.quantized.dynamic.LSTM under the fbgemm engine (quantize_dynamic of nn.LSTM: int8 "
                        "weights per tensor, 7-bit activations quantized as it runs)")
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.LENGTHS, Feature.PROJECTION})
    devices: tuple = (Device.CPU,)
    dtypes: tuple = (Dtype.FLOAT32,)
    gradients: bool = False
    quantization: object = FBGEMM
    float_source: str = "torch/nn.LSTM"
    #: The quantized engine (torch.backends.quantized.engine) it is built and called under.
    engine: str = "fbgemm"
    known_failures: tuple = (KnownFailure(NO_PROJECTION, kinds=(Kind.OUTPUTS,), features={Feature.PROJECTION}),)
    reasons: dict = field(default_factory=lambda: {
        **TorchLSTM().reasons,
        Dtype.FLOAT64: "torch's dynamically quantized LSTM takes float32 activations (its weights are int8)",
        Device.CUDA: "torch's quantized engines (fbgemm, qnnpack) are CPU kernels",
        "gradients": "torch's dynamically quantized LSTM holds packed int8 weights: an inference module"})

    def _availability(self, device):
        problem = self.runtime.availability(device)
        if problem is None and self.engine not in torch().backends.quantized.supported_engines:
            problem = (f"this torch build has no {self.engine} quantized engine (it has "
                       f"{', '.join(torch().backends.quantized.supported_engines)})")
        return problem

    def build(self, native, *, params, layer, device, half=None):
        t = torch()
        module = _load(_module(params, layer, device, t.float32), native, device)
        with engine(self.engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation, qnnpack's reduce_range notice
            wrapped = t.ao.quantization.quantize_dynamic(t.nn.Sequential(module), {t.nn.LSTM}, dtype=t.qint8)
        quantized = wrapped[0]
        if type(quantized).__module__.split(".")[:5] != ["torch", "ao", "nn", "quantized", "dynamic"]:
            raise RuntimeError(f"quantize_dynamic left the LSTM a {type(quantized).__name__}, not quantized")
        return quantized

    def call(self, module, x, h0, c0, lengths, mask, *, layer):
        with engine(self.engine), torch().no_grad():
            return run_lstm(module, x, h0, c0, lengths)

    def quantized(self, module, *, params, layer):
        """Every layer and direction's int8 weight_ih and weight_hh, their scales and zero points, and the biases,
        unpacked from the module's packed parameters (its _all_weight_values, layer-major, direction-minor)."""
        t = torch()
        integers, scales, zero_points, floats = {}, {}, {}, {}
        D = layer.num_directions
        for k, packed in enumerate(module._all_weight_values):
            l, d = divmod(k, D)
            suffix = f"_l{l}" + ("_reverse" if d else "")
            _, _, _, _, packs = packed.param.__getstate__()[0]
            for kind, pack in zip(("ih", "hh"), packs):
                weight, bias = t.ops.quantized.linear_unpack(pack)
                name = f"weight_{kind}{suffix}"
                integers[name] = weight.int_repr().numpy()
                if weight.qscheme() in (t.per_tensor_affine, t.per_tensor_symmetric):
                    scales[name], zero_points[name] = np.float64(weight.q_scale()), np.int64(weight.q_zero_point())
                else:  # one per output channel (axis 0): laid out against (4H, K)
                    scales[name] = weight.q_per_channel_scales().numpy()[:, None]
                    zero_points[name] = weight.q_per_channel_zero_points().numpy()[:, None]
                floats[f"bias_{kind}{suffix}"] = bias.detach().numpy()
        return quantized_layer(self.layout, layer, integers=integers, scales=scales, zero_points=zero_points,
                               floats=floats)

    def _environment(self, device):
        environment = dict(super()._environment(device))
        return {**environment, "quantized_engine": self.engine, "quantization": self.quantization.describe()}


ROWS = (
    TorchDynamicQuantizedLSTM(),
    TorchDynamicQuantizedLSTM(id="torch.ao/quantized.dynamic.LSTM(qnnpack)", engine="qnnpack", quantization=QNNPACK,
                              description="torch.ao.nn.quantized.dynamic.LSTM under the qnnpack engine (int8 weights "
                                          "per tensor, 8-bit activations quantized as it runs)"),
)

__all__ = ["FBGEMM", "NO_PROJECTION", "QNNPACK", "ROWS", "TorchDynamicQuantizedLSTM", "engine"]
