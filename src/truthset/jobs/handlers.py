"""The built-in job kinds: pre-labelling, consensus, acceptance tracking, release, export; and
the built-in periodic task: raising overdue escalations (see :mod:`truthset.jobs.schedule`).

Every handler is idempotent, so a retried or re-delivered job does no harm:

- ``prelabel`` skips items the model drafted already (one transaction per item: a retry
  resumes where the last attempt stopped);
- ``consensus`` and ``acceptance`` run in one transaction each: a failed attempt leaves
  nothing, a repeated one recomputes the same result;
- ``release`` returns the existing release when one of that name exists already;
- ``export`` writes to a temporary file and renames it into place.

Files a job writes (exports, release folders) go under the workspace folder only
(``exports/<name>``, ``releases/<name>``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError, TruthsetError
from truthset.jobs.schedule import SCHEDULER, PeriodicTask, register_periodic, timing
from truthset.jobs.service import JobContext, JobKind, register_kind
from truthset.store.models import Project, utcnow
from truthset.workflow.escalations import OVERDUE_CHECK
from truthset.workspace.projects import get_project
from truthset.workspace.workspace import Workspace

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def inside(workspace_root: Path, folder: str, name: str, field: str) -> Path:
    """``<workspace>/<folder>/<name>``: job outputs stay inside the workspace (a job submitted
    through the API never writes where its caller chooses).

    Raises
    ------
    InputError
        ``name`` is not a plain file name.
    """
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise InputError("give a plain name: letters, digits, '.', '_' or '-'", field=field)
    return workspace_root / folder / name


def _need(params: Mapping[str, Any], *names: str) -> None:
    for name in names:
        value = params.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"the job needs {name}: <text>", field=f"params.{name}")


# -- prelabel -------------------------------------------------------------------------------------
def _check_prelabel(params: Mapping[str, Any]) -> None:
    _need(params, "project", "model")
    items = params.get("items")
    if items is not None and not (isinstance(items, list)
                                  and all(isinstance(i, int) for i in items)):
        raise InputError("items must be a list of item ids", field="params.items")


def run_prelabel_job(ctx: JobContext) -> dict[str, Any]:
    """Draft the project's items with a registered model."""
    from truthset.prelabel.service import run_prelabel

    summary = run_prelabel(
        ctx.workspace, ctx.params["project"], ctx.params["model"],
        version=ctx.params.get("version"), item_ids=ctx.params.get("items"),
        actor=ctx.actor, job_id=ctx.job_id,
        progress=lambda done, total, msg: ctx.progress(done, total, msg),
    )
    return {**summary.to_dict(), "_total": summary.drafted + summary.refused + summary.skipped}


# -- consensus ------------------------------------------------------------------------------------
def _check_consensus(params: Mapping[str, Any]) -> None:
    _need(params, "project")
    from truthset.quality.aggregation.registry import make_aggregator

    method = params.get("method", "mv")
    try:
        make_aggregator(str(method), classes=("a", "b"), **dict(params.get("params") or {}))
    except (TypeError, ValueError, KeyError, InputError) as exc:
        raise InputError(f"bad consensus method or parameters: {exc}",
                         field="params.method") from None


def run_consensus_job(ctx: JobContext) -> dict[str, Any]:
    """Recompute the consensus of every item of the project (one transaction)."""
    from truthset.workflow.consensus import compute_consensus

    ctx.progress(0, 1, "aggregating")
    with ctx.workspace.unit(ctx.actor) as session:
        project = get_project(session, ctx.params["project"])
        run = compute_consensus(session, project, method=str(ctx.params.get("method", "mv")),
                                min_reads=int(ctx.params.get("min_reads", 1)),
                                params=dict(ctx.params.get("params") or {}))
        n_final = int(run.labels["label"].notna().sum())
    return {"method": run.method, "items": len(run.labels), "final": n_final, "_total": 1}


# -- acceptance -----------------------------------------------------------------------------------
def _check_project(params: Mapping[str, Any]) -> None:
    _need(params, "project")


def run_acceptance_job(ctx: JobContext) -> dict[str, Any]:
    """Record draft outcomes and pause classes whose acceptance fell."""
    from truthset.prelabel.acceptance import track

    with ctx.workspace.unit(ctx.actor) as session:
        project = get_project(session, ctx.params["project"])
        n_new, paused = track(session, project)
    return {"new_outcomes": n_new, "paused": [p.class_name for p in paused], "_total": 1}


# -- release --------------------------------------------------------------------------------------
def _check_release(params: Mapping[str, Any]) -> None:
    _need(params, "project", "name")
    if params.get("exclude_unresolved") is not None:
        _need(params, "exclude_unresolved")
    if params.get("folder") is not None:
        _need(params, "folder")
        inside(Path("."), "releases", str(params["folder"]), "params.folder")


def run_release_job(ctx: JobContext) -> dict[str, Any]:
    """Build a release with the release service (see :mod:`truthset.release`).

    Uses ``truthset.release.service.create_release`` (stored, checked release) when that
    module is present, else the folder build of :func:`truthset.release.build.build_release`
    (``folder`` required then).
    """
    params = ctx.params
    ctx.progress(0, 1, "building the release")
    try:
        from truthset.release import service as release_service
    except ImportError:
        release_service = None  # type: ignore[assignment]
    with ctx.workspace.unit(ctx.actor) as session:
        project = get_project(session, params["project"])
        if release_service is not None and hasattr(release_service, "create_release"):
            existing = [r for r in release_service.list_releases(session, project)
                        if r.name == params["name"]]
            if existing:
                release = existing[0]
            else:
                release = release_service.create_release(
                    session, project, ctx.workspace.blobs, name=params["name"],
                    actor=ctx.created_by or ctx.actor,
                    identifiers=release_service.vault_identifiers(ctx.workspace.vault,
                                                                  project.key),
                    exclude_unresolved=params.get("exclude_unresolved"),
                )
            if params.get("folder"):
                target = inside(ctx.workspace.root, "releases", params["folder"],
                                "params.folder")
                if not (target / "manifest.json").is_file():  # not written by an earlier try
                    release_service.write_folder(session, ctx.workspace.blobs, release, target)
            return {"release": release.name, "release_id": release.id,
                    "manifest_sha256": release.manifest_sha256, "_total": 1}
        from truthset.release.build import MANIFEST, build_release

        if not params.get("folder"):
            raise InputError("a folder release needs folder: <name>", field="params.folder")
        folder = inside(ctx.workspace.root, "releases", params["folder"], "params.folder")
        manifest = folder / MANIFEST
        if manifest.is_file():  # built by an earlier attempt that committed
            import hashlib
            import json

            data = manifest.read_bytes()
            if json.loads(data).get("release") == params["name"]:
                return {"release": params["name"], "folder": folder.name,
                        "manifest_sha256": hashlib.sha256(data).hexdigest(), "_total": 1}
        summary = build_release(session, project, folder, name=params["name"])
        return {"release": params["name"], "folder": summary.folder.name,
                "items": summary.n_items, "excluded": summary.n_excluded,
                "manifest_sha256": summary.manifest_sha256, "_total": 1}


# -- export ---------------------------------------------------------------------------------------
EXPORT_FORMATS = ("csv", "parquet")


def _check_export(params: Mapping[str, Any]) -> None:
    _need(params, "project", "name")
    inside(Path("."), "exports", str(params["name"]), "params.name")
    fmt = params.get("format", "csv")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}",
                         field="params.format")


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    """Export the project's current reads (one row per reader and item) to CSV or Parquet,
    as ``<workspace>/exports/<name>``.

    Reader names and labels only: no patient data. The export is audited.
    """
    from truthset.workflow.annotations import current_labels

    target = inside(ctx.workspace.root, "exports", ctx.params["name"], "params.name")
    fmt = ctx.params.get("format", "csv")
    ctx.progress(0, 1, "exporting")
    with ctx.workspace.unit(ctx.actor) as session:
        project = get_project(session, ctx.params["project"])
        table = current_labels(session, project)
        table["created_at"] = table["created_at"].astype(str)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", dir=target.parent)
        os.close(fd)
        try:
            if fmt == "parquet":
                table.to_parquet(tmp, index=False)
            else:
                table.to_csv(tmp, index=False, lineterminator="\n")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        audit.record(session, action="export", entity_type="projects", entity_id=project.id,
                     project_id=project.id,
                     after={"format": fmt, "rows": len(table), "file": target.name})
    return {"rows": len(table), "file": f"exports/{target.name}", "format": fmt, "_total": 1}


for _kind in (
    JobKind("prelabel", run_prelabel_job, _check_prelabel,
            "draft items with a registered model"),
    JobKind("consensus", run_consensus_job, _check_consensus, "recompute the consensus"),
    JobKind("acceptance", run_acceptance_job, _check_project,
            "record draft outcomes, pause classes whose acceptance fell"),
    JobKind("release", run_release_job, _check_release, "build a release"),
    JobKind("export", run_export_job, _check_export, "export current reads (CSV/Parquet)"),
):
    register_kind(_kind)


# -- periodic: overdue escalations ----------------------------------------------------------------
def raise_overdue_everywhere(workspace: Workspace, now: datetime) -> dict[str, Any]:
    """Raise the overdue escalations of every project, one transaction per project.

    Idempotent: an escalation raised once is ``raised`` and its successor is due a full
    deadline after ``now``, so running again raises nothing new. Each project where something
    was raised gets an audit event ``escalations.raise_overdue`` naming the escalations (the
    rows themselves are audited as they change). A project that fails is reported in
    ``errors`` and the others go on.
    """
    from truthset.workflow import escalations

    with workspace.sessions() as session:
        ids = escalations.projects_with_overdue(session, now=now)
    raised: dict[str, int] = {}
    errors: dict[str, str] = {}
    for project_id in ids:
        key = str(project_id)
        try:
            with workspace.unit(SCHEDULER) as session:
                project = session.get_one(Project, project_id)
                key = project.key
                rows = escalations.raise_overdue(session, project, now=now)
                raised[key] = len(rows)
                if rows:
                    audit.record(session, action="escalations.raise_overdue",
                                 entity_type="escalations", project_id=project.id,
                                 after={"raised": [{"escalation": r.id, "item_id": r.item_id,
                                                    "to_tier": r.to_tier} for r in rows],
                                        "at": now.isoformat(), "by": "schedule"})
        except TruthsetError as exc:
            errors[key] = str(exc)
    if errors and not raised:
        raise TruthsetError("raising overdue escalations failed: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(errors.items())))
    return {"raised": sum(raised.values()), "projects": raised, "errors": errors}


def overdue_check_status(session: Session, project: Project, period_minutes: float, *,
                         now: datetime | None = None) -> dict[str, Any]:
    """The periodic overdue check as one project sees it (the dashboards, the CLI).

    Parameters
    ----------
    session:
        A session of the workspace.
    project:
        Whose escalations are counted and whose raised count is given.
    period_minutes:
        ``escalation_check_minutes`` of the workspace now (0: off).
    now:
        The moment to judge at (default: the clock).

    Returns
    -------
    dict
        ``enabled``, ``period_minutes``; the last run (ISO 8601 UTC ``last_started_at``,
        ``last_finished_at``, ``status``, ``runner``, ``runs``, ``error`` and ``raised``: this
        project's escalations it raised; empty when it never ran); ``next_due_at`` (the next
        period slot, ``None`` when off), ``late`` (on, and never ran or last started more than
        :data:`truthset.jobs.schedule.LATE_AFTER_PERIODS` periods ago: nobody keeps time),
        ``as_of`` (``now``), and the project's ``open`` and ``overdue`` escalations now.
    """
    from truthset.workflow import escalations

    now = now or utcnow()
    last = escalations.last_overdue_check(session, project) or {}
    started = last.get("last_started_at")
    when = timing(period_minutes * 60, datetime.fromisoformat(started) if started else None,
                  now)
    frame = escalations.list_escalations(session, project, status="open", now=now)
    return {
        "enabled": period_minutes > 0, "period_minutes": float(period_minutes),
        "last_started_at": started, "last_finished_at": last.get("last_finished_at"),
        "status": last.get("status", ""), "runner": last.get("runner", ""),
        "runs": int(last.get("runs", 0)), "raised": int(last.get("raised", 0)),
        "error": last.get("error", ""),
        "next_due_at": when.next_due_at.isoformat() if when.next_due_at else None,
        "late": when.late, "as_of": now.isoformat(),
        "open": len(frame), "overdue": int(frame["overdue"].astype(bool).sum()),
    }


def _overdue_period_s(workspace: Workspace) -> float:
    return float(workspace.config.escalation_check_minutes) * 60


register_periodic(PeriodicTask(
    OVERDUE_CHECK, raise_overdue_everywhere, _overdue_period_s,
    "raise overdue escalations one tier (every escalation_check_minutes)"))
