"""Workflow reports over HTTP: per-class agreement with bootstrap intervals, and cost per
final label."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from test_api_support import Seeded, bearer, client, seed
from truthset.store.models import Item
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

BASE = "/api/v1/projects/alpha"
POLICY = ("workflow: consensus\nk: 2\ntarget: 0.9\n"
          "tiers: {annotate: 1, review: 1, adjudicate: 1}\n")


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def _label(ws: Workspace, reads: dict[str, list[str]]) -> None:
    """``reads``: reader -> labels of alpha's items in id order."""
    with ws.unit("test") as s:
        project = projects.get_project(s, "alpha")
        items = list(s.scalars(select(Item).where(Item.project_id == project.id)
                               .order_by(Item.id)))
        for reader, labels in reads.items():
            author = users.get_user(s, reader)
            for item, label in zip(items, labels, strict=True):
                record_annotation(s, project, item=item, author=author,
                                  payload={"label": label})


def test_class_agreement_with_intervals(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    url = f"{BASE}/agreement/classes"
    r = c.get(url, headers=h["manager"])
    assert r.status_code == 422 and r.json()["field"] == "project"
    _label(workspace, {"annotator": ["normal", "nodule"], "annotator2": ["normal", "nodule"],
                       "reviewer": ["normal", "effusion"]})
    assert c.get(url, headers=h["annotator"]).status_code == 403
    r = c.get(f"{url}?metric=nope", headers=h["manager"])
    assert r.status_code == 422 and r.json()["field"] == "metric"
    assert c.get(f"{url}?n_boot=5", headers=h["manager"]).status_code == 422
    r = c.get(f"{url}?n_boot=200", headers=h["auditor"])
    assert r.status_code == 200
    body = r.json()
    assert body["metric"] == "krippendorff"
    rows = {x["class"]: x for x in body["classes"]}
    assert sorted(rows) == ["effusion", "nodule", "normal"]
    # "normal" against the rest splits the items the same way for every reader.
    assert rows["normal"]["value"] == pytest.approx(1.0)
    assert rows["nodule"]["value"] < 1.0 and rows["nodule"]["n_items"] == 2
    assert all(x["n_boot"] == 200 and x["confidence"] == 0.95 for x in body["classes"])
    low, high = rows["nodule"]["ci"]
    assert -1.0 <= low <= high <= 1.0
    # Deterministic: the same data gives the same intervals.
    assert c.get(f"{url}?n_boot=200", headers=h["auditor"]).json() == body
    plain = c.get(f"{url}?ci=false&metric=percent", headers=h["manager"]).json()
    assert all(x["ci"] is None for x in plain["classes"])
    assert {x["class"]: x["value"] for x in plain["classes"]}["normal"] == pytest.approx(1.0)


def test_cost_per_final_label(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c.put(f"{BASE}/policy", json={"text": POLICY}, headers=h["padmin"])
    empty = c.get(f"{BASE}/cost", headers=h["manager"])
    assert empty.status_code == 200
    assert empty.json() == {"by_policy": [], "by_class": [],
                            "known_answer": {"reads": 0, "minutes": 0.0},
                            "class_counting": "final_class"}
    assert c.get(f"{BASE}/cost", headers=h["annotator"]).status_code == 403
    c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"])
    # Both items read twice and agreed on: two final labels, two reads each.
    for reader, spent in (("annotator", 60), ("annotator2", 120)):
        for _ in range(2):
            task = c.post(f"{BASE}/tasks/next", headers=h[reader]).json()["task"]
            r = c.post(f"{BASE}/tasks/{task['task_id']}/submit",
                       json={"payload": {"label": "normal"}, "time_spent_s": spent},
                       headers=h[reader])
            assert r.status_code == 200
    body = c.get(f"{BASE}/cost", headers=h["auditor"]).json()
    assert [(row["group"], row["items"], row["in_other_classes"])
            for row in body["by_class"]] == [("normal", 2, 0)]
    row = body["by_policy"][0]
    assert row["group"].endswith("v1") and row["items"] == 2
    assert row["labels_per_item"] == 2.0 and row["minutes_per_item"] == pytest.approx(3.0)
    assert row["adjudicated"] == 0.0 and 0.0 < row["est_accuracy"] <= 1.0
