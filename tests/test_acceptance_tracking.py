"""Acceptance of model drafts recorded as readers' labels are stored — through the queue service,
a reviewer's decision on a draft, ``record_annotation`` and the API — in the same transaction,
with the pause, its audit event, a manager's resume, ``track`` adding nothing afterwards, and
concurrent submissions neither lost nor doubled (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from test_api_support import Seeded, bearer, client, seed
from truthset import audit
from truthset.auth import memberships, tokens
from truthset.prelabel import acceptance, service
from truthset.quality.payloads import encode_mask, payload_masks
from truthset.store.models import Annotation, DraftOutcome, Item, Task
from truthset.workflow import policies, queue
from truthset.workflow.annotations import record_annotation
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call, count, make_project, run_threads

K1 = "workflow: consensus\nk: 1\ntarget: 0\n"


def _drafts(label: str) -> Callable[[Any, Any], None]:
    """``make_project`` extra: a manager, and a model draft ``label`` on every item."""
    def extra(s: Any, p: Any) -> None:
        users.add_user(s, username="boss", role="manager")
        for item in s.scalars(sa.select(Item).where(Item.project_id == p.id)):
            record_annotation(s, p, item=item, author=None, payload={"label": label},
                              model=("cxr-net", "1"))
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.6, window=4, min_decisions=3)
    return extra


def _read(ws: Workspace, reader: str, label: str) -> int:
    """``reader`` takes the next task and submits ``label``; returns the item id."""
    task = call(ws, reader, queue.next_task).task
    assert task is not None and task.stage == "annotate"
    call(ws, reader, queue.submit, task.task_id, {"label": label})
    return int(task.item_id)


def _report(ws: Workspace, key: str = "chest") -> dict[str, acceptance.ClassAcceptance]:
    with ws.sessions() as s:
        return {r.class_name: r for r in
                acceptance.acceptance_report(s, projects.get_project(s, key))}


def _events(ws: Workspace, action: str) -> list[dict[str, Any]]:
    """The audit events ``action`` (``after`` parsed)."""
    with ws.sessions() as s:
        return [{**e, "after": json.loads(e["after"])} for e in audit.iter_events(s)
                if e["action"] == action]


def test_queue_submit_records_each_decision_and_pauses_at_once(workspace: Workspace) -> None:
    make_project(workspace, K1, n_items=6, extra=_drafts("nodule"))
    _read(workspace, "r0", "nodule")  # accepted
    with workspace.sessions() as s:  # committed with the read itself
        (row,) = s.scalars(sa.select(DraftOutcome)).all()
        read = s.scalars(sa.select(Annotation).where(Annotation.source == "human")).one()
        assert (row.class_name, row.outcome, row.final_annotation_id) == (
            "nodule", "accepted", read.id)
    _read(workspace, "r1", "normal")  # rejected
    assert _report(workspace)["nodule"].status == "active"  # 2 outcomes < min_decisions 3
    assert _events(workspace, "prelabel.pause") == []
    _read(workspace, "r2", "effusion")  # rejected: 1 of 3 accepted < 60 %
    nodule = _report(workspace)["nodule"]
    assert (nodule.status, nodule.accepted, nodule.rejected) == ("paused", 1, 2)
    assert nodule.window_acceptance == pytest.approx(1 / 3) and nodule.window_n == 3
    assert "33% over the last 3 drafts" in nodule.reason
    (event,) = _events(workspace, "prelabel.pause")
    assert event["actor"] == "r2" and event["after"]["class"] == "nodule"
    assert event["after"]["acceptance"] == pytest.approx(1 / 3)
    with workspace.unit("system") as s:  # the catch-up finds nothing left to record
        assert acceptance.track(s, projects.get_project(s, "chest")) == (0, [])
    _read(workspace, "r3", "nodule")  # recorded; a paused class stays paused
    assert _report(workspace)["nodule"].status == "paused"
    assert count(workspace, DraftOutcome) == 4
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "chest")
        acceptance.resume_class(s, p, "nodule", manager=users.get_user(s, "boss"),
                                note="model v2")
    resumed = _report(workspace)["nodule"]
    assert (resumed.status, resumed.window_n, resumed.n) == ("active", 0, 4)
    _read(workspace, "r4", "normal")  # only outcomes after the resume count
    after = _report(workspace)["nodule"]
    assert (after.status, after.window_n, after.window_acceptance) == ("active", 1, 0.0)
    assert [e["action"] for e in _events(workspace, "prelabel.resume")] == ["prelabel.resume"]
    with workspace.sessions() as s:
        assert audit.verify(s).ok


def test_a_reviewer_deciding_on_a_draft_is_its_outcome(workspace: Workspace) -> None:
    policy = ("workflow: single_review\nprelabels: draft\n"
              "review_rate: {low: 1.0, medium: 1.0, high: 1.0}\n")
    make_project(workspace, policy, n_items=2, extra=_drafts("effusion"))
    first = call(workspace, "rev", queue.next_task).task
    call(workspace, "rev", queue.review, first.task_id, "accept")
    second = call(workspace, "rev", queue.next_task).task
    call(workspace, "rev", queue.review, second.task_id, "reject", comment="no fluid")
    with workspace.sessions() as s:
        rows = s.scalars(sa.select(DraftOutcome).order_by(DraftOutcome.id)).all()
        assert [(r.item_id, r.outcome) for r in rows] == [
            (first.item_id, "accepted"), (second.item_id, "rejected")]
        assert all(r.draft_annotation_id == r.final_annotation_id for r in rows)
    # The rejected item is read by a human: the same draft is not counted a second time.
    assert _read(workspace, "r0", "normal") == second.item_id
    assert count(workspace, DraftOutcome) == 2
    with workspace.unit("system") as s:
        assert acceptance.track(s, projects.get_project(s, "chest"))[0] == 0
    effusion = _report(workspace)["effusion"]
    assert (effusion.accepted, effusion.rejected, effusion.window_acceptance) == (1, 1, 0.5)


@pytest.mark.parametrize("round_", range(3))
def test_readers_submitting_at_once_neither_lose_nor_double_a_decision(
        workspace: Workspace, round_: int) -> None:
    """Four readers submit on four drafted items at the same moment. The pause needs all four
    outcomes (min_decisions 4): a submission that evaluated without the others' committed
    outcomes would leave the class active; two that both paused would write two events."""
    def extra(s: Any, p: Any) -> None:
        _drafts("nodule")(s, p)
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.5, window=4, min_decisions=4)

    make_project(workspace, K1, n_items=4, n_readers=4, staff=False, extra=extra)
    held = {f"r{k}": call(workspace, f"r{k}", queue.next_task).task for k in range(4)}
    assert len({t.item_id for t in held.values()}) == 4
    labels = ["normal", "effusion", "normal", "nodule"]  # 1 of 4 accepted: 25 % < 50 %
    run_threads(4, lambda k: call(workspace, f"r{k}", queue.submit, held[f"r{k}"].task_id,
                                   {"label": labels[k]}))
    with workspace.sessions() as s:
        rows = s.execute(sa.select(DraftOutcome.final_annotation_id, DraftOutcome.outcome)
                         ).all()
        reads = set(s.scalars(sa.select(Annotation.id).where(Annotation.source == "human")))
    assert len(rows) == 4 and {f for f, _o in rows} == reads
    assert sorted(o for _f, o in rows) == ["accepted", "rejected", "rejected", "rejected"]
    nodule = _report(workspace)["nodule"]
    assert (nodule.status, nodule.window_n, nodule.window_acceptance) == ("paused", 4, 0.25)
    assert len(_events(workspace, "prelabel.pause")) == 1
    assert count(workspace, Task, Task.status == "done") == 4


# -- through the API -------------------------------------------------------------------------------
BASE = "/api/v1/projects/alpha"


def test_api_submit_pauses_and_a_manager_resumes(workspace: Workspace, tmp_path: Path) -> None:
    seeded: Seeded = seed(workspace, tmp_path)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    c = client(workspace)
    assert c.put(f"{BASE}/policy", json={"text": K1}, headers=h["padmin"]).status_code == 200
    assert c.post(f"{BASE}/tasks/enqueue", json={}, headers=h["padmin"]).json()["queued"] == 2
    with workspace.unit("seed") as s:
        p = projects.get_project(s, "alpha")
        for item in s.scalars(sa.select(Item).where(Item.project_id == p.id)):
            record_annotation(s, p, item=item, author=None, payload={"label": "nodule"},
                              model=("cxr-net", "1"))
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.75, window=2, min_decisions=2)
    for reader, label in (("annotator", "nodule"), ("annotator2", "normal")):
        task = c.post(f"{BASE}/tasks/next", headers=h[reader]).json()["task"]
        r = c.post(f"{BASE}/tasks/{task['task_id']}/submit", json={"payload": {"label": label}},
                   headers=h[reader])
        assert r.status_code == 200, r.text
    report = c.get(f"{BASE}/prelabel/acceptance", headers=h["manager"]).json()
    (nodule,) = report["classes"]
    assert (nodule["class_name"], nodule["status"], nodule["accepted"], nodule["rejected"]) == (
        "nodule", "paused", 1, 1)
    assert nodule["window_acceptance"] == 0.5 and "50% over the last 2" in nodule["reason"]
    assert len(_events(workspace, "prelabel.pause")) == 1
    url = f"{BASE}/prelabel/classes/nodule/resume"
    assert c.post(url, json={"note": "v2"}, headers=h["annotator"]).status_code == 403
    r = c.post(url, json={"note": "model v2 deployed"}, headers=h["manager"])
    assert r.status_code == 200 and (r.json()["status"], r.json()["decided_by"]) == (
        "active", "manager")
    (nodule,) = c.get(f"{BASE}/prelabel/acceptance", headers=h["manager"]).json()["classes"]
    assert (nodule["status"], nodule["window_n"], nodule["n"]) == ("active", 0, 2)


MASK_SCHEMA = """name: lesions
kind: mask
classes:
  - name: lesion
  - name: cyst
"""


def _mask_project(ws: Workspace, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        image = np.full((24, 32), 10, dtype=np.uint8)
        image[4:12, 6:16] = 200
        Image.fromarray(image).save(folder / f"img{k}.png")
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="lesions", name="Lesions", schema_text=MASK_SCHEMA)
        imports.import_items(s, ws.blobs, p, [folder])
        headers = {}
        for name, role in (("reader", "annotator"), ("lead", "manager")):
            user = users.add_user(s, username=name, role="annotator")
            memberships.add_member(s, p, user, role)
            headers[name] = bearer(tokens.create_token(s, user, name="t").secret)
        service.register_model(s, p, name="thr", version="1", kind="classical",
                               classes=["lesion"], config={"thresholds": {"lesion": [0.5, 1]}})
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.5, window=3, min_decisions=3)
    assert service.run_prelabel(ws, "lesions", "thr").drafted == 3
    return client(ws), headers


def test_api_annotations_record_edits_with_dice_and_iou(workspace: Workspace,
                                                        tmp_path: Path) -> None:
    c, h = _mask_project(workspace, tmp_path)
    with workspace.sessions() as s:
        drafts = {a.item_id: a.payload for a in s.scalars(sa.select(Annotation))}
    draft = payload_masks(drafts[1])["lesion"]
    edited = draft.copy()
    edited[4:7] = False  # the reader trims three rows ...
    edited[12:14, 6:16] = True  # ... and adds two
    inter, union = np.logical_and(draft, edited).sum(), np.logical_or(draft, edited).sum()
    want_dice = 2 * inter / (draft.sum() + edited.sum())
    reads = {1: drafts[1],
             2: {"objects": [{"label": "lesion", "mask": encode_mask(edited)}]},
             3: {"objects": []}}
    base = "/api/v1/projects/lesions"
    for item_id, payload in reads.items():
        r = c.post(f"{base}/items/{item_id}/annotations", json={"payload": payload},
                   headers=h["reader"])
        assert r.status_code == 201, r.text
        with workspace.sessions() as s:  # recorded by the request that stored the read
            assert s.scalar(sa.select(sa.func.count()).select_from(DraftOutcome).where(
                DraftOutcome.item_id == item_id)) == 1
    (lesion,) = c.get(f"{base}/prelabel/acceptance", headers=h["lead"]).json()["classes"]
    assert (lesion["accepted"], lesion["edited"], lesion["rejected"]) == (1, 1, 1)
    assert lesion["mean_dice"] == pytest.approx(want_dice)
    assert lesion["mean_iou"] == pytest.approx(inter / union)
    # Dice 0.8 < edit tolerance 0.9: 1 of 3 accepted, below 50 %: paused.
    assert want_dice < 0.9 and lesion["status"] == "paused"
    assert lesion["window_acceptance"] == pytest.approx(1 / 3)
    # A correction supersedes the read: its outcome replaces the old one in the window.
    with workspace.sessions() as s:
        rejected = s.scalars(sa.select(Annotation).where(Annotation.item_id == 3,
                                                          Annotation.source == "human")).one()
    r = c.post(f"{base}/items/3/annotations",
               json={"payload": drafts[3], "parent_id": rejected.id}, headers=h["reader"])
    assert r.status_code == 201, r.text
    (lesion,) = c.get(f"{base}/prelabel/acceptance", headers=h["lead"]).json()["classes"]
    assert (lesion["accepted"], lesion["rejected"], lesion["window_n"]) == (2, 0, 3)
    assert lesion["status"] == "paused"  # only a manager resumes


def test_queue_submit_of_masks_records_edits_with_dice(workspace: Workspace,
                                                       tmp_path: Path) -> None:
    _mask_project(workspace, tmp_path)
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "lesions")
        for k in (1, 2):
            reader = users.add_user(s, username=f"m{k}", role="annotator")
            memberships.add_member(s, p, reader, "annotator")
        senior = users.add_user(s, username="adj", role="adjudicator", tier=3)
        memberships.add_member(s, p, senior, "adjudicator")
        policies.set_policy(s, p, "workflow: consensus\nk: 1\n")
        queue.enqueue(s, p)
    with workspace.sessions() as s:
        drafts = {a.item_id: a.payload for a in s.scalars(sa.select(Annotation))}
    square = payload_masks(drafts[1])["lesion"]
    edited = square.copy()
    edited[4:6] = False  # two rows trimmed: Dice = 2*60/(80+60), IoU = 60/80
    answers = {"reader": lambda d: d,
               "m1": lambda d: {"objects": [{"label": "lesion", "mask": encode_mask(edited)}]},
               "m2": lambda d: {"objects": []}}
    for name, answer in answers.items():
        with workspace.unit(name) as s:
            p = projects.get_project(s, "lesions")
            me = users.get_user(s, name)
            task = queue.next_task(s, p, me).task
            assert task is not None
            queue.submit(s, p, me, task.task_id, answer(drafts[task.item_id]))
    with workspace.sessions() as s:
        rows = sorted((r.outcome, r.dice, r.iou) for r in s.scalars(sa.select(DraftOutcome)))
    assert [r[0] for r in rows] == ["accepted", "edited", "rejected"]
    assert rows[1][1] == pytest.approx(2 * 60 / 140) and rows[1][2] == pytest.approx(60 / 80)
    lesion = _report(workspace, "lesions")["lesion"]
    assert (lesion.status, lesion.window_n) == ("paused", 3)  # 1 of 3 accepted < 50 %
