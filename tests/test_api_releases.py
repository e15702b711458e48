"""The releases API: create, list, read, diff, sign (password re-entered, refusals audited),
verify and download, under the project's roles."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from release_support import KEY, PASSWORD, adjudicate, build_project
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.store.models import AuditEvent
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

BASE = f"/api/v1/projects/{KEY}/releases"


@pytest.fixture
def tok(workspace: Workspace, tmp_path: Path) -> dict[str, str]:
    build_project(workspace, tmp_path)
    out = {}
    with workspace.unit("setup") as s:
        project = projects.get_project(s, KEY)
        for name, role in (("quinn", "manager"), ("sam", "adjudicator"), ("rita", "reviewer"),
                           ("ann", "annotator")):
            user = users.get_user(s, name)
            memberships.add_member(s, project, user, role)
            out[name] = tokens.create_token(s, user, name="t").secret
    return out


def test_create_list_read_diff_verify_download(workspace: Workspace,
                                               tok: dict[str, str]) -> None:
    c = client(workspace)
    manager, reviewer = bearer(tok["quinn"]), bearer(tok["rita"])
    r = c.post(BASE, json={"name": "v1"}, headers=manager)
    assert r.status_code == 422 and r.json()["field"] == "items"
    assert "h.png" in r.json()["detail"]
    r = c.post(BASE, json={"name": "v1", "exclude": {"h.png": "not read"}}, headers=reviewer)
    assert r.status_code == 403
    r = c.post(BASE, json={"name": "v1", "exclude": {"h.png": "not read"},
                           "splits": {"train": 0.2, "validation": 0.2, "test": 0.6}},
               headers=manager)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["included"] == 7 and body["excluded"] == 1 and body["status"] == "created"
    assert {f["name"] for f in body["files"]} >= {"manifest.json", "labels.csv",
                                                  "datasheet.pdf"}
    assert all(v["ok"] for v in body["checks"].values())
    adjudicate(workspace, "b.png", "normal", reason="second look")
    r = c.post(BASE, json={"name": "v2", "exclude_unresolved": "waiting"}, headers=manager)
    assert r.status_code == 201 and r.json()["parent"] == "v1"
    assert [x["name"] for x in c.get(BASE, headers=reviewer).json()] == ["v1", "v2"]
    assert c.get(BASE, headers=bearer(tok["ann"])).status_code == 403
    diff = c.get(f"{BASE}/v2/diff", headers=reviewer).json()
    assert diff["label_changed"][0]["item"] == "b.png"
    assert diff["label_changed"][0]["audit_event"]["seq"] > 0
    text = c.get(f"{BASE}/v2/diff", params={"against": "v1", "format": "text"},
                 headers=reviewer)
    assert text.headers["content-type"].startswith("text/plain")
    assert "b.png: nodule -> normal" in text.text
    assert c.get(f"{BASE}/v1/diff", headers=reviewer).json()["field"] == "against"
    verify = c.get(f"{BASE}/v1/verify", headers=reviewer).json()
    assert verify["ok"] and verify["rebuilt_identical"]
    r = c.get(f"{BASE}/v1/files/labels.csv", headers=manager)
    assert r.status_code == 200 and r.text.startswith("item,final_label")
    assert c.get(f"{BASE}/v1/files/nope.txt", headers=manager).status_code == 404
    assert c.get(f"{BASE}/v9", headers=manager).status_code == 404
    with workspace.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    assert "release.download" in actions and "release.test_split_access" in actions


def test_sign_through_the_api(workspace: Workspace, tok: dict[str, str]) -> None:
    c = client(workspace)
    manager = bearer(tok["quinn"])
    assert c.post(BASE, json={"name": "v1", "exclude": {"h.png": "not read"}},
                  headers=manager).status_code == 201
    r = c.post(f"{BASE}/v1/signatures", json={"password": "nope", "meaning": "reviewed"},
               headers=manager)
    assert r.status_code == 403 and r.json()["field"] == "password"
    with workspace.sessions() as s:
        last = s.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert last.action == "release.sign_refused" and last.actor == "quinn"
    assert c.post(f"{BASE}/v1/signatures", json={"password": PASSWORD, "meaning": "reviewed"},
                  headers=bearer(tok["rita"])).status_code == 403
    r = c.post(f"{BASE}/v1/signatures",
               json={"password": PASSWORD, "meaning": "approved for training"}, headers=manager)
    assert r.status_code == 201, r.text
    assert r.json()["printed_name"] == "Quinn Approver"
    again = c.post(f"{BASE}/v1/signatures", json={"password": PASSWORD, "meaning": "reviewed"},
                   headers=manager)
    assert again.status_code == 409
    detail = c.get(f"{BASE}/v1", headers=manager).json()
    assert detail["status"] == "signed" and len(detail["signatures"]) == 1
    sig = c.get(f"{BASE}/v1/signatures/quinn", headers=manager)
    assert sig.status_code == 200 and sig.json()["meaning"] == "approved for training"
    assert c.get(f"{BASE}/v1/verify", headers=manager).json()["signatures"][0]["ok"]
