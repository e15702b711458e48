"""Cursor pages (``store.pages``) and the services' look-ups and pages built on them, on SQLite
and PostgreSQL: walking a list page by page yields every row once, in key order, forwards and
backwards; a page never holds more than asked; the last page has no next cursor; each service
returns exactly the rows its own filter names (checked against the rows the test made)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from test_api_support import Seeded, seed
from truthset.auth import memberships
from truthset.domain.errors import InputError, NotFoundError
from truthset.store.models import Annotation, Consensus, Project, User
from truthset.store.pages import Page, decode_cursor, encode_cursor, paginate
from truthset.workflow.annotations import record_annotation
from truthset.workflow.lookups import annotations_page, current_consensus, current_consensus_page
from truthset.workspace import projects, users
from truthset.workspace.items import get_item, items_by_external_id, items_page
from truthset.workspace.workspace import Workspace

Fetch = Callable[[str | None, int], Page[int]]


def _walk(fetch: Fetch, limit: int) -> tuple[list[int], int]:
    """Every key ``fetch`` pages through with pages of ``limit``, and the number of pages."""
    keys: list[int] = []
    cursor: str | None = None
    for pages in range(1, 10_000):
        rows, cursor = fetch(cursor, limit)
        assert len(rows) <= limit
        keys += rows
        if cursor is None:
            return keys, pages
    raise AssertionError("the pages never end")


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def test_pages_walk_every_row_once_both_ways(workspace: Workspace) -> None:
    with workspace.unit("test") as s:
        for k in range(13):
            users.add_user(s, username=f"u{k:02d}", role="annotator")
    with workspace.sessions() as s:
        ids = sorted(s.scalars(select(User.id)))
        assert len(ids) == 13

        def forwards(cursor: str | None, limit: int) -> Page[int]:
            rows, nxt = users.users_page(s, cursor=cursor, limit=limit)
            return [u.id for u in rows], nxt

        def backwards(cursor: str | None, limit: int) -> Page[int]:
            rows, nxt = paginate(s, select(User), User.id, cursor=cursor, limit=limit,
                                 descending=True)
            return [u.id for u in rows], nxt

        for limit in (1, 2, 4, 12, 13, 14, 500):
            keys, pages = _walk(forwards, limit)
            assert keys == ids and pages == max(1, math.ceil(len(ids) / limit))
            keys, pages = _walk(backwards, limit)
            assert keys == ids[::-1] and pages == max(1, math.ceil(len(ids) / limit))
        # A cursor names the key of the last row shown: the page after it starts above it.
        rows, _ = users.users_page(s, cursor=encode_cursor(ids[4]), limit=3)
        assert [u.id for u in rows] == ids[5:8]
        assert users.users_page(s, cursor=encode_cursor(ids[-1]), limit=3) == ([], None)


def test_a_cursor_the_server_did_not_issue_is_refused(workspace: Workspace) -> None:
    assert decode_cursor(None) == decode_cursor("") == 0
    with workspace.sessions() as s:
        for bad in ("x", "djI6MQ", "==", encode_cursor(3)[:-1] + "!"):
            with pytest.raises(InputError) as caught:
                users.users_page(s, cursor=bad, limit=5)
            assert caught.value.field == "cursor"


def test_projects_page_shows_a_member_only_their_projects(workspace: Workspace,
                                                          seeded: Seeded) -> None:
    with workspace.sessions() as s:
        every = sorted(s.scalars(select(Project.id)))
        for name in ("outsider", "annotator", "nobody", "root"):
            user = users.get_user(s, name)
            mine = sorted(memberships.project_ids_of(s, user.id))
            rows, nxt = projects.projects_page(s, member_id=user.id, cursor=None, limit=50)
            assert [p.id for p in rows] == mine and nxt is None
        rows, _ = projects.projects_page(s, member_id=None, cursor=None, limit=50)
        assert [p.id for p in rows] == every and len(every) == 2


def test_versions_of_a_project(workspace: Workspace, seeded: Seeded) -> None:
    with workspace.unit("test") as s:
        alpha = projects.get_project(s, "alpha")
        projects.add_guideline_version(s, alpha, body="Read more carefully.",
                                       change_note="more care")
        text = projects.get_schema_version(s, alpha, 1).source_text
        projects.add_schema_version(s, alpha, schema_text=text)
        projects.add_schema_version(s, alpha, schema_text=text)
    with workspace.sessions() as s:
        alpha = projects.get_project(s, "alpha")
        assert projects.latest_schema_version(s, alpha) == 3
        assert projects.latest_guideline_version(s, alpha) == 2
        assert [r.version for r in projects.schema_versions(s, alpha)] == [1, 2, 3]
        assert [r.change_note for r in projects.guideline_versions(s, alpha)] == [
            "first version", "more care"]
        assert projects.get_guideline_version(s, alpha, 2).body == "Read more carefully."
        for fetch in (projects.get_schema_version, projects.get_guideline_version):
            with pytest.raises(NotFoundError, match="project 'alpha' has no"):
                fetch(s, alpha, 4)
        bare = projects.create_project(s, key="bare", name="Bare", schema_text=text)
        assert projects.latest_guideline_version(s, bare) is None
        assert projects.guideline_versions(s, bare) == []


def test_items_of_a_project(workspace: Workspace, seeded: Seeded) -> None:
    a0, a1 = seeded.items["alpha"]
    b0, _ = seeded.items["beta"]
    with workspace.sessions() as s:
        alpha = projects.get_project(s, "alpha")
        assert get_item(s, alpha, a1).id == a1
        with pytest.raises(NotFoundError, match=f"no item {b0} in project 'alpha'"):
            get_item(s, alpha, b0)  # an item of another project is not found

        def fetch(cursor: str | None, limit: int) -> Page[int]:
            rows, nxt = items_page(s, alpha, cursor=cursor, limit=limit)
            return [i.id for i in rows], nxt

        assert _walk(fetch, 1) == ([a0, a1], 2)
        found = items_by_external_id(s, alpha, ["alpha1.png", "beta0.png", "alpha0.png", "x"])
        assert [i.id for i in found] == [a0, a1]


def test_annotations_and_current_consensus(workspace: Workspace, seeded: Seeded) -> None:
    a0, a1 = seeded.items["alpha"]
    with workspace.unit("test") as s:
        alpha = projects.get_project(s, "alpha")
        reader, other = users.get_user(s, "annotator"), users.get_user(s, "reviewer")
        for who, item, label in [(reader, a0, "nodule"), (other, a0, "normal"),
                                 (reader, a1, "effusion")]:
            record_annotation(s, alpha, item=get_item(s, alpha, item), author=who,
                              payload={"label": label})
        for item, label in [(a0, "normal"), (a1, "effusion"), (a0, "nodule")]:
            s.add(Consensus(project_id=alpha.id, item_id=item, method="mv",
                            label={"label": label}))
    with workspace.sessions() as s:
        alpha = projects.get_project(s, "alpha")
        reader = users.get_user(s, "annotator")
        made = list(s.scalars(select(Annotation).order_by(Annotation.id)))
        rows, _ = annotations_page(s, alpha, cursor=None, limit=50)
        assert rows == made
        rows, _ = annotations_page(s, alpha, item=get_item(s, alpha, a0), cursor=None, limit=50)
        assert [r.item_id for r in rows] == [a0, a0]
        rows, _ = annotations_page(s, alpha, visible=Annotation.author_id == reader.id,
                                   cursor=None, limit=1)
        assert [r.payload["label"] for r in rows] == ["nodule"]
        # The current consensus of an item is its latest row; one per item, in id order.
        rows, nxt = current_consensus_page(s, alpha, cursor=None, limit=1)
        assert [(r.item_id, r.label["label"]) for r in rows] == [(a1, "effusion")]
        rows, nxt = current_consensus_page(s, alpha, cursor=nxt, limit=1)
        assert [(r.item_id, r.label["label"]) for r in rows] == [(a0, "nodule")] and nxt is None
        assert current_consensus(s, get_item(s, alpha, a0)).label == {"label": "nodule"}
        beta = projects.get_project(s, "beta")
        with pytest.raises(NotFoundError, match="has no consensus yet"):
            current_consensus(s, get_item(s, beta, seeded.items["beta"][0]))
        assert current_consensus_page(s, beta, cursor=None, limit=5) == ([], None)
