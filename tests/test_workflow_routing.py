"""Skill-aware routing (policy ``routing: skill``): the pure core in
:mod:`truthset.workflow.routing` against brute force and hand-worked numbers, and the task queue
honouring it on SQLite and PostgreSQL."""

from __future__ import annotations

import doctest
import itertools
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from truthset.domain.errors import InputError
from truthset.domain.policy import parse_policy
from truthset.quality.aggregation.dawid_skene import DawidSkene, OneCoinDawidSkene
from truthset.store.models import Annotation, Item, Task
from truthset.workflow import policies, queue, routing
from truthset.workflow.routing import REFIT_EVERY, Candidate, ReaderModel, pick, settle_chance
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import SCHEMA, call, make_project, run_threads

# -- the pure core -------------------------------------------------------------------------------


def _brute_force(posterior: np.ndarray, likelihood: np.ndarray, target: float) -> float:
    """Enumerate every (true class, read) outcome; Bayes' rule by
    :meth:`ReaderModel.update`; add up the probability of the outcomes that settle."""
    k = len(posterior)
    classes = tuple(f"c{j}" for j in range(k))
    model = ReaderModel(classes, {"w": likelihood}, posterior, likelihood)
    total = 0.0
    for true, read in itertools.product(range(k), range(k)):
        p = float(posterior[true] * likelihood[true, read])
        if p == 0.0:
            continue
        after = model.update(posterior, "w", classes[read])
        if after.max() >= target - 1e-12:
            total += p
    return total


def _simplex(k: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k).map(
        lambda xs: np.asarray(xs) / sum(xs))


@st.composite
def _cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    k = draw(st.integers(2, 5))
    posterior = draw(_simplex(k))
    likelihood = np.stack([draw(_simplex(k)) for _ in range(k)])
    target = draw(st.floats(0.3, 0.99))
    return posterior, likelihood, target


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_settle_chance_equals_brute_force(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    posterior, likelihood, target = case
    assert settle_chance(posterior, likelihood, target) == pytest.approx(
        _brute_force(posterior, likelihood, target), abs=1e-9)


def test_settle_chance_by_hand_and_docstring_example() -> None:
    # The docstring's example runs as written.
    result = doctest.testmod(routing, verbose=False)
    assert result.attempted >= 2 and result.failed == 0
    # An item at 0.8 / 0.2, a reader right 90 % of the time, target 0.95: reading class 0
    # (P = 0.8 * 0.9 + 0.2 * 0.1 = 0.74) gives 0.72 / 0.74 = 0.973, which settles; reading
    # class 1 (P = 0.26) gives 0.18 / 0.26 = 0.69, which does not.
    like = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert settle_chance(np.array([0.8, 0.2]), like, 0.95) == pytest.approx(0.74)
    # A coin-flip reader settles nothing that is not settled already.
    assert settle_chance(np.array([0.5, 0.5]), np.full((2, 2), 0.5), 0.9) == 0.0
    assert settle_chance(np.array([0.95, 0.05]), np.full((2, 2), 0.5), 0.9) == 1.0


def _model(accuracies: dict[str, float]) -> ReaderModel:
    return ReaderModel.from_accuracies(("a", "b"), accuracies)


def test_pick_prefers_the_highest_settle_chance() -> None:
    model = _model({"strong": 0.9})
    candidates = [
        Candidate("fresh", 0),                                # prior 50/50: chance 1.0
        Candidate("leaning", 2, np.array([0.8, 0.2])),        # target 0.95: chance 0.74
        Candidate("split", 2, np.array([0.5, 0.5])),          # target 0.95: chance 0
    ]
    # At target 0.95 only the leaning item can be settled by one read (the split one reaches
    # 0.45 / 0.5 = 0.9 at best; the fresh one needs two reads first).
    assert pick(candidates, model, "strong", target=0.95, min_reads=2) == 1
    # At target 0.9 the split item settles whatever the read (chance 1.0), the leaning one only
    # on a read of its leading class (chance 0.74): the split item.
    assert settle_chance(np.array([0.8, 0.2]), model.likelihood("strong"), 0.9) == (
        pytest.approx(0.74))
    assert pick(candidates, model, "strong", target=0.9, min_reads=2) == 2
    # Without the two-read floor the fresh item (50/50 -> 0.9, chance 1.0, fewest reads) wins.
    assert pick(candidates, model, "strong", target=0.9, min_reads=1) == 0


def test_pick_falls_back_to_fewest_reads_and_keeps_order_on_ties() -> None:
    model = _model({"weak": 0.6})
    # A 60 % reader moves 50/50 to 60/40 at best: nothing reaches 0.9.
    candidates = [Candidate("x", 3, np.array([0.5, 0.5])), Candidate("y", 1,
                  np.array([0.5, 0.5])), Candidate("z", 1, np.array([0.6, 0.4]))]
    assert pick(candidates, model, "weak", target=0.9) == 1  # fewest reads; y before z
    same = [Candidate(k, 2, np.array([0.5, 0.5])) for k in "pqr"]
    assert pick(same, model, "weak", target=0.9) == 0
    # Equal chances (1.0 each for a strong reader) also keep the queue order.
    assert pick(same, _model({"s": 0.95}), "s", target=0.9) == 0
    with pytest.raises(ValueError, match="no candidates"):
        pick([], model, "weak", target=0.9)


def test_pick_honours_min_reads() -> None:
    model = _model({"strong": 0.95})
    # The fresh item's one read could settle it (prior 50/50 -> 0.95), but an item needs two
    # reads first; the second candidate's read is its second, which may settle it.
    candidates = [Candidate("fresh", 0), Candidate("one", 1, np.array([0.6, 0.4]))]
    assert pick(candidates, model, "strong", target=0.9, min_reads=1) == 0
    assert pick(candidates, model, "strong", target=0.9, min_reads=2) == 1
    # With three reads needed neither read can settle: the fewest reads win.
    assert pick(candidates, model, "strong", target=0.9, min_reads=3) == 0


def test_unknown_reader_gets_the_mean_reader() -> None:
    model = _model({"s": 0.9, "w": 0.5})
    assert np.allclose(model.likelihood("nobody"), [[0.7, 0.3], [0.3, 0.7]])


def _table(seed: int = 7) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """A random crowd table: 60 items, three classes, four readers of different skill,
    every reader reads every item."""
    rng = np.random.default_rng(seed)
    classes = ("normal", "nodule", "effusion")
    truth = rng.integers(0, 3, 60)
    rows = []
    for reader, skill in (("s", 0.95), ("m", 0.75), ("w", 0.5), ("x", 0.6)):
        for item, t in enumerate(truth):
            read = t if rng.random() < skill else rng.choice([c for c in range(3) if c != t])
            rows.append((f"i{item}", reader, classes[read]))
    return pd.DataFrame(rows, columns=["item", "annotator", "label"]), classes


def test_from_fit_onecoin_equals_the_fitted_accuracies() -> None:
    table, classes = _table()
    fitted = OneCoinDawidSkene()
    fitted.classes = list(classes)
    fitted.fit(table)
    model = ReaderModel.from_fit(fitted, classes)
    assert model.classes == classes
    np.testing.assert_allclose(model.prior, fitted.priors_.loc[list(classes)].to_numpy())
    for reader, s in fitted.skills_.items():
        like = model.likelihood(str(reader))
        np.testing.assert_allclose(np.diag(like), s)
        np.testing.assert_allclose(like[~np.eye(3, dtype=bool)], (1 - s) / 2)
        # The fitted aggregator's own matrix (clipped at 1e-10) says the same.
        np.testing.assert_allclose(like, fitted.confusion_matrices_[
            list(fitted.skills_.index).index(reader)], atol=1e-9)
    assert model.likelihood("s")[0, 0] > 0.9 > 0.6 > model.likelihood("w")[0, 0]


def test_from_fit_ds_equals_the_fitted_confusion_matrices() -> None:
    table, classes = _table()
    fitted = DawidSkene()
    fitted.classes = list(classes)
    fitted.fit(table)
    model = ReaderModel.from_fit(fitted, classes)
    np.testing.assert_allclose(model.prior, fitted.priors_.loc[list(classes)].to_numpy())
    for w, reader in enumerate(fitted.skills_.index):
        np.testing.assert_allclose(model.likelihood(str(reader)),
                                   fitted.confusion_matrices_[w])
    np.testing.assert_allclose(model.default, fitted.confusion_matrices_.mean(axis=0))
    with pytest.raises(TypeError, match="no reader model"):
        ReaderModel.from_fit(object(), classes)


def test_from_fit_ds_follows_the_given_class_order() -> None:
    """Fitted without a class list, the model orders classes its own way; asked for another
    order, every likelihood entry is the fitted one of the same (true, read) pair of names."""
    table, _classes = _table()
    fitted = DawidSkene()
    fitted.fit(table)
    own = [str(c) for c in fitted.classes_]
    wanted = tuple(reversed(own))
    assert list(wanted) != own
    model = ReaderModel.from_fit(fitted, wanted)
    for w, reader in enumerate(fitted.skills_.index):
        like = model.likelihood(str(reader))
        for i, t in enumerate(wanted):
            for j, c in enumerate(wanted):
                assert like[i, j] == pytest.approx(
                    fitted.confusion_matrices_[w][own.index(t), own.index(c)])
    assert model.prior.tolist() == pytest.approx([fitted.priors_[c] for c in wanted])


def test_update_is_bayes_rule_by_hand() -> None:
    # Three classes, prior (0.5, 0.3, 0.2), a one-coin reader right 80 % of the time (each
    # wrong class 10 %) reads class 0: (0.40, 0.03, 0.02) / 0.45.
    model = ReaderModel.from_accuracies(("a", "b", "c"), {"r": 0.8})
    after = model.update(np.array([0.5, 0.3, 0.2]), "r", "a")
    np.testing.assert_allclose(after, [0.40 / 0.45, 0.03 / 0.45, 0.02 / 0.45])
    # A full confusion matrix: rows true, columns read; reading "b" takes column 1.
    like = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    ds = ReaderModel(("a", "b", "c"), {"r": like}, np.full(3, 1 / 3), like)
    prior = np.array([0.2, 0.5, 0.3])
    joint = np.array([0.2 * 0.2, 0.5 * 0.6, 0.3 * 0.2])  # 0.04, 0.30, 0.06 -> / 0.40
    np.testing.assert_allclose(ds.update(prior, "r", "b"), joint / 0.40)
    # Two reads in turn equal one update with the product of the likelihoods.
    twice = ds.update(ds.update(prior, "r", "b"), "r", "c")
    product = prior * like[:, 1] * like[:, 2]
    np.testing.assert_allclose(twice, product / product.sum())


# -- the policy ----------------------------------------------------------------------------------


def test_routing_skill_needs_a_reader_model(workspace: Workspace) -> None:
    with pytest.raises(InputError) as err:
        parse_policy("workflow: adaptive\nmethod: mv\nrouting: skill\n")
    assert err.value.field == "routing" and "onecoin or ds" in str(err.value)
    with pytest.raises(InputError) as err:
        parse_policy("workflow: adaptive\nmethod: onecoin\nrouting: skill\n"
                     "by_risk: {high: {method: glad}}\n")
    assert err.value.field == "routing"
    assert parse_policy("method: ds\nrouting: skill\n").routing == "skill"
    # Loading it into a project is refused the same way, and nothing is stored.
    with workspace.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        for k in range(3):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        with pytest.raises(InputError) as err:
            policies.set_policy(s, p, "workflow: adaptive\nmethod: mv\nrouting: skill\n")
        assert err.value.field == "routing"


# -- the task queue ------------------------------------------------------------------------------

_CAL = ["normal", "nodule", "effusion", "normal", "nodule", "effusion", "normal", "nodule",
        "effusion", "normal"]


def _calibrated_project(ws: Workspace, routing_mode: str) -> None:
    """Items i00 and i01 under an adaptive onecoin policy; readers ``strong`` (10/10 on the
    calibration batch), ``weak`` (4/10), r0 and r1 (7/10 each); r0 and r1 then disagree on
    i00, so i00 waits for a third read and i01 is still fresh."""

    def known(s: Any, p: Any) -> None:
        users.add_user(s, username="strong", role="annotator")
        users.add_user(s, username="weak", role="annotator")
        for k in range(len(_CAL)):
            s.add(Item(project_id=p.id, external_id=f"cal{k}", kind="image"))
        s.flush()
        policies.add_gold(s, p, {f"cal{k}": c for k, c in enumerate(_CAL)},
                          purpose="calibration")

    policy = ("workflow: adaptive\nmethod: onecoin\nm: 2\nk_max: 4\ntarget: 0.9\n"
              f"calibration: {{threshold: 0.2}}\nrouting: {routing_mode}\n")
    make_project(ws, policy, n_items=2, n_readers=2, extra=known)

    def wrong(label: str) -> str:
        return "nodule" if label == "normal" else "normal"

    answers = {"strong": list(_CAL),
               "weak": [c if k < 4 else wrong(c) for k, c in enumerate(_CAL)],
               "r0": [c if k < 7 else wrong(c) for k, c in enumerate(_CAL)],
               "r1": [c if k >= 3 else wrong(c) for k, c in enumerate(_CAL)]}
    for name, labels in answers.items():
        for label in labels:
            task = call(ws, name, queue.next_task).task
            assert task is not None and task.stage == "calibrate"
            call(ws, name, queue.submit, task.task_id, {"label": label})
    for name, label in (("r0", "normal"), ("r1", "nodule")):
        task = call(ws, name, queue.next_task).task
        assert task is not None and task.external_id == "i00", name
        call(ws, name, queue.submit, task.task_id, {"label": label})


def _fitted_skills(ws: Workspace) -> pd.Series:
    with ws.sessions() as s:
        p = projects.get_project(s, "chest")
        cur = policies.current_policy(s, p)
        fit = queue.consensus_fit(s, p, cur.policy, ("normal", "nodule", "effusion"))
    assert fit is not None
    return fit.skills_  # type: ignore[attr-defined]


@pytest.mark.parametrize("routing_mode", ["queue", "skill"])
def test_strong_reader_breaks_the_tie_weak_reader_takes_the_fresh_item(
        workspace: Workspace, routing_mode: str) -> None:
    _calibrated_project(workspace, routing_mode)
    skills = _fitted_skills(workspace)
    assert skills["strong"] == pytest.approx(1.0) and skills["weak"] == pytest.approx(0.4)
    # The weak reader asks first, then the strong one.
    weak = call(workspace, "weak", queue.next_task).task
    strong = call(workspace, "strong", queue.next_task).task
    assert weak is not None and strong is not None and weak.stage == strong.stage == "annotate"
    if routing_mode == "queue":
        # Queue order: the uncertain item first, whoever asks.
        assert (weak.external_id, strong.external_id) == ("i00", "i01")
    else:
        # The weak reader's read cannot settle i00 (from about 50/50 a 40 % reader reaches
        # 0.55 at best) and i01 needs two reads anyway: the fewest reads, i01. The strong
        # reader's read settles i00 for certain.
        assert (weak.external_id, strong.external_id) == ("i01", "i00")
    # Blinding unchanged: an annotate task shows no other reader's label.
    assert weak.context == {} and strong.context == {}
    # Routing changes who reads what, not how many: i00 asked for exactly one more read.
    result = call(workspace, "strong", queue.submit, strong.task_id, {"label": "normal"})
    if routing_mode == "skill":
        assert result.item_status == "final"


def test_routing_keeps_higher_stages_first(workspace: Workspace) -> None:
    policy = "workflow: consensus\nmethod: onecoin\nk: 2\ntarget: 0.9\nrouting: skill\n"
    make_project(workspace, policy, n_items=3)
    for name, label in (("r0", "normal"), ("r1", "nodule")):
        task = call(workspace, name, queue.next_task).task
        assert task.external_id == "i00"
        call(workspace, name, queue.submit, task.task_id, {"label": label})
    # The adjudicator may also read; the adjudication still comes first.
    task = call(workspace, "adj", queue.next_task).task
    assert task.stage == "adjudicate" and task.external_id == "i00"
    # Once every item has reads, a reader is routed among the reads.
    nxt = call(workspace, "r2", queue.next_task).task
    assert nxt.stage == "annotate" and nxt.external_id in ("i01", "i02")


def test_routing_without_reads_keeps_queue_order(workspace: Workspace) -> None:
    # No reads at all: nothing to fit, the queue order stands (and the same for every reader).
    policy = "workflow: adaptive\nmethod: ds\nm: 2\nk_max: 3\ntarget: 0.9\nrouting: skill\n"
    make_project(workspace, policy, n_items=3)
    with workspace.sessions() as s:
        p = projects.get_project(s, "chest")
        assert queue.consensus_fit(s, p, policies.current_policy(s, p).policy,
                                   ("normal", "nodule", "effusion")) is None
    got = [call(workspace, f"r{k}", queue.next_task).task.external_id for k in range(3)]
    assert got == ["i00", "i00", "i01"]


def test_concurrent_routed_requests_never_overfill_or_repeat(workspace: Workspace) -> None:
    """Five disputed items wait for one more read each, fifteen fresh items for two; five
    strong and five weak readers ask twice each, all at once, under ``routing: skill``."""
    cal = ["normal", "nodule", "effusion", "normal"]
    strong = [f"s{k}" for k in range(5)]
    weak = [f"w{k}" for k in range(5)]

    def known(s: Any, p: Any) -> None:
        for name in strong + weak:
            users.add_user(s, username=name, role="annotator")
        for k in range(len(cal)):
            s.add(Item(project_id=p.id, external_id=f"cal{k}", kind="image"))
        s.flush()
        policies.add_gold(s, p, {f"cal{k}": c for k, c in enumerate(cal)},
                          purpose="calibration")

    policy = ("workflow: adaptive\nmethod: onecoin\nm: 2\nk_max: 4\ntarget: 0.9\n"
              "calibration: {threshold: 0.2}\nrouting: ROUTING\n")
    make_project(workspace, policy.replace("ROUTING", "queue"), n_items=20, n_readers=10,
                 extra=known)
    # Calibration: r* 3 of 4 right, strong readers 4 of 4, weak readers 1 of 4.
    answers = {**{f"r{k}": [*cal[:3], "nodule"] for k in range(10)},
               **{name: cal for name in strong},
               **{name: [*cal[:1], "effusion", "normal", "nodule"] for name in weak}}
    for name, labels in answers.items():
        for label in labels:
            task = call(workspace, name, queue.next_task).task
            assert task.stage == "calibrate"
            call(workspace, name, queue.submit, task.task_id, {"label": label})
    # Queue order: r0 and r1 take i00, r2 and r3 i01 ... and disagree on each.
    held = [call(workspace, f"r{k}", queue.next_task).task for k in range(10)]
    assert [t.external_id for t in held] == [f"i{k // 2:02d}" for k in range(10)]
    for k, task in enumerate(held):
        call(workspace, f"r{k}", queue.submit, task.task_id,
             {"label": "normal" if k % 2 == 0 else "nodule"})
    with workspace.unit("admin") as s:
        policies.set_policy(s, projects.get_project(s, "chest"),
                            policy.replace("ROUTING", "skill"))
    skills = _fitted_skills(workspace)
    assert skills[strong].min() == pytest.approx(1.0)
    assert skills[weak].max() == pytest.approx(0.25)
    disputed = {f"i{k:02d}" for k in range(5)}

    names = strong + weak
    got = run_threads(20, lambda k: call(workspace, names[k % 10], queue.next_task).task)
    by_reader: dict[str, set[tuple[int, str]]] = {}
    for k, task in enumerate(got):
        assert task is not None and task.stage == "annotate"
        by_reader.setdefault(names[k % 10], set()).add((task.task_id, task.external_id))
    # One reader's two concurrent requests return the same lease; no slot is leased twice.
    assert all(len(v) == 1 for v in by_reader.values())
    lease = {name: next(iter(v)) for name, v in by_reader.items()}
    assert len({t for t, _e in lease.values()}) == 10
    # Each disputed item had one read open: at most one new reader each; no item got more
    # readers than its slots, and no reader any item twice.
    with workspace.sessions() as s:
        rows = s.execute(sa.select(Item.external_id, Task.assignee_id, Task.status)
                         .join(Task, Task.item_id == Item.id)
                         .where(Task.stage == "annotate", Task.assignee_id.is_not(None))).all()
    assert len({(e, a) for e, a, _st in rows}) == len(rows)
    per_item = Counter(e for e, _a, _st in rows)
    assert all(per_item[e] <= 3 for e in disputed)
    assert all(n <= 2 for e, n in per_item.items() if e.startswith("i") and e not in disputed)
    # Routing: the strong readers took the disputed reads, the weak ones fresh items.
    assert {lease[name][1] for name in strong} == disputed
    assert all(lease[name][1] not in disputed for name in weak)


def test_project_reads_takes_the_label_from_the_stored_payload(workspace: Workspace) -> None:
    # The consensus fit (every submit; every routed next_task) reads only the payloads'
    # labels, extracted by the database: class names with spaces, quotes, non-ASCII letters
    # and digits come back exactly as the readers' payloads hold them.
    schema = ("name: odd names\nkind: classification\nmode: single\nclasses:\n"
              "  - {name: ground-glass opacity, risk: low}\n"
              "  - {name: 'Ödem \"fluid\"', risk: low}\n"
              "  - {name: '3', risk: low}\n")
    with workspace.unit("admin") as s:
        p = projects.create_project(s, key="odd", name="Odd", schema_text=schema)
        for k in range(3):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        s.add_all([Item(project_id=p.id, external_id=f"i{k}", kind="image") for k in range(3)])
        s.flush()
        policies.set_policy(s, p, "workflow: consensus\nk: 1\ntarget: 0\n")
        queue.enqueue(s, p)
    names = ["ground-glass opacity", 'Ödem "fluid"', "3"]
    for k, label in enumerate(names):
        with workspace.unit(f"r{k}") as s:
            p, u = projects.get_project(s, "odd"), users.get_user(s, f"r{k}")
            task = queue.next_task(s, p, u).task
            assert task is not None
            queue.submit(s, p, u, task.task_id, {"label": label})
    with workspace.sessions() as s:
        table = queue.project_reads(s, projects.get_project(s, "odd"))
        stored = {(str(a.item_id), a.payload["label"])
                  for a in s.scalars(sa.select(Annotation))}
    assert sorted(table["label"]) == sorted(names)
    assert set(zip(table["item"], table["label"], strict=True)) == stored
    assert all(isinstance(i, str) for i in table["item"])


def test_posterior_from_reads_is_bayes_rule_under_the_fitted_model() -> None:
    """An item's posterior from its own reads (:meth:`ReaderModel.posterior`) is the fitted
    class prior times, per read, the fitted accuracy of its reader for the class read and
    ``(1 - s) / (K - 1)`` for the others, normalised (computed here by hand)."""
    table, classes = _table()
    model = OneCoinDawidSkene(classes=list(classes))
    model.fit(table)
    readers = ReaderModel.from_fit(model, classes)
    skills, priors = model.skills_, model.priors_
    for _item, group in table.groupby("item"):
        hand = np.array([priors[c] for c in classes])
        for reader, label in zip(group["annotator"], group["label"], strict=True):
            s_w = skills[reader]
            hand *= [s_w if c == label else (1 - s_w) / 2 for c in classes]
        own = readers.posterior(list(zip(group["annotator"], group["label"], strict=True)))
        np.testing.assert_allclose(own, hand / hand.sum(), atol=1e-12)
    assert readers.posterior([]).tolist() == readers.prior.tolist()
    assert readers.posterior([("s", "not a class")]).tolist() == readers.prior.tolist()


def test_reader_model_is_kept_until_enough_new_reads(workspace: Workspace) -> None:
    """The routed queue keeps its fitted reader model until REFIT_EVERY more reads, a change of
    known answers or of the policy version; the items' posteriors never come from the kept
    fit, so a read made since still counts."""
    _calibrated_project(workspace, "skill")
    classes = ("normal", "nodule", "effusion")

    def model() -> ReaderModel | None:
        with workspace.sessions() as s:
            p = projects.get_project(s, "chest")
            cur = policies.current_policy(s, p)
            return queue.reader_model(s, p, cur.policy, cur.version, classes)

    first = model()
    assert first is not None and model() is first  # nothing new: the kept fit
    # A few more reads (fewer than REFIT_EVERY): still the kept fit.
    task = call(workspace, "strong", queue.next_task).task
    assert task is not None
    call(workspace, "strong", queue.submit, task.task_id, {"label": "normal"})
    assert model() is first
    # The kept model's accuracies are the fit's: strong 1.0, weak 0.4 (as fitted above).
    assert first.likelihood("strong")[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert first.likelihood("weak")[0, 0] == pytest.approx(0.4, abs=1e-6)
    # New known answers: fitted anew.
    with workspace.sessions.begin() as s:
        p = projects.get_project(s, "chest")
        s.add(Item(project_id=p.id, external_id="g-new", kind="image"))
        s.flush()
        policies.add_gold(s, p, {"g-new": "normal"}, purpose="gold")
    second = model()
    assert second is not None and second is not first
    # REFIT_EVERY reads later it is fitted anew too (simulated by lowering the kept count).
    key = next(k for k, v in queue._reader_models.items() if v[0] is second)
    kept = queue._reader_models[key]
    queue._reader_models[key] = (kept[0], kept[1] - REFIT_EVERY, kept[2], kept[3])
    third = model()
    assert third is not None and third is not second


def test_large_projects_decide_under_the_kept_model(workspace: Workspace,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """From KEPT_MODEL_READS project reads on, a submit's posterior is Bayes' rule on the item's
    own reads under the kept reader model (no fit of the whole project); below it, the fit of
    the whole project decides, as before."""
    _calibrated_project(workspace, "queue")
    classes = ("normal", "nodule", "effusion")

    basis: list[dict[str, Any] | None] = []

    def decision_and_model() -> tuple[Any, ReaderModel | None, Any]:
        with workspace.sessions() as s:
            p = projects.get_project(s, "chest")
            cur = policies.current_policy(s, p)
            item = s.scalars(sa.select(Item).where(Item.external_id == "i00")).one()
            decision, facts = queue.item_decision(s, p, item)
            basis.append(facts.posterior_basis)
            kept = queue.reader_model(s, p, cur.policy, cur.version, classes)
            fit = queue.consensus_fit(s, p, cur.policy, classes)
            return decision, kept, (fit.probas_.loc[str(item.id)] if fit is not None else None)

    # A small project: the whole project is fitted for the decision.
    small, _kept, fitted = decision_and_model()
    assert small.posterior == pytest.approx({c: float(fitted[c]) for c in classes}, abs=1e-9)
    assert basis[-1] == {"posterior": "fit of the project", "project_reads": 42}
    monkeypatch.setattr(queue, "KEPT_MODEL_READS", 0)
    _before, kept, _fitted = decision_and_model()
    assert kept is not None
    assert basis[-1] == {"posterior": "kept reader model", "model_fitted_on_reads": 42,
                         "project_reads": 42}
    task = call(workspace, "weak", queue.next_task).task
    assert task is not None and task.external_id == "i00"
    call(workspace, "weak", queue.submit, task.task_id, {"label": "normal"})
    after, kept_after, refitted = decision_and_model()
    assert kept_after is kept  # one read more: the kept model, not refitted
    assert basis[-1] == {"posterior": "kept reader model", "model_fitted_on_reads": 42,
                         "project_reads": 43}
    # By hand: the kept prior times each read's one-coin likelihood, normalised.
    post = kept.prior.copy()
    for reader, label in (("r0", "normal"), ("r1", "nodule"), ("weak", "normal")):
        a = kept.likelihood(reader)[0, 0]
        post = post * np.array([a if c == label else (1 - a) / 2 for c in classes])
    post = post / post.sum()
    assert after.posterior == pytest.approx(dict(zip(classes, post.tolist(), strict=True)),
                                            abs=1e-9)
    # A fit of the whole project would have given another number (it sees the new read).
    assert abs(after.posterior["normal"] - float(refitted["normal"])) > 1e-6
