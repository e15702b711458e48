"""``truthset jobs``: list, show, cancel and submit background jobs; run a worker."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from truthset.cli.app import EXIT_FAILED, app, console, err_console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.domain.errors import InputError
from truthset.jobs import service as jobs
from truthset.store.models import Job
from truthset.workspace.projects import get_project
from truthset.workspace.workspace import Workspace

jobs_app = typer.Typer(help="Background jobs: pre-labelling, consensus, releases, exports.",
                       no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param takes key=value, got {pair!r}", field="param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def follow(ws: Workspace, job: Job, *, background: bool) -> Job:
    """Print a queued job; unless ``background``, wait for it with a progress bar (Ctrl-C
    cancels it)."""
    if background or job.backend != "inprocess":
        console.print(f"job [bold]{job.id}[/] queued ({job.kind}, {job.backend})")
        if background and job.backend == "inprocess":
            err_console.print("in-process backend: the job runs in this process, which "
                              "exits when it is done")
        if background:
            return job
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(f"job {job.id} {job.kind}", total=None)

        def show(state: Job) -> None:
            bar.update(task, completed=state.progress_done, total=state.progress_total,
                       description=f"job {state.id} {state.kind}: {state.message[:60]}")

        try:
            final = jobs.wait_for(ws, job.id, timeout_s=24 * 3600, poll_s=0.2, on_progress=show)
        except KeyboardInterrupt:
            with ws.unit("cli") as session:
                jobs.cancel(session, job.id)
            err_console.print(f"cancelling job {job.id}…")
            final = jobs.wait_for(ws, job.id, timeout_s=120)
    _print_job(final)
    if final.status != "succeeded":
        raise typer.Exit(EXIT_FAILED)
    return final


def _print_job(job: Job, as_json: bool = False) -> None:
    data = jobs.job_dict(job)
    if as_json:
        console.print_json(json.dumps(data))
        return
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(job.status, "")
    total = "?" if job.progress_total is None else job.progress_total
    console.print(f"job [bold]{job.id}[/] {job.kind}: [{colour or 'default'}]{job.status}[/] "
                  f"({job.progress_done}/{total}) {job.message}", highlight=False)
    if job.error:
        err_console.print(f"  error: {job.error}", highlight=False)
    if job.result:
        console.print(f"  result: {json.dumps(job.result, sort_keys=True)}", highlight=False)


@jobs_app.command("list")
@handle_errors
def list_cmd(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project key.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, "
                                                    "cancelled.")] = None,
    limit: Annotated[int, typer.Option(help="How many (latest first).")] = 50,
    as_json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List jobs, latest first."""
    with open_workspace(workspace) as ws, ws.sessions() as session:
        proj = get_project(session, project) if project else None
        rows = jobs.list_jobs(session, project=proj, status=status, limit=limit)
        if as_json:
            console.print_json(json.dumps([jobs.job_dict(j) for j in rows]))
            return
        table = Table("id", "kind", "status", "progress", "backend", "by", "message")
        for j in rows:
            total = "?" if j.progress_total is None else str(j.progress_total)
            table.add_row(str(j.id), j.kind, j.status, f"{j.progress_done}/{total}", j.backend,
                          j.created_by, j.message[:50])
        console.print(table)


@jobs_app.command("show")
@handle_errors
def show_cmd(job_id: Annotated[int, typer.Argument(help="Job id.")], as_json: JsonOption = False,
             workspace: WorkspaceOption = None) -> None:
    """Show one job: status, progress, result or error."""
    with open_workspace(workspace) as ws, ws.sessions() as session:
        _print_job(jobs.get_job(session, job_id), as_json)


@jobs_app.command("cancel")
@handle_errors
def cancel_cmd(job_id: Annotated[int, typer.Argument(help="Job id.")],
               workspace: WorkspaceOption = None, actor: ActorOption = None) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        job = jobs.cancel(session, job_id)
        console.print(f"job {job.id}: "
                      + ("cancelled" if job.status == "cancelled" else "asked to stop"))


@jobs_app.command("submit")
@handle_errors
def submit_cmd(
    kind: Annotated[str, typer.Argument(help="prelabel, consensus, acceptance, release, "
                                             "export.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project key.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="key=value (JSON values allowed), repeatable.")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key: the same key never "
                                                 "queues twice.")] = None,
    background: Annotated[bool, typer.Option(help="Do not wait (needs a worker backend).")]
    = False,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Queue a job and (by default) follow its progress."""
    params = {"project": project, **_parse_params(param or [])}
    who = actor_name(actor)
    with open_workspace(workspace) as ws:
        with ws.unit(who) as session:
            proj = get_project(session, project)
            job = jobs.enqueue(ws, session, kind, params, project=proj, actor=who,
                               idempotency_key=key)
        follow(ws, job, background=background)


@jobs_app.command("recover")
@handle_errors
def recover_cmd(
    stale_after: Annotated[float, typer.Option(help="Seconds without a heartbeat after which "
                                                    "a running job's worker is presumed "
                                                    "dead.")] = 600.0,
    run: Annotated[bool, typer.Option(help="Then run the queued in-process jobs here.")]
    = True,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Requeue jobs whose worker died, and run queued in-process jobs (after a restart)."""
    with open_workspace(workspace) as ws:
        with ws.unit(actor_name(actor)) as session:
            requeued = jobs.requeue_stale(session, older_than_s=stale_after)
        console.print(f"requeued {len(requeued)} job(s)")
        if run:
            for job_id, status in jobs.run_pending(ws):
                console.print(f"job {job_id}: {status}")


@jobs_app.command("schedules")
@handle_errors
def schedules_cmd(
    run_due: Annotated[bool, typer.Option("--run-due", help="Run the periodic tasks that are "
                                                           "due now, here.")] = False,
    as_json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Periodic tasks (raising overdue escalations): period, last run, next slot.

    They run by themselves in ``truthset serve`` (in-process backend) or on procrastinate's
    workers; ``--run-due`` runs what is due from here (e.g. from cron), once per slot.
    """
    from truthset.jobs.schedule import run_all_due, schedule_rows

    with open_workspace(workspace) as ws:
        if run_due:
            for run in run_all_due(ws, runner="cli"):
                err_console.print(f"{run.name}: {run.status}"
                                  + (f" {run.result}" if run.ran else ""))
        rows = schedule_rows(ws)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="Periodic tasks")
    for column in ("name", "every (min)", "last run", "status", "runner", "runs", "next"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], f"{r['period_minutes']:g}" if r["period_minutes"] else "off",
                      r["last_finished_at"] or "never", r["status"], r["runner"],
                      str(r["runs"]), r["next_due_at"] or "-")
    console.print(table)


@jobs_app.command("setup")
@handle_errors
def setup_cmd(workspace: WorkspaceOption = None) -> None:
    """Install procrastinate's queue tables in the (PostgreSQL) database, once."""
    from truthset.jobs.queue import conninfo, ensure_schema

    with open_workspace(workspace) as ws:
        conninfo(ws.engine)
        applied = ensure_schema(ws.engine)
        console.print("job queue installed" if applied else "job queue already installed")


@jobs_app.command("worker")
@handle_errors
def worker_cmd(
    once: Annotated[bool, typer.Option(help="Stop when the queue is empty.")] = False,
    concurrency: Annotated[int, typer.Option(help="Jobs at a time in this process.")] = 1,
    name: Annotated[str, typer.Option(help="Worker name (logs).")] = "truthset-worker",
    workspace: WorkspaceOption = None,
) -> None:
    """Run a procrastinate worker on the workspace's PostgreSQL database."""
    from truthset.jobs.queue import run_worker

    with open_workspace(workspace) as ws:
        run_worker(ws, once=once, concurrency=concurrency, name=name)
