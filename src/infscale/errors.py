"""Errors by fault and retryability.

* :class:`ConfigError` — the caller's fault (bad parameter, unknown name, missing model file).
  The CLI prints its one-line message and exits with code 2; the server maps it to a 4xx.
* :class:`BackendError` — a generator or scorer failed. ``retryable`` says whether the same call
  may succeed later (timeouts, 429, 5xx); fatal ones carry the backend's message.
* :class:`~infscale.meter.BudgetExhausted` (not an error users see, so not an
  :class:`InfscaleError`): the meter raises it when the budget admits no more work, and the
  runner catches it to stop the strategy.
"""

from __future__ import annotations

__all__ = ["InfscaleError", "ConfigError", "BackendError", "MissingExtraError"]


class InfscaleError(Exception):
    """Base class of every error infscale raises on purpose."""


class ConfigError(InfscaleError, ValueError):
    """A value the caller gave is not accepted.

    ``param`` names the parameter and ``accepted`` says what would have been accepted, so the
    message alone tells the user what to change.
    """

    def __init__(self, param: str, message: str, accepted: str | None = None):
        self.param = param
        self.accepted = accepted
        text = f"{param}: {message}"
        if accepted:
            text += f" (accepted: {accepted})"
        super().__init__(text)


class MissingExtraError(ConfigError):
    """An optional dependency is not installed; the message names the install command."""

    def __init__(self, what: str, install: str):
        super().__init__(what, "is not installed", f"install it with: {install}")


class BackendError(InfscaleError, RuntimeError):
    """A generator or scorer backend failed."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None):
        self.retryable = retryable
        self.status = status
        super().__init__(message)
