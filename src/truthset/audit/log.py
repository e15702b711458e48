"""Appending audit events inside the caller's transaction, and reading the chain back.

Two ways in:

- :func:`install` hooks a session factory so that every INSERT, UPDATE and DELETE of a Truthset
  record appends an event (``create``/``update``/``delete`` with before and after values) in the
  same transaction as the change. No service can forget to audit a write.
- :func:`record` appends an event for things that are not row changes: ``login``, ``import``,
  ``export``, ``release``, denied attempts.

The actor is taken from ``session.info["actor"]`` (set by the unit of work).

Events are collected while the transaction runs and appended to the chain just before it commits
(:func:`_before_commit`). Appending takes the chain's write lock (the ``audit_head`` row), so
deferring it holds that lock only for the append and the commit, not for everything the
transaction does after its first write: concurrent writers run side by side and queue only for
the chain itself. The chain's order is therefore commit order. Inside a SAVEPOINT
(``begin_nested``) events are appended at once, so that a rolled-back savepoint takes its events
with it. A transaction that rolls back drops its collected events with its changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import event, insert, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import get_history

from truthset.audit.chain import ChainHead, VerifyResult, canonical_json, event_hash, verify_chain
from truthset.domain.errors import TruthsetError
from truthset.store.models import UNAUDITED_TABLES, AuditEvent, AuditHead

REDACTED = "[redacted]"
SYSTEM_ACTOR = "system"


class AuditTamperError(TruthsetError):
    """Code tried to change or delete an audit event through the ORM."""


def _utc_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return _utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def record(
    session: Session,
    *,
    action: str,
    entity_type: str,
    entity_id: Any = None,
    project_id: int | None = None,
    before: Any = None,
    after: Any = None,
    actor: str | None = None,
) -> None:
    """Record one event in ``session``'s transaction; it joins the chain when the transaction
    commits (at once inside a savepoint, or on a session without the audit hooks)."""
    _collect(
        session,
        [
            {
                "action": action,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "project_id": project_id,
                "before": before,
                "after": after,
            }
        ],
        actor=actor,
    )


_PENDING = "truthset_audit_pending"
_COMMITTING = "truthset_audit_committing"
_AUDITED = "truthset_audited"


def _collect(session: Session, events: list[dict[str, Any]], *, actor: str | None = None) -> None:
    """Keep ``events`` for the commit, or append them now where deferring would be wrong."""
    if not events:
        return
    who = actor or session.info.get("actor") or SYSTEM_ACTOR
    deferred = (
        _is_audited(session)
        and not session.in_nested_transaction()
        and not session.info.get(_COMMITTING)
    )
    if not deferred:
        append_events(session, events, actor=who)
        return
    at = _utc_iso()
    pending = session.info.setdefault(_PENDING, [])
    pending.extend({**change, "actor": who, "at": at} for change in events)


def _is_audited(session: Session) -> bool:
    """True when the session's factory carries the commit hook that appends collected events."""
    return bool(session.info.get(_AUDITED))


def append_events(
    session: Session, events: list[dict[str, Any]], *, actor: str | None = None
) -> int:
    """Append several events (dicts with action, entity_type, entity_id, project_id, before,
    after, and optionally the actor and time they were collected with) in one go now; return
    the sequence number of the last.

    The head row is updated first, which takes the write lock (a row lock on PostgreSQL, the
    database lock on SQLite), so concurrent transactions append one after another and the chain
    never forks. The events are then chained in memory and inserted in one statement.
    """
    if not events:
        return stored_head(session).seq
    conn = session.connection()
    conn.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + len(events))
    )
    head = conn.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    first = int(head.seq) - len(events) + 1
    who = actor or session.info.get("actor") or SYSTEM_ACTOR
    at = _utc_iso()
    prev = head.hash
    rows = []
    for offset, change in enumerate(events):
        entity_id = change.get("entity_id")
        fields: dict[str, Any] = {
            "seq": first + offset,
            "at": change.get("at") or at,
            "actor": change.get("actor") or who,
            "action": change["action"],
            "entity_type": change["entity_type"],
            "entity_id": None if entity_id is None else str(entity_id),
            "project_id": change.get("project_id"),
            "before": canonical_json(change.get("before")),
            "after": canonical_json(change.get("after")),
            "prev_hash": prev,
        }
        fields["hash"] = prev = event_hash(fields)
        rows.append(fields)
    conn.execute(insert(AuditEvent), rows)
    conn.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=prev))
    return first + len(events) - 1


def _snapshot(obj: Any) -> dict[str, Any]:
    mapper = inspect(obj).mapper
    out: dict[str, Any] = {}
    for attr in mapper.column_attrs:
        column = attr.columns[0]
        value = getattr(obj, attr.key)
        if column.info.get("audit") == "redact" and value is not None:
            value = REDACTED
        out[attr.key] = _plain(value)
    return out


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for attr in inspect(obj).mapper.column_attrs:
        hist = get_history(obj, attr.key)
        if not hist.has_changes():
            continue
        redact = attr.columns[0].info.get("audit") == "redact"
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        before[attr.key] = REDACTED if (redact and old is not None) else _plain(old)
        after[attr.key] = REDACTED if (redact and new is not None) else _plain(new)
    return before, after


def _identity(obj: Any) -> tuple[str, str | None, int | None]:
    table = obj.__table__.name
    pk = inspect(obj).mapper.primary_key_from_instance(obj)
    entity_id = None if any(p is None for p in pk) else ":".join(str(p) for p in pk)
    project_id = getattr(obj, "project_id", None)
    if table == "projects":
        project_id = obj.id
    return table, entity_id, project_id


def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEvent | AuditHead):
            raise AuditTamperError("audit events are append-only; refusing to change or delete one")


def _after_flush(session: Session, _ctx: Any) -> None:
    events: list[dict[str, Any]] = []
    for obj in list(session.new):
        if obj.__table__.name in UNAUDITED_TABLES:
            continue
        table, entity_id, project_id = _identity(obj)
        events.append({"action": "create", "entity_type": table, "entity_id": entity_id,
                       "project_id": project_id, "before": None, "after": _snapshot(obj)})
    for obj in list(session.dirty):
        if obj.__table__.name in UNAUDITED_TABLES or not session.is_modified(obj):
            continue
        before, after = _changes(obj)
        if not after:
            continue
        table, entity_id, project_id = _identity(obj)
        events.append({"action": "update", "entity_type": table, "entity_id": entity_id,
                       "project_id": project_id, "before": before, "after": after})
    for obj in list(session.deleted):
        if obj.__table__.name in UNAUDITED_TABLES:
            continue
        table, entity_id, project_id = _identity(obj)
        events.append({"action": "delete", "entity_type": table, "entity_id": entity_id,
                       "project_id": project_id, "before": _snapshot(obj), "after": None})
    # Deterministic order inside one flush: by table, then entity id.
    events.sort(key=lambda e: (e["entity_type"], _sort_key(e["entity_id"])))
    _collect(session, events)


def _before_commit(session: Session) -> None:
    """Flush what is left, then append every collected event to the chain in one go."""
    session.flush()
    pending = session.info.pop(_PENDING, None)
    session.info[_COMMITTING] = True  # a flush after this point appends at once
    if pending:
        append_events(session, pending)


def _end_of_transaction(session: Session, transaction: Any) -> None:
    """A top-level transaction ended (commit or rollback): forget what it collected."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_COMMITTING, None)


def _sort_key(entity_id: str | None) -> tuple[int, str]:
    if entity_id is None:
        return (0, "")
    return (0, entity_id.zfill(20)) if entity_id.isdigit() else (1, entity_id)


def install(factory: sessionmaker[Session]) -> None:
    """Audit every write made through sessions of ``factory``.

    The mark is kept on the factory itself: ``event.contains`` keys its registry by ``id()``, so
    a new factory at a garbage-collected one's address could look installed when it is not.
    """
    if getattr(factory, "_truthset_audited", False):
        return
    event.listen(factory, "before_flush", _before_flush)
    event.listen(factory, "after_flush", _after_flush)
    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_transaction_end", _end_of_transaction)
    setattr(factory, "_truthset_audited", True)  # noqa: B010
    # Sessions it makes say so, so that events are collected for the commit hook (_collect).
    factory.configure(info={**factory.kw.get("info", {}), _AUDITED: True})


def iter_events(session: Session, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Yield every event as a plain dict, in sequence order, reading in batches."""
    last = 0
    table = AuditEvent.__table__
    while True:
        rows = session.execute(
            select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
        ).mappings().all()
        if not rows:
            return
        for row in rows:
            yield dict(row)
        last = int(rows[-1]["seq"])


def stored_head(session: Session) -> ChainHead:
    """The head row the database keeps (sequence number and hash of the latest event)."""
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    return ChainHead(int(row.seq), row.hash)


def verify(session: Session, *, anchor: ChainHead | None = None) -> VerifyResult:
    """Walk the stored chain and report the first broken event (see :func:`verify_chain`)."""
    return verify_chain(iter_events(session), anchor=anchor, stored_head=stored_head(session))
