"""Background jobs: the job table, enqueueing, progress, cancellation and execution.

A job is a row of ``jobs`` (kind, parameters, status, progress, result). Its life::

    queued -> running -> succeeded | failed | cancelled
                 \\-> queued (a retryable failure with attempts left)

- :func:`enqueue` writes the row in the caller's transaction and hands the job to the
  configured backend: the **in-process** runner (the embedded default: a thread pool started
  after the transaction commits) or **procrastinate** on PostgreSQL (the job is deferred in the
  *same* transaction, so a job exists in the queue if and only if its row was committed; see
  :mod:`truthset.jobs.queue` and ``docs/jobs.md``).
- :func:`execute_job` runs a job wherever it is picked up. It is safe to call more than once:
  a finished or cancelled job is not run again, and each kind's handler is idempotent.
- Progress is written with plain UPDATEs in short transactions of their own (not audited: it is
  operational state, not data); every status change goes through the ORM and is audited.
- :func:`cancel` cancels a queued job at once and asks a running one to stop; handlers check at
  every progress report and stop between items.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TruthsetError,
)
from truthset.store.models import Job, Project
from truthset.store.pages import Page, paginate
from truthset.workspace.workspace import Workspace

log = logging.getLogger("truthset.jobs")

ENV_BACKEND = "TRUTHSET_JOBS_BACKEND"
BACKENDS = ("inprocess", "procrastinate")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
#: Every status a job can have, in the order of its life.
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobCancelled(TruthsetError):  # noqa: N818 - a signal, not an error
    """Raised inside a job when cancellation was requested; the job ends ``cancelled``."""


@dataclass
class JobContext:
    """What a job handler gets: the workspace, its parameters and a progress reporter."""

    workspace: Workspace
    job_id: int
    kind: str
    params: dict[str, Any]
    actor: str
    created_by: str = ""

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Report progress; raises :class:`JobCancelled` when cancellation was requested."""
        now = datetime.now(UTC)
        with self.workspace.engine.begin() as conn:
            values: dict[str, Any] = {"progress_done": int(done), "heartbeat_at": now}
            if total is not None:
                values["progress_total"] = int(total)
            if message:
                values["message"] = message[:2000]
            conn.execute(update(Job).where(Job.id == self.job_id).values(**values))
            cancel = conn.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        if cancel:
            raise JobCancelled(f"job {self.job_id} was cancelled")


Handler = Callable[[JobContext], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its handler, a parameter check, and whether failures are retried."""

    name: str
    handler: Handler
    check: Callable[[Mapping[str, Any]], None]
    description: str


#: Registered kinds (filled by :mod:`truthset.jobs.handlers`).
KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> None:
    """Make a job kind available to :func:`enqueue` and the workers."""
    KINDS[kind.name] = kind


def _kinds() -> dict[str, JobKind]:
    from truthset.jobs import handlers  # noqa: F401  (registers the built-in kinds)

    return KINDS


def configured_backend() -> str:
    """The backend named by ``$TRUTHSET_JOBS_BACKEND`` (``inprocess`` by default)."""
    name = os.environ.get(ENV_BACKEND, "inprocess").strip().lower() or "inprocess"
    if name not in BACKENDS:
        raise InputError(f"unknown jobs backend {name!r}; choose {', '.join(BACKENDS)}",
                         source=ENV_BACKEND)
    return name


# -- enqueueing -----------------------------------------------------------------------------------
def enqueue(
    workspace: Workspace,
    session: Session,
    kind: str,
    params: Mapping[str, Any],
    *,
    project: Project | None = None,
    actor: str = "",
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    backend: str | None = None,
) -> Job:
    """Create a job in ``session``'s transaction and hand it to the backend.

    With an ``idempotency_key`` already used, the existing job is returned and nothing new is
    queued (a client that retries its request does not start the work twice).

    Raises
    ------
    InputError
        Unknown kind, bad parameters or backend.
    """
    kinds = _kinds()
    if kind not in kinds:
        raise InputError(f"unknown job kind {kind!r}; choose {', '.join(sorted(kinds))}",
                         field="kind")
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.kind != kind or existing.params != dict(params):
                raise ConflictError("this idempotency key was used for a different job")
            return existing
    kinds[kind].check(params)
    if not 1 <= max_attempts <= 10:
        raise InputError("max_attempts must lie in 1..10", field="max_attempts")
    chosen = backend or configured_backend()
    if chosen not in BACKENDS:
        raise InputError(f"unknown jobs backend {chosen!r}", field="backend")
    job = Job(kind=kind, params=dict(params), project_id=project.id if project else None,
              status="queued", backend=chosen, idempotency_key=idempotency_key,
              max_attempts=max_attempts, created_by=actor, message="queued")
    session.add(job)
    session.flush()
    if chosen == "procrastinate":
        from truthset.jobs.queue import defer_in_transaction

        job.external_id = str(defer_in_transaction(session, job.id))
        session.flush()
    else:
        job_id = job.id

        def _start(_session: Session) -> None:
            in_process_runner(workspace).submit(job_id)

        event.listen(session, "after_commit", _start, once=True)
    return job


# -- reading and cancelling ----------------------------------------------------------------------
def get_job(session: Session, job_id: int, *, project: Project | None = None) -> Job:
    """The job ``job_id`` (when ``project`` is given, a job of another project is not found).

    Raises
    ------
    NotFoundError
        No such job (in ``project``).
    """
    job = session.get(Job, job_id)
    if job is None or (project is not None and job.project_id != project.id):
        raise NotFoundError(f"no job {job_id}" + ("" if project is None else " in this project"))
    return job


def list_jobs(session: Session, *, project: Project | None = None, status: str | None = None,
              limit: int = 50) -> list[Job]:
    """The latest jobs first, optionally of one project and/or status."""
    stmt = select(Job)
    if project is not None:
        stmt = stmt.where(Job.project_id == project.id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return list(session.scalars(stmt.order_by(Job.id.desc()).limit(max(1, min(limit, 1000)))))


def jobs_page(session: Session, project: Project, *, status: str | None = None,
              cursor: str | None = None, limit: int = 50) -> Page[Job]:
    """One page of a project's jobs, latest first, and the cursor of the next page.

    Parameters
    ----------
    session:
        The open session.
    project:
        Whose jobs (a job of another project, or of none, is never listed).
    status:
        Only jobs in this status (one of :data:`STATUSES`); ``None``: all.
    cursor:
        ``next_cursor`` of the previous page; ``None`` for the first (newest) page.
    limit:
        Jobs per page.

    Returns
    -------
    Page
        The jobs below the cursor, newest first, and the next page's cursor (``None`` on
        the last page).

    Raises
    ------
    InputError
        ``status`` is not a job status (field ``status``) or ``cursor`` is not one this
        server issued (field ``cursor``).
    """
    stmt = select(Job).where(Job.project_id == project.id)
    if status is not None:
        if status not in STATUSES:
            raise InputError(f"unknown job status {status!r}; choose {', '.join(STATUSES)}",
                             field="status")
        stmt = stmt.where(Job.status == status)
    return paginate(session, stmt, Job.id, cursor=cursor, limit=limit, descending=True)


def cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job now, or ask a running one to stop at its next progress report.

    Raises
    ------
    ConflictError
        The job has finished already.
    """
    job = get_job(session, job_id)
    if job.status in FINISHED:
        raise ConflictError(f"job {job_id} has finished ({job.status}); nothing to cancel")
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = datetime.now(UTC)
        job.message = "cancelled before it started"
    session.flush()
    return job


def job_dict(job: Job) -> dict[str, Any]:
    """A JSON-ready view of a job (CLI, API)."""
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "backend": job.backend,
        "project_id": job.project_id, "params": job.params,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "message": job.message, "result": job.result, "error": job.error,
        "attempts": job.attempts, "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested, "created_by": job.created_by,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


# -- executing ------------------------------------------------------------------------------------
#: Failures that will fail again: the job's input is wrong, not the moment.
PERMANENT = (InputError, NotFoundError, ConflictError, PermissionDeniedError)


@dataclass(frozen=True)
class Execution:
    """How one call of :func:`execute_job` ended."""

    status: str
    retry: bool = False


def _claim(workspace: Workspace, job_id: int, worker: str) -> tuple[Job | None, str]:
    """Move a queued job to running (one claimant wins); ``(job, reason)``."""
    with workspace.unit(f"worker:{worker}") as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None:
            return None, "no such job"
        if job.status in FINISHED:
            return None, job.status
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", datetime.now(UTC)
            job.message = "cancelled before it started"
            return None, "cancelled"
        if job.status == "running":
            return None, "running elsewhere"
        job.status, job.attempts = "running", job.attempts + 1
        job.started_at = job.heartbeat_at = datetime.now(UTC)
        job.message, job.error = f"attempt {job.attempts} on {worker}", ""
        session.flush()
        session.expunge(job)
        return job, ""


def _finish(workspace: Workspace, job_id: int, worker: str, **values: Any) -> None:
    with workspace.unit(f"worker:{worker}") as session:
        job = session.get_one(Job, job_id)
        for key, value in values.items():
            setattr(job, key, value)
        if values.get("status") in FINISHED:
            job.finished_at = datetime.now(UTC)


def execute_job(workspace: Workspace, job_id: int, *, worker: str = "inprocess") -> Execution:
    """Run job ``job_id`` once, if it still needs running.

    Returns how it ended; ``retry=True`` when it failed for a reason that may pass (not bad
    input) and has attempts left — it is then back in ``queued`` and the backend runs it again.
    """
    job, why = _claim(workspace, job_id, worker)
    if job is None:
        return Execution(why)
    kind = _kinds().get(job.kind)
    ctx = JobContext(workspace, job.id, job.kind, dict(job.params), f"job:{job.id}",
                     job.created_by)
    try:
        if kind is None:
            raise InputError(f"this worker does not know job kind {job.kind!r}")
        result = kind.handler(ctx)
    except JobCancelled:
        _finish(workspace, job_id, worker, status="cancelled", message="cancelled")
        return Execution("cancelled")
    except Exception as exc:
        retry = not isinstance(exc, PERMANENT) and job.attempts < job.max_attempts
        reason = str(exc) if isinstance(exc, TruthsetError) else f"{type(exc).__name__}: {exc}"
        log.warning("job %s (%s) attempt %s failed: %s", job.id, job.kind, job.attempts,
                    type(exc).__name__)
        _finish(workspace, job_id, worker, status="queued" if retry else "failed",
                error=reason[:4000],
                message="will retry" if retry else "failed")
        return Execution("queued" if retry else "failed", retry=retry)
    total = result.pop("_total", None)
    _finish(workspace, job_id, worker, status="succeeded", result=result, message="done",
            **({"progress_total": total, "progress_done": total} if total is not None else {}))
    return Execution("succeeded")


# -- recovery -------------------------------------------------------------------------------------
def requeue_stale(session: Session, *, older_than_s: float = 600.0) -> list[int]:
    """Running jobs whose worker stopped reporting (no heartbeat for ``older_than_s``) go back
    to ``queued`` (re-deferred on procrastinate), or to ``failed`` when out of attempts.

    Returns the ids requeued.
    """
    now = datetime.now(UTC)
    requeued = []
    for job in session.scalars(select(Job).where(Job.status == "running")).all():
        beat = job.heartbeat_at or job.started_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if beat is not None and (now - beat).total_seconds() < older_than_s:
            continue
        if job.attempts >= job.max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = "the worker stopped reporting and no attempt is left"
            continue
        job.status, job.message = "queued", "requeued: the worker stopped reporting"
        session.flush()
        if job.backend == "procrastinate":
            from truthset.jobs.queue import defer_in_transaction

            job.external_id = str(defer_in_transaction(session, job.id))
        requeued.append(job.id)
    session.flush()
    return requeued


def run_pending(workspace: Workspace, *, limit: int = 100) -> list[tuple[int, str]]:
    """Run the queued in-process jobs here, oldest first (after a restart, or for jobs queued
    by a process that exited); returns ``(job id, final status)`` pairs."""
    with workspace.sessions() as session:
        ids = list(session.scalars(select(Job.id).where(
            Job.status == "queued", Job.backend == "inprocess").order_by(Job.id).limit(limit)))
    runner = InProcessRunner(workspace)
    try:
        return [(job_id, runner.run(job_id).status) for job_id in ids]
    finally:
        runner.shutdown()


# -- the in-process runner ------------------------------------------------------------------------
class InProcessRunner:
    """Runs jobs on a small thread pool inside this process (the embedded default).

    Retryable failures are retried here after a short back-off (1 s, 2 s, 4 s...).
    """

    def __init__(self, workspace: Workspace, *, threads: int = 2,
                 backoff_s: float = 1.0) -> None:
        self.workspace = workspace
        self.backoff_s = backoff_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="truthset-job")

    def submit(self, job_id: int) -> None:
        """Run ``job_id`` in the background."""
        self._pool.submit(self.run, job_id)

    def run(self, job_id: int) -> Execution:
        """Run ``job_id`` now, in this thread, retrying as allowed."""
        attempt = 0
        while True:
            outcome = execute_job(self.workspace, job_id)
            if not outcome.retry:
                return outcome
            time.sleep(self.backoff_s * (2 ** attempt))
            attempt += 1

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting jobs (and wait for the running ones)."""
        self._pool.shutdown(wait=wait)


_RUNNERS: dict[int, InProcessRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def in_process_runner(workspace: Workspace) -> InProcessRunner:
    """The runner of ``workspace`` in this process (made on first use)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(id(workspace))
        if runner is None or runner.workspace is not workspace:
            runner = _RUNNERS[id(workspace)] = InProcessRunner(workspace)
        return runner


def wait_for(workspace: Workspace, job_id: int, *, timeout_s: float = 60.0,
             poll_s: float = 0.05, on_progress: Callable[[Job], None] | None = None) -> Job:
    """Poll until job ``job_id`` finishes (or ``timeout_s`` passes); return its last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        with workspace.sessions() as session:
            job = session.get_one(Job, job_id)
            session.expunge(job)
        if on_progress:
            on_progress(job)
        if job.status in FINISHED or time.monotonic() > deadline:
            return job
        time.sleep(poll_s)
