"""Readers against known answers: calibration, gold scoring, suspension and feedback.

- **Calibration**: a reader's first tasks are the project's calibration items; once all are
  read, the share correct is compared with the policy's ``calibration.threshold`` and the
  result (``passed``/``failed``, with the reason) is stored as the reader's project status.
- **Gold**: gold items are mixed into the annotate queue at ``gold.rate``, looking like any
  other task. After each gold read, the reader's per-class sensitivity on gold is checked;
  a class where it falls under ``gold.threshold`` (after at least ``gold.min_reads`` gold
  items of that class) suspends the reader *for that class*, with a message saying why.
- **Statistics and feedback**: accuracy, per-class sensitivity and specificity, the confusion
  matrix and its trend, from every known-answer read; a reader sees only their own, and
  never which items were gold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.domain.policy import Policy
from truthset.store.models import Annotation, GoldItem, Project, ReaderStatus, User, utcnow
from truthset.workspace.projects import rules

#: ``ReaderStatus.class_name`` of the project-wide calibration status.
CALIBRATION = ""
PASSED, FAILED, SUSPENDED, ACTIVE = "passed", "failed", "suspended", "active"


def status_of(session: Session, project: Project, user: User,
              class_name: str = CALIBRATION) -> ReaderStatus | None:
    """The reader's stored status for ``class_name`` (calibration when empty)."""
    return session.scalar(select(ReaderStatus).where(
        ReaderStatus.project_id == project.id, ReaderStatus.user_id == user.id,
        ReaderStatus.class_name == class_name))


def set_status(session: Session, project: Project, user: User, class_name: str, status: str,
               message: str) -> ReaderStatus:
    """Store (insert or update) a reader status with the message the reader is shown."""
    row = status_of(session, project, user, class_name)
    if row is None:
        row = ReaderStatus(project_id=project.id, user_id=user.id, class_name=class_name,
                           status=status, message=message, updated_at=utcnow())
        session.add(row)
    elif row.status != status or row.message != message:
        row.status, row.message, row.updated_at = status, message, utcnow()
    session.flush()
    return row


def suspended_classes(session: Session, project: Project, user: User) -> dict[str, str]:
    """Class -> message of every class the reader is suspended for."""
    return {r.class_name: r.message for r in session.scalars(select(ReaderStatus).where(
        ReaderStatus.project_id == project.id, ReaderStatus.user_id == user.id,
        ReaderStatus.class_name != CALIBRATION, ReaderStatus.status == SUSPENDED))}


def known_answer_reads(session: Session, project: Project, user: User | None = None,
                       purpose: str | None = None) -> pd.DataFrame:
    """Every read of a known-answer item: columns ``annotation_id, item_id, reader, label,
    truth, purpose, created_at`` in the order made (one reader's when ``user`` is given)."""
    stmt = (select(Annotation.id, Annotation.item_id, User.username, Annotation.payload,
                   GoldItem.label, GoldItem.purpose, Annotation.created_at)
            .join(GoldItem, GoldItem.item_id == Annotation.item_id)
            .join(User, User.id == Annotation.author_id)
            .where(Annotation.project_id == project.id, Annotation.source == "human",
                   Annotation.parent_id.is_(None))
            .order_by(Annotation.id))
    if user is not None:
        stmt = stmt.where(Annotation.author_id == user.id)
    if purpose is not None:
        stmt = stmt.where(GoldItem.purpose == purpose)
    rows = [(a, i, u, p.get("label"), g.get("label"), pur, c)
            for a, i, u, p, g, pur, c in session.execute(stmt).all()]
    return pd.DataFrame(rows, columns=["annotation_id", "item_id", "reader", "label", "truth",
                                       "purpose", "created_at"])


def score_calibration(session: Session, project: Project, user: User,
                      policy: Policy) -> ReaderStatus:
    """Score a reader's finished calibration batch and store ``passed`` or ``failed``.

    Raises
    ------
    InputError
        The policy has no calibration, or the reader has not read every calibration item.
    """
    if policy.calibration is None:
        raise InputError("the policy has no calibration", field="calibration")
    batch = session.scalars(select(GoldItem.item_id).where(
        GoldItem.project_id == project.id, GoldItem.purpose == "calibration")).all()
    reads = known_answer_reads(session, project, user, purpose="calibration")
    missing = set(batch) - set(reads["item_id"])
    if missing or not batch:
        raise InputError(f"{len(missing)} calibration items are still unread",
                         field="calibration")
    share = float((reads["label"] == reads["truth"]).mean())
    need = policy.calibration.threshold
    if share >= need:
        return set_status(session, project, user, CALIBRATION, PASSED,
                          f"calibration passed: {share:.0%} correct of {len(reads)} "
                          f"(threshold {need:.0%})")
    return set_status(session, project, user, CALIBRATION, FAILED,
                      f"calibration not passed: {share:.0%} correct of {len(reads)}, under the "
                      f"threshold of {need:.0%}; read the guideline again and ask a manager "
                      "to reopen your calibration")


def check_gold(session: Session, project: Project, user: User, policy: Policy) -> list[str]:
    """After a gold read: suspend the reader for every class whose gold sensitivity fell under
    the threshold (with at least ``min_reads`` gold items of the class). Returns the classes
    newly suspended."""
    if policy.gold is None:
        return []
    reads = known_answer_reads(session, project, user, purpose="gold")
    already = suspended_classes(session, project, user)
    newly: list[str] = []
    for cls, group in reads.groupby("truth"):
        if len(group) < policy.gold.min_reads or str(cls) in already:
            continue
        sensitivity = float((group["label"] == cls).mean())
        if sensitivity < policy.gold.threshold:
            set_status(session, project, user, str(cls), SUSPENDED,
                       f"suspended for {cls}: you recognised {sensitivity:.0%} of the "
                       f"{len(group)} {cls} reference cases (threshold "
                       f"{policy.gold.threshold:.0%}); review the guideline's {cls} examples")
            newly.append(str(cls))
    return newly


def reinstate(session: Session, project: Project, user: User, class_name: str,
              note: str) -> ReaderStatus:
    """Lift a suspension (``class_name``) or reopen/override calibration (empty class name).

    Raises
    ------
    InputError
        ``note`` is empty (a manager must say why).
    """
    if not note.strip():
        raise InputError("say why the reader is reinstated", field="note")
    status = PASSED if class_name == CALIBRATION else ACTIVE
    return set_status(session, project, user, class_name, status, f"reinstated: {note}")


@dataclass
class ReaderStats:
    """A reader's record against known answers (and against final consensus)."""

    reader: str
    n_gold: int
    accuracy: float | None
    per_class: pd.DataFrame  # class -> n, sensitivity, specificity
    confusion: pd.DataFrame  # truth (rows) x label (columns) counts
    trend: pd.DataFrame  # block, n, accuracy (blocks of consecutive gold reads)
    calibration: str | None = None
    suspensions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (no item identifiers: gold stays unidentifiable)."""
        return {
            "reader": self.reader, "n_gold": self.n_gold, "accuracy": self.accuracy,
            "per_class": [
                {"class": str(c), "n": int(r["n"]), "sensitivity": _num(r["sensitivity"]),
                 "specificity": _num(r["specificity"])}
                for c, r in self.per_class.iterrows()],
            "confusion": {"classes": [str(c) for c in self.confusion.columns],
                          "counts": self.confusion.to_numpy().astype(int).tolist()},
            "trend": [{"block": int(r["block"]), "n": int(r["n"]),
                       "accuracy": _num(r["accuracy"])} for _, r in self.trend.iterrows()],
            "calibration": self.calibration, "suspensions": self.suspensions,
        }


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else (
        float(value))


def reader_stats(session: Session, project: Project, user: User, *,
                 block: int = 10) -> ReaderStats:
    """Accuracy, per-class sensitivity/specificity, confusion matrix and trend (accuracy per
    ``block`` consecutive known-answer reads) of one reader, over gold and calibration."""
    classes = list(rules(session, project).schema.class_names)
    reads = known_answer_reads(session, project, user)
    n = len(reads)
    hit = (reads["label"] == reads["truth"]).to_numpy()
    rows = []
    for cls in classes:
        positive = (reads["truth"] == cls).to_numpy()
        said = (reads["label"] == cls).to_numpy()
        sens = float(said[positive].mean()) if positive.any() else np.nan
        spec = float((~said[~positive]).mean()) if (~positive).any() else np.nan
        rows.append({"class": cls, "n": int(positive.sum()), "sensitivity": sens,
                     "specificity": spec})
    per_class = pd.DataFrame(rows).set_index("class")
    confusion = pd.crosstab(pd.Categorical(reads["truth"], categories=classes),
                            pd.Categorical(reads["label"], categories=classes),
                            dropna=False).reindex(index=classes, columns=classes, fill_value=0)
    confusion.index.name, confusion.columns.name = "truth", "label"
    blocks = np.arange(n) // block
    trend = (pd.DataFrame({"block": blocks, "hit": hit}).groupby("block")["hit"]
             .agg(n="size", accuracy="mean").reset_index())
    calib = status_of(session, project, user)
    return ReaderStats(
        reader=user.username, n_gold=n, accuracy=float(hit.mean()) if n else None,
        per_class=per_class, confusion=confusion, trend=trend,
        calibration=None if calib is None else calib.status,
        suspensions=suspended_classes(session, project, user),
    )


def all_reader_stats(session: Session, project: Project) -> pd.DataFrame:
    """One row per reader with known-answer reads: ``reader, n_gold, accuracy, calibration,
    suspended`` (classes) and the worst per-class sensitivity."""
    table = known_answer_reads(session, project)
    out = []
    for name in sorted(set(table["reader"])):
        user = session.scalar(select(User).where(User.username == name))
        assert user is not None
        stats = reader_stats(session, project, user)
        out.append({"reader": name, "n_gold": stats.n_gold, "accuracy": stats.accuracy,
                    "min_sensitivity": _num(stats.per_class["sensitivity"].min()),
                    "calibration": stats.calibration,
                    "suspended": ",".join(sorted(stats.suspensions))})
    return pd.DataFrame(out, columns=["reader", "n_gold", "accuracy", "min_sensitivity",
                                      "calibration", "suspended"])


@dataclass(frozen=True)
class Feedback:
    """What a reader is shown about themselves."""

    stats: ReaderStats
    messages: list[str]
    updated_at: datetime | None


def reader_feedback(session: Session, project: Project, user: User) -> Feedback:
    """The reader's own statistics and every status message addressed to them."""
    rows = session.scalars(select(ReaderStatus).where(
        ReaderStatus.project_id == project.id, ReaderStatus.user_id == user.id)
        .order_by(ReaderStatus.updated_at)).all()
    return Feedback(reader_stats(session, project, user), [r.message for r in rows],
                    rows[-1].updated_at if rows else None)
