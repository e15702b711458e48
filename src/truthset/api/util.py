"""Page sizes and ETags (cursor pagination itself is :mod:`truthset.store.pages`)."""

from __future__ import annotations

import hashlib
from typing import Any

from truthset.api.errors import PreconditionFailedError, PreconditionRequiredError
from truthset.audit.chain import canonical_json

#: Page size of a list when the client names none, and the largest it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def etag_of(data: Any) -> str:
    """A strong ETag of a JSON-ready value."""
    return '"' + hashlib.sha256(canonical_json(data).encode()).hexdigest()[:32] + '"'


def check_if_match(if_match: str | None, current: str) -> None:
    """Refuse an update made without, or against a stale, ``If-Match``.

    Raises
    ------
    PreconditionRequiredError
        No ``If-Match`` header (428).
    PreconditionFailedError
        The header names another version (412): someone changed it since it was read.
    """
    if not if_match:
        raise PreconditionRequiredError(
            "this update needs an If-Match header with the ETag from reading the resource"
        )
    offered = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" not in offered and current not in offered:
        raise PreconditionFailedError(
            "the resource changed since you read it (ETag mismatch); reload and reapply"
        )
