"""Active learning in the task queue: which items are worth a reader's time first.

:func:`item_priorities` reads, per item, the latest model draft's class probabilities
(``prelabel_drafts``) and the current readers' labels (every human reader's latest, not
superseded revision) and scores the item with the pure
:func:`truthset.quality.priority.task_priority` (model uncertainty mixed with reader
disagreement, in [0, 1]).

A project opts in with the policy field ``active_learning: {weight_model: 0.5, weight: 1.0}``
(off by default): :func:`truthset.workflow.queue.advance` then adds ``weight`` times the item's
score to the priority of the ``annotate`` slots it makes, and :func:`reprioritise` recomputes
the priority of the open ``annotate`` slots after a new model run.

This module lives in ``workflow/`` (not ``prelabel/``) so that the queue can use it without the
workflow importing the prelabel service; ``prelabel.review.item_priorities`` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from truthset.quality.priority import task_priority
from truthset.store.models import Annotation, PrelabelDraft, Project

__all__ = ["NEUTRAL", "item_priorities"]

#: Score of an item with neither a draft's probabilities nor reads (see ``task_priority``).
NEUTRAL = 0.5


def item_priorities(session: Session, project: Project, *, weight_model: float = 0.5,
                    item_ids: Sequence[int] | None = None) -> dict[int, float]:
    """Active-learning priority in [0, 1] per item: the latest draft's uncertainty (entropy of
    its class probabilities) mixed with the current readers' disagreement.

    Only items with a draft's probabilities or reads are returned (others score
    :data:`NEUTRAL`); ``item_ids`` restricts the work to those items (one query each for drafts
    and reads, so it is cheap for one item).

    Raises
    ------
    InputError
        ``weight_model`` outside [0, 1], or a draft with invalid probabilities.
    """
    ids = None if item_ids is None else [int(i) for i in item_ids]
    if ids is not None and not ids:
        return {}
    drafts = select(PrelabelDraft.item_id, PrelabelDraft.probabilities).where(
        PrelabelDraft.project_id == project.id).order_by(PrelabelDraft.id)
    child = aliased(Annotation)
    reads = (select(Annotation.item_id, Annotation.author_id, Annotation.payload)
             .outerjoin(child, child.parent_id == Annotation.id)
             .where(Annotation.project_id == project.id, Annotation.source == "human",
                    child.id.is_(None))
             .order_by(Annotation.id))
    if ids is not None:
        drafts = drafts.where(PrelabelDraft.item_id.in_(ids))
        reads = reads.where(Annotation.item_id.in_(ids))
    latest: dict[int, dict[str, Any]] = {}
    for item_id, probs in session.execute(drafts):
        if probs:
            latest[int(item_id)] = probs
    # A reader who labelled an item twice without revising counts once (their latest).
    per_reader: dict[tuple[int, int | None], str] = {}
    for item_id, author_id, payload in session.execute(reads):
        label = (payload or {}).get("label")
        key = (int(item_id), author_id)
        per_reader.pop(key, None)
        if label is not None:
            per_reader[key] = str(label)
    votes: dict[int, list[str]] = {}
    for (item_id, _author), label in per_reader.items():
        votes.setdefault(item_id, []).append(label)
    wanted = set(latest) | set(votes)
    return {i: task_priority(latest.get(i), votes.get(i), weight_model=weight_model)
            for i in sorted(wanted)}
