"""Disagreement analysis on box, mask and multi-label projects (SQLite and PostgreSQL): per
class, per reader pair and the candidate guideline examples, against numbers worked out by
hand (box IoUs and matched counts), with medpy (Dice) and scikit-learn (F1 of two readers'
class marks = positive specific agreement); the API route, the CLI's JSON and re-queueing by a
class drawn as objects."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from geometry_support import box, disc, make_geo_project, mask, schema
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.cli.main import app
from truthset.workflow import analysis, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call

CLASSES = ["nodule", "mass", "cyst"]
#: Item -> reader -> objects. Hand-worked IoUs (x, y, w, h):
#: [11,10,10,10] vs [10,10,10,10]: 90 / 110 = 0.82 (match); r2's nodule [30,30,8,8] overlaps
#: nothing; r1 drew a cyst exactly where r0 drew a mass (IoU 1: a mass/cyst confusion).
BOXES = {
    "i00": {"r0": [box("nodule", 10, 10, 10, 10), box("mass", 40, 20, 10, 10)],
            "r1": [box("nodule", 11, 10, 10, 10), box("cyst", 40, 20, 10, 10)],
            "r2": [box("nodule", 30, 30, 8, 8)]},
    "i01": {"r0": [box("nodule", 5, 5, 10, 10)],
            "r1": [box("nodule", 5, 5, 10, 10), box("nodule", 30, 30, 10, 10)],
            "r2": []},
}


def _read_all(ws: Workspace, payloads: dict[str, dict[str, Any]], readers: list[str]) -> None:
    for name in readers:
        for _ in payloads:
            task = call(ws, name, queue.next_task).task
            call(ws, name, queue.submit, task.task_id, payloads[task.external_id][name])


def _reports(ws: Workspace, min_shared: int = 2) -> tuple[Any, Any, Any]:
    with ws.sessions() as s:
        p = projects.get_project(s, "chest")
        return (analysis.disagreement_by_class(s, p).set_index("class"),
                analysis.disagreement_by_pair(s, p, min_shared=min_shared),
                analysis.guideline_candidates(s, p, n=5))


def test_box_disagreement_by_class_pair_and_candidates(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 3\ntarget_f1: 0\n",
                     n_items=2)
    _read_all(workspace, {i: {r: {"objects": o} for r, o in reads.items()}
                          for i, reads in BOXES.items()}, ["r0", "r1", "r2"])
    by_class, pairs, candidates = _reports(workspace)
    # Per pair and class (tp, fp, fn), by hand:
    #   i00 r0-r1 nodule (1,0,0) mass (0,1,0) cyst (0,0,1); r0-r2 nodule (0,1,1) mass (0,1,0);
    #       r1-r2 nodule (0,1,1) cyst (0,1,0)
    #   i01 r0-r1 nodule (1,0,1); r0-r2 nodule (0,1,0); r1-r2 nodule (0,2,0)
    # nodule pooled: tp 2, fp 5, fn 3 -> F1 = 4 / 12.
    assert by_class.loc["nodule", "agreement"] == pytest.approx(4 / 12)
    assert by_class.loc["mass", "agreement"] == 0.0 and by_class.loc["cyst", "agreement"] == 0.0
    assert (by_class["metric"] == "f1").all()
    assert list(by_class["reads"]) == [5, 1, 1] and list(by_class["items"]) == [2, 1, 1]
    # Ordered pairs from a nodule read: i00 6 (all mark nodule), i01 4 of which 2 meet r2's
    # empty read -> 2 / 10; the lone mass and cyst are contradicted by both other readers.
    assert by_class.loc["nodule", "contradicted"] == pytest.approx(2 / 10)
    assert by_class.loc["mass", "contradicted"] == 1.0
    assert by_class.loc["mass", "confused_with"] == "cyst"
    assert by_class.loc["cyst", "confused_with"] == "mass"
    assert pd.isna(by_class.loc["nodule", "confused_with"])

    rows = {(r.reader_a, r.reader_b): r for r in pairs.itertuples()}
    assert [(r.reader_a, r.reader_b) for r in pairs.itertuples()] == [
        ("r0", "r2"), ("r1", "r2"), ("r0", "r1")]  # least agreeing first
    # r0-r1 over both items: tp 2, fp 1, fn 2 -> 4 / 7; nodule tp 2, fn 1 -> 4 / 5.
    assert rows[("r0", "r1")].agreement == pytest.approx(4 / 7)
    assert rows[("r0", "r1")].per_class == {"nodule": 0.8, "mass": 0.0, "cyst": 0.0}
    assert rows[("r0", "r2")].per_class == {"nodule": 0.0, "mass": 0.0, "cyst": None}
    assert rows[("r0", "r1")].shared == 2 and rows[("r0", "r1")].kappa is None

    # Item figure = mean over pairs of their F1 on the item:
    #   i00: r0-r1 2/(2+1+1) = 0.5, r0-r2 0, r1-r2 0 -> 1/6;  i01: 2/3, 0, 0 -> 2/9.
    assert list(candidates["item"]) == ["i00", "i01"]
    assert list(candidates["disagreement"]) == pytest.approx([1 - 1 / 6, 1 - 2 / 9], abs=1e-4)
    assert candidates.iloc[0]["labels"] == {"nodule": 3, "mass": 1, "cyst": 1}
    assert candidates.iloc[1]["labels"] == {"nodule": 2}
    assert list(candidates["final"]) == [{"nodule": 1}, {"nodule": 1}]  # 2 of 3 saw it

    # Over the API (managers; readers are refused) and the CLI's JSON: the same numbers.
    with workspace.unit("admin") as s:
        project = projects.get_project(s, "chest")
        users.add_user(s, username="lead", role="manager", tier=2)
        heads = {}
        for name in ("r0", "r1", "r2", "r3", "rev", "adj", "lead"):
            user = users.get_user(s, name)
            memberships.add_member(s, project, user, user.role)
            heads[name] = bearer(tokens.create_token(s, user, name="t").secret)
    c = client(workspace)
    assert c.get("/api/v1/projects/chest/disagreement", headers=heads["r0"]).status_code == 403
    body = c.get("/api/v1/projects/chest/disagreement?top=1", headers=heads["lead"]).json()
    assert [r["class"] for r in body["by_class"]] == CLASSES
    assert body["by_class"][0]["agreement"] == pytest.approx(1 / 3)
    assert body["by_class"][2]["contradicted"] == 1.0 and body["by_class"][0]["metric"] == "f1"
    assert body["by_pair"][2]["per_class"] == {"nodule": 0.8, "mass": 0.0, "cyst": 0.0}
    assert [(r["item"], r["entropy"]) for r in body["candidates"]] == [("i00", None)]
    assert body["candidates"][0]["disagreement"] == pytest.approx(1 - 1 / 6, abs=1e-4)
    if workspace.config.database_url.startswith("sqlite"):
        out = CliRunner().invoke(app, ["disagreement", "chest", "--json", "-w",
                                       str(workspace.root)])
        assert out.exit_code == 0, out.output
        data = json.loads(out.output)
        assert data["by_pair"][2]["agreement"] == pytest.approx(4 / 7)
        assert data["by_class"][1]["confused_with"] == "cyst"

    # A guideline change about masses re-queues the item whose reads drew one.
    with workspace.unit("lead") as s:
        done = analysis.requeue_for_guideline(s, projects.get_project(s, "chest"),
                                              classes=["mass"])
    assert done == ["i00"]


def test_mask_disagreement_against_medpy(workspace: Workspace) -> None:
    dc = pytest.importorskip("medpy.metric.binary").dc
    n20, n21, m = disc(20, 20, 6), disc(21, 20, 6), disc(45, 30, 5)
    painted = {"i00": {"r0": {"objects": [mask("nodule", n20)]},
                       "r1": {"objects": [mask("nodule", n21), mask("mass", m)]},
                       "r2": {"objects": [mask("mass", m), mask("cyst", n20)]}}}
    make_geo_project(workspace, schema("mask"), "workflow: consensus\nk: 3\ntarget_dice: 0\n")
    _read_all(workspace, painted, ["r0", "r1", "r2"])
    by_class, pairs, candidates = _reports(workspace, min_shared=1)
    d = dc(n21, n20)
    # Pairs where either paints the class: nodule r0-r1 d, r0-r2 0, r1-r2 0; mass r0-r1 0,
    # r0-r2 0, r1-r2 1; cyst r0-r2 0, r1-r2 0.
    assert list(by_class["agreement"]) == pytest.approx([d / 3, 1 / 3, 0.0])
    assert (by_class["metric"] == "dice").all()
    assert by_class.loc["nodule", "confused_with"] == "cyst"  # r2 painted a cyst over it
    assert by_class.loc["cyst", "confused_with"] == "nodule"
    assert pd.isna(by_class.loc["mass", "confused_with"])
    rows = {(r.reader_a, r.reader_b): r for r in pairs.itertuples()}
    assert rows[("r0", "r1")].agreement == pytest.approx(d / 2)
    assert rows[("r0", "r1")].per_class["nodule"] == pytest.approx(d)
    assert rows[("r0", "r1")].per_class["cyst"] is None
    assert rows[("r1", "r2")].agreement == pytest.approx(1 / 3)
    assert rows[("r0", "r2")].agreement == 0.0
    # The item's figure is the workflow's: per region, the mean Dice over all three pairs
    # (two readers who both left it empty agree, Dice 1): nodule d/3, mass 1/3, cyst 1/3.
    (row,) = candidates.itertuples()
    assert row.disagreement == pytest.approx(1 - (d / 3 + 1 / 3 + 1 / 3) / 3, abs=1e-4)
    assert row.labels == {"nodule": 2, "mass": 2, "cyst": 1}


def test_multi_label_disagreement_against_scikit_learn(workspace: Workspace) -> None:
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    marks = {"i00": {"r0": ["nodule", "mass"], "r1": ["nodule"], "r2": ["mass"]},
             "i01": {"r0": ["cyst"], "r1": ["cyst"], "r2": ["cyst", "nodule"]}}
    make_geo_project(workspace, schema("classification", "multi"),
                     "workflow: consensus\nk: 3\ntarget: 0\n", n_items=2)
    _read_all(workspace, {i: {r: {"labels": c} for r, c in reads.items()}
                          for i, reads in marks.items()}, ["r0", "r1", "r2"])
    by_class, pairs, candidates = _reports(workspace)

    def vec(item: str, reader: str) -> list[int]:
        return [int(c in marks[item][reader]) for c in CLASSES]

    pair_names = [("r0", "r1"), ("r0", "r2"), ("r1", "r2")]
    first = [vec(i, a) for i in marks for a, _b in pair_names]
    second = [vec(i, b) for i in marks for _a, b in pair_names]
    expected = f1_score(second, first, average=None, zero_division=np.nan)
    assert list(by_class["agreement"]) == pytest.approx(list(expected))
    # nodule: 6 ordered pairs start from a nodule mark, 4 meet a reader without it.
    assert by_class.loc["nodule", "contradicted"] == pytest.approx(4 / 6)
    rows = {(r.reader_a, r.reader_b): r for r in pairs.itertuples()}
    for a, b in pair_names:
        ya, yb = [vec(i, a) for i in marks], [vec(i, b) for i in marks]
        assert rows[(a, b)].agreement == pytest.approx(f1_score(yb, ya, average="micro"))
        per = f1_score(yb, ya, average=None, zero_division=np.nan)
        got = [np.nan if v is None else v for v in rows[(a, b)].per_class.values()]
        assert got == pytest.approx(list(per), nan_ok=True)
    # Items: 1 - mean over pairs of the pair's micro F1 on the item.
    figures = {i: np.mean([f1_score([vec(i, b)], [vec(i, a)], average="micro")
                           for a, b in pair_names]) for i in marks}
    assert list(candidates["item"]) == ["i00", "i01"]
    assert list(candidates["disagreement"]) == pytest.approx(
        [1 - figures["i00"], 1 - figures["i01"]], abs=1e-4)


def test_disagreement_route_on_single_label(workspace: Workspace) -> None:
    from workflow_support import make_project

    reads = {0: ["normal", "normal", "normal"], 1: ["normal", "nodule", "nodule"],
             2: ["nodule", "effusion", "normal"], 3: ["effusion", "effusion", "normal"]}
    make_project(workspace, "workflow: consensus\nk: 3\ntarget: 0.6\n", n_items=4)
    for name in ("r0", "r1", "r2"):
        for _ in range(4):
            task = call(workspace, name, queue.next_task).task
            call(workspace, name, queue.submit, task.task_id,
                 {"label": reads[int(task.external_id[1:])][int(name[1])]})
    with workspace.unit("admin") as s:
        project = projects.get_project(s, "chest")
        lead = users.add_user(s, username="lead", role="manager", tier=2)
        memberships.add_member(s, project, lead, "manager")
        head = bearer(tokens.create_token(s, lead, name="t").secret)
    body = client(workspace).get("/api/v1/projects/chest/disagreement",
                                 headers=head).json()
    normal = next(r for r in body["by_class"] if r["class"] == "normal")
    # 12 ordered pairs start from a "normal" read, 6 meet another class.
    assert normal["contradicted"] == pytest.approx(0.5) and normal["metric"] is None
    pair = next(r for r in body["by_pair"] if (r["reader_a"], r["reader_b"]) == ("r0", "r1"))
    assert pair["agreement"] == pytest.approx(0.5) and pair["kappa"] is not None
    top = body["candidates"][0]
    assert top["item"] == "i02" and top["entropy"] == pytest.approx(np.log2(3), abs=1e-4)
    assert top["labels"] == {"nodule": 1, "effusion": 1, "normal": 1}
