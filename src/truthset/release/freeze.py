"""Reading each item's final label and the full story behind it from the database.

The final label of an item, in order of precedence (the same order the workflow engine decides
in):

1. an **adjudication**: the latest current annotation made on an ``adjudicate`` task;
2. a **review**: the latest review of one of the item's annotations — ``accept`` keeps the
   reviewed label, ``correct`` takes the corrected revision, anything else (reject, escalate)
   leaves the item unresolved;
3. the latest **consensus** row, when its status is ``final``.

An item with an open escalation and no adjudication, a consensus that is not final, or none of
the above is *unresolved*; an item whose status is not ``active`` is *quarantined*. Works on
projects with no reviews, escalations or tasks at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.store.models import (
    Annotation,
    Consensus,
    Escalation,
    Item,
    Project,
    Review,
    Task,
    User,
)

#: Item statuses that keep an item out of every release.
ACTIVE = "active"


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive times, which Truthset always writes in UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class FrozenItem:
    """One item as the release sees it."""

    item_id: int
    external_id: str
    status: str
    final_label: dict[str, Any] | None
    label_source: str
    unresolved: str
    subgroups: dict[str, Any]
    size: tuple[int, int] | None
    provenance: dict[str, Any] = field(default_factory=dict)


def _read(a: Annotation, names: dict[int, str]) -> dict[str, Any]:
    return {
        "annotation_id": a.id,
        "reader": names.get(a.author_id) if a.author_id is not None else None,
        "source": a.source,
        "model": f"{a.model_name}@{a.model_version}" if a.model_name else None,
        "label": core_label(a.payload),
        "created_at": iso_utc(a.created_at),
        "schema_version": a.schema_version,
        "guideline_version": a.guideline_version,
        "time_spent_s": a.time_spent_s,
    }


#: Payload keys that annotate a label rather than being part of it (``minority``: the findings
#: of a geometric consensus seen by too few readers to be part of its label).
_ANNOTATING_KEYS = frozenset({"reason", "confidence", "probabilities", "comment", "minority"})
#: Consensus methods the workflow queue writes for labels not reached by aggregation.
_SOURCES = {"adjudication": "adjudicated", "review": "reviewed", "single": "single read"}


def core_label(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The label itself, without the notes a payload may carry (an adjudicator's reason, a
    model's confidence)."""
    if payload is None:
        return None
    if "objects" not in payload and "value" not in payload:
        if "label" in payload:
            return {"label": payload["label"]}
        if "labels" in payload:
            return {"labels": payload["labels"]}
    return {k: v for k, v in payload.items() if k not in _ANNOTATING_KEYS}


def _has_label(label: dict[str, Any] | None) -> bool:
    """Whether a consensus label holds an answer: a class, a list of classes (multi-label),
    objects (geometric; an empty list is the answer "nothing to mark") or a value."""
    label = label or {}
    return label.get("label") is not None or isinstance(label.get("labels"), list) or (
        isinstance(label.get("objects"), list)) or label.get("value") is not None


def _size(item: Item) -> tuple[int, int] | None:
    """(width, height) of the item's images: raster ``width``/``height`` or DICOM
    ``columns``/``rows``."""
    for media in item.media or []:
        if isinstance(media, dict) and media.get("width") and media.get("height"):
            return int(media["width"]), int(media["height"])
        if isinstance(media, dict) and media.get("columns") and media.get("rows"):
            return int(media["columns"]), int(media["rows"])
    return None


def collect(session: Session, project: Project) -> list[FrozenItem]:
    """Every item of ``project`` with its final label (or why it has none) and provenance,
    ordered by external id."""
    pid = project.id
    names = {int(i): str(n) for i, n in session.execute(select(User.id, User.username))}
    items = session.scalars(select(Item).where(Item.project_id == pid)).all()
    annotations = session.scalars(
        select(Annotation).where(Annotation.project_id == pid).order_by(Annotation.id)
    ).all()
    superseded = {a.parent_id for a in annotations if a.parent_id is not None}
    stage_of = {int(t): str(st) for t, st in session.execute(
        select(Task.id, Task.stage).where(Task.project_id == pid))}
    by_item: dict[int, list[Annotation]] = defaultdict(list)
    by_id: dict[int, Annotation] = {}
    for a in annotations:
        by_item[a.item_id].append(a)
        by_id[a.id] = a
    reviews: dict[int, list[Review]] = defaultdict(list)
    for r in session.scalars(select(Review).where(Review.project_id == pid).order_by(Review.id)):
        target = by_id.get(r.annotation_id)
        if target is not None:
            reviews[target.item_id].append(r)
    escalations: dict[int, list[Escalation]] = defaultdict(list)
    for e in session.scalars(
            select(Escalation).where(Escalation.project_id == pid).order_by(Escalation.id)):
        escalations[e.item_id].append(e)
    consensus: dict[int, Consensus] = {}
    for c in session.scalars(
            select(Consensus).where(Consensus.project_id == pid).order_by(Consensus.id)):
        consensus[c.item_id] = c
    out = []
    for item in sorted(items, key=lambda i: i.external_id):
        out.append(_freeze_item(item, by_item[item.id], superseded, stage_of, reviews[item.id],
                                escalations[item.id], consensus.get(item.id), by_id, names))
    return out


def _freeze_item(
    item: Item, annotations: list[Annotation], superseded: set[int],
    stage_of: dict[int, str], reviews: list[Review], escalations: list[Escalation],
    cons: Consensus | None, by_id: dict[int, Annotation], names: dict[int, str],
) -> FrozenItem:
    current = [a for a in annotations if a.id not in superseded]
    adjudications = [a for a in current if a.source == "adjudication" or (
        a.task_id is not None and stage_of.get(a.task_id) == "adjudicate")]
    reads = [a for a in current if a not in adjudications]
    # One read per reader: their latest current label of the item (as consensus counts it).
    latest: dict[int | None, Annotation] = {}
    for a in reads:
        if a.source == "human":
            latest[a.author_id] = a
    human = sorted(latest.values(), key=lambda a: a.id)
    drafts = [a for a in reads if a.source == "model"]
    prov: dict[str, Any] = {
        "reads": [_read(a, names) for a in human],
        "reviews": [
            {"review_id": r.id, "reviewer": names.get(r.reviewer_id), "decision": r.decision,
             "comment": r.comment, "annotation_id": r.annotation_id,
             "corrected_annotation_id": r.corrected_annotation_id,
             "created_at": iso_utc(r.created_at)}
            for r in reviews
        ],
        "escalations": [
            {"escalation_id": e.id, "from_tier": e.from_tier, "to_tier": e.to_tier,
             "reason": e.reason, "status": e.status, "created_at": iso_utc(e.created_at)}
            for e in escalations
        ],
        "adjudication": None,
        "consensus": None,
        "prelabel": None,
    }
    if cons is not None:
        prov["consensus"] = {
            "consensus_id": cons.id, "method": cons.method, "parameters": cons.parameters,
            "label": cons.label, "posterior": cons.posterior, "confidence": cons.confidence,
            "agreement": cons.agreement, "status": cons.status,
            "input_annotation_ids": list(cons.input_annotation_ids),
            "created_at": iso_utc(cons.created_at),
        }
    if drafts:
        draft = drafts[-1]
        prov["prelabel"] = {"annotation_id": draft.id, "model": draft.model_name,
                            "version": draft.model_version, "label": core_label(draft.payload)}
    final: dict[str, Any] | None = None
    source = ""
    unresolved = ""
    open_escalations = [e for e in escalations if e.status == "open"]
    if adjudications:
        adj = adjudications[-1]
        reason = str((adj.payload or {}).get("reason") or "") or (
            escalations[-1].reason if escalations else "")
        prov["adjudication"] = {**_read(adj, names), "adjudicator": names.get(adj.author_id)
                                if adj.author_id is not None else None, "reason": reason}
        prov["adjudication"]["label"] = core_label(adj.payload)
        final, source = core_label(adj.payload), "adjudicated"
    elif open_escalations:
        unresolved = f"escalated to tier {open_escalations[-1].to_tier}, awaiting adjudication"
    elif reviews:
        last = reviews[-1]
        if last.decision in ("accept", "accepted"):
            final, source = core_label(by_id[last.annotation_id].payload), "reviewed"
        elif last.decision in ("correct", "corrected") and last.corrected_annotation_id in by_id:
            final, source = core_label(by_id[last.corrected_annotation_id].payload), "reviewed"
        else:
            unresolved = f"review decision {last.decision!r} leaves no final label"
    elif cons is not None:
        if cons.status == "final" and _has_label(cons.label):
            final, source = core_label(cons.label), _SOURCES.get(cons.method, "consensus")
        else:
            unresolved = f"consensus {cons.status}"
    else:
        unresolved = "no consensus, review or adjudication yet"
    if prov["prelabel"] is not None and final is not None:
        prov["prelabel"]["accepted"] = prov["prelabel"]["label"] == final
    versions = [r for r in prov["reads"]] + ([prov["adjudication"]] if prov["adjudication"] else [])
    prov["schema_versions"] = sorted({r["schema_version"] for r in versions})
    prov["guideline_versions"] = sorted({r["guideline_version"] for r in versions
                                         if r["guideline_version"] is not None})
    subgroups = {
        "patient": item.patient_pseudonym, "site": item.site, "manufacturer": item.manufacturer,
        "sex": item.sex, "age_band": item.age_band, "modality": item.modality,
        "body_part": item.body_part,
    }
    return FrozenItem(item.id, item.external_id, item.status, final, source, unresolved,
                      subgroups, _size(item), prov)
