"""Errors shared by every layer.

Truthset refuses bad input with a message that names *where* the problem is (a file, a row or
line, a field) and *why*. :class:`InputError` carries those parts separately so that the CLI can
print them and the API can turn them into a 4xx body, without parsing strings.
"""

from __future__ import annotations

from dataclasses import dataclass


class TruthsetError(Exception):
    """Base class of every error Truthset raises on purpose."""


@dataclass
class InputError(TruthsetError, ValueError):
    """Bad input, refused before anything is written.

    Parameters
    ----------
    reason:
        What is wrong, in words a user understands.
    source:
        The file, URL or argument the input came from (``None`` when it came from a call).
    location:
        Where inside the source: ``"row 12"``, ``"line 3"``, ``"frame 4"``.
    field:
        The column, key or attribute at fault.
    """

    reason: str
    source: str | None = None
    location: str | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                self.source,
                self.location,
                f"field '{self.field}'" if self.field else None,
            )
            if part
        )
        return f"{where}: {self.reason}" if where else self.reason


class NotFoundError(TruthsetError, LookupError):
    """A named record (project, user, item, release…) does not exist."""


class ConflictError(TruthsetError):
    """The request conflicts with the current state (duplicate, stale version, lease lost)."""


class PermissionDeniedError(TruthsetError):
    """The actor may not do this."""
