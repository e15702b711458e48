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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from truthset import audit
from truthset.auth.memberships import roles_in
from truthset.domain.errors import InputError, PermissionDeniedError
from truthset.domain.roles import Role
from truthset.domain.schema import SchemaKind
from truthset.prelabel.output import payload_boxes, payload_masks
from truthset.quality.boxes import matched_f1
from truthset.quality.masks import dice, iou
from truthset.store.models import Annotation, ClassAutomation, DraftOutcome, Project, User
from truthset.workspace.projects import rules

OUTCOMES = ("accepted", "edited", "rejected")


@dataclass(frozen=True)
class AcceptancePolicy:
    """When drafting pauses for a class."""

    min_acceptance: float = 0.7
    window: int = 50
    min_decisions: int = 10
    edit_tolerance: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.min_acceptance <= 1:
            raise InputError("min_acceptance must lie in [0, 1]", field="min_acceptance")
        if self.window < 1 or self.min_decisions < 1 or self.min_decisions > self.window:
            raise InputError("need 1 <= min_decisions <= window", field="window")
        if not 0 <= self.edit_tolerance <= 1:
            raise InputError("edit_tolerance must lie in [0, 1]", field="edit_tolerance")


def acceptance_policy(project: Project) -> AcceptancePolicy:
    """The project's acceptance policy (defaults where unset)."""
    raw = (project.settings or {}).get("prelabel", {})
    known = {k: raw[k] for k in asdict(AcceptancePolicy()) if k in raw}
    return AcceptancePolicy(**known)


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
            ) -> list[tuple[str, str, float | None, float | None]]:
    """Outcome per drafted class: ``(class, outcome, dice, iou)``."""
    if kind == SchemaKind.CLASSIFICATION:
        label = str(draft.get("label"))
        same = final.get("label") == label
        return [(label, "accepted" if same else "rejected", None, None)]
    out: list[tuple[str, str, float | None, float | None]] = []
    if kind == SchemaKind.MASK:
        d_masks = payload_masks(draft)
        f_masks = payload_masks(final)
        for cls, dm in sorted(d_masks.items()):
            fm = f_masks.get(cls)
            if fm is None or not fm.any():
                out.append((cls, "rejected", 0.0, 0.0))
            elif fm.shape == dm.shape and np.array_equal(fm, dm):
                out.append((cls, "accepted", 1.0, 1.0))
            elif fm.shape != dm.shape:
                out.append((cls, "edited", 0.0, 0.0))
            else:
                out.append((cls, "edited", dice(dm, fm), iou(dm, fm)))
        return out
    d_boxes = payload_boxes(draft)
    f_boxes = payload_boxes(final)
    for cls, db in sorted(d_boxes.items()):
        fb = f_boxes.get(cls, [])
        if not fb:
            out.append((cls, "rejected", 0.0, 0.0))
        elif sorted(map(tuple, fb)) == sorted(map(tuple, db)):
            out.append((cls, "accepted", 1.0, 1.0))
        else:
            match = matched_f1(np.asarray(db), np.asarray(fb), 0.5)
            mean_iou = float(np.mean([m[2] for m in match.matches])) if match.matches else 0.0
            out.append((cls, "edited", match.f1, mean_iou))
    return out


def refresh_outcomes(session: Session, project: Project) -> list[DraftOutcome]:
    """Record the outcome of every draft a reader has answered since the last refresh.

    A reader's answer is their latest (not superseded) human revision on an item that had a
    model draft made before it; it is compared with the latest such draft.
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
        for cls, outcome, d_score, j_score in compare(kind, draft.payload, read.payload):
            new.append(DraftOutcome(project_id=project.id, item_id=read.item_id,
                                    draft_annotation_id=draft.id, final_annotation_id=read.id,
                                    class_name=cls, outcome=outcome, dice=d_score,
                                    iou=j_score))
    session.add_all(new)
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


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def acceptance_report(session: Session, project: Project) -> list[ClassAcceptance]:
    """Per class: outcome counts, mean Dice/IoU of edits, and acceptance in the window."""
    policy = acceptance_policy(project)
    status = _status_rows(session, project)
    child = aliased(Annotation)
    rows = session.execute(
        select(DraftOutcome.class_name, DraftOutcome.outcome, DraftOutcome.dice,
               DraftOutcome.iou, DraftOutcome.created_at, DraftOutcome.id)
        .outerjoin(child, child.parent_id == DraftOutcome.final_annotation_id)
        .where(DraftOutcome.project_id == project.id, child.id.is_(None))
        .order_by(DraftOutcome.id)).all()
    frame = pd.DataFrame(rows, columns=["cls", "outcome", "dice", "iou", "at", "id"])
    classes = sorted(set(frame["cls"]) | set(status))
    out = []
    for cls in classes:
        sub = frame[frame["cls"] == cls]
        row = status.get(cls)
        since = sub
        if row is not None and row.status == "active" and row.decided_by:
            since = sub[[_utc(a) > _utc(row.updated_at) for a in sub["at"]]]
        window = since.tail(policy.window)
        ok = (window["outcome"] == "accepted") | (
            (window["outcome"] == "edited") & (window["dice"].fillna(0) >= policy.edit_tolerance))
        edits = sub[sub["outcome"] == "edited"]
        out.append(ClassAcceptance(
            class_name=cls, status=row.status if row else "active", n=len(sub),
            accepted=int((sub["outcome"] == "accepted").sum()), edited=len(edits),
            rejected=int((sub["outcome"] == "rejected").sum()),
            mean_dice=float(edits["dice"].mean()) if len(edits) and edits["dice"].notna().any()
            else None,
            mean_iou=float(edits["iou"].mean()) if len(edits) and edits["iou"].notna().any()
            else None,
            window_n=len(window),
            window_acceptance=float(ok.mean()) if len(window) else None,
            reason=row.reason if row else ""))
    return out


def evaluate_automation(session: Session, project: Project) -> list[ClassAcceptance]:
    """Pause drafting of every class whose windowed acceptance fell below the threshold.

    Returns the classes paused by this call. A paused class stays paused here whatever its
    acceptance does: only :func:`resume_class` resumes it.
    """
    policy = acceptance_policy(project)
    status = _status_rows(session, project)
    paused = []
    for acc in acceptance_report(session, project):
        if acc.status == "paused" or acc.window_acceptance is None:
            continue
        if acc.window_n < policy.min_decisions or acc.window_acceptance >= policy.min_acceptance:
            continue
        reason = (f"acceptance {acc.window_acceptance:.0%} over the last {acc.window_n} drafts "
                  f"is below the project threshold {policy.min_acceptance:.0%}")
        row = status.get(acc.class_name)
        if row is None:
            row = ClassAutomation(project_id=project.id, class_name=acc.class_name)
            session.add(row)
        row.status, row.reason = "paused", reason
        row.acceptance, row.window = acc.window_acceptance, acc.window_n
        row.decided_by, row.updated_at = "system", datetime.now(UTC)
        session.flush()
        audit.record(session, action="prelabel.pause", entity_type="class_automation",
                     entity_id=row.id, project_id=project.id,
                     after={"class": acc.class_name, "acceptance": acc.window_acceptance,
                            "window": acc.window_n, "threshold": policy.min_acceptance})
        paused.append(acc)
    return paused


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
    row = _status_rows(session, project).get(class_name)
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
    rows = _status_rows(session, project)
    row = rows.get(class_name)
    if row is None:
        row = ClassAutomation(project_id=project.id, class_name=class_name)
        session.add(row)
    row.status, row.reason = "paused", note.strip() or "paused by a manager"
    row.decided_by, row.updated_at = manager.username, datetime.now(UTC)
    session.flush()
    audit.record(session, action="prelabel.pause", entity_type="class_automation",
                 entity_id=row.id, project_id=project.id,
                 after={"class": class_name, "by": manager.username, "note": row.reason})
    return row


def as_dicts(rows: Iterable[ClassAcceptance]) -> list[dict[str, Any]]:
    """Plain dicts (API, CLI JSON)."""
    return [asdict(r) for r in rows]
