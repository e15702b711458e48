"""Where readers disagree, what labels cost, and re-queueing items after a guideline change.

- :func:`disagreement_by_class`: for each class, how often a read of it is contradicted by
  another reader of the same item, and what it is most often confused with;
- :func:`disagreement_by_pair`: for each pair of readers with shared items, their percent
  agreement and Cohen's kappa;
- :func:`guideline_candidates`: the items readers split on most (highest label entropy): the
  cases worth adding to the guideline as examples;
- :func:`requeue_for_guideline`: after a guideline change, send the items it affects back to be
  read again under the new version (their old consensus is superseded, old reads kept);
- :func:`cost_report`: labels per item, reader-minutes per item and estimated accuracy, per
  policy and per class;
- :func:`class_agreement`: agreement on each class against the rest (one-vs-rest) over the
  readers' current labels, with bootstrap confidence intervals.

Known-answer (gold, calibration) items are left out of the disagreement and cost figures
(they are scored in :mod:`truthset.workflow.readers`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.quality.agreement import AgreementResult, cohen_kappa, per_class_agreement
from truthset.store.models import (
    Consensus,
    Escalation,
    GoldItem,
    Item,
    PolicyVersion,
    Project,
    Task,
    TaskOutcome,
    utcnow,
)
from truthset.workflow.annotations import current_labels
from truthset.workflow.queue import (
    ADJUDICATION_SOURCE,
    CANCELLED,
    DONE,
    OUTSTANDING,
    SUPERSEDED,
    advance,
    project_reads,
)
from truthset.workspace.projects import rules


def _reads(session: Session, project: Project) -> pd.DataFrame:
    table = project_reads(session, project)
    known = {str(i) for i in session.scalars(
        select(GoldItem.item_id).where(GoldItem.project_id == project.id))}
    return table[~table["item"].isin(known)].drop_duplicates(["item", "annotator"], keep="last")


def disagreement_by_class(session: Session, project: Project) -> pd.DataFrame:
    """Per class: ``reads`` (reads of it), ``items`` (items where someone said it),
    ``contradicted`` (share of pairs of reads on one item where one says it and the other
    does not), ``confused_with`` (the class most often paired against it)."""
    classes = list(rules(session, project).schema.class_names)
    table = _reads(session, project)
    pairs: dict[tuple[str, str], int] = {}
    for _item, group in table.groupby("item"):
        for a, b in itertools.permutations(list(group["label"]), 2):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    rows = []
    for cls in classes:
        with_it = {b: n for (a, b), n in pairs.items() if a == cls}
        total = sum(with_it.values())
        against = {b: n for b, n in with_it.items() if b != cls}
        rows.append({
            "class": cls, "reads": int((table["label"] == cls).sum()),
            "items": int(table.loc[table["label"] == cls, "item"].nunique()),
            "contradicted": sum(against.values()) / total if total else np.nan,
            "confused_with": max(against, key=lambda k: against[k]) if against else None,
        })
    return pd.DataFrame(rows, columns=["class", "reads", "items", "contradicted",
                                       "confused_with"])


def disagreement_by_pair(session: Session, project: Project, *,
                         min_shared: int = 2) -> pd.DataFrame:
    """Per pair of readers with at least ``min_shared`` items in common: ``shared``,
    ``agreement`` (share of shared items labelled alike) and ``kappa`` (Cohen's), least
    agreeing first."""
    classes = list(rules(session, project).schema.class_names)
    table = _reads(session, project)
    wide = table.pivot(index="item", columns="annotator", values="label")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if len(both) < min_shared:
            continue
        agree = float((both[a] == both[b]).mean())
        long = both.reset_index().melt(id_vars="item", var_name="annotator", value_name="label")
        try:
            kappa = cohen_kappa(long, classes=classes, ci=None).value
        except InputError:
            kappa = None
        rows.append({"reader_a": a, "reader_b": b, "shared": len(both), "agreement": agree,
                     "kappa": kappa})
    frame = pd.DataFrame(rows, columns=["reader_a", "reader_b", "shared", "agreement", "kappa"])
    return frame.sort_values(["agreement", "reader_a", "reader_b"]).reset_index(drop=True)


def guideline_candidates(session: Session, project: Project, *, n: int = 10) -> pd.DataFrame:
    """The ``n`` items with the most evenly split reads (entropy of the label shares, at least
    two reads): ``item_id, item, reads, labels`` (class -> count), ``entropy``, ``final``
    (current consensus label, if any)."""
    table = _reads(session, project)
    latest: dict[int, dict[str, Any]] = dict(session.execute(
        select(Consensus.item_id, Consensus.label).where(Consensus.id.in_(
            select(func.max(Consensus.id)).where(Consensus.project_id == project.id)
            .group_by(Consensus.item_id)))).all())
    names = dict(session.execute(select(Item.id, Item.external_id).where(
        Item.project_id == project.id)).all())
    rows = []
    for item, group in table.groupby("item"):
        if len(group) < 2:
            continue
        counts = group["label"].value_counts()
        share = counts.to_numpy() / counts.sum()
        entropy = float(-(share * np.log2(share)).sum())
        if entropy == 0:
            continue
        item_id = int(str(item))
        rows.append({"item_id": item_id, "item": names.get(item_id), "reads": len(group),
                     "labels": {str(k): int(v) for k, v in counts.items()},
                     "entropy": round(entropy, 4),
                     "final": (latest.get(item_id) or {}).get("label")})
    frame = pd.DataFrame(rows, columns=["item_id", "item", "reads", "labels", "entropy",
                                        "final"])
    return frame.sort_values(["entropy", "item_id"], ascending=[False, True]).head(n)


def requeue_for_guideline(session: Session, project: Project, *,
                          classes: Sequence[str] = (), items: Sequence[str] = (),
                          now: datetime | None = None) -> list[str]:
    """Send the items a guideline change affects back to be read again.

    Affected: items whose current consensus is one of ``classes`` or on which any read named
    one of them, plus the items named in ``items`` (external ids). Their current consensus is
    superseded (a ``requeued`` row, so releases leave them out until read again), their reads
    and decisions stay in the record but no longer count, and fresh slots are made under the
    current policy. Returns the external ids re-queued.

    Raises
    ------
    InputError
        An unknown class or item, or nothing named.
    """
    schema = rules(session, project).schema
    if not classes and not items:
        raise InputError("name the classes or items the guideline change affects",
                         field="classes")
    for cls in classes:
        schema.class_named(cls)
    now = now or utcnow()
    wanted: set[int] = set()
    if items:
        found = dict(session.execute(select(Item.external_id, Item.id).where(
            Item.project_id == project.id, Item.external_id.in_(list(items)))).all())
        missing = [e for e in items if e not in found]
        if missing:
            raise InputError(f"no item {missing[0]!r} in project {project.key!r}",
                             field="items")
        wanted |= set(found.values())
    if classes:
        reads = _reads(session, project)
        wanted |= {int(i) for i in reads.loc[reads["label"].isin(classes), "item"]}
        latest = session.execute(select(Consensus.item_id, Consensus.label).where(
            Consensus.id.in_(select(func.max(Consensus.id)).where(
                Consensus.project_id == project.id).group_by(Consensus.item_id)))).all()
        wanted |= {i for i, label in latest if (label or {}).get("label") in classes}
    known = set(session.scalars(select(GoldItem.item_id).where(
        GoldItem.project_id == project.id)))
    done: list[str] = []
    guideline = rules(session, project).guideline_version
    for item in session.scalars(select(Item).where(Item.id.in_(wanted - known))
                                .order_by(Item.id)).all():
        session.execute(select(Item.id).where(Item.id == item.id).with_for_update())
        for task in session.scalars(select(Task).where(Task.item_id == item.id).with_for_update()):
            if task.status == DONE:
                task.status = SUPERSEDED
            elif task.status in OUTSTANDING:
                task.status, task.completed_at = CANCELLED, now
        for esc in session.scalars(select(Escalation).where(Escalation.item_id == item.id,
                                                            Escalation.status == "open")):
            esc.status, esc.resolved_at = "resolved", now
        session.add(Consensus(project_id=project.id, item_id=item.id, method="requeued",
                              parameters={"guideline_version": guideline},
                              label={"label": None}, status="requeued"))
        session.flush()
        advance(session, project, item, now=now)
        done.append(item.external_id)
    audit.record(session, action="requeue", entity_type="items", project_id=project.id,
                 after={"guideline_version": guideline, "classes": list(classes),
                        "items": done})
    return done


def cost_report(session: Session, project: Project) -> dict[str, pd.DataFrame]:
    """Cost and estimated quality of the finished items, ``by_policy`` and ``by_class``:
    ``items, labels_per_item`` (reads, reviews and adjudications), ``minutes_per_item``
    (reader time recorded with each submit), ``est_accuracy`` (mean posterior of the final
    label; an adjudicated or reviewed label counts as 1.0) and ``adjudicated`` (share).
    ``known_answer`` gives the reads spent on gold and calibration items."""
    outcomes = pd.DataFrame(session.execute(
        select(TaskOutcome.item_id, TaskOutcome.outcome, TaskOutcome.policy_version,
               TaskOutcome.time_spent_s).where(TaskOutcome.project_id == project.id)).all(),
        columns=["item_id", "outcome", "policy_version", "time_spent_s"])
    known = outcomes["outcome"].isin(["gold", "calibration"])
    overhead = pd.DataFrame({
        "reads": [int(known.sum())],
        "minutes": [float(outcomes.loc[known, "time_spent_s"].fillna(0).sum() / 60)],
    })
    work = outcomes[~known]
    latest = pd.DataFrame(session.execute(
        select(Consensus.item_id, Consensus.label, Consensus.method, Consensus.confidence,
               Consensus.status).where(Consensus.id.in_(
                   select(func.max(Consensus.id)).where(Consensus.project_id == project.id)
                   .group_by(Consensus.item_id)))).all(),
        columns=["item_id", "label", "method", "confidence", "status"])
    latest = latest[latest["status"] == "final"]
    names: dict[int, dict[str, Any]] = dict(session.execute(
        select(PolicyVersion.version, PolicyVersion.definition).where(
        PolicyVersion.project_id == project.id)).all())
    per_item = work.groupby("item_id").agg(
        labels=("outcome", "size"), minutes=("time_spent_s", lambda s: s.fillna(0).sum() / 60),
        policy_version=("policy_version", "max"))
    frame = latest.set_index("item_id").join(per_item, how="inner")
    if frame.empty:
        empty = pd.DataFrame(columns=["items", "labels_per_item", "minutes_per_item",
                                      "est_accuracy", "adjudicated"])
        return {"by_policy": empty, "by_class": empty.copy(), "known_answer": overhead}
    expert = frame["method"].isin([ADJUDICATION_SOURCE, "review"])
    frame["est"] = np.where(expert, 1.0, frame["confidence"].astype(float).fillna(1.0))
    frame["adjudicated"] = frame["method"] == ADJUDICATION_SOURCE
    frame["class"] = frame["label"].map(lambda v: (v or {}).get("label"))
    frame["policy"] = frame["policy_version"].map(
        lambda v: f"{(names.get(int(v)) or {}).get('name', 'default')} v{int(v)}"
        if pd.notna(v) and int(v) in names else "default v0")

    def summarise(by: str) -> pd.DataFrame:
        return frame.groupby(by).agg(
            items=("labels", "size"), labels_per_item=("labels", "mean"),
            minutes_per_item=("minutes", "mean"), est_accuracy=("est", "mean"),
            adjudicated=("adjudicated", "mean"))

    return {"by_policy": summarise("policy"), "by_class": summarise("class"),
            "known_answer": overhead}


def class_agreement(session: Session, project: Project, *, metric: str = "krippendorff",
                    ci: float | None = 0.95, n_boot: int = 500,
                    random_state: int = 0) -> dict[str, AgreementResult]:
    """Agreement on each class against the rest (one-vs-rest) over every reader's current
    label (:func:`truthset.workflow.annotations.current_labels`), with a percentile
    bootstrap interval at ``ci`` (``None``: none) from ``n_boot`` resamples of items (seeded:
    the same data gives the same interval). A class no label or every label uses comes back
    with ``value=None`` and the reason.

    Raises
    ------
    InputError
        The project has no labels yet, an unknown metric, or a bad ``ci``/``n_boot``.
    """
    table = current_labels(session, project)
    table = table[table["label"].notna()]
    if table.empty:
        raise InputError(f"project {project.key!r} has no labels yet", field="project")
    result = per_class_agreement(table[["item", "annotator", "label"]], metric=metric, ci=ci,
                                 n_boot=n_boot, random_state=random_state)
    return {str(cls): value for cls, value in sorted(result.items(), key=lambda kv: str(kv[0]))}
