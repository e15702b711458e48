"""GLAD and MACE against crowd-kit 1.4.2 on public crowd data, gold clamping, and properties.

crowd-kit is slow (its GLAD takes seconds on 8,000 labels), so each of its fits runs once per
dataset and is cached for the module. adult_ipeirotis takes crowd-kit minutes; it is compared
in bench/bench_glad_mace.py instead.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.glad import GLAD
from truthset.quality.aggregation.mace import MACE

DATASETS = ["snow2008_rte", "snow2008_temp"]
MODELS: list[type[Aggregator]] = [GLAD, MACE]


def _load(crowd_dir: Path, name: str) -> tuple[pd.DataFrame, pd.Series]:
    labels = pd.read_csv(crowd_dir / name / "labels.csv", dtype=str)
    truth = pd.read_csv(crowd_dir / name / "truth.csv", dtype=str)
    return labels, pd.Series(truth["label"].to_numpy(), index=truth["item"].to_numpy())


@functools.cache
def _crowdkit_fit(crowd_dir: Path, name: str, method: str) -> Any:
    """crowd-kit's fitted GLAD or MACE (default results) on a dataset, computed once."""
    import crowdkit.aggregation as crowdkit

    labels, _ = _load(crowd_dir, name)
    data = labels.rename(columns={"item": "task", "annotator": "worker"})
    # crowd-kit 1.4.2 reseeds every MACE restart with the same random_state, so its ten
    # default restarts are ten copies of one run: n_restarts=1 gives bit-for-bit the same fit
    # in a tenth of the time (bench/bench_glad_mace.py checks this on every run).
    model = crowdkit.GLAD() if method == "glad" else crowdkit.MACE(n_restarts=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data)


def _accuracy(labels: pd.Series, truth: pd.Series) -> float:
    common = truth.index.intersection(labels.index)
    return float((labels[common].astype(str) == truth[common]).mean())


# -- agreement with crowd-kit -------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS)
def test_glad_matches_crowdkit(crowd_dir: Path, name: str) -> None:
    labels, truth = _load(crowd_dir, name)
    ours = GLAD().fit(labels)
    theirs = _crowdkit_fit(crowd_dir, name, "glad")
    their_labels = theirs.labels_[ours.labels_.index]
    same = float((their_labels.astype(str) == ours.labels_.astype(str)).mean())
    assert same >= 0.995
    assert _accuracy(ours.labels_, truth) >= _accuracy(their_labels, truth)
    # Same objective and optimiser: the fitted parameters agree closely too.
    np.testing.assert_allclose(
        ours.skills_.to_numpy(), theirs.alphas_[ours.skills_.index].to_numpy(), atol=0.05
    )
    np.testing.assert_allclose(
        np.log(ours.difficulties_.to_numpy()),
        theirs.betas_[ours.difficulties_.index].to_numpy(),  # crowd-kit keeps log(beta)
        atol=0.15,
    )
    assert ours.n_iter_ >= 1
    assert (ours.difficulties_ > 0).all()


@pytest.mark.parametrize("name", DATASETS)
def test_mace_matches_crowdkit(crowd_dir: Path, name: str) -> None:
    labels, truth = _load(crowd_dir, name)
    ours = MACE().fit(labels)
    theirs = _crowdkit_fit(crowd_dir, name, "mace")
    their_labels = theirs.labels_[ours.labels_.index]
    same = float((their_labels.astype(str) == ours.labels_.astype(str)).mean())
    assert same >= 0.97
    assert _accuracy(ours.labels_, truth) >= _accuracy(their_labels, truth)
    # crowd-kit's spamming_ rows are (spam, know) weights in first-appearance order of workers.
    workers = pd.unique(labels["annotator"])
    their_competence = pd.Series(
        theirs.spamming_[:, 1] / theirs.spamming_.sum(axis=1), index=workers
    )[ours.competence_.index]
    corr = np.corrcoef(ours.competence_.to_numpy(), their_competence.to_numpy())[0, 1]
    assert corr > 0.9
    assert ours.spam_distributions_.shape == (labels["annotator"].nunique(), 2)
    np.testing.assert_allclose(ours.spam_distributions_.sum(axis=1), 1.0)


@pytest.mark.parametrize("model", MODELS)
def test_probabilities_are_distributions(crowd_dir: Path, model: type[Aggregator]) -> None:
    labels, _ = _load(crowd_dir, "snow2008_temp")
    fitted = model().fit(labels)
    proba = fitted.probas_.to_numpy()
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (fitted.labels_ == fitted.probas_.idxmax(axis=1)).all()


# -- gold ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_gold_items_stay_clamped(crowd_dir: Path, model: type[Aggregator]) -> None:
    labels, _ = _load(crowd_dir, "snow2008_rte")
    plain = model().fit(labels)
    # Gold that contradicts the readers' consensus on 20 items: it must win there.
    flipped = plain.labels_.iloc[:20].map({"0": "1", "1": "0"})
    fitted = model().fit(labels, gold=flipped)
    assert (fitted.labels_[flipped.index] == flipped).all()
    clamped = fitted.probas_.loc[flipped.index]
    np.testing.assert_array_equal(clamped.max(axis=1).to_numpy(), 1.0)


def _planted_table() -> tuple[pd.DataFrame, np.ndarray]:
    """Two good readers and two colluding bad readers who copy one coin flip per item: without
    gold they look like the most reliable pair."""
    rng = np.random.default_rng(0)
    n = 200
    truth = rng.integers(0, 2, n)
    rows: list[tuple[int, str, int]] = []
    for i in range(n):
        for reader, acc in (("good1", 0.9), ("good2", 0.75)):
            rows.append((i, reader, int(truth[i] if rng.random() < acc else 1 - truth[i])))
        junk = int(rng.integers(0, 2))
        rows += [(i, "bad1", junk), (i, "bad2", junk)]
    return pd.DataFrame(rows, columns=["item", "annotator", "label"]), truth


@pytest.mark.parametrize(("model", "skill"), [(GLAD, "skills_"), (MACE, "competence_")])
def test_gold_exposes_a_planted_bad_reader(model: type[Aggregator], skill: str) -> None:
    table, truth = _planted_table()
    gold = pd.Series(truth[:100], index=range(100))
    without = model().fit(table)
    with_gold = model().fit(table, gold=gold)
    before = getattr(without, skill)
    after = getattr(with_gold, skill)
    assert before["bad1"] > before["good1"]  # fooled without gold
    assert after["bad1"] < before["bad1"] - 0.5 * abs(before["bad1"])
    assert after["bad1"] < after["good1"]
    unseen = slice(100, None)
    acc_before = (without.labels_.to_numpy()[unseen] == truth[unseen]).mean()
    acc_after = (with_gold.labels_.to_numpy()[unseen] == truth[unseen]).mean()
    assert acc_after > acc_before + 0.2


# -- parameters and determinism -----------------------------------------------------------------
def test_mace_is_deterministic_given_random_state(crowd_dir: Path) -> None:
    labels, _ = _load(crowd_dir, "snow2008_temp")
    first = MACE(random_state=3, n_restarts=3, method="em").fit(labels)
    second = MACE(random_state=3, n_restarts=3, method="em").fit(labels)
    pd.testing.assert_frame_equal(first.probas_, second.probas_)
    pd.testing.assert_series_equal(first.competence_, second.competence_)
    assert first.log_likelihood_ == second.log_likelihood_


def test_mace_restarts_keep_the_best_likelihood(crowd_dir: Path) -> None:
    labels, _ = _load(crowd_dir, "snow2008_temp")
    singles = [MACE(n_restarts=1, random_state=s).fit(labels).log_likelihood_ for s in range(4)]
    many = MACE(n_restarts=8, random_state=0).fit(labels).log_likelihood_
    assert many >= singles[0]
    assert len(set(singles)) > 1  # restarts really start from different points


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: GLAD(n_iter=0), "n_iter"),
        (lambda: GLAD(tol=-1.0), "tol"),
        (lambda: MACE(n_restarts=0), "n_restarts"),
        (lambda: MACE(method="gibbs"), "method"),  # type: ignore[arg-type]
        (lambda: MACE(smoothing=-0.1), "smoothing"),
    ],
)
def test_bad_parameters_are_refused(factory: Any, field: str) -> None:
    with pytest.raises(InputError) as info:
        factory()
    assert info.value.field == field


# -- properties ---------------------------------------------------------------------------------
PROPERTY_SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def label_tables(draw: st.DrawFn) -> pd.DataFrame:
    """Small random tables: up to 12 items, 5 readers, 3 classes, 1-4 labels per item."""
    n_items = draw(st.integers(1, 12))
    rows: list[tuple[str, str, str]] = []
    for i in range(n_items):
        readers = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4, unique=True))
        for r in readers:
            rows.append((f"i{i}", f"r{r}", draw(st.sampled_from("abc"))))
    return pd.DataFrame(rows, columns=["item", "annotator", "label"])


@pytest.mark.parametrize("model", MODELS)
@PROPERTY_SETTINGS
@given(table=label_tables(), data=st.data())
def test_reordering_rows_changes_nothing(
    model: type[Aggregator], table: pd.DataFrame, data: st.DataObject
) -> None:
    """Rows, and so the order in which items and readers first appear, do not matter at all:
    the fit is bit-for-bit the same."""
    rows = data.draw(st.permutations(range(len(table))))
    first = model().fit(table)
    second = model().fit(table.iloc[list(rows)])
    pd.testing.assert_frame_equal(first.probas_, second.probas_, check_exact=True)
    pd.testing.assert_series_equal(first.labels_, second.labels_)
    params = "skills_" if model is GLAD else "competence_"
    pd.testing.assert_series_equal(getattr(first, params), getattr(second, params))


@PROPERTY_SETTINGS
@given(table=label_tables(), data=st.data())
def test_glad_renaming_readers_and_items_is_equivariant(
    table: pd.DataFrame, data: st.DataObject
) -> None:
    """GLAD starts every reader and item from the same point, so renaming them only renames
    the result. (MACE draws a random start per reader, in name order: renaming readers hands
    them different starts, so it is equivariant only up to convergence.)"""
    items = sorted(table["item"].unique())
    readers = sorted(table["annotator"].unique())
    item_names = dict(zip(items, data.draw(st.permutations(items)), strict=True))
    reader_names = dict(zip(readers, data.draw(st.permutations(readers)), strict=True))
    renamed = table.assign(
        item=table["item"].map(item_names), annotator=table["annotator"].map(reader_names)
    )
    first = GLAD().fit(table)
    second = GLAD().fit(renamed)
    new_items = [item_names[i] for i in first.probas_.index]
    back = second.probas_.loc[new_items].to_numpy()
    np.testing.assert_allclose(back, first.probas_.to_numpy(), atol=1e-6)
    skills = second.skills_[[reader_names[r] for r in first.skills_.index]].to_numpy()
    np.testing.assert_allclose(skills, first.skills_.to_numpy(), atol=1e-6)
    ordered = np.sort(first.probas_.to_numpy(), axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 1e-6 if ordered.shape[1] > 1 else slice(None)
    assert (second.labels_[new_items].to_numpy()[clear] == first.labels_.to_numpy()[clear]).all()


@pytest.mark.parametrize("model", MODELS)
@PROPERTY_SETTINGS
@given(
    answers=st.lists(
        st.tuples(st.sampled_from("abc"), st.lists(st.integers(0, 5), min_size=1, unique=True)),
        min_size=1,
        max_size=12,
    )
)
def test_unanimous_items_get_their_label(
    model: type[Aggregator], answers: list[tuple[str, list[int]]]
) -> None:
    rows = [(f"i{i}", f"r{r}", label) for i, (label, rs) in enumerate(answers) for r in rs]
    table = pd.DataFrame(rows, columns=["item", "annotator", "label"])
    fitted = model().fit(table)
    expected = pd.Series(
        [label for label, _ in answers], index=[f"i{i}" for i in range(len(answers))]
    )
    assert (fitted.labels_[expected.index] == expected).all()


@pytest.mark.parametrize("model", MODELS)
@PROPERTY_SETTINGS
@given(table=label_tables(), copies=st.integers(2, 6))
def test_copied_reader_is_finite(model: type[Aggregator], table: pd.DataFrame, copies: int) -> None:
    reader = table["annotator"].iloc[0]
    mine = table[table["annotator"] == reader]
    copied = pd.concat([table] + [mine] * copies, ignore_index=True)
    renamed = pd.concat(
        [table] + [mine.assign(annotator=f"{reader}_copy{c}") for c in range(copies)],
        ignore_index=True,
    )
    for frame in (copied, renamed):
        fitted = model().fit(frame)
        assert np.isfinite(fitted.probas_.to_numpy()).all()
        np.testing.assert_allclose(fitted.probas_.sum(axis=1), 1.0)
        fitted_params = getattr(fitted, "skills_" if model is GLAD else "competence_")
        assert np.isfinite(fitted_params.to_numpy()).all()


@pytest.mark.parametrize("model", MODELS)
@PROPERTY_SETTINGS
@given(answers=st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abc")), min_size=1))
def test_single_label_items_keep_their_one_label(
    model: type[Aggregator], answers: list[tuple[int, str]]
) -> None:
    table = pd.DataFrame(
        [(f"i{i}", f"r{r}", label) for i, (r, label) in enumerate(answers)],
        columns=["item", "annotator", "label"],
    )
    fitted = model().fit(table)
    assert np.isfinite(fitted.probas_.to_numpy()).all()
    assert (fitted.labels_[table["item"]].to_numpy() == table["label"].to_numpy()).all()


@pytest.mark.parametrize("model", MODELS)
def test_schema_classes_without_labels(model: type[Aggregator]) -> None:
    table = pd.DataFrame(
        {"item": [1, 1, 2, 2], "annotator": ["a", "b", "a", "b"], "label": ["x", "x", "y", "y"]}
    )
    fitted = model(classes=["x", "y", "z"]).fit(table)
    assert list(fitted.probas_.columns) == ["x", "y", "z"]
    assert fitted.labels_.tolist() == ["x", "y"]
    one_class = model().fit(table.assign(label="x"))
    assert one_class.labels_.tolist() == ["x", "x"]
    np.testing.assert_allclose(one_class.probas_.to_numpy(), 1.0)
