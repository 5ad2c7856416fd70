"""The words the contract, the suite, the benchmarks and the reports share, each defined once.

Every vocabulary is an enum whose members are strings (``Dtype.FLOAT32 == "float32"``), so that a
report, a test id or a plug-in's ``DTYPES = ("float32",)`` reads the same word the code compares.

- :class:`Dtype`: what an LSTM computes in: float32 and float64 judged against the spec's tolerances, the half types
  against the bound of the precision policy the row declares.
- :class:`Device`: where it runs.
- :class:`Kind`: what a verdict judges: the outputs (y, h_T, c_T) or the gradients.
- :class:`Feature`: what a case asks of an LSTM beyond equations (1)-(6) of one forward layer, and what an
  implementation declares that it runs. The cell is the layer with no feature at all: one layer, one
  direction, no lengths, no mask (:func:`features_of`). A forget bias is not a feature: every layout can
  carry one (folded into b_f where it has no attribute for it).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from spec.validation import check_dtype


class Word(str, Enum):
    """A member of a vocabulary: equal to, hashed and printed as its string."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def parse(cls, value: object, name: str | None = None):
        """The member named by ``value`` (a member or its string); ValueError naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ValueError(f"{name or cls.__name__}: expected one of {choices}, got {value!r}") from None


class Dtype(Word):
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"

    @property
    def half(self) -> bool:
        """Whether this is a half type, judged under a precision policy (spec/precision.py, contract/half_bounds.py)."""
        return self in HALF_DTYPES

    @property
    def eps(self) -> float:
        """The unit roundoff's double: the spacing of floats just above 1."""
        return {"float32": 2.0**-23, "float64": 2.0**-52, "float16": 2.0**-10, "bfloat16": 2.0**-7}[self.value]

    def numpy(self) -> np.dtype:
        """The NumPy dtype (bfloat16 through ml_dtypes)."""
        return check_dtype(self.value, storage=True)


#: The dtypes the spec computes in, and what a row runs unless it declares otherwise.
FULL_DTYPES = (Dtype.FLOAT32, Dtype.FLOAT64)
#: The half types: a row that runs one declares the precision policy it follows there.
HALF_DTYPES = (Dtype.FLOAT16, Dtype.BFLOAT16)
#: Every dtype the suite judges: the matrix's columns.
CONFORMANCE_DTYPES = (*FULL_DTYPES, Dtype.BFLOAT16, Dtype.FLOAT16)


class Device(Word):
    CPU = "cpu"
    CUDA = "cuda"


class Kind(Word):
    OUTPUTS = "outputs"
    GRADIENTS = "gradients"


class Feature(Word):
    PEEPHOLE = "peephole"
    STACKED = "stacked"
    REVERSE = "reverse"
    BIDIRECTIONAL = "bidirectional"
    PROJECTION = "projection"
    PROJ_CLIP = "proj_clip"
    CELL_CLIP = "cell_clip"
    GATE_CLIP = "gate_clip"
    COUPLED = "coupled"
    LAYER_NORM = "layer_norm"
    PROJ_BIAS = "proj_bias"
    LENGTHS = "lengths"
    EMPTY_SEQUENCES = "empty_sequences"
    MASK = "mask"
    MASK_PREVIOUS_OUTPUT = "mask_previous_output"

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS = {
    Feature.PEEPHOLE: "peepholes (p)",
    Feature.STACKED: "more than one layer",
    Feature.REVERSE: "a reverse direction (direction='reverse')",
    Feature.BIDIRECTIONAL: "two directions (direction='bidirectional')",
    Feature.PROJECTION: "a projection of h (proj_size)",
    Feature.PROJ_CLIP: "clipping the projected h (proj_clip)",
    Feature.CELL_CLIP: "clipping the cell state (cell_clip)",
    Feature.GATE_CLIP: "clipping the gate pre-activations (gate_clip, ONNX's clip)",
    Feature.COUPLED: "coupled input and forget gates (f = 1 - i, ONNX's input_forget)",
    Feature.LAYER_NORM: "layer normalization of each gate (TFLite's layer_norm_coefficients)",
    Feature.PROJ_BIAS: "a bias on the projection (TFLite's projection_bias)",
    Feature.LENGTHS: "sequence lengths",
    Feature.EMPTY_SEQUENCES: "sequence lengths of 0",
    Feature.MASK: "a mask of steps",
    Feature.MASK_PREVIOUS_OUTPUT: "a mask whose masked steps output the previous output (zero_output_for_mask=False)",
}

#: The features a layout (the parameters and attributes a framework stores) can or cannot express; the
#: others are the call's: what an implementation does with the inputs it is given.
ARCHITECTURE = frozenset({
    Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.PROJECTION, Feature.PROJ_CLIP,
    Feature.CELL_CLIP, Feature.GATE_CLIP, Feature.COUPLED, Feature.LAYER_NORM, Feature.PROJ_BIAS,
})
CALL = frozenset(Feature) - ARCHITECTURE


def features_of(layer, lengths: np.ndarray | None = None, mask: np.ndarray | None = None) -> frozenset[Feature]:
    """The features that a :class:`spec.layer.LayerConfig` with these lengths or mask uses."""
    used = {
        Feature.PEEPHOLE: layer.peephole,
        Feature.STACKED: layer.num_layers > 1,
        Feature.REVERSE: layer.direction == "reverse",
        Feature.BIDIRECTIONAL: layer.direction == "bidirectional",
        Feature.PROJECTION: layer.proj_size is not None,
        Feature.PROJ_CLIP: layer.proj_clip is not None,
        Feature.CELL_CLIP: layer.cell_clip is not None,
        Feature.GATE_CLIP: layer.gate_clip is not None,
        Feature.COUPLED: bool(layer.coupled_input_forget),
        Feature.LAYER_NORM: bool(layer.layer_norm),
        Feature.PROJ_BIAS: bool(layer.proj_bias),
        Feature.LENGTHS: lengths is not None,
        Feature.EMPTY_SEQUENCES: lengths is not None and bool((np.asarray(lengths) == 0).any()),
        Feature.MASK: mask is not None,
        Feature.MASK_PREVIOUS_OUTPUT: mask is not None and not layer.zero_output_for_mask,
    }
    return frozenset(feature for feature, on in used.items() if on)


def in_order(features) -> list[Feature]:
    """Features in the vocabulary's order (for messages and reports)."""
    return [feature for feature in Feature if feature in set(features)]


__all__ = [
    "ARCHITECTURE", "CALL", "CONFORMANCE_DTYPES", "FULL_DTYPES", "HALF_DTYPES", "MEANINGS", "Device", "Dtype", "Feature", "Kind",
    "Word", "features_of", "in_order",
]
