"""Active learning in the task queue (SQLite and PostgreSQL): with ``active_learning`` in the
policy, items whose model draft is uncertain or whose readers disagree are offered first; without
it the queue's order is unchanged; ``reprioritise`` applies a new model run to open slots."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from truthset.domain.errors import InputError
from truthset.domain.policy import parse_policy
from truthset.prelabel.review import item_priorities as prelabel_item_priorities
from truthset.store.models import AuditEvent, Item, PrelabelDraft, PrelabelModel, Project, Task
from truthset.workflow import queue
from truthset.workflow.active_learning import item_priorities
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call, make_project

CONFIDENT = {"normal": 0.98, "nodule": 0.01, "effusion": 0.01}
UNCERTAIN = {"normal": 0.34, "nodule": 0.33, "effusion": 0.33}


def _drafts(s: Any, p: Project, probabilities: dict[str, dict[str, float]]) -> None:
    """A model run: one draft row per named item with its class probabilities."""
    model = s.scalar(sa.select(PrelabelModel).where(PrelabelModel.project_id == p.id))
    if model is None:
        model = PrelabelModel(project_id=p.id, name="cxr-net", version="1", kind="python",
                              output="classification", classes=["normal", "nodule", "effusion"])
        s.add(model)
        s.flush()
    for ext, probs in probabilities.items():
        item = s.scalars(sa.select(Item).where(Item.project_id == p.id,
                                               Item.external_id == ext)).one()
        s.add(PrelabelDraft(project_id=p.id, model_id=model.id, item_id=item.id,
                            status="drafted", confidence=max(probs.values()),
                            probabilities=probs))
    s.flush()


def _order(ws: Workspace, reader: str, n: int) -> list[str]:
    """The items ``reader`` is offered, one after another (each read and submitted)."""
    seen = []
    for _ in range(n):
        task = call(ws, reader, queue.next_task).task
        assert task is not None
        with ws.sessions() as s:
            seen.append(s.get(Item, task.item_id).external_id)
        call(ws, reader, queue.submit, task.task_id, {"label": "normal"})
    return seen


def _model_run(s: Any, p: Project) -> None:
    _drafts(s, p, {"i00": CONFIDENT, "i02": UNCERTAIN})


def test_uncertain_draft_is_offered_before_a_confident_one(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\nactive_learning: {weight_model: 1.0}\n",
                 n_items=4, extra=_model_run)
    # i02 (uncertain draft) first, then the items nothing is known about, the confident last.
    assert _order(workspace, "r0", 4) == ["i02", "i01", "i03", "i00"]


def test_off_by_default_changes_nothing(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\n", n_items=4, extra=_model_run)
    with workspace.sessions() as s:
        assert {t.priority for t in s.scalars(sa.select(Task))} == {0.0}
    assert _order(workspace, "r0", 4) == ["i00", "i01", "i02", "i03"]


def test_reader_disagreement_is_offered_first(workspace: Workspace) -> None:
    def earlier_reads(s: Any, p: Project) -> None:
        # Reads recorded before the queue (an import): r3 and r4 agree on i00, split on i02.
        for ext, labels in (("i00", ("normal", "normal")), ("i02", ("normal", "nodule"))):
            item = s.scalars(sa.select(Item).where(Item.external_id == ext)).one()
            for name, label in zip(("r3", "r4"), labels, strict=True):
                record_annotation(s, p, item=item, author=users.get_user(s, name),
                                  payload={"label": label})

    make_project(workspace, "workflow: consensus\nk: 2\nactive_learning: {weight_model: 0.0}\n",
                 n_items=3, extra=earlier_reads)
    with workspace.sessions() as s:
        p = projects.get_project(s, "chest")
        ids = {i.external_id: i.id for i in s.scalars(sa.select(Item))}
        scores = item_priorities(s, p, weight_model=0.0)
        assert scores == {ids["i00"]: 0.0, ids["i02"]: 1.0}
        # One implementation: the prelabel service's hook gives the same numbers.
        assert prelabel_item_priorities(s, p, weight_model=0.0) == scores
        assert item_priorities(s, p, item_ids=[ids["i01"]]) == {}
    assert _order(workspace, "r0", 3) == ["i02", "i01", "i00"]


def test_reprioritise_after_a_model_run(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\nactive_learning: {weight_model: 1.0}\n",
                 n_items=3)
    with workspace.sessions() as s:  # nothing known yet: every slot scores 0.5
        assert {t.priority for t in s.scalars(sa.select(Task))} == {0.5}
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        _model_run(s, p)
        assert queue.reprioritise(s, p) == 4  # two slots each of i00 and i02
        assert queue.reprioritise(s, p) == 0  # nothing new
    with workspace.sessions() as s:
        events = s.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "tasks.reprioritise").order_by(AuditEvent.seq)).all()
        after = [json.loads(e.after) for e in events]
        assert [a["changed"] for a in after] == [4, 0] and after[0]["active_learning"] is True
    assert _order(workspace, "r0", 3) == ["i02", "i01", "i00"]


def test_policy_fields_are_validated() -> None:
    policy = parse_policy("workflow: consensus\nactive_learning: {weight: 2.5}\n")
    assert policy.active_learning is not None
    assert (policy.active_learning.weight, policy.active_learning.weight_model) == (2.5, 0.5)
    assert parse_policy("workflow: consensus\n").active_learning is None
    with pytest.raises(InputError) as bad:
        parse_policy("workflow: consensus\nactive_learning:\n  weight_model: 1.5\n")
    assert bad.value.field == "active_learning.weight_model" and bad.value.location == "line 3"
    with pytest.raises(InputError) as unknown:
        parse_policy("workflow: consensus\nactive_learning: {wieght: 1}\n")
    assert unknown.value.field == "active_learning.wieght"


def test_reprioritise_command(workspace: Workspace) -> None:
    from typer.testing import CliRunner

    from truthset.cli.main import app

    make_project(workspace, "workflow: consensus\nk: 2\nactive_learning: {weight_model: 1.0}\n",
                 n_items=3)
    with workspace.unit("admin") as s:
        _model_run(s, projects.get_project(s, "chest"))
    runner = CliRunner()
    result = runner.invoke(app, ["task", "reprioritise", "chest", "-w", str(workspace.root)])
    assert result.exit_code == 0 and "4 open read tasks of 'chest'" in result.output
    missing = runner.invoke(app, ["task", "reprioritise", "nope", "-w", str(workspace.root)])
    assert missing.exit_code != 0 and "nope" in missing.output
    assert _order(workspace, "r0", 1) == ["i02"]
