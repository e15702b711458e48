"""Acceptance tracking: what readers do with model drafts, per class, and pausing drafting.

For every human read of an item that had a model draft before it, each class of the draft gets
an *outcome*:

- ``accepted`` — the reader's label for that class is the draft's, unchanged;
- ``edited`` — the reader kept the class but changed its geometry; Dice and IoU between draft
  and final are stored (masks: :func:`truthset.quality.masks.dice`/``iou`` of the class's union
  mask; boxes: matched F1 at IoU 0.5 as Dice and the mean IoU of the matched pairs, from
  :func:`truthset.quality.boxes.matched_f1`);
- ``rejected`` — the reader's label does not contain the class (classification: a different
  label).

Per class, acceptance over the last ``window`` outcomes is the share of ``accepted`` plus
``edited`` with Dice at or above ``edit_tolerance``. When it falls below the project's
``min_acceptance`` (with at least ``min_decisions`` outcomes in the window), drafting of that
class pauses — the class status row says so (the dashboard reads it) and an audit event
``prelabel.pause`` records it — and only a manager's decision (:func:`resume_class`) resumes it.
Outcomes from before a resume do not count against the class again.

The policy lives in ``project.settings["prelabel"]`` (:func:`set_acceptance_policy`).

Outcomes are recorded when a read is stored, in its transaction
(:func:`truthset.workflow.acceptance.record_read`, called by the queue and by
``record_annotation``; the comparison itself is :func:`truthset.quality.drafts.compare_draft`).
:func:`track` is the batch catch-up (reads stored before this existed, imports that bypass the
services): it records only what is missing, so running it after submit-time tracking counts
nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from truthset import audit
from truthset.auth.memberships import roles_in
from truthset.domain.errors import InputError, PermissionDeniedError
from truthset.domain.roles import Role
from truthset.domain.schema import SchemaKind
from truthset.quality.drafts import OUTCOMES as OUTCOMES
from truthset.quality.drafts import ClassOutcome, compare_draft
from truthset.store.models import Annotation, ClassAutomation, DraftOutcome, Project, User
from truthset.workflow import acceptance as wa
from truthset.workflow.acceptance import AcceptancePolicy as AcceptancePolicy
from truthset.workflow.acceptance import acceptance_policy as acceptance_policy
from truthset.workspace.projects import rules


def set_acceptance_policy(session: Session, project: Project, **changes: Any) -> AcceptancePolicy:
    """Change the project's acceptance policy (validated; the change is audited)."""
    unknown = set(changes) - set(asdict(AcceptancePolicy()))
    if unknown:
        raise InputError(f"unknown acceptance settings: {', '.join(sorted(unknown))}",
                         field=sorted(unknown)[0])
    merged = AcceptancePolicy(**{**asdict(acceptance_policy(project)), **changes})
    settings = dict(project.settings or {})
    settings["prelabel"] = asdict(merged)
    project.settings = settings
    session.flush()
    return merged


# -- comparing a draft with a read -------------------------------------------------------------
def compare(kind: SchemaKind, draft: Mapping[str, Any], final: Mapping[str, Any]
            ) -> list[ClassOutcome]:
    """Outcome per drafted class: ``(class, outcome, dice, iou)``
    (:func:`truthset.quality.drafts.compare_draft`)."""
    return compare_draft(kind, draft, final)


def refresh_outcomes(session: Session, project: Project) -> list[DraftOutcome]:
    """Record the outcome of every draft a reader has answered and that has no outcome yet.

    A reader's answer is their latest (not superseded) human revision on an item that had a
    model draft made before it; it is compared with the latest such draft. Reads stored through
    the services have theirs already (:func:`truthset.workflow.acceptance.record_read`): this
    is the catch-up for the others, and adds nothing for a read recorded before.
    """
    kind = rules(session, project).schema.kind
    child = aliased(Annotation)
    reads = session.scalars(
        select(Annotation).outerjoin(child, child.parent_id == Annotation.id)
        .where(Annotation.project_id == project.id, Annotation.source == "human",
               child.id.is_(None)).order_by(Annotation.id)).all()
    drafts = session.scalars(select(Annotation).where(
        Annotation.project_id == project.id, Annotation.source == "model")
        .order_by(Annotation.id)).all()
    by_item: dict[int, list[Annotation]] = {}
    for d in drafts:
        by_item.setdefault(d.item_id, []).append(d)
    seen = {(int(d), int(f)) for d, f in session.execute(
        select(DraftOutcome.draft_annotation_id, DraftOutcome.final_annotation_id)
        .where(DraftOutcome.project_id == project.id))}
    new: list[DraftOutcome] = []
    for read in reads:
        before = [d for d in by_item.get(read.item_id, []) if d.id < read.id]
        if not before:
            continue
        draft = before[-1]
        if (draft.id, read.id) in seen:
            continue
        new.extend(wa.new_outcomes(session, project, draft, read, kind=kind))
    session.flush()
    return new


# -- pausing and resuming --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassAcceptance:
    """Acceptance of one class's drafts."""

    class_name: str
    status: str
    n: int
    accepted: int
    edited: int
    rejected: int
    mean_dice: float | None
    mean_iou: float | None
    window_n: int
    window_acceptance: float | None
    reason: str


def _status_rows(session: Session, project: Project) -> dict[str, ClassAutomation]:
    return {r.class_name: r for r in session.scalars(select(ClassAutomation).where(
        ClassAutomation.project_id == project.id))}


def paused_classes(session: Session, project: Project) -> set[str]:
    """Classes whose drafting is paused in ``project``."""
    return {c for c, r in _status_rows(session, project).items() if r.status == "paused"}


def acceptance_report(session: Session, project: Project) -> list[ClassAcceptance]:
    """Per class: outcome counts, mean Dice/IoU of edits, and acceptance in the window (the
    window that pausing uses: :func:`truthset.workflow.acceptance.class_window`)."""
    policy = acceptance_policy(project)
    status = _status_rows(session, project)
    child = aliased(Annotation)
    rows = session.execute(
        select(DraftOutcome.class_name, DraftOutcome.outcome, DraftOutcome.dice,
               DraftOutcome.iou)
        .outerjoin(child, child.parent_id == DraftOutcome.final_annotation_id)
        .where(DraftOutcome.project_id == project.id, child.id.is_(None))
        .order_by(DraftOutcome.id)).all()
    frame = pd.DataFrame(rows, columns=["cls", "outcome", "dice", "iou"])
    classes = sorted(set(frame["cls"]) | set(status))
    out = []
    for cls in classes:
        sub = frame[frame["cls"] == cls]
        row = status.get(cls)
        window = wa.class_window(session, project, cls, policy=policy, row=row)
        edits = sub[sub["outcome"] == "edited"]
        out.append(ClassAcceptance(
            class_name=cls, status=row.status if row else "active", n=len(sub),
            accepted=int((sub["outcome"] == "accepted").sum()), edited=len(edits),
            rejected=int((sub["outcome"] == "rejected").sum()),
            mean_dice=float(edits["dice"].mean()) if len(edits) and edits["dice"].notna().any()
            else None,
            mean_iou=float(edits["iou"].mean()) if len(edits) and edits["iou"].notna().any()
            else None,
            window_n=window.n,
            window_acceptance=window.acceptance,
            reason=row.reason if row else ""))
    return out


def evaluate_automation(session: Session, project: Project) -> list[ClassAcceptance]:
    """Pause drafting of every class whose windowed acceptance fell below the threshold.

    Returns the classes paused by this call. A paused class stays paused here whatever its
    acceptance does: only :func:`resume_class` resumes it. Each class is evaluated under its
    acceptance lock, as at submit time (:func:`truthset.workflow.acceptance.evaluate_class`).
    """
    policy = acceptance_policy(project)
    classes = set(session.scalars(select(DraftOutcome.class_name).where(
        DraftOutcome.project_id == project.id).distinct()))
    wa.lock_classes(session, project, classes)
    paused = {cls for cls in sorted(classes)
              if wa.evaluate_class(session, project, cls, policy=policy) is not None}
    return [r for r in acceptance_report(session, project) if r.class_name in paused]


def track(session: Session, project: Project) -> tuple[int, list[ClassAcceptance]]:
    """Refresh outcomes and pause where needed; ``(new outcomes, classes paused now)``."""
    new = refresh_outcomes(session, project)
    return len(new), evaluate_automation(session, project)


def _is_manager(session: Session, user: User, project: Project) -> bool:
    if user.role in (Role.ADMIN.value, Role.MANAGER.value) and user.active:
        return True
    return bool(roles_in(session, user.id, project.id) & {Role.MANAGER, Role.ADMIN})


def resume_class(session: Session, project: Project, class_name: str, *, manager: User,
                 note: str) -> ClassAutomation:
    """A manager's decision to resume drafting of a paused class (audited with the note).

    Raises
    ------
    PermissionDeniedError
        ``manager`` is not a manager or administrator of the project.
    InputError
        No note, or the class is not paused.
    """
    if not _is_manager(session, manager, project):
        raise PermissionDeniedError("only a project manager may resume drafting")
    if not note.strip():
        raise InputError("say why drafting may resume (a note is required)", field="note")
    wa.lock_classes(session, project, [class_name])
    row = wa.status_row(session, project, class_name, for_update=True)
    if row is None or row.status != "paused":
        raise InputError(f"drafting of class {class_name!r} is not paused", field="class")
    row.status, row.reason = "active", note.strip()
    row.decided_by, row.updated_at = manager.username, datetime.now(UTC)
    session.flush()
    audit.record(session, action="prelabel.resume", entity_type="class_automation",
                 entity_id=row.id, project_id=project.id,
                 after={"class": class_name, "by": manager.username, "note": note.strip()})
    return row


def pause_class(session: Session, project: Project, class_name: str, *, manager: User,
                note: str) -> ClassAutomation:
    """A manager pauses drafting of a class by hand (audited)."""
    if not _is_manager(session, manager, project):
        raise PermissionDeniedError("only a project manager may pause drafting")
    rules(session, project).schema.class_named(class_name)
    wa.lock_classes(session, project, [class_name])
    reason = note.strip() or "paused by a manager"
    return wa.pause(session, project, class_name, reason=reason, by=manager.username,
                    event={"by": manager.username, "note": reason})


def as_dicts(rows: Iterable[ClassAcceptance]) -> list[dict[str, Any]]:
    """Plain dicts (API, CLI JSON)."""
    return [asdict(r) for r in rows]
