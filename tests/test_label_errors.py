"""Label-error detection (confident learning) against cleanlab, noise rates with intervals,
sending likely errors to re-review, and active-learning priority."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from truthset.domain.errors import InputError
from truthset.prelabel.review import detect_label_errors, item_priorities, send_to_review
from truthset.quality import label_errors as le
from truthset.quality.priority import disagreement, normalised_entropy, task_priority
from truthset.store.models import Item, LabelIssue, Task
from truthset.workflow.annotations import record_annotation
from truthset.workflow.consensus import compute_consensus
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace


def _noisy(n: int, k: int, noise: float, seed: int, signal: float = 2.5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += signal
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    y = true.copy()
    flip = rng.random(n) < noise
    y[flip] = (y[flip] + rng.integers(1, k, flip.sum())) % k
    return y, p, true


@pytest.mark.parametrize(("n", "k", "noise", "seed"), [(2000, 3, 0.15, 0), (800, 5, 0.25, 1),
                                                       (500, 2, 0.1, 2)])
def test_same_issues_and_noise_matrix_as_cleanlab(n: int, k: int, noise: float,
                                                  seed: int) -> None:
    from cleanlab.count import compute_confident_joint, estimate_latent
    from cleanlab.filter import find_label_issues

    y, p, _ = _noisy(n, k, noise, seed)
    ours = le.find_label_issues(y, p)
    theirs = find_label_issues(y, p)
    jaccard = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
    assert jaccard >= 0.95
    cj = compute_confident_joint(y, p)
    # cleanlab rounds its calibrated joint to integers; ours keeps the fractions
    assert np.abs(le.confident_joint(y, p) - cj).max() <= 1.0
    _, noise_matrix, _ = estimate_latent(cj, y)
    np.testing.assert_allclose(le.noise_matrix(y, p), noise_matrix, atol=0.01)


def test_issues_find_the_flipped_labels_and_rank_them_first() -> None:
    y, p, true = _noisy(1500, 3, 0.1, 3, signal=4.0)
    ranked = le.rank_label_issues(y, p).table
    flagged = ranked[ranked["is_issue"]]
    wrong = set(np.flatnonzero(y != true))
    precision = len(set(flagged["id"]) & wrong) / len(flagged)
    recall = len(set(flagged["id"]) & wrong) / len(wrong)
    assert precision > 0.8 and recall > 0.6
    assert (np.diff(flagged["score"].to_numpy()) <= 1e-12).all()  # most likely first


def test_reader_disagreement_moves_an_item_up() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.3, 0.7], [0.3, 0.7]])
    agree = np.array([1.0, 0.5, 1.0, 1.0])
    table = le.rank_label_issues(y, p, agreement=agree, n_readers=[3, 2, 3, 1]).table
    assert table.iloc[0]["id"] == 1  # same model evidence as item 0, but readers split


def test_noise_rate_interval_covers_the_truth_and_is_deterministic() -> None:
    y, p, true = _noisy(3000, 3, 0.15, 4)
    rates = le.noise_rates(y, p, n_boot=100, seed=1)
    actual = np.array([(true[y == i] != i).mean() for i in range(3)])
    assert ((rates.low <= actual + 0.02) & (actual - 0.02 <= rates.high)).all()
    assert (rates.low < rates.rate).all() and (rates.rate < rates.high).all()
    again = le.noise_rates(y, p, n_boot=100, seed=1)
    np.testing.assert_array_equal(rates.low, again.low)


@pytest.mark.parametrize(("labels", "probs", "field"), [
    ([0, 1], [[0.5, 0.5]], "labels"),
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]], "labels"),
    ([0, 1], [[0.5, 0.6], [0.5, 0.5]], "pred_probs"),
    ([0, 1], [[1.0], [1.0]], "pred_probs"),
])
def test_bad_inputs_are_named(labels: list[int], probs: list[list[float]], field: str) -> None:
    with pytest.raises(InputError) as err:
        le.find_label_issues(np.array(labels), np.array(probs))
    assert err.value.field == field


def test_priority_mixes_uncertainty_and_disagreement() -> None:
    assert normalised_entropy({"a": 0.5, "b": 0.5}) == pytest.approx(1.0)
    assert normalised_entropy([1.0, 0.0, 0.0]) == 0.0
    assert disagreement(["a", "b"]) == 1.0 and disagreement(["a", "a"]) == 0.0
    assert task_priority(None, None) == 0.5
    assert task_priority({"a": 0.5, "b": 0.5}, ["a", "a"], weight_model=0.5) == 0.5
    assert task_priority({"a": 0.99, "b": 0.01}, None) < task_priority({"a": 0.6, "b": 0.4},
                                                                        None)


SCHEMA = """name: finding
kind: classification
mode: single
classes:
  - name: normal
  - name: nodule
"""


def test_errors_detected_in_a_project_and_sent_to_review(workspace: Workspace,
                                                         tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 60
    true = rng.integers(0, 2, n)
    with workspace.unit("admin") as s:
        p = projects.create_project(s, key="p", name="P", schema_text=SCHEMA)
        readers = [users.add_user(s, username=f"r{k}", role="annotator") for k in range(3)]
        for i in range(n):
            item = Item(project_id=p.id, external_id=f"i{i:03d}", kind="image",
                        attributes={"split": "test" if i % 3 == 0 else "train"})
            s.add(item)
            s.flush()
            label = ["normal", "nodule"][true[i]]
            if i in (4, 9, 21):  # the readers all got these wrong
                label = ["nodule", "normal"][true[i]]
            for k, reader in enumerate(readers):
                given = label if not (i == 9 and k == 2) else ["normal", "nodule"][true[i]]
                record_annotation(s, p, item=item, author=reader, payload={"label": given})
        compute_consensus(s, p, method="mv")
    probs = np.where(true[:, None] == np.arange(2)[None, :], 0.9, 0.1)
    table = pd.DataFrame({"item": [f"i{i:03d}" for i in range(n)], "normal": probs[:, 0],
                          "nodule": probs[:, 1]})
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        report = detect_label_errors(s, p, table, n_boot=50)
        flagged = report.issues[report.issues["is_issue"]]
        assert set(flagged["item"]) == {"i004", "i009", "i021"}
        assert flagged.iloc[0]["item"] == "i009"  # readers disagreed there
        assert set(report.noise["class"]) == {"normal", "nodule"}
        test_only = detect_label_errors(s, p, table, split="test", n_boot=50)
        assert test_only.n_items == 20
        assert set(test_only.issues[test_only.issues["is_issue"]]["item"]) == {"i009", "i021"}
        sent = send_to_review(s, p, report, top=2)
        assert [r.status for r in sent] == ["sent", "sent"]
        again = send_to_review(s, p, report, top=2)
        assert [r.status for r in again] == ["flagged", "flagged"]  # no second review task
        tasks = s.scalars(sa.select(Task).where(Task.stage == "review")).all()
        assert len(tasks) == 2 and all(t.priority > 2 for t in tasks)
        assert s.scalar(sa.select(sa.func.count()).select_from(LabelIssue)) == 4
        with pytest.raises(InputError, match="no column for class 'nodule'"):
            detect_label_errors(s, p, table.drop(columns="nodule"))
        with pytest.raises(InputError, match="no item 'zzz'"):
            detect_label_errors(s, p, pd.concat([table, pd.DataFrame(
                {"item": ["zzz"], "normal": [0.5], "nodule": [0.5]})]))
        prio = item_priorities(s, p)
        item9 = s.scalars(sa.select(Item).where(Item.external_id == "i009")).one()
        # no drafts here: priority is the readers' disagreement (2 against 1 on i009 only)
        assert prio[item9.id] == pytest.approx(2 / 3)
        assert all(v == 0.0 for i, v in prio.items() if i != item9.id)
