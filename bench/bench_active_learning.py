"""Benchmark: the cost of active learning in the task queue.

On an SQLite workspace (``--db`` to give a PostgreSQL URL instead) with ``--n`` items, a
consensus policy (k = 2) and a model run (one draft with class probabilities per item):

- ``enqueue`` of every item, without and with ``active_learning`` in the policy (the score is
  read per item when its slots are made);
- ``reprioritise`` of every open read slot after a second model run (one query for all drafts
  and reads, then the item's decision per item).

Times are wall-clock seconds of one run each (the machine is shared). Run::

    .venv/bin/python bench/bench_active_learning.py --n 1000

Writes ``docs/_bench_active_learning.md`` (``--out``) and prints the same table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from truthset.store.models import Item, PrelabelDraft, PrelabelModel
from truthset.workflow import policies, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).resolve().parents[1] / "tests" / "data" / "chest_schema.yaml"
          ).read_text()
CLASSES = ("normal", "nodule", "effusion")


def _model_run(ws: Workspace, version: str, seed: int) -> None:
    """One draft with random class probabilities per item (a model run)."""
    rng = np.random.default_rng(seed)
    with ws.unit("bench") as s:
        p = projects.get_project(s, "chest")
        model = PrelabelModel(project_id=p.id, name="m", version=version, kind="python",
                              output="classification", classes=list(CLASSES))
        s.add(model)
        s.flush()
        for item_id in s.scalars(select(Item.id).where(Item.project_id == p.id)):
            probs = rng.dirichlet(np.ones(len(CLASSES)))
            s.add(PrelabelDraft(project_id=p.id, model_id=model.id, item_id=item_id,
                                status="drafted", confidence=float(probs.max()),
                                probabilities=dict(zip(CLASSES, map(float, probs),
                                                       strict=True))))


def _workspace(root: Path, db: str | None, n: int, policy: str) -> Workspace:
    ws = Workspace.init(root, database_url=db or f"sqlite:///{root / 'ws.db'}")
    with ws.unit("bench") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        for k in range(3):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        s.add_all([Item(project_id=p.id, external_id=f"i{i:05d}", kind="image")
                   for i in range(n)])
        s.flush()
        policies.set_policy(s, p, policy)
    _model_run(ws, "1", seed=0)
    return ws


def main() -> None:
    """Run the benchmark and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs"
                        / "_bench_active_learning.md")
    args = parser.parse_args()
    rows = []
    for label, policy in (("off", "workflow: consensus\nk: 2\n"),
                          ("on", "workflow: consensus\nk: 2\n"
                                 "active_learning: {weight_model: 0.5}\n")):
        with tempfile.TemporaryDirectory() as tmp:
            ws = _workspace(Path(tmp) / "ws", args.db, args.n, policy)
            try:
                start = time.perf_counter()
                with ws.unit("bench") as s:
                    queue.enqueue(s, projects.get_project(s, "chest"))
                enqueue_s = time.perf_counter() - start
                _model_run(ws, "2", seed=1)
                start = time.perf_counter()
                with ws.unit("bench") as s:
                    changed = queue.reprioritise(s, projects.get_project(s, "chest"))
                reprio_s = time.perf_counter() - start
            finally:
                ws.close()
        rows.append((label, enqueue_s, reprio_s, changed))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        "# Active learning in the task queue",
        "",
        f"Machine: {machine}; database: {'SQLite file' if args.db is None else 'given URL'}; "
        f"{args.n} items, consensus k = 2, one draft per item; reprioritise after a second "
        "model run.",
        f"Command: `.venv/bin/python bench/bench_active_learning.py --n {args.n}`",
        "",
        "| active_learning | enqueue (s) | per item (ms) | reprioritise (s) | slots changed |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {lab} | {e:.2f} | {1000 * e / args.n:.2f} | {r:.2f} | {c} |"
          for lab, e, r, c in rows),
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
