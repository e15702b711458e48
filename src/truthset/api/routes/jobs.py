"""Background jobs of a project (submit, list, show, cancel) and pre-labelling oversight
(registered models, per-class acceptance, a manager's resume of a paused class)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from truthset.api.deps import CtxDep
from truthset.api.models import Page, Utc
from truthset.api.routes.common import (
    DEFAULT_PAGE,
    KEY_PATTERN,
    PREFIX,
    Cursor,
    Limit,
    load_project,
)
from truthset.auth.policy import Action
from truthset.jobs import service as jobs
from truthset.prelabel import acceptance
from truthset.prelabel.service import list_models
from truthset.store.models import Job, User

router = APIRouter(prefix=PREFIX + "/projects/{key}", tags=["jobs"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
JobId = Annotated[int, Path(ge=1, le=2**62)]
ClassName = Annotated[str, Path(min_length=1, max_length=100)]

#: What submitting each kind of job requires.
SUBMIT_ACTION = {"consensus": Action.CONSENSUS_COMPUTE}


class JobIn(BaseModel):
    """A job to queue; ``params.project`` is set from the path."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=32,
                      description="prelabel, consensus, acceptance, release or export.")
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=100,
                                        description="The same key never queues twice.")


class ProgressOut(BaseModel):
    """How far a job is."""

    done: int
    total: int | None


class JobOut(BaseModel):
    """A background job."""

    id: int
    kind: str
    status: str
    backend: str
    params: dict[str, Any]
    progress: ProgressOut
    message: str
    result: dict[str, Any]
    error: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_by: str
    created_at: Utc
    started_at: Utc | None
    finished_at: Utc | None


class ModelOut(BaseModel):
    """A registered drafting model."""

    name: str
    version: str
    kind: str
    output: str
    classes: list[str]
    timeout_s: float
    active: bool
    created_at: Utc


class ClassAcceptanceOut(BaseModel):
    """Acceptance of one class's drafts (what the dashboard shows)."""

    class_name: str
    status: str
    n: int
    accepted: int
    edited: int
    rejected: int
    mean_dice: float | None
    mean_iou: float | None
    window_n: int
    window_acceptance: float | None
    reason: str


class AcceptanceOut(BaseModel):
    """The project's acceptance policy and every class's acceptance."""

    min_acceptance: float
    window: int
    min_decisions: int
    edit_tolerance: float
    classes: list[ClassAcceptanceOut]


class DecisionIn(BaseModel):
    """A manager's decision, with the reason kept in the audit log."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


class AutomationOut(BaseModel):
    """Drafting state of one class."""

    class_name: str
    status: str
    reason: str
    decided_by: str
    updated_at: Utc


def _out(job: Job) -> JobOut:
    return JobOut(id=job.id, kind=job.kind, status=job.status, backend=job.backend,
                  params=job.params, progress=ProgressOut(done=job.progress_done,
                                                          total=job.progress_total),
                  message=job.message, result=job.result, error=job.error,
                  attempts=job.attempts, max_attempts=job.max_attempts,
                  cancel_requested=job.cancel_requested, created_by=job.created_by,
                  created_at=job.created_at, started_at=job.started_at,
                  finished_at=job.finished_at)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(key: Key, ctx: CtxDep,
              status: Annotated[str | None, Query(max_length=16)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobOut]:
    """The project's jobs, latest first."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return [_out(j) for j in jobs.list_jobs(ctx.session, project=project, status=status,
                                            limit=limit)]


# Declared before ``/jobs/{job_id}``, whose pattern would otherwise take ``page``.
@router.get("/jobs/page", response_model=Page[JobOut])
def jobs_page(key: Key, ctx: CtxDep, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE,
              status: Annotated[str | None, Query(max_length=16, description="Only jobs in "
                                                  "this status: queued, running, succeeded, "
                                                  "failed or cancelled.")] = None,
              ) -> Page[JobOut]:
    """The project's jobs, newest first, a page at a time (pass ``next_cursor`` as
    ``cursor`` for older ones)."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    rows, nxt = jobs.jobs_page(ctx.session, project, status=status, cursor=cursor, limit=limit)
    return Page[JobOut](items=[_out(j) for j in rows], next_cursor=nxt)


@router.post("/jobs", response_model=JobOut, status_code=201)
def submit_job(key: Key, body: JobIn, ctx: CtxDep) -> JobOut:
    """Queue a job; poll ``GET .../jobs/{id}`` for its progress."""
    project, _ = load_project(ctx, key, SUBMIT_ACTION.get(body.kind, Action.PROJECT_UPDATE))
    job = jobs.enqueue(ctx.workspace, ctx.session, body.kind,
                       {**body.params, "project": project.key}, project=project,
                       actor=ctx.principal.actor, idempotency_key=body.idempotency_key)
    return _out(job)


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(key: Key, job_id: JobId, ctx: CtxDep) -> JobOut:
    """One job: status, progress, result or error."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return _out(jobs.get_job(ctx.session, job_id, project=project))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(key: Key, job_id: JobId, ctx: CtxDep) -> JobOut:
    """Cancel a queued job now, or ask a running one to stop between items."""
    project, _ = load_project(ctx, key, Action.PROJECT_UPDATE)
    jobs.get_job(ctx.session, job_id, project=project)
    return _out(jobs.cancel(ctx.session, job_id))


@router.get("/prelabel/models", response_model=list[ModelOut], tags=["prelabel"])
def models(key: Key, ctx: CtxDep) -> list[ModelOut]:
    """The project's registered drafting models (registration: ``truthset prelabel
    register``)."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return [ModelOut(name=m.name, version=m.version, kind=m.kind, output=m.output,
                     classes=list(m.classes), timeout_s=m.timeout_s, active=m.active,
                     created_at=m.created_at) for m in list_models(ctx.session, project)]


@router.get("/prelabel/acceptance", response_model=AcceptanceOut, tags=["prelabel"])
def acceptance_report(key: Key, ctx: CtxDep) -> AcceptanceOut:
    """Per class: accepted / edited / rejected drafts, mean Dice and IoU of edits, windowed
    acceptance and whether drafting is paused (recorded as reads are stored)."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    policy = acceptance.acceptance_policy(project)
    rows = acceptance.acceptance_report(ctx.session, project)
    return AcceptanceOut(**policy.__dict__,
                         classes=[ClassAcceptanceOut(**r) for r in acceptance.as_dicts(rows)])


@router.post("/prelabel/classes/{class_name}/resume", response_model=AutomationOut,
             tags=["prelabel"])
def resume(key: Key, class_name: ClassName, body: DecisionIn, ctx: CtxDep) -> AutomationOut:
    """A manager resumes drafting of a paused class (audited with the note)."""
    project, _ = load_project(ctx, key, Action.PROJECT_UPDATE)
    manager = ctx.session.get_one(User, ctx.principal.user_id)
    row = acceptance.resume_class(ctx.session, project, class_name, manager=manager,
                                  note=body.note)
    return AutomationOut(class_name=row.class_name, status=row.status, reason=row.reason,
                         decided_by=row.decided_by, updated_at=row.updated_at)
