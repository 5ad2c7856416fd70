r"""The classifier head for the spec run and for the runs through the conformance contract: the dense
layer on the LSTM's last output and the softmax cross-entropy, in NumPy, with hand-derived gradients.

Forward, for a batch of B rows with labels y_b in {0..C-1} (h_T (B, H), Wd (C, H), bd (C,)):

    (H1)  a_b   = Wd h_T,b + bd                                   logits, (B, C)
    (H2)  p_b   = softmax(a_b):  p_bk = exp(a_bk - m_b) / sum_j exp(a_bj - m_b),   m_b = max_j a_bj
    (H3)  L     = (1/B) sum_b ( logsumexp(a_b) - a_b,y_b )
                = (1/B) sum_b ( m_b + log sum_j exp(a_bj - m_b) - a_b,y_b )

Subtracting m_b changes neither p nor L (it cancels) but keeps every exp in (0, 1]: no overflow.

Backward (e_y the one-hot row of the label):

    (H3)  dL/da_b  = (p_b - e_{y_b}) / B        since d logsumexp(a)/da = softmax(a)
    (H1)  dL/dWd   = sum_b (dL/da_b)^T h_T,b   = (dL/da)^T h_T        (C, H)
          dL/dbd   = sum_b dL/da_b                                    (C,)
          dL/dh_T  = (dL/da) Wd                                       (B, H): the cotangent the LSTM's
                                                                      backward receives as dh_T
                                                                      (dh_seq = 0, dc_T = 0: only the
                                                                      last output reaches the loss)

Everything computes in the dtype of its inputs (float32 for training, float64 for the checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class HeadForward:
    loss: float
    logits: np.ndarray  # (B, C)
    probabilities: np.ndarray  # (B, C)
    h_T: np.ndarray
    labels: np.ndarray


def forward(h_T: np.ndarray, Wd: np.ndarray, bd: np.ndarray, labels: np.ndarray) -> HeadForward:
    logits = h_T @ Wd.T + bd  # (H1)
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    probabilities = e / s  # (H2)
    rows = np.arange(len(labels))
    per_row = m[:, 0] + np.log(s[:, 0]) - logits[rows, labels]  # (H3)
    return HeadForward(float(per_row.mean(dtype=h_T.dtype)), logits, probabilities, h_T, labels)


def backward(fwd: HeadForward, Wd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dL/dh_T, dL/dWd, dL/dbd)."""
    B = len(fwd.labels)
    da = fwd.probabilities.copy()
    da[np.arange(B), fwd.labels] -= 1
    da /= da.dtype.type(B)  # (H3)
    return da @ Wd, da.T @ fwd.h_T, da.sum(axis=0)  # (H1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))
