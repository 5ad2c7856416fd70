"""What a run asks an implementation for: a variant, a dtype and a device (:class:`Config`).

The choices are validated here, once, for every record that carries them
(:class:`Config`, and :class:`backends.timing.Timing` for benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("standard", "peephole")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
GRADIENT_NAMES = ("x", "h0", "c0", "W", "U", "b", "p")


def check_choices(record: object, **allowed: tuple[str, ...]) -> None:
    """Raise ValueError naming the first field of ``record`` whose value is not among its ``allowed`` ones."""
    for name, choices in allowed.items():
        value = getattr(record, name)
        if value not in choices:
            raise ValueError(f"{type(record).__name__}.{name}: expected one of {choices}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """One conformance run of an implementation: ``variant`` x ``dtype`` x ``device``."""

    variant: str = "standard"
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self):
        check_choices(self, variant=VARIANTS, dtype=DTYPES, device=DEVICES)

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.dtype}-{self.device}"


#: What a layer case may ask of an implementation beyond the plain one-direction, one-layer LSTM, and what
#: each means. An implementation declares the ones it does (``Implementation.layer_features``); a case that
#: needs another is "not supported" with the implementation's reason. Peepholes are the variant (Config), and
#: a forget bias is always supported (every layout can carry one in b_f).
LAYER_FEATURES = {
    "stacked": "more than one layer",
    "reverse": "a reverse direction (direction='reverse')",
    "bidirectional": "two directions (direction='bidirectional')",
    "projection": "a projection of h (proj_size)",
    "proj_clip": "clipping the projected h (proj_clip)",
    "cell_clip": "clipping the cell state (cell_clip)",
    "gate_clip": "clipping the gate pre-activations (gate_clip, ONNX's clip)",
    "coupled": "coupled input and forget gates (f = 1 - i, ONNX's input_forget)",
    "lengths": "sequence lengths",
    "empty_sequences": "sequence lengths of 0",
    "mask": "a mask of steps",
    "mask_previous_output": "a mask whose masked steps output the previous output (zero_output_for_mask=False)",
}


def layer_features(layer, lengths=None, mask=None) -> tuple[str, ...]:
    """The features (:data:`LAYER_FEATURES`) that a layer configuration with these lengths or mask uses."""
    used = {
        "stacked": layer.num_layers > 1,
        "reverse": layer.direction == "reverse",
        "bidirectional": layer.direction == "bidirectional",
        "projection": layer.proj_size is not None,
        "proj_clip": layer.proj_clip is not None,
        "cell_clip": layer.cell_clip is not None,
        "gate_clip": layer.gate_clip is not None,
        "coupled": bool(layer.coupled_input_forget),
        "lengths": lengths is not None,
        "empty_sequences": lengths is not None and bool((lengths == 0).any()),
        "mask": mask is not None,
        "mask_previous_output": mask is not None and not layer.zero_output_for_mask,
    }
    return tuple(name for name in LAYER_FEATURES if used[name])
