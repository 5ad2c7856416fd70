r"""The LSTM layer under a precision policy: spec.layer's directions, stacks, lengths and masks over the cell of
:mod:`spec.precision`.

The layer's rules (9)-(14) of :mod:`spec.layer` are plumbing: reversing time, placing the directions side by side,
feeding one layer's output to the next, carrying a masked row's state. None of them computes, so none rounds: each
direction is the cell under the policy (spec.precision.forward, with the case's clips, coupled gates, projection and
mask), and a layer above reads the outputs below as the policy stored them (half values). The one rule that adds is
(9) backward: both directions of a bidirectional layer read its input, and the cotangent of that input is the sum of
their shares; a half-type row adds the two half tensors and stores the sum in half (autodiff accumulates a tensor's
gradient in its type), so

    (9)   dx^l = r(dx^{l,0} + dx^{l,1})        (exact in float32 under TF32)

and layer l - 1 receives that sum as the cotangent of its outputs.
"""

from __future__ import annotations

import numpy as np

from spec import layer
from spec.params import LayerParams
from spec.precision import STANDARD, Evaluation, Policy, _backward, _checked, _forward, check_policy_dtype, round_to

__all__ = ["layer_backward", "layer_forward"]


def layer_forward(params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, config: layer.LayerConfig,
                  dtype: str, policy: Policy, lengths: np.ndarray | None = None, mask: np.ndarray | None = None,
                  evaluation: Evaluation = STANDARD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """spec.layer.forward under ``policy``: y (T, B, D * P), h_T (L * D, B, P), c_T (L * D, B, H) as float32 arrays
    holding what the policy stores. The data are values of ``dtype`` (checked by the cell, tensor by tensor)."""
    runs, y = _runs(params, x, h0, c0, config, lengths, mask, dtype, policy, evaluation)
    h_T, c_T = layer.final_states(runs)
    return y, h_T, c_T


def _runs(params, x, h0, c0, config, lengths, mask, dtype, policy, evaluation):
    """spec.layer's plumbing, each direction the cell under the policy: the runs, runs[l][d], and the output."""
    mask, zero_output_for_mask = layer.check_inputs(params, x, h0, c0, config=config, lengths=lengths, mask=mask,
                                                    dtype=params.dtype)
    return layer.run_layers(params, x, h0, c0, mask, config, _forward, zero_output_for_mask=zero_output_for_mask,
                            dtype=dtype, policy=check_policy_dtype(policy, dtype), evaluation=evaluation,
                            **config.cell_options())


def layer_backward(params: LayerParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, dy: np.ndarray, dh_T: np.ndarray,
                   dc_T: np.ndarray, *, config: layer.LayerConfig, dtype: str, policy: Policy,
                   lengths: np.ndarray | None = None, mask: np.ndarray | None = None,
                   evaluation: Evaluation = STANDARD) -> dict[str, np.ndarray]:
    """spec.layer.backward under ``policy``, for the cotangents dy, dh_T, dc_T (values of ``dtype``): the gradients of
    x, h0, c0 and every cell's parameters, named as spec.layer.LayerGradients.tensors() names them."""
    policy = check_policy_dtype(policy, dtype)
    half = "bfloat16" if policy is Policy.TF32 else str(dtype)
    cotangents = _checked(policy, dtype, half, {"dy": dy, "dh_T": dh_T, "dc_T": dc_T})
    runs, _ = _runs(params, x, h0, c0, config, lengths, mask, dtype, policy, evaluation)
    cells = [run for layer_runs in runs for run in layer_runs]

    def cell_backward(run, d_y, dh, dc):
        return _backward(run, d_y, dh, dc, dtype=dtype, policy=policy, evaluation=evaluation)

    def add(a, b):  # (9): the directions' shares of a layer input's cotangent, summed and stored
        total = a + b
        return total if policy is Policy.TF32 else round_to(total, half)

    grads, dx = layer.backward_layers(cells, config, cotangents["dy"], cotangents["dh_T"], cotangents["dc_T"],
                                      cell_backward, add)
    return layer.LayerGradients(x=dx, h0=np.stack([g.h0 for g in grads]), c0=np.stack([g.c0 for g in grads]),
                                params=LayerParams(tuple(g.params() for g in grads), params.num_directions),
                                dtype=np.dtype(np.float32)).tensors()
