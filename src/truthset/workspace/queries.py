"""Read-only summaries of a workspace."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset.store.models import Annotation, Item, LabelSchemaVersion, Project


@dataclass(frozen=True)
class ProjectOverview:
    """One line of ``truthset project list``."""

    key: str
    name: str
    n_items: int
    n_annotations: int
    schema_version: int


def project_overview(session: Session) -> list[ProjectOverview]:
    """Every project with its item and annotation counts and current schema version."""
    items = (
        select(Item.project_id, func.count().label("n")).group_by(Item.project_id).subquery()
    )
    notes = (
        select(Annotation.project_id, func.count().label("n"))
        .group_by(Annotation.project_id)
        .subquery()
    )
    schema = (
        select(LabelSchemaVersion.project_id, func.max(LabelSchemaVersion.version).label("v"))
        .group_by(LabelSchemaVersion.project_id)
        .subquery()
    )
    rows = session.execute(
        select(Project.key, Project.name, items.c.n, notes.c.n, schema.c.v)
        .outerjoin(items, items.c.project_id == Project.id)
        .outerjoin(notes, notes.c.project_id == Project.id)
        .outerjoin(schema, schema.c.project_id == Project.id)
        .order_by(Project.key)
    ).all()
    return [ProjectOverview(k, n, i or 0, a or 0, v or 0) for k, n, i, a, v in rows]
