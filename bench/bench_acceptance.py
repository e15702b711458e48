"""Benchmark: what recording a draft's outcome costs when a reader's label is stored.

Submit-time acceptance tracking (``truthset.workflow.acceptance.record_read``) reads only the
item's drafts and one bounded window per drafted class, so its cost should not grow with the
project. A classification project is filled with ``n`` drafted items that readers have read
already (their outcomes recorded, through ``record_annotation`` in one transaction), then
``m`` more reads are stored one transaction each and timed:

- ``record_annotation`` on a drafted item (validation, insert, outcome, window, maybe pause);
- ``record_annotation`` on an item without a draft (the hook's one look-up only);
- for comparison, the project-wide catch-up ``prelabel.acceptance.track`` (finds nothing new).

Times are medians of the ``m`` calls (wall; the machine is shared). Run::

    .venv/bin/python bench/bench_acceptance.py --sizes 1000 10000
    .venv/bin/python bench/bench_acceptance.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from truthset.prelabel import acceptance
from truthset.store.models import Item, User
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = """name: finding
kind: classification
mode: single
classes:
  - name: normal
  - name: nodule
"""


def _fill(ws: Workspace, n: int, m: int) -> None:
    with ws.unit("bench") as s:
        p = projects.create_project(s, key="b", name="B", schema_text=SCHEMA)
        reader = users.add_user(s, username="reader", role="annotator")
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.0, window=50, min_decisions=10)
        items = [Item(project_id=p.id, external_id=f"i{k:06d}", kind="image")
                 for k in range(n + 2 * m)]
        s.add_all(items)
        s.flush()
        for item in items[:n + m]:  # drafted: the first n are read, m are left
            record_annotation(s, p, item=item, author=None, payload={"label": "nodule"},
                              model=("m", "1"))
        for k, item in enumerate(items[:n]):
            record_annotation(s, p, item=item, author=reader,
                              payload={"label": "nodule" if k % 3 else "normal"})


def _time_reads(ws: Workspace, first: int, m: int) -> list[float]:
    out = []
    for k in range(first, first + m):
        with ws.unit("reader") as s:
            p = projects.get_project(s, "b")
            reader = s.scalars(sa.select(User).where(User.username == "reader")).one()
            item = s.scalars(sa.select(Item).where(Item.external_id == f"i{k:06d}")).one()
            started = time.perf_counter()
            record_annotation(s, p, item=item, author=reader, payload={"label": "nodule"})
            out.append(time.perf_counter() - started)
    return out


def run(database_url: str | None, n: int, m: int) -> dict[str, float]:
    """Fill a fresh workspace with ``n`` read drafts, then time ``m`` reads of each kind."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url
        schema = None
        if url and url.startswith("postgresql"):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(url)
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            url = sa.engine.make_url(url).update_query_dict(
                {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        ws = Workspace.init(Path(tmp) / "ws", database_url=url)
        try:
            started = time.perf_counter()
            _fill(ws, n, m)
            fill_s = time.perf_counter() - started
            drafted = _time_reads(ws, n, m)
            plain = _time_reads(ws, n + m, m)
            with ws.unit("bench") as s:
                started = time.perf_counter()
                new, _ = acceptance.track(s, projects.get_project(s, "b"))
                track_s = time.perf_counter() - started
            assert new == 0
        finally:
            ws.close()
            if schema:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return {"n": n, "fill_s": fill_s, "drafted_ms": 1000 * statistics.median(drafted),
            "plain_ms": 1000 * statistics.median(plain), "track_ms": 1000 * track_s}


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    backend = "PostgreSQL" if (args.database_url or "").startswith("postgresql") else "SQLite"
    print(f"# {backend}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, median of {args.reads} reads")
    print("| drafted reads in the project | store a read on a drafted item (ms) | "
          "on an item without a draft (ms) | track(), project scan (ms) |")
    print("| ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        r = run(args.database_url, n, args.reads)
        print(f"| {n} | {r['drafted_ms']:.2f} | {r['plain_ms']:.2f} | {r['track_ms']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
