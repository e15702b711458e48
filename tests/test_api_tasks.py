"""The workflow routes: policy, queue, submit, review, adjudication, readers, escalations;
refusals answered and audited, blinding kept."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from test_api_support import Seeded, bearer, client, seed
from truthset.domain.policy import parse_policy
from truthset.store.models import AuditEvent, Escalation, Task, utcnow
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
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["cautions"] == []
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


def _slots(ws: Workspace, item_id: int) -> list[str]:
    with ws.sessions() as s:
        return sorted(f"{t.stage}:{t.status}" for t in s.scalars(
            sa.select(Task).where(Task.item_id == item_id)))


def _audit(ws: Workspace, action: str) -> list[AuditEvent]:
    with ws.sessions() as s:
        return list(s.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def test_skip_returns_the_slot_and_keeps_the_reader_off_the_item(
        workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"])
    first = c.post(f"{BASE}/tasks/next", headers=h["annotator"]).json()["task"]
    url = f"{BASE}/tasks/{first['task_id']}"
    # Only the holder may skip; the refusal is audited like a refused submit.
    r = c.post(f"{url}/skip", headers=h["annotator2"])
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = c.post(f"{url}/skip", headers=h["annotator"])
    assert r.status_code == 200 and r.json()["next_step"].startswith("skipped")
    assert r.json()["annotation_id"] is None
    r = c.post(f"{url}/skip", headers=h["annotator"])
    assert r.status_code == 409 and "already skipped" in r.json()["detail"]
    r = c.post(f"{url}/submit", json={"payload": {"label": "normal"}}, headers=h["annotator"])
    assert r.status_code == 409
    assert len(_events(workspace, "denied", "refused")) == 3
    assert len(_audit(workspace, "skip")) == 1
    # The slot went back to the pool (a fresh open slot beside the skipped one); the skipping
    # reader is offered the other item, another reader gets this one.
    assert _slots(workspace, first["item_id"]) == ["annotate:open", "annotate:open",
                                                    "annotate:skipped"]
    nxt = c.post(f"{BASE}/tasks/next", headers=h["annotator"]).json()["task"]
    assert nxt["item_id"] != first["item_id"]
    other = c.post(f"{BASE}/tasks/next", headers=h["annotator2"]).json()["task"]
    assert other["item_id"] == first["item_id"]


def test_flag_escalates_without_recording_a_read(workspace: Workspace,
                                                  seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"])
    task = c.post(f"{BASE}/tasks/next", headers=h["annotator"]).json()["task"]
    url = f"{BASE}/tasks/{task['task_id']}/flag"
    assert c.post(url, json={}, headers=h["annotator"]).status_code == 422
    r = c.post(url, json={"reason": "   "}, headers=h["annotator"])
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = c.post(url, json={"reason": "motion artefact"}, headers=h["annotator2"])
    assert r.status_code == 403
    assert len(_events(workspace, "denied", "refused")) == 2
    r = c.post(url, json={"reason": "motion artefact"}, headers=h["annotator"])
    assert r.status_code == 200 and r.json()["annotation_id"] is None
    assert c.post(url, json={"reason": "again"}, headers=h["annotator"]).status_code == 409
    # No read recorded; the item waits for adjudication with the reader's reason.
    r = c.get(f"{BASE}/items/{task['item_id']}/annotations", headers=h["padmin"])
    assert r.json()["items"] == []
    rows = c.get(f"{BASE}/escalations", headers=h["padmin"]).json()
    assert len(rows) == 1 and rows[0]["reason"] == "unclear at annotate: motion artefact"
    assert rows[0]["to_tier"] == 1 and rows[0]["item_id"] == task["item_id"]
    assert [json.loads(e.after)["reason"] for e in _audit(workspace, "flag")] == [
        "motion artefact"]
    # The other read slot was cancelled: other readers get the other item; the adjudicator
    # gets this one.
    assert _slots(workspace, task["item_id"]) == ["adjudicate:open", "annotate:cancelled",
                                                   "annotate:flagged"]
    nxt = c.post(f"{BASE}/tasks/next", headers=h["annotator2"]).json()["task"]
    assert nxt["item_id"] != task["item_id"]
    adj = c.post(f"{BASE}/tasks/next", headers=h["adjudicator"]).json()["task"]
    assert adj["stage"] == "adjudicate" and adj["item_id"] == task["item_id"]
    # An adjudication cannot be flagged.
    r = c.post(f"{BASE}/tasks/{adj['task_id']}/flag", json={"reason": "x"},
               headers=h["adjudicator"])
    assert r.status_code == 409


def test_queue_overview_counts_ages_and_overdue(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    empty = c.get(f"{BASE}/queue", headers=h["manager"]).json()
    assert empty["counts"] == [] and empty["stages"] == []
    assert empty["escalations"] == {"open": 0, "overdue": 0}
    assert c.get(f"{BASE}/queue", headers=h["annotator"]).status_code == 403
    c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"])
    task = c.post(f"{BASE}/tasks/next", headers=h["annotator"]).json()["task"]
    c.post(f"{BASE}/tasks/{task['task_id']}/flag", json={"reason": "blurred"},
           headers=h["annotator"])
    # Make the slots a day old and the escalation overdue.
    with workspace.unit("test") as s:
        s.execute(sa.update(Task).values(created_at=utcnow() - timedelta(days=1)))
        s.execute(sa.update(Escalation).values(due_at=utcnow() - timedelta(hours=2)))
    r = c.get(f"{BASE}/queue", headers=h["auditor"])
    assert r.status_code == 200
    body = r.json()
    counts = {(x["stage"], x["status"]): x["n"] for x in body["counts"]}
    assert counts == {("adjudicate", "open"): 1, ("annotate", "cancelled"): 1,
                      ("annotate", "flagged"): 1, ("annotate", "open"): 2}
    stages = {x["stage"]: x for x in body["stages"]}
    assert stages["annotate"]["outstanding"] == 2 and stages["adjudicate"]["outstanding"] == 1
    assert 23.9 < stages["annotate"]["oldest_age_hours"] < 24.5
    assert body["escalations"] == {"open": 1, "overdue": 1}


def test_policy_routes_return_its_cautions(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    text = POLICY.replace("workflow: consensus\nk: 2", "workflow: adaptive\nm: 1\nk_max: 2")
    put = c.put(f"{BASE}/policy", json={"text": text}, headers=h["padmin"]).json()
    got = c.get(f"{BASE}/policy", headers=h["annotator"]).json()
    assert put["cautions"] == got["cautions"] == parse_policy(text).cautions()
    assert len(got["cautions"]) == 1 and "'mv'" in got["cautions"][0]
