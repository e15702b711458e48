"""Finding audit events: filters by project, actor, action, entity and time.

:class:`AuditFilter` holds the filters; :meth:`AuditFilter.parse` builds one from the strings a
caller typed (checking each and naming the field that is wrong); :func:`select_events` turns it
into a SELECT of :class:`~truthset.store.models.AuditEvent` that callers order and page.

Times are compared as the instants they are: ``at`` is stored as fixed-width UTC ISO 8601 text
(``2024-05-01T09:30:00.000000+00:00``), so a bound converted to the same form compares in
time order as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from truthset.domain.errors import InputError
from truthset.store.models import AuditEvent

#: The longest actor, action, entity type and entity id the audit table stores.
_WIDTHS = {"actor": 100, "action": 64, "entity_type": 64, "entity_id": 100}


def parse_instant(value: str, field: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC ``datetime``.

    ``2024-05-01T09:30:00Z`` and ``2024-05-01T11:30:00+02:00`` name the same instant; a time
    without an offset is taken as UTC, and a date alone as its midnight UTC.

    Parameters
    ----------
    value
        The text, e.g. ``2024-05-01``, ``2024-05-01T09:30``, ``2024-05-01T09:30:00.5Z``.
    field
        The name to report when ``value`` is not a date or date-time.

    Raises
    ------
    InputError
        ``value`` is not an ISO 8601 date or date-time (``field``).
    """
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"{field}: {value!r} is not an ISO 8601 date or date-time "
            "(e.g. 2024-05-01 or 2024-05-01T09:30:00Z)", field=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def stored_form(moment: datetime) -> str:
    """``moment`` as the audit table stores times (UTC, microseconds, ``+00:00``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events to find; ``None`` leaves a field unfiltered.

    ``actor``, ``action``, ``entity_type`` and ``entity_id`` match exactly; ``since`` is
    inclusive and ``until`` exclusive (so consecutive ranges never count an event twice).
    """

    project_id: int | None = None
    actor: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name, width in _WIDTHS.items():
            value = getattr(self, name)
            if value is not None and (not value or len(value) > width):
                raise InputError(f"{name}: give 1 to {width} characters", field=name)
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InputError(
                f"until ({stored_form(self.until)}) is before since ({stored_form(self.since)})",
                field="until")

    @classmethod
    def parse(
        cls,
        *,
        project_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> AuditFilter:
        """A filter from typed text: blank values are left out, times are read with
        :func:`parse_instant`.

        Raises
        ------
        InputError
            A time that is not ISO 8601 (``since``/``until``), ``since`` after ``until``
            (``until``), or a value longer than the audit table stores (its field).
        """

        def clean(value: str | None) -> str | None:
            return (value.strip() or None) if value is not None else None

        since_text, until_text = clean(since), clean(until)
        return cls(
            project_id=project_id, actor=clean(actor), action=clean(action),
            entity_type=clean(entity_type), entity_id=clean(entity_id),
            since=parse_instant(since_text, "since") if since_text else None,
            until=parse_instant(until_text, "until") if until_text else None,
        )


def select_events(where: AuditFilter) -> Select[Any]:
    """A SELECT of the audit events ``where`` matches, unordered (the caller orders and pages
    it, e.g. by ``AuditEvent.seq``)."""
    stmt = select(AuditEvent)
    if where.project_id is not None:
        stmt = stmt.where(AuditEvent.project_id == where.project_id)
    if where.actor is not None:
        stmt = stmt.where(AuditEvent.actor == where.actor)
    if where.action is not None:
        stmt = stmt.where(AuditEvent.action == where.action)
    if where.entity_type is not None:
        stmt = stmt.where(AuditEvent.entity_type == where.entity_type)
    if where.entity_id is not None:
        stmt = stmt.where(AuditEvent.entity_id == where.entity_id)
    if where.since is not None:
        stmt = stmt.where(AuditEvent.at >= stored_form(where.since))
    if where.until is not None:
        stmt = stmt.where(AuditEvent.at < stored_form(where.until))
    return stmt
