"""The review, adjudicate, task submit and gold add commands on a box project: payloads given
as JSON or as a file, bad input refused with exit code 2 naming the field (nothing written),
and the final label carrying the objects given."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from geometry_support import box, make_geo_project, schema
from truthset.cli.main import app
from truthset.store.models import Annotation, Consensus, GoldItem, Item
from truthset.workspace import projects
from truthset.workspace.workspace import Workspace
from workflow_support import count

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """An SQLite workspace: the commands are thin, the services are tested on both
    databases."""
    ws = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'ws.db'}")
    try:
        yield ws
    finally:
        ws.close()


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "-w", str(ws.root)])
    return result.exit_code, result.output


def take(ws: Workspace, reader: str) -> dict[str, Any]:
    code, out = run(ws, "task", "next", "chest", "--as", reader, "--json")
    assert code == 0, out
    return json.loads(out)["task"]


def objects(*boxes: dict[str, Any]) -> str:
    return json.dumps({"objects": list(boxes)})


def final(ws: Workspace) -> Consensus:
    with ws.sessions() as s:
        row = s.scalars(sa.select(Consensus).order_by(Consensus.id.desc()).limit(1)).one()
        s.expunge(row)
        return row


def test_review_corrects_objects_from_json_or_a_file(workspace: Workspace,
                                                      tmp_path: Path) -> None:
    make_geo_project(workspace, schema("box"),
                     "workflow: single_review\nreview_rate: {low: 1, medium: 1, high: 1}\n")
    read = tmp_path / "read.json"
    read.write_text(objects(box("nodule", 10, 10, 10, 10)))
    task = take(workspace, "r0")
    code, out = run(workspace, "task", "submit", "chest", str(task["task_id"]), "--as", "r0",
                    "--payload", str(read))
    assert code == 0 and "pending" in out, out
    review = take(workspace, "rev")
    assert review["stage"] == "review"
    assert review["context"]["under_review"]["payload"] == json.loads(read.read_text())
    before = count(workspace, Annotation)
    tid = str(review["task_id"])
    bad = [
        (["--payload", objects(box("nodule", 60, 10, 10, 10))], "field 'objects.0.bbox'"),
        (["--payload", objects(box("tumour", 1, 1, 5, 5))], "field 'objects.0.label'"),
        (["--payload", '{"objects": [}'], "field 'payload'"),
        (["--payload", "[1, 2]"], "field 'payload'"),
        (["--payload", str(tmp_path / "missing.json")], "field 'payload'"),
        (["--payload", objects(), "--label", "nodule"], "not both"),
    ]
    for extra, words in bad:
        code, out = run(workspace, "review", "chest", tid, "--as", "rev", "--decision",
                        "correct", *extra)
        assert code == 2 and words in " ".join(out.split()), (extra, out)
    assert count(workspace, Annotation) == before  # nothing written
    corrected = [box("nodule", 10, 10, 12, 11)]
    code, out = run(workspace, "review", "chest", tid, "--as", "rev", "--decision", "correct",
                    "--payload", objects(*corrected), "--comment", "margin")
    assert code == 0 and "final" in out, out
    row = final(workspace)
    assert row.method == "review" and row.label == {"objects": corrected}


def test_adjudicate_gives_the_final_objects(workspace: Workspace, tmp_path: Path) -> None:
    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 2\ntarget_f1: 0.8\n")
    for name, drawn in (("r0", box("nodule", 10, 10, 10, 10)), ("r1", box("mass", 40, 20, 8, 8))):
        task = take(workspace, name)
        code, out = run(workspace, "task", "submit", "chest", str(task["task_id"]), "--as",
                        name, "--payload", objects(drawn))
        assert code == 0, out
    adj = take(workspace, "adj")
    assert adj["stage"] == "adjudicate" and len(adj["context"]["reads"]) == 2
    tid = str(adj["task_id"])
    answer = tmp_path / "final.json"
    answer.write_text(objects(box("tumour", 10, 10, 10, 10)))
    for extra, words in (
            (["--payload", str(answer)], "field 'objects.0.label'"),
            ([], "field 'label'"),
            (["--payload", objects(box("nodule", 10, 10, 10, 10), {"type": "star",
                                                                   "label": "nodule"})],
             "field 'objects.1.type'")):
        code, out = run(workspace, "adjudicate", "chest", tid, "--as", "adj", "--reason",
                        "seen", *extra)
        assert code == 2 and words in " ".join(out.split()), (extra, out)
    chosen = [box("nodule", 10, 10, 10, 10)]
    answer.write_text(objects(*chosen))
    code, out = run(workspace, "adjudicate", "chest", tid, "--as", "adj", "--payload",
                    str(answer), "--reason", "the mass is a vessel")
    assert code == 0 and "final" in out, out
    row = final(workspace)
    assert row.method == "adjudication" and row.label == {"objects": chosen}


def test_gold_add_takes_payloads(workspace: Workspace, tmp_path: Path) -> None:
    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 2\ntarget_f1: 0\n")
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        for name in ("g0", "g1"):
            s.add(Item(project_id=p.id, external_id=name, kind="image",
                       media=[{"width": 64, "height": 48}]))
    table = tmp_path / "gold.csv"
    table.write_text('item,payload\ng0,"{""objects"": [{""type"": ""box"", ""label"": '
                     '""nodule"", ""bbox"": [1, 2, 5, 5]}]}"\ng1,"{""objects"": [{""type"": '
                     '""box"", ""label"": ""nodule"", ""bbox"": [60, 2, 5, 5]}]}"\n')
    code, out = run(workspace, "gold", "add", "chest", str(table))
    assert code == 2 and "item g1" in out and "field 'objects.0.bbox'" in out, out
    assert count(workspace, GoldItem) == 0
    table.write_text('item,payload\ng0,"{""objects"": [}"\n')
    code, out = run(workspace, "gold", "add", "chest", str(table))
    assert code == 2 and "row 1" in out and "field 'payload'" in out, out
    table.write_text('item,payload\ng0,"{""objects"": [{""type"": ""box"", ""label"": '
                     '""nodule"", ""bbox"": [1, 2, 5, 5]}]}"\n')
    code, out = run(workspace, "gold", "add", "chest", str(table), "--purpose", "calibration")
    assert code == 0 and "1 calibration items" in out, out
    with workspace.sessions() as s:
        gold = s.scalars(sa.select(GoldItem)).one()
        assert gold.purpose == "calibration"
        assert gold.label["objects"][0]["bbox"] == [1, 2, 5, 5]
    # r0 reads the calibration case exactly; their statistics say what is measured.
    policy = tmp_path / "policy.yaml"
    policy.write_text("workflow: consensus\nk: 2\ntarget_f1: 0\ncalibration: {threshold: 0.5}\n")
    assert run(workspace, "policy", "set", "chest", str(policy))[0] == 0
    task = take(workspace, "r0")
    assert task["stage"] == "calibrate" and task["external_id"] == "g0"
    code, out = run(workspace, "task", "submit", "chest", str(task["task_id"]), "--as", "r0",
                    "--payload", objects(box("nodule", 1, 2, 5, 5)))
    assert code == 0, out
    code, out = run(workspace, "readers", "stats", "chest", "--reader", "r0")
    text = " ".join(out.split())
    assert code == 0 and "1 known-answer reads, score 1.000" in text, out
    assert "precision: matched / read objects of the class" in text and "Confusion" not in text
