"""Agreement metrics against published worked examples, peer libraries and invariances.

Truth comes from outside Truthset: the values in ../shared/reference/agreement.md (Krippendorff
2011, Gwet's handbook, Wikipedia's Fleiss and Krippendorff examples, Cohen's textbook tables),
the ``krippendorff`` package and scikit-learn's ``cohen_kappa_score`` on random data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from truthset.domain.errors import InputError
from truthset.quality import agreement_core as core
from truthset.quality.agreement import (
    LEVELS,
    agreement,
    cohen_kappa,
    counts_from_contingency,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    pairwise_agreement,
    per_class_agreement,
    percent_agreement,
)
from truthset.quality.table import encode

NAN = np.nan
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Krippendorff (2011): four observers × twelve units, * = missing.
K2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)
#: Wikipedia's Krippendorff example: three coders × fifteen units.
WIKI3 = np.array(
    [
        [NAN] * 5 + [3, 4, 1, 2, 1, 1, 3, 3, NAN, 3],
        [1, NAN, 2, 1, 3, 3, 4, 3] + [NAN] * 7,
        [NAN, NAN, 2, 1, 3, 4, 4, NAN, 2, 1, 1, 3, 3, NAN, 4],
    ]
)
#: Wikipedia's Fleiss example: ten subjects × five categories, fourteen raters each.
FLEISS_WIKI = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

#: Fleiss (1971): 30 patients × 6 psychiatrists, diagnoses 1..5 (one row per patient; the data
#: as distributed with R's ``irr`` package as ``diagnoses``).
FLEISS_1971 = np.array(
    [
        [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5],
        [2, 2, 2, 4, 4, 4], [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4],
        [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5], [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4],
        [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5], [3, 3, 3, 3, 3, 5],
        [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
        [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4],
        [1, 4, 4, 4, 4, 5], [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4],
        [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
    ]
)  # fmt: skip
#: R ``irr``'s ``anxiety`` data: 20 subjects rated 1..6 by three raters (one column each).
ANXIETY = np.array(
    [
        [3, 3, 2], [3, 6, 1], [3, 4, 4], [4, 6, 4], [5, 2, 3], [5, 4, 2], [2, 2, 1],
        [3, 4, 6], [5, 3, 1], [2, 3, 1], [2, 2, 1], [6, 3, 2], [1, 3, 3], [5, 3, 3],
        [2, 2, 1], [2, 2, 1], [1, 1, 3], [2, 3, 3], [4, 3, 2], [3, 4, 2],
    ]
)  # fmt: skip


def peer_alpha(data: Any, level: Any, value_counts: Any = None) -> float:
    """Krippendorff's alpha from the ``krippendorff`` package."""
    return float(
        krippendorff.alpha(
            reliability_data=data, value_counts=value_counts, level_of_measurement=level
        )
    )


def long_table(matrix: np.ndarray) -> pd.DataFrame:
    """Reliability matrix (annotators × items) → long table with string names."""
    rows = [
        {"item": f"u{j}", "annotator": f"r{i}", "label": str(int(v))}
        for i, row in enumerate(matrix)
        for j, v in enumerate(row)
        if not np.isnan(v)
    ]
    return pd.DataFrame(rows, columns=["item", "annotator", "label"])


def two_reader_table(first: np.ndarray, second: np.ndarray) -> pd.DataFrame:
    """Long table of two readers who labelled the same items."""
    n = len(first)
    return pd.DataFrame(
        {
            "item": np.r_[np.arange(n), np.arange(n)],
            "annotator": ["a"] * n + ["b"] * n,
            "label": np.r_[first, second],
        }
    )


def table_from_contingency(matrix: list[list[int]]) -> pd.DataFrame:
    """The two-reader long table behind a contingency table."""
    m = np.asarray(matrix)
    k = len(m)
    cells = np.repeat(np.arange(k * k), m.ravel())
    return two_reader_table(cells // k, cells % k)


# --------------------------------------------------------------------------- published values


@pytest.mark.parametrize(
    ("level", "expected"),
    [("nominal", 0.743421), ("ordinal", 0.815388), ("interval", 0.849107), ("ratio", 0.797403)],
)
def test_krippendorff_2011(level: str, expected: float) -> None:
    for data in (K2011, long_table(K2011)):
        res = krippendorff_alpha(data, level=level, ci=None)
        assert res.value == pytest.approx(expected, abs=5e-7)
        assert res.n_items == 11 and res.n_single == 1 and res.n_annotators == 4


def test_nested_lists_with_none() -> None:
    as_lists = [[None if np.isnan(v) else int(v) for v in row] for row in K2011]
    assert krippendorff_alpha(as_lists, level="ordinal", ci=None).value == pytest.approx(
        0.815388, abs=5e-7
    )
    with_nan = K2011.tolist()
    assert krippendorff_alpha(with_nan, level="ratio", ci=None).value == pytest.approx(
        0.797403, abs=5e-7
    )


def test_gwet_and_fleiss_on_krippendorff_2011() -> None:
    ac1 = gwet_ac1(K2011, ci=None)
    assert ac1.value == pytest.approx(0.77544, abs=5e-6)
    assert ac1.details["pa"] == pytest.approx(0.81818, abs=5e-6)
    assert ac1.details["pe"] == pytest.approx(0.19032, abs=5e-6)
    assert fleiss_kappa(long_table(K2011), ci=None).value == pytest.approx(0.76117, abs=5e-6)
    assert percent_agreement(K2011, ci=None).value == pytest.approx(0.81818, abs=5e-6)


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.691358), ("interval", 0.810845)])
def test_krippendorff_wikipedia_three_coders(level: str, expected: float) -> None:
    assert krippendorff_alpha(WIKI3, level=level, ci=None).value == pytest.approx(
        expected, abs=5e-7
    )
    # Unit 1 has a single value (left out and counted), units 2 and 14 none at all.
    res = krippendorff_alpha(long_table(WIKI3), level=level, ci=None)
    assert res.value == pytest.approx(expected, abs=5e-7)
    assert res.n_single == 1 and res.n_items == 12


def test_fleiss_wikipedia_counts() -> None:
    res = fleiss_kappa(counts=FLEISS_WIKI, ci=None)
    assert res.value == pytest.approx(0.209931, abs=5e-7)
    assert res.value is not None and round(res.value, 3) == 0.210
    assert res.n_items == 10 and res.n_annotators is None


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        ([[20, 5], [10, 15]], 0.4),
        ([[45, 15], [25, 15]], 0.130435),
        ([[25, 35], [5, 35]], 0.259259),
        ([[0, 4, 1], [0, 8, 0], [0, 1, 5]], 0.4842),
        ([[13, 0, 0], [0, 20, 7], [0, 4, 56]], 0.79641),
    ],
)
def test_cohen_published(matrix: list[list[int]], expected: float) -> None:
    decimals = len(str(expected).split(".")[1])
    tol = 0.5 * 10.0**-decimals
    assert cohen_kappa(matrix=matrix, ci=None).value == pytest.approx(expected, abs=tol)
    assert cohen_kappa(table_from_contingency(matrix), ci=None).value == pytest.approx(
        expected, abs=tol
    )


def test_cohen_linear_weights_and_ac1_published() -> None:
    res = cohen_kappa(matrix=[[0, 4, 1], [0, 8, 0], [0, 1, 5]], weights="linear", ci=None)
    assert res.value == pytest.approx(0.4701, abs=5e-5)
    table = [[13, 0, 0], [0, 20, 7], [0, 4, 56]]
    assert gwet_ac1(counts=counts_from_contingency(table), ci=None).value == pytest.approx(
        0.84933, abs=5e-6
    )
    assert gwet_ac1(table_from_contingency(table), ci=None).value == pytest.approx(
        0.84933, abs=5e-6
    )


def test_fleiss_1971_diagnoses() -> None:
    """Fleiss (1971), the paper's own example: kappa 0.4302445 (R irr ``kappam.fleiss``)."""
    readers_by_items = FLEISS_1971.T.astype(float)
    assert fleiss_kappa(readers_by_items, ci=None).value == pytest.approx(0.4302445, abs=5e-8)
    counts = np.stack([np.equal(FLEISS_1971, grade).sum(axis=1) for grade in range(1, 6)], axis=1)
    assert fleiss_kappa(counts=counts, ci=None).value == pytest.approx(0.4302445, abs=5e-8)
    assert fleiss_kappa(long_table(readers_by_items), ci=None).value == pytest.approx(
        0.4302445, abs=5e-8
    )


@pytest.mark.parametrize(
    ("weights", "expected"),
    [(None, -0.006289308), ("linear", 0.1459075), ("quadratic", 0.2520325)],
)
def test_cohen_weights_r_irr_anxiety(weights: str | None, expected: float) -> None:
    """R irr ``kappa2(anxiety[, 2:3], weight)``: unweighted, "equal" and "squared" weights.

    Raters 2 and 3 never use grade 5, so the weights run over the grades they used (as in irr).
    """
    pair = ANXIETY[:, 1:].T.astype(float)
    assert cohen_kappa(pair, weights=weights, ci=None).value == pytest.approx(expected, abs=5e-8)
    table = two_reader_table(ANXIETY[:, 1], ANXIETY[:, 2])
    assert cohen_kappa(table, weights=weights, ci=None).value == pytest.approx(expected, abs=5e-8)


# --------------------------------------------------------------------------- peers


def reliability_matrices(max_annotators: int = 6, max_items: int = 25) -> st.SearchStrategy:
    """Random annotators × items matrices on a 1..k scale with missing cells."""

    @st.composite
    def build(draw: st.DrawFn) -> np.ndarray:
        a = draw(st.integers(2, max_annotators))
        n = draw(st.integers(2, max_items))
        k = draw(st.integers(2, 6))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        data = rng.integers(1, k + 1, size=(a, n)).astype(float)
        data[rng.random((a, n)) < draw(st.floats(0.0, 0.6))] = NAN
        return data

    return build()


@FAST
@given(reliability_matrices())
def test_alpha_matches_krippendorff_package(data: np.ndarray) -> None:
    for level in LEVELS:
        ours = krippendorff_alpha(data, level=level, ci=None)
        try:
            with np.errstate(all="ignore"):
                peer = float(peer_alpha(data, level))
        except ValueError:  # the package refuses a single distinct value
            peer = NAN
        if ours.value is None:
            assert ours.reason
            assert not np.isfinite(peer)
        else:
            assert ours.value == pytest.approx(peer, abs=1e-9)


@FAST
@given(reliability_matrices(max_annotators=4))
def test_alpha_long_table_equals_matrix(data: np.ndarray) -> None:
    for level in ("nominal", "ordinal", "interval"):
        a = krippendorff_alpha(data, level=level, ci=None).value
        b = krippendorff_alpha(long_table(data), level=level, ci=None).value
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-12)


@FAST
@given(
    st.integers(2, 5),
    st.integers(1, 60),
    st.integers(0, 2**32 - 1),
    st.sampled_from([None, "linear", "quadratic"]),
)
def test_cohen_matches_sklearn(k: int, n: int, seed: int, weights: str | None) -> None:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, k, n)
    second = np.where(rng.random(n) < 0.6, first, rng.integers(0, k, n))
    classes = list(range(k))
    ours = cohen_kappa(two_reader_table(first, second), weights=weights, classes=classes, ci=None)
    with np.errstate(all="ignore"):
        peer = cohen_kappa_score(first, second, weights=weights, labels=classes)
    if ours.value is None:
        assert not np.isfinite(peer) or np.isclose(peer, 0.0)  # sklearn: nan (or 0) when pe = 1
        assert ours.reason
    else:
        assert ours.value == pytest.approx(peer, abs=1e-9)


def test_dawid_skene_data_against_package(crowd_dir: Path) -> None:
    table = pd.read_csv(crowd_dir / "dawid_skene_1979" / "labels.csv", dtype=str)
    with pytest.raises(InputError, match="more than once") as err:
        krippendorff_alpha(table)
    assert err.value.location == "row 2"
    # Every label a value (Krippendorff's coder-free units): the package sees the same counts.
    enc = encode(table)
    for level in ("nominal", "ordinal", "interval"):
        ours = krippendorff_alpha(table, level=level, duplicates="keep", ci=None).value
        peer = peer_alpha(None, level, value_counts=enc.counts())
        assert ours == pytest.approx(peer, abs=1e-12)
    last = krippendorff_alpha(table, duplicates="last", ci=None)
    assert last.value is not None and last.n_annotators == 5


# --------------------------------------------------------------------------- bootstrap


def test_replicate_equals_coefficient_on_resampled_items() -> None:
    """The weight trick: a replicate at item multiplicities w is the coefficient of the data
    with every item repeated w times (checked against the krippendorff package)."""
    rng = np.random.default_rng(3)
    data = rng.integers(1, 5, size=(4, 30)).astype(float)
    data[rng.random(data.shape) < 0.25] = NAN
    ratings = core.ratings_from_counts(krippendorff_counts(data), classes=[1, 2, 3, 4])
    stats = core.alpha_stats(ratings)
    keep = np.flatnonzero((~np.isnan(data)).sum(axis=0) >= 2)
    weights = rng.integers(0, 4, size=(3, len(keep))).astype(float)
    values = np.array([1.0, 2.0, 3.0, 4.0])
    for level in LEVELS:
        reps = core.alpha_kernel(stats, level, values)(weights)
        for w, rep in zip(weights, reps, strict=True):
            repeated = np.repeat(data[:, keep], w.astype(int), axis=1)
            peer = peer_alpha(repeated, level)
            assert rep == pytest.approx(peer, abs=1e-9)


def krippendorff_counts(data: np.ndarray) -> np.ndarray:
    """Items × values 1..4 counts, computed the plain way."""
    return np.stack([(data == v).sum(axis=0) for v in (1, 2, 3, 4)], axis=1)


@pytest.mark.parametrize("metric", ["percent", "cohen", "fleiss", "krippendorff", "ac1"])
def test_ci_seeded_and_contains_estimate(metric: str) -> None:
    rng = np.random.default_rng(11)
    truth = rng.integers(0, 3, 200)
    readers = 2 if metric == "cohen" else 4
    data = np.where(rng.random((readers, 200)) < 0.8, truth, rng.integers(0, 3, (readers, 200)))
    data = data.astype(float)
    a = agreement(data, metric=metric, ci=0.9, n_boot=300, random_state=5)
    b = agreement(data, metric=metric, ci=0.9, n_boot=300, random_state=5)
    c = agreement(data, metric=metric, ci=0.9, n_boot=300, random_state=6)
    assert a.value is not None and a.ci is not None
    assert a.ci == b.ci and a.ci != c.ci
    assert a.ci[0] <= a.value <= a.ci[1]
    assert a.confidence == 0.9 and a.n_boot == 300
    wider = agreement(data, metric=metric, ci=0.99, n_boot=300, random_state=5)
    assert wider.ci is not None and wider.ci[0] <= a.ci[0] and wider.ci[1] >= a.ci[1]


@FAST
@given(reliability_matrices(max_annotators=5, max_items=40), st.sampled_from(LEVELS))
def test_bootstrap_ci_contains_estimate(data: np.ndarray, level: str) -> None:
    data = np.concatenate([data] * 3, axis=1)  # enough items for a meaningful interval
    res = krippendorff_alpha(data, level=level, ci=0.95, n_boot=200, random_state=1)
    if res.value is not None and res.ci is not None:
        low, high = res.ci
        assert low - 1e-9 <= res.value <= high + 1e-9 or res.details["n_boot_undefined"] > 0


def test_bootstrap_speed_shape() -> None:
    """1000 replicates on 10k items come from one pass of matrix products (correct shape)."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 6, size=(5, 10_000)).astype(float)
    res = krippendorff_alpha(data, level="ordinal", ci=0.95, n_boot=1000)
    assert res.ci is not None and res.details["n_boot_undefined"] == 0
    assert res.ci[1] - res.ci[0] < 0.05


# --------------------------------------------------------------------------- properties


@FAST
@given(reliability_matrices(max_annotators=5), st.integers(0, 2**32 - 1))
def test_invariant_to_relabelling_and_row_order(data: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = long_table(data)
    shuffled = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    renamed = shuffled.assign(
        annotator=shuffled["annotator"].map(
            {f"r{i}": f"z{rng.integers(10**9)}_{i}" for i in range(9)}
        ),
        item=shuffled["item"] + "_x",
    )
    recoded = table.assign(label=table["label"].map(lambda v: f"class-{7 - int(v)}"))
    for metric in ("percent", "fleiss", "krippendorff", "ac1"):
        base = agreement(table, metric=metric, ci=None).value
        for other in (shuffled, renamed, recoded):  # renaming classes: nominal is unchanged
            value = agreement(other, metric=metric, ci=None).value
            assert (base is None and value is None) or value == pytest.approx(base, abs=1e-12)
    for level in ("ordinal", "interval"):
        base = krippendorff_alpha(table, level=level, ci=None).value
        value = krippendorff_alpha(renamed, level=level, ci=None).value
        assert (base is None and value is None) or value == pytest.approx(base, abs=1e-12)


@FAST
@given(st.integers(2, 6), st.integers(2, 30), st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_perfect_agreement_is_one(a: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    truth[:2] = [0, 1]  # at least two classes used, so every coefficient is defined
    data = np.tile(truth.astype(float), (a, 1))
    data[rng.random((a, n)) < 0.3] = NAN
    data[:2] = truth  # two readers on every item
    for metric in ("percent", "fleiss", "ac1"):
        assert agreement(data, metric=metric, ci=None).value == pytest.approx(1.0)
    for level in LEVELS:
        shifted = data + 1.0  # ratio needs positive values
        assert krippendorff_alpha(shifted, level=level, ci=None).value == pytest.approx(1.0)
    assert cohen_kappa(data[:2], ci=None).value == pytest.approx(1.0)
    assert cohen_kappa(data[:2], weights="quadratic", ci=None).value == pytest.approx(1.0)


@FAST
@given(reliability_matrices(max_annotators=4), st.integers(1, 5))
def test_copied_readers_are_handled(data: np.ndarray, copies: int) -> None:
    """A reader's labels copied n times under new names: every coefficient stays finite and at
    most 1 (or undefined with a reason), and a table of one reader and its copies agrees
    perfectly."""
    table = long_table(data)
    first = table[table["annotator"] == "r0"]
    clones = pd.concat([first.assign(annotator=f"copy{k}") for k in range(copies)])
    padded = pd.concat([table, clones], ignore_index=True)
    for metric in ("percent", "fleiss", "krippendorff", "ac1"):
        res = agreement(padded, metric=metric, ci=None)
        assert res.value is not None or res.reason
        assert res.value is None or (np.isfinite(res.value) and res.value <= 1.0 + 1e-9)
        assert res.n_annotators == padded["annotator"].nunique()
    alone = pd.concat([first, clones], ignore_index=True)
    assert percent_agreement(alone, ci=None).value in (1.0, None)
    alpha = krippendorff_alpha(alone, ci=None)
    if first["label"].nunique() >= 2:
        assert alpha.value == pytest.approx(1.0)
    else:
        assert alpha.value is None and alpha.reason


# --------------------------------------------------------------------------- undefined cases


def test_undefined_values_have_reasons() -> None:
    same = np.array([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    for metric in ("fleiss", "krippendorff"):
        res = agreement(same, metric=metric)
        assert res.value is None and res.ci is None and "undefined" in (res.reason or "")
        assert json.loads(json.dumps(res.to_dict()))["value"] is None
    assert percent_agreement(same).value == 1.0  # observed agreement is defined
    ac1 = gwet_ac1(same)  # a single class: q - 1 = 0
    assert ac1.value is None and "two classes" in (ac1.reason or "")

    one_reader = pd.DataFrame({"item": ["a", "b"], "annotator": ["r", "r"], "label": ["x", "y"]})
    for metric in ("percent", "fleiss", "krippendorff", "ac1"):
        res = agreement(one_reader, metric=metric)
        assert res.value is None and "one annotator" in (res.reason or "")

    no_pairs = pd.DataFrame({"item": ["a", "b"], "annotator": ["r", "s"], "label": ["x", "y"]})
    res = krippendorff_alpha(no_pairs)
    assert res.value is None and "two or more labels" in (res.reason or "")
    assert res.n_single == 2

    empty = pd.DataFrame({"item": [], "annotator": [], "label": []})
    assert krippendorff_alpha(empty).reason == "no labels"

    disjoint = pd.DataFrame({"item": ["a", "b"], "annotator": ["r", "s"], "label": ["x", "y"]})
    res = cohen_kappa(disjoint)
    assert res.value is None and res.n_single == 2 and "share no item" in (res.reason or "")
    res = cohen_kappa(matrix=[[5, 0], [0, 0]])
    assert res.value is None and "chance agreement is 1" in (res.reason or "")


def test_input_errors() -> None:
    three = long_table(K2011[:3])
    with pytest.raises(InputError, match="exactly two annotators; the table has 3"):
        cohen_kappa(three)
    res = cohen_kappa(three, annotators=["r0", "r1"], ci=None)
    assert res.n_annotators == 2 and res.value is not None
    words = pd.DataFrame(
        {"item": [1, 1, 2, 2], "annotator": ["a", "b", "a", "b"], "label": ["lo", "hi", "lo", "lo"]}
    )
    with pytest.raises(InputError, match="interval level needs numeric labels"):
        krippendorff_alpha(words, level="interval")
    assert krippendorff_alpha(words, level="ordinal", classes=["lo", "hi"]).value is not None
    with pytest.raises(InputError, match="unknown level"):
        krippendorff_alpha(words, level="cardinal")
    with pytest.raises(InputError, match="unknown metric"):
        agreement(words, metric="tau")
    with pytest.raises(InputError, match="not one of the classes") as err:
        krippendorff_alpha(np.array([[1.0, 2.0], [3.0, NAN]]), classes=[1, 2])
    assert err.value.location == "annotator row 2, item column 1"
    with pytest.raises(InputError, match="non-negative"):
        krippendorff_alpha(np.array([[-1.0, 2.0], [2.0, 2.0]]), level="ratio")
    with pytest.raises(InputError, match="square"):
        cohen_kappa(matrix=[[1, 2, 3]])
    with pytest.raises(InputError, match="whole numbers"):
        fleiss_kappa(counts=[[1.5, 2], [3, 0]])


# --------------------------------------------------------------------------- per class, pairwise


@FAST
@given(reliability_matrices(max_annotators=4, max_items=20))
def test_per_class_alpha_is_binary_alpha(data: np.ndarray) -> None:
    results = per_class_agreement(data, metric="krippendorff", ci=None)
    for cls, res in results.items():
        binary = np.where(np.isnan(data), NAN, (data == cls).astype(float))
        try:
            peer = float(peer_alpha(binary, "nominal"))
        except ValueError:
            peer = NAN
        if res.value is None:
            assert res.reason and not np.isfinite(peer)
        else:
            assert res.value == pytest.approx(peer, abs=1e-9)


@FAST
@given(st.integers(2, 4), st.integers(2, 50), st.integers(0, 2**32 - 1))
def test_per_class_cohen_and_fleiss(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, k, n)
    second = np.where(rng.random(n) < 0.6, first, rng.integers(0, k, n))
    table = two_reader_table(first, second)
    cohen = per_class_agreement(table, metric="cohen", ci=None)
    fleiss = per_class_agreement(table, metric="fleiss", ci=None)
    for cls in cohen:
        a, b = (first == cls).astype(int), (second == cls).astype(int)
        with np.errstate(all="ignore"):
            peer = cohen_kappa_score(a, b, labels=[0, 1])
        value = cohen[cls].value
        assert (value is None and not np.isfinite(peer)) or value == pytest.approx(peer)
        binary = np.vstack([a, b]).astype(float)
        expected = fleiss_kappa(binary, classes=[0, 1], ci=None).value
        if expected is None:
            assert fleiss[cls].value is None
        else:
            assert fleiss[cls].value == pytest.approx(expected)


def test_per_class_ci_and_undefined_class() -> None:
    data = np.array([[1, 1, 2, 2, 1, 2] * 5, [1, 1, 2, 1, 1, 2] * 5], dtype=float)
    out = per_class_agreement(data, metric="ac1", classes=[1, 2, 3], ci=0.9, n_boot=200)
    assert set(out) == {1, 2, 3}
    assert out[1].ci is not None and out[1].ci[0] <= out[1].value <= out[1].ci[1]  # type: ignore[operator]
    kappa = per_class_agreement(data, metric="fleiss", classes=[1, 2, 3], ci=None)
    assert kappa[3].value is None and "class 3" in (kappa[3].reason or "")


def test_pairwise_matches_sklearn_per_pair() -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 3, size=(5, 40)).astype(float)
    data[rng.random(data.shape) < 0.4] = NAN
    data[4, :20] = NAN
    data[3, 20:] = NAN  # readers 3 and 4 share no item
    table = long_table(data)
    kappa = pairwise_agreement(table, metric="cohen")
    share = pairwise_agreement(table, metric="percent")
    for i in range(5):
        for j in range(5):
            both = ~np.isnan(data[i]) & ~np.isnan(data[j])
            assert kappa.n_shared.iloc[i, j] == both.sum()
            if not both.any():
                assert np.isnan(kappa.values.iloc[i, j]) and np.isnan(share.values.iloc[i, j])
                continue
            assert share.values.iloc[i, j] == pytest.approx(np.mean(data[i, both] == data[j, both]))
            with np.errstate(all="ignore"):
                peer = cohen_kappa_score(data[i, both], data[j, both])
            got = kappa.values.iloc[i, j]
            assert (np.isnan(got) and not np.isfinite(peer)) or got == pytest.approx(peer)
    assert kappa.to_dict()["values"][3][4] is None


def test_pairwise_ci_equals_two_reader_ci() -> None:
    """With every reader on every item, a pair's bootstrap resamples are exactly those of
    cohen_kappa / percent_agreement on the two readers alone (same seed, same draws)."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 80)
    data = np.where(rng.random((3, 80)) < 0.75, truth, rng.integers(0, 3, (3, 80))).astype(float)
    table = long_table(data)
    for metric, single in (("cohen", cohen_kappa), ("percent", percent_agreement)):
        pairs = pairwise_agreement(table, metric=metric, ci=0.9, n_boot=200, random_state=4)
        assert pairs.low is not None and pairs.high is not None
        pair_table = table[table["annotator"].isin(["r0", "r2"])]
        two = single(pair_table, ci=0.9, n_boot=200, random_state=4)
        assert two.ci is not None
        assert pairs.values.loc["r0", "r2"] == pytest.approx(two.value)
        assert pairs.low.loc["r0", "r2"] == pytest.approx(two.ci[0])
        assert pairs.high.loc["r0", "r2"] == pytest.approx(two.ci[1])
        assert json.loads(json.dumps(pairs.to_dict()))["confidence"] == 0.9
