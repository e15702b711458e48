"""The task queue on SQLite and PostgreSQL: slots, leases, refusals, review, adjudication,
calibration, gold and concurrency."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from truthset.domain.errors import InputError, NotFoundError
from truthset.store.models import (
    Annotation,
    AuditEvent,
    Consensus,
    Escalation,
    Item,
    ReaderStatus,
    Review,
    Task,
    utcnow,
)
from truthset.workflow import policies, queue
from truthset.workflow import readers as rd
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import SCHEMA, call, count, make_project, run_threads


def test_consensus_slots_adjudication_and_escalation(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 3\ntarget: 0.9\n", n_items=2)
    # Item 1: three different labels -> adjudication; item 2: unanimous -> final.
    wanted = {"r0": ["nodule", "normal"], "r1": ["effusion", "normal"],
              "r2": ["normal", "normal"]}
    for name, labels in wanted.items():
        for label in labels:
            task = call(workspace, name, queue.next_task).task
            assert task is not None and task.stage == "annotate" and task.context == {}
            call(workspace, name, queue.submit, task.task_id, {"label": label})
    # Never more readers than asked: r3 finds nothing.
    assert call(workspace, "r3", queue.next_task).task is None
    assert count(workspace, Task, Task.stage == "annotate") == 6
    with workspace.sessions() as s:
        esc = s.scalars(sa.select(Escalation)).one()
        assert esc.status == "open" and esc.to_tier == 3 and "under target" in esc.reason
    # A reader cannot take the adjudication; the adjudicator sees every label side by side.
    assert call(workspace, "rev", queue.next_task).task is None
    adj = call(workspace, "adj", queue.next_task).task
    assert adj.stage == "adjudicate"
    assert sorted(r["label"] for r in adj.context["reads"]) == ["effusion", "nodule", "normal"]
    with pytest.raises(InputError, match="reason"):
        call(workspace, "adj", queue.adjudicate, adj.task_id, {"label": "nodule"}, reason=" ")
    done = call(workspace, "adj", queue.adjudicate, adj.task_id, {"label": "nodule"},
                reason="round opacity on the lateral view")
    assert done.item_status == "final"
    with workspace.sessions() as s:
        rows = {c.item_id: c for c in s.scalars(sa.select(Consensus))}
        assert {c.label["label"] for c in rows.values()} == {"nodule", "normal"}
        assert {c.method for c in rows.values()} == {"adjudication", "mv"}
        assert s.scalars(sa.select(Escalation)).one().status == "resolved"
        refused = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "refused")).all()
        assert len(refused) == 1 and "reason" in refused[0].after


def test_refused_submits_write_nothing_and_are_audited(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\nlease_minutes: 5\n", n_items=2)
    task = call(workspace, "r0", queue.next_task).task
    before = count(workspace, sa.table("annotations"))
    # Not leased to you.
    with pytest.raises(queue.TaskDeniedError, match="not leased to you"):
        call(workspace, "r1", queue.submit, task.task_id, {"label": "normal"})
    # Payload that does not fit the schema.
    with pytest.raises(queue.TaskInputError, match="unknown class") as err:
        call(workspace, "r0", queue.submit, task.task_id, {"label": "tumour"})
    assert err.value.field == "label"
    with pytest.raises(queue.TaskInputError):
        call(workspace, "r0", queue.submit, task.task_id, ["normal"])
    assert count(workspace, sa.table("annotations")) == before
    call(workspace, "r0", queue.submit, task.task_id, {"label": "normal"})
    # Twice.
    with pytest.raises(queue.TaskConflictError, match="already submitted"):
        call(workspace, "r0", queue.submit, task.task_id, {"label": "normal"})
    # Expired lease: the slot goes back to the pool and the old holder cannot submit.
    late = call(workspace, "r1", queue.next_task).task
    later = utcnow() + timedelta(minutes=6)
    with pytest.raises(queue.TaskConflictError, match="expired"):
        call(workspace, "r1", queue.submit, late.task_id, {"label": "normal"}, now=later)
    taken = call(workspace, "r2", queue.next_task, now=later).task
    assert taken.task_id == late.task_id
    with pytest.raises(NotFoundError):
        call(workspace, "r0", queue.submit, 99999, {"label": "normal"})
    with workspace.sessions() as s:
        reasons = [e.after for e in s.scalars(sa.select(AuditEvent).where(
            AuditEvent.action.in_(("refused", "denied")), AuditEvent.entity_type == "tasks"))]
    assert len(reasons) == 5
    assert all('"user"' in r and '"reason"' in r for r in reasons)


def test_single_review_accept_correct_reject_escalate(workspace: Workspace) -> None:
    policy = "workflow: single_review\nreview_rate: {low: 1.0, medium: 1.0, high: 1.0}\n"
    make_project(workspace, policy, n_items=4)
    firsts = {}
    for k in range(4):
        task = call(workspace, f"r{k}", queue.next_task).task
        call(workspace, f"r{k}", queue.submit, task.task_id, {"label": "normal"})
        firsts[task.item_id] = f"r{k}"
    outcomes = {}
    decisions = [("accept", None, ""), ("correct", {"label": "effusion"}, "fluid"),
                 ("reject", None, "wrong side"), ("escalate", None, "cannot tell")]
    for decision, payload, comment in decisions:
        task = call(workspace, "rev", queue.next_task).task
        assert task.stage == "review" and task.context["under_review"]["label"] == "normal"
        if decision == "reject":
            with pytest.raises(InputError, match="comment"):
                call(workspace, "rev", queue.review, task.task_id, "reject")
        if decision == "correct":
            with pytest.raises(InputError, match="change the label"):
                call(workspace, "rev", queue.review, task.task_id, "correct",
                     payload={"label": "normal"})
        result = call(workspace, "rev", queue.review, task.task_id, decision, payload=payload,
                      comment=comment)
        outcomes[decision] = (task.item_id, result)
    assert outcomes["accept"][1].item_status == "final"
    assert outcomes["correct"][1].item_status == "final"
    assert outcomes["reject"][1].next_step.startswith("read")
    assert outcomes["escalate"][1].next_step.startswith("adjudicate")
    # The rejected item is read again, by someone other than its first reader.
    rejected = outcomes["reject"][0]
    task = call(workspace, "r4", queue.next_task).task
    assert task.item_id == rejected and firsts[rejected] != "r4"
    with workspace.sessions() as s:
        labels = {c.item_id: c.label["label"] for c in s.scalars(sa.select(Consensus))}
        assert labels[outcomes["correct"][0]] == "effusion"
        assert labels[outcomes["accept"][0]] == "normal"
        assert {r.decision for r in s.scalars(sa.select(Review))} == set(queue.REVIEW_DECISIONS)
        assert s.scalars(sa.select(Escalation)).one().from_tier == 2


def test_nobody_reviews_their_own_work(workspace: Workspace) -> None:
    policy = "workflow: single_review\nreview_rate: {low: 1.0}\n"
    make_project(workspace, policy, n_items=1, n_readers=0)
    # The reviewer annotates the only item; its review slot is not offered to them.
    task = call(workspace, "rev", queue.next_task).task
    call(workspace, "rev", queue.submit, task.task_id, {"label": "normal"})
    nxt = call(workspace, "rev", queue.next_task)
    assert nxt.task is None
    assert call(workspace, "adj", queue.next_task).task.stage == "review"


def test_qualification_by_tier_and_specialty(workspace: Workspace) -> None:
    def specialists(s: Any, _p: Any) -> None:
        users.add_user(s, username="rad", role="adjudicator", tier=3, specialty="radiology")

    policy = "workflow: consensus\nk: 2\ntarget: 0.9\nspecialty: {adjudicate: radiology}\n"
    make_project(workspace, policy, n_items=1, extra=specialists)
    for name, label in (("r0", "normal"), ("r1", "nodule")):
        task = call(workspace, name, queue.next_task).task
        call(workspace, name, queue.submit, task.task_id, {"label": label})
    assert call(workspace, "adj", queue.next_task).task is None  # no radiology specialty
    assert call(workspace, "rad", queue.next_task).task.stage == "adjudicate"


def test_policy_without_qualified_readers_is_refused(workspace: Workspace) -> None:
    with workspace.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        users.add_user(s, username="r0", role="annotator")
        with pytest.raises(InputError) as err:
            policies.set_policy(s, p, "workflow: consensus\nk: 1\ntarget: 0.9\n")
        assert err.value.field == "tiers.adjudicate"
        with pytest.raises(InputError) as err:
            policies.set_policy(s, p, "workflow: consensus\nk: 3\ntarget: 0\n")
        assert err.value.field == "k"


def test_adaptive_adds_readers_only_while_uncertain(workspace: Workspace) -> None:
    policy = "workflow: adaptive\nm: 2\nk_max: 4\ntarget: 0.7\non_exhausted: accept\n"
    make_project(workspace, policy, n_items=2)
    script = {0: ["normal", "normal"], 1: ["normal", "nodule", "nodule", "nodule"]}
    by_item: dict[int, list[str]] = {}
    for _round in range(6):
        for k in range(5):
            task = call(workspace, f"r{k}", queue.next_task).task
            if task is None:
                continue
            seen = by_item.setdefault(task.item_id, [])
            label = script[int(task.external_id[1:])][len(seen)]
            seen.append(f"r{k}")
            call(workspace, f"r{k}", queue.submit, task.task_id, {"label": label})
    counts = sorted(len(v) for v in by_item.values())
    assert counts == [2, 4]
    assert all(len(set(v)) == len(v) for v in by_item.values())
    with workspace.sessions() as s:
        assert count(workspace, Consensus) == 2
        final = {c.item_id: c.label["label"] for c in s.scalars(sa.select(Consensus))}
    assert sorted(final.values()) == ["nodule", "normal"]


def test_calibration_then_gold_and_suspension(workspace: Workspace) -> None:
    def known(s: Any, p: Any) -> None:
        for k in range(3):
            s.add(Item(project_id=p.id, external_id=f"cal{k}", kind="image"))
        for k in range(4):
            s.add(Item(project_id=p.id, external_id=f"gold{k}", kind="image"))
        s.flush()
        policies.add_gold(s, p, {"cal0": "normal", "cal1": "nodule", "cal2": "effusion"},
                          purpose="calibration")
        policies.add_gold(s, p, {f"gold{k}": "nodule" for k in range(4)})

    policy = ("workflow: consensus\nk: 2\ncalibration: {threshold: 0.6}\n"
              "gold: {rate: 0.5, threshold: 0.7, min_reads: 2}\n")
    make_project(workspace, policy, n_items=6, extra=known)
    # r0 answers calibration well; r1 badly.
    for name, answers in (("r0", ["normal", "nodule", "normal"]),
                          ("r1", ["effusion", "normal", "normal"])):
        for answer in answers:
            task = call(workspace, name, queue.next_task).task
            assert task.stage == "calibrate"
            call(workspace, name, queue.submit, task.task_id, {"label": answer})
    failed = call(workspace, "r1", queue.next_task)
    assert failed.task is None and "calibration not passed" in failed.reason
    # r0 works; gold items turn up among regular ones, looking the same; r0 calls every
    # nodule "normal" and is suspended for nodule.
    seen_gold = 0
    for _ in range(10):
        nxt = call(workspace, "r0", queue.next_task)
        if nxt.task is None:
            break
        assert nxt.task.stage == "annotate" and nxt.task.context == {}
        seen_gold += nxt.task.external_id.startswith("gold")
        call(workspace, "r0", queue.submit, nxt.task.task_id, {"label": "normal"})
    assert seen_gold >= 2
    with workspace.sessions() as s:
        status = {(r.class_name, r.status) for r in s.scalars(sa.select(ReaderStatus))}
        assert ("nodule", "suspended") in status and ("", "passed") in status
        p = projects.get_project(s, "chest")
        fb = rd.reader_feedback(s, p, users.get_user(s, "r0"))
    assert "nodule" in fb.stats.suspensions and any("suspended for nodule" in m
                                                    for m in fb.messages)
    # Calibration counts too: cal1 (nodule) was answered right.
    assert fb.stats.per_class.loc["nodule", "sensitivity"] == pytest.approx(1 / (1 + seen_gold))
    assert int(fb.stats.confusion.loc["nodule", "normal"]) == seen_gold
    assert "item" not in str(fb.stats.to_dict())


def test_priority_overdue_escalations_first(workspace: Workspace) -> None:
    policy = "workflow: consensus\nk: 2\ntarget: 0.9\nescalation: {deadline_hours: 1}\n"
    make_project(workspace, policy, n_items=2)
    for name, label in (("r0", "normal"), ("r1", "nodule"), ("r0", "normal"),
                        ("r1", "effusion")):
        task = call(workspace, name, queue.next_task).task
        call(workspace, name, queue.submit, task.task_id, {"label": label})
    with workspace.sessions() as s:
        escalations = s.scalars(sa.select(Escalation).order_by(Escalation.id)).all()
    assert len(escalations) == 2
    # Make the second escalation overdue: it comes first.
    with workspace.unit("admin") as s:
        row = s.get(Escalation, escalations[1].id)
        row.due_at = utcnow() - timedelta(hours=2)
    task = call(workspace, "adj", queue.next_task).task
    assert task.item_id == escalations[1].item_id


@pytest.mark.parametrize("routing", ["queue", "skill"])
def test_200_concurrent_requests_never_overfill_or_repeat(workspace: Workspace,
                                                          routing: str) -> None:
    """100 readers ask twice each, all at once, for 20 items x 3 slots; then everyone who got
    one submits at once and everybody asks again (adaptive: more reads for split items).
    Under ``routing: skill`` the second round's reads are routed (see also
    ``test_workflow_routing.py``, where the routing changes who gets what)."""
    policy = "workflow: adaptive\nm: 3\nk_max: 5\ntarget: 0.9\non_exhausted: accept\n"
    if routing == "skill":  # every read is routed: fit, window, lock of the chosen slot
        policy += "method: ds\nrouting: skill\n"
    make_project(workspace, policy, n_items=20, n_readers=100, staff=False)
    names = [f"r{k}" for k in range(100)]
    got = run_threads(200, lambda k: call(workspace, names[k % 100], queue.next_task).task)
    leases = Counter()
    per_reader: dict[str, set[int]] = {}
    for k, task in enumerate(got):
        if task is not None:
            per_reader.setdefault(names[k % 100], set()).add(task.task_id)
    # One reader's two concurrent requests return the same lease.
    assert all(len(v) == 1 for v in per_reader.values())
    held = {name: next(iter(v)) for name, v in per_reader.items()}
    assert len(set(held.values())) == len(held) == 60
    with workspace.sessions() as s:
        for item_id, n in s.execute(sa.select(Task.item_id, sa.func.count(
                sa.distinct(Task.assignee_id))).group_by(Task.item_id)).all():
            leases[item_id] = n
    assert set(leases.values()) == {3}

    def submit(k: int) -> Any:
        name = list(held)[k]
        with workspace.sessions() as s:
            item_id = s.get(Task, held[name]).item_id
        label = "normal" if (item_id % 2 == 0 or int(name[1:]) % 3) else "nodule"
        return call(workspace, name, queue.submit, held[name], {"label": label})

    run_threads(len(held), submit)
    again = run_threads(200, lambda k: call(workspace, names[k % 100], queue.next_task).task)
    with workspace.sessions() as s:
        rows = s.execute(sa.select(Task.item_id, Task.assignee_id).where(
            Task.assignee_id.is_not(None))).all()
        slots = Counter(i for i, _a in rows)
        max_slots = s.execute(sa.select(Task.item_id, sa.func.count()).group_by(Task.item_id)
                              ).all()
    assert len(rows) == len(set(rows)), "a reader got the same item twice"
    assert all(n <= 5 for _i, n in max_slots)
    assert max(slots.values()) <= 5
    assert sum(t is not None for t in again) > 0


def test_model_drafts_go_straight_to_review(workspace: Workspace) -> None:
    from truthset.workflow.annotations import record_annotation

    def drafts(s: Any, p: Any) -> None:
        for item in s.scalars(sa.select(Item).where(Item.project_id == p.id)):
            record_annotation(s, p, item=item, author=None, payload={"label": "effusion"},
                              model=("cxr-net", "1.0"))

    policy = ("workflow: single_review\nprelabels: draft\n"
              "review_rate: {low: 1.0, medium: 1.0, high: 1.0}\n")
    make_project(workspace, policy, n_items=2, extra=drafts)
    assert count(workspace, Task, Task.stage == "annotate") == 0
    first = call(workspace, "rev", queue.next_task).task
    assert first.stage == "review" and first.context["under_review"]["label"] == "effusion"
    assert call(workspace, "rev", queue.review, first.task_id, "accept").item_status == "final"
    second = call(workspace, "adj", queue.next_task).task
    rejected = call(workspace, "adj", queue.review, second.task_id, "reject",
                    comment="no fluid")
    assert rejected.next_step.startswith("read")
    # A human reads the item whose draft was rejected.
    task = call(workspace, "r0", queue.next_task).task
    assert task.item_id == second.item_id and task.stage == "annotate"
    with workspace.sessions() as s:
        final = s.scalars(sa.select(Consensus)).one()
    assert final.method == "review" and final.label == {"label": "effusion"}


def test_expired_leases_return_to_the_pool(workspace: Workspace) -> None:
    make_project(workspace, "workflow: consensus\nk: 2\nlease_minutes: 10\n", n_items=1)
    task = call(workspace, "r0", queue.next_task).task
    later = utcnow() + timedelta(minutes=11)
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        assert queue.release_expired(s, p, now=utcnow()) == 0
        assert queue.release_expired(s, p, now=later) == 1
        summary = queue.queue_summary(s, p)
    assert dict(zip(summary["status"], summary["n"], strict=True)) == {"open": 2}
    with workspace.sessions() as s:
        row = s.get(Task, task.task_id)
        assert row.status == "open" and row.assignee_id is None


def test_reads_are_stamped_with_the_services_clock(workspace: Workspace) -> None:
    # A replay of reads made days ago (the demo's): lease, read, adjudication and completion
    # all carry the clock the caller gives.
    make_project(workspace, "workflow: consensus\nk: 2\ntarget: 0.9\n", n_items=1)
    start = utcnow() - timedelta(days=3)
    for k, (name, label) in enumerate((("r0", "normal"), ("r1", "nodule"))):
        at = start + timedelta(hours=k)
        task = call(workspace, name, queue.next_task, now=at).task
        call(workspace, name, queue.submit, task.task_id, {"label": label}, now=at)
    at = start + timedelta(days=1)
    adj = call(workspace, "adj", queue.next_task, now=at).task
    call(workspace, "adj", queue.adjudicate, adj.task_id, {"label": "nodule"}, reason="x", now=at)
    with workspace.sessions() as s:
        stamps = [queue.aware(a.created_at) for a in s.scalars(
            sa.select(Annotation).order_by(Annotation.id))]
        done = sorted(d for t in s.scalars(sa.select(Task))
                      if (d := queue.aware(t.completed_at)) is not None)
    assert stamps == [start, start + timedelta(hours=1), at] == done
