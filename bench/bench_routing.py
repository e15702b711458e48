"""Benchmark: the cost of ``routing: skill`` in the task queue (one ``next_task`` call).

Builds an SQLite workspace (``--db`` to give a PostgreSQL URL instead) with ``--items`` items
(three classes), ``--readers`` readers of accuracies spread over 0.55-0.95 and an adaptive
policy (m = 2, k_max = 4, target 0.9); readers then read through the queue (majority vote while
building, so the build fits nothing) in rounds (every reader takes a task, then they all
submit) until ``--reads`` reads are done, leaving the queue half-way: items the last round
left disputed wait for a further read, fresh items for their first.

Then, for each measured policy (the same adaptive policy with ``method: onecoin`` and
``routing: queue``; ``routing: skill`` with ``onecoin``, with ``onecoin`` and
``reader_prior: empirical``, and with ``ds``), it times
``--calls`` ``next_task`` calls, each by another reader in a fresh session that is rolled back
(so every call sees the same queue), and reports the median wall-clock and CPU time and the
90th percentile in ms, how many routed calls gave a different item than queue order, the
median time of a consensus fit (:func:`truthset.workflow.queue.consensus_fit`: what a routed
call that refits the kept reader model adds, once every ``REFIT_EVERY`` reads; the first
routed call of each policy fits, the others reuse it) and the range of the fitted accuracies.

Wall-clock times on a shared machine vary; the CPU times less so. Run::

    .venv/bin/python bench/bench_routing.py --items 2000 --reads 5000

Prints a Markdown table (``--out FILE`` writes it too).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from truthset.store.models import Item
from truthset.workflow import policies, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).resolve().parents[1] / "tests" / "data" / "chest_schema.yaml"
          ).read_text()
CLASSES = ("normal", "nodule", "effusion")
BASE = "workflow: adaptive\nm: 2\nk_max: 4\ntarget: 0.9\non_exhausted: accept\n"
MEASURED = {
    "onecoin, routing: queue": BASE + "method: onecoin\nrouting: queue\n",
    "onecoin, routing: skill": BASE + "method: onecoin\nrouting: skill\n",
    "onecoin + reader_prior: empirical, routing: skill":
        BASE + "method: onecoin\nreader_prior: empirical\nrouting: skill\n",
    "ds, routing: skill": BASE + "method: ds\nrouting: skill\n",
}


def build(ws: Workspace, n_items: int, n_readers: int, n_reads: int, seed: int) -> float:
    """The project and its reads (through the queue, one transaction per round); returns the
    seconds it took."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with ws.unit("bench") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        for k in range(n_readers):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        s.add_all([Item(project_id=p.id, external_id=f"i{i:05d}", kind="image")
                   for i in range(n_items)])
        s.flush()
        policies.set_policy(s, p, BASE)
        queue.enqueue(s, p)
        truth = {i: int(rng.integers(len(CLASSES)))
                 for i in s.scalars(select(Item.id).where(Item.project_id == p.id))}
    accuracy = np.linspace(0.55, 0.95, n_readers)
    done = 0
    while done < n_reads:  # rounds: every reader takes a task, then they all submit
        with ws.unit("bench") as s:
            p = projects.get_project(s, "chest")
            held = []
            for k in range(min(n_readers, n_reads - done)):
                user = users.get_user(s, f"r{k}")
                task = queue.next_task(s, p, user).task
                if task is not None:
                    held.append((k, user, task))
            if not held:
                break
            for k, user, task in held:
                true = truth[task.item_id]
                label = true if rng.random() < accuracy[k] else int(
                    rng.choice([c for c in range(len(CLASSES)) if c != true]))
                queue.submit(s, p, user, task.task_id, {"label": CLASSES[label]})
                done += 1
    return time.perf_counter() - start


@dataclass
class Timings:
    """What :func:`measure` found for one policy (times in ms)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    chosen: list[int | None] = field(default_factory=list)
    fits: list[float] = field(default_factory=list)
    skills: tuple[float, float] | None = None


def measure(ws: Workspace, policy: str, n_calls: int, n_readers: int) -> Timings:
    """``next_task`` wall-clock and CPU times and chosen items of ``n_calls`` readers under
    ``policy``, each in a rolled-back session; the consensus fit's times; the range of the
    fitted readers' accuracies (``skills_``)."""
    with ws.unit("bench") as s:
        policies.set_policy(s, projects.get_project(s, "chest"), policy)
    out = Timings()
    for call in range(n_calls):
        session = ws.sessions()
        session.info["actor"] = "bench"
        try:
            with session.begin():
                p = projects.get_project(session, "chest")
                user = users.get_user(session, f"r{call % n_readers}")
                start, cpu = time.perf_counter(), time.process_time()
                task = queue.next_task(session, p, user).task
                out.wall.append(1000 * (time.perf_counter() - start))
                out.cpu.append(1000 * (time.process_time() - cpu))
                out.chosen.append(None if task is None else task.item_id)
                session.rollback()
        finally:
            session.close()
    with ws.sessions() as session:
        p = projects.get_project(session, "chest")
        cur = policies.current_policy(session, p).policy
        for _ in range(5):
            start = time.perf_counter()
            fit = queue.consensus_fit(session, p, cur, CLASSES)
            out.fits.append(1000 * (time.perf_counter() - start))
    skills = getattr(fit, "skills_", None)
    if skills is not None:
        out.skills = (float(skills.min()), float(skills.max()))
    return out


def main() -> None:
    """Build the project, time ``next_task`` under each policy, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--readers", type=int, default=30)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        ws = Workspace.init(root, database_url=args.db or f"sqlite:///{root / 'ws.db'}")
        try:
            build_s = build(ws, args.items, args.readers, args.reads, args.seed)
            with ws.sessions() as s:
                reads = len(queue.project_reads(s, projects.get_project(s, "chest")))
            results = {name: measure(ws, text, args.calls, args.readers)
                       for name, text in MEASURED.items()}
        finally:
            ws.close()
    base = results["onecoin, routing: queue"].chosen
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    lines = [
        f"Machine: {machine}, load average {os.getloadavg()[0]:.1f}, OpenBLAS threads "
        f"{threads}; database: {'SQLite file' if args.db is None else 'given URL'}; "
        f"{args.items} items, {reads} reads by {args.readers} readers of accuracy 0.55-0.95 "
        f"(built in {build_s:.0f} s); {args.calls} calls per policy.",
        f"Command: `{'' if threads == 'default' else f'OPENBLAS_NUM_THREADS={threads} '}"
        f".venv/bin/python bench/bench_routing.py --items {args.items} "
        f"--reads {args.reads}`",
        "",
        "| policy | next_task median ms (wall / CPU) | p90 ms (wall) | "
        "item differs from queue order | consensus fit median ms | fitted accuracies |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, got in results.items():
        differs = sum(a != b for a, b in zip(got.chosen, base, strict=True))
        routed = "skill" in name
        skills = "-" if got.skills is None else f"{got.skills[0]:.2f}-{got.skills[1]:.2f}"
        lines.append(
            f"| {name} | {statistics.median(got.wall):.1f} / {statistics.median(got.cpu):.1f} | "
            f"{float(np.percentile(got.wall, 90)):.1f} | "
            f"{f'{differs} of {len(got.chosen)}' if routed else '-'} | "
            f"{statistics.median(got.fits):.1f} | {skills} |")
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
