"""Lookups and formatting shared by the routes (no business rules here)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from truthset.api.deps import Ctx
from truthset.api.models import AnnotationOut, ItemOut, MediaOut, ProjectOut
from truthset.api.util import DEFAULT_LIMIT, MAX_LIMIT
from truthset.auth import policy
from truthset.domain.roles import Role
from truthset.store.db import Session
from truthset.store.models import Annotation, Item, Project
from truthset.workspace.projects import (
    get_project,
    latest_guideline_version,
    latest_schema_version,
)

PREFIX = "/api/v1"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the "
                                                                  "previous page.")]
DEFAULT_PAGE = DEFAULT_LIMIT

#: Project keys in paths: the same shape projects are created with.
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def load_project(ctx: Ctx, key: str, action: policy.Action) -> tuple[Project, frozenset[Role]]:
    """The project ``key`` after checking that the caller may do ``action`` in it."""
    project = get_project(ctx.session, key)
    held = policy.authorize(ctx.session, ctx.principal, action, project.id)
    return project, held


def project_out(session: Session, project: Project) -> ProjectOut:
    """A project with its current schema and guideline versions."""
    return ProjectOut(
        id=project.id, key=project.key, name=project.name, description=project.description,
        schema_version=latest_schema_version(session, project),
        guideline_version=latest_guideline_version(session, project),
        created_at=project.created_at,
    )


def item_out(item: Item) -> ItemOut:
    """An item without its patient pseudonym."""
    media = [
        MediaOut(index=k, sha256=str(m.get("sha256", "")),
                 media_type=str(m.get("media_type", "application/octet-stream")),
                 name=m.get("name"), width=m.get("width"), height=m.get("height"),
                 sop_instance_uid=_text(m.get("sop_instance_uid")),
                 frames=m.get("frames") if isinstance(m.get("frames"), int) else None)
        for k, m in enumerate(item.media or [])
        if isinstance(m, dict)
    ]
    attributes = item.attributes if isinstance(item.attributes, dict) else {}
    return ItemOut(
        id=item.id, external_id=item.external_id, kind=item.kind, status=item.status,
        modality=item.modality, body_part=item.body_part, site=item.site,
        manufacturer=item.manufacturer, age_band=item.age_band, sex=item.sex, media=media,
        study_instance_uid=_text(attributes.get("study_instance_uid")),
        series_instance_uid=_text(attributes.get("series_instance_uid")),
        created_at=item.created_at,
    )


def _text(value: Any) -> str | None:
    """``value`` when it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def annotation_out(row: Annotation, names: dict[int, str]) -> AnnotationOut:
    """An annotation with its author's user name."""
    return AnnotationOut(
        id=row.id, item_id=row.item_id,
        author=names.get(row.author_id) if row.author_id is not None else None,
        source=row.source, payload=row.payload, schema_version=row.schema_version,
        guideline_version=row.guideline_version, parent_id=row.parent_id,
        time_spent_s=row.time_spent_s, created_at=row.created_at,
    )
