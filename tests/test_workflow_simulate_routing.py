"""The simulator's arrival mode: readers asking one at a time, skill-aware routing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from truthset.domain.policy import parse_policy
from truthset.domain.schema import RiskLevel
from truthset.workflow.routing import ReaderModel
from truthset.workflow.simulate import (
    RecordedLabels,
    SimReader,
    SimulatedReaders,
    run_arrivals,
    run_policy,
)

CLASSES = [f"c{k}" for k in range(5)]
RISKS = dict.fromkeys(CLASSES, RiskLevel.LOW)


class _Recording(SimulatedReaders):
    """Simulated readers that remember who read what through :meth:`read_as`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.log: list[tuple[str, str, str]] = []

    def read_as(self, reader: str, item: str) -> tuple[str, float]:
        label, minutes = super().read_as(reader, item)
        self.log.append((reader, item, label))
        return label, minutes


def _pool() -> list[SimReader]:
    """Three reliable readers and nine weak ones."""
    return ([SimReader(f"s{k}", 1, 0.95) for k in range(3)]
            + [SimReader(f"w{k}", 1, 0.6) for k in range(9)])


def _run(routing: str, seed: int = 0, n: int = 240) -> tuple[_Recording, dict[str, float],
                                                               dict[str, str]]:
    rng = np.random.default_rng(seed)
    truth = {f"i{k}": CLASSES[int(rng.integers(5))] for k in range(n)}
    calib = {f"cal{k}": CLASSES[int(rng.integers(5))] for k in range(20)}
    source = _Recording(_pool(), CLASSES, {**truth, **calib}, rng)
    policy = parse_policy("workflow: adaptive\nm: 1\nk_max: 6\ntarget: 0.9\nmethod: onecoin\n"
                          f"reader_prior: empirical\non_exhausted: accept\nrouting: {routing}\n")
    result = run_arrivals(policy, CLASSES, RISKS, list(truth), source, calibration=calib,
                          refit_every=30)
    return source, result.summary, truth


def test_arrivals_settle_every_item_without_reading_one_twice() -> None:
    for routing in ("queue", "skill"):
        source, summary, truth = _run(routing)
        pairs = Counter((r, i) for r, i, _l in source.log)
        assert max(pairs.values()) == 1  # never the same item twice to one reader
        assert {i for _r, i, _l in source.log} == set(truth)  # every item read at least once
        assert summary["items"] == len(truth)
        assert summary["labels_per_item"] * len(truth) == len(source.log)
        # Readers arrive uniformly: every reader does a similar share of the work.
        shares = Counter(r for r, _i, _l in source.log)
        expected = len(source.log) / 12
        assert all(0.5 * expected < shares[f"{g}{k}"] < 1.6 * expected
                   for g, n in (("s", 3), ("w", 9)) for k in range(n))


def test_skill_routing_lets_the_reliable_readers_settle_items() -> None:
    """Under skill routing a reliable reader's read is more often the one that settles its
    item (fresh items they settle alone, started ones they break the tie of); in queue order
    it is more often an early read that others must confirm. At the same target the items
    then settle with fewer reads (whether that buys accuracy at equal cost is measured in
    ``bench/bench_policies.py`` on 2,000 items and 5 pools, not on a test's 240 items)."""

    def settling_share(log: list[tuple[str, str, str]]) -> float:
        last = {item: reader for reader, item, _label in log}  # the read that settled it
        strong = [(r, i) for r, i, _l in log if r.startswith("s")]
        return sum(last[i] == r for r, i in strong) / len(strong)

    queue, q_summary, _ = _run("queue", seed=3)
    skill, s_summary, _ = _run("skill", seed=3)
    assert settling_share(skill.log) > settling_share(queue.log) + 0.1
    assert s_summary["labels_per_item"] < q_summary["labels_per_item"] - 0.2


def test_run_policy_serves_skill_routing_through_arrivals() -> None:
    policy = parse_policy("workflow: adaptive\nm: 1\nk_max: 6\ntarget: 0.9\nmethod: onecoin\n"
                          "on_exhausted: accept\nrouting: skill\n")
    truth = {f"i{k}": CLASSES[k % 5] for k in range(60)}

    def run(fn: object) -> dict[str, float]:
        source = SimulatedReaders(_pool(), CLASSES, truth, np.random.default_rng(7))
        return fn(policy, CLASSES, RISKS, list(truth), source).summary  # type: ignore[operator]

    assert run(run_policy) == run(run_arrivals)


def test_replay_with_skill_routing_reveals_only_recorded_labels(crowd_dir: Path) -> None:
    """Replayed through arrivals, every read is a worker's own recorded label of that item,
    revealed at most once, and every item ends with a label."""
    labels = pd.read_csv(crowd_dir / "snow2008_rte" / "labels.csv", dtype=str)
    truth = pd.read_csv(crowd_dir / "snow2008_rte" / "truth.csv", dtype=str)
    items = sorted(set(labels["item"]))[:150]
    labels = labels[labels["item"].isin(items)].drop_duplicates(["item", "annotator"])
    recorded = {(r.item, r.annotator): r.label for r in labels.itertuples()}
    seen: list[tuple[str, str, str]] = []

    class Logged(RecordedLabels):
        def read_as(self, reader: str, item: str) -> tuple[str, float]:
            label, minutes = super().read_as(reader, item)
            seen.append((reader, item, label))
            return label, minutes

    source = Logged(labels, dict(zip(truth["item"], truth["label"], strict=True)),
                    np.random.default_rng(0))
    classes = sorted(set(labels["label"]))
    policy = parse_policy("workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.8\nmethod: onecoin\n"
                          "reader_prior: empirical\nclass_prior: uniform\n"
                          "on_exhausted: accept\nrouting: skill\n")
    result = run_policy(policy, classes, dict.fromkeys(classes, RiskLevel.LOW), items, source)
    assert seen and all(recorded[(i, r)] == lab for r, i, lab in seen)
    assert len({(r, i) for r, i, _l in seen}) == len(seen)
    assert result.items["label"].notna().all()
    assert result.summary["labels_per_item"] * len(items) == len(seen)
    assert result.summary["accuracy"] > 0.8


def test_a_fixed_reader_model_gives_exact_bayes_posteriors() -> None:
    """With ``readers`` given (true accuracies), every settled item's confidence is the one-coin
    posterior of its reads computed by hand, and at least the target."""
    pool = _pool()
    rng = np.random.default_rng(11)
    truth = {f"i{k}": CLASSES[int(rng.integers(5))] for k in range(80)}
    source = _Recording(pool, CLASSES, truth, rng)
    accuracy = {r.name: r.accuracy for r in pool}
    policy = parse_policy("workflow: adaptive\nm: 1\nk_max: 6\ntarget: 0.9\nmethod: onecoin\n"
                          "on_exhausted: accept\nrouting: skill\n")
    result = run_arrivals(policy, CLASSES, RISKS, list(truth), source,
                          readers=ReaderModel.from_accuracies(CLASSES, accuracy))
    for row in result.items.itertuples():
        like = np.ones(5)
        for reader, item, label in source.log:
            if item == row.item:
                a = accuracy[reader]
                like *= [a if c == label else (1 - a) / 4 for c in CLASSES]
        post = like / like.sum()
        assert row.label == CLASSES[int(np.argmax(post))]
        assert row.confidence == pytest.approx(post.max(), abs=1e-9)
        assert row.confidence >= 0.9 or row.reads == 6
