"""Cursor pagination and ETags."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from truthset.api.errors import PreconditionFailedError, PreconditionRequiredError
from truthset.audit.chain import canonical_json
from truthset.domain.errors import InputError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for "after the row with id ``last_id``"."""
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> int:
    """The id a cursor points after (0 for none).

    Raises
    ------
    InputError
        Not a cursor this server issued (field ``cursor``).
    """
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = text.split(":", 1)
        if prefix != "v1" or not value.isdigit():
            raise ValueError(text)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InputError("not a valid page cursor; use next_cursor from a previous page",
                         field="cursor") from None


def paginate(
    session: Session,
    stmt: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> tuple[Sequence[Any], str | None]:
    """One page of ``stmt`` ordered by the positive integer column ``key``: rows after the
    cursor, and the cursor of the next page (``None`` on the last). ``descending`` walks from
    the largest key down (a cursor then points below the last row shown)."""
    after = decode_cursor(cursor)
    if descending:
        page = stmt.where(key < after) if after else stmt
        rows = session.scalars(page.order_by(key.desc()).limit(limit + 1)).all()
    else:
        rows = session.scalars(stmt.where(key > after).order_by(key).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(int(getattr(rows[-1], key.key))) if more and rows else None
    return rows, next_cursor


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
