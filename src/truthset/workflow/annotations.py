"""Recording annotations (immutable revisions) and reading each reader's current label."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from truthset.domain.errors import InputError
from truthset.domain.schema import SchemaKind
from truthset.quality.shapes import parse_objects
from truthset.store.models import Annotation, Item, Project, User
from truthset.workflow.acceptance import record_read
from truthset.workspace.projects import rules


def record_annotation(
    session: Session,
    project: Project,
    *,
    item: Item,
    author: User | None,
    payload: dict[str, Any],
    time_spent_s: float | None = None,
    task_id: int | None = None,
    parent: Annotation | None = None,
    model: tuple[str, str] | None = None,
) -> Annotation:
    """Store one annotation revision after checking it against the current schema.

    The schema and guideline versions in force are recorded with it. ``model`` is
    ``(name, version)`` for a machine draft (then ``author`` may be ``None``). A human read of
    an item a model drafted before records the draft's outcome and may pause drafting of a
    class, in the same transaction (:func:`truthset.workflow.acceptance.record_read`). The
    objects of a geometric payload must be well formed
    (:func:`truthset.quality.shapes.parse_objects`); whether they lie inside the image is
    checked by the task services and again by the release checks.

    Raises
    ------
    InputError
        The item is not in the project, or the payload does not fit (the field is named).
    """
    if item.project_id != project.id:
        raise InputError(f"item {item.external_id!r} is not in project {project.key!r}",
                         field="item")
    if author is None and model is None:
        raise InputError("an annotation needs a human author or a model", field="author")
    current = rules(session, project)
    clean = current.schema.validate_payload(payload)
    if current.schema.kind in (SchemaKind.BOX, SchemaKind.POLYGON, SchemaKind.MASK):
        parse_objects(clean)  # well formed; the task services also check the image bounds
    row = Annotation(
        project_id=project.id,
        item_id=item.id,
        task_id=task_id,
        author_id=author.id if author else None,
        source="model" if model else "human",
        model_name=model[0] if model else None,
        model_version=model[1] if model else None,
        payload=clean,
        schema_version=current.schema_version,
        guideline_version=current.guideline_version,
        time_spent_s=time_spent_s,
        parent_id=parent.id if parent else None,
    )
    session.add(row)
    session.flush()
    if model is None:
        record_read(session, project, row)
    return row


@dataclass(frozen=True)
class LabelRow:
    """One reader's current classification of one item."""

    annotation_id: int
    item: str
    annotator: str
    label: str
    created_at: Any
    schema_version: int
    guideline_version: int | None


def _current_rows(session: Session, project: Project,
                  authors: Collection[int] | None = None) -> list[Any]:
    """Every human reader's current revisions (not superseded by a child), oldest first; only
    those of ``authors`` (user ids) when given."""
    child = aliased(Annotation)
    stmt = (
        select(
            Annotation.id,
            Item.external_id,
            User.username,
            Annotation.payload,
            Annotation.created_at,
            Annotation.schema_version,
            Annotation.guideline_version,
        )
        .join(Item, Item.id == Annotation.item_id)
        .join(User, User.id == Annotation.author_id)
        .outerjoin(child, child.parent_id == Annotation.id)
        .where(Annotation.project_id == project.id, Annotation.source == "human",
               child.id.is_(None))
        .order_by(Annotation.id)
    )
    if authors is not None:
        stmt = stmt.where(Annotation.author_id.in_(list(authors)))
    return list(session.execute(stmt).all())


def current_labels(session: Session, project: Project, *,
                   authors: Collection[int] | None = None) -> pd.DataFrame:
    """The long table of every human reader's *latest* revision per item (single/ordinal
    classification): columns ``annotation_id, item, annotator, label, created_at,
    schema_version, guideline_version``; only the readers ``authors`` (user ids) when given.

    A revision that has been superseded by a child revision is left out; model drafts are
    left out (they are not reads).
    """
    frame = pd.DataFrame(
        [(a, i, u, p.get("label"), c, s, g) for a, i, u, p, c, s, g in
         _current_rows(session, project, authors)],
        columns=["annotation_id", "item", "annotator", "label", "created_at", "schema_version",
                 "guideline_version"],
    )
    # The same reader may have labelled an item twice without revising: keep the latest.
    return frame.drop_duplicates(["item", "annotator"], keep="last").reset_index(drop=True)


def current_payloads(session: Session, project: Project, *,
                     authors: Collection[int] | None = None) -> pd.DataFrame:
    """As :func:`current_labels` but with the whole ``payload`` of each read instead of its
    ``label`` (multi-label and geometric schemas): columns ``annotation_id, item, annotator,
    payload``."""
    frame = pd.DataFrame(
        [(a, i, u, p) for a, i, u, p, *_rest in _current_rows(session, project, authors)],
        columns=["annotation_id", "item", "annotator", "payload"],
    )
    return frame.drop_duplicates(["item", "annotator"], keep="last").reset_index(drop=True)
