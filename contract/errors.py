"""How a call of an implementation can end other than with an answer, as exceptions that say why.

"Not supported" and "unavailable" are not failures: the first is what an implementation declares (or
raises) that it does not do, the second that it could, but not here. Everything else that goes wrong
is a failure of the implementation, and these say which: an answer outside the contract
(:class:`ResultError`), a death (:class:`Crashed`), a call that never returned (:class:`TimedOut`).
"""

from __future__ import annotations


class NotSupported(Exception):
    """The implementation does not do this (a dtype, a device, a feature, gradients); the message says what."""


class Unavailable(Exception):
    """The implementation could do this, but not here: its framework is missing or broken, or there is no GPU."""


class Crashed(Exception):
    """The implementation's process died during the call (a fatal signal, an exit); the message says how."""


class TimedOut(Exception):
    """The call did not return within its time limit; the message says which."""


class ResultError(Exception):
    """An implementation's answer is not what the contract asks for: not an array, another dtype or shape,
    non-finite, a gradient missing or unexpected. Always a failure: ``tensor``, ``problem``, ``expected``
    and ``actual`` say what."""

    def __init__(self, tensor: str, problem: str, expected: object, actual: object):
        self.tensor, self.problem, self.expected, self.actual = tensor, problem, expected, actual
        super().__init__(f"{tensor}: {problem}: expected {expected}, got {actual}")


__all__ = ["Crashed", "NotSupported", "ResultError", "TimedOut", "Unavailable"]
