"""Known non-conformances: each a strict xfail with its upstream reason.

An entry that starts passing fails the run (xfail_strict), so the list stays true.
Keys: (implementation id, test kind, variant or None for both, dtype or None, device or None).
"""

from __future__ import annotations

KNOWN_FAILURES: dict[tuple[str, str, str | None, str | None, str | None], str] = {
    ("tensorflow/BlockLSTMV2+registered-gradient", "gradients", None, None, None): (
        "TensorFlow 2.21 registers the same gradient function for BlockLSTM and BlockLSTMV2 "
        "(tensorflow/python/ops/rnn_grad.py); it calls the V1 gradient kernel, which assumes the "
        "i,g,f,o gate order, while V2 computes in i,f,g,o: tape gradients through BlockLSTMV2 are wrong"
    ),
}


def known_failure(implementation_id: str, kind: str, variant: str, dtype: str, device: str) -> str | None:
    for (impl, k, v, d, dev), reason in KNOWN_FAILURES.items():
        if impl == implementation_id and k == kind and v in (None, variant) and d in (None, dtype) and dev in (None, device):
            return reason
    return None
