"""Half-precision mutants and honest variants: what the half-type columns must catch, and what they must let pass.

    pytest conformance/ --backend conformance.half_mutants                      the mutants (all must fail)
    pytest conformance/ --backend conformance.half_mutants:HONEST               the honest variants (all must pass)

Each is the spec's precision-policy forward and backward (spec/precision.py) as a row of plain functions
(:class:`contract.loading.FunctionRow`), loaded through the same --backend path third parties use:

- a mutant (``half-mutant/<name>``) declares a policy and computes one of the mistakes of
  :data:`contract.half_bounds.MISTAKES` instead (accumulating in the half type, truncating, c stored in half, every
  operation rounded, gates f and g swapped); ``half-mutant/float32-computes-in-bfloat16`` declares float32 and
  computes in bfloat16 (oneDNN's ``fp32_precision = "bf16"``, OpenVINO's default on bf16 CPUs);
- an honest variant (``policy/<policy>/<evaluation>``) computes its declared policy in one of the equally valid
  ways the bounds were derived from (:func:`contract.half_bounds.evaluations`).

tests/test_half_verdicts.py runs both and requires every mutant to fail, diagnosed, and every variant to pass.
"""

from __future__ import annotations

import numpy as np

from contract.half_bounds import (
    HALF_POLICIES,
    MISTAKES,
    PARAMETERS,
    Mistake,
    canonical,
    cells_with_f_g_swapped,
    evaluations,
    unswapped,
    with_f_g_swapped,
)
from contract.loading import FunctionRow
from contract.vocabulary import Feature
from spec.params import LSTMParams
from spec.precision import Evaluation, Policy, backward, forward, round_to
from spec.precision_layer import layer_backward, layer_forward

HALF = ("bfloat16", "float16")


def _row(row_id: str, description: str, policy: Policy, computed: Policy, evaluation: Evaluation,
         swap_f_g: bool = False) -> FunctionRow:
    def forward_cell(params, x, h0, c0, *, forget_bias):
        used = with_f_g_swapped(params) if swap_f_g else params
        answer = forward(used, x, h0, c0, dtype=x.dtype.name, policy=computed, forget_bias=forget_bias,
                         evaluation=evaluation)
        return tuple(a.astype(x.dtype) for a in answer)  # exact: the policy's values are half values

    def backward_cell(params, x, h0, c0, dy, dh_T, dc_T, *, forget_bias):
        used = with_f_g_swapped(params) if swap_f_g else params
        answer = backward(used, x, h0, c0, dy, dh_T, dc_T, dtype=x.dtype.name, policy=computed, forget_bias=forget_bias,
                          evaluation=evaluation)
        return _stored(unswapped(answer) if swap_f_g else answer, x.dtype, policy)

    def forward_layer(params, x, h0, c0, *, config, lengths, mask):
        used = cells_with_f_g_swapped(params) if swap_f_g else params
        answer = layer_forward(used, x, h0, c0, config=config, lengths=lengths, mask=mask, dtype=x.dtype.name,
                               policy=computed, evaluation=evaluation)
        return tuple(a.astype(x.dtype) for a in answer)

    def backward_layer(params, x, h0, c0, dy, dh_T, dc_T, *, config, lengths, mask):
        used = cells_with_f_g_swapped(params) if swap_f_g else params
        answer = layer_backward(used, x, h0, c0, dy, dh_T, dc_T, config=config, lengths=lengths, mask=mask,
                                dtype=x.dtype.name, policy=computed, evaluation=evaluation)
        return _stored(unswapped(answer) if swap_f_g else answer, x.dtype, policy)

    return FunctionRow(id=row_id, description=description, dtypes=HALF, policies={d: policy for d in HALF},
                       features=frozenset(Feature), forward_function=forward_cell, backward_function=backward_cell,
                       forward_layer_function=forward_layer, backward_layer_function=backward_layer)


def _stored(gradients: dict, dtype: np.dtype, policy: Policy) -> dict[str, np.ndarray]:
    """The gradients in the half type (exact: the policy's values are half values), or, under mixed precision, the
    parameters' in float32."""
    return {name: value.astype(np.float32 if policy is Policy.MIXED and canonical(name) in PARAMETERS else dtype)
            for name, value in gradients.items()}


def mutant(mistake: Mistake) -> FunctionRow:
    return _row(f"half-mutant/{mistake.name}", mistake.says, mistake.declared, mistake.computed, mistake.evaluation,
                mistake.swap_f_g)


def evaluation_name(evaluation: Evaluation) -> str:
    """'pairwise', 'pairwise+fused', 'pairwise+bias-input', 'pairwise+multiply-add'."""
    parts = [evaluation.accumulation.value]
    if evaluation.fused:
        parts.append("fused")
    if evaluation.bias.value != "after":
        parts.append(f"bias-{evaluation.bias.value}")
    if evaluation.multiply_add:
        parts.append("multiply-add")
    if evaluation.sigmoid.value != "rounded-once":
        parts.append(f"sigmoid-{evaluation.sigmoid.value}")
    if evaluation.joint_product:
        parts.append("joint-product")
    if evaluation.input_projection:
        parts.append("input-projection")
    if evaluation.gate_products:
        parts.append("gate-products")
    if evaluation.forget_bias_first:
        parts.append("forget-bias-first")
    if evaluation.consumer_order:
        parts.append("consumer-order")
    return "+".join(parts)


def _computes_in_bfloat16() -> FunctionRow:
    """A float32 row that rounds its data to bfloat16 and computes under half-storage-float32-accumulation."""

    def forward_cell(params, x, h0, c0, *, forget_bias):
        def bf16(a):
            return None if a is None else round_to(a, "bfloat16")

        rounded = LSTMParams(bf16(params.W), bf16(params.U), bf16(params.b), bf16(params.p))
        answer = forward(rounded, bf16(x), bf16(h0), bf16(c0), dtype="bfloat16", policy=Policy.HALF_STORAGE,
                         forget_bias=forget_bias)
        return tuple(a.astype(np.float32) for a in answer)

    return FunctionRow(id="half-mutant/float32-computes-in-bfloat16", description="computes a float32 LSTM in bfloat16",
                       dtypes=("float32",), features=frozenset({Feature.PEEPHOLE}), gradients=False,
                       forward_function=forward_cell)


ROWS = (*(mutant(m) for m in MISTAKES), _computes_in_bfloat16())
HONEST = tuple(_row(f"policy/{p.value}/{evaluation_name(e)}", f"{p.value}, evaluated {evaluation_name(e)}", p, p, e)
               for p in HALF_POLICIES for e in evaluations(p))

__all__ = ["HONEST", "ROWS", "evaluation_name", "mutant"]
