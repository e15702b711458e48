"""Background jobs: in-process runner (retries, cancellation, idempotency), the job kinds, the
CLI and API, and procrastinate on the real PostgreSQL server with a separate worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from test_api_support import bearer, client
from truthset import audit
from truthset.auth import memberships, tokens
from truthset.cli.main import app
from truthset.domain.errors import ConflictError, InputError
from truthset.jobs import service as jobs
from truthset.jobs.service import JobContext, JobKind, register_kind
from truthset.prelabel import service as prelabel
from truthset.store.models import Consensus, Job
from truthset.workflow.annotations import record_annotation
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

runner = CliRunner()
SCHEMA = """name: finding
kind: classification
mode: single
classes:
  - name: normal
  - name: nodule
"""

# -- test-only job kinds (registered like the built-in ones) ---------------------------------------
_FLAKY_CALLS: dict[tuple[str, int], int] = {}


def _flaky(ctx: JobContext) -> dict[str, Any]:
    """Fails on its first attempt (a transient error), succeeds on the second."""
    key = (str(ctx.workspace.root), ctx.job_id)
    _FLAKY_CALLS[key] = _FLAKY_CALLS.get(key, 0) + 1
    if _FLAKY_CALLS[key] == 1:
        raise ConnectionError("database went away")
    return {"calls": _FLAKY_CALLS[key]}


def _bad_input(ctx: JobContext) -> dict[str, Any]:
    raise InputError("this will never work", field="params.x")


def _slow(ctx: JobContext) -> dict[str, Any]:
    for k in range(2000):
        ctx.progress(k, 2000, f"step {k}")
        time.sleep(0.005)
    return {}


for _kind in (JobKind("test-flaky", _flaky, lambda p: None, "test"),
              JobKind("test-bad", _bad_input, lambda p: None, "test"),
              JobKind("test-slow", _slow, lambda p: None, "test")):
    register_kind(_kind)


def _seed(ws: Workspace, tmp_path: Path, n: int = 4) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for k in range(n):
        a = np.full((16, 16), 10, np.uint8)
        if k % 2:
            a[4:12, 4:12] = 240
        Image.fromarray(a).save(folder / f"i{k}.png")
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="p", name="P", schema_text=SCHEMA)
        readers = [users.add_user(s, username=f"r{k}", role="annotator") for k in range(2)]
        boss = users.add_user(s, username="boss", role="annotator")
        memberships.add_member(s, p, boss, "manager")
        imports.import_items(s, ws.blobs, p, [folder])
        from truthset.store.models import Item

        for item in s.scalars(sa.select(Item).order_by(Item.id)).all()[: n // 2]:
            for r in readers:
                record_annotation(s, p, item=item, author=r, payload={"label": "nodule"})
        prelabel.register_model(s, p, name="thr", version="1", kind="classical",
                                classes=["normal", "nodule"],
                                config={"thresholds": {"nodule": [0.5, 1.0]},
                                        "positive": "nodule", "negative": "normal",
                                        "min_size": 4})


def _enqueue(ws: Workspace, kind: str, params: dict[str, Any], **kw: Any) -> int:
    with ws.unit("boss") as s:
        project = projects.get_project(s, "p")
        return jobs.enqueue(ws, s, kind, {"project": "p", **params}, project=project,
                            actor="boss", **kw).id


def _job(ws: Workspace, job_id: int) -> Job:
    with ws.sessions() as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
        return job


# -- in-process -----------------------------------------------------------------------------------
def test_consensus_and_export_jobs_run_in_process(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    job_id = _enqueue(workspace, "consensus", {"method": "mv"})
    done = jobs.wait_for(workspace, job_id)
    assert done.status == "succeeded", done.error
    assert done.result == {"method": "mv", "items": 2, "final": 2}
    assert (done.progress_done, done.progress_total, done.attempts) == (1, 1, 1)
    with workspace.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Consensus)) == 2
        updates = [e for e in audit.iter_events(s) if e["entity_type"] == "jobs"]
        assert [e["action"] for e in updates][:1] == ["create"] and len(updates) >= 3
    export = jobs.wait_for(workspace, _enqueue(workspace, "export",
                                               {"name": "reads.csv"}))
    assert export.status == "succeeded", export.error
    text = (workspace.root / "exports" / "reads.csv").read_text()
    assert text.splitlines()[0].startswith("annotation_id,item,annotator,label")
    assert len(text.splitlines()) == 5
    for bad in ("../../etc/passwd", "/tmp/x.csv", ".."):
        with pytest.raises(InputError) as err:
            _enqueue(workspace, "export", {"name": bad})
        assert err.value.field == "params.name"
    with pytest.raises(InputError, match="unknown job kind"):
        _enqueue(workspace, "mine-bitcoin", {})


def test_release_job_builds_once(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    assert jobs.wait_for(workspace, _enqueue(workspace, "consensus", {})).status == "succeeded"
    params = {"name": "r1", "exclude_unresolved": "not read yet", "folder": "r1"}
    first = jobs.wait_for(workspace, _enqueue(workspace, "release", params))
    assert first.status == "succeeded", first.error
    assert (workspace.root / "releases" / "r1" / "manifest.json").is_file()
    again = jobs.wait_for(workspace, _enqueue(workspace, "release", params))  # a re-run
    assert again.status == "succeeded", again.error
    assert again.result == first.result
    with pytest.raises(InputError) as err:
        _enqueue(workspace, "release", {"name": "r2", "folder": "../r2"})
    assert err.value.field == "params.folder"


def test_transient_failures_are_retried_and_bad_input_is_not(workspace: Workspace,
                                                             tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    run = jobs.InProcessRunner(workspace, backoff_s=0.01)
    with workspace.unit("boss") as s:
        flaky = jobs.enqueue(workspace, s, "test-flaky", {}, actor="boss").id
        bad = jobs.enqueue(workspace, s, "test-bad", {}, actor="boss").id
    # the after-commit runner and this one race for the job: exactly one claims each attempt
    run.run(flaky)
    state = jobs.wait_for(workspace, flaky)
    assert state.status == "succeeded" and state.attempts == 2
    assert state.result == {"calls": 2}
    run.run(bad)
    state = jobs.wait_for(workspace, bad)
    assert (state.status, state.attempts) == ("failed", 1)
    assert "this will never work" in state.error
    assert jobs.execute_job(workspace, flaky).status == "succeeded"  # not run again
    assert _FLAKY_CALLS[(str(workspace.root), flaky)] == 2


def test_cancelling_queued_and_running_jobs(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    with workspace.unit("boss") as s:
        job = Job(kind="consensus", params={"project": "p"}, status="queued",
                  backend="inprocess", created_by="boss")
        s.add(job)
        s.flush()
        queued = job.id
    with workspace.unit("boss") as s:
        assert jobs.cancel(s, queued).status == "cancelled"
    assert jobs.execute_job(workspace, queued).status == "cancelled"  # never runs
    slow = _enqueue(workspace, "test-slow", {})
    deadline = time.monotonic() + 20
    while _job(workspace, slow).progress_done < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    with workspace.unit("boss") as s:
        assert jobs.cancel(s, slow).cancel_requested
    final = jobs.wait_for(workspace, slow, timeout_s=20)
    assert final.status == "cancelled" and 3 <= final.progress_done < 2000
    with workspace.unit("boss") as s, pytest.raises(ConflictError):
        jobs.cancel(s, slow)


def test_stale_running_jobs_are_requeued_and_pending_ones_run(workspace: Workspace,
                                                                tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    with workspace.unit("boss") as s:
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        dead = Job(kind="acceptance", params={"project": "p"}, status="running", attempts=1,
                   backend="inprocess", heartbeat_at=long_ago, started_at=long_ago)
        spent = Job(kind="acceptance", params={"project": "p"}, status="running", attempts=3,
                    backend="inprocess", heartbeat_at=long_ago, started_at=long_ago)
        alive = Job(kind="acceptance", params={"project": "p"}, status="running", attempts=1,
                    backend="inprocess", heartbeat_at=datetime.now(UTC))
        s.add_all([dead, spent, alive])
        s.flush()
        ids = dead.id, spent.id, alive.id
    with workspace.unit("boss") as s:
        assert jobs.requeue_stale(s, older_than_s=60) == [ids[0]]
    assert [_job(workspace, i).status for i in ids] == ["queued", "failed", "running"]
    assert jobs.run_pending(workspace) == [(ids[0], "succeeded")]
    assert _job(workspace, ids[0]).attempts == 2


def test_idempotency_key(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    first = _enqueue(workspace, "acceptance", {}, idempotency_key="k1")
    assert _enqueue(workspace, "acceptance", {}, idempotency_key="k1") == first
    with pytest.raises(ConflictError):
        _enqueue(workspace, "consensus", {}, idempotency_key="k1")
    assert jobs.wait_for(workspace, first).status == "succeeded"


# -- CLI and API ----------------------------------------------------------------------------------
def test_cli_runs_and_lists_jobs(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    w = ["--workspace", str(workspace.root)]
    r = runner.invoke(app, ["prelabel", "run", "-p", "p", "--model", "thr", *w])
    assert r.exit_code == 0, r.output
    assert '"drafted": 2' in r.output and "succeeded" in r.output
    r = runner.invoke(app, ["jobs", "submit", "consensus", "-p", "p", "--param", "method=mv",
                            *w])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["jobs", "list", "-p", "p", "--json", *w])
    assert r.exit_code == 0 and r.output.count('"status": "succeeded"') == 2
    r = runner.invoke(app, ["jobs", "show", "1", *w])
    assert r.exit_code == 0 and "prelabel" in r.output
    r = runner.invoke(app, ["jobs", "cancel", "1", *w])
    assert r.exit_code == 4 and "finished" in r.output
    r = runner.invoke(app, ["jobs", "submit", "export", "-p", "p", "--param", "name=../x", *w])
    assert r.exit_code == 2 and "params.name" in r.output
    r = runner.invoke(app, ["prelabel", "acceptance", "-p", "p", "--json", *w])
    assert r.exit_code == 0 and '"new_outcomes": 0' in r.output
    r = runner.invoke(app, ["prelabel", "pause", "nodule", "-p", "p", "--as", "r0",
                            "--note", "x", *w])
    assert r.exit_code == 5  # a reader is not a manager
    r = runner.invoke(app, ["prelabel", "pause", "nodule", "-p", "p", "--as", "boss",
                            "--note", "trial", *w])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["prelabel", "resume", "nodule", "-p", "p", "--as", "boss",
                            "--note", "done", *w])
    assert r.exit_code == 0 and "active" in r.output
    r = runner.invoke(app, ["prelabel", "device"])
    assert r.exit_code == 0 and "CPUExecutionProvider" in r.output


def test_api_submit_poll_cancel(workspace: Workspace, tmp_path: Path) -> None:
    _seed(workspace, tmp_path)
    with workspace.unit("admin") as s:
        token = tokens.create_token(s, users.get_user(s, "boss"), name="t").secret
        reader = tokens.create_token(s, users.get_user(s, "r0"), name="t").secret
        p = projects.get_project(s, "p")
        memberships.add_member(s, p, users.get_user(s, "r0"), "annotator")
    c = client(workspace)
    h = bearer(token)
    r = c.post("/api/v1/projects/p/jobs", headers=h,
               json={"kind": "prelabel", "params": {"model": "thr"}})
    assert r.status_code == 201, r.text
    job = jobs.wait_for(workspace, r.json()["id"])
    assert job.status == "succeeded"
    got = c.get(f"/api/v1/projects/p/jobs/{job.id}", headers=h).json()
    assert got["progress"] == {"done": 2, "total": 2} and got["result"]["drafted"] == 2
    assert c.get("/api/v1/projects/p/jobs", headers=bearer(reader)).status_code == 403
    r = c.post("/api/v1/projects/p/jobs", headers=h, json={"kind": "export",
                                                           "params": {"name": "/etc/x"}})
    assert r.status_code == 422 and r.json()["field"] == "params.name"
    r = c.post("/api/v1/projects/p/jobs", headers=h, json={"kind": "prelabel",
                                                           "params": {}})
    assert r.status_code == 422 and r.json()["field"] == "params.model"
    r = c.post(f"/api/v1/projects/p/jobs/{job.id}/cancel", headers=h)
    assert r.status_code == 409
    models = c.get("/api/v1/projects/p/prelabel/models", headers=h).json()
    assert [m["name"] for m in models] == ["thr"]
    acc = c.get("/api/v1/projects/p/prelabel/acceptance", headers=h).json()
    assert acc["min_acceptance"] == 0.7 and acc["classes"] == []
    r = c.post("/api/v1/projects/p/prelabel/classes/nodule/resume", headers=h,
               json={"note": "fine"})
    assert r.status_code == 422 and "not paused" in r.json()["detail"]


def test_jobs_page_walks_a_projects_jobs_newest_first(workspace: Workspace) -> None:
    statuses = ["queued", "running", "succeeded", "failed", "cancelled"]
    with workspace.unit("admin") as s:
        p = projects.create_project(s, key="p", name="P", schema_text=SCHEMA)
        q = projects.create_project(s, key="q", name="Q", schema_text=SCHEMA)
        boss = users.add_user(s, username="boss", role="annotator")
        reader = users.add_user(s, username="r0", role="annotator")
        memberships.add_member(s, p, boss, "manager")
        memberships.add_member(s, p, reader, "annotator")
        token = tokens.create_token(s, boss, name="t").secret
        reader_token = tokens.create_token(s, reader, name="t").secret
        # Eleven jobs of p interleaved with jobs of q (and one of no project).
        mine: list[tuple[int, str]] = []
        for k in range(11):
            row = Job(kind="acceptance", params={"project": "p"}, project_id=p.id,
                      status=statuses[k % 5], backend="inprocess", created_by="boss")
            other = Job(kind="acceptance", params={"project": "q"}, project_id=q.id,
                        status="running", backend="inprocess", created_by="boss")
            s.add_all([row, other] + ([Job(kind="acceptance", params={}, status="running",
                                           backend="inprocess")] if k == 5 else []))
            s.flush()
            mine.append((row.id, row.status))
    # Independent truth: the ids written for p, newest (largest) first.
    newest_first = [i for i, _ in sorted(mine, reverse=True)]
    running = [i for i, st in sorted(mine, reverse=True) if st == "running"]

    def walk(limit: int, status: str | None = None) -> tuple[list[int], list[int]]:
        seen: list[int] = []
        sizes: list[int] = []
        cursor: str | None = None
        while True:
            with workspace.sessions() as s:
                rows, cursor = jobs.jobs_page(s, projects.get_project(s, "p"), status=status,
                                              cursor=cursor, limit=limit)
            seen += [r.id for r in rows]
            sizes.append(len(rows))
            if cursor is None:
                return seen, sizes
    assert walk(4) == (newest_first, [4, 4, 3])
    assert walk(11) == (newest_first, [11])
    assert walk(50, "running") == (running, [len(running)])
    with workspace.sessions() as s, pytest.raises(InputError) as err:
        jobs.jobs_page(s, projects.get_project(s, "p"), cursor="not-a-cursor")
    assert err.value.field == "cursor"
    with workspace.sessions() as s, pytest.raises(InputError) as err:
        jobs.jobs_page(s, projects.get_project(s, "p"), status="done")
    assert err.value.field == "status"

    # The API gives the same pages (and /jobs/page is not read as a job id).
    c = client(workspace)
    h = bearer(token)
    got: list[int] = []
    cursor: str | None = None
    while True:
        r = c.get("/api/v1/projects/p/jobs/page", headers=h,
                  params={"limit": 5, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        got += [j["id"] for j in r.json()["items"]]
        assert all(j["params"] == {"project": "p"} for j in r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert got == newest_first
    r = c.get("/api/v1/projects/p/jobs/page", headers=h, params={"status": "running"})
    assert [j["id"] for j in r.json()["items"]] == running
    assert [j["status"] for j in r.json()["items"]] == ["running"] * len(running)
    r = c.get("/api/v1/projects/p/jobs/page", headers=h, params={"status": "done"})
    assert r.status_code == 422 and r.json()["field"] == "status"
    r = c.get("/api/v1/projects/p/jobs/page", headers=h, params={"cursor": "zzz"})
    assert r.status_code == 422 and r.json()["field"] == "cursor"
    r = c.get("/api/v1/projects/p/jobs/page", headers=bearer(reader_token))
    assert r.status_code == 403


# -- procrastinate on PostgreSQL, with a separate worker process ----------------------------------
@pytest.fixture
def pg_workspace(tmp_path: Path, database_url: str) -> Iterator[Workspace]:
    if not database_url.startswith("postgresql"):
        pytest.skip("procrastinate needs PostgreSQL")
    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    try:
        yield ws
    finally:
        ws.close()


def _worker(ws: Workspace) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRUTHSET_JOBS_BACKEND": "procrastinate"}
    return subprocess.run(
        [sys.executable, "-m", "truthset.cli.main", "jobs", "worker", "--once",
         "--workspace", str(ws.root)], env=env, capture_output=True, text=True, timeout=120,
        cwd=ws.root)


def test_procrastinate_worker_process_runs_the_queue(pg_workspace: Workspace, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ws = pg_workspace
    _seed(ws, tmp_path)
    r = runner.invoke(app, ["jobs", "setup", "--workspace", str(ws.root)])
    assert r.exit_code == 0 and "installed" in r.output
    monkeypatch.setenv(jobs.ENV_BACKEND, "procrastinate")
    draft = _enqueue(ws, "prelabel", {"model": "thr"})
    consensus = _enqueue(ws, "consensus", {"method": "mv"})
    cancelled = _enqueue(ws, "consensus", {"method": "ds"})
    with ws.unit("boss") as s:
        jobs.cancel(s, cancelled)
    # transactional enqueue: a rolled-back request leaves no job in the queue either
    with pytest.raises(RuntimeError), ws.unit("boss") as s:
        jobs.enqueue(ws, s, "consensus", {"project": "p"}, actor="boss")
        raise RuntimeError("the request failed after queueing")
    with ws.engine.connect() as conn:
        queued = conn.execute(sa.text(
            "SELECT args->>'job_id' FROM procrastinate_jobs WHERE status = 'todo' "
            "ORDER BY id")).scalars().all()
    assert [int(x) for x in queued] == [draft, consensus, cancelled]
    assert _job(ws, draft).status == "queued" and _job(ws, draft).backend == "procrastinate"
    done = _worker(ws)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _job(ws, draft).status == "succeeded"
    assert _job(ws, draft).result["drafted"] == 2
    assert _job(ws, consensus).status == "succeeded"
    assert _job(ws, cancelled).status == "cancelled"
    with ws.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Consensus)) == 2
        assert audit.verify(s).ok
    with ws.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM procrastinate_jobs "
                                    "WHERE status IN ('todo', 'doing')")).scalar()
    assert left == 0
    # a re-delivered job finds it finished and changes nothing
    assert jobs.execute_job(ws, draft, worker="again").status == "succeeded"
    assert _job(ws, draft).attempts == 1


def test_procrastinate_needs_postgresql(workspace: Workspace, tmp_path: Path) -> None:
    if workspace.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite case")
    _seed(workspace, tmp_path)
    with pytest.raises(InputError, match="needs a PostgreSQL database"):
        _enqueue(workspace, "consensus", {}, backend="procrastinate")
    with workspace.sessions() as s:  # the refused job was rolled back with its transaction
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
