"""TFLite's (LiteRT's) fused LSTM: the inputs of ``UNIDIRECTIONAL_SEQUENCE_LSTM``, one op per layer and direction,
NumPy only.

The op takes every gate's tensors apart, gates i, f, c (the spec's g), o, each under its own input (:data:`INPUTS`,
tensorflow/lite/kernels/lstm_shared.h); peepholes, the projection and its bias, and the layer-normalization
coefficients are optional inputs. The native names are ``layer<l>.<forward|reverse>.<input>`` (:func:`weight_name`):

    canonical, cell l * D + d        TFLite, op (l, d)
    W[k]  (H, I)               <->  input_to_<gate>_weights (H, I)         gate k of i, f, c, o
    U[k]  (H, P)               <->  recurrent_to_<gate>_weights (H, P)
    b[k]  (H,)                 <->  <gate>_gate_bias (H,)                  the forget bias folded into forget_gate_bias
    p     (3, H)               <->  cell_to_{input,forget,output}_weights (H,)
    W_hr  (P, H)               <->  projection_weights (P, H)
    b_hr  (P,)                 <->  projection_bias (P,)
    ln[k] (H,)                 <->  <gate>_layer_norm_coefficients (H,)

Coupled gates (CIFG): TFLite couples the other way round from the spec: it computes the forget gate and takes
i = 1 - f (lstm_eval.cc), where the spec computes i and takes f = 1 - i (ONNX's input_forget). Since
sigma(-z) = 1 - sigma(z), the spec's coupled cell is TFLite's CIFG cell whose forget gate is the spec's input gate
negated: W_i, U_i, b_i and p_i go to the forget gate's tensors with their signs flipped (negation is exact), the
input gate's tensors are absent, and TFLite's input gate 1 - sigma(-z_i) is the spec's i_t. Under layer
normalization the coefficient is not negated: the normalization of -a is minus that of a, and the shift -b_i
completes -(gamma_i n_i + b_i). The spec's own f tensors take no part (its (2c)); read back from TFLite they are
zeros. The forget bias takes no part in a coupled cell either (spec (2c)), so it is not folded.

The op's ``cell_clip`` and ``proj_clip`` options are the spec's; it has no gate clip, no sequence lengths and no
mask. Its states are variable tensors (the graph around the ops, backends/runtimes/litert.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.layout import Layout, fold_forget_bias
from contract.vocabulary import Feature
from spec.layer import LayerConfig
from spec.params import GATES, PEEPHOLE_GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

#: TFLite's gate words, in the spec's order i, f, g, o (TFLite calls g "cell").
TFLITE_GATES = ("input", "forget", "cell", "output")
#: UNIDIRECTIONAL_SEQUENCE_LSTM's 24 inputs, by index (tensorflow/lite/kernels/lstm_shared.h).
INPUTS = (
    "input",
    *(f"input_to_{gate}_weights" for gate in TFLITE_GATES),
    *(f"recurrent_to_{gate}_weights" for gate in TFLITE_GATES),
    *(f"cell_to_{gate}_weights" for gate in ("input", "forget", "output")),
    *(f"{gate}_gate_bias" for gate in TFLITE_GATES),
    "projection_weights",
    "projection_bias",
    "output_state",
    "cell_state",
    *(f"{gate}_layer_norm_coefficients" for gate in TFLITE_GATES),
)
#: The inputs that are the cell's parameters (the others: the sequence and the two state variables).
PARAMETERS = tuple(name for name in INPUTS if name not in ("input", "output_state", "cell_state"))
DIRECTION_WORDS = ("forward", "reverse")

NO_GATE_CLIP = "TFLite's fused LSTM clips the cell state (cell_clip) and the projection (proj_clip), not the gates"


def weight_name(layer: int, direction: str, tensor: str) -> str:
    """The native name of op (layer, direction)'s input ``tensor``: layer0.forward.input_to_input_weights."""
    return f"layer{layer}.{direction}.{tensor}"


def direction_words(layer: LayerConfig) -> tuple[str, ...]:
    """The words of the layer's directions: ("forward",), ("reverse",) or both."""
    return {"forward": ("forward",), "reverse": ("reverse",), "bidirectional": DIRECTION_WORDS}[layer.direction]


def to_tflite(cell: LSTMParams, forget_bias: float = 0.0, coupled: bool = False) -> dict[str, np.ndarray]:
    """One op's parameter inputs (contiguous copies); absent optional inputs left out."""
    i, f = GATES.index("i"), GATES.index("f")
    W, U, b = cell.W.copy(), cell.U.copy(), (cell.b.copy() if coupled else fold_forget_bias(cell.b, forget_bias))
    p = None if cell.p is None else cell.p.copy()
    ln = None if cell.ln is None else cell.ln.copy()
    gates = list(range(4))
    if coupled:  # TFLite's forget gate is the spec's input gate, negated (module docstring)
        W[f], U[f], b[f] = -W[i], -U[i], -b[i]
        if p is not None:
            p[PEEPHOLE_GATES.index("f")] = -p[PEEPHOLE_GATES.index("i")]
        if ln is not None:
            ln[f] = ln[i]
        gates.remove(i)
    tensors = {}
    for k in gates:
        gate = TFLITE_GATES[k]
        tensors[f"input_to_{gate}_weights"] = np.ascontiguousarray(W[k])
        tensors[f"recurrent_to_{gate}_weights"] = np.ascontiguousarray(U[k])
        tensors[f"{gate}_gate_bias"] = np.ascontiguousarray(b[k])
        if ln is not None:
            tensors[f"{gate}_layer_norm_coefficients"] = np.ascontiguousarray(ln[k])
    if p is not None:
        for j, gate in enumerate(PEEPHOLE_GATES):
            if not (coupled and gate == "i"):
                tensors[f"cell_to_{TFLITE_GATES[GATES.index(gate)]}_weights"] = np.ascontiguousarray(p[j])
    if cell.W_hr is not None:
        tensors["projection_weights"] = np.ascontiguousarray(cell.W_hr)
        if cell.b_hr is not None:
            tensors["projection_bias"] = np.ascontiguousarray(cell.b_hr)
    return tensors


def from_tflite(tensors: Mapping[str, np.ndarray], coupled: bool) -> LSTMParams:
    """The canonical cell from one op's parameter inputs (:func:`to_tflite`'s names; absent optional ones left out).
    ``coupled``: the op is CIFG (no input-gate tensors); the spec's f tensors come back as zeros."""
    first = tensors.get("input_to_forget_weights")
    if first is None:
        raise LSTMInputError("input_to_forget_weights", "missing", "a tensor of shape (H, I)", "absent")
    if not isinstance(first, np.ndarray) or first.ndim != 2:
        raise LSTMInputError("input_to_forget_weights", "wrong shape", "(H, I)", getattr(first, "shape", first))
    dtype, (H, I) = first.dtype, first.shape
    recurrent = tensors.get("recurrent_to_forget_weights")
    P = recurrent.shape[1] if isinstance(recurrent, np.ndarray) and recurrent.ndim == 2 else H
    i, f = GATES.index("i"), GATES.index("f")
    gates = [k for k in range(4) if not (coupled and k == i)]

    def required(name, shape):
        tensor = tensors.get(name)
        if tensor is None:
            raise LSTMInputError(name, "missing", f"a tensor of shape {shape}", "absent")
        check_tensor(name, tensor, shape, dtype)
        return tensor

    W, U, b = np.zeros((4, H, I), dtype), np.zeros((4, H, P), dtype), np.zeros((4, H), dtype)
    for k in gates:
        gate = TFLITE_GATES[k]
        W[k] = required(f"input_to_{gate}_weights", (H, I))
        U[k] = required(f"recurrent_to_{gate}_weights", (H, P))
        b[k] = required(f"{gate}_gate_bias", (H,))
    p = ln = W_hr = b_hr = None
    if "cell_to_forget_weights" in tensors:
        p = np.zeros((3, H), dtype)
        for j, gate in enumerate(PEEPHOLE_GATES):
            if not (coupled and gate == "i"):
                p[j] = required(f"cell_to_{TFLITE_GATES[GATES.index(gate)]}_weights", (H,))
    if "forget_layer_norm_coefficients" in tensors:
        ln = np.zeros((4, H), dtype)
        for k in gates:
            ln[k] = required(f"{TFLITE_GATES[k]}_layer_norm_coefficients", (H,))
    if "projection_weights" in tensors:
        W_hr = required("projection_weights", (P, H))
        if "projection_bias" in tensors:
            b_hr = required("projection_bias", (P,))
    if coupled:  # back from TFLite's forget gate to the spec's input gate; the spec's f takes no part
        W[i], U[i], b[i], W[f], U[f], b[f] = -W[f], -U[f], -b[f], 0.0, 0.0, 0.0
        if p is not None:
            p[PEEPHOLE_GATES.index("i")], p[PEEPHOLE_GATES.index("f")] = -p[PEEPHOLE_GATES.index("f")], 0.0
        if ln is not None:
            ln[i], ln[f] = ln[f], 0.0
    return LSTMParams(W, U, b, p, W_hr, ln, b_hr)


@dataclass(frozen=True)
class _FusedOps(Layout):
    """A stack as one UNIDIRECTIONAL_SEQUENCE_LSTM per layer and direction (:func:`to_tflite` per cell)."""

    def _to_native(self, params: LayerParams, layer: LayerConfig) -> dict[str, np.ndarray]:
        native = {}
        for k, cell in enumerate(params.cells):
            l, d = divmod(k, layer.num_directions)
            word = direction_words(layer)[d]
            for name, tensor in to_tflite(cell, layer.forget_bias, layer.coupled_input_forget).items():
                native[weight_name(l, word, name)] = tensor
        return native

    def _from_native(self, native: Mapping[str, object], layer: LayerConfig) -> LayerParams:
        cells = []
        for l in range(layer.num_layers):
            for word in direction_words(layer):
                prefix = weight_name(l, word, "")
                tensors = {name[len(prefix):]: np.asarray(value) for name, value in native.items() if name.startswith(prefix)}
                cells.append(from_tflite(tensors, layer.coupled_input_forget))  # a forget bias stays in b_f
        return LayerParams(tuple(cells), layer.num_directions)


FUSED_OPS = _FusedOps(
    name="TFLite UNIDIRECTIONAL_SEQUENCE_LSTM inputs, one op per layer and direction",
    holds=frozenset({Feature.PEEPHOLE, Feature.STACKED, Feature.REVERSE, Feature.BIDIRECTIONAL, Feature.PROJECTION,
                     Feature.PROJ_CLIP, Feature.CELL_CLIP, Feature.COUPLED, Feature.LAYER_NORM, Feature.PROJ_BIAS}),
    reasons={Feature.GATE_CLIP: NO_GATE_CLIP},
    keeps_unused_forget_gate=False,
)

__all__ = ["DIRECTION_WORDS", "FUSED_OPS", "INPUTS", "NO_GATE_CLIP", "PARAMETERS", "TFLITE_GATES", "direction_words",
           "from_tflite", "to_tflite", "weight_name"]
