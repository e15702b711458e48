"""Authorisation beyond the route matrix (``test_api_matrix.py`` drives every role against every
route): cross-project ids, blinding of dual-role readers, revisions of others' work, read-only
auditors, no self-approval."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from test_api_support import Seeded, bearer, client, png, seed
from truthset.auth import memberships, policy
from truthset.auth.policy import PERMISSIONS, READ_ONLY, Action, Principal
from truthset.domain.errors import PermissionDeniedError
from truthset.domain.roles import Role
from truthset.store.models import Item, Task
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace


class World:
    """A seeded workspace shared by the matrix (module scope, SQLite)."""

    def __init__(self, ws: Workspace, seeded: Seeded, image: bytes) -> None:
        self.ws = ws
        self.seeded = seeded
        self.image = image
        self.c: TestClient = client(ws)

    def call(self, caller: str, method: str, path: str, **kw: Any) -> Any:
        path = path.format(a0=self.seeded.items["alpha"][0], b0=self.seeded.items["beta"][0])
        if "files" in kw:
            kw["files"] = [("files", (f"up-{caller}.png", io.BytesIO(self.image), "image/png"))]
        return self.c.request(method, path, headers={**bearer(self.seeded.tokens[caller]),
                                                     **kw.pop("headers", {})}, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    ws = Workspace.init(tmp / "ws", database_url=f"sqlite:///{tmp / 'ws.db'}")
    seeded = seed(ws, tmp)
    with ws.unit("seed") as s:
        users.add_user(s, username="spare", role="annotator")
        alpha = projects.get_project(s, "alpha")
        for name in ("annotator", "annotator2"):
            author = users.get_user(s, name)
            for item in s.query(Item).filter(Item.project_id == alpha.id):
                record_annotation(s, alpha, item=item, author=author,
                                  payload={"label": "nodule" if name == "annotator" else
                                           "normal"})
    try:
        yield World(ws, seeded, png(tmp / "up.png", seed=99).read_bytes())
    finally:
        ws.close()


def test_items_of_another_project_are_not_found_by_id(world: World) -> None:
    for caller in ("manager", "annotator", "root"):
        r = world.call(caller, "GET", "/api/v1/projects/alpha/items/{b0}")
        assert r.status_code == 404
        r = world.call(caller, "GET", "/api/v1/projects/alpha/items/{b0}/annotations")
        assert r.status_code == 404
        r = world.call(caller, "GET", "/api/v1/projects/alpha/items/{b0}/media/0")
        assert r.status_code == 404
    r = world.call("outsider", "GET", "/api/v1/projects/beta/items/{a0}")
    assert r.status_code == 404


def test_readers_see_only_their_own_labels(world: World) -> None:
    mine = world.call("annotator", "GET", "/api/v1/projects/alpha/annotations?limit=500").json()
    assert mine["items"] and {a["author"] for a in mine["items"]} == {"annotator"}
    other = world.call("annotator2", "GET", "/api/v1/projects/alpha/annotations").json()
    assert {a["author"] for a in other["items"]} == {"annotator2"}
    everyone = world.call("reviewer", "GET", "/api/v1/projects/alpha/annotations?limit=500")
    assert {"annotator", "annotator2"} <= {a["author"] for a in everyone.json()["items"]}


def test_a_reader_who_also_reviews_is_blinded_while_the_item_is_in_annotate(
    workspace: Workspace, tmp_path: Path
) -> None:
    seeded = seed(workspace, tmp_path)
    a0, a1 = seeded.items["alpha"]
    with workspace.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        dual = users.get_user(s, "reviewer")
        memberships.add_member(s, alpha, dual, "annotator")
        other = users.get_user(s, "annotator")
        for item_id in (a0, a1):
            item = s.get(Item, item_id)
            assert item is not None
            record_annotation(s, alpha, item=item, author=other, payload={"label": "nodule"})
        s.add(Task(project_id=alpha.id, item_id=a0, stage="annotate", status="open",
                   assignee_id=dual.id))
    c = client(workspace)
    h = bearer(seeded.tokens["manager"])
    assert c.post("/api/v1/projects/alpha/consensus", json={}, headers=h).status_code == 201
    h = bearer(seeded.tokens["reviewer"])
    seen = c.get("/api/v1/projects/alpha/annotations", headers=h).json()["items"]
    assert {a["item_id"] for a in seen} == {a1}
    assert c.get(f"/api/v1/projects/alpha/items/{a0}/annotations",
                 headers=h).json()["items"] == []
    assert c.get(f"/api/v1/projects/alpha/items/{a0}/consensus", headers=h).status_code == 403
    assert c.get(f"/api/v1/projects/alpha/items/{a1}/consensus", headers=h).status_code == 200
    listed = c.get("/api/v1/projects/alpha/consensus", headers=h).json()["items"]
    assert {x["item_id"] for x in listed} == {a1}
    # A pure reviewer is not blinded.
    h = bearer(seeded.tokens["adjudicator"])
    assert c.get(f"/api/v1/projects/alpha/items/{a0}/consensus", headers=h).status_code == 200


def test_annotators_revise_only_their_own_labels(world: World) -> None:
    theirs = world.call("annotator2", "GET", "/api/v1/projects/alpha/annotations").json()
    target = next(a for a in theirs["items"] if a["item_id"] == world.seeded.items["alpha"][0])
    body = {"payload": {"label": "normal"}, "parent_id": target["id"]}
    r = world.call("annotator", "POST", "/api/v1/projects/alpha/items/{a0}/annotations",
                   json=body)
    assert r.status_code == 403
    r = world.call("annotator2", "POST", "/api/v1/projects/alpha/items/{a0}/annotations",
                   json=body)
    assert r.status_code == 201 and r.json()["parent_id"] == target["id"]
    r = world.call("reviewer", "POST", "/api/v1/projects/alpha/items/{a0}/annotations",
                   json={**body, "parent_id": r.json()["id"]})
    assert r.status_code == 201


def test_auditors_hold_only_read_permissions() -> None:
    for action, roles in PERMISSIONS.items():
        if Role.AUDITOR in roles:
            assert action in READ_ONLY, action
    assert set(PERMISSIONS) == set(Action)  # every action has an explicit entry


def test_nobody_approves_their_own_work() -> None:
    me = Principal(user_id=7, username="r", global_role="reviewer", via="token",
                   credential_id=1)
    with pytest.raises(PermissionDeniedError):
        policy.check_not_own_work(me, 7, "annotation")
    policy.check_not_own_work(me, 8, "annotation")
