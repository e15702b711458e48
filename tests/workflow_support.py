"""Helpers shared by the workflow tests: a project with readers, items and a policy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from truthset.store.models import Item
from truthset.workflow import policies, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()


def make_project(ws: Workspace, policy: str, *, n_items: int = 6, n_readers: int = 5,
                 staff: bool = True, extra: Callable[[Any, Any], None] | None = None) -> None:
    """Project ``chest`` with readers r0.., a reviewer and an adjudicator, items i00.., the
    policy stored and every item queued."""
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        for k in range(n_readers):
            users.add_user(s, username=f"r{k}", role="annotator")
        if staff:
            users.add_user(s, username="rev", role="reviewer", tier=2)
            users.add_user(s, username="adj", role="adjudicator", tier=3)
        for k in range(n_items):
            s.add(Item(project_id=p.id, external_id=f"i{k:02d}", kind="image"))
        s.flush()
        if extra is not None:
            extra(s, p)
        policies.set_policy(s, p, policy)
        queue.enqueue(s, p)


def call(ws: Workspace, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run one service call as ``name`` in its own unit of work, auditing refusals."""
    with queue.audited_refusals(ws, name), ws.unit(name) as s:
        return fn(s, projects.get_project(s, "chest"), users.get_user(s, name), *args, **kw)


def count(ws: Workspace, model: type, *where: Any) -> int:
    with ws.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


def run_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(k)`` for ``k < n`` in ``n`` threads released at once (a barrier); return
    their results in order and re-raise the first error."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            out[k] = target(k)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out
