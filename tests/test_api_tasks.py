"""The workflow routes: policy, queue, submit, review, adjudication, readers, escalations;
refusals answered and audited, blinding kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from test_api_support import Seeded, bearer, client, seed
from truthset.store.models import AuditEvent
from truthset.workspace.workspace import Workspace

BASE = "/api/v1/projects/alpha"
POLICY = ("workflow: consensus\nk: 2\ntarget: 0.9\n"
          "tiers: {annotate: 1, review: 1, adjudicate: 1}\n")


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def _events(ws: Workspace, *actions: str) -> list[AuditEvent]:
    with ws.sessions() as s:
        return list(s.scalars(sa.select(AuditEvent).where(
            AuditEvent.action.in_(actions), AuditEvent.entity_type == "tasks")))


def test_task_routes_end_to_end(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    r = c.put(f"{BASE}/policy", json={"text": "workflow: consensus\nk: 0\n"}, headers=h["padmin"])
    assert r.status_code == 422 and r.json()["field"] == "k"
    assert c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["annotator"]
                 ).status_code == 403
    r = c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    assert r.status_code == 200 and r.json()["version"] == 1
    assert c.get(f"{BASE}/policy", headers=h["annotator"]).json()["policy"]["k"] == 2
    assert c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"]).json()["queued"] == 2

    first = c.post(f"{BASE}/tasks/next", headers=h["annotator"]).json()["task"]
    assert first["stage"] == "annotate" and first["context"] == {}
    url = f"{BASE}/tasks/{first['task_id']}"
    # Somebody else's task: 403, audited.
    r = c.post(f"{url}/submit", json={"payload": {"label": "normal"}}, headers=h["annotator2"])
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # A payload that does not fit the schema: 422 naming the field, audited, nothing written.
    r = c.post(f"{url}/submit", json={"payload": {"label": "tumour"}}, headers=h["annotator"])
    assert r.status_code == 422 and r.json()["field"] == "label"
    r = c.post(f"{url}/submit", json={"payload": {"label": "normal"}, "time_spent_s": 9},
               headers=h["annotator"])
    assert r.status_code == 200 and r.json()["item_status"] == "pending"
    r = c.post(f"{url}/submit", json={"payload": {"label": "normal"}}, headers=h["annotator"])
    assert r.status_code == 409 and "already submitted" in r.json()["detail"]
    assert len(_events(workspace, "denied", "refused")) == 3

    second = c.post(f"{BASE}/tasks/next", headers=h["annotator2"]).json()["task"]
    assert second["item_id"] == first["item_id"] and second["context"] == {}
    # Blinded: the annotator does not see the other read while the item is being read.
    r = c.get(f"{BASE}/items/{first['item_id']}/annotations", headers=h["annotator2"])
    assert all(a["author"] == "annotator2" for a in r.json()["items"])
    r = c.post(f"{BASE}/tasks/{second['task_id']}/submit",
               json={"payload": {"label": "nodule"}}, headers=h["annotator2"])
    assert r.json()["next_step"].startswith("adjudicate")

    assert c.get(f"{BASE}/escalations", headers=h["annotator"]).status_code == 403
    rows = c.get(f"{BASE}/escalations", headers=h["reviewer"]).json()
    assert len(rows) == 1 and rows[0]["overdue"] is False and rows[0]["status"] == "open"
    # Only adjudicators adjudicate; they see every read side by side.
    adj = c.post(f"{BASE}/tasks/next", headers=h["adjudicator"]).json()["task"]
    assert adj["stage"] == "adjudicate"
    assert sorted(x["label"] for x in adj["context"]["reads"]) == ["nodule", "normal"]
    r = c.post(f"{BASE}/tasks/{adj['task_id']}/adjudications",
               json={"payload": {"label": "nodule"}, "reason": ""}, headers=h["adjudicator"])
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = c.post(f"{BASE}/tasks/{adj['task_id']}/adjudications",
               json={"payload": {"label": "nodule"}, "reason": "x"}, headers=h["reviewer"])
    assert r.status_code == 403
    r = c.post(f"{BASE}/tasks/{adj['task_id']}/adjudications",
               json={"payload": {"label": "nodule"}, "reason": "spiculated"},
               headers=h["adjudicator"])
    assert r.status_code == 201 and r.json()["item_status"] == "final"
    assert c.get(f"{BASE}/escalations?status=resolved", headers=h["reviewer"]).json()[0][
        "status"] == "resolved"
    r = c.get(f"{BASE}/items/{first['item_id']}/consensus", headers=h["reviewer"])
    assert r.json()["label"] == {"label": "nodule"} and r.json()["method"] == "adjudication"


def test_reader_statistics_routes(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    assert c.get(f"{BASE}/readers", headers=h["padmin"]).json() == []
    assert c.get(f"{BASE}/readers", headers=h["annotator"]).status_code == 403
    assert c.get(f"{BASE}/readers/annotator", headers=h["annotator2"]).status_code == 403
    mine = c.get(f"{BASE}/readers/me", headers=h["annotator"])
    assert mine.status_code == 200 and mine.json()["stats"]["reader"] == "annotator"
    detail = c.get(f"{BASE}/readers/annotator", headers=h["auditor"])
    assert detail.status_code == 200 and detail.json()["n_gold"] == 0
    # Outsiders get nothing from another project's queue.
    assert c.post(f"{BASE}/tasks/next", headers=h["outsider"]).status_code == 403
    paths = c.get("/openapi.json").json()["paths"]
    for path in ("/tasks/next", "/tasks/{task_id}/submit", "/tasks/{task_id}/reviews",
                 "/tasks/{task_id}/adjudications", "/readers", "/readers/me",
                 "/escalations", "/policy"):
        assert f"/api/v1/projects/{{key}}{path}" in paths
