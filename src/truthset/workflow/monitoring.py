"""What the dashboards plot over a project's reads: agreement over time, and each reader
against the consensus (leaderboard and confusion matrix).

- :func:`agreement_over_time`: the readers' agreement on the items finished in each day or
  week (an item belongs to the period of its last current read), with a bootstrap interval per
  period, so a drift after a guideline change or a new reader shows as a dip;
- :func:`readers_against_consensus`: for every reader, how often their current label matches
  the item's final consensus (with a bootstrap interval), Cohen's kappa against it, their median
  time per read, and their confusion matrix (rows: what the reader said; columns: the
  consensus).

Both read the readers' current labels (:func:`truthset.workflow.annotations.current_labels`) of
single or ordinal classification projects and compute with :mod:`truthset.quality.agreement`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.quality.agreement import AgreementResult, agreement
from truthset.store.models import Annotation, Consensus, Item, Project
from truthset.workflow.annotations import current_labels
from truthset.workspace.projects import rules

#: Periods :func:`agreement_over_time` groups by.
PERIODS = ("day", "week")


@dataclass(frozen=True)
class PeriodAgreement:
    """Agreement on the items finished in one period ``[start, end)`` (UTC)."""

    start: datetime
    end: datetime
    n_items: int
    n_reads: int
    result: AgreementResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the period, its counts and the coefficient's fields."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "n_items": self.n_items, "n_reads": self.n_reads,
                "value": self.result.value,
                "ci": None if self.result.ci is None else list(self.result.ci),
                "n_compared": self.result.n_items, "reason": self.result.reason}


def _utc(values: pd.Series) -> pd.Series:
    """Times as timezone-aware UTC (SQLite hands back naive UTC datetimes)."""
    return pd.to_datetime(values, utc=True)


def _period_start(moment: pd.Timestamp, period: str) -> pd.Timestamp:
    day = moment.normalize()
    return day - pd.Timedelta(days=day.weekday()) if period == "week" else day


def _labels(session: Session, project: Project) -> pd.DataFrame:
    table = current_labels(session, project)
    table = table[table["label"].notna()].copy()
    if table.empty:
        raise InputError(f"project {project.key!r} has no labels yet", field="project")
    table["created_at"] = _utc(table["created_at"])
    return table


def agreement_over_time(
    session: Session,
    project: Project,
    *,
    period: str = "week",
    metric: str = "krippendorff",
    level: str = "nominal",
    ci: float | None = 0.95,
    n_boot: int = 500,
    random_state: int = 0,
) -> list[PeriodAgreement]:
    """The readers' agreement per ``period`` (``day`` or ``week``, weeks starting on Monday,
    UTC), oldest first.

    Each item with a current label belongs to the period of its *last* current read, when its
    set of reads became what it is now; the coefficient of a period is computed over those
    items' current reads (every period with an item is listed, also one whose items all have a
    single read: its ``value`` is ``None`` with the reason). Intervals are percentile bootstrap
    over items at ``ci`` (``None``: none), seeded, so the same data gives the same interval.

    Raises
    ------
    InputError
        The project has no labels yet, an unknown period, metric or level, or a bad
        ``ci``/``n_boot``.
    """
    if period not in PERIODS:
        raise InputError(f"unknown period {period!r}; use day or week", field="period")
    table = _labels(session, project)
    finished = table.groupby("item")["created_at"].max()
    starts = finished.map(lambda t: _period_start(t, period))
    step = pd.Timedelta(days=7 if period == "week" else 1)
    out: list[PeriodAgreement] = []
    for start in sorted(set(starts)):
        items = set(starts.index[starts == start])
        reads = table[table["item"].isin(items)][["item", "annotator", "label"]]
        try:
            result = agreement(reads, metric=metric, level=level, ci=ci, n_boot=n_boot,
                               random_state=random_state)
        except InputError as err:
            if err.field in ("metric", "level", "ci", "n_boot"):
                raise
            result = AgreementResult(metric=metric, value=None, ci=None, n_items=0,
                                     n_annotators=int(reads["annotator"].nunique()),
                                     reason=err.reason)
        out.append(PeriodAgreement(start=start.to_pydatetime(),
                                   end=(start + step).to_pydatetime(),
                                   n_items=len(items), n_reads=len(reads), result=result))
    return out


@dataclass(frozen=True)
class ReaderVsConsensus:
    """One reader's current labels against the final consensus of the same items."""

    reader: str
    reads: int
    compared: int
    agreed: int
    agreement: AgreementResult
    kappa: float | None
    median_time_s: float | None
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"reader": self.reader, "reads": self.reads, "compared": self.compared,
                "agreed": self.agreed, "agreement": self.agreement.value,
                "ci": None if self.agreement.ci is None else list(self.agreement.ci),
                "kappa": self.kappa, "median_time_s": self.median_time_s,
                "confusion": self.confusion}


def final_payloads(session: Session, project: Project, *,
                   authors: Collection[int] | None = None) -> dict[str, dict[str, Any]]:
    """Item (external id) -> label payload of its latest consensus, where that consensus is
    final (``{"label": ...}``, ``{"labels": [...]}`` or ``{"objects": [...], ...}``); only the
    items one of ``authors`` (user ids) annotated, when given."""
    latest = Consensus.latest_ids(project.id)
    if authors is not None:
        latest = latest.where(Consensus.item_id.in_(select(Annotation.item_id).where(
            Annotation.project_id == project.id, Annotation.author_id.in_(list(authors)))))
    rows = session.execute(
        select(Item.external_id, Consensus.label, Consensus.status)
        .join(Item, Item.id == Consensus.item_id)
        .where(Consensus.id.in_(latest))).all()
    return {external: label for external, label, status in rows
            if status == "final" and isinstance(label, dict)}


def final_labels(session: Session, project: Project, *,
                 authors: Collection[int] | None = None) -> dict[str, str]:
    """Item (external id) -> label of its latest consensus, where that consensus is final
    (single and ordinal classification; only items ``authors`` annotated, when given)."""
    return {external: str(label["label"])
            for external, label in final_payloads(session, project, authors=authors).items()
            if label.get("label") is not None}


def readers_against_consensus(
    session: Session,
    project: Project,
    *,
    ci: float | None = 0.95,
    n_boot: int = 300,
    random_state: int = 0,
) -> tuple[list[str], list[ReaderVsConsensus]]:
    """Every reader with a current label, against the final consensus: the schema's classes
    (the confusion matrices' order) and one row per reader, the most agreeing first (readers
    with nothing compared last, then by name).

    ``agreement`` is the share of the reader's compared items whose consensus is the reader's
    label (percent agreement of the pair reader/consensus, with a percentile bootstrap interval
    over items); ``kappa`` is Cohen's kappa of the same pair (nominal; ``None`` when undefined);
    ``confusion[i][j]`` counts items the reader called class ``i`` whose consensus is class
    ``j``. Items without a final consensus are counted in ``reads`` only.

    Raises
    ------
    InputError
        The project has no labels yet, or a bad ``ci``/``n_boot``.
    """
    classes = [str(c) for c in rules(session, project).schema.class_names]
    index = {c: k for k, c in enumerate(classes)}
    table = _labels(session, project)
    truth = final_labels(session, project)
    times = dict(session.execute(
        select(Annotation.id, Annotation.time_spent_s).where(
            Annotation.id.in_([int(a) for a in table["annotation_id"]]))).all())
    rows: list[ReaderVsConsensus] = []
    for reader, mine in table.groupby("annotator"):
        said = mine[mine["item"].isin(truth)]
        pair = pd.DataFrame({
            "item": list(said["item"]) * 2,
            "annotator": ["reader"] * len(said) + ["consensus"] * len(said),
            "label": list(said["label"]) + [truth[i] for i in said["item"]],
        })
        share = agreement(pair, metric="percent", ci=ci, n_boot=n_boot,
                          random_state=random_state) if len(said) else AgreementResult(
            metric="percent", value=None, ci=None, n_items=0, n_annotators=1,
            reason="no item of this reader has a final consensus yet")
        kappa = None
        if len(said):
            try:
                kappa = agreement(pair, metric="cohen", classes=classes, ci=None).value
            except InputError:
                kappa = None
        matrix = np.zeros((len(classes), len(classes)), dtype=int)
        agreed = 0
        for item, label in zip(said["item"], said["label"], strict=True):
            agreed += int(label == truth[item])
            if label in index and truth[item] in index:
                matrix[index[label], index[truth[item]]] += 1
        spent = [float(t) for t in (times.get(int(a)) for a in mine["annotation_id"])
                 if t is not None]
        rows.append(ReaderVsConsensus(
            reader=str(reader), reads=len(mine), compared=len(said), agreed=agreed,
            agreement=share, kappa=kappa,
            median_time_s=float(np.median(spent)) if spent else None,
            confusion=matrix.tolist()))
    rows.sort(key=lambda r: (r.agreement.value is None, -(r.agreement.value or 0.0), r.reader))
    return classes, rows
