"""Escalation listings, disagreement analysis, guideline re-queue and cost reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from truthset.domain.errors import InputError
from truthset.store.models import AuditEvent, Consensus, Task, utcnow
from truthset.workflow import analysis, escalations, queue
from truthset.workspace import projects
from truthset.workspace.workspace import Workspace
from workflow_support import call, make_project

#: item index -> the three reads (r0, r1, r2).
READS = {0: ["normal", "normal", "normal"], 1: ["normal", "nodule", "nodule"],
         2: ["nodule", "effusion", "normal"], 3: ["effusion", "effusion", "normal"]}


@pytest.fixture
def worked(workspace: Workspace) -> Workspace:
    make_project(workspace, "name: triple\nworkflow: consensus\nk: 3\ntarget: 0.6\n"
                            "escalation: {deadline_hours: 2}\n", n_items=4)
    for name in ("r0", "r1", "r2"):
        for _ in range(4):
            task = call(workspace, name, queue.next_task).task
            label = READS[int(task.external_id[1:])][int(name[1])]
            call(workspace, name, queue.submit, task.task_id, {"label": label},
                 time_spent_s=30.0)
    return workspace


def test_escalations_listed_and_overdue_reported(worked: Workspace) -> None:
    with worked.sessions() as s:
        p = projects.get_project(s, "chest")
        open_ = escalations.list_escalations(s, p)
        assert list(open_["item"]) == ["i02"] and not open_["overdue"].any()
        late = escalations.list_escalations(s, p, overdue_only=True,
                                            now=utcnow() + timedelta(hours=3))
        assert list(late["item"]) == ["i02"] and late["hours_overdue"].iloc[0] >= 0.9
        with pytest.raises(InputError):
            escalations.list_escalations(s, p, status="lost")
    with worked.unit("lead") as s:
        p = projects.get_project(s, "chest")
        escalations.report_overdue(s, p, now=utcnow() + timedelta(hours=3))
    with worked.sessions() as s:
        event = s.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "overdue_report")).one()
        assert '"n":1' in event.after
    task = call(worked, "adj", queue.next_task).task
    call(worked, "adj", queue.adjudicate, task.task_id, {"label": "nodule"}, reason="round")
    with worked.sessions() as s:
        p = projects.get_project(s, "chest")
        assert escalations.list_escalations(s, p).empty
        assert list(escalations.list_escalations(s, p, status="resolved")["item"]) == ["i02"]


def test_disagreement_by_class_and_pair_and_candidates(worked: Workspace) -> None:
    with worked.sessions() as s:
        p = projects.get_project(s, "chest")
        by_class = analysis.disagreement_by_class(s, p).set_index("class")
        pairs = analysis.disagreement_by_pair(s, p)
        candidates = analysis.guideline_candidates(s, p, n=2)
    assert by_class.loc["normal", "reads"] == 6
    assert by_class.loc["effusion", "confused_with"] == "normal"
    # normal: 12 ordered pairs start from a "normal" read; 6 of them meet another class.
    assert by_class.loc["normal", "contradicted"] == pytest.approx(6 / 12)
    assert len(pairs) == 3 and set(pairs.columns) >= {"agreement", "kappa"}
    row = pairs.set_index(["reader_a", "reader_b"]).loc[("r0", "r1")]
    assert row["shared"] == 4 and row["agreement"] == pytest.approx(2 / 4)
    assert list(candidates["item"]) == ["i02", "i01"]
    assert candidates.iloc[0]["labels"] == {"nodule": 1, "effusion": 1, "normal": 1}


def test_guideline_change_requeues_affected_items(worked: Workspace) -> None:
    with worked.unit("lead") as s:
        p = projects.get_project(s, "chest")
        projects.add_guideline_version(s, p, body="new", change_note="effusion: blunting only")
        with pytest.raises(InputError):
            analysis.requeue_for_guideline(s, p, classes=["tumour"])
        again = analysis.requeue_for_guideline(s, p, classes=["effusion"])
    assert again == ["i02", "i03"]
    with worked.sessions() as s:
        latest = {c.item_id: c for c in s.scalars(sa.select(Consensus).order_by(Consensus.id))}
        statuses = {c.status for i, c in latest.items()}
        assert "requeued" in statuses
        fresh = s.scalar(sa.select(sa.func.count()).select_from(Task).where(
            Task.status == "open"))
    assert fresh == 6
    # The same readers may read them again, under the new guideline.
    task = call(worked, "r0", queue.next_task).task
    assert task.external_id in again and task.guideline_version == 1


def test_cost_report_per_policy_and_class(worked: Workspace) -> None:
    with worked.sessions() as s:
        p = projects.get_project(s, "chest")
        report = analysis.cost_report(s, p)
    by_policy = report["by_policy"]
    assert list(by_policy.index) == ["triple v1"]
    assert by_policy["items"].iloc[0] == 3  # i02 still waits for adjudication
    assert by_policy["labels_per_item"].iloc[0] == 3
    assert by_policy["minutes_per_item"].iloc[0] == pytest.approx(1.5)
    by_class = report["by_class"]
    assert by_class.loc["normal", "est_accuracy"] == pytest.approx(1.0)
    assert by_class.loc["nodule", "est_accuracy"] == pytest.approx(2 / 3)
    assert report["known_answer"]["reads"].iloc[0] == 0


def test_overdue_escalations_are_raised_a_tier(workspace: Workspace) -> None:
    from truthset.workspace import users

    def junior(s: Any, _p: Any) -> None:
        users.add_user(s, username="adj2", role="adjudicator", tier=2)

    make_project(workspace, "workflow: consensus\nk: 2\ntarget: 0.9\n"
                            "tiers: {adjudicate: 2}\nescalation: {deadline_hours: 1}\n",
                 n_items=1, extra=junior)
    for name, label in (("r0", "normal"), ("r1", "nodule")):
        task = call(workspace, name, queue.next_task).task
        call(workspace, name, queue.submit, task.task_id, {"label": label})
    later = utcnow() + timedelta(hours=2)
    with workspace.unit("lead") as s:
        p = projects.get_project(s, "chest")
        assert escalations.raise_overdue(s, p, now=utcnow()) == []
        (raised,) = escalations.raise_overdue(s, p, now=later)
        assert (raised.from_tier, raised.to_tier) == (2, 3)
        listed = escalations.list_escalations(s, p, status=None)
    assert sorted(listed["status"]) == ["open", "raised"]
    # Only a tier-3 reader is offered the item now.
    assert call(workspace, "adj2", queue.next_task).task is None
    task = call(workspace, "adj", queue.next_task).task
    assert task.stage == "adjudicate"
    call(workspace, "adj", queue.adjudicate, task.task_id, {"label": "nodule"}, reason="clear")
    with workspace.sessions() as s:
        p = projects.get_project(s, "chest")
        assert escalations.list_escalations(s, p).empty
