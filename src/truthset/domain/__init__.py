"""Plain typed objects and rules: label schemas, guidelines, payloads, policies. No I/O."""

from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TruthsetError,
)

__all__ = [
    "ConflictError",
    "InputError",
    "NotFoundError",
    "PermissionDeniedError",
    "TruthsetError",
]
