"""Overdue escalations raised on a timer: once per period slot, idempotent, audited and visible;
the in-process scheduler thread, concurrent processes, the setting, the CLI and API, and
procrastinate's periodic task on the real PostgreSQL server. Time is injected, never slept."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from truthset import audit
from truthset.cli.main import app
from truthset.domain.errors import InputError
from truthset.jobs import schedule
from truthset.jobs.schedule import InProcessScheduler, run_due, slot_start
from truthset.store.models import AuditEvent, Escalation, Schedule, utcnow
from truthset.workflow import escalations, queue
from truthset.workflow.escalations import OVERDUE_CHECK
from truthset.workspace import projects, users
from truthset.workspace.workspace import ENV_ESCALATION_CHECK, Workspace
from workflow_support import call, count, make_project

PERIOD = 15 * 60  # the default escalation_check_minutes, in seconds
runner = CliRunner()


def _escalated(ws: Workspace) -> datetime:
    """Project ``chest``: one item escalated to tier 2 (due in 1 h; tier 3 exists above).
    Returns a moment in a period slot where that escalation is overdue."""
    def junior(s: Any, _p: Any) -> None:
        users.add_user(s, username="adj2", role="adjudicator", tier=2)

    make_project(ws, "workflow: consensus\nk: 2\ntarget: 0.9\n"
                     "tiers: {adjudicate: 2}\nescalation: {deadline_hours: 1}\n",
                 n_items=1, extra=junior)
    for name, label in (("r0", "normal"), ("r1", "nodule")):
        task = call(ws, name, queue.next_task).task
        call(ws, name, queue.submit, task.task_id, {"label": label})
    assert count(ws, Escalation) == 1
    return slot_start(utcnow() + timedelta(hours=2), PERIOD) + timedelta(seconds=1)


def _row(ws: Workspace) -> Schedule:
    with ws.sessions() as s:
        row = s.scalars(sa.select(Schedule).where(Schedule.name == OVERDUE_CHECK)).one()
        s.expunge(row)
        return row


def _runs(ws: Workspace) -> int:
    with ws.sessions() as s:
        return int(s.scalar(sa.select(Schedule.runs).where(Schedule.name == OVERDUE_CHECK))
                   or 0)


def _events(ws: Workspace, action: str) -> list[dict[str, Any]]:
    with ws.sessions() as s:
        return [{**e, "after": json.loads(e["after"])} for e in audit.iter_events(s)
                if e["action"] == action]


def test_raised_once_per_slot_idempotent_audited_and_visible(workspace: Workspace) -> None:
    late = _escalated(workspace)
    early = slot_start(utcnow(), PERIOD) + timedelta(seconds=1)
    first = run_due(workspace, OVERDUE_CHECK, now=early)
    assert (first.ran, first.status, first.result["raised"]) == (True, "succeeded", 0)
    assert run_due(workspace, OVERDUE_CHECK, now=early + timedelta(seconds=5)).status == "done"
    second = run_due(workspace, OVERDUE_CHECK, now=late)
    assert (second.ran, second.result) == (True, {"raised": 1, "projects": {"chest": 1},
                                                  "errors": {}})
    assert run_due(workspace, OVERDUE_CHECK, now=late + timedelta(minutes=10)).status == "done"
    # The next slot: the escalation raised a tier is due a full deadline later: nothing new.
    third = run_due(workspace, OVERDUE_CHECK, now=late + timedelta(seconds=PERIOD))
    assert (third.ran, third.result["raised"]) == (True, 0)
    with workspace.sessions() as s:
        rows = s.scalars(sa.select(Escalation).order_by(Escalation.id)).all()
        assert [(e.status, e.from_tier, e.to_tier) for e in rows] == [
            ("raised", 1, 2), ("open", 2, 3)]
        assert escalations.aware(rows[1].due_at) == late + timedelta(hours=1)
    (event,) = _events(workspace, "escalations.raise_overdue")
    assert event["actor"] == "scheduler" and event["after"]["raised"][0]["to_tier"] == 3
    with workspace.sessions() as s:  # every claim and outcome of a run is an audited update
        updates = s.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.entity_type == "schedules"))
        assert updates == 2 * 3 and audit.verify(s).ok
    row = _row(workspace)
    assert (row.runs, row.last_status, row.runner) == (3, "succeeded", "inprocess")
    with workspace.unit("lead") as s:
        p = projects.get_project(s, "chest")
        check = escalations.last_overdue_check(s, p)
        assert check is not None
        assert check["last_started_at"] == (late + timedelta(seconds=PERIOD)).isoformat()
        assert (check["period_minutes"], check["raised"], check["runs"]) == (15.0, 0, 3)
        escalations.report_overdue(s, p, now=late + timedelta(seconds=PERIOD))
    (report,) = _events(workspace, "overdue_report")
    assert report["after"]["last_check_at"] == check["last_finished_at"]


def test_processes_keeping_time_together_run_a_slot_once(workspace: Workspace) -> None:
    late = _escalated(workspace)
    barrier = threading.Barrier(4)
    runs: list[schedule.ScheduleRun] = []
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            barrier.wait()
            runs.append(run_due(workspace, OVERDUE_CHECK, now=late))
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r.status for r in runs) == ["done", "done", "done", "succeeded"]
    assert _row(workspace).runs == 1
    assert count(workspace, Escalation, Escalation.status == "raised") == 1
    assert len(_events(workspace, "escalations.raise_overdue")) == 1


class FakeClock:
    """A settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def set(self, now: datetime) -> None:
        with self.lock:
            self.now = now


def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the scheduler did not get there"
        time.sleep(0.01)


def test_in_process_scheduler_thread_follows_its_clock(workspace: Workspace) -> None:
    late = _escalated(workspace)
    clock = FakeClock(slot_start(utcnow(), PERIOD) + timedelta(seconds=1))
    scheduler = InProcessScheduler(workspace, clock=clock, poll_s=0.01)
    assert scheduler.seconds_to_next() == 0.01
    scheduler.start()
    try:
        _until(lambda: _runs(workspace) == 1)  # it ticks at once
        time.sleep(0.05)  # ... and not again within the slot
        assert _runs(workspace) == 1
        clock.set(late)
        _until(lambda: count(workspace, Escalation, Escalation.status == "raised") == 1)
        clock.set(late + timedelta(seconds=PERIOD))
        _until(lambda: _runs(workspace) == 3)
    finally:
        scheduler.stop()
    row = _row(workspace)
    assert escalations.aware(row.last_slot_at) == slot_start(late, PERIOD) + timedelta(
        seconds=PERIOD)
    assert count(workspace, Escalation) == 2  # raised once, never twice
    # Without an injected poll it waits for the next slot boundary by the clock (looking at
    # least once a minute, so a changed period is noticed).
    near = slot_start(late, PERIOD) + timedelta(seconds=PERIOD - 30)
    assert InProcessScheduler(workspace, clock=lambda: near).seconds_to_next() == 30
    assert InProcessScheduler(workspace, clock=lambda: late).seconds_to_next() == 60


def test_the_server_keeps_time_while_it_runs(workspace: Workspace,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from truthset.api.app import create_app

    monkeypatch.setenv("TRUTHSET_JOBS_BACKEND", "inprocess")
    with TestClient(create_app(workspace)) as c:  # runs the app's lifespan
        assert c.get("/healthz").status_code == 200
        _until(lambda: _runs(workspace) == 1)  # it ticked at start
        assert any(t.name == "truthset-scheduler" for t in threading.enumerate())
    assert not any(t.name == "truthset-scheduler" for t in threading.enumerate())
    row = _row(workspace)
    assert (row.runner, row.last_status, row.last_result["raised"]) == ("inprocess",
                                                                         "succeeded", 0)


# -- the setting --------------------------------------------------------------------------------
def test_the_period_is_a_workspace_setting(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ESCALATION_CHECK, raising=False)
    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    config = tmp_path / "ws" / "truthset.yaml"
    raw = yaml.safe_load(config.read_text())
    assert raw["escalation_check_minutes"] == 15.0
    config.write_text(yaml.safe_dump({**raw, "escalation_check_minutes": 5}))
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.config.escalation_check_minutes == 5.0
        assert schedule.periodic_tasks()[OVERDUE_CHECK].period_s(ws) == 300.0
    monkeypatch.setenv(ENV_ESCALATION_CHECK, "0.5")
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.config.escalation_check_minutes == 0.5
    monkeypatch.setenv(ENV_ESCALATION_CHECK, "0")
    with Workspace.open(tmp_path / "ws") as ws:
        assert run_due(ws, OVERDUE_CHECK).status == "off"
        assert schedule.start_in_process(ws) is None  # nothing to keep time for
    monkeypatch.setenv(ENV_ESCALATION_CHECK, "-1")
    with pytest.raises(InputError) as bad:
        Workspace.open(tmp_path / "ws")
    assert bad.value.field == "escalation_check_minutes"
    monkeypatch.delenv(ENV_ESCALATION_CHECK)
    config.write_text(yaml.safe_dump({**raw, "escalation_check_minutes": "often"}))
    with pytest.raises(InputError, match="number of minutes"):
        Workspace.open(tmp_path / "ws")
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("TRUTHSET_JOBS_BACKEND", "procrastinate")
    with Workspace.open(tmp_path / "ws") as ws:  # procrastinate's workers keep time then
        assert schedule.start_in_process(ws) is None
    monkeypatch.setenv("TRUTHSET_JOBS_BACKEND", "inprocess")
    with Workspace.open(tmp_path / "ws") as ws:
        started = schedule.start_in_process(ws)
        assert started is not None
        started.stop()


# -- CLI and API ----------------------------------------------------------------------------------
def test_cli_and_api_show_when_the_check_last_ran(workspace: Workspace) -> None:
    from test_api_support import bearer, client
    from truthset.auth import memberships, tokens

    late = _escalated(workspace)
    root = str(workspace.root)
    shown = runner.invoke(app, ["escalations", "chest", "--workspace", root])
    assert shown.exit_code == 0, shown.output
    assert "Overdue check: every 15 min; it has not run yet." in shown.output
    run_due(workspace, OVERDUE_CHECK, now=late)
    shown = runner.invoke(app, ["escalations", "chest", "--workspace", root])
    assert f"last ran {late.isoformat()} by inprocess (succeeded), raised 1 here." in \
        " ".join(shown.output.split())
    listed = runner.invoke(app, ["jobs", "schedules", "--json", "--workspace", root])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert (entry["name"], entry["runs"], entry["period_minutes"]) == (OVERDUE_CHECK, 1, 15.0)
    assert entry["result"]["projects"] == {"chest": 1}
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        lead = users.add_user(s, username="lead", role="annotator")
        memberships.add_member(s, p, lead, "manager")
        secret = tokens.create_token(s, lead, name="t").secret
    body = client(workspace).get("/api/v1/projects/chest/escalations/check",
                                 headers=bearer(secret)).json()
    assert (body["enabled"], body["period_minutes"], body["status"], body["raised"]) == (
        True, 15.0, "succeeded", 1)
    assert body["last_started_at"] == late.isoformat()
    assert (body["open"], body["overdue"]) == (1, 0)  # the raised one is due an hour later


def test_timing_says_when_next_due_and_when_late() -> None:
    noon = datetime(2025, 3, 4, 12, 7, 30, tzinfo=UTC)
    quarter = datetime(2025, 3, 4, 12, 15, tzinfo=UTC)  # slots of 15 min: :00, :15, :30, :45
    assert schedule.timing(PERIOD, None, noon) == schedule.Timing(quarter, True)  # never ran
    # Two whole periods since the last start is still in time; a second more is late.
    on_time = noon - timedelta(seconds=2 * PERIOD)
    assert schedule.timing(PERIOD, on_time, noon) == schedule.Timing(quarter, False)
    assert schedule.timing(PERIOD, on_time - timedelta(seconds=1), noon).late
    assert not schedule.timing(PERIOD, noon - timedelta(minutes=1), noon).late
    # Hourly: due on the hour; 0 (off) is never due and never late.
    assert schedule.timing(3600, noon, noon).next_due_at == datetime(2025, 3, 4, 13, tzinfo=UTC)
    assert schedule.timing(0, None, noon) == schedule.Timing(None, False)


def test_cli_and_api_say_when_the_check_is_late_or_off(workspace: Workspace,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from test_api_support import bearer, client
    from truthset.auth import memberships, tokens

    _escalated(workspace)
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        lead = users.add_user(s, username="lead", role="annotator")
        memberships.add_member(s, p, lead, "manager")
        head = bearer(tokens.create_token(s, lead, name="t").secret)
    c = client(workspace)  # no lifespan: nothing keeps time but this test
    root = str(workspace.root)

    def check() -> dict[str, Any]:
        answer = c.get("/api/v1/projects/chest/escalations/check", headers=head)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def line() -> str:
        shown = runner.invoke(app, ["escalations", "chest", "--workspace", root])
        assert shown.exit_code == 0, shown.output
        return " ".join(shown.output.split())

    never = check()
    assert (never["last_started_at"], never["late"], never["enabled"]) == (None, True, True)
    # Last run 31 minutes ago: more than two 15-minute periods, so nobody keeps time.
    stale = utcnow() - timedelta(minutes=31)
    assert run_due(workspace, OVERDUE_CHECK, now=stale).status == "succeeded"
    body = check()
    assert body["last_started_at"] == stale.isoformat() and body["late"] is True
    assert "Late: more than two periods without a run" in line()
    # A run now: in time; next due at the next quarter hour after the server's clock.
    assert run_due(workspace, OVERDUE_CHECK).status == "succeeded"
    body = check()
    as_of, due = (datetime.fromisoformat(body[k]) for k in ("as_of", "next_due_at"))
    assert body["late"] is False and body["raised"] == 0
    assert due == slot_start(as_of, PERIOD) + timedelta(seconds=PERIOD)
    assert f"Next due {body['next_due_at']}." in line() and "Late" not in line()
    # Switched off: never due, not late, raised only by hand.
    workspace.config = replace(workspace.config, escalation_check_minutes=0)  # the server's
    monkeypatch.setenv(ENV_ESCALATION_CHECK, "0")  # the CLI opens the workspace afresh
    body = check()
    assert (body["enabled"], body["next_due_at"], body["late"]) == (False, None, False)
    assert "off (escalation_check_minutes: 0)" in line()
    assert "raised only by hand" in line()


# -- procrastinate: the periodic task on PostgreSQL, run by a separate worker process -----------
@pytest.fixture
def pg_workspace(tmp_path: Path, database_url: str) -> Iterator[Workspace]:
    if not database_url.startswith("postgresql"):
        pytest.skip("procrastinate needs PostgreSQL")
    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    try:
        yield ws
    finally:
        ws.close()


def _defer_periodic(ws: Workspace, timestamp: int) -> int | None:
    """Defer the periodic task for ``timestamp`` the way a worker's periodic deferrer does;
    returns procrastinate's job id (``None``: that timestamp was deferred already)."""
    from procrastinate.periodic import PeriodicDeferrer

    from truthset.jobs.queue import PERIODIC_TASK, build_app, conninfo

    proc = build_app(conninfo(ws.engine), ws)
    (task,) = [t for t in proc.periodic_registry.periodic_tasks.values()
               if t.task.name == PERIODIC_TASK]

    async def defer() -> None:
        async with proc.open_async():
            await PeriodicDeferrer(proc.periodic_registry).defer_jobs([(task, timestamp)])

    asyncio.run(defer())
    with ws.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT max(id) FROM procrastinate_jobs WHERE task_name = :t "
            "AND (args->>'timestamp')::bigint = :ts"), {"t": PERIODIC_TASK, "ts": timestamp}
        ).scalar()


def _worker(ws: Workspace) -> None:
    env = {**os.environ, "TRUTHSET_JOBS_BACKEND": "procrastinate"}
    done = subprocess.run(
        [sys.executable, "-m", "truthset.cli.main", "jobs", "worker", "--once",
         "--workspace", str(ws.root)], env=env, capture_output=True, text=True, timeout=120,
        cwd=ws.root)
    assert done.returncode == 0, done.stderr[-2000:]


def test_procrastinate_periodic_task_raises_overdue_escalations(pg_workspace: Workspace
                                                                ) -> None:
    ws = pg_workspace
    late = _escalated(ws)
    assert runner.invoke(app, ["jobs", "setup", "--workspace", str(ws.root)]).exit_code == 0
    stamp = int(late.timestamp())
    assert _defer_periodic(ws, stamp) is not None
    _worker(ws)
    row = _row(ws)
    assert (row.runner, row.last_status) == ("procrastinate", "succeeded")
    assert escalations.aware(row.last_slot_at) == slot_start(late, PERIOD)
    assert count(ws, Escalation, Escalation.status == "raised") == 1
    # procrastinate defers one job per timestamp, whoever asks ...
    with ws.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM procrastinate_periodic_defers")
                              ).scalar()
    _defer_periodic(ws, stamp)
    with ws.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM procrastinate_periodic_defers")
                            ).scalar() == before
    # ... and a later minute of the same slot finds the slot done.
    runs = row.runs
    _defer_periodic(ws, stamp + 60)
    _worker(ws)
    assert _row(ws).runs == runs
    _defer_periodic(ws, stamp + PERIOD)  # the next slot runs; nothing new is overdue
    _worker(ws)
    row = _row(ws)
    assert row.runs == runs + 1 and row.last_result["raised"] == 0
    assert count(ws, Escalation, Escalation.status == "raised") == 1
    assert len(_events(ws, "escalations.raise_overdue")) == 1
    with ws.sessions() as s:
        assert audit.verify(s).ok
