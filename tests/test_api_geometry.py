"""The task routes on a box project: objects refused with a 422 naming the field (nothing
written, the attempt audited), the adjudicator's view with every read's objects and the fused
consensus, the final consensus with its provenance."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from geometry_support import box, make_geo_project, schema
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.store.models import Annotation, AuditEvent
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import count

BASE = "/api/v1/projects/chest"


@pytest.fixture
def headers(workspace: Workspace) -> dict[str, dict[str, str]]:
    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 3\ntarget_f1: 0.8\n")
    out = {}
    with workspace.unit("admin") as s:
        project = projects.get_project(s, "chest")
        users.add_user(s, username="lead", role="manager", tier=2)
        for name in ("r0", "r1", "r2", "r3", "rev", "adj", "lead"):
            user = users.get_user(s, name)
            memberships.add_member(s, project, user, user.role)
            out[name] = bearer(tokens.create_token(s, user, name="t").secret)
    return out


def test_box_reads_adjudication_and_consensus_over_http(
        workspace: Workspace, headers: dict[str, dict[str, str]]) -> None:
    c = client(workspace)
    r = c.post(f"{BASE}/tasks/next", headers=headers["r0"])
    assert r.status_code == 200, r.text
    first = r.json()["task"]
    assert first["stage"] == "annotate" and first["context"] == {}
    url = f"{BASE}/tasks/{first['task_id']}/submit"
    before = count(workspace, Annotation)
    for payload, field in (
            ({"objects": [box("nodule", 60, 40, 10, 10)]}, "objects.0.bbox"),
            ({"objects": [box("nodule", 1, 1, 5, 5), box("tumour", 1, 1, 5, 5)]},
             "objects.1.label"),
            ({"objects": [{"type": "mask", "label": "nodule",
                           "rle": {"size": [48, 64], "counts": [1, 2, 3]}}]},
             "objects.0.rle.counts"),
            ({"objects": [{"type": "mask", "label": "nodule", "rle": "xyz"}]}, "objects.0.rle"),
            ({"objects": "box"}, "objects")):
        r = c.post(url, json={"payload": payload}, headers=headers["r0"])
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_input" and r.json()["field"] == field
    assert count(workspace, Annotation) == before
    assert count(workspace, AuditEvent, AuditEvent.action == "refused") == 5
    drawn = {"r0": [box("nodule", 10, 10, 10, 10)], "r1": [box("nodule", 11, 10, 10, 10)],
             "r2": [box("mass", 40, 25, 10, 8)]}
    ids = []
    for name, objects in drawn.items():
        task = first if name == "r0" else c.post(f"{BASE}/tasks/next",
                                                 headers=headers[name]).json()["task"]
        assert task["context"] == {}  # blinded
        r = c.post(f"{BASE}/tasks/{task['task_id']}/submit",
                   json={"payload": {"objects": objects}, "time_spent_s": 20},
                   headers=headers[name])
        assert r.status_code == 200, r.text
        ids.append(r.json()["annotation_id"])
    assert r.json()["next_step"].startswith("adjudicate: mean matched F1 0.33 under target")

    adj = c.post(f"{BASE}/tasks/next", headers=headers["adj"]).json()["task"]
    assert adj["stage"] == "adjudicate"
    ctx = adj["context"]
    assert [(x["reader"], x["label"], x["payload"]["objects"]) for x in ctx["reads"]] == [
        (name, None, objects) for name, objects in drawn.items()]
    cons = ctx["consensus"]
    (finding,) = cons["payload"]["objects"]
    assert finding["support"] == 2 and finding["readers"] == ["r0", "r1"]
    assert finding["bbox"] == pytest.approx([10.5, 10, 10, 10])
    assert cons["payload"]["minority"][0]["readers"] == ["r2"]
    assert "two of three readers saw finding 1 (nodule)" in ctx["escalation"]["reason"]

    done_url = f"{BASE}/tasks/{adj['task_id']}/adjudications"
    r = c.post(done_url, json={"payload": {"objects": [box("nodule", 10, 10, 70, 10)]},
                               "reason": "x"}, headers=headers["adj"])
    assert r.status_code == 422 and r.json()["field"] == "objects.0.bbox"
    r = c.post(done_url, json={"payload": {"objects": [box("nodule", 10, 10, 10, 10)]},
                               "reason": ""}, headers=headers["adj"])
    assert r.status_code == 422 and r.json()["field"] == "reason"
    final = {"objects": [box("nodule", 10, 10, 11, 10)]}
    r = c.post(done_url, json={"payload": final, "reason": "the mass is a vessel"},
               headers=headers["adj"])
    assert r.status_code == 201 and r.json()["item_status"] == "final"
    adjudication = r.json()["annotation_id"]
    r = c.get(f"{BASE}/items/{adj['item_id']}/consensus", headers=headers["adj"])
    body = r.json()
    assert body["method"] == "adjudication" and body["label"] == final
    assert body["input_annotation_ids"] == [*ids, adjudication]
    assert body["parameters"]["workflow"] == "consensus"
    with workspace.sessions() as s:
        stored = s.scalar(sa.select(Annotation.payload).where(Annotation.id == adjudication))
    assert stored == {**final, "reason": "the mass is a vessel"}
    cost = c.get(f"{BASE}/cost", headers=headers["lead"])
    assert cost.status_code == 200 and cost.json()["by_policy"][0]["adjudicated"] == 1.0
