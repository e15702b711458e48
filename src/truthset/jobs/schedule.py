"""Periodic tasks: work that runs on a timer, with no person asking.

A periodic task (:class:`PeriodicTask`) has a name, a function ``run(workspace, now) -> result``
and a period read from the workspace's settings at every tick (a changed setting takes effect at
the next tick; 0 switches the task off). The built-in one raises overdue escalations
(:data:`truthset.workflow.escalations.OVERDUE_CHECK`, every ``escalation_check_minutes``; see
:mod:`truthset.jobs.handlers`).

**Slots.** Time is cut into slots of one period, aligned on the Unix epoch (a 15-minute period:
:00, :15, :30, :45 UTC). :func:`run_due` runs a task when the slot that ``now`` falls in has not
run yet: it claims the slot on the task's ``schedules`` row under a lock (the row lock, and a
lock key for the row's first creation), so every process that keeps time may call it and the
task still runs **once per slot**. A run is: the claim (one transaction), the task's function
(its own transactions), then the outcome on the row (one transaction: status, result, error,
finish time, run count). Both row updates are audited like any write, so every run is in the
audit log; what the task changes is audited where it changes it. A run that dies between claim
and outcome leaves ``last_status`` ``running``; the next slot runs again, which is safe because
periodic tasks are idempotent.

**Who keeps time.**

- The embedded default: :class:`InProcessScheduler`, a daemon thread of the process that serves
  the API (``truthset serve`` starts it when the jobs backend is ``inprocess``;
  :func:`start_in_process`). With several server processes each keeps time; the slot claim
  makes the work happen once.
- procrastinate: the task ``truthset.run_schedules`` is registered as a procrastinate periodic
  task (every minute) by :func:`truthset.jobs.queue.build_app`; procrastinate defers it once per
  minute across all workers and :func:`run_all_due` decides what is due. Periods are then
  effectively whole minutes.

**Late.** A task that is on and has not started for more than :data:`LATE_AFTER_PERIODS`
periods (or never) is late (:func:`timing`): nobody is keeping time for it. The dashboards, the
``escalations`` command and ``jobs schedules`` say so.

Every function takes ``now`` (or a clock), so tests inject time instead of sleeping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from truthset.store.db import lock_key
from truthset.store.models import Schedule, utcnow
from truthset.workspace.workspace import Workspace

log = logging.getLogger("truthset.jobs")

#: The audit actor of scheduled runs.
SCHEDULER = "scheduler"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PeriodicTask:
    """A task run once per period: ``run(workspace, now)`` returns a JSON-ready result;
    ``period_s(workspace)`` is its period in seconds (0: off)."""

    name: str
    run: Callable[[Workspace, datetime], dict[str, Any]]
    period_s: Callable[[Workspace], float]
    description: str = ""


#: Registered periodic tasks (filled by :mod:`truthset.jobs.handlers`).
PERIODIC: dict[str, PeriodicTask] = {}


def register_periodic(task: PeriodicTask) -> None:
    """Make a periodic task known to :func:`run_due` and the schedulers."""
    PERIODIC[task.name] = task


def periodic_tasks() -> Mapping[str, PeriodicTask]:
    """The registered periodic tasks (the built-in ones included)."""
    from truthset.jobs import handlers  # noqa: F401  (registers the built-in tasks)

    return PERIODIC


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def slot_start(now: datetime, period_s: float) -> datetime:
    """Start of the period slot ``now`` falls in (slots are aligned on the Unix epoch).

    Raises
    ------
    ValueError
        ``period_s`` is not positive.
    """
    if not period_s > 0:
        raise ValueError("a slot needs a positive period")
    elapsed = (_aware(now) - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=math.floor(elapsed / period_s) * period_s)


#: A periodic task that has not started for more than this many periods is late: no process
#: (``truthset serve``, a procrastinate worker, cron) is keeping time for it.
LATE_AFTER_PERIODS = 2


@dataclass(frozen=True)
class Timing:
    """Where a periodic task stands against the clock.

    Attributes
    ----------
    next_due_at:
        Start of the next period slot (when the task is next due); ``None`` when it is off.
    late:
        On, and it never ran or last started more than :data:`LATE_AFTER_PERIODS` periods
        before ``now``.
    """

    next_due_at: datetime | None
    late: bool


def timing(period_s: float, last_started_at: datetime | None, now: datetime) -> Timing:
    """When a task of period ``period_s`` (0: off) is next due, and whether it is late.

    Parameters
    ----------
    period_s:
        The task's period in seconds as configured now (0 or less: off).
    last_started_at:
        When its last run started (``None``: never).
    now:
        The moment to judge at (UTC).
    """
    if period_s <= 0:
        return Timing(None, False)
    now = _aware(now)
    due = slot_start(now, period_s) + timedelta(seconds=period_s)
    if last_started_at is None:
        return Timing(due, True)
    since = (now - _aware(last_started_at)).total_seconds()
    return Timing(due, since > LATE_AFTER_PERIODS * period_s)


@dataclass(frozen=True)
class ScheduleRun:
    """What one call of :func:`run_due` did for one task."""

    name: str
    ran: bool
    slot_at: datetime | None
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _row(session: Any, name: str) -> Schedule | None:
    return session.scalar(select(Schedule).where(Schedule.name == name).with_for_update()
                          .execution_options(populate_existing=True))


def run_due(workspace: Workspace, name: str, *, now: datetime | None = None,
            runner: str = "inprocess") -> ScheduleRun:
    """Run periodic task ``name`` if the slot ``now`` falls in has not run yet.

    Returns
    -------
    ScheduleRun
        ``ran=False`` with status ``off`` (period 0) or ``done`` (this slot ran already);
        else the run's ``succeeded``/``failed`` status, result and error. A failing task is
        recorded and logged, never raised: the next slot tries again.

    Raises
    ------
    KeyError
        No periodic task has that name.
    """
    task = periodic_tasks()[name]
    now = _aware(now or utcnow())
    period = float(task.period_s(workspace))
    if period <= 0:
        return ScheduleRun(name, False, None, "off")
    slot = slot_start(now, period)
    with workspace.unit(SCHEDULER) as session:
        lock_key(session, "schedule", name)
        row = _row(session, name)
        if row is None:
            row = Schedule(name=name)
            session.add(row)
        elif row.last_slot_at is not None and _aware(row.last_slot_at) >= slot:
            return ScheduleRun(name, False, slot, "done")
        row.period_s, row.last_slot_at, row.last_started_at = period, slot, now
        row.last_status, row.runner = "running", runner
    started = time.monotonic()
    try:
        result, status, error = dict(task.run(workspace, now)), "succeeded", ""
    except Exception as exc:  # recorded on the row and logged; the next slot runs again
        result, status = {}, "failed"
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("periodic task %s failed: %s", name, type(exc).__name__)
    finished = now + timedelta(seconds=time.monotonic() - started)
    with workspace.unit(SCHEDULER) as session:
        row = _row(session, name)
        assert row is not None
        row.last_finished_at, row.last_status = finished, status
        row.last_result, row.last_error, row.runs = result, error, row.runs + 1
    return ScheduleRun(name, True, slot, status, result, error)


def run_all_due(workspace: Workspace, *, now: datetime | None = None,
                runner: str = "inprocess", names: Iterable[str] | None = None
                ) -> list[ScheduleRun]:
    """:func:`run_due` for every registered periodic task (or those ``names``)."""
    now = _aware(now or utcnow())
    return [run_due(workspace, name, now=now, runner=runner)
            for name in (names if names is not None else sorted(periodic_tasks()))]


def schedule_rows(workspace: Workspace) -> list[dict[str, Any]]:
    """Every registered periodic task with its period, last run, next slot and whether it is
    late (:func:`timing`) (CLI, API)."""
    tasks = periodic_tasks()
    with workspace.sessions() as session:
        rows = {r.name: r for r in session.scalars(select(Schedule))}
    out = []
    for name in sorted(tasks):
        row = rows.get(name)
        period = float(tasks[name].period_s(workspace))
        last = _aware(row.last_slot_at) if row and row.last_slot_at else None
        started = _aware(row.last_started_at) if row and row.last_started_at else None
        when = timing(period, started, utcnow())
        due = when.next_due_at
        out.append({
            "name": name, "description": tasks[name].description,
            "period_minutes": period / 60,
            "last_slot_at": last.isoformat() if last else None,
            "last_finished_at": _aware(row.last_finished_at).isoformat()
            if row and row.last_finished_at else None,
            "status": row.last_status if row else "", "runner": row.runner if row else "",
            "runs": row.runs if row else 0, "result": row.last_result if row else {},
            "error": row.last_error if row else "",
            "next_due_at": due.isoformat() if due else None, "late": when.late,
        })
    return out


class InProcessScheduler:
    """Keeps time for the periodic tasks in a daemon thread of this process.

    Parameters
    ----------
    workspace:
        Where the tasks run.
    clock:
        Gives "now" (UTC); inject one in tests.
    poll_s:
        Longest wait between two looks at the clock. Default: until the next slot boundary
        by the clock (at most a minute, so a changed period is noticed).
    """

    def __init__(self, workspace: Workspace, *, clock: Callable[[], datetime] = utcnow,
                 poll_s: float | None = None) -> None:
        self.workspace = workspace
        self.clock = clock
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[ScheduleRun]:
        """Run whatever is due now (by the clock)."""
        return run_all_due(self.workspace, now=self.clock(), runner="inprocess")

    def seconds_to_next(self) -> float:
        """Seconds until the next slot of any enabled task begins (by the clock)."""
        now = _aware(self.clock())
        waits = [60.0]
        for task in periodic_tasks().values():
            period = float(task.period_s(self.workspace))
            if period > 0:
                nxt = slot_start(now, period) + timedelta(seconds=period)
                waits.append((nxt - now).total_seconds())
        wait = max(min(waits), 0.05)
        return min(wait, self.poll_s) if self.poll_s is not None else wait

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a lost database must not end the thread
                log.warning("scheduler tick failed: %s", type(exc).__name__)
            self._stop.wait(self.seconds_to_next())

    def start(self) -> InProcessScheduler:
        """Start the thread (it ticks at once, then at every slot boundary)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="truthset-scheduler",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after the run in progress, if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def start_in_process(workspace: Workspace) -> InProcessScheduler | None:
    """Start the in-process scheduler where this process should keep time: the jobs backend
    is ``inprocess`` and some periodic task has a period. ``None`` otherwise (procrastinate's
    workers keep time then)."""
    from truthset.jobs.service import configured_backend

    if configured_backend() != "inprocess":
        return None
    if not any(float(t.period_s(workspace)) > 0 for t in periodic_tasks().values()):
        return None
    return InProcessScheduler(workspace).start()
