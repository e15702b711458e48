"""Errors of authentication (who are you?) as opposed to authorisation (may you?)."""

from __future__ import annotations

from truthset.domain.errors import PermissionDeniedError, TruthsetError


class AuthenticationError(TruthsetError):
    """No valid credentials: missing, unknown, expired or revoked (HTTP 401)."""


class ThrottledError(TruthsetError):
    """Too many failed sign-ins: the key is locked for ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CsrfError(PermissionDeniedError):
    """A cookie-authenticated unsafe request without the current CSRF token (HTTP 403)."""
