"""Which rows refer to a blob, and removing blobs once the last reference is committed away.

Blobs are referenced by digest from plain columns (``imaging_instances.sha256``,
``release_files.sha256``, ``release_signatures.file_sha256``…) and from JSON columns
(``items.media``, ``prelabel_models.config``, job results…). :func:`references` therefore
looks in every text column long enough to hold a digest and in every JSON column of every
table, except the audit trail (which names digests as history, not as references) and the
blob index itself. :func:`delete_after_commit` removes files only after the surrounding
transaction committed, so a rollback never loses a blob that the restored rows still need.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from truthset.store.blobs import BlobStore
from truthset.store.models import Base

#: Tables that name digests without holding a reference to the bytes.
NOT_REFERENCES = frozenset({"audit_events", "audit_head", "blobs"})
_PENDING = "truthset.blob_deletes"
_HOOKED = "truthset.blob_delete_hooks"


def _candidate_columns(table: sa.Table) -> list[sa.Column[object]]:
    out = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.JSON) or (
            isinstance(kind, sa.String) and (kind.length is None or kind.length >= 64)
        ):
            out.append(column)
    return out


def references(session: Session, digest: str) -> list[str]:
    """Every ``table.column`` whose rows (as flushed in this transaction) name ``digest``.

    Parameters
    ----------
    session:
        The unit of work; pending changes are flushed first so that replaced references
        no longer count.
    digest:
        The blob's SHA-256 (hex).

    Returns
    -------
    list of str
        ``"table.column"`` names, sorted; empty when nothing refers to the blob.
    """
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    session.flush()
    found = []
    for table in Base.metadata.sorted_tables:
        if table.name in NOT_REFERENCES:
            continue
        for column in _candidate_columns(table):
            if isinstance(column.type, sa.JSON):
                condition = sa.cast(column, sa.Text).contains(digest)
            else:
                condition = column == digest
            hit = session.execute(sa.select(sa.literal(1)).select_from(table)
                                  .where(condition).limit(1)).first()
            if hit is not None:
                found.append(f"{table.name}.{column.name}")
    return sorted(found)


def delete_after_commit(session: Session, blobs: BlobStore, digests: Iterable[str]) -> None:
    """Remove ``digests`` from ``blobs`` once the session's outermost transaction commits.

    Any rollback (of the transaction or of a savepoint) forgets every pending removal:
    a blob is then kept rather than risked.
    """
    if not session.info.get(_HOOKED):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_soft_rollback", _after_rollback)
        session.info[_HOOKED] = True
    session.info.setdefault(_PENDING, []).extend((blobs, d) for d in digests)


def _after_commit(session: Session) -> None:
    root = session.get_transaction()
    if root is not None and root.is_active:  # a savepoint committed; the rest goes on
        return
    pending: list[tuple[BlobStore, str]] = session.info.pop(_PENDING, [])
    for blobs, digest in pending:
        blobs.delete(digest)


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    session.info.pop(_PENDING, None)
