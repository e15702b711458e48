"""Draft outcomes recorded as readers' labels are stored, and drafting paused where they are not
accepted.

When a reader's annotation is stored on an item that a model drafted before
(:func:`truthset.workflow.queue.submit` / ``review`` / ``adjudicate``, or
:func:`truthset.workflow.annotations.record_annotation`), :func:`record_read` runs in the same
transaction: it compares the read with the item's latest earlier draft
(:func:`truthset.quality.drafts.compare_draft`), stores one ``draft_outcomes`` row per drafted
class, and re-evaluates the acceptance window of those classes. A class whose acceptance over
the last ``window`` outcomes falls below the project's ``min_acceptance`` (with at least
``min_decisions`` outcomes) is paused: its ``class_automation`` row says so with the reason and an
audit event ``prelabel.pause`` records it. Only a manager resumes it
(:func:`truthset.prelabel.acceptance.resume_class`); outcomes from before a resume no longer
count against the class.

Why here and not in :mod:`truthset.prelabel`: ``prelabel`` records its drafts with
:mod:`truthset.workflow.annotations`, so the queue calling ``prelabel`` would make the two
services import each other. The pure comparison went down to :mod:`truthset.quality.drafts`;
what touches the database when a read is stored lives here, beside the queue that stores it;
``prelabel.acceptance`` keeps the report, the batch catch-up (``track``) and the manager's
pause/resume, and uses the functions below, so there is one definition of the window.

Cost: only the item's drafts are read (one indexed query; nothing more for an item never
drafted), plus one bounded query per drafted class for its window.

Concurrency: the window of a class is evaluated under a per-class lock
(:func:`truthset.store.db.lock_key`, taken in class order), after the transaction's own outcomes
are inserted; on PostgreSQL each statement then sees every outcome committed before the lock was
granted, so two readers submitting at once both count and the pause happens once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from truthset import audit
from truthset.domain.errors import InputError
from truthset.quality.drafts import compare_draft, window_acceptance
from truthset.store.db import lock_key
from truthset.store.models import Annotation, ClassAutomation, DraftOutcome, Project
from truthset.workspace.projects import rules


@dataclass(frozen=True)
class AcceptancePolicy:
    """When drafting pauses for a class (``project.settings["prelabel"]``)."""

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


# -- recording --------------------------------------------------------------------------------
def latest_draft(session: Session, read: Annotation) -> Annotation | None:
    """The item's latest model draft made before ``read`` (``None`` when it had none)."""
    return session.scalar(
        select(Annotation).where(Annotation.project_id == read.project_id,
                                 Annotation.item_id == read.item_id,
                                 Annotation.source == "model", Annotation.id < read.id)
        .order_by(Annotation.id.desc()).limit(1))


def new_outcomes(session: Session, project: Project, draft: Annotation, read: Annotation, *,
                 kind: str | None = None) -> list[DraftOutcome]:
    """Add the outcome of every class of ``draft`` given ``read`` to the session (classes that
    already have an outcome for this draft and read are left alone: recording twice adds
    nothing)."""
    kind = kind or rules(session, project).schema.kind
    decided = session.execute(select(DraftOutcome.class_name, DraftOutcome.final_annotation_id)
                              .where(DraftOutcome.draft_annotation_id == draft.id)).all()
    if any(final == draft.id for _cls, final in decided):
        return []  # a reviewer decided on the draft itself (record_review): that counts
    have = {cls for cls, final in decided if final == read.id}
    rows = [DraftOutcome(project_id=project.id, item_id=read.item_id,
                         draft_annotation_id=draft.id, final_annotation_id=read.id,
                         class_name=o.class_name, outcome=o.outcome, dice=o.dice, iou=o.iou)
            for o in compare_draft(kind, draft.payload, read.payload)
            if o.class_name not in have]
    session.add_all(rows)
    return rows


def lock_classes(session: Session, project: Project, classes: Iterable[str]) -> None:
    """Take the acceptance lock of each class (in class order) for this transaction."""
    for name in sorted(set(classes)):
        lock_key(session, "acceptance", project.id, name)


def record_read(session: Session, project: Project, read: Annotation) -> list[DraftOutcome]:
    """Record what the reader did with the item's draft, and pause classes whose acceptance fell.

    Call it in the transaction that stores ``read`` (after it is flushed). Does nothing for a
    model draft or an item without an earlier draft.

    Returns
    -------
    list of DraftOutcome
        The outcomes recorded now (one per drafted class).
    """
    if read.source != "human" or read.id is None:
        return []
    draft = latest_draft(session, read)
    if draft is None:
        return []
    rows = new_outcomes(session, project, draft, read)
    if not rows:
        return []
    lock_classes(session, project, (r.class_name for r in rows))
    session.flush()
    policy = acceptance_policy(project)
    for name in sorted({r.class_name for r in rows}):
        evaluate_class(session, project, name, policy=policy)
    return rows


def record_review(session: Session, project: Project, subject: Annotation, decision: str
                  ) -> list[DraftOutcome]:
    """Record a reviewer's decision on a model draft itself (policy ``prelabels: draft``).

    ``accept`` records every drafted class as ``accepted`` and ``reject`` as ``rejected``, with
    the draft as its own final annotation; the readers who then read a rejected item do not
    count the same draft again (:func:`new_outcomes`). A correction is a stored read and is
    recorded by :func:`record_read`; a decision on a human read records nothing here.
    """
    if subject.source != "model" or decision not in ("accept", "reject"):
        return []
    kind = rules(session, project).schema.kind
    outcome = "accepted" if decision == "accept" else "rejected"
    score = 1.0 if decision == "accept" else 0.0
    classes = [o.class_name for o in compare_draft(kind, subject.payload, subject.payload)]
    have = set(session.scalars(select(DraftOutcome.class_name).where(
        DraftOutcome.draft_annotation_id == subject.id,
        DraftOutcome.final_annotation_id == subject.id)))
    rows = [DraftOutcome(project_id=project.id, item_id=subject.item_id,
                         draft_annotation_id=subject.id, final_annotation_id=subject.id,
                         class_name=cls, outcome=outcome,
                         dice=None if kind == "classification" else score,
                         iou=None if kind == "classification" else score)
            for cls in classes if cls not in have]
    if not rows:
        return []
    session.add_all(rows)
    lock_classes(session, project, classes)
    session.flush()
    policy = acceptance_policy(project)
    for name in sorted(set(classes)):
        evaluate_class(session, project, name, policy=policy)
    return rows


# -- the window and pausing ---------------------------------------------------------------------
@dataclass(frozen=True)
class ClassWindow:
    """Acceptance of one class over its window."""

    class_name: str
    n: int
    acceptance: float | None


def status_row(session: Session, project: Project, class_name: str, *,
               for_update: bool = False) -> ClassAutomation | None:
    """The ``class_automation`` row of a class (``None``: never paused, drafting is on)."""
    stmt = select(ClassAutomation).where(ClassAutomation.project_id == project.id,
                                         ClassAutomation.class_name == class_name)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def counts_since(row: ClassAutomation | None) -> datetime | None:
    """Outcomes recorded after this moment count (a manager's resume); ``None``: all count."""
    if row is not None and row.status == "active" and row.decided_by:
        return row.updated_at
    return None


def class_window(session: Session, project: Project, class_name: str, *,
                 policy: AcceptancePolicy | None = None,
                 row: ClassAutomation | None = None) -> ClassWindow:
    """The class's last ``window`` outcomes that still count, and their acceptance.

    An outcome counts while its read is the reader's current revision (a corrected read's
    outcomes give way to the correction's) and, after a manager's resume, only when it was
    recorded after the resume.
    """
    policy = policy or acceptance_policy(project)
    row = row if row is not None else status_row(session, project, class_name)
    child = aliased(Annotation)
    stmt = (select(DraftOutcome.outcome, DraftOutcome.dice)
            .outerjoin(child, child.parent_id == DraftOutcome.final_annotation_id)
            .where(DraftOutcome.project_id == project.id, DraftOutcome.class_name == class_name,
                   child.id.is_(None)))
    since = counts_since(row)
    if since is not None:
        stmt = stmt.where(DraftOutcome.created_at > since)
    rows = [(str(o), d) for o, d in session.execute(
        stmt.order_by(DraftOutcome.id.desc()).limit(policy.window))]
    return ClassWindow(class_name, len(rows), window_acceptance(rows, policy.edit_tolerance))


def pause(session: Session, project: Project, class_name: str, *, reason: str, by: str,
          acceptance: float | None = None, window: int = 0,
          event: dict[str, Any] | None = None) -> ClassAutomation:
    """Pause drafting of a class (the row is made when missing) and audit ``prelabel.pause``.

    The caller holds the class's lock (:func:`lock_classes`).
    """
    row = status_row(session, project, class_name, for_update=True)
    if row is None:
        row = ClassAutomation(project_id=project.id, class_name=class_name)
        session.add(row)
    row.status, row.reason = "paused", reason
    if acceptance is not None:
        row.acceptance, row.window = acceptance, window
    row.decided_by, row.updated_at = by, datetime.now(UTC)
    session.flush()
    audit.record(session, action="prelabel.pause", entity_type="class_automation",
                 entity_id=row.id, project_id=project.id,
                 after={"class": class_name, **(event or {})})
    return row


def evaluate_class(session: Session, project: Project, class_name: str, *,
                   policy: AcceptancePolicy | None = None) -> ClassWindow | None:
    """Pause the class when its windowed acceptance is below the threshold.

    The caller holds the class's lock. A paused class stays paused whatever its acceptance
    does. Returns the window when the class was paused by this call, else ``None``.
    """
    policy = policy or acceptance_policy(project)
    row = status_row(session, project, class_name, for_update=True)
    if row is not None and row.status == "paused":
        return None
    win = class_window(session, project, class_name, policy=policy, row=row)
    if (win.acceptance is None or win.n < policy.min_decisions
            or win.acceptance >= policy.min_acceptance):
        return None
    reason = (f"acceptance {win.acceptance:.0%} over the last {win.n} drafts "
              f"is below the project threshold {policy.min_acceptance:.0%}")
    pause(session, project, class_name, reason=reason, by="system", acceptance=win.acceptance,
          window=win.n, event={"acceptance": win.acceptance, "window": win.n,
                               "threshold": policy.min_acceptance})
    return win
