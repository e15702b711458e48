"""The readers' skill figures on an adjudication task (SQLite and PostgreSQL): each reader of the
item — and nobody else — with their known-answer record, their agreement with the final
consensus of their other items and the consensus method's per-reader parameters, checked
against figures computed here from the stored reads, gold answers and consensus rows (and
against :func:`readers_against_consensus` and a Dawid–Skene fit made here); and blinding: an
annotate or review task never carries them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from geometry_support import box, make_geo_project, schema
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.quality.aggregation.dawid_skene import DawidSkene
from truthset.quality.boxes import matched_f1
from truthset.store.models import Annotation, Consensus, GoldItem, Item, User
from truthset.workflow import policies, queue
from truthset.workflow import readers as rd
from truthset.workflow.consensus import compute_consensus
from truthset.workflow.monitoring import readers_against_consensus
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call, make_project

CLASSES = ["normal", "nodule", "effusion"]
#: Each reader's label per item. i00-i03 reach the target (2 of 3 or all 3 agree); i04 and i05
#: are split three ways and go to adjudication; i04 is settled as "effusion", i05 waits.
LABELS = {
    "i00": {"r0": "normal", "r1": "normal", "r2": "normal"},
    "i01": {"r0": "nodule", "r1": "nodule", "r2": "normal"},
    "i02": {"r0": "effusion", "r1": "normal", "r2": "effusion"},
    "i03": {"r0": "normal", "r1": "nodule", "r2": "normal"},
    "i04": {"r0": "nodule", "r1": "normal", "r2": "effusion"},
    "i05": {"r0": "normal", "r1": "nodule", "r2": "effusion"},
}
CALIBRATION = {"cal0": "normal", "cal1": "nodule", "cal2": "effusion"}
#: Calibration answers: r0 3 of 3 right, r1 and r2 2 of 3, r3 1 of 3 (r3 reads nothing else).
ANSWERS = {"r0": ["normal", "nodule", "effusion"], "r1": ["normal", "nodule", "normal"],
           "r2": ["nodule", "nodule", "effusion"], "r3": ["effusion", "nodule", "normal"],
           "adj": ["normal", "nodule", "effusion"]}
POLICY = "workflow: consensus\nk: 3\nmethod: mv\ntarget: 0.6\ncalibration: {threshold: 0.3}\n"


def _calibration_items(s: Any, p: Any) -> None:
    for name in CALIBRATION:
        s.add(Item(project_id=p.id, external_id=name, kind="image"))
    s.flush()
    policies.add_gold(s, p, CALIBRATION, purpose="calibration")


def _work(ws: Workspace, name: str) -> list[queue.TaskView]:
    """``name`` reads until the queue has nothing more for them; returns the views they got."""
    seen: list[queue.TaskView] = []
    while True:
        task = call(ws, name, queue.next_task).task
        if task is None:
            return seen
        seen.append(task)
        label = (ANSWERS[name][int(task.external_id[-1])] if task.stage == "calibrate"
                 else LABELS[task.external_id][name])
        call(ws, name, queue.submit, task.task_id, {"label": label})


def _classification(ws: Workspace) -> tuple[queue.TaskView, list[queue.TaskView]]:
    """The scenario above through the queue; returns the adjudicator's view of i05 and every
    view the readers got."""
    make_project(ws, POLICY, n_items=6, n_readers=4, extra=_calibration_items)
    views = [v for name in ("r0", "r1", "r2") for v in _work(ws, name)]
    for _ in CALIBRATION:  # r3 passes calibration, then stops: no read of a regular item
        task = call(ws, "r3", queue.next_task).task
        call(ws, "r3", queue.submit, task.task_id,
             {"label": ANSWERS["r3"][int(task.external_id[-1])]})
    for _ in CALIBRATION:
        task = call(ws, "adj", queue.next_task).task
        assert task.stage == "calibrate"
        call(ws, "adj", queue.submit, task.task_id,
             {"label": ANSWERS["adj"][int(task.external_id[-1])]})
    first = call(ws, "adj", queue.next_task).task
    assert first.stage == "adjudicate" and first.external_id == "i04"
    call(ws, "adj", queue.adjudicate, first.task_id, {"label": "effusion"}, reason="fluid")
    view = call(ws, "adj", queue.next_task).task
    assert view.stage == "adjudicate" and view.external_id == "i05"
    return view, views


# -- figures computed here from the stored rows ---------------------------------------------------
def _gold(ws: Workspace) -> dict[str, tuple[int, int]]:
    """Reader -> (known-answer reads, right) from the annotations on gold/calibration items."""
    out: dict[str, list[int]] = {}
    with ws.sessions() as s:
        for name, payload, truth in s.execute(
                sa.select(User.username, Annotation.payload, GoldItem.label)
                .join(GoldItem, GoldItem.item_id == Annotation.item_id)
                .join(User, User.id == Annotation.author_id)
                .where(Annotation.source == "human")):
            got = out.setdefault(name, [0, 0])
            got[0] += 1
            got[1] += int(payload["label"] == truth["label"])
    return {k: (v[0], v[1]) for k, v in out.items()}


def _current(ws: Workspace) -> dict[tuple[str, str], dict[str, Any]]:
    """(item, reader) -> payload of the reader's latest unrevised human annotation."""
    with ws.sessions() as s:
        rows = s.execute(sa.select(Annotation.id, Item.external_id, User.username,
                                   Annotation.payload, Annotation.parent_id, Annotation.source)
                         .join(Item, Item.id == Annotation.item_id)
                         .join(User, User.id == Annotation.author_id)
                         .order_by(Annotation.id)).all()
    revised = {r.parent_id for r in rows if r.parent_id is not None}
    return {(r.external_id, r.username): r.payload for r in rows
            if r.source == "human" and r.id not in revised}


def _finals(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Item -> label of its latest consensus row, where that row is final."""
    latest: dict[str, Any] = {}
    with ws.sessions() as s:
        for external, row in s.execute(sa.select(Item.external_id, Consensus)
                                       .join(Item, Item.id == Consensus.item_id)):
            if external not in latest or row.id > latest[external].id:
                latest[external] = row
    return {e: r.label for e, r in latest.items() if r.status == "final"}


def _against_labels(ws: Workspace, reader: str, skip: str) -> tuple[int, int]:
    finals, current = _finals(ws), _current(ws)
    compared = [(current[(i, reader)]["label"], finals[i]["label"]) for (i, r) in current
                if r == reader and i != skip and i in finals]
    return len(compared), sum(a == b for a, b in compared)


def _skills(view: queue.TaskView | dict[str, Any]) -> dict[str, Any]:
    reads = view["context"]["reads"] if isinstance(view, dict) else view.context["reads"]
    return {r["reader"]: r["skill"] for r in reads}


def _check_classification(ws: Workspace, skills: dict[str, Any]) -> None:
    gold = _gold(ws)
    assert set(skills) == {"r0", "r1", "r2"}  # the item's readers; r3 and adj are not
    with ws.sessions() as s:
        project = projects.get_project(s, "chest")
        managers_see = {r: rd.reader_stats(s, project, users.get_user(s, r)) for r in skills}
    for reader, skill in skills.items():
        n, right = gold[reader]
        assert skill["gold"] == {"reads": n, "accuracy": right / n}
        assert (managers_see[reader].n_gold, managers_see[reader].accuracy) == (n, right / n)
        compared, agreed = _against_labels(ws, reader, skip="i05")
        assert skill["consensus"] == {"metric": "percent", "items": compared, "agreed": agreed,
                                      "agreement": agreed / compared}


def test_adjudication_shows_each_readers_figures(workspace: Workspace) -> None:
    view, _views = _classification(workspace)
    skills = _skills(view)
    _check_classification(workspace, skills)
    # Worked by hand: i00-i03 by vote, i04 adjudicated "effusion"; i05 itself left out.
    assert {r: (s["gold"]["accuracy"] * 3, s["consensus"]["agreed"], s["consensus"]["items"])
            for r, s in skills.items()} == {"r0": (3, 4, 5), "r1": (2, 2, 5), "r2": (2, 4, 5)}
    assert all(s["method"] is None for s in skills.values())  # no fitted model stored yet
    # The same agreement as the dashboard's leaderboard, which reads the whole project.
    with workspace.sessions() as s:
        _classes, board = readers_against_consensus(s, projects.get_project(s, "chest"),
                                                    ci=None)
    for row in board:
        if row.reader in skills:
            assert (row.compared, row.agreed) == (skills[row.reader]["consensus"]["items"],
                                                  skills[row.reader]["consensus"]["agreed"])


def test_dawid_skene_parameters_of_the_items_readers(workspace: Workspace) -> None:
    _classification(workspace)
    with workspace.unit("adj") as s:
        compute_consensus(s, projects.get_project(s, "chest"), method="ds")
    view = call(workspace, "adj", queue.next_task).task  # the task the adjudicator holds
    skills = _skills(view)
    # Dawid-Skene fitted here on the stored current reads, as the consensus run fits it.
    current = _current(workspace)
    readers = sorted({r for _i, r in current})
    model = DawidSkene(classes=CLASSES).fit(pd.DataFrame(
        [(i, r, p["label"]) for (i, r), p in current.items()],
        columns=["item", "annotator", "label"]))
    for reader, skill in skills.items():
        k = readers.index(reader)
        assert skill["method"]["method"] == "ds"
        assert skill["method"]["skill"] == pytest.approx(model.skills_[reader], abs=1e-5)
        diagonal = np.diagonal(model.confusion_matrices_[k])
        assert skill["method"]["diagonal"] == pytest.approx(dict(zip(CLASSES, diagonal,
                                                                     strict=True)), abs=1e-5)
    # The run made new final rows: agreement now follows them (i05 still left out).
    _check_classification(workspace, skills)


def test_annotate_and_review_tasks_never_carry_other_readers(workspace: Workspace) -> None:
    _view, views = _classification(workspace)
    annotate = [v for v in views if v.stage == "annotate"]
    assert len(annotate) == 18 and all(v.context == {} for v in annotate)
    for v in annotate:
        text = json.dumps(v.to_dict())
        assert "skill" not in text and "reader" not in text
    # A review task shows the read under review, nobody's record.
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        policies.set_policy(s, p, "workflow: single_review\n"
                                  "review_rate: {low: 1.0, medium: 1.0, high: 1.0}\n")
        s.add(Item(project_id=p.id, external_id="i06", kind="image"))
        s.flush()
        queue.enqueue(s, p, ["i06"])
    task = call(workspace, "r0", queue.next_task).task
    assert task.external_id == "i06" and task.context == {}
    call(workspace, "r0", queue.submit, task.task_id, {"label": "nodule"})
    review = call(workspace, "rev", queue.next_task).task
    assert review.stage == "review" and set(review.context) == {"under_review"}
    assert "skill" not in json.dumps(review.to_dict())


def test_box_figures_are_matched_f1_against_the_final_objects(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 2\ntarget_f1: 0.8\n",
                     n_items=3, n_readers=2)
    drawn = {"i00": {"r0": [box("nodule", 10, 10, 10, 10)], "r1": [box("nodule", 11, 10, 10, 10)]},
             "i01": {"r0": [box("mass", 30, 20, 8, 8)],
                     "r1": [box("mass", 30, 20, 8, 8), box("cyst", 2, 2, 5, 5)]},
             "i02": {"r0": [box("nodule", 5, 5, 6, 6)], "r1": [box("nodule", 40, 30, 6, 6)]}}
    for name in ("r0", "r1"):
        while (task := call(workspace, name, queue.next_task).task) is not None:
            assert task.context == {}  # blinded
            call(workspace, name, queue.submit, task.task_id,
                 {"objects": drawn[task.external_id][name]})
    first = call(workspace, "adj", queue.next_task).task
    assert first.external_id == "i01"
    call(workspace, "adj", queue.adjudicate, first.task_id,
         {"objects": [box("mass", 30, 20, 8, 8)]}, reason="the cyst is a vessel")
    view = call(workspace, "adj", queue.next_task).task
    assert view.external_id == "i02"
    skills = _skills(view)
    # Matched F1 at IoU 0.5 of each reader's stored boxes against the stored final objects.
    finals, current = _finals(workspace), _current(workspace)

    def corners(objects: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
        xywh = np.asarray([o["bbox"] for o in objects], dtype=float).reshape(-1, 4)
        return np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], [o["label"] for o in objects]

    for reader in ("r0", "r1"):
        figures = []
        for item in ("i00", "i01"):
            mine, mine_labels = corners(current[(item, reader)]["objects"])
            final, final_labels = corners(finals[item]["objects"])
            figures.append(matched_f1(mine, final, 0.5, pred_labels=mine_labels,
                                      ref_labels=final_labels).f1)
        assert skills[reader]["consensus"] == {"metric": "f1", "items": 2, "agreed": None,
                                               "agreement": pytest.approx(np.mean(figures))}
        assert skills[reader]["gold"] == {"reads": 0, "accuracy": None}
    assert skills["r0"]["consensus"]["agreement"] == pytest.approx(1.0)
    assert skills["r1"]["consensus"]["agreement"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_the_api_gives_the_adjudicator_the_figures_and_readers_none(
        workspace: Workspace) -> None:
    _view, _views = _classification(workspace)
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        heads = {}
        for name in ("r0", "adj"):
            user = users.get_user(s, name)
            memberships.add_member(s, p, user, user.role)
            heads[name] = bearer(tokens.create_token(s, user, name="t").secret)
        s.add(Item(project_id=p.id, external_id="i06", kind="image"))
        s.flush()
        queue.enqueue(s, p, ["i06"])
    c = client(workspace)
    r = c.post("/api/v1/projects/chest/tasks/next", headers=heads["adj"])
    assert r.status_code == 200, r.text
    task = r.json()["task"]
    assert task["external_id"] == "i05"
    _check_classification(workspace, _skills(task))
    # A reader's annotate task (i06, read by r0 first) carries no one's figures.
    r = c.post("/api/v1/projects/chest/tasks/next", headers=heads["r0"])
    assert r.json()["task"]["external_id"] == "i06" and r.json()["task"]["context"] == {}
    assert "skill" not in r.text
    # Reader statistics stay closed to adjudicators.
    assert c.get("/api/v1/projects/chest/readers", headers=heads["adj"]).status_code == 403
