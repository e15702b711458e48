"""Projects, their members, schema versions and guideline versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response

from truthset.api.deps import CtxDep
from truthset.api.models import (
    GuidelineIn,
    GuidelineOut,
    MembershipOut,
    Page,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    SchemaIn,
    SchemaOut,
)
from truthset.api.routes.common import (
    KEY_PATTERN,
    PREFIX,
    Cursor,
    Limit,
    load_project,
    project_out,
)
from truthset.api.util import DEFAULT_LIMIT, check_if_match, etag_of
from truthset.auth import memberships, policy
from truthset.auth.policy import Action
from truthset.domain.roles import Role
from truthset.store.models import GuidelineVersion, LabelSchemaVersion, Project
from truthset.workspace import projects
from truthset.workspace.users import get_user

router = APIRouter(prefix=PREFIX + "/projects", tags=["projects"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
Version = Annotated[int, Path(ge=1, le=1_000_000)]
IfMatch = Annotated[str | None, Header()]
_PRECONDITIONS: dict[int | str, dict[str, Any]] = {412: {"description": "stale If-Match"},
                  428: {"description": "If-Match missing"}}


def _project_etag(project: Project) -> str:
    return etag_of({"name": project.name, "description": project.description})


@router.get("", response_model=Page[ProjectOut])
def list_projects(ctx: CtxDep, cursor: Cursor = None,
                  limit: Limit = DEFAULT_LIMIT) -> Page[ProjectOut]:
    """Projects you hold a role in (every project for administrators and auditors)."""
    sees_all = bool(policy.roles(ctx.session, ctx.principal, None))
    rows, nxt = projects.projects_page(
        ctx.session, member_id=None if sees_all else ctx.principal.user_id, cursor=cursor,
        limit=limit)
    return Page[ProjectOut](items=[project_out(ctx.session, p) for p in rows], next_cursor=nxt)


@router.post("", response_model=ProjectOut, status_code=201)
def new_project(body: ProjectIn, ctx: CtxDep) -> ProjectOut:
    """Create a project with its first schema (and guideline) version (administrators)."""
    policy.authorize(ctx.session, ctx.principal, Action.PROJECT_CREATE)
    project = projects.create_project(
        ctx.session, key=body.key, name=body.name, schema_text=body.schema_yaml,
        schema_source="schema_yaml", guideline_text=body.guideline, description=body.description)
    return project_out(ctx.session, project)


@router.get("/{key}", response_model=ProjectOut)
def read_project(key: Key, ctx: CtxDep, response: Response) -> ProjectOut:
    """One project; the ETag guards PATCH."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    response.headers["ETag"] = _project_etag(project)
    return project_out(ctx.session, project)


@router.patch("/{key}", response_model=ProjectOut, responses=_PRECONDITIONS)
def update_project(key: Key, body: ProjectPatch, ctx: CtxDep, response: Response,
                   if_match: IfMatch = None) -> ProjectOut:
    """Rename or redescribe a project; send ``If-Match`` with the ETag you read."""
    project, _ = load_project(ctx, key, Action.PROJECT_UPDATE)
    check_if_match(if_match, _project_etag(project))
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(project, name, value)
    ctx.session.flush()
    response.headers["ETag"] = _project_etag(project)
    return project_out(ctx.session, project)


# -- members -----------------------------------------------------------------------------------
@router.get("/{key}/members", response_model=list[MembershipOut], tags=["members"])
def list_members(key: Key, ctx: CtxDep) -> list[MembershipOut]:
    """Who holds which role in the project."""
    project, _ = load_project(ctx, key, Action.MEMBERS_READ)
    return [MembershipOut(project=project.key, username=u.username, role=m.role,
                          created_at=m.created_at)
            for u, m in memberships.members(ctx.session, project)]


@router.put("/{key}/members/{username}/{role}", response_model=MembershipOut, status_code=201,
            tags=["members"])
def add_member(key: Key, username: Annotated[str, Path(max_length=100)], role: Role,
               ctx: CtxDep) -> MembershipOut:
    """Give a user a role in the project (only administrators grant ``admin``)."""
    project, held = load_project(ctx, key, Action.MEMBERS_MANAGE)
    policy.check_grant(held, role)
    user = get_user(ctx.session, username)
    row = memberships.add_member(ctx.session, project, user, role.value)
    return MembershipOut(project=project.key, username=user.username, role=row.role,
                         created_at=row.created_at)


@router.delete("/{key}/members/{username}/{role}", status_code=204, tags=["members"])
def remove_member(key: Key, username: Annotated[str, Path(max_length=100)], role: Role,
                  ctx: CtxDep) -> None:
    """Take a role in the project away from a user."""
    project, held = load_project(ctx, key, Action.MEMBERS_MANAGE)
    policy.check_grant(held, role)
    memberships.remove_member(ctx.session, project, get_user(ctx.session, username), role.value)


# -- schemas -----------------------------------------------------------------------------------
def _version_etag(kind: str, version: int) -> str:
    return f'"{kind}-v{version}"'


def _schema_out(row: LabelSchemaVersion) -> SchemaOut:
    return SchemaOut(version=row.version, definition=row.definition,
                     source_text=row.source_text, created_at=row.created_at)


@router.get("/{key}/schemas", response_model=list[SchemaOut], tags=["schemas"])
def list_schemas(key: Key, ctx: CtxDep, response: Response) -> list[SchemaOut]:
    """Every schema version, oldest first; the ETag names the current one (for POST)."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    rows = projects.schema_versions(ctx.session, project)
    response.headers["ETag"] = _version_etag("schema", rows[-1].version if rows else 0)
    return [_schema_out(r) for r in rows]


@router.get("/{key}/schemas/{version}", response_model=SchemaOut, tags=["schemas"])
def read_schema(key: Key, version: Version, ctx: CtxDep) -> SchemaOut:
    """One schema version."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    return _schema_out(projects.get_schema_version(ctx.session, project, version))


@router.post("/{key}/schemas", response_model=SchemaOut, status_code=201, tags=["schemas"],
             responses=_PRECONDITIONS)
def new_schema(key: Key, body: SchemaIn, ctx: CtxDep, response: Response,
               if_match: IfMatch = None) -> SchemaOut:
    """Publish a new schema version; ``If-Match`` must name the current version's ETag."""
    project, _ = load_project(ctx, key, Action.SCHEMA_WRITE)
    check_if_match(if_match, _version_etag(
        "schema", projects.latest_schema_version(ctx.session, project)))
    row = projects.add_schema_version(ctx.session, project, schema_text=body.schema_yaml,
                                      source="schema_yaml")
    response.headers["ETag"] = _version_etag("schema", row.version)
    return _schema_out(row)


# -- guidelines --------------------------------------------------------------------------------
def _guideline_out(row: GuidelineVersion) -> GuidelineOut:
    return GuidelineOut(version=row.version, body=row.body, change_note=row.change_note,
                        created_at=row.created_at)


@router.get("/{key}/guidelines", response_model=list[GuidelineOut], tags=["guidelines"])
def list_guidelines(key: Key, ctx: CtxDep, response: Response) -> list[GuidelineOut]:
    """Every guideline version, oldest first; the ETag names the current one (for POST)."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    rows = projects.guideline_versions(ctx.session, project)
    response.headers["ETag"] = _version_etag("guideline", rows[-1].version if rows else 0)
    return [_guideline_out(r) for r in rows]


@router.get("/{key}/guidelines/{version}", response_model=GuidelineOut, tags=["guidelines"])
def read_guideline(key: Key, version: Version, ctx: CtxDep) -> GuidelineOut:
    """One guideline version."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    return _guideline_out(projects.get_guideline_version(ctx.session, project, version))


@router.post("/{key}/guidelines", response_model=GuidelineOut, status_code=201,
             tags=["guidelines"], responses=_PRECONDITIONS)
def new_guideline(key: Key, body: GuidelineIn, ctx: CtxDep, response: Response,
                  if_match: IfMatch = None) -> GuidelineOut:
    """Publish a new guideline version; ``If-Match`` must name the current version's ETag."""
    project, _ = load_project(ctx, key, Action.GUIDELINE_WRITE)
    check_if_match(if_match, _version_etag(
        "guideline", projects.latest_guideline_version(ctx.session, project) or 0))
    row = projects.add_guideline_version(ctx.session, project, body=body.body,
                                         change_note=body.change_note)
    response.headers["ETag"] = _version_etag("guideline", row.version)
    return _guideline_out(row)
