r"""The LSTM layer: directions, stacking, sequence lengths and masks, over the cell of :mod:`spec.lstm`.

Time-major: x (T, B, I); batch-first is an adapter's business. D is the
number of directions (1, or 2 when bidirectional), L the number of layers,
P the width of h (P = H without a projection). Cell k = l * D + d is
direction d of layer l, with its own parameters (:class:`spec.params.LayerParams`)
and its own initial state h0[k] (B, P), c0[k] (B, H); the final states are laid
out alike (PyTorch's h_n: layer-major). With R the time reversal, R(x)_t = x_{T-1-t},
and LSTM(x; h0, c0, mu) the cell of :mod:`spec.lstm` ((1)-(8) there):

    (9)   a forward direction:  y^{l,d} = LSTM(x^l; h0[k], c0[k], mu)
    (10)  a reverse direction:  y^{l,d} = R(LSTM(R(x^l); h0[k], c0[k], R(mu)))
          it consumes x_{T-1} .. x_0 and its outputs come back in the original time
          order (as in ONNX, PyTorch and flax's keep_order=True); its final state is
          the state after x_0 (after the first unmasked step of the original order).
    (11)  direction "forward" or "reverse": D = 1, one such direction per layer;
          "bidirectional": D = 2, direction 0 forward and direction 1 reverse, and the
          layer's output at each step is both, forward first: [y^{l,0}_t ; y^{l,1}_t].
    (12)  stacking: x^0 = x and x^{l+1} = the output of layer l (D * P features);
          the output is y = x^L (T, B, D * P); h_T[k], c_T[k] are cell k's final state.
    (13)  sequence lengths L_b (PyTorch's packed sequences, ONNX's sequence_lens, TF1's
          dynamic_rnn(sequence_length)) are the mask mu_t[b] = [t < L_b] with zero
          outputs. Row b then runs steps 0 .. L_b - 1 only, its outputs at t >= L_b are
          zero, its final state is the one after step L_b - 1; reversed, the masked
          steps come first and carry the initial state, so the reverse direction runs
          L_b - 1 down to 0 (not from T - 1). For L_b = 0 the final state is the
          initial state (TF1 and a fully masked Keras row do that; PyTorch refuses
          empty sequences, ONNX Runtime returns zeros).
    (14)  a mask (Keras) applies at every layer and direction: masked steps carry the
          state, the outputs there are zero or the previous output (zero_output_for_mask).

The cell's features (peepholes, forget_bias, projection and its bias, clips, coupled
gates, layer normalization) apply to every cell alike (:class:`LayerConfig`). Dropout is out of scope.

Backward: with dy (T, B, D * P), dh_T (L * D, B, P) and dc_T (L * D, B, H) the
cotangents of y, h_T and c_T, the gradient of

    L = <dy, y> + <dh_T, h_T> + <dc_T, c_T>

with respect to x, h0, c0 and every cell's parameters. Each rule above is
linear plumbing and differentiates plainly, from the top layer down:

    (12)  dx^L = dy;  cell k receives dh_T[k], dc_T[k] as the cotangents of its final state
    (11)  direction d of layer l receives its slice dx^{l+1}[..., d P:(d+1) P]
    (10)  a reverse cell runs the cell's backward on R(its slice), and R(its dx) is its share
    (9)   dx^l = the sum over directions of their dx
    (13)-(14)  the cell's own rule (8) (the mask, reversed with the cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spec import lstm
from spec.params import LayerParams
from spec.validation import LSTMInputError, check_dtype, check_tensor, format_shape

__all__ = [
    "DIRECTIONS",
    "LayerConfig",
    "LayerForward",
    "LayerGradients",
    "LayerParams",
    "backward",
    "check_inputs",
    "forward",
    "loss",
    "mask_from_lengths",
    "reverse_time",
]

DIRECTIONS = ("forward", "reverse", "bidirectional")


@dataclass(frozen=True)
class LayerConfig:
    """What a framework's LSTM constructor says: the architecture and the features, every one off by default."""

    num_layers: int = 1
    direction: str = "forward"  # "forward", "reverse" or "bidirectional"
    proj_size: int | None = None  # P; None: no projection
    peephole: bool = False
    forget_bias: float = 0.0
    cell_clip: float | None = None  # theta of (4c): TensorFlow's cell_clip
    gate_clip: float | None = None  # gamma of (1g)-(5g): ONNX's clip as ONNX Runtime reads it
    proj_clip: float | None = None  # pi of (7): TF1's proj_clip; needs proj_size
    coupled_input_forget: bool = False  # (2c): ONNX's input_forget
    zero_output_for_mask: bool = False  # (8): zero at masked steps, or the previous output (Keras's default)
    layer_norm: bool = False  # (1n)-(5n): TFLite's per-gate layer normalization (params.ln)
    proj_bias: bool = False  # (7b): the projection's bias (params.b_hr); needs proj_size

    def __post_init__(self) -> None:
        _require(isinstance(self.num_layers, (int, np.integer)) and not isinstance(self.num_layers, bool)
                 and self.num_layers >= 1, "config.num_layers", "an integer >= 1", self.num_layers)
        _require(self.direction in DIRECTIONS, "config.direction", " or ".join(DIRECTIONS), repr(self.direction))
        _require(self.proj_size is None or (isinstance(self.proj_size, (int, np.integer))
                 and not isinstance(self.proj_size, bool) and self.proj_size >= 1),
                 "config.proj_size", "None or an integer >= 1", self.proj_size)
        for flag in ("peephole", "coupled_input_forget", "zero_output_for_mask", "layer_norm", "proj_bias"):
            _require(isinstance(getattr(self, flag), (bool, np.bool_)), f"config.{flag}", "True or False", getattr(self, flag))
        # The cell checks the numbers (forget bias finite, thresholds > 0) with the same messages.
        lstm._check_forget_bias(self.forget_bias)
        for name in ("cell_clip", "gate_clip", "proj_clip"):
            lstm._check_threshold(f"config.{name}", getattr(self, name))
        _require(self.proj_clip is None or self.proj_size is not None, "config.proj_clip",
                 "None without a projection (proj_size)", self.proj_clip)
        _require(not self.proj_bias or self.proj_size is not None, "config.proj_bias",
                 "False without a projection (proj_size)", self.proj_bias)

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def reversed(self, d: int) -> bool:
        """Whether direction d runs backwards in time: (10)."""
        return self.direction == "reverse" or (self.direction == "bidirectional" and d == 1)

    def cell_options(self) -> dict[str, object]:
        """The keyword arguments of :func:`spec.lstm.forward` that every cell of the layer gets."""
        return dict(
            forget_bias=self.forget_bias,
            gate_clip=self.gate_clip,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            coupled_input_forget=self.coupled_input_forget,
        )


def reverse_time(a: np.ndarray) -> np.ndarray:
    """R in (10): the sequence in the opposite time order (a view; axis 0 is time)."""
    return a[::-1]


def mask_from_lengths(lengths: np.ndarray, T: int) -> np.ndarray:
    """(13): mu_t[b] = [t < L_b], a boolean (T, B) mask."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


# Each rule of (9)-(14) is one small function: forward() and backward() only loop over layers and directions.


# (9), (10): one direction of one layer is the cell, on the sequence in its own time order. ``cell`` is the cell's
# forward (spec.lstm.forward; spec.precision's under a policy), ``cell_backward`` its backward pass.
def run_direction(params, layer_input, h0, c0, mask, reverse, cell=lstm.forward, **options) -> tuple[lstm.Forward, np.ndarray]:
    """The cell's run (in processing order) and its outputs in the original time order."""
    if not reverse:
        run = cell(params, layer_input, h0, c0, mask=mask, **options)
        return run, run.h_seq
    run = cell(params, reverse_time(layer_input), h0, c0, mask=None if mask is None else reverse_time(mask), **options)
    return run, reverse_time(run.h_seq)


def direction_backward(run, d_y, dh_T, dc_T, reverse, cell_backward=lstm.backward) -> tuple[lstm.Gradients, np.ndarray]:
    """(10) backward: the cell's gradients, and its share of the layer input's cotangent in time order."""
    if not reverse:
        g = cell_backward(run, d_y, dh_T, dc_T)
        return g, g.x
    g = cell_backward(run, reverse_time(d_y), dh_T, dc_T)
    return g, reverse_time(g.x)


# (11): the directions side by side on the feature axis, forward first.
def join_directions(outputs: list[np.ndarray]) -> np.ndarray:
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)


# (12): layer l + 1 reads layer l's output, every direction of it.
def next_layer_input(outputs: list[np.ndarray]) -> np.ndarray:
    return join_directions(outputs)


# (12): final states layer-major, cell k = l * D + d (PyTorch's h_n).
def final_states(runs: list[list[lstm.Forward]]) -> tuple[np.ndarray, np.ndarray]:
    """h_T and c_T (L * D, B, .) from runs[l][d]."""
    cells = [run for layer_runs in runs for run in layer_runs]
    return np.stack([run.h_T for run in cells]), np.stack([run.c_T for run in cells])


# (13): lengths are the mask t < L_b, with zero outputs.
def lengths_as_mask(lengths: np.ndarray, T: int) -> tuple[np.ndarray, bool]:
    """The mask and the zero_output_for_mask that sequence lengths stand for."""
    return mask_from_lengths(lengths, T), True


def run_layers(params: LayerParams, x, h0, c0, mask, config: LayerConfig, cell=lstm.forward, **options):
    """(9)-(12) with ``cell`` as every direction's cell (its ``options``): the runs, runs[l][d], and the top layer's
    output (T, B, D * P)."""
    L, D = config.num_layers, config.num_directions
    runs: list[list] = []
    layer_input = x
    for l in range(L):
        outputs = []
        runs.append([])
        for d in range(D):
            k = l * D + d
            run, output = run_direction(params.cells[k], layer_input, h0[k], c0[k], mask, config.reversed(d), cell,
                                        **options)
            runs[l].append(run)
            outputs.append(output)
        if l < L - 1:
            layer_input = next_layer_input(outputs)  # (12)
    return runs, join_directions(outputs)  # (11), (12): the top layer's output


def backward_layers(cells, config: LayerConfig, dy, dh_T, dc_T, cell_backward=lstm.backward, add=np.add):
    """(9)-(12) backward from the top layer down, with ``cell_backward`` as every cell's backward pass: cell k's
    gradients, and the cotangent of x. ``add`` sums the directions' shares of a layer input's cotangent (9)."""
    L, D = config.num_layers, config.num_directions
    P = dy.shape[2] // D
    grads: list = [None] * (L * D)
    d_output = dy  # (12): the cotangent of the top layer's output
    for l in reversed(range(L)):
        d_input = None
        for d in range(D):
            k = l * D + d
            d_y = d_output if D == 1 else d_output[:, :, d * P : (d + 1) * P]  # (11)
            grads[k], dx = direction_backward(cells[k], d_y, dh_T[k], dc_T[k], config.reversed(d), cell_backward)
            d_input = dx if d_input is None else add(d_input, dx)  # (9): both directions read x^l
        d_output = d_input
    return grads, d_output


@dataclass(frozen=True, eq=False)
class LayerForward:
    """The outputs of :func:`forward`, and what :func:`backward` needs from it."""

    y: np.ndarray  # (T, B, D * P): every step's outputs, forward direction first
    h_T: np.ndarray  # (L * D, B, P): final states, cell k = l * D + d
    c_T: np.ndarray  # (L * D, B, H)
    dtype: np.dtype
    config: LayerConfig
    params: LayerParams
    cells: tuple[lstm.Forward, ...]  # cell k's run, in its own (processing) time order
    mask: np.ndarray | None  # (T, B): the mask applied (from lengths, if they were given), original order
    lengths: np.ndarray | None  # (B,)


@dataclass(frozen=True, eq=False)
class LayerGradients:
    """The gradient of L with respect to x, h0, c0 and every cell's parameters (laid out as the parameters)."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (L * D, B, P)
    c0: np.ndarray  # (L * D, B, H)
    params: LayerParams  # cell k's W, U, b, p, W_hr gradients
    dtype: np.dtype

    def tensors(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "h0": self.h0, "c0": self.c0, **self.params.tensors()}


def forward(
    params: LayerParams,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    *,
    config: LayerConfig,
    lengths: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    dtype: object = np.float64,
) -> LayerForward:
    """Run the layers (9)-(14) over x (T, B, I) from the states h0 (L * D, B, P), c0 (L * D, B, H).

    ``lengths`` (B,) integers in 0 .. T, or ``mask`` (T, B) booleans, or neither. Nothing is cast.
    """
    dtype = check_dtype(dtype)
    mask, zero_output_for_mask = check_inputs(params, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=dtype)
    runs, y = run_layers(params, x, h0, c0, mask, config, dtype=dtype, zero_output_for_mask=zero_output_for_mask,
                         **config.cell_options())
    h_T, c_T = final_states(runs)
    return LayerForward(
        y=y,
        h_T=h_T,
        c_T=c_T,
        dtype=dtype,
        config=config,
        params=params,
        cells=tuple(run for layer_runs in runs for run in layer_runs),
        mask=mask,
        lengths=lengths,
    )


def backward(fwd: LayerForward, dy: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray) -> LayerGradients:
    """The gradient of L = <dy, y> + <dh_T, h_T> + <dc_T, c_T> (module docstring) for the given cotangents."""
    if not isinstance(fwd, LayerForward):
        raise LSTMInputError("fwd", "wrong type", "spec.layer.LayerForward", type(fwd).__name__)
    config, dtype = fwd.config, fwd.dtype
    L, D = config.num_layers, config.num_directions
    T, B, DP = fwd.y.shape
    P, H = DP // D, fwd.c_T.shape[2]
    check_tensor("dy", dy, (T, B, DP), dtype)
    check_tensor("dh_T", dh_T, (L * D, B, P), dtype)
    check_tensor("dc_T", dc_T, (L * D, B, H), dtype)

    grads, dx = backward_layers(fwd.cells, config, dy, dh_T, dc_T)
    return LayerGradients(
        x=dx,
        h0=np.stack([g.h0 for g in grads]),
        c0=np.stack([g.c0 for g in grads]),
        params=LayerParams(tuple(g.params() for g in grads), D),
        dtype=dtype,
    )


def check_inputs(params, x, h0, c0, *, config, lengths=None, mask=None, dtype=np.float64) -> tuple[np.ndarray | None, bool]:
    """What :func:`forward` checks before it runs (and what the adapter contract checks before a framework
    sees anything): parameters that describe ``config`` in ``dtype``, x (T, B, I), h0 (L * D, B, P),
    c0 (L * D, B, H), and lengths (B,) integers in 0 .. T or a (T, B) boolean mask, not both.
    Returns the mask to apply and whether masked steps output zero (always, for lengths). ``dtype`` may be a half
    type (data the contract hands on), which :func:`forward` itself does not compute in."""
    dtype = check_dtype(dtype, storage=True)
    if not isinstance(config, LayerConfig):
        raise LSTMInputError("config", "wrong type", "spec.layer.LayerConfig", type(config).__name__)
    _check_params(params, config, dtype)
    L, D = config.num_layers, config.num_directions
    H, P = params.hidden_size, params.output_size
    check_tensor("x", x, ("T", "B", params.input_size), dtype)
    T, B = x.shape[0], x.shape[1]
    check_tensor("h0", h0, (L * D, B, P), dtype)
    check_tensor("c0", c0, (L * D, B, H), dtype)
    if lengths is not None and mask is not None:
        raise LSTMInputError("lengths", "given with a mask", "lengths or mask, not both", "both")
    if lengths is not None:
        _check_lengths(lengths, T, B)
        return lengths_as_mask(lengths, T)  # (13)
    if mask is not None:
        check_tensor("mask", mask, (T, B), np.dtype(bool), finite=False)
    return mask, config.zero_output_for_mask


def loss(fwd: LayerForward, dy: np.ndarray, dh_T: np.ndarray, dc_T: np.ndarray) -> float:
    """L = <dy, y> + <dh_T, h_T> + <dc_T, c_T>: the scalar whose gradient backward() returns."""
    return float(np.vdot(dy, fwd.y) + np.vdot(dh_T, fwd.h_T) + np.vdot(dc_T, fwd.c_T))


def _require(ok: bool, name: str, expected: str, actual: object) -> None:
    if not ok:
        raise LSTMInputError(name, "invalid value", expected, actual)


def _check_params(params: object, config: LayerConfig, dtype: np.dtype) -> None:
    """The parameters must be what the configuration describes, in the dtype asked for."""
    if not isinstance(params, LayerParams):
        raise LSTMInputError("params", "wrong type", "spec.LayerParams", type(params).__name__)
    for what, got, want in (
        ("dtype", params.dtype, dtype),
        ("number of layers", params.num_layers, config.num_layers),
        ("number of directions", params.num_directions, config.num_directions),
        ("projection size", params.proj_size, config.proj_size),
        ("peephole variant", params.peephole, config.peephole),
        ("layer normalization (ln)", params.layer_norm, config.layer_norm),
        ("projection bias (b_hr)", params.proj_bias, config.proj_bias),
    ):
        if got != want:
            hint = "the spec never casts" if what == "dtype" else "params and config must describe one LSTM"
            raise LSTMInputError("params", f"wrong {what}", getattr(want, "name", want), getattr(got, "name", got), hint)


def _check_lengths(lengths: object, T: int, B: int) -> None:
    if not isinstance(lengths, np.ndarray):
        raise LSTMInputError("lengths", "not a NumPy array", "numpy.ndarray", type(lengths).__name__)
    if not np.issubdtype(lengths.dtype, np.integer):
        raise LSTMInputError("lengths", "wrong dtype", "an integer dtype", lengths.dtype.name, "the spec never casts")
    if lengths.shape != (B,):
        raise LSTMInputError("lengths", "wrong shape", format_shape((B,)), format_shape(lengths.shape))
    bad = np.flatnonzero((lengths < 0) | (lengths > T))
    if bad.size:
        b = int(bad[0])
        raise LSTMInputError("lengths", "out of range", f"integers in 0 .. T = {T}", f"{int(lengths[b])} at batch row {b}")
