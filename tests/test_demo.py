"""The demo builds a whole project offline, and everything it writes checks out."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from truthset import audit
from truthset.cli.main import app
from truthset.demo import ADJUDICATOR, READERS, run_demo
from truthset.workspace.workspace import Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return run_demo(tmp_path_factory.mktemp("demo") / "d", seed=0)


def test_release_files_match_their_manifest(demo) -> None:  # type: ignore[no-untyped-def]
    folder = demo.release.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    labels = pd.read_csv(folder / "labels.csv")
    provenance = pd.read_csv(folder / "provenance.csv")
    assert len(labels) == demo.n_items
    # Every final label is backed by one read per simulated reader, all named; split votes
    # went through the queue to the senior reader, whose adjudication is recorded beside them.
    reads = provenance[provenance["role"] == "read"]
    assert (reads.groupby("item")["annotator"].nunique() == len(READERS)).all()
    assert set(reads["annotator"]) == {name for name, _t, _a in READERS}
    adjudications = provenance[provenance["role"] == "adjudication"]
    assert set(adjudications["annotator"]) <= {ADJUDICATOR}
    assert len(adjudications) == demo.workflow["adjudications"] > 0
    assert provenance["created_at"].str.endswith("+00:00").all()


def test_consensus_beats_the_average_reader(demo) -> None:  # type: ignore[no-untyped-def]
    mean_reader = demo.readers["vs_truth"].mean()
    assert demo.consensus_accuracy["mv"] > mean_reader
    assert demo.consensus_accuracy["ds"] >= mean_reader


def test_agreement_summary_is_computed(demo) -> None:  # type: ignore[no-untyped-def]
    by_metric = {(a["metric"], a.get("level")): a for a in demo.agreement}
    alpha = by_metric[("krippendorff", "ordinal")]
    assert alpha["value"] is not None and alpha["ci"][0] <= alpha["value"] <= alpha["ci"][1]
    # Readers err towards neighbouring grades, so ordinal alpha exceeds nominal alpha.
    assert alpha["value"] > by_metric[("krippendorff", "nominal")]["value"]


def test_audit_chain_of_the_demo_is_intact(demo) -> None:  # type: ignore[no-untyped-def]
    with Workspace.open(demo.folder / "workspace") as ws, ws.sessions() as s:
        result = audit.verify(s)
    assert result.ok and result.n_events > demo.n_reads


def test_demo_command_prints_what_it_made(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "release" in result.output and "Consensus accuracy" in result.output
    again = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert again.exit_code == 2 and "not empty" in again.output


def test_demo_releases_are_signed_verified_and_diffed(demo) -> None:  # type: ignore[no-untyped-def]
    from truthset.release.manifest import verify_folder

    for made in (demo.release, demo.second_release):
        report = verify_folder(made.folder)
        assert report.ok, report.to_dict()
        assert [s.meaning for s in report.signatures] == ["approved for training"]
        assert (made.folder / "datasheet.html").is_file()
        assert (made.folder / "datasheet.pdf").is_file()
    # v2 leaves out one more item than v1 (which leaves out the known-answer items).
    assert demo.second_release.n_excluded == demo.release.n_excluded + 1
    assert demo.diff["summary"]["label_changed"] == 2
    assert all(c["audit_event"]["seq"] for c in demo.diff["label_changed"])
    assert (demo.folder / "releases" / "diff-v1-v2.txt").read_text().startswith("Release diff")


def test_demo_readers_went_through_the_workflow(demo) -> None:  # type: ignore[no-untyped-def]
    work = demo.workflow
    # The trainee failed calibration and was never given a real item, and was told why.
    assert "calibration not passed" in work["not_working"]["tia"]
    # Every reader was scored on the known-answer items (calibration and gold).
    scored = work["gold"].set_index("reader")
    assert {name for name, _t, _a in READERS} <= set(scored.index)
    assert (scored["n_gold"] >= 3).all()
    assert work["escalations"] >= work["adjudications"] > 0


def test_demo_reads_are_spread_over_several_days(demo) -> None:  # type: ignore[no-untyped-def]
    from truthset.demo import PROJECT_KEY, READ_DAYS
    from truthset.store.models import Annotation, utcnow
    from truthset.workflow.monitoring import agreement_over_time
    from truthset.workspace import projects

    with Workspace.open(demo.folder / "workspace") as ws, ws.sessions() as s:
        project = projects.get_project(s, PROJECT_KEY)
        days = agreement_over_time(s, project, period="day", n_boot=20)
        stamps = [a.created_at.replace(tzinfo=a.created_at.tzinfo or UTC) for a in s.query(
            Annotation).filter(Annotation.project_id == project.id, Annotation.source == "human")]
    # The dashboard's agreement over time has a point for most of the simulated days, each
    # computed over several items; every read lies in the past, over about READ_DAYS days.
    assert len(days) >= READ_DAYS - 1 and all(d.n_items >= 2 for d in days)
    assert sum(d.result.value is not None for d in days) >= READ_DAYS - 1
    span = max(stamps) - min(stamps)
    assert READ_DAYS - 1 <= span.total_seconds() / 86400 <= READ_DAYS + 1
    assert max(stamps) < utcnow()


def test_demo_lesions_wait_for_the_adjudicator(tmp_path: Path) -> None:
    from truthset.demo_web import LESION_READS, add_browser_projects
    from truthset.workflow import queue
    from truthset.workspace import projects, users

    workspace = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db'}")
    assert add_browser_projects(workspace) == ["lesions", "findings"]
    with workspace.unit("test") as s:
        project = projects.get_project(s, "lesions")
        adj = queue.next_task(s, project, users.get_user(s, "sam")).task
    # ana and ben's boxes on the CT, read through the queue, disagree: sam adjudicates them.
    assert adj is not None and adj.stage == "adjudicate"
    assert {r["reader"]: r["payload"] for r in adj.context["reads"]} == {
        name: {"objects": objects} for name, objects in LESION_READS.items()}
    fused = adj.context["consensus"]
    assert [(f["label"], f["readers"]) for f in fused["payload"]["objects"]] == [
        ("nodule", ["ana", "ben"])]
    assert [(f["label"], f["readers"]) for f in fused["payload"]["minority"]] == [
        ("mass", ["ben"])]
    assert fused["agreement"] == pytest.approx(2 / 3)  # matched F1: 2 x 1 / (2 x 1 + 1)
    assert "under target 0.80" in adj.context["escalation"]["reason"]
    assert all(r["skill"]["consensus"]["items"] == 0 for r in adj.context["reads"])
    # The other two images wait for whoever signs in.
    with workspace.unit("test") as s:
        project = projects.get_project(s, "lesions")
        for name in ("ana", "ben"):
            task = queue.next_task(s, project, users.get_user(s, name)).task
            assert task is not None and task.stage == "annotate"
            assert task.item_id != adj.item_id and task.context == {}
    workspace.close()
