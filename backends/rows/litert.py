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

from backends.layouts.tflite import FUSED_OPS
from backends.runtimes.litert import FUSED_LSTM, LITERT, layer_model
from contract.row import Row
from contract.vocabulary import Dtype, Feature

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


ROWS = (LiteRtFusedLSTM(),)

__all__ = ["NO_LENGTHS", "OP_FEATURES", "REASONS", "ROWS", "LiteRtFusedLSTM"]
