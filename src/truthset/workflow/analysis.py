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
  policy and per class (on multi-label and geometric projects an item counts in every class
  present in its final label);
- :func:`class_agreement`: agreement on each class against the rest (one-vs-rest) over the
  readers' current labels, with bootstrap confidence intervals.

Box, polygon, mask and multi-label projects get the same three disagreement reports, on the
pair figures of :func:`truthset.workflow.pairwise.pairwise_by_class` (the figures the
workflow's agreement uses): matched F1 of the two readers' objects of a class at the policy's
``iou_threshold`` (boxes, polygons), Dice of their masks of a class per image (masks), and the
positive specific agreement of their marks (multi-label, the same formula as the F1):

- per class: ``reads`` / ``items`` marking it, ``contradicted`` (share of ordered pairs of
  reads on one item where the first marks the class and the second does not), ``agreement``
  (matched F1 pooled over every pair's objects of the class / mean Dice over the pair-images
  either painted), ``confused_with`` (the class the other reader most often drew where this
  one was unmatched, painted over it, or marked instead);
- per reader pair: ``shared`` items, ``agreement`` over them (pooled matched F1, or mean Dice)
  and ``per_class`` (class -> the pair's figure on it); ``kappa`` is ``None``;
- candidate guideline examples: the items whose readers agree least, ``disagreement`` = 1 −
  the item's mean pairwise figure (:func:`truthset.workflow.geometric.geometric_consensus`'s
  ``agreement``, the figure compared with ``target_f1`` / ``target_dice``).

Known-answer (gold, calibration) items are left out of the disagreement and cost figures
(they are scored in :mod:`truthset.workflow.readers`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.policy import Stage
from truthset.quality.agreement import AgreementResult, cohen_kappa, per_class_agreement
from truthset.quality.shapes import ImageBounds
from truthset.store.models import (
    Annotation,
    Consensus,
    Escalation,
    GoldItem,
    Item,
    PolicyVersion,
    Project,
    Task,
    TaskOutcome,
    User,
    utcnow,
)
from truthset.workflow.annotations import current_labels
from truthset.workflow.engine import named_classes, schema_shape
from truthset.workflow.geometric import geometric_consensus
from truthset.workflow.pairwise import Pairwise, pairwise_by_class
from truthset.workflow.policies import current_policy
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


#: Schema shapes whose reads are compared by :func:`truthset.workflow.pairwise.
#: pairwise_by_class` (the others are single-label classification).
PAIRWISE_SHAPES = ("box", "polygon", "mask", "multi")


def _shape(session: Session, project: Project) -> str:
    return schema_shape(rules(session, project).schema)


def _payload_reads(session: Session, project: Project) -> pd.DataFrame:
    """The current workflow reads of the project's regular items: ``item_id, annotator,
    payload`` (a reader's last read of an item), in the order made."""
    known = select(GoldItem.item_id).where(GoldItem.project_id == project.id)
    rows = session.execute(
        select(Annotation.item_id, User.username, Annotation.payload)
        .join(Task, Task.id == Annotation.task_id).join(User, User.id == Annotation.author_id)
        .where(Annotation.project_id == project.id,
               Task.stage.in_((Stage.ANNOTATE.value, Stage.CALIBRATE.value)),
               Task.status == DONE, Annotation.parent_id.is_(None),
               Annotation.item_id.not_in(known))
        .order_by(Annotation.id)).all()
    table = pd.DataFrame([(int(i), u, p or {}) for i, u, p in rows],
                         columns=["item_id", "annotator", "payload"])
    return table.drop_duplicates(["item_id", "annotator"], keep="last")


@dataclass(frozen=True)
class _Compared:
    """Every regular item's reads compared pair by pair (non-single-label schemas)."""

    shape: str
    classes: tuple[str, ...]
    iou_threshold: float
    reads: pd.DataFrame
    bounds: dict[int, ImageBounds | None]
    items: dict[int, Pairwise]


def _compared(session: Session, project: Project) -> _Compared:
    shape = _shape(session, project)
    classes = tuple(rules(session, project).schema.class_names)
    policy = current_policy(session, project).policy
    reads = _payload_reads(session, project)
    ids = sorted({int(i) for i in reads["item_id"]})
    bounds = {i: ImageBounds.from_media(m) for i, m in session.execute(
        select(Item.id, Item.media).where(Item.id.in_(ids))).all()} if ids else {}
    items = {int(item): pairwise_by_class(
        shape, list(zip(group["annotator"], group["payload"], strict=True)), classes=classes,
        iou_threshold=policy.iou_threshold, bounds=bounds.get(int(item)))
        for item, group in reads.groupby("item_id")}
    return _Compared(shape, classes, policy.iou_threshold, reads, bounds, items)


def _pooled(records: Sequence[Any], metric: str) -> float:
    """Matched F1 pooled over ``records`` (mean Dice for masks); NaN for none."""
    if not records:
        return np.nan
    if metric == "dice":
        return float(np.mean([r.figure for r in records]))
    tp, fp, fn = (sum(getattr(r, k) for r in records) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0


def _pairwise_by_class(session: Session, project: Project) -> pd.DataFrame:
    done = _compared(session, project)
    metric = "dice" if done.shape == "mask" else "f1"
    rows = []
    for cls in done.classes:
        records = [r for p in done.items.values() for r in p.records if r.class_name == cls]
        marking = [(item, r) for item, p in done.items.items() for r, has in p.marked.items()
                   if cls in has]
        ordered = against = 0
        for p in done.items.values():
            for a, b in itertools.permutations(p.readers, 2):
                if cls in p.marked[a]:
                    ordered += 1
                    against += cls not in p.marked[b]
        weights: dict[str, float] = {}
        for p in done.items.values():
            for c, other, w in p.confusions:
                if c == cls:
                    weights[other] = weights.get(other, 0.0) + w
        rows.append({
            "class": cls, "reads": len(marking), "items": len({i for i, _r in marking}),
            "contradicted": against / ordered if ordered else np.nan,
            "agreement": _pooled(records, metric), "metric": metric,
            "confused_with": max(sorted(weights), key=lambda k: weights[k]) if weights
            else None,
        })
    return pd.DataFrame(rows, columns=["class", "reads", "items", "contradicted", "agreement",
                                       "metric", "confused_with"])


def _pairwise_by_pair(session: Session, project: Project, min_shared: int) -> pd.DataFrame:
    done = _compared(session, project)
    metric = "dice" if done.shape == "mask" else "f1"
    readers = sorted(set(done.reads["annotator"]))
    by_reader = {r: set(done.reads.loc[done.reads["annotator"] == r, "item_id"])
                 for r in readers}
    rows = []
    for a, b in itertools.combinations(readers, 2):
        shared = by_reader[a] & by_reader[b]
        if len(shared) < min_shared:
            continue
        records = [r for i in shared for r in done.items[i].records
                   if (r.reader_a, r.reader_b) == (a, b)]
        per_class = {c: _pooled([r for r in records if r.class_name == c], metric)
                     for c in done.classes}
        rows.append({"reader_a": a, "reader_b": b, "shared": len(shared),
                     "agreement": _pooled(records, metric) if records else 1.0,
                     "kappa": None, "metric": metric,
                     "per_class": {c: (None if np.isnan(v) else round(float(v), 6))
                                   for c, v in per_class.items()}})
    frame = pd.DataFrame(rows, columns=["reader_a", "reader_b", "shared", "agreement", "kappa",
                                        "metric", "per_class"])
    return frame.sort_values(["agreement", "reader_a", "reader_b"]).reset_index(drop=True)


def _latest_labels(session: Session, project: Project) -> dict[int, dict[str, Any]]:
    return dict(session.execute(
        select(Consensus.item_id, Consensus.label).where(Consensus.id.in_(
            Consensus.latest_ids(project.id)))).all())


def _pairwise_candidates(session: Session, project: Project, n: int) -> pd.DataFrame:
    done = _compared(session, project)
    metric = "dice" if done.shape == "mask" else "f1"
    latest = _latest_labels(session, project)
    names = dict(session.execute(select(Item.id, Item.external_id).where(
        Item.project_id == project.id)).all())
    policy = current_policy(session, project).policy
    rows = []
    for item, group in done.reads.groupby("item_id"):
        item_id = int(str(item))
        if len(group) < 2:
            continue
        compared = done.items[item_id]
        if done.shape == "multi":
            pairs = [compared.pair_figure(a, b)
                     for a, b in itertools.combinations(compared.readers, 2)]
            agreement = float(np.mean(pairs))
        else:
            agreement = geometric_consensus(
                done.shape, list(zip(group["annotator"], group["payload"], strict=True)),
                iou_threshold=policy.iou_threshold, min_support=policy.min_support,
                mask_method="vote", bounds=done.bounds.get(item_id)).agreement
        if agreement >= 1.0 - 1e-12:
            continue
        counts: dict[str, int] = {}
        for has in compared.marked.values():
            for c in has:
                counts[c] = counts.get(c, 0) + 1
        final = latest.get(item_id)
        rows.append({"item_id": item_id, "item": names.get(item_id), "reads": len(group),
                     "labels": {c: counts[c] for c in done.classes if c in counts},
                     "disagreement": round(1.0 - agreement, 4), "metric": metric,
                     "final": None if final is None else _class_counts(final)})
    frame = pd.DataFrame(rows, columns=["item_id", "item", "reads", "labels", "disagreement",
                                        "metric", "final"])
    return frame.sort_values(["disagreement", "item_id"], ascending=[False, True]).head(n)


def _class_counts(label: Mapping[str, Any]) -> dict[str, int]:
    """Class -> how often a consensus label names it (its objects, without the minority)."""
    out: dict[str, int] = {}
    for c in named_classes({k: v for k, v in label.items() if k != "minority"}):
        out[c] = out.get(c, 0) + 1
    return out


def disagreement_by_class(session: Session, project: Project) -> pd.DataFrame:
    """Per class: ``reads`` (reads of it), ``items`` (items where someone said it),
    ``contradicted`` (share of pairs of reads on one item where one says it and the other
    does not), ``confused_with`` (the class most often paired against it).

    Box, polygon, mask and multi-label projects: ``reads``, ``items``, ``contradicted`` (the
    first of a pair of readers marks the class on an item, the second does not),
    ``agreement`` (pooled matched F1 / mean Dice of the pairs on the class), ``metric``,
    ``confused_with`` (see the module notes)."""
    if _shape(session, project) in PAIRWISE_SHAPES:
        return _pairwise_by_class(session, project)
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
    agreeing first.

    Box, polygon, mask and multi-label projects: ``agreement`` is the pair's matched F1
    pooled over their shared items' objects (mean Dice for masks; 1.0 when neither marked
    anything), ``per_class`` the same per class (``None``: neither marked it), ``metric``
    names the figure and ``kappa`` is ``None``."""
    if _shape(session, project) in PAIRWISE_SHAPES:
        return _pairwise_by_pair(session, project, min_shared)
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
    (current consensus label, if any).

    Box, polygon, mask and multi-label projects: the ``n`` items whose readers agree least,
    ``item_id, item, reads, labels`` (class -> readers who marked it), ``disagreement`` (1 −
    the item's mean pairwise matched F1 or Dice), ``metric``, ``final`` (class -> objects of
    the current consensus label)."""
    if _shape(session, project) in PAIRWISE_SHAPES:
        return _pairwise_candidates(session, project, n)
    table = _reads(session, project)
    latest = _latest_labels(session, project)
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

    Affected: items whose current consensus is one of ``classes`` (multi-label and geometric:
    names one of them) or on which any read named one of them, plus the items named in
    ``items`` (external ids). Their current consensus is superseded (a ``requeued`` row, so
    releases leave them out until read again), their reads and decisions stay in the record
    but no longer count, and fresh slots are made under the current policy. Returns the
    external ids re-queued.

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
        named = set(classes)
        if _shape(session, project) in PAIRWISE_SHAPES:
            table = _payload_reads(session, project)
            wanted |= {int(i) for i, payload in zip(table["item_id"], table["payload"],
                                                    strict=True)
                       if named & set(named_classes(payload))}
        else:
            reads = _reads(session, project)
            wanted |= {int(i) for i in reads.loc[reads["label"].isin(classes), "item"]}
        latest = _latest_labels(session, project)
        wanted |= {i for i, label in latest.items() if named & set(named_classes(label))}
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


#: How :func:`cost_report` counts items in its class rows: by their one final class
#: (single-label and ordinal schemas), or in every class present in the final label
#: (multi-label and geometric schemas: an item may count in several rows).
FINAL_CLASS, EACH_CLASS_PRESENT = "final_class", "each_class_present"
#: The class row of items whose final label names no class (no object, an empty label set).
NO_CLASS = "(no class)"
COST_COLUMNS = ["items", "labels_per_item", "minutes_per_item", "est_accuracy", "adjudicated"]


class CostReport(TypedDict):
    """What :func:`cost_report` returns."""

    by_policy: pd.DataFrame
    by_class: pd.DataFrame
    known_answer: pd.DataFrame
    class_counting: str


def _final_classes(label: Mapping[str, Any] | None, shape: str) -> list[str]:
    """The classes an item counts in: its final class, or every distinct class of its
    objects (without the minority) or its label set; ``[NO_CLASS]`` when it names none."""
    label = label or {}
    if shape == "single":
        named = [str(label["label"])] if label.get("label") is not None else []
    else:
        named = list(dict.fromkeys(named_classes(
            {k: v for k, v in label.items() if k != "minority"})))
    return named or [NO_CLASS]


def cost_report(session: Session, project: Project) -> CostReport:
    """Cost and estimated quality of the finished items, ``by_policy`` and ``by_class``.

    Columns: ``items``, ``labels_per_item`` (reads, reviews and adjudications),
    ``minutes_per_item`` (reader time recorded with each submit), ``est_accuracy`` and
    ``adjudicated`` (share); ``by_class`` adds ``in_other_classes``.

    - Per policy version, every finished item counts once; ``est_accuracy`` is the mean
      confidence the workflow stored with the final label (single-label: the posterior of the
      final class; multi-label: the certainty of its least certain class; box, polygon: the
      mean pairwise matched F1 of the reads; mask: their mean Dice); an adjudicated or reviewed
      label counts as 1.0, a label stored without a confidence as 1.0.
    - Per class (``class_counting``): on single-label and ordinal projects an item counts in
      its final class (:data:`FINAL_CLASS`). On multi-label and geometric projects it counts in
      **every** class present in its final label — its objects' classes (the minority left
      out) or its set of labels — (:data:`EACH_CLASS_PRESENT`), and in :data:`NO_CLASS` when it
      names none; so the class rows may add up to more items than the policy rows.
      ``in_other_classes`` is how many of a row's items count in another class row too. An
      item's labels and minutes count whole in each of its classes. ``est_accuracy`` per class:
      multi-label, the posterior probability that the class is present (stored with the
      consensus); geometric, the item's mean pairwise F1 / Dice; expert labels 1.0.

    Rows of ``by_class`` follow the schema's class order (classes no longer in the schema
    after them, then :data:`NO_CLASS`). ``known_answer`` gives the reads spent on gold and
    calibration items.
    """
    shape = _shape(session, project)
    outcomes = pd.DataFrame(session.execute(
        select(TaskOutcome.item_id, TaskOutcome.outcome, TaskOutcome.policy_version,
               TaskOutcome.time_spent_s).where(TaskOutcome.project_id == project.id)).all(),
        columns=["item_id", "outcome", "policy_version", "time_spent_s"])
    known = outcomes["outcome"].isin(["gold", "calibration"])
    overhead = pd.DataFrame({
        "reads": [int(known.sum())],
        "minutes": [float(outcomes.loc[known, "time_spent_s"].fillna(0).sum() / 60)],
    })
    counting = FINAL_CLASS if shape == "single" else EACH_CLASS_PRESENT
    work = outcomes[~known]
    latest = pd.DataFrame(session.execute(
        select(Consensus.item_id, Consensus.label, Consensus.method, Consensus.confidence,
               Consensus.posterior, Consensus.status).where(Consensus.id.in_(
                   Consensus.latest_ids(project.id)))).all(),
        columns=["item_id", "label", "method", "confidence", "posterior", "status"])
    latest = latest[latest["status"] == "final"]
    names: dict[int, dict[str, Any]] = dict(session.execute(
        select(PolicyVersion.version, PolicyVersion.definition).where(
        PolicyVersion.project_id == project.id)).all())
    per_item = work.groupby("item_id").agg(
        labels=("outcome", "size"), minutes=("time_spent_s", lambda s: s.fillna(0).sum() / 60),
        policy_version=("policy_version", "max"))
    frame = latest.set_index("item_id").join(per_item, how="inner")
    if frame.empty:
        empty = pd.DataFrame(columns=COST_COLUMNS)
        return {"by_policy": empty,
                "by_class": pd.DataFrame(columns=[*COST_COLUMNS, "in_other_classes"]),
                "known_answer": overhead, "class_counting": counting}
    expert = frame["method"].isin([ADJUDICATION_SOURCE, "review"])
    frame["expert"] = expert
    frame["est"] = np.where(expert, 1.0, frame["confidence"].astype(float).fillna(1.0))
    frame["adjudicated"] = frame["method"] == ADJUDICATION_SOURCE
    frame["policy"] = frame["policy_version"].map(
        lambda v: f"{(names.get(int(v)) or {}).get('name', 'default')} v{int(v)}"
        if pd.notna(v) and int(v) in names else "default v0")
    by_policy = frame.groupby("policy").agg(
        items=("labels", "size"), labels_per_item=("labels", "mean"),
        minutes_per_item=("minutes", "mean"), est_accuracy=("est", "mean"),
        adjudicated=("adjudicated", "mean"))

    rows = []
    for record in frame.itertuples():
        classes = _final_classes(record.label, shape)
        posterior = dict(record.posterior or {})
        for cls in classes:
            est = float(record.est)
            if shape == "multi" and not record.expert and cls in posterior:
                est = float(posterior[cls])  # P(present) of a class in the final label set
            rows.append({"class": cls, "labels": record.labels, "minutes": record.minutes,
                         "est": est, "adjudicated": record.adjudicated,
                         "shared": len(classes) > 1})
    by_class = pd.DataFrame(rows).groupby("class").agg(
        items=("labels", "size"), labels_per_item=("labels", "mean"),
        minutes_per_item=("minutes", "mean"), est_accuracy=("est", "mean"),
        adjudicated=("adjudicated", "mean"), in_other_classes=("shared", "sum"))
    by_class["in_other_classes"] = by_class["in_other_classes"].astype(int)
    schema_order = list(rules(session, project).schema.class_names)
    order = ([c for c in schema_order if c in by_class.index]
             + sorted(c for c in by_class.index if c not in schema_order and c != NO_CLASS)
             + ([NO_CLASS] if NO_CLASS in by_class.index else []))
    return {"by_policy": by_policy, "by_class": by_class.loc[order],
            "known_answer": overhead, "class_counting": counting}


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
