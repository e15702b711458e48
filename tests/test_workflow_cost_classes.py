"""Cost per class on box and multi-label projects (SQLite and PostgreSQL): an item counts in
every class present in its final label (and in "(no class)" when it names none), so the class
rows add up to more items than the policy rows; estimated accuracy per class from what the
workflow stored with each consensus. Numbers worked out by hand; the API route and the CLI
give the same."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from geometry_support import box, make_geo_project, schema
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.cli.main import app
from truthset.workflow import analysis, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call

COLUMNS = ["items", "labels_per_item", "minutes_per_item", "est_accuracy", "adjudicated",
           "in_other_classes"]


def _read(ws: Workspace, reads: dict[str, dict[str, Any]], seconds: dict[str, float]) -> None:
    """Every reader reads every item (``reads[item][reader]``), ``seconds[reader]`` each."""
    readers = sorted({r for by_reader in reads.values() for r in by_reader})
    for name in readers:
        for _ in reads:
            task = call(ws, name, queue.next_task).task
            call(ws, name, queue.submit, task.task_id, reads[task.external_id][name],
                 time_spent_s=seconds[name])


def _adjudicate(ws: Workspace, expect: str, payload: dict[str, Any], seconds: float) -> None:
    task = call(ws, "adj", queue.next_task).task
    assert task is not None and task.external_id == expect
    call(ws, "adj", queue.adjudicate, task.task_id, payload, reason="read again",
         time_spent_s=seconds)


def _report(ws: Workspace) -> analysis.CostReport:
    with ws.sessions() as s:
        return analysis.cost_report(s, projects.get_project(s, "chest"))


def _rows(frame: Any) -> dict[str, list[float]]:
    return {str(k): [float(v) for v in row] for k, row in frame[COLUMNS].iterrows()}


def _manager(ws: Workspace) -> dict[str, str]:
    with ws.unit("admin") as s:
        project = projects.get_project(s, "chest")
        lead = users.add_user(s, username="lead", role="manager", tier=2)
        memberships.add_member(s, project, lead, "manager")
        return bearer(tokens.create_token(s, lead, name="t").secret)


def test_box_cost_counts_an_item_in_every_class_it_shows(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"), "name: pair\nworkflow: consensus\nk: 2\n"
                                               "target_f1: 0.6\n", n_items=4)
    # Two readers (min_support 0.5: a box either drew enters the label). Matched F1 by hand:
    # i00 both boxes match -> 1; i01 the nodules match (IoU 90/110), r1's cyst does not:
    # tp 1, fp 0, fn 1 -> 2/3; i02 nobody drew anything -> 1; i03 a mass against a cyst
    # elsewhere -> 0, under 0.6: adjudicated as a mass.
    reads = {
        "i00": {"r0": [box("nodule", 10, 10, 10, 10), box("mass", 40, 20, 10, 10)],
                "r1": [box("nodule", 10, 10, 10, 10), box("mass", 40, 20, 10, 10)]},
        "i01": {"r0": [box("nodule", 10, 10, 10, 10)],
                "r1": [box("nodule", 11, 10, 10, 10), box("cyst", 40, 20, 10, 10)]},
        "i02": {"r0": [], "r1": []},
        "i03": {"r0": [box("mass", 5, 5, 10, 10)], "r1": [box("cyst", 30, 30, 10, 10)]},
    }
    _read(workspace, {i: {r: {"objects": o} for r, o in by.items()} for i, by in reads.items()},
          {"r0": 60.0, "r1": 120.0})
    _adjudicate(workspace, "i03", {"objects": [box("mass", 5, 5, 10, 10)]}, 300.0)
    report = _report(workspace)
    assert report["class_counting"] == analysis.EACH_CLASS_PRESENT
    # Minutes per item: 1 + 2 = 3 for two reads; i03 3 + 5 = 8 with three labels.
    assert list(report["by_policy"].index) == ["pair v1"]
    policy = report["by_policy"].iloc[0][COLUMNS[:-1]].astype(float).tolist()
    assert policy == pytest.approx([4, 9 / 4, 17 / 4, (1 + 2 / 3 + 1 + 1) / 4, 1 / 4])
    rows = _rows(report["by_class"])
    assert list(rows) == ["nodule", "mass", "cyst", analysis.NO_CLASS]  # schema order
    assert rows["nodule"] == pytest.approx([2, 2, 3, (1 + 2 / 3) / 2, 0, 2])  # i00, i01
    assert rows["mass"] == pytest.approx([2, 5 / 2, 11 / 2, 1, 1 / 2, 1])  # i00, i03
    assert rows["cyst"] == pytest.approx([1, 2, 3, 2 / 3, 0, 1])  # i01
    assert rows[analysis.NO_CLASS] == pytest.approx([1, 2, 3, 1, 0, 0])  # i02
    # Class rows count i00 and i01 twice: 6 items against 4.
    assert sum(r[0] for r in rows.values()) == 6

    head = _manager(workspace)
    body = client(workspace).get("/api/v1/projects/chest/cost", headers=head).json()
    assert body["class_counting"] == "each_class_present"
    assert [(r["group"], r["items"], r["in_other_classes"]) for r in body["by_class"]] == [
        ("nodule", 2, 2), ("mass", 2, 1), ("cyst", 1, 1), ("(no class)", 1, 0)]
    assert body["by_class"][0]["est_accuracy"] == pytest.approx(5 / 6)
    assert body["by_class"][1]["minutes_per_item"] == pytest.approx(5.5)
    assert body["by_policy"][0]["items"] == 4 and body["by_policy"][0]["in_other_classes"] is None
    if workspace.config.database_url.startswith("sqlite"):
        out = CliRunner().invoke(app, ["cost", "chest", "-w", str(workspace.root)],
                                 terminal_width=200)
        assert out.exit_code == 0, out.output
        text = " ".join(out.output.split())
        assert "Per class present in the final label" in text
        assert "so the class rows may add up to more items than the policy rows" in text
        assert "(no class)" in text and "in_other_classes" in text


def test_multi_label_cost_per_class_from_each_class_posterior(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("classification", "multi"),
                     "workflow: consensus\nk: 4\ntarget: 0.7\n", n_items=4)
    # Vote posterior = share of the four readers marking a class; an item is final when every
    # class is certain to 0.7 (max(p, 1 - p)): i00 nodule 4/4, mass 3/4 -> {nodule, mass},
    # confidence 0.75; i01 cyst 3/4 -> {cyst}; i02 nothing marked -> {}; i03 nodule 2/4 ->
    # certainty 0.5: adjudicated as {nodule}.
    marks = {"i00": [["nodule", "mass"], ["nodule", "mass"], ["nodule", "mass"], ["nodule"]],
             "i01": [["cyst"], ["cyst"], ["cyst"], []],
             "i02": [[], [], [], []],
             "i03": [["nodule"], ["nodule"], [], []]}
    _read(workspace, {i: {f"r{k}": {"labels": m} for k, m in enumerate(by)}
                      for i, by in marks.items()}, {f"r{k}": 60.0 for k in range(4)})
    _adjudicate(workspace, "i03", {"labels": ["nodule"]}, 240.0)
    report = _report(workspace)
    policy = report["by_policy"].iloc[0][COLUMNS[:-1]].astype(float).tolist()
    # The item's confidence is its least certain class: i00 and i01 0.75, i02 1, i03 expert 1.
    assert policy == pytest.approx([4, 17 / 4, 5, 3.5 / 4, 1 / 4])
    rows = _rows(report["by_class"])
    assert list(rows) == ["nodule", "mass", "cyst", analysis.NO_CLASS]
    # Per class, the posterior that the class is present: nodule on i00 is certain (4/4), not
    # the item's 0.75; i03 adjudicated counts 1.
    assert rows["nodule"] == pytest.approx([2, 9 / 2, 6, 1.0, 1 / 2, 1])
    assert rows["mass"] == pytest.approx([1, 4, 4, 0.75, 0, 1])
    assert rows["cyst"] == pytest.approx([1, 4, 4, 0.75, 0, 0])
    assert rows[analysis.NO_CLASS] == pytest.approx([1, 4, 4, 1.0, 0, 0])

    head = _manager(workspace)
    body = client(workspace).get("/api/v1/projects/chest/cost", headers=head).json()
    assert {r["group"]: r["est_accuracy"] for r in body["by_class"]} == pytest.approx(
        {"nodule": 1.0, "mass": 0.75, "cyst": 0.75, "(no class)": 1.0})


def test_single_label_cost_counts_the_final_class_once(workspace: Workspace) -> None:
    from workflow_support import make_project

    make_project(workspace, "workflow: consensus\nk: 2\ntarget: 0.6\n", n_items=2)
    for name in ("r0", "r1"):
        for _ in range(2):
            task = call(workspace, name, queue.next_task).task
            call(workspace, name, queue.submit, task.task_id, {"label": "nodule"},
                 time_spent_s=30.0)
    report = _report(workspace)
    assert report["class_counting"] == analysis.FINAL_CLASS
    assert _rows(report["by_class"]) == {"nodule": [2, 2, 1, 1.0, 0, 0]}
