"""The production backend: procrastinate on the workspace's PostgreSQL database.

Why procrastinate (the full argument is in ``docs/jobs.md``): Truthset's production database is
PostgreSQL already, so the queue needs no other service to run, back up or secure; and a job is
deferred with the *same* database connection and transaction as the ``jobs`` row and the
change that asked for it, so a job is queued exactly when its transaction commits — never a
queued job for a rolled-back request, never a committed request without its job.

- :func:`defer_in_transaction` queues ``truthset.run_job(job_id=...)`` on the session's own
  psycopg connection.
- :func:`run_worker` is what ``truthset jobs worker`` runs: a procrastinate worker whose one
  task calls :func:`truthset.jobs.service.execute_job`. A retryable failure raises, and
  procrastinate runs the job again after a back-off; Truthset's own attempt counter decides
  when to stop.
- :func:`ensure_schema` applies procrastinate's tables and functions once (idempotent).
- :data:`PERIODIC_TASK` is a procrastinate periodic task (cron every minute): the workers'
  periodic deferrer defers it once per minute across all workers, and it runs the periodic
  tasks that are due (:func:`truthset.jobs.schedule.run_all_due`, e.g. raising overdue
  escalations), with procrastinate's scheduled time as "now".
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError, TruthsetError
from truthset.workspace.workspace import Workspace

log = logging.getLogger("truthset.jobs")

QUEUE = "truthset"
TASK_NAME = "truthset.run_job"
PERIODIC_TASK = "truthset.run_schedules"
#: How often procrastinate looks for due periodic tasks (the periods themselves are settings).
PERIODIC_CRON = "* * * * *"


class JobRetry(TruthsetError):  # noqa: N818 - a signal to procrastinate, not an error
    """Raised in a worker so that procrastinate runs the job again later."""


def conninfo(engine: Engine) -> str:
    """A libpq connection string for the engine's PostgreSQL database (options kept).

    Raises
    ------
    InputError
        The database is not PostgreSQL.
    """
    url = engine.url
    if url.get_backend_name() != "postgresql":
        raise InputError("the procrastinate jobs backend needs a PostgreSQL database "
                         f"(this workspace uses {url.get_backend_name()})",
                         source="TRUTHSET_JOBS_BACKEND")
    plain = make_url(url.render_as_string(hide_password=False)).set(drivername="postgresql")
    return plain.render_as_string(hide_password=False)


def _retry_strategy() -> Any:
    import procrastinate

    return procrastinate.RetryStrategy(max_attempts=9, exponential_wait=2,
                                       retry_exceptions={JobRetry})


def build_app(dsn: str, workspace: Workspace | None = None) -> Any:
    """A procrastinate ``App`` on ``dsn`` with the ``truthset.run_job`` task.

    ``workspace`` is what the task runs jobs in (a worker passes it; a process that only
    defers does not need it).
    """
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASK_NAME, queue=QUEUE, retry=_retry_strategy())
    def run_job(job_id: int) -> None:
        from truthset.jobs.service import execute_job

        if workspace is None:
            raise TruthsetError("this procrastinate app has no workspace to run jobs in")
        outcome = execute_job(workspace, int(job_id), worker="procrastinate")
        if outcome.retry:
            raise JobRetry(f"job {job_id} failed; attempt left")

    @app.periodic(cron=PERIODIC_CRON, periodic_id="schedules")
    @app.task(name=PERIODIC_TASK, queue=QUEUE, queueing_lock=PERIODIC_TASK)
    def run_schedules(timestamp: int) -> None:
        from datetime import UTC, datetime

        from truthset.jobs.schedule import run_all_due

        if workspace is None:
            raise TruthsetError("this procrastinate app has no workspace to run tasks in")
        run_all_due(workspace, now=datetime.fromtimestamp(int(timestamp), UTC),
                    runner="procrastinate")

    return app


def has_schema(session_or_engine: Session | Engine) -> bool:
    """Whether procrastinate's tables exist in the database's search path."""
    query = text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    if isinstance(session_or_engine, Session):
        return bool(session_or_engine.scalar(query))
    with session_or_engine.connect() as conn:
        return bool(conn.scalar(query))


def ensure_schema(engine: Engine) -> bool:
    """Apply procrastinate's schema when it is missing; ``True`` when it was applied now."""
    if has_schema(engine):
        return False
    from procrastinate.schema import SchemaManager

    with engine.begin() as conn:
        # Straight to psycopg: the schema holds '%' characters that are not placeholders.
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute(SchemaManager.get_schema())
    return True


def defer_in_transaction(session: Session, job_id: int) -> int:
    """Queue job ``job_id`` on the session's own connection (same transaction); return
    procrastinate's job id.

    Raises
    ------
    InputError
        The database is not PostgreSQL, or procrastinate's schema is not installed
        (run ``truthset jobs worker`` or ``truthset jobs setup`` once).
    """
    connection = session.connection()
    engine = connection.engine
    dsn = conninfo(engine)
    if not has_schema(session):
        raise InputError("the job queue is not set up in this database; run "
                         "`truthset jobs setup` once", source="TRUTHSET_JOBS_BACKEND")
    raw = connection.connection.driver_connection
    app = build_app(dsn)
    task = app.tasks[TASK_NAME]
    return int(task.configure(connection=raw).defer(job_id=job_id))


def run_worker(workspace: Workspace, *, once: bool = False, concurrency: int = 1,
               name: str = "truthset-worker") -> None:
    """Run a procrastinate worker for ``workspace``'s jobs.

    With ``once`` the worker stops when the queue is empty (tests, cron); otherwise it runs
    until SIGINT/SIGTERM.
    """
    ensure_schema(workspace.engine)
    app = build_app(conninfo(workspace.engine), workspace)
    log.info("procrastinate worker %s started (queue %s)", name, QUEUE)
    app.run_worker(queues=[QUEUE], wait=not once, concurrency=concurrency, name=name,
                   install_signal_handlers=not once, fetch_job_polling_interval=0.5,
                   abort_job_polling_interval=0.5, delete_jobs="successful")
