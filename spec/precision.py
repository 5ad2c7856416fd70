r"""The LSTM under a precision policy: what a bfloat16 or float16 LSTM computes, exactly, in NumPy.

A half-precision LSTM is not one computation. Where a kernel rounds to the half type (its *storage points*),
what it accumulates its products in and what it keeps its cell state in differ between the kernels people ship,
and each choice has its own error. A *policy* names those choices; this module evaluates equations (1)-(6) of
:mod:`spec.lstm` under each, rounding with round-to-nearest-even (``r(a)`` below: ``a`` cast to the half type and
back; ml_dtypes for bfloat16, NumPy for float16) at exactly the policy's storage points, and computing everything
else in float32. The data (x, h0, c0, W, U, b, p) are half values already: the suite rounds a case's data once
and gives every implementation, and this module, the same.

    HALF_STORAGE        "half-storage-float32-accumulation" (cuDNN, oneDNN): the products W x_t and U h_{t-1}
                        accumulate in float32; gates, c_t and h_t are computed in float32; the step's results
                        are stored in half:  c_t <- r(c_t),  h_t <- r(o_t * tanh(c_t))  (h from the float32 c_t).
    EVERY_OPERATION     "half-every-operation" (a naive half kernel, and what eager frameworks do op by op): each
                        product's float32 accumulation is rounded, and so is the result of every later operation:
                        z = r(r(r(W x) + r(U h)) + b),  i = r(sigma(r(z_i + r(p_i * c)))),  c_t = r(r(f * c) + r(i * g)),
                        h_t = r(o * r(tanh(c_t))).
    FLOAT32_CELL_STATE  "float32-cell-state": HALF_STORAGE, except that c_t is kept in float32 from step to step
                        (only h_t, the outputs and the final c_T are stored in half).
    MIXED               "mixed-precision" (Keras' mixed_bfloat16 / mixed_float16, flax dtype=half with
                        param_dtype=float32, torch.autocast): float32 parameters cast to half where they are used,
                        then EVERY_OPERATION's arithmetic. On the suite's data (parameters that are half values)
                        the cast is exact, so its forward is EVERY_OPERATION's; the policies differ in what the
                        backward pass keeps (float32 parameter gradients).
    TF32                "tf32-products" (GPUs' default for float32 products in JAX and TensorFlow; PyTorch's
                        allow_tf32 for cuDNN): float32 storage and arithmetic, but every product's operands are
                        rounded to TF32 (float32's exponent, a 10-bit mantissa) before a float32 accumulation.

None of these accumulates products in the half type: a kernel that does is outside every policy (a mistake the
suite must catch, :data:`Accumulation.HALF`).

**Equally valid evaluations.** A policy fixes the storage points, not the order in which a float32 accumulation
adds its terms, nor whether a gate's elementwise work is fused (one rounding at its end) or done op by op. Those
choices move the result by amounts of the order of the rounding itself; the bounds the suite judges a policy by
are derived from the spread of these evaluations (:class:`Evaluation`; contract/half_bounds.py).

**The cell's features** (clips, coupled gates, a projection, a mask: spec.lstm's (1g)-(8)) are carried out under the
policy where they sit: a clip is one more operation (its result rounded where every operation's is), f = 1 - i one
more, a projection's operand m_t stored as h_t would be and its product accumulated as the gates' are, a mask's carry
exact. The layer's directions and stacks over this cell are :mod:`spec.precision_layer`.

**The backward pass** (:func:`backward`) follows the same policies: where the gradients are rounded and where they
accumulate (in float32 over all steps for half-storage; each step's share rounded and summed in the half type
where every operation is rounded; widened to float32 under mixed precision), on the values the forward kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from spec import lstm
from spec.lstm import sigmoid
from spec.params import LSTMParams
from spec.validation import LSTMInputError

__all__ = ["Accumulation", "Bias", "Evaluation", "HALF_TYPES", "Policy", "STANDARD", "Sigmoid", "Step", "UNDEFINED",
           "backward", "check_policy_dtype", "defines", "forward", "round_to", "round_to_tf32", "ulp"]


class Policy(str, Enum):
    HALF_STORAGE = "half-storage-float32-accumulation"
    EVERY_OPERATION = "half-every-operation"
    FLOAT32_CELL_STATE = "float32-cell-state"
    MIXED = "mixed-precision"
    TF32 = "tf32-products"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object, what: str = "policy") -> Policy:
        """``value`` as a policy, or a ValueError naming ``what``, the value and the policies."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"{what}: unknown precision policy {value!r}; the policies are {names}") from None

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes a row under this policy stores its data in."""
        return ("float32",) if self is Policy.TF32 else HALF_TYPES

    @property
    def rounds_every_operation(self) -> bool:
        return self in (Policy.EVERY_OPERATION, Policy.MIXED)


class Accumulation(str, Enum):
    """How a product's sum over its inner dimension is carried out."""

    BLAS = "blas"  # NumPy's float32 matmul (the machine's BLAS: its own blocking, FMA where it has it)
    EXACT = "exact"  # the sum computed in float64 and rounded once to float32: the best float32 accumulation
    PAIRWISE = "pairwise"  # NumPy's pairwise float32 summation over the inner dimension (the same on every CPU)
    BLOCKED_REVERSE = "blocked-reverse"  # float32 partial sums over blocks of 8 terms, the blocks added last to first
    HALF = "half"  # in half arithmetic, term by term (each product and partial sum rounded): outside every policy


class Bias(str, Enum):
    """Where an evaluation adds b: after the two products, r(W x) + r(U h) + b; inside the input product's
    accumulation, r(W x + b) + r(U h); half inside each, r(W x + b/2) + r(U h + b/2) (PyTorch's two biases, each in its
    linear); to the input product's result, r(r(W x) + b) + r(U h) (XLA's scan over a precomputed input projection);
    or to the recurrent product's result, r(W x) + r(r(U h) + b) (flax's cells, the bias in the hidden Dense); or half
    after each product, r(r(r(r(W x) + b/2) + r(U h)) + b/2) (jax.experimental.rnn's lstm_ref, its two biases each
    added after its product)."""

    AFTER = "after"
    INPUT = "input"
    SPLIT = "split"
    INPUT_AFTER = "input-after"
    RECURRENT_AFTER = "recurrent-after"
    SPLIT_AFTER = "split-after"


class Sigmoid(str, Enum):
    """How an evaluation that rounds every operation computes sigma(z): rounded once from its exact value; as
    r(1 / r(1 + r(exp(-z)))) (jax.nn.sigmoid as XLA lowers it in a half type); or as r(r(exp(z)) / r(1 + r(exp(z))))
    (Eigen's logistic in a half type: TensorFlow's tf.sigmoid and its block LSTM kernel; measured bit for bit)."""

    ROUNDED_ONCE = "rounded-once"
    RECIPROCAL = "reciprocal"
    QUOTIENT = "quotient"


@dataclass(frozen=True)
class Evaluation:
    """One way to carry out a policy: the accumulation of the products, whether a gate's elementwise work is fused
    (EVERY_OPERATION and MIXED round once per gate instead of after each operation), where the bias is added, and the
    rounding mode (``truncate``: toward zero instead of to nearest even, a mistake).

    ``multiply_add``: where the policy rounds every operation, a multiply-add rounds once (torch's addcmul and
    addmm): z = r(r(W x + b) + U h) (the recurrent product accumulated onto the stored input projection, which
    holds the bias), z_i = r(z_i + p_i * c), c_t = r(r(f * c) + i * g).

    ``sigmoid``: where the policy rounds every operation, sigma(z) rounded once (:class:`Sigmoid`), or the operations
    it is written as, each rounded.

    ``joint_product``: W x_t and U h_{t-1} as one product over [x_t; h_{t-1}], accumulated together and rounded
    once (TensorFlow's block LSTM kernel: xh * w).

    ``input_projection``: the input product W x_t computed for every step at once, before the recurrence (PyTorch's
    nn.LSTM on ATen's cell, XLA's scan over a precomputed projection): in the backward pass its gradients dW (and db,
    where the bias is added with it) are then one product over all steps and rows, rounded once, instead of a sum of
    each step's, rounded as the policy rounds every operation. The forward is the same either way.

    ``gate_products``: each gate's products computed on their own (flax's LSTMCell, a Dense per gate and input): the
    same forward, but where the policy rounds every operation the backward's dx_t and dh_{t-1} are sums of four
    products, one per gate, each rounded, added in the half type in the reverse of the gates' order (o, g, f, i), as
    reverse-mode autodiff meets them.

    ``float32_activations``: sigma, tanh and exp by NumPy's float32 functions (vectorised, a few float32 ulps off,
    and differently on AVX2 and AVX-512 CPUs) instead of their exact values rounded once: a kernel's own
    approximations. Machine-dependent, so never in the committed bounds (contract/half_bounds.py); the training
    runs' honest variants use it, on the machine they compare on.

    ``forget_bias_first``: the forget bias added to z_f before the peephole's share, not after (TF1's LSTMCell:
    sigmoid(f + forget_bias + w_f_diag * c_prev)); the backward is the same.

    ``consumer_order``: where the policy rounds every operation, the backward sums the three shares of dc_t in the
    order of c_t's uses, as TensorFlow's graph gradients aggregate them (an AddN over the tensor's consumers, each
    addition rounded): the output gate's peephole, then tanh(c_t), then the next step's (measured: TF1's LSTMCell
    with peepholes, float16, 0.39 ulps from it on average where the standard order is 1.07). With peepholes only;
    not with XLA's tanh shares."""

    accumulation: Accumulation = Accumulation.BLAS
    fused: bool = False
    truncate: bool = False
    bias: Bias = Bias.AFTER
    multiply_add: bool = False
    sigmoid: Sigmoid = Sigmoid.ROUNDED_ONCE
    joint_product: bool = False
    input_projection: bool = False
    gate_products: bool = False
    float32_activations: bool = False
    forget_bias_first: bool = False
    consumer_order: bool = False


STANDARD = Evaluation()


@dataclass(frozen=True)
class Step:
    """One step's values as the forward kept them (float32 arrays holding what the policy stored), for the backward
    pass: the step's input, the state it began from, the gates, the new cell state before the policy stored it, and
    tanh(c_t) as computed."""

    x: np.ndarray
    h_prev: np.ndarray
    c_prev: np.ndarray
    i: np.ndarray
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    c: np.ndarray
    tanh_c: np.ndarray
    gate_passed: tuple = (None, None, None, None)  # each gate's [|a_k| <= gamma], with a gate clip (1g)-(5g)
    cell_passed: np.ndarray | None = None  # (4c)
    proj_passed: np.ndarray | None = None  # (7)
    m: np.ndarray | None = None  # m_t, the projection's operand as kept (7)
    mu: np.ndarray | None = None  # the step's mask row (8)

#: The half types, by the names the project's vocabulary gives them (contract.vocabulary.Dtype).
HALF_TYPES = ("bfloat16", "float16")


def check_policy_dtype(policy: object, dtype: object) -> Policy:
    """The policy, when it is one and holds data of ``dtype``; else a ValueError saying which dtypes it holds."""
    policy = Policy.parse(policy)
    if str(dtype) not in policy.dtypes:
        raise ValueError(f"precision policy {policy.value!r} holds {' or '.join(policy.dtypes)} data, not {str(dtype)!r}")
    return policy


def _half_dtype(half: str) -> np.dtype:
    if half == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if half == "float16":
        return np.dtype(np.float16)
    raise ValueError(f"half type: expected bfloat16 or float16, got {half!r}")


def _mantissa_bits(half: str) -> int:  # after the leading one
    return {"bfloat16": 7, "float16": 10}[half]


def round_to(a: np.ndarray, half: str, *, truncate: bool = False) -> np.ndarray:
    """``a`` (float32) rounded to the half type, as float32: round-to-nearest-even, or toward zero with ``truncate``.

    Values beyond the half type's range become inf, as a cast does; callers check their data first."""
    a = np.asarray(a, np.float32)
    with np.errstate(over="ignore"):
        nearest = a.astype(_half_dtype(half))
    if truncate:  # where rounding to nearest went away from zero, the neighbour toward zero
        away = np.abs(nearest.astype(np.float32)) > np.abs(a)
        nearest = np.where(away, np.nextafter(nearest, np.zeros_like(nearest)), nearest)
    return nearest.astype(np.float32)


def round_to_tf32(a: np.ndarray) -> np.ndarray:
    """``a`` (float32) with its mantissa rounded to 10 bits, to nearest even: the operands a TF32 product sees."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    keep = bits >> 13
    rest = bits & 0x1FFF
    round_up = (rest > 0x1000) | ((rest == 0x1000) & (keep & 1 == 1))
    return ((keep + round_up) << 13).astype(np.uint32).view(np.float32)


def ulp(reference: np.ndarray, half: str) -> np.ndarray:
    """The spacing of the half type at each |reference| (its unit in the last place), at least the spacing at the
    smallest normal number: the unit a half-type error is counted in."""
    bits = _mantissa_bits(half)
    smallest_normal = 2.0**-126 if half == "bfloat16" else 2.0**-14
    magnitude = np.maximum(np.abs(np.asarray(reference, np.float64)), smallest_normal)
    _, exponent = np.frexp(magnitude)  # magnitude = m * 2**exponent, m in [0.5, 1)
    return np.ldexp(1.0, exponent - 1 - bits)


# The activations' float32 values are the exact ones rounded once (computed in float64): NumPy's own float32 exp and
# tanh are vectorised differently on AVX2 and AVX-512 CPUs and differ in their last bit, which would make an
# evaluation, and the bounds derived from it, depend on the machine.
def _sigmoid32(z: np.ndarray) -> np.ndarray:
    return sigmoid(z.astype(np.float64)).astype(np.float32)


def _exp32(a: np.ndarray) -> np.ndarray:
    return np.exp(a.astype(np.float64)).astype(np.float32)


def _tanh32(a: np.ndarray) -> np.ndarray:
    return np.tanh(a.astype(np.float64)).astype(np.float32)


def _activations(evaluation: Evaluation):
    """(sigma, exp, tanh) in float32, as ``evaluation`` computes them."""
    if evaluation.float32_activations:
        f32 = np.float32
        return (lambda z: f32(1) / (f32(1) + np.exp(-np.asarray(z, f32))), lambda a: np.exp(np.asarray(a, f32)),
                lambda a: np.tanh(np.asarray(a, f32)))
    return _sigmoid32, _exp32, _tanh32


def _product(A: np.ndarray, v: np.ndarray, accumulation: Accumulation, half: str) -> np.ndarray:
    """v @ A^T for A (N, K) and v (B, K), in float32 as ``accumulation`` says."""
    if accumulation is Accumulation.BLAS:
        return v @ A.T
    if accumulation is Accumulation.EXACT:
        return (v.astype(np.float64) @ A.T.astype(np.float64)).astype(np.float32)
    K = A.shape[1]
    terms = v[:, None, :] * A[None, :, :]  # (B, N, K), each product exact in float32 for half operands
    if accumulation is Accumulation.PAIRWISE:
        return terms.sum(axis=2, dtype=np.float32)
    if accumulation is Accumulation.BLOCKED_REVERSE:
        partial = [terms[:, :, k : k + 8].sum(axis=2, dtype=np.float32) for k in range(0, K, 8)]
        total = np.zeros(partial[0].shape, np.float32)
        for block in reversed(partial):
            total = total + block
        return total
    total = np.zeros(terms.shape[:2], np.float32)  # HALF: half arithmetic, every product and partial sum rounded
    for k in range(K):
        total = round_to(total + round_to(terms[:, :, k], half), half)
    return total


#: The parameters of the features no policy defines, by the configuration's flag for them: layer normalization and
#: the projection's bias, which no row computes in a half type (TFLite's fused LSTM, the one that has them, runs them
#: in float32 or in integers); a policy is written for a row to judge.
UNDEFINED = {"ln": "layer_norm", "b_hr": "proj_bias"}


def defines(config) -> bool:
    """Whether the policies define a layer of this :class:`spec.layer.LayerConfig` (:data:`UNDEFINED`)."""
    return not any(getattr(config, flag) for flag in UNDEFINED.values())


def forward(params: LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, dtype: str, policy: Policy,
            forget_bias: float = 0.0, evaluation: Evaluation = STANDARD, **features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equations (1)-(8) of spec.lstm over x (T, B, I) from (h0, c0) under ``policy``, for one direction of one layer
    with the features spec.lstm.forward takes (gate_clip, cell_clip, proj_clip, coupled_input_forget, mask,
    zero_output_for_mask; a projection with W_hr in ``params``). ``dtype``
    is the data's: a half type, or float32 for TF32. Every array given must hold values of that dtype (as float32,
    float64 or the type itself); returns the outputs y for every step (T, B, P), h_T and c_T as float32 arrays holding
    what the policy stores."""
    run = _forward(params, x, h0, c0, dtype=dtype, policy=policy, forget_bias=forget_bias, evaluation=evaluation,
                   **features)
    return run.h_seq, run.h_T, run.c_T


def _checked(policy: Policy, dtype: str, half: str, data: dict) -> dict[str, np.ndarray]:
    """Each array as float32, when it holds finite values of ``dtype``; else a ValueError naming it."""
    arrays = {}
    for name, value in data.items():
        value = np.asarray(value).astype(np.float32)
        stored = value if policy is Policy.TF32 else round_to(value, half)
        if not np.array_equal(stored, value) or not np.all(np.isfinite(stored)):
            raise ValueError(f"{name}: the data must be finite {dtype} values (round it once, to nearest even, before "
                             f"the policy's evaluation); {np.count_nonzero(stored != value)} elements are not")
        arrays[name] = value
    return arrays


def _clip(a: np.ndarray, theta: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """clip_theta(a) in float32, and where the value passed ([|a| <= theta], what the backward lets through)."""
    if theta is None:
        return a, None
    theta = np.float32(theta)
    return np.clip(a, -theta, theta), np.abs(a) <= theta


def _passed(d: np.ndarray, passed: np.ndarray | None) -> np.ndarray:
    """A clip's backward: the cotangent where the value passed, zero where it was clipped."""
    return d if passed is None else np.where(passed, d, np.float32(0))


@dataclass(frozen=True, eq=False)
class Run:
    """One direction's evaluation under a policy: its outputs (as :class:`spec.lstm.Forward` names them, for
    spec.layer's plumbing) and each step's kept values for the backward pass."""

    h_seq: np.ndarray  # (T, B, P): the outputs y_t
    h_T: np.ndarray
    c_T: np.ndarray
    steps: tuple[Step, ...]
    show: np.ndarray | None  # (T, B): s in y_t = s_t * h_t (8), with a mask
    coupled_input_forget: bool  # (2c)
    params: LSTMParams  # the direction's parameters, as given


def _forward(params: LSTMParams, x, h0, c0, *, dtype: str, policy: Policy, forget_bias: float, evaluation: Evaluation,
             gate_clip=None, cell_clip=None, proj_clip=None, coupled_input_forget=False, mask=None,
             zero_output_for_mask=False) -> Run:
    """forward(), and each step's values as the forward kept them, for backward()."""
    policy = check_policy_dtype(policy, dtype)
    for name in UNDEFINED:
        if getattr(params, name) is not None:
            raise LSTMInputError(f"params.{name}", "not under a precision policy", "None (spec.lstm computes it in "
                                 "float32 or float64)", f"an array of shape {getattr(params, name).shape}")
    half = "bfloat16" if policy is Policy.TF32 else str(dtype)  # TF32 rounds to no half type: never used there
    data = {"W": params.W, "U": params.U, "b": params.b, "x": x, "h0": h0, "c0": c0}
    data.update({name: value for name, value in (("p", params.p), ("W_hr", params.W_hr)) if value is not None})
    arrays = _checked(policy, dtype, half, data)
    H, I, P = params.hidden_size, params.input_size, params.output_size
    W, U, b = arrays["W"].reshape(4 * H, I), arrays["U"].reshape(4 * H, P), arrays["b"].reshape(4 * H)
    p, W_hr = arrays.get("p"), arrays.get("W_hr")
    fb = np.float32(forget_bias)
    tf32 = policy is Policy.TF32
    every = policy.rounds_every_operation

    def r(a):
        return round_to(a, half, truncate=evaluation.truncate)

    def op(a):  # the result of one operation: rounded where the policy rounds every operation, and not fused
        return r(a) if every and not evaluation.fused else a

    def gate_out(a):  # the end of a gate's elementwise work
        return r(a) if every else a

    def product(A, v, bias=None):
        if tf32:
            result = _product(round_to_tf32(A), round_to_tf32(v), evaluation.accumulation, half)
        else:
            result = _product(A, v, evaluation.accumulation, half)
        if bias is not None:
            result = result + bias
        return r(result) if every else result

    multiply_add = evaluation.multiply_add and every and not evaluation.fused
    bias = Bias.INPUT if multiply_add else Bias(evaluation.bias)
    input_bias = b if bias is Bias.INPUT else b / 2 if bias is Bias.SPLIT else None
    recurrent_bias = b / 2 if bias is Bias.SPLIT else None

    def multiply(a):  # a product that a multiply-add leaves unrounded
        return a if multiply_add else op(a)

    def clipped(a, theta):  # a clip is one more operation: its result rounded where every operation's is
        a, passed = _clip(a, theta)
        return (a if theta is None else op(a)), passed

    form = Sigmoid(evaluation.sigmoid) if every and not evaluation.fused else Sigmoid.ROUNDED_ONCE
    one = np.float32(1)
    _sigmoid32, _exp32, _tanh32 = _activations(evaluation)  # this evaluation's, under the module's names

    def sigmoid(z):  # float32 operations (NumPy's division and addition are correctly rounded), each rounded
        if form is Sigmoid.RECIPROCAL:
            return r(one / r(one + r(_exp32(-z))))
        if form is Sigmoid.QUOTIENT:  # where exp(z) overflows the half type, its limit, 1 (as Eigen gives)
            e = r(_exp32(z))
            with np.errstate(invalid="ignore", over="ignore"):
                return np.where(np.isinf(e), one, r(e / r(one + e)))
        return gate_out(_sigmoid32(z))

    h, c = arrays["h0"], arrays["c0"]
    states, steps = [], []
    for t, x_t in enumerate(arrays["x"]):
        h_prev, c_prev = h, c
        if multiply_add:
            recurrent = _product(U, h, evaluation.accumulation, half) if not tf32 else None
            z = r(product(W, x_t, input_bias) + recurrent)
        elif evaluation.joint_product:
            z = product(np.concatenate([W, U], axis=1), np.concatenate([x_t, h], axis=1), input_bias)
        elif bias is Bias.INPUT_AFTER:
            z = op(op(product(W, x_t) + b) + product(U, h))
        elif bias is Bias.RECURRENT_AFTER:
            z = op(product(W, x_t) + op(product(U, h) + b))
        elif bias is Bias.SPLIT_AFTER:
            z = op(op(op(product(W, x_t) + b / 2) + product(U, h)) + b / 2)
        else:
            z = op(product(W, x_t, input_bias) + product(U, h, recurrent_bias))
        if bias is Bias.AFTER:
            z = op(z + b)
        z = z.reshape(-1, 4, H).transpose(1, 0, 2)  # (4, B, H), gates i, f, g, o
        z_i, z_f, z_g, z_o = z
        fb_first = evaluation.forget_bias_first and forget_bias and not coupled_input_forget
        if fb_first:
            z_f = op(z_f + fb)
        if p is not None:
            z_i = op(z_i + multiply(p[0] * c))
            if not coupled_input_forget:
                z_f = op(z_f + multiply(p[1] * c))
        if forget_bias and not coupled_input_forget and not fb_first:
            z_f = op(z_f + fb)
        (z_i, i_passed), (z_g, g_passed) = clipped(z_i, gate_clip), clipped(z_g, gate_clip)  # (1g), (3g)
        f_passed = None
        i, g = sigmoid(z_i), gate_out(_tanh32(z_g))
        if coupled_input_forget:  # (2c)
            f = gate_out(one - i)
        else:
            z_f, f_passed = clipped(z_f, gate_clip)  # (2g)
            f = sigmoid(z_f)
        c_new, cell_passed = clipped(op(op(f * c) + multiply(i * g)), cell_clip)  # (4), (4c)
        c_new = gate_out(c_new)
        if p is not None:
            z_o = op(z_o + multiply(p[2] * c_new))
        z_o, o_passed = clipped(z_o, gate_clip)  # (5g)
        o = sigmoid(z_o)
        tanh_c = op(_tanh32(c_new))
        h = op(o * tanh_c)
        m = proj_passed = None
        if W_hr is not None:  # (7): m_t is the projection's operand, stored as h_t would be
            m = h if tf32 else r(h)
            h, proj_passed = clipped(product(W_hr, m), proj_clip)
        if tf32:
            c = c_new
        else:
            h = r(h)  # every half policy stores h_t, the step's output
            c = c_new if policy is Policy.FLOAT32_CELL_STATE else r(c_new)
        c_kept = c
        if mask is not None:  # (8): a masked row keeps its state, exactly
            h, c = np.where(mask[t][:, None], h, h_prev), np.where(mask[t][:, None], c, c_prev)
        states.append(h)
        kept = {"gate_passed": (i_passed, f_passed, g_passed, o_passed), "cell_passed": cell_passed,
                "proj_passed": proj_passed, "m": m, "mu": None if mask is None else mask[t]}
        if every or tf32:
            steps.append(Step(x_t, h_prev, c_prev, i, f, g, o, c_new, tanh_c, **kept))
        else:  # the workspace a fused kernel keeps for its backward: the gates in half, c_t as stored
            steps.append(Step(x_t, h_prev, c_prev, r(i), r(f), r(g), r(o), c_kept, _tanh32(c_kept), **kept))
    y, show = np.stack(states), None
    if mask is not None:  # (8): y_t = s_t * h_t
        show = lstm.shown(np.asarray(mask, bool), zero_output_for_mask)
        y = np.where(show[:, :, None], y, np.float32(0))
    return Run(y, h, c if tf32 else r(c), tuple(steps), show, bool(coupled_input_forget), params)


def backward(params: LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, dy: np.ndarray, dh_T: np.ndarray,
             dc_T: np.ndarray, *, dtype: str, policy: Policy, forget_bias: float = 0.0,
             evaluation: Evaluation = STANDARD, **features) -> dict[str, np.ndarray]:
    r"""The backward pass of :func:`forward` under ``policy``: spec.lstm's rules, with the policy's storage points.
    The cotangents dy (T, B, P), dh_T and dc_T are data of ``dtype`` too. Returns the gradients of x, h0, c0, W, U, b
    (and p, W_hr) in the canonical layout, as float32 arrays holding what the policy stores.

        HALF_STORAGE, FLOAT32_CELL_STATE   float32 arithmetic on the values the forward kept in its workspace: the
                        gates i, f, g, o stored in half (oneDNN's and cuDNN's workspace holds them in the data type),
                        c_t as stored, tanh(c_t) recomputed in float32, h_{t-1} as stored; the gate cotangents dz_t
                        stored in half (the operands of the half products dx_t = W^T dz_t, dh_{t-1} = U^T dz_t,
                        dW += dz_t x_t^T, ...); the cotangents carried to the step before, dh_{t-1} and dc_{t-1}, in
                        float32; the parameters' gradients accumulated in float32 over all steps and rounded once, as
                        are dx_t, dh_0 and dc_0. Measured: PyTorch's oneDNN bfloat16 nn.LSTM, bit for bit (with the
                        carried cotangents rounded to half it would be 0.5 ulp off on average).
        EVERY_OPERATION the backward of every operation rounded (what reverse-mode autodiff of the forward's
                        operations does in a half type): each rule of spec.lstm one operation at a time, the
                        derivative of a sigmoid or tanh at its output, y (1 - y) or 1 - y^2, rounded once with its
                        product (PyTorch's sigmoid_backward and tanh_backward, XLA's fused elementwise work); each
                        step's parameter gradients (dz_t x_t^T, ...) are rounded, and accumulate over the steps in
                        the half type (autodiff sums a parameter's gradients in the parameter's type), last step
                        first.
        MIXED           EVERY_OPERATION, except that each step's parameter gradients, rounded, accumulate in float32:
                        the parameters are float32 and are cast to half where the step uses them, so the cast's
                        gradient widens each step's share before they are summed.
        TF32            float32 throughout, every product's operands rounded to TF32.

    The features' rules are spec.lstm's: a clip's backward lets the cotangent through where the value passed (exact);
    coupled gates add f's share to i's, di - df, one operation; a projection's cotangent da_t is a product's operand
    (stored in half where dz_t is), dm_t = W_hr^T da_t is carried into the step as dh_t is, and dW_hr accumulates
    as dU does; a masked row's cotangents pass around the step unchanged.
    """
    policy = check_policy_dtype(policy, dtype)
    half = "bfloat16" if policy is Policy.TF32 else str(dtype)
    cotangents = _checked(policy, dtype, half, {"dy": dy, "dh_T": dh_T, "dc_T": dc_T})
    run = _forward(params, x, h0, c0, dtype=dtype, policy=policy, forget_bias=forget_bias, evaluation=evaluation,
                   **features)
    return _backward(run, cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"], dtype=dtype, policy=policy,
                     evaluation=evaluation).tensors()


def _backward(run: Run, dy, dh_T, dc_T, *, dtype: str, policy: Policy, evaluation: Evaluation) -> lstm.Gradients:
    """backward() from the forward's run, the cotangents float32 arrays of half values (or float32 for TF32)."""
    half = "bfloat16" if policy is Policy.TF32 else str(dtype)
    params, steps = run.params, run.steps
    H, I, P = params.hidden_size, params.input_size, params.output_size
    W = np.asarray(params.W, np.float32).reshape(4 * H, I)
    U = np.asarray(params.U, np.float32).reshape(4 * H, P)
    p = None if params.p is None else np.asarray(params.p, np.float32)
    W_hr = None if params.W_hr is None else np.asarray(params.W_hr, np.float32)
    tf32 = policy is Policy.TF32
    every = policy.rounds_every_operation
    fused = every and evaluation.fused
    coupled = run.coupled_input_forget

    def r(a):
        return round_to(a, half, truncate=evaluation.truncate)

    def op(a):  # one operation's result, where the policy rounds every operation
        return r(a) if every and not fused else a

    def gate_out(a):  # the end of a gate's elementwise work
        return r(a) if every else a

    def stored(a):  # a storage point of the half policies
        return a if tf32 else r(a)

    def product(v, A):  # v (B, N) times A (N, K): sum over N
        if tf32:
            return _product(round_to_tf32(A.T), round_to_tf32(v), evaluation.accumulation, half)
        return _product(A.T, v, evaluation.accumulation, half)

    def outer(d, v):  # d (B, N)^T v (B, K): sum over the batch rows (and the steps, when stacked)
        return product(d.T, v)

    def through(dz, A):  # dz (B, 4H) back through the product with A (4H, K)
        if not (evaluation.gate_products and every and not fused):
            return product(dz, A)
        H4 = A.shape[0]
        # autodiff adds the gates' shares in the reverse of the order the forward used them: o, g, f, i
        shares = [r(product(dz[:, k * H4 // 4:(k + 1) * H4 // 4], A[k * H4 // 4:(k + 1) * H4 // 4])) for k in (3, 2, 1, 0)]
        total = shares[0]
        for share in shares[1:]:
            total = r(total + share)
        return total

    def batch_sum(d):  # over the batch rows (and the steps, when stacked), accumulated as the products are
        return _product(np.ones((1, d.shape[0]), np.float32), d.T, evaluation.accumulation, half)[:, 0]

    # Where the sigmoid is written as operations (Sigmoid.RECIPROCAL, QUOTIENT), the derivatives of the sigmoid and
    # tanh at their outputs are written as operations too, each rounded, in the framework's order: XLA's (jax's JVP
    # rules for logistic and tanh, transposed) d * (y * (1 - y)) and a + a * y with a = d * (1 - y); Eigen's
    # (TensorFlow's SigmoidGrad, TanhGrad) d * y * (1 - y) and d * (1 - y * y). Else each is rounded once (PyTorch's
    # sigmoid_backward and tanh_backward compute in float32).
    one, zero = np.float32(1), np.float32(0)
    form = Sigmoid(evaluation.sigmoid) if every and not fused else Sigmoid.ROUNDED_ONCE

    def sigmoid_backward(d, y):
        if form is Sigmoid.RECIPROCAL:
            return r(d * r(y * r(one - y)))
        if form is Sigmoid.QUOTIENT:
            return r(r(d * y) * r(one - y))
        return gate_out(d * y * (one - y))

    def tanh_shares(d, y):  # XLA's: (g + g y)(1 - y), transposed: a = d (1 - y), then a and a y, added one by one
        a = r(d * r(one - y))
        return a, r(a * y)

    def tanh_backward(d, y):
        if form is Sigmoid.RECIPROCAL:
            a, ay = tanh_shares(d, y)
            return r(a + ay)
        if form is Sigmoid.QUOTIENT:
            return r(d * r(one - r(y * y)))
        return gate_out(d * (one - y * y))

    whole = evaluation.input_projection or Bias(evaluation.bias) is Bias.INPUT_AFTER
    accumulate = {"W": [], "U": [], "b": [], "p": [], "W_hr": []}  # each step's share, last step first
    dz_all = []
    dx = [None] * len(steps)
    if run.show is not None:  # (8): y_t = s_t * h_t sends s_t * dy_t to h_t
        dy = np.where(run.show[:, :, None], dy, zero)
    dh_carry, dc_carry = dh_T, dc_T
    for t in reversed(range(len(steps))):
        s = steps[t]
        dh = op(dy[t] + dh_carry)
        dc = dc_carry
        if s.mu is not None:  # (8): a masked row's cotangents go around the step, unchanged
            kept = s.mu[:, None]
            dh, dh_around = np.where(kept, dh, zero), np.where(kept, zero, dh)
            dc, dc_around = np.where(kept, dc, zero), np.where(kept, zero, dc)
        if W_hr is not None:  # (7): back through the projection (and its clip) to m_t
            da = _passed(dh, s.proj_passed)
            if not every:
                da = stored(da)  # the operand of the half products dm_t = W_hr^T da_t, dW_hr += da_t m_t^T
            accumulate["W_hr"].append(gate_out(outer(da, s.m)))
            dh = gate_out(product(da, W_hr))
        i_passed, f_passed, g_passed, o_passed = s.gate_passed
        # (6) h = o * tanh(c)
        do = _passed(op(dh * s.tanh_c), o_passed)  # (5g)
        dtanh = op(dh * s.o)
        if form is Sigmoid.RECIPROCAL:  # the tanh's two shares added to the carried cotangent one by one, as XLA does
            a, ay = tanh_shares(dtanh, s.tanh_c)
            dc = r(r(dc + a) + ay)
        else:
            dc_tanh = tanh_backward(dtanh, s.tanh_c)
            if not (evaluation.consumer_order and p is not None):
                dc = op(dc + dc_tanh)
        # (5) o = sigma(z_o + p_o * c)
        dz_o = sigmoid_backward(do, s.o)
        if p is not None and evaluation.consumer_order and form is not Sigmoid.RECIPROCAL:
            dc = op(op(op(p[2] * dz_o) + dc_tanh) + dc)  # c_t's uses in order: the peephole, tanh, the next step
        elif p is not None:
            dc = op(dc + op(p[2] * dz_o))
        dc = _passed(dc, s.cell_passed)  # (4c): once dc_t is complete
        # (4) c = f * c_prev + i * g
        di, df, dg = op(dc * s.g), op(dc * s.c_prev), op(dc * s.i)
        dc_prev = op(dc * s.f)
        # (1)-(3)
        dz_g = tanh_backward(_passed(dg, g_passed), s.g)  # (3g)
        if coupled:  # (2c): f = 1 - i
            di, dz_f = op(di - df), np.zeros_like(df)
        else:
            dz_f = sigmoid_backward(_passed(df, f_passed), s.f)  # (2g)
        dz_i = sigmoid_backward(_passed(di, i_passed), s.i)  # (1g)
        if p is not None:  # c_{t-1}'s shares: through f, then the peepholes (XLA: f's before i's)
            first, second = (p[1] * dz_f, p[0] * dz_i) if form is Sigmoid.RECIPROCAL else (p[0] * dz_i, p[1] * dz_f)
            if coupled:
                dc_prev = op(dc_prev + op(p[0] * dz_i))
            else:
                dc_prev = op(op(dc_prev + op(first)) + op(second))
            accumulate["p"].append(np.stack([gate_out(batch_sum(op(d * c))) for d, c in
                                             ((dz_i, s.c_prev), (dz_f, s.c_prev), (dz_o, s.c))]))
        dz = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)  # (B, 4H), gates i, f, g, o
        if not every:
            dz = stored(dz)
        dz_all.append(dz)
        dx[t] = stored(through(dz, W))
        dh_carry = gate_out(through(dz, U))  # carried in float32 where the policy rounds only its storage points
        dc_carry = dc_prev
        if s.mu is not None:  # the masked rows' cotangents, which went around the step (exact: the step's share is 0)
            dh_carry, dc_carry = dh_carry + dh_around, dc_carry + dc_around
        accumulate["U"].append(gate_out(outer(dz, s.h_prev)))
        if not whole:
            accumulate["W"].append(gate_out(outer(dz, s.x)))
            accumulate["b"].append(gate_out(batch_sum(dz)))
    if whole:  # one product over every step and row
        dz_stack = np.concatenate(dz_all[::-1])
        accumulate["W"] = [gate_out(outer(dz_stack, np.concatenate([s.x for s in steps])))]
        accumulate["b"] = [gate_out(batch_sum(dz_stack))]

    def total(shares):
        if policy is Policy.EVERY_OPERATION:  # summed in the half type, as autodiff sums them
            result = shares[0]
            for share in shares[1:]:
                result = r(result + share)
            return result
        result = np.zeros_like(shares[0])
        for share in shares:
            result = result + share
        return stored(result)

    return lstm.Gradients(
        x=np.stack(dx), h0=stored(dh_carry), c0=stored(dc_carry), W=total(accumulate["W"]).reshape(4, H, I),
        U=total(accumulate["U"]).reshape(4, H, P), b=total(accumulate["b"]).reshape(4, H),
        p=None if p is None else total(accumulate["p"]), dtype=np.dtype(np.float32),
        W_hr=None if W_hr is None else total(accumulate["W_hr"]))
