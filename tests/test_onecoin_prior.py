"""One-coin Dawid–Skene with an empirical-Bayes prior on reader accuracies, and equal class
frequencies: checked against the model's equations computed here by hand and against
scipy's beta-binomial distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import betabinom

from truthset.domain.errors import InputError
from truthset.quality.aggregation.dawid_skene import (
    DawidSkene,
    OneCoinDawidSkene,
    fit_beta_prior,
)

CLASSES = ["a", "b", "c"]


def _gold_table(scores: dict[str, list[bool]]) -> tuple[pd.DataFrame, pd.Series]:
    """Reads of gold items g0.. (answer "a"): right ("a") or wrong ("b") per reader."""
    n = len(next(iter(scores.values())))
    gold = pd.Series({f"g{k}": "a" for k in range(n)})
    rows = [(f"g{k}", reader, "a" if right else "b")
            for reader, marks in scores.items() for k, right in enumerate(marks)]
    return pd.DataFrame(rows, columns=["item", "annotator", "label"]), gold


def test_beta_prior_maximises_the_beta_binomial_likelihood() -> None:
    rng = np.random.default_rng(7)
    trials = np.full(40, 20)
    successes = rng.binomial(trials, rng.beta(6, 2, 40))
    a, b = fit_beta_prior(successes, trials)  # type: ignore[misc]

    def loglik(a_: float, b_: float) -> float:
        return float(betabinom.logpmf(successes, trials, a_, b_).sum())

    best = max(loglik(m * c, (1 - m) * c) for m in np.linspace(0.5, 0.95, 91)
               for c in np.geomspace(1, 200, 120))
    assert loglik(a, b) >= best - 1e-6
    assert 0.6 < a / (a + b) < 0.9


def test_beta_prior_pools_readers_who_vary_less_than_chance() -> None:
    # 4/4, 3/4, 3/4, 3/4: the scores spread less than binomial noise alone would make them,
    # so the likelihood grows with the concentration up to its bound: complete pooling (at
    # a + b = 1e4 the best mean is the pooled 13/16 to within 1e-4).
    a, b = fit_beta_prior(np.array([4, 3, 3, 3]), np.array([4, 4, 4, 4]))  # type: ignore[misc]
    assert a / (a + b) == pytest.approx(13 / 16, abs=1e-4)
    assert a + b == pytest.approx(1e4, rel=1e-3)
    assert fit_beta_prior(np.array([3.0]), np.array([4.0])) is None
    assert fit_beta_prior(np.array([3.0, 0.0]), np.array([4.0, 0.0])) is None


def test_gold_only_skills_are_the_beta_posterior_means() -> None:
    table, gold = _gold_table({"r1": [True] * 5, "r2": [True, True, True, False, False],
                               "r3": [True, True, True, True, False]})
    fixed = OneCoinDawidSkene(skill_prior=(3.0, 1.0), class_prior="uniform",
                              classes=CLASSES).fit(table, gold)
    assert fixed.skills_.to_dict() == pytest.approx({"r1": 8 / 9, "r2": 6 / 9, "r3": 7 / 9})
    empirical = OneCoinDawidSkene(skill_prior="empirical", classes=CLASSES).fit(table, gold)
    a, b = fit_beta_prior(np.array([5, 3, 4]), np.array([5, 5, 5]))  # type: ignore[misc]
    assert empirical.skill_prior_ == pytest.approx((a, b), rel=1e-6)
    assert empirical.skills_["r1"] == pytest.approx((5 + a) / (5 + a + b), rel=1e-6)
    # Maximum likelihood puts r1 at 1: a single read of theirs would be certain.
    assert OneCoinDawidSkene(classes=CLASSES).fit(table, gold).skills_["r1"] == 1.0


def test_an_item_read_once_says_nothing_about_its_reader() -> None:
    table, gold = _gold_table({"r1": [True, True, True, False], "r2": [True, True, False, False],
                               "r3": [True, True, True, True]})
    once = pd.DataFrame([("x0", "r1", "b"), ("x1", "r1", "c"), ("x2", "r3", "a")],
                        columns=["item", "annotator", "label"])
    base = OneCoinDawidSkene(skill_prior="empirical", class_prior="uniform",
                             classes=CLASSES).fit(table, gold)
    more = OneCoinDawidSkene(skill_prior="empirical", class_prior="uniform",
                             classes=CLASSES).fit(pd.concat([table, once]), gold)
    pd.testing.assert_series_equal(base.skills_, more.skills_)
    # The posterior of a single read is its reader's accuracy (equal class frequencies).
    s1 = float(more.skills_["r1"])
    assert more.probas_.loc["x0"].to_list() == pytest.approx([(1 - s1) / 2, s1, (1 - s1) / 2])


def test_em_reaches_the_fixed_point_of_the_model_equations() -> None:
    table, gold = _gold_table({f"r{k}": list(np.arange(6) < 6 - k % 3) for k in range(5)})
    rng = np.random.default_rng(3)
    extra = [(f"x{i}", f"r{int(w)}", CLASSES[int(rng.integers(3))])
             for i in range(12) for w in rng.choice(5, size=2 + i % 3, replace=False)]
    full = pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)
    model = OneCoinDawidSkene(skill_prior="empirical", class_prior="uniform", tol=1e-12,
                              n_iter=2000, classes=CLASSES).fit(full, gold)
    a, b = model.skill_prior_  # type: ignore[misc]
    skills = model.skills_
    # E-step by hand: P(c | reads) ∝ Π s_w^[l=c] ((1 - s_w)/2)^[l≠c] (equal class priors).
    post = {}
    for item, rows in full.groupby("item"):
        if item in gold.index:
            post[item] = np.array([float(c == gold[item]) for c in CLASSES])
            continue
        like = np.ones(3)
        for w, lab in zip(rows["annotator"], rows["label"], strict=True):
            s = float(skills[w])
            like *= np.where(np.array(CLASSES) == lab, s, (1 - s) / 2)
        post[item] = like / like.sum()
    for item, p in post.items():
        assert model.probas_.loc[item].to_numpy() == pytest.approx(p, abs=1e-9)
    # M-step by hand: (agree + a) / (n + a + b) over gold reads and items read twice or more.
    n_reads = full.groupby("item").size()
    informs = full[full["item"].isin(gold.index) | (full["item"].map(n_reads) > 1)]
    for w, rows in informs.groupby("annotator"):
        agree = sum(post[i][CLASSES.index(lab)] for i, lab in zip(rows["item"], rows["label"],
                                                                   strict=True))
        assert skills[w] == pytest.approx((agree + a) / (len(rows) + a + b), abs=1e-9)
    counts = [(agree_, n_) for agree_, n_ in [
        (sum(post[i][CLASSES.index(lab)] for i, lab in zip(r["item"], r["label"], strict=True)),
         len(r)) for _w, r in informs.groupby("annotator")]]
    assert fit_beta_prior(np.array([c[0] for c in counts]),
                          np.array([c[1] for c in counts])) == pytest.approx((a, b), rel=1e-4)


def test_uniform_class_prior_keeps_frequencies_equal() -> None:
    # Nine items all read "a" by two readers, one item read "b": estimated frequencies lean
    # to "a"; equal ones leave the "b" item to its reads alone.
    rows = [(f"x{i}", w, "a" if i < 9 else "b") for i in range(10) for w in ("r1", "r2")]
    table = pd.DataFrame(rows, columns=["item", "annotator", "label"])
    for model_cls in (DawidSkene, OneCoinDawidSkene):
        uniform = model_cls(class_prior="uniform", classes=CLASSES).fit(table)
        assert uniform.priors_.to_list() == pytest.approx([1 / 3] * 3)
        estimated = model_cls(classes=CLASSES).fit(table)
        assert estimated.priors_["a"] > 0.8


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"skill_prior": "strong"}, "skill_prior"),
    ({"skill_prior": (0.0, 1.0)}, "skill_prior"),
    ({"class_prior": "learned"}, "class_prior"),
])
def test_bad_settings_are_refused_with_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as err:
        OneCoinDawidSkene(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
