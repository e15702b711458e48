"""Escalations: items sent up the tiers, their deadlines, and the overdue report.

An escalation is opened by :func:`truthset.workflow.queue.advance` whenever an item needs
adjudication (a consensus under target, a reviewer's escalation, adaptive reads exhausted); it
names the tier it came from and the tier it goes to, and is due ``escalation.deadline_hours``
later. It is resolved when the item becomes final. Overdue escalations go to the head of the
adjudicators' queue (:func:`truthset.workflow.queue.next_task`), are listed here and reported
(:func:`report_overdue` writes the report into the audit log); :func:`raise_overdue` sends an
overdue escalation one tier further up (the old one is marked ``raised``, a new one is due a
full deadline later, and only readers of the new tier are offered the item).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.store.models import Escalation, Item, Project, Task, User, utcnow
from truthset.workflow.policies import current_policy
from truthset.workflow.queue import LEASED, aware

STATUSES = ("open", "resolved", "raised")
#: The most senior tier.
TOP_TIER = 3
COLUMNS = ["id", "item_id", "item", "from_tier", "to_tier", "reason", "status", "created_at",
           "due_at", "overdue", "hours_overdue", "assignee"]


def list_escalations(session: Session, project: Project, *, status: str | None = "open",
                     overdue_only: bool = False, now: datetime | None = None) -> pd.DataFrame:
    """The project's escalations (``status`` ``open``/``resolved``/``None`` for all), oldest
    deadline first, with whether each is overdue, by how many hours, and who holds it.

    Raises
    ------
    InputError
        Unknown status.
    """
    if status is not None and status not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}", field="status")
    now = now or utcnow()
    stmt = (select(Escalation, Item.external_id, Task.status, Task.lease_expires_at,
                   User.username)
            .join(Item, Item.id == Escalation.item_id).join(Task, Task.id == Escalation.task_id)
            .outerjoin(User, User.id == Task.assignee_id)
            .where(Escalation.project_id == project.id).order_by(Escalation.due_at,
                                                                  Escalation.id))
    if status is not None:
        stmt = stmt.where(Escalation.status == status)
    rows = []
    for esc, external_id, task_status, lease, holder in session.execute(stmt).all():
        due = aware(esc.due_at)
        assert due is not None
        is_open = esc.status == "open"
        late = is_open and due < now
        held = task_status == LEASED and (aware(lease) or now) >= now
        rows.append({
            "id": esc.id, "item_id": esc.item_id, "item": external_id,
            "from_tier": esc.from_tier, "to_tier": esc.to_tier, "reason": esc.reason,
            "status": esc.status, "created_at": aware(esc.created_at), "due_at": due,
            "overdue": late,
            "hours_overdue": round((now - due).total_seconds() / 3600, 2) if late else 0.0,
            "assignee": holder if held else None,
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame[frame["overdue"].astype(bool)].reset_index(drop=True) if overdue_only else frame


def report_overdue(session: Session, project: Project, *,
                   now: datetime | None = None) -> pd.DataFrame:
    """List the open escalations past their deadline and write the report to the audit log
    (one ``overdue_report`` event naming them). Returns the listing."""
    overdue = list_escalations(session, project, status="open", overdue_only=True, now=now)
    audit.record(session, action="overdue_report", entity_type="escalations",
                 project_id=project.id,
                 after={"n": len(overdue), "escalations": [int(i) for i in overdue["id"]],
                        "max_hours_overdue": float(overdue["hours_overdue"].max())
                        if len(overdue) else 0.0})
    return overdue


def raise_overdue(session: Session, project: Project, *,
                  now: datetime | None = None) -> list[Escalation]:
    """Send every open, overdue escalation below the top tier one tier up. Returns the new
    escalations."""
    now = now or utcnow()
    deadline = timedelta(hours=current_policy(session, project).policy.escalation.deadline_hours)
    raised: list[Escalation] = []
    for esc in session.scalars(select(Escalation).where(
            Escalation.project_id == project.id, Escalation.status == "open",
            Escalation.due_at < now, Escalation.to_tier < TOP_TIER)
            .order_by(Escalation.id).with_for_update()).all():
        esc.status, esc.resolved_at = "raised", now
        row = Escalation(project_id=project.id, item_id=esc.item_id, task_id=esc.task_id,
                         from_tier=esc.to_tier, to_tier=esc.to_tier + 1,
                         reason=f"overdue at tier {esc.to_tier}: {esc.reason}",
                         due_at=now + deadline, status="open")
        session.add(row)
        raised.append(row)
    session.flush()
    return raised
