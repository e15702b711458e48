"""The adaptive policy's posterior fields (``reader_prior``, ``class_prior``) decide the same in
the task queue, on SQLite and PostgreSQL, as in the simulator."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from truthset.domain.policy import parse_policy
from truthset.domain.schema import RiskLevel
from truthset.store.models import Consensus, Item
from truthset.workflow import policies, queue
from truthset.workflow.simulate import run_policy
from truthset.workspace import projects
from truthset.workspace.workspace import Workspace
from workflow_support import call, make_project

POLICY = ("workflow: adaptive\nm: 1\nk_max: 3\ntarget: 0.9\nmethod: onecoin\n"
          "reader_prior: empirical\nclass_prior: uniform\non_exhausted: accept\n"
          "calibration: {threshold: 0.7}\n")
CLASSES = ["normal", "nodule", "effusion"]
CALIBRATION = {"cal0": "normal", "cal1": "nodule", "cal2": "effusion", "cal3": "normal"}


class _Script:
    """The simulator's label source, replaying what the queue's readers did."""

    def __init__(self, calibration: dict[str, dict[str, str]],
                 reads: list[tuple[str, str]]) -> None:
        self.calibration = calibration
        self.reads = list(reads)

    def read(self, item: str, exclude: set[str], tier: int) -> tuple[str, str, float] | None:
        if item in CALIBRATION:
            left = [r for r in sorted(self.calibration) if r not in exclude]
            return (left[0], self.calibration[left[0]][item], 1.0) if left else None
        while self.reads:
            reader, label = self.reads.pop(0)
            if reader not in exclude:
                return reader, label, 1.0
        return None

    def truth(self, item: str) -> str | None:
        return "normal"


def test_reader_prior_decides_alike_in_queue_and_simulator(workspace: Workspace) -> None:
    def known(s: Any, p: Any) -> None:
        for name in CALIBRATION:
            s.add(Item(project_id=p.id, external_id=name, kind="image"))
        s.flush()
        policies.add_gold(s, p, CALIBRATION, purpose="calibration")

    make_project(workspace, POLICY, n_items=1, n_readers=4, staff=False, extra=known)
    # r0 passes calibration four of four; r1, r2 and r3 miss cal0.
    answers = {f"r{k}": {c: ("effusion" if k and c == "cal0" else a)
                         for c, a in CALIBRATION.items()} for k in range(4)}
    for name, mine in answers.items():
        for _ in CALIBRATION:
            task = call(workspace, name, queue.next_task).task
            assert task.stage == "calibrate"
            call(workspace, name, queue.submit, task.task_id, {"label": mine[task.external_id]})
    # Readers take the item as it comes; the script gives the labels in read order.
    script = ["normal", "nodule", "normal"]
    reads: list[tuple[str, str]] = []
    posteriors: list[dict[str, float]] = []
    for name in ("r1", "r2", "r3", "r0"):
        task = call(workspace, name, queue.next_task).task
        if task is None:
            continue
        call(workspace, name, queue.submit, task.task_id, {"label": script[len(reads)]})
        reads.append((name, script[len(reads)]))
        with workspace.sessions() as s:
            p = projects.get_project(s, "chest")
            item = s.scalars(sa.select(Item).where(Item.external_id == "i00")).one()
            decision, _facts = queue.item_decision(s, p, item)
            posteriors.append(decision.posterior)
    # By hand: calibration scores 4/4, 3/4, 3/4, 3/4 pool completely under the fitted prior
    # (every accuracy 13/16); one read's posterior with equal class frequencies is 13/16 < 0.9.
    assert posteriors[0]["normal"] == pytest.approx(13 / 16, abs=2e-4)
    assert len(reads) == 3  # k_max: accepted after three reads
    with workspace.sessions() as s:
        final = s.scalars(sa.select(Consensus)).one()
        queue_label, queue_confidence = final.label["label"], final.confidence
        # A project this small (16 calibration reads and 3) decides on a fit of all its reads,
        # and says so in the record.
        assert final.parameters["posterior_basis"] == {"posterior": "fit of the project",
                                                       "project_reads": 19}
    # The simulator, given the same calibration answers and the same reads in the same order
    # (and one spare read, should it want more), decides alike.
    spare = [*reads, ("r0", "effusion")]
    result = run_policy(parse_policy(POLICY), CLASSES, dict.fromkeys(CLASSES, RiskLevel.LOW),
                        ["i00"], _Script(answers, spare), calibration=CALIBRATION)
    row = result.items.iloc[0]
    assert int(row["reads"]) == len(reads)
    assert row["label"] == queue_label == "normal"
    assert float(row["confidence"]) == pytest.approx(queue_confidence, abs=1e-9)
    assert float(row["confidence"]) == pytest.approx(posteriors[-1]["normal"], abs=1e-9)
