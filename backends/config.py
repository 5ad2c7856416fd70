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
