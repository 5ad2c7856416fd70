"""LiteRT's (TFLite's) fused LSTM, ``UNIDIRECTIONAL_SEQUENCE_LSTM``, in models this project builds with TFLite's
flatbuffer schema (backends/runtimes/litert.py): one op per layer and direction, the weights constant, the states
variable tensors; layout backends/layouts/tflite.py.

    litert/UNIDIRECTIONAL_SEQUENCE_LSTM   every feature the op has, including those TFLite's converter does not
                                          reach from Keras 3 (which converts its LSTM to a WHILE loop): peepholes,
                                          the projection and its bias, cell_clip, proj_clip, CIFG (coupled gates)
                                          and layer normalization; stacks and directions around the ops

Each model is checked to run the fused op, one per layer and direction, in LiteRT's execution plan (a model whose
LSTM became other ops is refused, naming them). Forward only, float32 only: the op's version 1 is its float32
kernel; its other versions are hybrid and integer kernels (the quantized runtimes). No sequence lengths, no mask,
no gate clip: the op has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends.layouts.tflite import FUSED_OPS, direction_words, weight_name
from backends.runtimes.litert import (
    FUSED_LSTM,
    HYBRID_INT8,
    KNOWN_VERSIONS,
    LITERT,
    ModelError,
    int8_tensors,
    layer_model,
)
from contract.quantization import quantized_layer
from contract.row import Row
from contract.vocabulary import Dtype, Feature
from spec.quantized import ActivationScheme, Group, Rounding, Scaling, Scheme

OP_FEATURES = frozenset({Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.PROJECTION,
                         Feature.PROJ_CLIP, Feature.CELL_CLIP, Feature.COUPLED, Feature.LAYER_NORM, Feature.PROJ_BIAS})
NO_LENGTHS = (f"LiteRT's {FUSED_LSTM} has no sequence lengths: its kernel runs every batch row for all T steps "
              "(a model pads, or runs one row at a time)")
NO_MASK = f"LiteRT's {FUSED_LSTM} takes no mask of steps"
REASONS = {
    Dtype.FLOAT64: f"LiteRT's {FUSED_LSTM} has no float64 kernel (version 1 is float32; the others are integer)",
    Dtype.FLOAT16: (f"LiteRT's {FUSED_LSTM} has no float16 kernel: a float16 model stores its weights in float16 and "
                    "dequantizes them to float32 when it loads (DEQUANTIZE ops), so its LSTM computes in float32"),
    Dtype.BFLOAT16: f"LiteRT's {FUSED_LSTM} has no bfloat16 kernel",
    "gradients": "LiteRT is an inference runtime: it has no gradients",
    Feature.LENGTHS: NO_LENGTHS,
    Feature.EMPTY_SEQUENCES: NO_LENGTHS,
    Feature.MASK: NO_MASK,
    Feature.MASK_PREVIOUS_OUTPUT: NO_MASK,
}


@dataclass(eq=False)
class FusedStack:
    """One parameter set in the op's float32 inputs, and its models in interpreters, one per (T, B)."""

    native: dict
    input_size: int
    hidden_size: int
    output_size: int
    models: dict = field(default_factory=dict)


@dataclass(eq=False)
class LiteRtFusedLSTM(Row):
    id: str = "litert/UNIDIRECTIONAL_SEQUENCE_LSTM"
    description: str = ("LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM (version 1, float32), one op per layer and "
                        "direction in a model built from TFLite's schema")
    runtime: object = LITERT
    layout: object = FUSED_OPS
    features: frozenset = OP_FEATURES
    dtypes: tuple = (Dtype.FLOAT32,)
    gradients: bool = False
    reasons: dict = field(default_factory=lambda: dict(REASONS))

    def build(self, native, *, params, layer, device, half=None):
        return FusedStack({name: np.asarray(value, np.float32) for name, value in native.items()}, params.input_size,
                          params.hidden_size, params.output_size)

    def model(self, stack: FusedStack, layer, T: int, B: int):
        """The interpreter of the stack's model for x (T, B, I), built and checked once."""
        if (T, B) not in stack.models:
            content = layer_model(stack.native, layer, input_size=stack.input_size, hidden_size=stack.hidden_size,
                                  output_size=stack.output_size, T=T, B=B)
            stack.models[T, B] = self.runtime.fused(content, layer, where=f"{self.id} model")
        return stack.models[T, B]

    def call(self, stack, x, h0, c0, lengths, mask, *, layer):
        return self.model(stack, layer, x.shape[0], x.shape[1]).run(x, h0, c0)


#: LiteRT's hybrid kernel (tensorflow/lite/kernels/lstm_eval.cc, LstmStepHybrid; portable_tensor_utils.cc,
#: PortableSymmetricQuantizeFloats): each batch row of x_t, h_{t-1} and m_t quantized on its own every step,
#: symmetric, r = max|a|, s = r / 127, q = round(a * (127 / r)) ties away from zero within -127..127, r = 0 giving
#: q = 0 and s = 1; int8 x int8 products summed exactly in int32 (|q|, |w| <= 127 keep every int16 pair of the SSE/AVX2
#: kernel below 32767); each gate's float32 sum = bias + sum * (s_x s_W) + sum * (s_h s_U) (+ the dequantized peephole
#: times c).
_ROW = ActivationScheme(Group.ROW, -127, 127, symmetric=True, rounding=Rounding.HALF_AWAY, scaling=Scaling.RANGE_RATIO,
                        zero_range_scale=1.0)
HYBRID = Scheme("litert-hybrid", input=_ROW, recurrent=_ROW, projection=_ROW,
                source="tensorflow/lite/kernels/lstm_eval.cc (LstmStepHybrid), portable_tensor_utils.cc")

PER_CHANNEL = (f"LiteRT's hybrid {FUSED_LSTM} reads one scale per weight tensor (lstm_eval.cc GetTensorScale): it runs "
               "a per-channel tensor as if its scale were 0 (findings/litert_hybrid_lstm_per_channel_weights_scale_zero.py)")


@dataclass(eq=False)
class LiteRtHybridLSTM(LiteRtFusedLSTM):
    """The same models with every weight int8 (TFLite's converter's dynamic-range scheme, per tensor) and the op's
    version 2: LiteRT's hybrid kernel, judged against the integer reference (spec/quantized.py)."""

    id: str = "litert/UNIDIRECTIONAL_SEQUENCE_LSTM(hybrid)"
    description: str = ("LiteRT's hybrid fused UNIDIRECTIONAL_SEQUENCE_LSTM (version 2): int8 weights per tensor, "
                        "float32 activations quantized per batch row as it runs")
    quantization: object = HYBRID
    float_source: str = "litert/UNIDIRECTIONAL_SEQUENCE_LSTM"

    def model(self, stack: FusedStack, layer, T: int, B: int):
        if (T, B) not in stack.models:
            content = layer_model(stack.native, layer, input_size=stack.input_size, hidden_size=stack.hidden_size,
                                  output_size=stack.output_size, T=T, B=B, hybrid=True)
            stack.models[T, B] = self.runtime.fused(content, layer, where=f"{self.id} model")
        return stack.models[T, B]

    def quantized(self, stack: FusedStack, *, params, layer):
        """The int8 weights, scales and zero points of the stack's model, read from LiteRT's tensors."""
        model = next(iter(stack.models.values()), None) or self.model(stack, layer, 1, 1)
        int8_names = {weight_name(l, word, name) for l in range(layer.num_layers) for word in direction_words(layer)
                      for name in HYBRID_INT8}
        held = int8_tensors(model.interpreter, int8_names)
        for name, (_, scales, _) in held.items():
            if scales.size > 1:
                raise ModelError(f"{self.id} model: {name} is quantized per channel ({scales.size} scales): {PER_CHANNEL}")
        floats = {name: value for name, value in stack.native.items() if name not in held}
        return quantized_layer(self.layout, layer, integers={n: q for n, (q, _, _) in held.items()},
                               scales={n: s for n, (_, s, _) in held.items()},
                               zero_points={n: z for n, (_, _, z) in held.items()}, floats=floats)

    def _environment(self, device):
        environment = dict(super()._environment(device))
        environment["op"] = f"{FUSED_LSTM} version 2 ({KNOWN_VERSIONS[2]})"
        return {**environment, "quantization": HYBRID.describe()}


ROWS = (LiteRtFusedLSTM(), LiteRtHybridLSTM())

__all__ = ["HYBRID", "NO_LENGTHS", "OP_FEATURES", "PER_CHANNEL", "REASONS", "ROWS", "LiteRtFusedLSTM", "LiteRtHybridLSTM"]
