"""Readers against known answers: calibration, gold scoring, suspension and feedback.

- **Calibration**: a reader's first tasks are the project's calibration items; once all are
  read, their mean score (share correct for single-label schemas) is compared with the
  policy's ``calibration.threshold`` and the result (``passed``/``failed``, with the reason)
  is stored as the reader's project status.
- **Gold**: gold items are mixed into the annotate queue at ``gold.rate``, looking like any
  other task. After each gold read, the reader's per-class sensitivity on gold is checked;
  a class where it falls under ``gold.threshold`` (after at least ``gold.min_reads`` gold
  items of that class) suspends the reader *for that class*, with a message saying why.
- **Statistics and feedback**: overall score, per-class sensitivity and specificity (boxes and
  polygons: precision), the confusion matrix (single-label) and the trend, from every
  known-answer read; a reader sees only their own, and never which items were gold.

Every schema the workflow runs is scored the same way: each read against its reference by
:func:`truthset.workflow.scoring.score_read` (the quality engine's matched F1 and Dice at the
policy's ``iou_threshold``), then pooled per class here:

=============  =================  ===============================  ===========================
schema          score of a read    sensitivity of a class           second figure of a class
=============  =================  ===============================  ===========================
single          correct (0/1)      share of its reference cases     specificity: share of the
                                   read as it                       other cases not read as it
multi-label     share of classes   share of its reference cases     specificity: share of the
                answered right     marked                           cases without it unmarked
box, polygon    matched F1         matched / reference objects      precision: matched / read
                                                                    objects (the negatives of
                                                                    a detection, places without
                                                                    an object, are not
                                                                    countable, so there is no
                                                                    specificity)
mask            mean Dice per      share of its reference cases     specificity: share of the
                class painted      painted with Dice >=             cases without it left
                                   ``target_dice``                  unpainted; and ``dice``,
                                                                    the mean Dice on its
                                                                    reference cases
=============  =================  ===============================  ===========================
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
from truthset.quality.shapes import ImageBounds
from truthset.store.models import Annotation, GoldItem, Item, Project, ReaderStatus, User, utcnow
from truthset.workflow.engine import schema_shape
from truthset.workflow.policies import current_policy
from truthset.workflow.scoring import score_read
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
    truth, purpose, created_at, payload, reference`` in the order made (one reader's when
    ``user`` is given). ``label`` / ``truth`` are the classes of single-label payloads
    (``None`` for other schemas); ``payload`` / ``reference`` are the read's and the reference
    answer's whole payloads."""
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
    rows = [(a, i, u, (p or {}).get("label"), (g or {}).get("label"), pur, c, p or {}, g or {})
            for a, i, u, p, g, pur, c in session.execute(stmt).all()]
    return pd.DataFrame(rows, columns=["annotation_id", "item_id", "reader", "label", "truth",
                                       "purpose", "created_at", "payload", "reference"])


@dataclass(frozen=True)
class Scoring:
    """How the reads of a project are scored against known answers: its schema shape
    (``single``, ``multi``, ``box``, ``polygon``, ``mask``), classes, and the policy's
    ``iou_threshold`` (boxes, polygons) and ``target_dice`` (masks)."""

    shape: str
    classes: tuple[str, ...]
    iou_threshold: float = 0.5
    target_dice: float = 0.7

    @property
    def score_name(self) -> str:
        """What a read's score is, in words."""
        return {"single": "share correct", "multi": "share of classes answered right",
                "box": "matched F1", "polygon": "matched F1",
                "mask": "mean Dice per class"}[self.shape]

    def describe(self) -> dict[str, str]:
        """The figures reader statistics give for this schema, in words (shown with them)."""
        if self.shape in ("box", "polygon"):
            where = (f"optimal one-to-one matching at IoU >= {self.iou_threshold:.2f}, classes "
                     "must match" + (", polygons by their bounding boxes"
                                     if self.shape == "polygon" else ""))
            return {"schema": self.shape, "score": f"matched F1 of each read ({where})",
                    "sensitivity": "matched / reference objects of the class",
                    "precision": "matched / read objects of the class (a detection has no "
                                 "countable negatives, so no specificity)"}
        if self.shape == "mask":
            return {"schema": "mask",
                    "score": "mean Dice over the classes the reference or the read paints",
                    "sensitivity": f"share of the class's reference cases painted with Dice >= "
                                   f"{self.target_dice:.2f}",
                    "specificity": "share of the cases without the class left unpainted",
                    "dice": "mean Dice on the class's reference cases"}
        if self.shape == "multi":
            return {"schema": "multi-label",
                    "score": "share of the schema's classes answered right (present/absent)",
                    "sensitivity": "share of the class's reference cases marked",
                    "specificity": "share of the cases without the class left unmarked"}
        return {"schema": "single", "score": "share correct",
                "sensitivity": "share of the class's reference cases read as it",
                "specificity": "share of the other cases not read as it"}


def scoring_for(session: Session, project: Project, policy: Policy | None = None) -> Scoring:
    """The :class:`Scoring` of ``project`` under ``policy`` (the one in force when omitted;
    its base rules: ``by_risk`` overrides do not change how known answers are scored)."""
    schema = rules(session, project).schema
    policy = policy or current_policy(session, project).policy
    return Scoring(schema_shape(schema), tuple(schema.class_names), policy.iou_threshold,
                   policy.target_dice)


_CLASS_COLUMNS = ["read", "class", "truth", "said", "matched", "n_truth", "n_said", "dice"]


def score_reads(session: Session, reads: pd.DataFrame, scoring: Scoring
                ) -> tuple[np.ndarray, pd.DataFrame]:
    """Score known-answer reads (:func:`known_answer_reads`) against their references.

    Returns
    -------
    scores, per_class:
        Each read's score in [0, 1] (in the order of ``reads``), and one row per read and
        class: ``read`` (position in ``reads``), ``class``, ``truth``, ``said``, ``matched``,
        ``n_truth``, ``n_said`` (boxes, polygons), ``dice`` (masks).
    """
    bounds: dict[int, ImageBounds | None] = {}
    if scoring.shape in ("box", "polygon", "mask") and len(reads):
        ids = sorted({int(i) for i in reads["item_id"]})
        bounds = {i: ImageBounds.from_media(m) for i, m in session.execute(
            select(Item.id, Item.media).where(Item.id.in_(ids))).all()}
    scores = np.zeros(len(reads), dtype=float)
    rows: list[tuple[Any, ...]] = []
    for k, (item_id, payload, reference) in enumerate(zip(
            reads["item_id"], reads["payload"], reads["reference"], strict=True)):
        result = score_read(scoring.shape, payload, reference, classes=scoring.classes,
                            iou_threshold=scoring.iou_threshold,
                            bounds=bounds.get(int(item_id)))
        scores[k] = result.score
        rows += [(k, c.class_name, c.truth, c.said, c.matched, c.n_truth, c.n_said,
                  np.nan if c.dice is None else c.dice) for c in result.classes]
    return scores, pd.DataFrame(rows, columns=_CLASS_COLUMNS)


def _share(flags: pd.Series) -> float:
    return float(flags.mean()) if len(flags) else np.nan


def class_figures(per_class: pd.DataFrame, scoring: Scoring) -> pd.DataFrame:
    """Per class of the schema (index, schema order): ``n`` (reference cases: reads whose
    reference has the class), ``sensitivity``, ``specificity`` and, by schema, ``objects``
    and ``precision`` (boxes, polygons) or ``dice`` (masks); see the module notes."""
    out = []
    for cls in scoring.classes:
        rows = per_class[per_class["class"] == cls]
        truth = rows["truth"].astype(bool)
        said = rows["said"].astype(bool)
        entry: dict[str, Any] = {"class": cls, "n": int(truth.sum())}
        if scoring.shape in ("box", "polygon"):
            found, drawn = int(rows["n_truth"].sum()), int(rows["n_said"].sum())
            entry["objects"] = found
            entry["sensitivity"] = rows["matched"].sum() / found if found else np.nan
            entry["specificity"] = np.nan
            entry["precision"] = rows["matched"].sum() / drawn if drawn else np.nan
        elif scoring.shape == "mask":
            values = rows.loc[truth, "dice"].fillna(0.0)
            entry["sensitivity"] = _share(values >= scoring.target_dice - 1e-12)
            entry["specificity"] = _share(~said[~truth])
            entry["dice"] = float(values.mean()) if len(values) else np.nan
        else:
            entry["sensitivity"] = _share(said[truth])
            entry["specificity"] = _share(~said[~truth])
        out.append(entry)
    columns = ["class", "n", "sensitivity", "specificity"] + (
        ["objects", "precision"] if scoring.shape in ("box", "polygon") else
        ["dice"] if scoring.shape == "mask" else [])
    return pd.DataFrame(out, columns=columns).set_index("class")


def score_calibration(session: Session, project: Project, user: User,
                      policy: Policy) -> ReaderStatus:
    """Score a reader's finished calibration batch and store ``passed`` or ``failed``: the
    mean score of the calibration reads (single-label: the share correct) against
    ``calibration.threshold``.

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
    scoring = scoring_for(session, project, policy)
    scores, _per_class = score_reads(session, reads, scoring)
    share = float(scores.mean())
    need = policy.calibration.threshold
    if scoring.shape == "single":
        got = f"{share:.0%} correct of {len(reads)}"
    else:
        got = f"{scoring.score_name} {share:.0%} over {len(reads)} cases"
        if scoring.shape in ("box", "polygon"):
            got += f" (IoU >= {scoring.iou_threshold:.2f})"
    if share >= need:
        return set_status(session, project, user, CALIBRATION, PASSED,
                          f"calibration passed: {got} (threshold {need:.0%})")
    return set_status(session, project, user, CALIBRATION, FAILED,
                      f"calibration not passed: {got}, under the threshold of {need:.0%}; "
                      "read the guideline again and ask a manager to reopen your calibration")


def _suspension(cls: str, row: pd.Series, scoring: Scoring, threshold: float) -> str:
    """Why a reader is suspended for ``cls``, in the words they are shown."""
    n, value = int(row["n"]), float(row["sensitivity"])
    if scoring.shape in ("box", "polygon"):
        what = (f"you found {value:.0%} of the {int(row['objects'])} {cls} objects of the "
                f"{n} {cls} reference cases (a match needs IoU >= {scoring.iou_threshold:.2f} "
                "with a reference object of the class)")
    elif scoring.shape == "mask":
        what = (f"your {cls} masks reached Dice >= {scoring.target_dice:.2f} on {value:.0%} "
                f"of the {n} {cls} reference cases")
    else:
        what = f"you recognised {value:.0%} of the {n} {cls} reference cases"
    return (f"suspended for {cls}: {what} (threshold {threshold:.0%}); review the guideline's "
            f"{cls} examples")


def check_gold(session: Session, project: Project, user: User, policy: Policy) -> list[str]:
    """After a gold read: suspend the reader for every class whose gold sensitivity fell under
    the threshold (with at least ``min_reads`` gold items of the class). Returns the classes
    newly suspended."""
    if policy.gold is None:
        return []
    reads = known_answer_reads(session, project, user, purpose="gold")
    if reads.empty:
        return []
    scoring = scoring_for(session, project, policy)
    _scores, per_class = score_reads(session, reads, scoring)
    figures = class_figures(per_class, scoring)
    already = suspended_classes(session, project, user)
    newly: list[str] = []
    for cls, row in figures.iterrows():
        if row["n"] < policy.gold.min_reads or str(cls) in already:
            continue
        if float(row["sensitivity"]) < policy.gold.threshold:
            set_status(session, project, user, str(cls), SUSPENDED,
                       _suspension(str(cls), row, scoring, policy.gold.threshold))
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
    """A reader's record against known answers.

    ``accuracy`` is the mean score of their known-answer reads (single-label: the share
    correct; see ``scoring`` for the other schemas), ``per_class`` the per-class figures of
    :func:`class_figures`, ``confusion`` the truth x label counts (single-label schemas; empty
    otherwise), ``trend`` the mean score per block of consecutive reads, ``scoring`` what the
    figures mean for the project's schema (:meth:`Scoring.describe`).
    """

    reader: str
    n_gold: int
    accuracy: float | None
    per_class: pd.DataFrame  # class -> n, sensitivity, specificity (+ schema's own figures)
    confusion: pd.DataFrame  # truth (rows) x label (columns) counts
    trend: pd.DataFrame  # block, n, accuracy (blocks of consecutive gold reads)
    calibration: str | None = None
    suspensions: dict[str, str] = field(default_factory=dict)
    scoring: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (no item identifiers: gold stays unidentifiable)."""
        extra = [c for c in self.per_class.columns
                 if c not in ("n", "sensitivity", "specificity")]
        return {
            "reader": self.reader, "n_gold": self.n_gold, "accuracy": self.accuracy,
            "per_class": [
                {"class": str(c), "n": int(r["n"]), "sensitivity": _num(r["sensitivity"]),
                 "specificity": _num(r["specificity"]),
                 **{k: (int(r[k]) if k == "objects" else _num(r[k])) for k in extra}}
                for c, r in self.per_class.iterrows()],
            "confusion": {"classes": [str(c) for c in self.confusion.columns],
                          "counts": self.confusion.to_numpy().astype(int).tolist()},
            "trend": [{"block": int(r["block"]), "n": int(r["n"]),
                       "accuracy": _num(r["accuracy"])} for _, r in self.trend.iterrows()],
            "calibration": self.calibration, "suspensions": self.suspensions,
            "scoring": self.scoring,
        }


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else (
        float(value))


def reader_stats(session: Session, project: Project, user: User, *,
                 block: int = 10) -> ReaderStats:
    """Overall score (single-label: accuracy), per-class figures, confusion matrix
    (single-label) and trend (mean score per ``block`` consecutive known-answer reads) of one
    reader, over gold and calibration."""
    scoring = scoring_for(session, project)
    classes = list(scoring.classes)
    reads = known_answer_reads(session, project, user)
    n = len(reads)
    scores, per_class = score_reads(session, reads, scoring)
    if scoring.shape == "single":
        confusion = pd.crosstab(pd.Categorical(reads["truth"], categories=classes),
                                pd.Categorical(reads["label"], categories=classes),
                                dropna=False).reindex(index=classes, columns=classes,
                                                      fill_value=0)
    else:
        confusion = pd.DataFrame(index=pd.Index([], dtype=object),
                                 columns=pd.Index([], dtype=object), dtype=int)
    confusion.index.name, confusion.columns.name = "truth", "label"
    blocks = np.arange(n) // block
    trend = (pd.DataFrame({"block": blocks, "hit": scores}).groupby("block")["hit"]
             .agg(n="size", accuracy="mean").reset_index())
    calib = status_of(session, project, user)
    return ReaderStats(
        reader=user.username, n_gold=n, accuracy=float(scores.mean()) if n else None,
        per_class=class_figures(per_class, scoring), confusion=confusion, trend=trend,
        calibration=None if calib is None else calib.status,
        suspensions=suspended_classes(session, project, user), scoring=scoring.describe(),
    )


def all_reader_stats(session: Session, project: Project) -> pd.DataFrame:
    """One row per reader with known-answer reads: ``reader, n_gold, accuracy`` (mean score),
    ``min_sensitivity`` (the worst per-class sensitivity), ``calibration``, ``suspended``
    (classes)."""
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
