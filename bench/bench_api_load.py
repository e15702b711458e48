"""Load benchmark: simulated readers looping next-task -> submit against ``truthset serve`` on
PostgreSQL, with integrity checks afterwards and a kill -9 of the server in the middle of a run.

Each reader is a coroutine with its own keep-alive HTTP/1.1 connection and API token. A loop is
``POST /api/v1/projects/{key}/tasks/next`` then, after ``think`` seconds (uniform between 0 and
twice ``--think``), ``POST .../tasks/{id}/submit`` with a label. Latency is measured per
request on the client; throughput is successful submits (and requests) per second.

After a run the database is checked: every annotation whose submit returned 200 is stored, no
reader annotated an item twice, no task carries two annotations, no item has more annotate
slots or reads than the policy's ``k``, and ``truthset audit verify`` passes.

The crash scenario sends ``kill -9`` to the whole server (supervisor and workers) part way
through, restarts it, lets the readers carry on, and then checks every acknowledged annotation.

Run (PostgreSQL at 127.0.0.1:5432, trust auth)::

    .venv/bin/python bench/bench_api_load.py truthset --readers 200 --duration 60 --think 1.0
    .venv/bin/python bench/bench_api_load.py truthset --readers 200 --duration 40 --think 0
    .venv/bin/python bench/bench_api_load.py truthset --readers 200 --duration 60 --think 1.0 \\
        --crash-after 25
    .venv/bin/python bench/bench_api_load.py truthset --readers 200 --duration 60 --think 0 \\
        --policy adaptive-skill

Label Studio (its own virtual environment, see ``bench/labelstudio_setup.py``) runs the same
load shape — ``GET /api/projects/{id}/next/`` then ``POST /api/tasks/{id}/annotations/`` — with
``labelstudio --url ... --setup setup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
TRUTHSET = str(Path(sys.executable).parent / "truthset")
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
CLASSES = ("normal", "nodule", "effusion")
SCHEMA = """\
name: chest finding
kind: classification
mode: single
classes:
  - {name: normal, definition: No abnormality., risk: low}
  - {name: nodule, definition: Round opacity., risk: low}
  - {name: effusion, definition: Fluid., risk: low}
"""


# --- a small keep-alive HTTP/1.1 client (cheap on a 2-core machine) ----------------------------
#: Reconnect before reusing a connection idle this long (servers close idle keep-alives:
#: uvicorn after 5 s, gunicorn after 2 s).
IDLE_S = 1.5


class ConnectionLost(Exception):  # noqa: N818 - the name reads as what happened
    """The server closed the connection or could not be reached."""


class Conn:
    """One keep-alive HTTP/1.1 connection (reconnects on the next request after a failure)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def close(self) -> None:
        """Close the socket (if open)."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, bytes]:
        """Send one request, return (status, body).

        Raises
        ------
        ConnectionLost
            Connection refused, reset or closed before the whole reply arrived.
        """
        if self.writer is not None and time.monotonic() - self.used > IDLE_S:
            await self.close()  # the server may have dropped it
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                     f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionLost("closed")
            status = int(status_line.split()[1])
            length, chunked, close = None, False, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and value == "close":
                    close = True
            if chunked:
                data = b""
                while True:
                    size = int((await self.reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await self.reader.readline()
                        break
                    data += await self.reader.readexactly(size)
                    await self.reader.readline()
            elif length is not None:
                data = await self.reader.readexactly(length)
            else:
                data = await self.reader.read()
                close = True
            self.used = time.monotonic()
            if close:
                await self.close()
            return status, data
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError,
                IndexError) as exc:
            await self.close()
            raise ConnectionLost(type(exc).__name__) from None


# --- the load --------------------------------------------------------------------------------
@dataclass
class Stats:
    """What the readers saw."""

    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    acked: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    connection_errors: int = 0
    exhausted_readers: int = 0

    def count(self, what: str) -> None:
        """Count a reply kind."""
        self.statuses[what] = self.statuses.get(what, 0) + 1


#: A system under test: next(conn, reader) -> task id or None; submit(conn, reader, task, label)
#: -> acknowledgement dict or None.
NextFn = Callable[[Conn, int, Stats], Awaitable[Any]]
SubmitFn = Callable[[Conn, int, Any, str, float, Stats], Awaitable[None]]


async def run_load(host: str, port: int, readers: int, duration: float, think: float,
                   next_fn: NextFn, submit_fn: SubmitFn, seed: int = 7,
                   during: Callable[[float], Awaitable[None]] | None = None) -> tuple[Stats, float]:
    """Run ``readers`` looping readers for ``duration`` seconds; returns stats and elapsed."""
    stats = Stats()
    stop_at = time.monotonic() + duration

    async def reader(number: int) -> None:
        rng = random.Random(seed * 100_003 + number)
        conn = Conn(host, port)
        # Readers arrive at random moments over one think cycle (1 s without thinking), as a
        # team starting its shift does, rather than all in the same instant.
        await asyncio.sleep(rng.uniform(0, 2 * think if think > 0 else 1.0))
        try:
            while time.monotonic() < stop_at:
                try:
                    task = await next_fn(conn, number, stats)
                except ConnectionLost:
                    stats.connection_errors += 1
                    await asyncio.sleep(0.2)
                    continue
                if task is None:
                    stats.exhausted_readers += 1
                    return
                if task == "retry":
                    await asyncio.sleep(0.2)
                    continue
                pause = rng.uniform(0, 2 * think) if think > 0 else 0.0
                if pause:
                    await asyncio.sleep(pause)
                try:
                    await submit_fn(conn, number, task, rng.choice(CLASSES), pause, stats)
                except ConnectionLost:  # no reply: not acknowledged; ask for a task again
                    stats.connection_errors += 1
                    await asyncio.sleep(0.2)
        finally:
            await conn.close()

    started = time.monotonic()
    jobs = [asyncio.create_task(reader(n)) for n in range(readers)]
    if during is not None:
        jobs.append(asyncio.create_task(during(started)))
    await asyncio.gather(*jobs)
    return stats, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(stats: Stats, elapsed: float) -> dict[str, Any]:
    """Throughput and latency figures."""
    both = stats.next_ms + stats.submit_ms

    def lat(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(percentile(values, 0.5), 1),
                "p99_ms": round(percentile(values, 0.99), 1),
                "mean_ms": round(statistics.fmean(values), 1) if values else float("nan"),
                "n": len(values)}

    return {"elapsed_s": round(elapsed, 1), "submits": len(stats.acked),
            "submits_per_s": round(len(stats.acked) / elapsed, 1),
            "requests_per_s": round(len(both) / elapsed, 1),
            "latency_all": lat(both), "latency_next": lat(stats.next_ms),
            "latency_submit": lat(stats.submit_ms), "statuses": stats.statuses,
            "connection_errors": stats.connection_errors,
            "exhausted_readers": stats.exhausted_readers}


# --- Truthset --------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    except OSError:
        mem = "?"
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 2**20, 1)
            if mem.isdigit() else mem, "python": platform.python_version()}


def fresh_database(name: str) -> str:
    """Drop and create database ``name`` on the local PostgreSQL; return its URL."""
    import sqlalchemy as sa

    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG_SERVER}/{name}"


#: ``--policy`` choices (see :func:`load_policy`).
LOAD_POLICIES = ("consensus", "adaptive", "adaptive-skill")


def load_policy(k: int, kind: str) -> str:
    """The load test's policy, ``k`` reads per item. ``consensus``: ``k`` reads with majority
    vote. ``adaptive``: ``m: 1``, ``k_max: k`` with the one-coin posterior (empirical reader
    prior, equal class frequencies) that every submit decides on, accepted at ``k_max``; the
    readers answer at random, so no item settles early and every item gets ``k`` reads as under
    the consensus policy. ``adaptive-skill``: the same with ``routing: skill`` (each ``next``
    pays for the candidate window and their reads)."""
    if kind in ("adaptive", "adaptive-skill"):
        routing = "skill" if kind == "adaptive-skill" else "queue"
        return (f"policy: {{workflow: adaptive, m: 1, k_max: {k}, target: 0.9, method: onecoin, "
                "reader_prior: empirical, class_prior: uniform, on_exhausted: accept, "
                f"routing: {routing}, lease_minutes: 30}}")
    return f"policy: {{workflow: consensus, k: {k}, method: mv, target: 0.0, lease_minutes: 30}}"


def seed_truthset(folder: Path, db_url: str, readers: int, items: int, k: int,
                  policy: str = "consensus") -> dict[str, Any]:
    """A workspace on ``db_url`` with project ``load`` (``items`` tiny images queued under
    :func:`load_policy`) and ``readers`` annotators with API tokens."""
    import numpy as np
    from PIL import Image

    from truthset.auth import memberships, tokens
    from truthset.workflow import policies, queue
    from truthset.workspace import imports, projects, users
    from truthset.workspace.workspace import Workspace

    ws = Workspace.init(folder / "ws", database_url=db_url)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for n in range(items):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
            images / f"case{n:06d}.png")
    secrets: list[str] = []
    with ws.unit("bench") as s:
        project = projects.create_project(s, key="load", name="Load", schema_text=SCHEMA,
                                          guideline_text="Label the finding.")
        imports.import_items(s, ws.blobs, project, [images])
        for n in range(readers):
            user = users.add_user(s, username=f"reader{n:03d}", role="annotator", tier=1)
            memberships.add_member(s, project, user, "annotator")
            secrets.append(tokens.create_token(s, user, name="load").secret)
        policies.set_policy(s, project, load_policy(k, policy))
        queued = queue.enqueue(s, project)
    ws.close()
    return {"workspace": str(folder / "ws"), "tokens": secrets, "queued": queued}


class Server:
    """``truthset serve`` as a child process group (so kill -9 reaches every worker)."""

    def __init__(self, workspace: str, port: int, workers: int, log: Path) -> None:
        self.cmd = [TRUTHSET, "serve", "-w", workspace,
                    "--port", str(port), "--workers", str(workers)]
        self.port, self.log = port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> float:
        """Start and wait until ``/healthz`` answers; returns seconds taken."""
        began = time.monotonic()
        import socket

        with socket.socket() as probe:  # never measure some other server on the port
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is already in use")
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=REPO)
        import httpx

        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code \
                        == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not come up")

    def kill9(self) -> None:
        """SIGKILL the whole process group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the group and wait."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def truthset_fns(tokens: list[str]) -> tuple[NextFn, SubmitFn]:
    """next/submit against Truthset's task API."""
    base = "/api/v1/projects/load/tasks"
    json_h = {"Content-Type": "application/json"}

    async def next_fn(conn: Conn, reader: int, stats: Stats) -> Any:
        t0 = time.perf_counter()
        status, body = await conn.request("POST", f"{base}/next",
                                          {"Authorization": f"Bearer {tokens[reader]}"})
        stats.next_ms.append((time.perf_counter() - t0) * 1000)
        stats.count(f"next {status}")
        if status != 200:
            return "retry"
        task = json.loads(body)["task"]
        return None if task is None else task["task_id"]

    async def submit_fn(conn: Conn, reader: int, task: Any, label: str, spent: float,
                        stats: Stats) -> None:
        payload = json.dumps({"payload": {"label": label},
                              "time_spent_s": round(spent, 3)}).encode()
        t0 = time.perf_counter()
        status, body = await conn.request(
            "POST", f"{base}/{task}/submit",
            {"Authorization": f"Bearer {tokens[reader]}", **json_h}, payload)
        stats.submit_ms.append((time.perf_counter() - t0) * 1000)
        stats.count(f"submit {status}")
        if status == 200:
            reply = json.loads(body)
            stats.acked.append({"task_id": reply["task_id"],
                                "annotation_id": reply["annotation_id"], "reader": reader})

    return next_fn, submit_fn


def verify_truthset(db_url: str, workspace: str, acked: list[dict[str, Any]],
                    k: int) -> dict[str, Any]:
    """Integrity after a run: lost, duplicated, over-assigned, audit chain."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    ids = [a["annotation_id"] for a in acked]
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT id FROM annotations")).scalars())
        dup_reader = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT item_id, author_id FROM annotations "
            "GROUP BY item_id, author_id HAVING count(*) > 1) d")).scalar_one()
        dup_task = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT task_id FROM annotations WHERE task_id IS NOT NULL "
            "GROUP BY task_id HAVING count(*) > 1) d")).scalar_one()
        over_slots = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT item_id FROM tasks WHERE stage = 'annotate' "
            "GROUP BY item_id HAVING count(*) > :k) d"), {"k": k}).scalar_one()
        over_reads = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT item_id FROM annotations "
            "GROUP BY item_id HAVING count(*) > :k) d"), {"k": k}).scalar_one()
        double_lease = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT item_id, assignee_id FROM tasks "
            "WHERE assignee_id IS NOT NULL GROUP BY item_id, assignee_id "
            "HAVING count(*) > 1) d")).scalar_one()
        n_annotations = len(stored)
    engine.dispose()
    audit = subprocess.run([TRUTHSET, "audit", "verify", "-w",
                            workspace], capture_output=True, text=True, cwd=REPO)
    return {
        "acknowledged": len(ids), "acknowledged_distinct": len(set(ids)),
        "stored_annotations": n_annotations,
        "lost": len(set(ids) - stored),
        "stored_not_acknowledged": len(stored - set(ids)),
        "same_reader_twice_on_an_item": dup_reader, "tasks_with_two_annotations": dup_task,
        "items_over_k_slots": over_slots, "items_over_k_reads": over_reads,
        "reader_holding_two_slots_of_an_item": double_lease,
        "audit_verify_exit": audit.returncode,
        "audit_verify": (audit.stdout + audit.stderr).strip().splitlines()[-1:],
    }


def bench_truthset(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, serve, load (optionally kill -9 and restart), verify."""
    folder = Path(tempfile.mkdtemp(prefix="truthset-load-"))
    db_url = fresh_database(args.database)
    t0 = time.monotonic()
    seeded = seed_truthset(folder, db_url, args.readers, args.items, args.k, args.policy)
    seed_s = time.monotonic() - t0
    print(f"seeded {args.items} items, {seeded['queued']} queued, {args.readers} readers "
          f"in {seed_s:.0f}s ({folder})", flush=True)
    server = Server(seeded["workspace"], args.port, args.workers, folder / "server.log")
    try:
        boot = server.start()
    except RuntimeError:
        server.stop()
        raise
    next_fn, submit_fn = truthset_fns(seeded["tokens"])
    crash: dict[str, Any] = {}

    async def during(started: float) -> None:
        if not args.crash_after:
            return
        await asyncio.sleep(max(0.0, started + args.crash_after - time.monotonic()))
        server.kill9()
        crash["killed_at_s"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(1.0)
        crash["restart_s"] = round(await asyncio.to_thread(server.start), 1)
        crash["back_at_s"] = round(time.monotonic() - started, 1)

    try:
        stats, elapsed = asyncio.run(run_load("127.0.0.1", args.port, args.readers,
                                              args.duration, args.think, next_fn, submit_fn,
                                              during=during))
    finally:
        server.stop()
    log_text = (folder / "server.log").read_text(errors="replace")
    result = {
        "system": "truthset", "machine": _machine(), "readers": args.readers,
        "think_s": args.think, "workers": args.workers, "items": args.items, "k": args.k,
        "policy": args.policy,
        "seed_s": round(seed_s, 1), "boot_s": round(boot, 1), **summary(stats, elapsed),
        "crash": crash or None,
        "integrity": verify_truthset(db_url, seeded["workspace"], stats.acked, args.k),
        "server_log_lines": len(log_text.splitlines()),
        "server_log_has_traceback": "Traceback" in log_text,
    }
    return result


# --- Label Studio ------------------------------------------------------------------------------
def labelstudio_fns(tokens: list[str], project: int) -> tuple[NextFn, SubmitFn]:
    """next/annotation-create against Label Studio's REST API (legacy token auth)."""

    async def next_fn(conn: Conn, reader: int, stats: Stats) -> Any:
        t0 = time.perf_counter()
        status, body = await conn.request("GET", f"/api/projects/{project}/next/",
                                          {"Authorization": f"Token {tokens[reader]}"})
        stats.next_ms.append((time.perf_counter() - t0) * 1000)
        stats.count(f"next {status}")
        if status == 404:
            return None
        if status != 200:
            return "retry"
        return json.loads(body)["id"]

    async def submit_fn(conn: Conn, reader: int, task: Any, label: str, spent: float,
                        stats: Stats) -> None:
        result = [{"from_name": "finding", "to_name": "image", "type": "choices",
                   "value": {"choices": [label]}}]
        payload = json.dumps({"result": result, "lead_time": round(spent, 3),
                              "task": task}).encode()
        t0 = time.perf_counter()
        status, body = await conn.request(
            "POST", f"/api/tasks/{task}/annotations/",
            {"Authorization": f"Token {tokens[reader]}", "Content-Type": "application/json"},
            payload)
        stats.submit_ms.append((time.perf_counter() - t0) * 1000)
        stats.count(f"submit {status}")
        if status == 201:
            stats.acked.append({"task_id": task, "annotation_id": json.loads(body)["id"],
                                "reader": reader})

    return next_fn, submit_fn


def bench_labelstudio(args: argparse.Namespace) -> dict[str, Any]:
    """The same load against a running Label Studio prepared by ``labelstudio_setup.py``."""
    setup = json.loads(Path(args.setup).read_text())
    url = urlsplit(args.url)
    next_fn, submit_fn = labelstudio_fns(setup["tokens"], setup["project"])
    stats, elapsed = asyncio.run(run_load(url.hostname or "127.0.0.1", url.port or 80,
                                          args.readers, args.duration, args.think, next_fn,
                                          submit_fn))
    ids = [a["annotation_id"] for a in stats.acked]
    return {"system": "label-studio", "machine": _machine(), "readers": args.readers,
            "think_s": args.think, **summary(stats, elapsed),
            "acknowledged_distinct": len(set(ids)), "server": setup.get("server")}


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="system", required=True)
    ts = sub.add_parser("truthset", help="seed, serve and load Truthset on PostgreSQL")
    ls = sub.add_parser("labelstudio", help="load a running Label Studio")
    for p in (ts, ls):
        p.add_argument("--readers", type=int, default=200)
        p.add_argument("--duration", type=float, default=60.0)
        p.add_argument("--think", type=float, default=1.0,
                       help="mean pause (s) between next and submit, uniform on [0, 2*think]")
        p.add_argument("--out", type=Path, help="append the JSON result to this file")
    ts.add_argument("--items", type=int, default=4000)
    ts.add_argument("--k", type=int, default=3, help="reads per item (consensus policy)")
    ts.add_argument("--policy", choices=LOAD_POLICIES, default="consensus",
                    help="the project's policy (see load_policy)")
    ts.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ts.add_argument("--port", type=int, default=8765)
    ts.add_argument("--database", default="truthset_load")
    ts.add_argument("--crash-after", type=float, default=0.0,
                    help="kill -9 the server this many seconds into the run, then restart it")
    ls.add_argument("--url", default="http://127.0.0.1:8089")
    ls.add_argument("--setup", type=Path, required=True,
                    help="JSON written by bench/labelstudio_setup.py (project id, tokens)")
    args = parser.parse_args()
    result = bench_truthset(args) if args.system == "truthset" else bench_labelstudio(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
