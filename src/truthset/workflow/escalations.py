"""Escalations: items sent up the tiers, their deadlines, and the overdue report.

An escalation is opened by :func:`truthset.workflow.queue.advance` whenever an item needs
adjudication (a consensus under target, a reviewer's escalation, adaptive reads exhausted); it
names the tier it came from and the tier it goes to, and is due ``escalation.deadline_hours``
later. It is resolved when the item becomes final. Overdue escalations go to the head of the
adjudicators' queue (:func:`truthset.workflow.queue.next_task`), are listed here and reported
(:func:`report_overdue` writes the report into the audit log); :func:`raise_overdue` sends an
overdue escalation one tier further up (the old one is marked ``raised``, a new one is due a
full deadline later, and only readers of the new tier are offered the item).

Raising runs without a person too: the periodic task :data:`OVERDUE_CHECK` (registered by
:mod:`truthset.jobs.handlers`, run by :mod:`truthset.jobs.schedule` in the server process or by
procrastinate's workers) raises every project's overdue escalations each
``escalation_check_minutes``; :func:`last_overdue_check` says when it last ran, and the overdue
report carries it.

A reader who finds an item unclear flags it (:func:`flag`): the read is not recorded, their
slot is closed as ``flagged`` and the item goes to adjudication with their reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.policy import Stage
from truthset.store.models import (
    Escalation,
    GoldItem,
    Item,
    Project,
    Schedule,
    Task,
    User,
    utcnow,
)
from truthset.workflow import queue
from truthset.workflow.policies import current_policy
from truthset.workflow.queue import LEASED, aware

#: Longest reason a flag may carry.
MAX_REASON = 10_000

STATUSES = ("open", "resolved", "raised")
#: The most senior tier.
TOP_TIER = 3
COLUMNS = ["id", "item_id", "item", "from_tier", "to_tier", "reason", "status", "created_at",
           "due_at", "overdue", "hours_overdue", "assignee"]
#: Name of the periodic task that raises overdue escalations (a row of ``schedules``).
OVERDUE_CHECK = "escalations.raise_overdue"


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
    check = last_overdue_check(session, project)
    audit.record(session, action="overdue_report", entity_type="escalations",
                 project_id=project.id,
                 after={"n": len(overdue), "escalations": [int(i) for i in overdue["id"]],
                        "max_hours_overdue": float(overdue["hours_overdue"].max())
                        if len(overdue) else 0.0,
                        "last_check_at": check["last_finished_at"] if check else None})
    return overdue


def projects_with_overdue(session: Session, *, now: datetime | None = None) -> list[int]:
    """Ids of the projects with an open escalation past its deadline below the top tier
    (what :func:`raise_overdue` would raise)."""
    now = now or utcnow()
    return list(session.scalars(select(Escalation.project_id).where(
        Escalation.status == "open", Escalation.due_at < now, Escalation.to_tier < TOP_TIER)
        .distinct().order_by(Escalation.project_id)))


def last_overdue_check(session: Session, project: Project | None = None
                       ) -> dict[str, Any] | None:
    """When the periodic overdue check last ran, its period and outcome (``None``: never).

    With ``project``, ``raised`` is how many of that project's escalations the last run raised.
    Times are ISO 8601 UTC.
    """
    row = session.scalar(select(Schedule).where(Schedule.name == OVERDUE_CHECK))
    if row is None:
        return None
    result = dict(row.last_result or {})

    def iso(moment: datetime | None) -> str | None:
        utc = aware(moment)
        return utc.isoformat() if utc is not None else None

    out: dict[str, Any] = {
        "period_minutes": row.period_s / 60, "last_slot_at": iso(row.last_slot_at),
        "last_started_at": iso(row.last_started_at),
        "last_finished_at": iso(row.last_finished_at), "status": row.last_status,
        "runner": row.runner, "runs": row.runs, "error": row.last_error,
        "raised": int(result.get("raised", 0)),
    }
    if project is not None:
        out["raised"] = int(dict(result.get("projects", {})).get(project.key, 0))
    return out


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


def flag(session: Session, project: Project, user: User, task_id: int, reason: str, *,
         now: datetime | None = None) -> queue.SubmitResult:
    """Flag a task the reader holds as unclear, with the reason (required): no read is
    recorded and the item is escalated to the adjudication tier.

    The reader's slot is closed as ``flagged`` (they are not offered the item again); the
    item's other *open* slots are cancelled and one adjudication slot with an escalation
    (``from_tier``: the tier of the flagged stage; reason: ``unclear at <stage>: <reason>``) is
    made, due ``escalation.deadline_hours`` later. If the item already waits for adjudication
    no second escalation is opened. Slots other readers hold run on; their reads are recorded
    as usual. Known-answer items are never escalated: the flag is only written to the audit
    log (the reader gets the same answer, so known-answer items stay hidden).

    Raises
    ------
    TaskDeniedError
        The task is not leased to the caller.
    TaskConflictError
        Already finished, the lease expired, or an adjudication task (adjudicators decide).
    TaskInputError
        No reason, or one over :data:`MAX_REASON` characters.
    """
    now = now or utcnow()
    what = "flag"
    task, item = queue.held_task(session, project, user, task_id, what, now)
    text = reason.strip()
    if not text or len(text) > MAX_REASON:
        raise queue.refuse(queue.TaskInputError(
            "say why the item is unclear" if not text else
            f"the reason is longer than {MAX_REASON} characters", field="reason"),
            task, user, what)
    if task.stage == Stage.ADJUDICATE.value:
        raise queue.refuse(queue.TaskConflictError(
            "an adjudication cannot be flagged: decide it, or ask a manager to raise it"),
            task, user, what)
    task.status, task.completed_at, task.lease_expires_at = queue.FLAGGED, now, None
    answer = queue.SubmitResult(task.id, None, "pending",
                                "flagged: the item goes to a senior reader")
    event = {"user": user.username, "stage": task.stage, "reason": text}
    if session.scalar(select(GoldItem.id).where(GoldItem.item_id == item.id)) is not None:
        audit.record(session, action="flag", entity_type="tasks", entity_id=task.id,
                     project_id=project.id, after={**event, "escalation": None})
        session.flush()
        return answer
    policy = current_policy(session, project).policy
    pending = [t for t in queue.outstanding(session, item) if t.id != task.id]
    existing = session.scalar(select(Escalation).where(
        Escalation.item_id == item.id, Escalation.status == "open").order_by(Escalation.id))
    if not any(t.stage == Stage.ADJUDICATE.value for t in pending):
        for other in pending:
            if other.status == queue.OPEN:
                other.status, other.completed_at = queue.CANCELLED, now
        slot = Task(project_id=project.id, item_id=item.id, stage=Stage.ADJUDICATE.value,
                    status=queue.OPEN, priority=4.0)
        session.add(slot)
        session.flush()
        existing = Escalation(
            project_id=project.id, item_id=item.id, task_id=slot.id,
            from_tier=policy.stage_tier(task.stage),
            to_tier=policy.stage_tier(Stage.ADJUDICATE),
            reason=f"unclear at {task.stage}: {text}",
            due_at=now + timedelta(hours=policy.escalation.deadline_hours), status="open")
        session.add(existing)
        session.flush()
    audit.record(session, action="flag", entity_type="tasks", entity_id=task.id,
                 project_id=project.id,
                 after={**event, "escalation": existing.id if existing else None})
    session.flush()
    return answer
