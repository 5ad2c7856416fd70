"""TensorFlow's block LSTM kernels ``tf.raw_ops.BlockLSTM`` (V1) and ``tf.raw_ops.BlockLSTMV2``
(Keras 3's layers, on every backend: backends/keras_lstm.py; TF1's cells: backends/tf1_lstm.py).

Layouts (canonical: W (4, H, I), U (4, H, H), b (4, H), p (3, H) for i, f, o; gates i, f, g, o):

    BlockLSTM (V1)      w (I + H, 4H), rows [x; h], columns in gate order i, g, f, o; b (4H) in i, g, f, o;
                        wci, wcf, wco (H); attributes forget_bias (default 1.0!), cell_clip (default 3.0!),
                        use_peephole; time-major (T, B, I)
    BlockLSTMV2         as V1 but gates i, f, g, o and no forget_bias attribute (folded into b);
                        cell_clip default 0.0 = off

The block kernels run float32 (and half) only and cannot be XLA-compiled; everything here runs
in plain ``tf.function``s, cached per configuration (TensorFlow's own trace cache keys them by
shape and dtype), with TF32 off. TensorFlow is imported only inside functions, so importing this
module never needs it.

Gradients: BlockLSTM V1 through ``tf.GradientTape``. For BlockLSTMV2, TensorFlow 2.21
registers V1's gradient (which assumes V1's i, g, f, o column order), so tape gradients through V2
are wrong: ``tensorflow/BlockLSTMV2+registered-gradient`` ships them as they are (a known
non-conformance), ``tensorflow/BlockLSTMV2+BlockLSTMGradV2`` calls ``BlockLSTMGradV2`` directly.

The block rows' layer is what the ops run: one forward layer (peepholes, a forget bias) and ``cell_clip``
(the spec's (4c)). Their gradient kernels have no cell_clip attribute and differentiate the clip as the
identity: a known non-conformance of every block row's layer gradients with a cell clip
(findings/tensorflow_blocklstm_gradient_ignores_cell_clip.py). ``seq_len_max`` is one length for the
whole batch, so sequence lengths are not declared. The layout helpers (``to_gate_columns``,
``kernel_to_native``, ...) are shared with TF1's cells (backends/tf1_lstm.py), which use the same fused kernel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backends.base import (
    Config,
    Implementation,
    KnownFailure,
    NativeCache,
    NotSupported,
    Unavailable,
    cpu_model,
    fold_forget_bias,
    import_framework,
)
from backends.config import layer_features
from backends.timing import TimedPass, Timing
from spec.layer import LayerConfig
from spec.params import GATES, LayerParams, LSTMParams
from spec.validation import LSTMInputError, check_tensor

INSTALL_HINT = "tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')"
FLOAT32_ONLY = "TensorFlow's block LSTM kernels run float32 and half only"
#: Half types are timed on GPUs only, and no GPU machine with TensorFlow has been available to verify
#: these adapters' half paths (Keras' mixed-precision policy, the block ops' half kernels).
NO_HALF_TIMING = {
    dtype: f"the TensorFlow adapters do not time {dtype} yet: not verified on a GPU with TensorFlow"
    for dtype in ("float16", "bfloat16")
}

#: Why tape gradients through BlockLSTMV2 are wrong (a known non-conformance of that row).
REGISTERED_V2_GRADIENT = (
    "TensorFlow 2.21 registers the same gradient function for BlockLSTM and BlockLSTMV2 "
    "(tensorflow/python/ops/rnn_grad.py); it calls the V1 gradient kernel, which assumes the "
    "i,g,f,o gate order, while V2 computes in i,f,g,o: tape gradients through BlockLSTMV2 are wrong "
    "(findings/tensorflow_blocklstmv2_registered_gradient.py; no upstream issue found)"
)

V1_GATES = ("i", "g", "f", "o")
V2_GATES = GATES
#: cell_clip values that switch clipping off (the op clips only when cell_clip > 0).
NO_CLIP = {1: -1.0, 2: 0.0}
#: The ops' attribute defaults, which from_native assumes when a native dict omits them.
_DEFAULT_FORGET_BIAS_V1 = 1.0
_DEFAULT_CELL_CLIP = {1: 3.0, 2: 0.0}


# ---------------------------------------------------------------------------
# TensorFlow, imported lazily.
# ---------------------------------------------------------------------------


@cache
def _tf():
    """TensorFlow, imported once, with TF32 switched off (it would round float32 products to 10 bits on Ampere+)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: TensorFlow reads it once
    tf = import_framework("tensorflow", INSTALL_HINT)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf


def _tf_missing() -> str | None:
    try:
        _tf()
    except Unavailable as error:
        return str(error)
    return None


def _cuda_reason() -> str | None:
    tf = _tf()
    if not tf.test.is_built_with_cuda():
        return "this TensorFlow build has no CUDA (tensorflow-cpu); GPU runs need tensorflow[and-cuda] on a machine with a GPU"
    if not tf.config.list_physical_devices("GPU"):
        return "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)"
    return None


def _tf_device(device: str) -> str:
    return "/GPU:0" if device == "cuda" else "/CPU:0"


_WEIGHTS = NativeCache()


def _host(tensor) -> np.ndarray:
    return tensor.numpy()


def _timed_pass(tf, device: str, fn, args, pick) -> TimedPass:
    """A TimedPass of ``fn(*args)`` on tensors already on ``device``. On a GPU each run waits for the
    device (its kernels run asynchronously); on the CPU, TensorFlow's eager calls return finished."""
    last = {}

    def run():
        with tf.device(device):
            last["out"] = fn(*args)
        if device.startswith("/GPU"):
            tf.test.experimental.sync_devices()

    def result():
        return {k: v.numpy().astype(np.float64) for k, v in pick(last["out"]).items()}

    return TimedPass(run, result, resident=True)


def _environment(device: str) -> dict[str, object]:
    tf = _tf()
    env: dict[str, object] = {"tensorflow": tf.__version__}
    if device == "cuda":
        gpus = tf.config.list_physical_devices("GPU")
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
        env["device"] = f"GPU:0 {name}" if name else "no GPU visible"
    else:
        env["device"] = f"CPU:0 {cpu_model()}"
    env["tf32"] = tf.config.experimental.tensor_float_32_execution_enabled()
    # 0 means "TensorFlow chooses" (all cores); they cannot be changed once TensorFlow has initialised.
    env["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    env["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    env["built_with_cuda"] = tf.test.is_built_with_cuda()
    return env


# ---------------------------------------------------------------------------
# tf.raw_ops.BlockLSTM (V1) and BlockLSTMV2
# ---------------------------------------------------------------------------


#: The op's gate orders: V1 computes in i, g, f, o, V2 in the canonical i, f, g, o.
BLOCK_GATES = {1: V1_GATES, 2: V2_GATES}
_BLOCK_TENSORS = ("w", "wci", "wcf", "wco", "b")

#: Why the block ops' gradients are not their forward pass's where cell_clip binds (a known non-conformance).
CELL_CLIP_GRADIENT = (
    "TensorFlow's block LSTM gradient kernels (BlockLSTMGrad, BlockLSTMGradV2) have no cell_clip attribute: they "
    "differentiate the cell state as if it were never clipped (the clip's derivative taken as 1, straight through), "
    "while the forward pass clips it, so every gradient is wrong where the clip binds"
)
#: The layer the ops run: one forward layer with peepholes, a forget bias and cell_clip.
BLOCK_LAYER_FEATURES = ("cell_clip",)
_SEQ_LEN_MAX = (
    "BlockLSTM's only length is seq_len_max, one for the whole batch: per-row sequence lengths cannot be expressed "
    "(one length for every row is x[:length], and seq_len_max = 0 cannot return the initial state)"
)
BLOCK_LAYER_REASONS = {
    "stacked": "BlockLSTM is one layer (a stack is one op per layer, wired by hand)",
    "reverse": "BlockLSTM runs forward in time only",
    "bidirectional": "BlockLSTM runs forward in time only (a second direction is a second op on reversed input, by hand)",
    "projection": "BlockLSTM has no projection",
    "proj_clip": "BlockLSTM has no projection to clip",
    "gate_clip": "BlockLSTM clips the cell state (cell_clip), not the gate pre-activations",
    "coupled": "BlockLSTM has no coupled input and forget gates",
    "lengths": _SEQ_LEN_MAX,
    "empty_sequences": _SEQ_LEN_MAX,
    "mask": "BlockLSTM takes no mask",
    "mask_previous_output": "BlockLSTM takes no mask",
}


def to_gate_columns(blocks: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    """Canonical blocks (4, H, K), gates i, f, g, o, as TensorFlow's fused columns (K, 4H), gate blocks in the order
    ``gates``: BlockLSTM's w and b, TF1's LSTMCell kernel and bias (backends/tf1_lstm.py). A bias is K = 1."""
    H, K = blocks.shape[1:]
    return np.ascontiguousarray(blocks[[GATES.index(g) for g in gates]].reshape(4 * H, K).T)


def from_gate_columns(columns: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    """The inverse of :func:`to_gate_columns`: (K, 4H) columns in the order ``gates`` as canonical (4, H, K) blocks."""
    K, H = columns.shape[0], columns.shape[1] // 4
    return np.ascontiguousarray(columns.T.reshape(4, H, K)[[gates.index(g) for g in GATES]])


def kernel_to_native(params: LSTMParams, gates: tuple[str, ...]) -> np.ndarray:
    """W and U as one kernel (I + P, 4H): rows [x; h], columns in the order ``gates``."""
    return to_gate_columns(np.concatenate([params.W, params.U], axis=2), gates)


def kernel_from_native(kernel: np.ndarray, input_size: int, gates: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """W (4, H, I) and U (4, H, P) from a kernel (I + P, 4H) with rows [x; h]."""
    WU = from_gate_columns(kernel, gates)
    return np.ascontiguousarray(WU[:, :, :input_size]), np.ascontiguousarray(WU[:, :, input_size:])


def bias_to_native(b: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    return to_gate_columns(b[:, :, None], gates).reshape(-1)


def bias_from_native(bias: np.ndarray, gates: tuple[str, ...]) -> np.ndarray:
    return from_gate_columns(bias[None, :], gates)[:, :, 0]


def block_to_native(params: LSTMParams, forget_bias: float = 0.0, *, version: int, cell_clip: float | None = None) -> dict[str, object]:
    """w, b, wci, wcf, wco and the attributes (forget_bias for V1, cell_clip, use_peephole), all explicit.
    ``cell_clip`` None switches the op's clip off (V1 would clip at 3 by default)."""
    if params.W_hr is not None:
        raise NotSupported(BLOCK_LAYER_REASONS["projection"])
    gates = BLOCK_GATES[version]
    b = params.b if version == 1 else fold_forget_bias(params.b, forget_bias)
    peepholes = params.p if params.peephole else np.zeros((3, params.hidden_size), params.dtype)
    native: dict[str, object] = {
        "w": kernel_to_native(params, gates),
        "b": bias_to_native(b, gates),
        **{name: peepholes[k].copy() for k, name in enumerate(("wci", "wcf", "wco"))},
    }
    if version == 1:
        native["forget_bias"] = float(forget_bias)
    native["cell_clip"] = NO_CLIP[version] if cell_clip is None else float(cell_clip)
    native["use_peephole"] = params.peephole
    return native


def block_from_native(
    native: Mapping[str, object], *, version: int, input_size: int | None = None, cell_clip: float | None = None
) -> LSTMParams:
    """Canonical parameters from a block op's w, b (and peepholes); a V1 forget_bias is folded into b_f.

    A missing attribute means the op's default (V1: forget_bias 1.0, cell_clip 3.0). The op's cell_clip must be
    the canonical side's ``cell_clip`` (a layer's LayerConfig.cell_clip; None: no clip, so a clipping op is refused).
    ``input_size`` defaults to w's rows minus H.
    """
    w, b = np.asarray(native["w"]), np.asarray(native["b"])
    H = b.shape[0] // 4
    I = w.shape[0] - H if input_size is None else input_size
    check_tensor("w", w, (I + H, 4 * H), w.dtype)
    check_tensor("b", b, (4 * H,), w.dtype)
    _check_cell_clip(float(native.get("cell_clip", _DEFAULT_CELL_CLIP[version])), cell_clip)
    gates = BLOCK_GATES[version]
    W, U = kernel_from_native(w, I, gates)
    b_canonical = bias_from_native(b, gates)
    if version == 1:
        b_canonical = fold_forget_bias(b_canonical, float(native.get("forget_bias", _DEFAULT_FORGET_BIAS_V1)))
    p = None
    if native.get("use_peephole", False):
        p = np.stack([np.asarray(native[k]) for k in ("wci", "wcf", "wco")])
    return LSTMParams(W=W, U=U, b=b_canonical, p=p)


def _check_cell_clip(native_clip: float, wanted: float | None) -> None:
    """The op clips only when cell_clip > 0; the canonical side clips at ``wanted`` (None: not at all)."""
    if wanted is None and native_clip > 0:
        raise NotSupported(f"cell_clip={native_clip} clips the cell state: the canonical LSTM does not "
                           "(a layer does with LayerConfig.cell_clip)")
    if wanted is not None and native_clip != wanted:
        raise LSTMInputError("cell_clip", "disagrees with the layer's cell_clip", wanted, native_clip)


def _check_block_layer(layer: LayerConfig) -> None:
    """NotSupported naming the first feature of ``layer`` that a block op cannot express."""
    for feature in layer_features(layer):
        if feature not in BLOCK_LAYER_FEATURES:
            raise NotSupported(BLOCK_LAYER_REASONS[feature])


def _block_op(version: int):
    tf = _tf()
    return tf.raw_ops.BlockLSTM if version == 1 else tf.raw_ops.BlockLSTMV2


def _block_attrs(version: int, use_peephole: bool, forget_bias: float, cell_clip: float) -> dict[str, object]:
    attrs: dict[str, object] = {"cell_clip": cell_clip, "use_peephole": use_peephole}
    if version == 1:
        attrs["forget_bias"] = forget_bias
    return attrs


def _block_call(native: Mapping[str, object]) -> tuple[bool, float, float]:
    """The attributes of a native dict that the traced functions are keyed by: use_peephole, forget_bias, cell_clip
    (V2 has no forget_bias attribute: 0.0, unused)."""
    return bool(native["use_peephole"]), float(native.get("forget_bias", 0.0)), float(native["cell_clip"])


@cache
def _block_forward_fn(version: int, use_peephole: bool, forget_bias: float, cell_clip: float, device: str):
    """h for every step, h_T and c_T; the inputs are time-major and seq_len_max is T."""
    tf = _tf()
    op, attrs = _block_op(version), _block_attrs(version, use_peephole, forget_bias, cell_clip)

    @tf.function
    def forward(x, h0, c0, w, wci, wcf, wco, b):
        with tf.device(device):
            seq_len_max = tf.cast(tf.shape(x)[0], tf.int64)
            _, cs, _, _, _, _, h = op(
                seq_len_max=seq_len_max, x=x, cs_prev=c0, h_prev=h0, w=w, wci=wci, wcf=wcf, wco=wco, b=b, **attrs
            )
            return h, h[-1], cs[-1]

    return forward


@cache
def _block_tape_gradient_fn(version: int, use_peephole: bool, forget_bias: float, cell_clip: float, device: str):
    """Gradients through tf.GradientTape, i.e. the gradient TensorFlow registers for the op."""
    tf = _tf()
    op, attrs = _block_op(version), _block_attrs(version, use_peephole, forget_bias, cell_clip)

    @tf.function
    def gradients(x, h0, c0, w, wci, wcf, wco, b, dh_seq, dh_T, dc_T):
        with tf.device(device):
            sources = [x, h0, c0, w, wci, wcf, wco, b]
            with tf.GradientTape() as tape:
                tape.watch(sources)
                seq_len_max = tf.cast(tf.shape(x)[0], tf.int64)
                _, cs, _, _, _, _, h = op(
                    seq_len_max=seq_len_max, x=x, cs_prev=c0, h_prev=h0, w=w, wci=wci, wcf=wcf, wco=wco, b=b, **attrs
                )
                loss = tf.reduce_sum(dh_seq * h) + tf.reduce_sum(dh_T * h[-1]) + tf.reduce_sum(dc_T * cs[-1])
            grads = tape.gradient(loss, sources)
            return [tf.zeros_like(s) if g is None else g for g, s in zip(grads, sources)]

    return gradients


@cache
def _block_v2_explicit_gradient_fn(use_peephole: bool, cell_clip: float, device: str):
    """BlockLSTMV2 forward, then BlockLSTMGradV2 called directly with its outputs and the cotangents."""
    tf = _tf()

    @tf.function
    def gradients(x, h0, c0, w, wci, wcf, wco, b, dh_seq, dh_T, dc_T):
        with tf.device(device):
            seq_len_max = tf.cast(tf.shape(x)[0], tf.int64)
            common = dict(seq_len_max=seq_len_max, x=x, cs_prev=c0, h_prev=h0, w=w, wci=wci, wcf=wcf, wco=wco, b=b)
            i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(**common, cell_clip=cell_clip, use_peephole=use_peephole)
            # h_T is h at T-1 and c_T is cs at T-1: their cotangents join the last step's.
            h_grad = tf.concat([dh_seq[:-1], dh_seq[-1:] + dh_T[None]], axis=0)
            cs_grad = tf.concat([tf.zeros_like(dh_seq[:-1]), dc_T[None]], axis=0)
            # BlockLSTMGradV2 has no cell_clip attribute: CELL_CLIP_GRADIENT.
            return tf.raw_ops.BlockLSTMGradV2(
                **common, i=i, cs=cs, f=f, o=o, ci=ci, co=co, h=h, cs_grad=cs_grad, h_grad=h_grad, use_peephole=use_peephole
            )

    return gradients


@dataclass
class BlockLSTM(Implementation):
    """tf.raw_ops.BlockLSTM (``version`` 1) or BlockLSTMV2 (2); ``gradient`` is "tape" or "BlockLSTMGradV2".

    Its layer is what the op runs: one forward layer, peepholes, a forget bias and cell_clip; seq_len_max is one
    length for the whole batch, so sequence lengths (per row) are not declared."""

    id: str = "tensorflow/BlockLSTM"
    framework: str = "tensorflow"
    description: str = "tf.raw_ops.BlockLSTM (V1: gates i,g,f,o; forget_bias and cell_clip passed explicitly), gradients by tf.GradientTape"
    dtypes: tuple[str, ...] = ("float32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    layer_features: tuple[str, ...] | None = BLOCK_LAYER_FEATURES
    unsupported_reasons: dict = field(default_factory=lambda: {"float64": FLOAT32_ONLY, **NO_HALF_TIMING, **BLOCK_LAYER_REASONS})
    known_failures: tuple[KnownFailure, ...] = (KnownFailure("layer gradients", CELL_CLIP_GRADIENT, features=("cell_clip",)),)
    version: int = 1
    gradient: str = "tape"

    def _availability(self, device: str) -> str | None:
        if (reason := _tf_missing()) is not None:
            return reason
        return _cuda_reason() if device == "cuda" else None

    def to_native(self, params: LSTMParams, forget_bias: float = 0.0) -> dict[str, object]:
        return block_to_native(params, forget_bias, version=self.version)

    def from_native(self, native) -> LSTMParams:
        return block_from_native(native, version=self.version)

    def to_native_layer(self, params: LayerParams, layer: LayerConfig) -> dict[str, object]:
        """The op's tensors and attributes for a one-cell forward layer; layer.cell_clip becomes the op's cell_clip."""
        _check_block_layer(layer)
        return block_to_native(params.cells[0], layer.forget_bias, version=self.version, cell_clip=layer.cell_clip)

    def from_native_layer(self, native, layer: LayerConfig) -> LayerParams:
        _check_block_layer(layer)
        return LayerParams((block_from_native(native, version=self.version, cell_clip=layer.cell_clip),))

    # -- the op on native tensors --------------------------------------------------------------

    def _tensors(self, native, device: str):
        """The op's five weight tensors on ``device`` and the attributes the traced functions are keyed by."""
        tf = _tf()
        with tf.device(device):
            return tuple(tf.constant(native[k]) for k in _BLOCK_TENSORS), _block_call(native)

    def _prepare(self, params, forget_bias, config):
        """The cell contract's weights, converted once per params object (benchmarks call many times)."""
        device = _tf_device(config.device)
        return device, *_WEIGHTS.get(params, (self.version, float(forget_bias), device),
                                     lambda: self._tensors(self.to_native(params, forget_bias), device))

    def _run_forward(self, device, weights, call, x, h0, c0):
        tf = _tf()
        fn = _block_forward_fn(self.version, *call, device)
        with tf.device(device):
            h_seq, h_T, c_T = fn(tf.constant(x), tf.constant(h0), tf.constant(c0), *weights)
        return _host(h_seq), _host(h_T), _host(c_T)

    def _gradient_fn(self, call, device: str):
        use_peephole, forget_bias, cell_clip = call
        if self.gradient == "BlockLSTMGradV2":
            return _block_v2_explicit_gradient_fn(use_peephole, cell_clip, device)
        return _block_tape_gradient_fn(self.version, use_peephole, forget_bias, cell_clip, device)

    def _run_gradients(self, device, weights, call, x, h0, c0, dh_seq, dh_T, dc_T) -> dict[str, np.ndarray]:
        """x, h0, c0, W, U, b (and p) in the canonical layout."""
        tf = _tf()
        with tf.device(device):
            args = [tf.constant(a) for a in (x, h0, c0)] + list(weights) + [tf.constant(a) for a in (dh_seq, dh_T, dc_T)]
            dx, dc0, dh0, dw, dwci, dwcf, dwco, db = map(_host, _reorder_gradients(self._gradient_fn(call, device)(*args), self.gradient))
        native = {"w": dw, "b": db, "wci": dwci, "wcf": dwcf, "wco": dwco, "cell_clip": NO_CLIP[self.version], "use_peephole": call[0]}
        if self.version == 1:
            native["forget_bias"] = 0.0  # a gradient has no forget bias to fold
        grads = block_from_native(native, version=self.version, input_size=x.shape[2])
        return {"x": dx, "h0": dh0, "c0": dc0, **grads.tensors()}

    # -- the cell contract ------------------------------------------------------------------------

    def _forward(self, params, x, h0, c0, *, forget_bias, config: Config):
        return self._run_forward(*self._prepare(params, forget_bias, config), x, h0, c0)

    def _backward(self, params, x, h0, c0, cotangents, *, forget_bias, config: Config) -> dict[str, np.ndarray]:
        cot = (cotangents[k] for k in ("dh_seq", "dh_T", "dc_T"))
        return self._run_gradients(*self._prepare(params, forget_bias, config), x, h0, c0, *cot)

    # -- the layer contract: one cell, h0[0] and c0[0]; the final state is the last step's --------

    def _forward_layer(self, params, x, h0, c0, *, layer, lengths, mask, config: Config):
        device = _tf_device(config.device)
        h_seq, h_T, c_T = self._run_forward(device, *self._tensors(self.to_native_layer(params, layer), device), x, h0[0], c0[0])
        return h_seq, h_T[None], c_T[None]

    def _backward_layer(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, config: Config):
        device = _tf_device(config.device)
        grads = self._run_gradients(device, *self._tensors(self.to_native_layer(params, layer), device), x, h0[0], c0[0],
                                    cotangents["dy"], cotangents["dh_T"][0], cotangents["dc_T"][0])
        named = {"x": grads.pop("x"), "h0": grads.pop("h0")[None], "c0": grads.pop("c0")[None]}
        named.update({f"{params.cell_name(0)} {name}": g for name, g in grads.items()})
        return named

    def _timed_pass(self, params, x, h0, c0, cotangents, *, forget_bias, timing: Timing) -> TimedPass:
        tf = _tf()
        device, weights, call = self._prepare(params, forget_bias, Config(timing.variant, timing.dtype, timing.device))
        with tf.device(device):
            args = [tf.constant(a) for a in (x, h0, c0)] + list(weights)
            if timing.gradients:
                args += [tf.constant(cotangents[k]) for k in ("dh_seq", "dh_T", "dc_T")]
        if not timing.gradients:
            return _timed_pass(tf, device, _block_forward_fn(self.version, *call, device), args, lambda out: {"h_seq": out[0]})

        def pick(out):
            dx, dc0, dh0 = _reorder_gradients(out, self.gradient)[:3]
            return {"x": dx, "h0": dh0, "c0": dc0}

        return _timed_pass(tf, device, self._gradient_fn(call, device), args, pick)

    def _timed_layer_pass(self, params, x, h0, c0, cotangents, *, layer, lengths, mask, timing: Timing) -> TimedPass:
        """The layer's pass on device-resident tensors: y, or the gradients of x, h0 and c0 (one cell: h0[0], c0[0])."""
        tf = _tf()
        device = _tf_device(timing.device)
        weights, call = self._tensors(self.to_native_layer(params, layer), device)
        with tf.device(device):
            args = [tf.constant(a) for a in (x, h0[0], c0[0])] + list(weights)
            if timing.gradients:
                args += [tf.constant(a) for a in (cotangents["dy"], cotangents["dh_T"][0], cotangents["dc_T"][0])]
        if not timing.gradients:
            return _timed_pass(tf, device, _block_forward_fn(self.version, *call, device), args, lambda out: {"y": out[0]})

        def pick(out):
            dx, dc0, dh0 = _reorder_gradients(out, self.gradient)[:3]
            return {"x": dx, "h0": dh0[None], "c0": dc0[None]}

        return _timed_pass(tf, device, self._gradient_fn(call, device), args, pick)

    def _environment(self, device: str) -> dict[str, object]:
        return _environment(device)


def _reorder_gradients(grads, gradient: str):
    """Both gradient functions' results in BlockLSTMGradV2's order: x, cs_prev, h_prev, w, wci, wcf, wco, b."""
    if gradient == "BlockLSTMGradV2":
        return grads
    dx, dh0, dc0, dw, dwci, dwcf, dwco, db = grads  # the tape's order: the sources' order
    return dx, dc0, dh0, dw, dwci, dwcf, dwco, db


IMPLEMENTATIONS = (
    BlockLSTM(),
    BlockLSTM(
        id="tensorflow/BlockLSTMV2+registered-gradient",
        description="tf.raw_ops.BlockLSTMV2 (gates i,f,g,o; forget bias folded into b), gradients by tf.GradientTape "
        "as TensorFlow 2.21 registers them (V1's gradient: wrong for V2)",
        version=2,
        gradient="tape",
        known_failures=(KnownFailure("gradients", REGISTERED_V2_GRADIENT), KnownFailure("layer gradients", REGISTERED_V2_GRADIENT)),
    ),
    BlockLSTM(
        id="tensorflow/BlockLSTMV2+BlockLSTMGradV2",
        description="tf.raw_ops.BlockLSTMV2 (gates i,f,g,o; forget bias folded into b), gradients by calling "
        "tf.raw_ops.BlockLSTMGradV2 directly",
        version=2,
        gradient="BlockLSTMGradV2",
    ),
)
