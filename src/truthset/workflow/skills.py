"""The readers' skill figures an adjudicator sees beside each label of an item.

For each reader of the item under adjudication — and nobody else — :func:`reader_skills`
gives three figures:

- ``gold``: their record on known-answer items, gold and calibration together: how many they
  read and their mean score (single-label: accuracy), the figures
  :func:`truthset.workflow.readers.reader_stats` gives managers, without the rest of them;
- ``consensus``: how their current label (:func:`truthset.workflow.annotations.current_labels`)
  matches the final consensus of the *other* items they read. Single and ordinal
  classification: the share of those items whose consensus is their label, as
  :func:`truthset.workflow.monitoring.readers_against_consensus` counts it (``percent``);
  multi-label: the share whose consensus is exactly their set of classes (``exact``); boxes and
  polygons: the mean matched F1 of their objects against the consensus objects at the policy's
  ``iou_threshold`` (``f1``); masks: the mean Dice per image and class (``dice``) — the same
  pair figures the workflow's agreement uses (:mod:`truthset.workflow.geometric`), over their
  latest :data:`GEOMETRIC_LIMIT` such items;
- ``method``: what the consensus method fitted on the project says of them (its per-reader
  ``skill`` and, for Dawid–Skene, the diagonal of their confusion matrix), when the item's
  latest consensus row holds it (``parameters.reader_parameters``, written by
  :func:`truthset.workflow.consensus.compute_consensus`).

Only the item's readers' rows are read. :mod:`truthset.workflow.queue` attaches the figures to
adjudication task views only: an annotate or review task never shows another reader's record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.domain.policy import Policy
from truthset.quality.shapes import ImageBounds
from truthset.store.models import Consensus, Item, Project, User
from truthset.workflow.annotations import current_labels, current_payloads
from truthset.workflow.engine import named_classes, schema_shape
from truthset.workflow.geometric import geometric_consensus
from truthset.workflow.monitoring import final_labels, final_payloads
from truthset.workflow.policies import current_policy
from truthset.workflow.readers import known_answer_reads, score_reads, scoring_for
from truthset.workspace.projects import rules

#: Geometric schemas: a reader's agreement with the consensus is taken over their latest this
#: many items with a final consensus (each comparison fuses two reads, so the cost is bounded).
GEOMETRIC_LIMIT = 50
#: The agreement figure per schema shape.
METRICS = {"single": "percent", "multi": "exact", "box": "f1", "polygon": "f1", "mask": "dice"}
_FINAL = "\x00final"  # the consensus as the second "reader" of a pair (no user has this name)


@dataclass(frozen=True)
class ReaderSkill:
    """One reader's figures (see the module notes).

    ``agreed`` counts the compared items whose consensus is the reader's label (classification
    and multi-label; ``None`` for geometric schemas, whose figure is a mean overlap).
    """

    reader: str
    gold_reads: int
    gold_accuracy: float | None
    metric: str
    compared: int
    agreed: int | None
    agreement: float | None
    method: str | None = None
    method_skill: float | None = None
    method_diagonal: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form an adjudication task carries as each read's ``skill``."""
        method = None if self.method is None else {
            "method": self.method, "skill": self.method_skill,
            "diagonal": self.method_diagonal}
        return {"gold": {"reads": self.gold_reads, "accuracy": self.gold_accuracy},
                "consensus": {"metric": self.metric, "items": self.compared,
                              "agreed": self.agreed, "agreement": self.agreement},
                "method": method}


def reader_skills(session: Session, project: Project, item: Item,
                  readers: Sequence[str]) -> dict[str, ReaderSkill]:
    """The figures of each of ``readers`` (user names; the readers of ``item``) in
    ``project``; ``item`` itself is left out of the agreement with the consensus. Unknown
    names are left out of the answer."""
    users = list(session.scalars(select(User).where(User.username.in_(sorted(set(readers))))
                                 .order_by(User.username)))
    if not users:
        return {}
    ids = [u.id for u in users]
    shape = schema_shape(rules(session, project).schema)
    if shape == "single":
        against = _against_labels(session, project, item, ids)
    elif shape == "multi":
        against = _against_sets(session, project, item, ids)
    else:
        against = _against_objects(session, project, item, ids, shape,
                                   current_policy(session, project).policy)
    method, fitted = _method_parameters(session, item)
    scoring = scoring_for(session, project)
    out: dict[str, ReaderSkill] = {}
    for user in users:
        scores, _per_class = score_reads(session, known_answer_reads(session, project, user),
                                         scoring)
        compared, agreed, agreement = against.get(user.username, (0, None, None))
        entry = fitted.get(user.username)
        out[user.username] = ReaderSkill(
            reader=user.username, gold_reads=len(scores),
            gold_accuracy=float(scores.mean()) if len(scores) else None,
            metric=METRICS[shape], compared=compared,
            agreed=agreed if shape in ("single", "multi") else None, agreement=agreement,
            method=method if entry is not None else None,
            method_skill=_number(entry.get("skill")) if entry is not None else None,
            method_diagonal=({str(c): float(v) for c, v in entry["diagonal"].items()}
                             if entry is not None and isinstance(entry.get("diagonal"), Mapping)
                             else None))
    return out


Against = dict[str, tuple[int, int | None, float | None]]  # reader -> compared, agreed, figure


def _share(compared: int, agreed: int) -> tuple[int, int | None, float | None]:
    return compared, agreed, (agreed / compared if compared else None)


def _against_labels(session: Session, project: Project, item: Item,
                    ids: list[int]) -> Against:
    """Single/ordinal classification: items whose final consensus is the reader's label."""
    table = current_labels(session, project, authors=ids)
    table = table[table["label"].notna() & (table["item"] != item.external_id)]
    truth = final_labels(session, project, authors=ids)
    out: Against = {}
    for reader, mine in table.groupby("annotator"):
        said = mine[mine["item"].isin(truth)]
        agreed = sum(int(str(lab) == truth[i]) for i, lab in zip(said["item"], said["label"],
                                                                 strict=True))
        out[str(reader)] = _share(len(said), agreed)
    return out


def _against_sets(session: Session, project: Project, item: Item, ids: list[int]) -> Against:
    """Multi-label: items whose final consensus is exactly the reader's set of classes."""
    table = current_payloads(session, project, authors=ids)
    table = table[table["item"] != item.external_id]
    truth = {i: set(named_classes(p)) for i, p in
             final_payloads(session, project, authors=ids).items()
             if isinstance(p.get("labels"), list)}
    out: Against = {}
    for reader, mine in table.groupby("annotator"):
        said = mine[mine["item"].isin(truth)]
        agreed = sum(int(set(named_classes(p)) == truth[i])
                     for i, p in zip(said["item"], said["payload"], strict=True))
        out[str(reader)] = _share(len(said), agreed)
    return out


def _against_objects(session: Session, project: Project, item: Item, ids: list[int],
                     shape: str, policy: Policy) -> Against:
    """Boxes, polygons, masks: the mean pair figure (matched F1 or Dice) of the reader's
    objects against the consensus objects, over their latest :data:`GEOMETRIC_LIMIT` items."""
    table = current_payloads(session, project, authors=ids)
    truth = {i: p for i, p in final_payloads(session, project, authors=ids).items()
             if isinstance(p.get("objects"), list)}
    table = table[(table["item"] != item.external_id) & table["item"].isin(truth)]
    chosen = table.groupby("annotator", group_keys=False).tail(GEOMETRIC_LIMIT)
    media: dict[str, Any] = dict(session.execute(select(Item.external_id, Item.media).where(
        Item.project_id == project.id,
        Item.external_id.in_(sorted(set(chosen["item"]))))).all()) if len(chosen) else {}
    out: Against = {}
    for reader, mine in chosen.groupby("annotator"):
        figures = []
        for external, payload in zip(mine["item"], mine["payload"], strict=True):
            try:
                fused = geometric_consensus(
                    shape, [(str(reader), payload), (_FINAL, truth[external])],
                    iou_threshold=policy.iou_threshold, min_support=policy.min_support,
                    mask_method="vote", bounds=ImageBounds.from_media(media.get(external)))
            except InputError:  # a payload the image no longer fits: not comparable
                continue
            figures.append(fused.pairs[0][2])
        out[str(reader)] = (len(figures), None,
                            float(np.mean(figures)) if figures else None)
    return out


def _method_parameters(session: Session, item: Item) -> tuple[str | None,
                                                               dict[str, dict[str, Any]]]:
    """The method of the item's latest consensus row and what it says of each reader."""
    row = session.scalar(select(Consensus).where(Consensus.item_id == item.id)
                         .order_by(Consensus.id.desc()).limit(1))
    fitted = (row.parameters or {}).get("reader_parameters") if row is not None else None
    if row is None or not isinstance(fitted, Mapping):
        return None, {}
    return row.method, {str(r): dict(v) for r, v in fitted.items() if isinstance(v, Mapping)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not pd.isna(value) else None
