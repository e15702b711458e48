"""Projects, their versioned label schemas and guidelines."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.domain.schema import LabelSchema, parse_schema
from truthset.domain.settings import imaging_settings
from truthset.store.models import GuidelineVersion, LabelSchemaVersion, Membership, Project
from truthset.store.pages import Page, paginate

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ProjectRules:
    """The schema and guideline in force for a project, with their versions."""

    project: Project
    schema: LabelSchema
    schema_version: int
    guideline_version: int | None


def create_project(
    session: Session,
    *,
    key: str,
    name: str,
    schema_text: str,
    schema_source: str | None = None,
    guideline_text: str | None = None,
    description: str = "",
    imaging: dict[str, Any] | None = None,
) -> Project:
    """Create a project with version 1 of its schema (and guideline, when given).

    ``imaging`` holds the project's imaging settings (see
    :class:`truthset.domain.settings.ImagingSettings`: ``dicom_item`` series/instance,
    ``deid`` options and private safelist); they are validated and stored in
    ``settings["imaging"]``.

    Raises
    ------
    InputError
        ``key`` is not a short lowercase slug, the schema is invalid (line and field named),
        or an imaging setting is invalid (field named).
    ConflictError
        A project with this key exists.
    """
    if not _KEY.match(key):
        raise InputError(
            "project key must be 1–64 characters of a-z, 0-9, '-' or '_', starting with a "
            "letter or digit",
            field="key",
        )
    schema = parse_schema(schema_text, source=schema_source)
    settings: dict[str, Any] = {}
    if imaging is not None:
        settings["imaging"] = imaging_settings({"imaging": imaging}).model_dump(mode="json")
    if session.scalar(select(Project.id).where(Project.key == key)) is not None:
        raise ConflictError(f"field 'key': a project with key {key!r} already exists")
    project = Project(key=key, name=name or key, description=description, settings=settings)
    session.add(project)
    session.flush()
    session.add(
        LabelSchemaVersion(
            project_id=project.id, version=1, source_text=schema_text, definition=schema.to_dict()
        )
    )
    if guideline_text is not None:
        session.add(
            GuidelineVersion(
                project_id=project.id, version=1, body=guideline_text, change_note="first version"
            )
        )
    session.flush()
    return project


def get_project(session: Session, key: str) -> Project:
    """The project with this key.

    Raises
    ------
    NotFoundError
        No such project.
    """
    project = session.scalar(select(Project).where(Project.key == key))
    if project is None:
        keys = session.scalars(select(Project.key).order_by(Project.key)).all()
        known = f"; projects here: {', '.join(keys)}" if keys else "; there are no projects yet"
        raise NotFoundError(f"no project with key {key!r}{known}")
    return project


def projects_page(
    session: Session, *, member_id: int | None, cursor: str | None, limit: int
) -> Page[Project]:
    """One page of projects in id order: those where user ``member_id`` holds a role, or every
    project when ``member_id`` is ``None`` (see :func:`truthset.store.pages.paginate`).

    Raises
    ------
    InputError
        ``cursor`` is not a cursor this server issued (field ``cursor``).
    """
    stmt = select(Project)
    if member_id is not None:
        stmt = stmt.where(Project.id.in_(
            select(Membership.project_id).where(Membership.user_id == member_id)))
    return paginate(session, stmt, Project.id, cursor=cursor, limit=limit)


def rules(session: Session, project: Project) -> ProjectRules:
    """The current (latest) schema and guideline of ``project``."""
    schema_row = session.scalars(
        select(LabelSchemaVersion)
        .where(LabelSchemaVersion.project_id == project.id)
        .order_by(LabelSchemaVersion.version.desc())
        .limit(1)
    ).one()
    return ProjectRules(
        project=project,
        schema=LabelSchema.model_validate(schema_row.definition),
        schema_version=schema_row.version,
        guideline_version=latest_guideline_version(session, project),
    )


def add_guideline_version(
    session: Session, project: Project, *, body: str, change_note: str
) -> GuidelineVersion:
    """Publish a new guideline version; ``change_note`` says what changed and is required."""
    if not change_note.strip():
        raise InputError("a new guideline version needs a change note", field="change_note")
    row = GuidelineVersion(
        project_id=project.id, version=(latest_guideline_version(session, project) or 0) + 1,
        body=body, change_note=change_note,
    )
    session.add(row)
    session.flush()
    return row


def add_schema_version(
    session: Session, project: Project, *, schema_text: str, source: str | None = None
) -> LabelSchemaVersion:
    """Publish a new schema version (validated first)."""
    schema = parse_schema(schema_text, source=source)
    row = LabelSchemaVersion(
        project_id=project.id,
        version=latest_schema_version(session, project) + 1,
        source_text=schema_text,
        definition=schema.to_dict(),
    )
    session.add(row)
    session.flush()
    return row


#: The two versioned documents of a project.
_Versioned = TypeVar("_Versioned", LabelSchemaVersion, GuidelineVersion)


def _latest(session: Session, model: type[_Versioned], project: Project) -> int | None:
    return session.scalar(select(func.max(model.version)).where(model.project_id == project.id))


def _versions(session: Session, model: type[_Versioned], project: Project) -> list[_Versioned]:
    return list(session.scalars(
        select(model).where(model.project_id == project.id).order_by(model.version)))


def _version(session: Session, model: type[_Versioned], project: Project, version: int,
             what: str) -> _Versioned:
    row = session.scalar(select(model).where(model.project_id == project.id,
                                             model.version == version))
    if row is None:
        raise NotFoundError(f"project {project.key!r} has no {what} version {version}")
    return row


def latest_schema_version(session: Session, project: Project) -> int:
    """The number of the current schema version of ``project`` (0 when it has none)."""
    return _latest(session, LabelSchemaVersion, project) or 0


def latest_guideline_version(session: Session, project: Project) -> int | None:
    """The number of the current guideline version of ``project`` (``None`` when it has
    none)."""
    return _latest(session, GuidelineVersion, project)


def schema_versions(session: Session, project: Project) -> list[LabelSchemaVersion]:
    """Every schema version of ``project``, oldest first."""
    return _versions(session, LabelSchemaVersion, project)


def get_schema_version(session: Session, project: Project, version: int) -> LabelSchemaVersion:
    """Schema version ``version`` of ``project``.

    Raises
    ------
    NotFoundError
        The project has no such version.
    """
    return _version(session, LabelSchemaVersion, project, version, "schema")


def guideline_versions(session: Session, project: Project) -> list[GuidelineVersion]:
    """Every guideline version of ``project``, oldest first."""
    return _versions(session, GuidelineVersion, project)


def get_guideline_version(session: Session, project: Project, version: int) -> GuidelineVersion:
    """Guideline version ``version`` of ``project``.

    Raises
    ------
    NotFoundError
        The project has no such version.
    """
    return _version(session, GuidelineVersion, project, version, "guideline")
