"""The audit log: events, chain verification, head."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from truthset import audit
from truthset.api.deps import CtxDep
from truthset.api.models import AuditEventOut, ChainHeadOut, Page, VerifyOut
from truthset.api.routes.common import KEY_PATTERN, PREFIX, Cursor, Limit, load_project
from truthset.api.util import DEFAULT_LIMIT
from truthset.auth import policy
from truthset.auth.policy import Action
from truthset.store.models import AuditEvent
from truthset.store.pages import paginate

router = APIRouter(prefix=PREFIX + "/audit", tags=["audit"])


def _event_out(row: AuditEvent) -> AuditEventOut:
    return AuditEventOut(seq=row.seq, at=row.at, actor=row.actor, action=row.action,
                         entity_type=row.entity_type, entity_id=row.entity_id,
                         project_id=row.project_id, before=row.before, after=row.after,
                         prev_hash=row.prev_hash, hash=row.hash)


@router.get("/events", response_model=Page[AuditEventOut])
def list_events(
    ctx: CtxDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT,
    project: Annotated[str | None, Query(pattern=KEY_PATTERN)] = None,
    actor: Annotated[str | None, Query(max_length=100, description="Exactly this actor "
                                       "(user name, or `system`).")] = None,
    action: Annotated[str | None, Query(max_length=64, description="Exactly this action, "
                                        "e.g. `create`, `update`, `login`, `denied`.")] = None,
    entity_type: Annotated[str | None, Query(max_length=64, description="Exactly this entity "
                                             "type (a table name such as `annotations`, or "
                                             "e.g. `release`).")] = None,
    entity_id: Annotated[str | None, Query(max_length=100, description="Exactly this entity "
                                           "id.")] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO 8601 date or date-time "
                                       "(UTC unless it has an offset); events at or after "
                                       "it.")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO 8601 date or date-time "
                                       "(UTC unless it has an offset); events before it.")]
    = None,
    order: Annotated[Literal["asc", "desc"], Query(description="`asc`: oldest first; `desc`: "
                                                   "newest first.")] = "asc",
) -> Page[AuditEventOut]:
    """Audit events matching every filter given, in sequence order: one project's (its
    managers and auditors) or all (administrators and global auditors)."""
    project_id = None
    if project is not None:
        found, _ = load_project(ctx, project, Action.AUDIT_READ)
        project_id = found.id
    else:
        policy.authorize(ctx.session, ctx.principal, Action.AUDIT_READ_ALL)
    where = audit.AuditFilter.parse(project_id=project_id, actor=actor, action=action,
                                    entity_type=entity_type, entity_id=entity_id,
                                    since=since, until=until)
    rows, nxt = paginate(ctx.session, audit.select_events(where), AuditEvent.seq,
                         cursor=cursor, limit=limit, descending=order == "desc")
    return Page[AuditEventOut](items=[_event_out(r) for r in rows], next_cursor=nxt)


@router.get("/verify", response_model=VerifyOut)
def verify(ctx: CtxDep) -> VerifyOut:
    """Walk the whole hash chain and name the first broken event, if any."""
    policy.authorize(ctx.session, ctx.principal, Action.AUDIT_READ_ALL)
    result = audit.verify(ctx.session)
    head = result.head
    return VerifyOut(ok=result.ok, n_events=result.n_events,
                     head=ChainHeadOut(**head.to_dict()) if head else None,
                     broken_seq=result.broken_seq, reason=result.reason)


@router.get("/head", response_model=ChainHeadOut)
def head(ctx: CtxDep) -> ChainHeadOut:
    """The latest event's sequence number and hash, to anchor outside the system."""
    policy.authorize(ctx.session, ctx.principal, Action.AUDIT_READ_ALL)
    stored = audit.stored_head(ctx.session)
    return ChainHeadOut(seq=stored.seq, hash=stored.hash)
