"""The pure decision core and the policy simulator (no database)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from truthset.domain.errors import InputError
from truthset.domain.policy import parse_policy
from truthset.domain.schema import RiskLevel
from truthset.workflow.engine import (
    Decision,
    ItemState,
    ReviewOutcome,
    consensus_posteriors,
    decide,
    method_params,
    stable_uniform,
)
from truthset.workflow.simulate import (
    RecordedLabels,
    SimulatedReaders,
    parse_readers,
    run_policy,
)

RISKS = {"normal": RiskLevel.LOW, "nodule": RiskLevel.HIGH, "effusion": RiskLevel.MEDIUM}


def test_consensus_decisions() -> None:
    policy = parse_policy("workflow: consensus\nk: 3\ntarget: 0.6\nmin_agreement: 0.6\n")
    assert decide(policy, RISKS, ItemState()).n == 3
    two = ItemState(reads=(("a", "normal"), ("b", "normal")))
    assert decide(policy, RISKS, two).action == "read"
    done = decide(policy, RISKS, ItemState(reads=(*two.reads, ("c", "effusion"))))
    assert done.action == "final" and done.label == "normal"
    assert done.confidence == pytest.approx(2 / 3)
    split = ItemState(reads=(("a", "normal"), ("b", "nodule"), ("c", "effusion")))
    assert decide(policy, RISKS, split).action == "adjudicate"
    assert decide(policy, RISKS, ItemState(reads=split.reads, adjudication="nodule")).label == (
        "nodule")


def test_adaptive_and_by_risk_override() -> None:
    policy = parse_policy("workflow: adaptive\nm: 2\nk_max: 4\ntarget: 0.8\n"
                          "by_risk: {high: {workflow: consensus, k: 5}}\n")
    agree = ItemState(reads=(("a", "normal"), ("b", "normal")))
    assert decide(policy, RISKS, agree).action == "final"
    unsure = ItemState(reads=(("a", "normal"), ("b", "effusion")))
    step = decide(policy, RISKS, unsure)
    assert step.action == "read" and step.n == 1
    # A nodule read makes the item high-risk: consensus of five.
    risky = decide(policy, RISKS, ItemState(reads=(("a", "nodule"), ("b", "nodule"))))
    assert risky.action == "read" and risky.n == 3 and risky.risk == RiskLevel.HIGH
    exhausted = ItemState(reads=(("a", "normal"), ("b", "effusion"), ("c", "normal"),
                                 ("d", "effusion")))
    assert decide(policy, RISKS, exhausted).action == "adjudicate"


def test_single_review_sampling_and_review() -> None:
    policy = parse_policy("workflow: single_review\nreview_rate: {low: 0.1}\n")
    read = (("a", "normal"),)
    assert decide(policy, RISKS, ItemState(reads=read, u=0.5)).action == "final"
    assert decide(policy, RISKS, ItemState(reads=read, u=0.05)).action == "review"
    high = (("a", "nodule"),)
    assert decide(policy, RISKS, ItemState(reads=high, u=0.99)).action == "review"
    fixed = ItemState(reads=read, review=ReviewOutcome("r", "effusion"))
    assert decide(policy, RISKS, fixed).reason == "review corrected"
    up = ItemState(reads=read, review=ReviewOutcome("r", None, escalated=True))
    assert decide(policy, RISKS, up).action == "adjudicate"
    assert 0 <= stable_uniform("x", 1) < 1 and stable_uniform("x", 1) == stable_uniform("x", 1)


@pytest.mark.parametrize(("text", "field"), [
    ("workflow: consensus\nk: 0\n", "k"),
    ("workflow: consensus\ntarget: 1.5\n", "target"),
    ("method: magic\n", "method"),
    ("workflow: adaptive\nm: 4\nk_max: 2\n", "k_max"),
    ("by_risk: {high: {k: -1}}\n", "by_risk.high.k"),
    ("gold: {rate: 2}\n", "gold.rate"),
])
def test_inconsistent_policies_are_refused_with_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_policy(text, source="p.yaml")
    assert err.value.field == field and "p.yaml" in str(err.value)


def test_cautions_name_settings_that_settle_items_on_one_read() -> None:
    mv = parse_policy("workflow: adaptive\nm: 1\nmethod: mv\n")
    [caution] = mv.cautions()
    assert "'mv'" in caution and "first read" in caution
    # What the caution says: one read is a unanimous vote, final at any target.
    one = decide(parse_policy("workflow: adaptive\nm: 1\nmethod: mv\ntarget: 1.0\n"), RISKS,
                 ItemState(reads=(("a", "normal"),)))
    assert one.action == "final" and one.confidence == 1.0
    [bare] = parse_policy("workflow: adaptive\nm: 1\nmethod: onecoin\ntarget: 0.8\n"
                          ).cautions()
    assert "calibration" in bare and "target 0.8" in bare
    for quiet in ("workflow: adaptive\nm: 1\nmethod: onecoin\ncalibration: {threshold: 0.8}\n",
                  "workflow: adaptive\nm: 1\nmethod: onecoin\ngold: {rate: 0.05}\n",
                  "workflow: adaptive\nm: 2\nmethod: mv\n", "workflow: consensus\nk: 1\n"):
        assert parse_policy(quiet).cautions() == [], quiet
    [risky] = parse_policy("workflow: adaptive\nm: 2\nby_risk: {high: {m: 1}}\n").cautions()
    assert risky.startswith("by_risk.high: m: 1 with method 'mv'")


def _simulate(policy_text: str, seed: int = 0, n: int = 300) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    classes = [f"c{k}" for k in range(5)]
    truth = {f"i{k}": classes[int(rng.integers(5))] for k in range(n)}
    readers = parse_readers("30:beta(6,2)", rng)
    source = SimulatedReaders(readers, classes, truth, rng)
    policy = parse_policy(policy_text)
    risks = dict.fromkeys(classes, RiskLevel.LOW)
    return run_policy(policy, classes, risks, list(truth), source).summary


def test_adaptive_matches_consensus_with_fewer_labels() -> None:
    k5 = _simulate("workflow: consensus\nk: 5\ntarget: 0\n")
    adaptive = _simulate("workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.95\nmethod: onecoin\n"
                         "on_exhausted: accept\n")
    assert k5["labels_per_item"] == 5
    assert adaptive["labels_per_item"] <= 2.5 + 0.6
    assert adaptive["accuracy"] >= k5["accuracy"] - 0.03


def test_replay_of_a_recorded_crowd_dataset(crowd_dir: Path) -> None:
    labels = pd.read_csv(crowd_dir / "snow2008_rte" / "labels.csv")
    truth = pd.read_csv(crowd_dir / "snow2008_rte" / "truth.csv")
    items = sorted(set(labels["item"].astype(str)))[:200]
    source = RecordedLabels(labels[labels["item"].astype(str).isin(items)],
                            dict(zip(truth["item"].astype(str), truth["label"].astype(str),
                                     strict=True)), np.random.default_rng(0))
    classes = sorted(set(labels["label"].astype(str)))
    policy = parse_policy("workflow: adaptive\nm: 3\nk_max: 10\ntarget: 0.9\n"
                          "on_exhausted: accept\n")
    result = run_policy(policy, classes, dict.fromkeys(classes, RiskLevel.LOW), items, source)
    assert result.summary["reads_per_item"] < 10
    assert result.summary["accuracy"] > 0.85


def test_reader_spec_errors() -> None:
    rng = np.random.default_rng(0)
    assert len(parse_readers("3:0.9, 2:beta(6,2)@2, 1:0.95@3", rng)) == 6
    with pytest.raises(InputError, match="tier-1"):
        parse_readers("2:0.9@2", rng)
    with pytest.raises(InputError) as err:
        parse_readers("3:ninety", rng)
    assert err.value.field == "readers"


@pytest.mark.parametrize(("text", "field"), [
    ("method: onecoin\nreader_prior: strong\n", "reader_prior"),
    ("method: mv\nreader_prior: empirical\n", "reader_prior"),
    ("method: onecoin\nclass_prior: learned\n", "class_prior"),
    ("method: glad\nclass_prior: uniform\n", "class_prior"),
    ("method: onecoin\nreader_prior: empirical\nby_risk: {high: {method: ds}}\n",
     "by_risk.high.reader_prior"),
])
def test_posterior_fields_are_refused_with_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_policy(text, source="p.yaml")
    assert err.value.field == field


#: Four gold items (answer "normal"): reader A right on all four, B, C and D on three.
_GOLD = pd.Series({f"g{k}": "normal" for k in range(4)})
_GOLD_READS = [(f"g{k}", w, "normal" if (w == "A" or k > 0) else "effusion")
               for w in "ABCD" for k in range(4)]
_CHEST = ["normal", "nodule", "effusion"]


def _first_read(policy_text: str, reader: str) -> Decision:
    """The decision on item x after one read ("nodule" by ``reader``), the posterior fitted the
    way the simulator and the queue fit it (gold clamped, the policy's posterior fields)."""
    policy = parse_policy(policy_text)
    table = pd.DataFrame([*_GOLD_READS, ("x", reader, "nodule")],
                         columns=["item", "annotator", "label"])
    post = consensus_posteriors(policy.method, _CHEST, table, _GOLD, **method_params(policy))
    state = ItemState(reads=((reader, "nodule"),), posterior=post.loc["x"].to_dict())
    return decide(policy, RISKS, state)


def test_empirical_reader_prior_by_hand() -> None:
    adaptive = ("workflow: adaptive\nm: 1\nk_max: 3\nmethod: onecoin\nclass_prior: uniform\n"
                "on_exhausted: accept\n")
    shrunk = adaptive + "reader_prior: empirical\n"
    # Gold scores 4/4, 3/4, 3/4, 3/4 vary less than chance: the fitted Beta prior pools the
    # readers completely (a + b = 1e4, mean 13/16), so every accuracy is 13/16 to 1e-4 and,
    # with equal class frequencies, one read's posterior is its reader's accuracy.
    for reader in "AB":
        step = _first_read(shrunk + "target: 0.85\n", reader)
        assert step.action == "read" and step.n == 1
        assert step.posterior["nodule"] == pytest.approx(13 / 16, abs=2e-4)
        assert step.posterior["normal"] == pytest.approx(3 / 32, abs=1e-4)
        assert step.reason == "posterior 0.81 under target 0.85; one more read"
        done = _first_read(shrunk + "target: 0.8\n", reader)
        assert done.action == "final" and done.label == "nodule"
    # Maximum likelihood puts A at 1 (four of four): A's single read is taken as certain.
    raw = _first_read(adaptive + "target: 0.95\n", "A")
    assert raw.action == "final" and raw.confidence == pytest.approx(1.0)
    assert _first_read(adaptive + "target: 0.95\n", "B").posterior["nodule"] == pytest.approx(
        0.75, abs=1e-3)


def test_empirical_reader_prior_on_a_replayed_crowd_dataset(crowd_dir: Path) -> None:
    # Snow et al.'s temporal-ordering task, read two or three times per item: plain one-coin
    # collapses onto one class; with the reader prior and equal class frequencies it does not.
    labels = pd.read_csv(crowd_dir / "snow2008_temp" / "labels.csv", dtype=str)
    truth = pd.read_csv(crowd_dir / "snow2008_temp" / "truth.csv", dtype=str)
    answers = dict(zip(truth["item"], truth["label"], strict=True))
    classes = sorted(set(labels["label"]))
    base = ("workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.8\nmethod: onecoin\n"
            "on_exhausted: accept\n")

    def replay(text: str) -> dict[str, float]:
        source = RecordedLabels(labels, answers, np.random.default_rng(0))
        return run_policy(parse_policy(text), classes, dict.fromkeys(classes, RiskLevel.LOW),
                          source.items, source).summary

    plain = replay(base)
    shrunk = replay(base + "reader_prior: empirical\nclass_prior: uniform\n")
    assert plain["accuracy"] < 0.6
    assert shrunk["accuracy"] > 0.88 and shrunk["reads_per_item"] < 2.5
