"""The workflow commands end to end: policy, gold, task next/submit, review, adjudicate,
readers, escalations, disagreement, cost, requeue and simulate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from truthset.cli.main import app
from truthset.workspace.workspace import Workspace
from workflow_support import make_project

runner = CliRunner()


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "-w", str(ws.root)])
    return result.exit_code, result.output


def take(ws: Workspace, reader: str) -> dict:
    code, out = run(ws, "task", "next", "chest", "--as", reader, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """An SQLite workspace: the commands are thin, the services are tested on both
    databases."""
    ws = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'ws.db'}")
    try:
        yield ws
    finally:
        ws.close()


def test_cli_round_trip(workspace: Workspace, tmp_path: Path) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\ntarget: 0.9\n", n_items=2)
    gold = tmp_path / "gold.csv"
    gold.write_text("item,label\ni01,nodule\n")
    code, out = run(workspace, "gold", "add", "chest", str(gold))
    assert code == 4 and "already in the workflow" in out  # queued items cannot become gold
    policy = tmp_path / "p.yaml"
    policy.write_text("workflow: consensus\nk: 0\n")
    code, out = run(workspace, "policy", "set", "chest", str(policy))
    assert code == 2 and "field 'k'" in out and "line 2" in out
    policy.write_text("workflow: adaptive\nm: 1\nmethod: onecoin\n")
    code, out = run(workspace, "policy", "set", "chest", str(policy))
    assert code == 0 and "caution:" in out and "calibration" in out, out
    code, out = run(workspace, "policy", "show", "chest")
    assert code == 0 and "caution:" in out
    policy.write_text("workflow: consensus\nk: 2\ntarget: 0.9\n")
    code, out = run(workspace, "policy", "set", "chest", str(policy))
    assert code == 0 and "caution" not in out
    # Two readers disagree on the first item: it is escalated.
    first = take(workspace, "r0")["task"]
    code, out = run(workspace, "task", "submit", "chest", str(first["task_id"]), "--as", "r0",
                    "--label", "normal", "--time-spent", "12")
    assert code == 0 and "pending" in out, out
    code, out = run(workspace, "task", "submit", "chest", str(first["task_id"]), "--as", "r0",
                    "--label", "normal")
    assert code == 4 and "already submitted" in out
    code, out = run(workspace, "task", "submit", "chest", str(first["task_id"]), "--as", "r1",
                    "--label", "normal")
    assert code == 5 and "not leased to you" in out
    second = take(workspace, "r1")["task"]
    assert second["item_id"] == first["item_id"]
    code, out = run(workspace, "task", "submit", "chest", str(second["task_id"]), "--as", "r1",
                    "--label", "tumour")
    assert code == 2 and "unknown class" in out
    run(workspace, "task", "submit", "chest", str(second["task_id"]), "--as", "r1", "--label",
        "nodule")
    code, out = run(workspace, "escalations", "chest", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and rows[0]["to_tier"] == 3
    adj = take(workspace, "adj")["task"]
    assert adj["stage"] == "adjudicate" and len(adj["context"]["reads"]) == 2
    code, out = run(workspace, "adjudicate", "chest", str(adj["task_id"]), "--as", "adj",
                    "--label", "nodule", "--reason", "")
    assert code == 2 and "reason" in out
    code, out = run(workspace, "adjudicate", "chest", str(adj["task_id"]), "--as", "adj",
                    "--label", "nodule", "--reason", "spiculated margin")
    assert code == 0 and "final" in out
    for command in (("task", "status", "chest"), ("task", "release-expired", "chest"),
                    ("disagreement", "chest"), ("cost", "chest"),
                    ("readers", "stats", "chest"), ("escalations", "chest", "--all"),
                    ("escalations", "chest", "--report", "--raise-overdue"),
                    ("policy", "show", "chest")):
        code, out = run(workspace, *command)
        assert code == 0, (command, out)
    code, out = run(workspace, "requeue", "chest", "--class", "nodule")
    assert code == 0 and "1 items re-queued" in out
    code, out = run(workspace, "readers", "feedback", "chest", "--as", "r0", "--json")
    assert code == 0 and json.loads(out)["reader"] == "r0"


@pytest.mark.parametrize("workflow", ["consensus\nk: 5\ntarget: 0", "adaptive\nm: 2\nk_max: 7"
                                      "\ntarget: 0.95\nmethod: onecoin\non_exhausted: accept"])
def test_simulate_prints_accuracy_and_cost(tmp_path: Path, workflow: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(f"workflow: {workflow}\n")
    result = runner.invoke(app, ["simulate", "--policy", str(policy), "--items", "200",
                                 "--readers", "20:beta(6,2)", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert 0.7 < summary["accuracy"] <= 1.0 and summary["labels_per_item"] >= 2


def test_simulate_refuses_a_bad_reader_spec(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("workflow: consensus\n")
    result = runner.invoke(app, ["simulate", "--policy", str(policy), "--readers", "x"])
    assert result.exit_code == 2 and "readers" in result.output
