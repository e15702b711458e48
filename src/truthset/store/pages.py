"""Keyset (cursor) pagination over a query: one page of rows and the cursor of the next.

A cursor is opaque to clients: it names the integer key of the last row shown. Paging by key
rather than by offset keeps every page one index range scan, however deep, and a row added
meanwhile never shifts the later pages. Services return such pages; the interfaces pass the
client's cursor in and the next one out.
"""

from __future__ import annotations

import base64
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from truthset.domain.errors import InputError

T = TypeVar("T")

#: One page of rows and the cursor of the next page (``None`` on the last page).
Page: TypeAlias = tuple[list[T], str | None]


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
    stmt: Select[T],
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Page[T]:
    """One page of ``stmt`` ordered by the positive integer column ``key``.

    Parameters
    ----------
    session:
        The open session.
    stmt:
        A query selecting one entity (or column) per row, without ORDER BY or LIMIT.
    key:
        The positive integer column the pages follow (normally the primary key).
    cursor:
        ``next_cursor`` of the previous page; ``None`` for the first page.
    limit:
        Rows per page.
    descending:
        Walk from the largest key down (a cursor then points below the last row shown).

    Returns
    -------
    Page
        The rows after the cursor and the cursor of the next page (``None`` on the last).

    Raises
    ------
    InputError
        ``cursor`` is not one this server issued (field ``cursor``).
    """
    after = decode_cursor(cursor)
    if descending:
        page = stmt.where(key < after) if after else stmt
        rows = list(session.scalars(page.order_by(key.desc()).limit(limit + 1)))
    else:
        rows = list(session.scalars(stmt.where(key > after).order_by(key).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(int(getattr(rows[-1], key.key))) if more and rows else None
    return rows, next_cursor
