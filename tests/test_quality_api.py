"""The quality engine's public shape: one estimator interface, pandas / polars / crowd-kit tables,
and the issue's list of bad inputs, each with its documented outcome."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import truthset.quality as quality
from truthset.cli.main import app
from truthset.domain.errors import InputError
from truthset.io.tables import read_table
from truthset.quality import (
    AGGREGATORS,
    GLAD,
    MACE,
    DawidSkene,
    MajorityVote,
    MultiLabelAggregator,
    OneCoinDawidSkene,
    WeightedMajorityVote,
    agreement,
    krippendorff_alpha,
    make_aggregator,
)

runner = CliRunner()
CATEGORICAL = [MajorityVote, WeightedMajorityVote, DawidSkene, OneCoinDawidSkene, GLAD, MACE]


@pytest.fixture(scope="module")
def temp(crowd_dir: Path) -> tuple[pd.DataFrame, pd.Series]:
    """snow2008_temp: 4,620 labels of 462 items by 76 readers, with the reference answers."""
    labels = read_table(crowd_dir / "snow2008_temp" / "labels.csv")
    truth = read_table(crowd_dir / "snow2008_temp" / "truth.csv")
    return labels, pd.Series(truth["label"].to_numpy(), index=truth["item"].to_numpy())


# -- one shape for every estimator ----------------------------------------------------------------
@pytest.mark.parametrize("factory", CATEGORICAL)
def test_every_estimator_has_the_shared_shape(
    temp: tuple[pd.DataFrame, pd.Series], factory: type
) -> None:
    labels, _ = temp
    model = factory()
    assert model.fit(labels) is model
    items = pd.Index(sorted(labels["item"].unique()))
    predicted = factory().fit_predict(labels)
    assert isinstance(predicted, pd.Series) and predicted.index.equals(items)
    proba = factory().fit_predict_proba(labels)
    assert list(proba.columns) == sorted(labels["label"].unique()) and proba.index.equals(items)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (predicted == model.labels_).all()
    skills = model.skills_
    assert isinstance(skills, pd.Series)
    assert set(skills.index) == set(labels["annotator"]) and np.isfinite(skills).all()
    assert ((model.confidence_ > 0) & (model.confidence_ <= 1)).all()


def test_registry_names_every_cli_method() -> None:
    for name in ("mv", "wmv", "ds", "onecoin", "glad", "mace"):
        assert isinstance(make_aggregator(name), AGGREGATORS[name])
    with pytest.raises(InputError, match="unknown aggregation method 'em'"):
        make_aggregator("em")


def test_mask_and_box_estimators_importable_from_the_package() -> None:
    for name in (
        "STAPLE",
        "MultiLabelSTAPLE",
        "majority_vote_mask",
        "mask_metrics",
        "dice",
        "hd95",
        "fuse_boxes",
        "matched_f1",
        "box_iou_matrix",
        "BoxFusion",
    ):
        assert name in quality.__all__ and callable(getattr(quality, name))
    masks = [np.zeros((4, 4), bool) for _ in range(3)]
    for m in masks:
        m[1:3, 1:3] = True
    assert quality.STAPLE().fit(masks).consensus.sum() == 4


def test_mask_and_box_estimators_share_the_shape() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((12, 12), bool)
    truth[3:9, 2:10] = True
    masks = [truth ^ (rng.random(truth.shape) < 0.05) for _ in range(4)]
    staple = quality.STAPLE()
    fitted = staple.fit(masks)
    assert np.array_equal(staple.fit_predict(masks), fitted.consensus)
    assert np.array_equal(staple.fit_predict_proba(masks), fitted.probability)
    maps = [np.where(m, 2, 0) for m in masks]
    ml = quality.MultiLabelSTAPLE(return_probabilities=False)
    assert np.array_equal(ml.fit_predict(maps), ml.fit(maps).labels)
    proba = ml.fit_predict_proba(maps)
    assert proba.shape == (3, 12, 12) and ml.return_probabilities is False
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-6)

    boxes = pd.DataFrame(
        {
            "item": ["img1"] * 4,
            "annotator": ["r1", "r2", "r3", "r1"],
            "label": ["nodule"] * 4,
            "x0": [10, 12, 11, 100],
            "y0": [10, 11, 9, 100],
            "x1": [50, 49, 51, 120],
            "y1": [50, 52, 50, 130],
        }
    )
    fusion = quality.BoxFusion(iou_threshold=0.5)
    findings = fusion.fit_predict(boxes)
    assert findings.equals(fusion.findings_)
    assert sorted(findings["n_readers"]) == [1, 3]
    assert findings["n_readers_total"].tolist() == [3, 3]
    pl = pytest.importorskip("polars")
    assert quality.BoxFusion(iou_threshold=0.5).fit_predict(pl.from_pandas(boxes)).equals(findings)


# -- crowd-kit's column names and polars tables ---------------------------------------------
@pytest.mark.parametrize("factory", CATEGORICAL)
def test_crowdkit_column_names_give_the_same_result(
    temp: tuple[pd.DataFrame, pd.Series], factory: type
) -> None:
    labels, truth = temp
    crowdkit_style = labels.rename(columns={"item": "task", "annotator": "worker"})
    gold = truth.iloc[:40]
    gold_table = pd.DataFrame({"task": gold.index, "true_label": gold.to_numpy()})
    ours = factory().fit(labels, gold)
    theirs = factory().fit(crowdkit_style, gold_table)
    pd.testing.assert_frame_equal(ours.probas_, theirs.probas_)
    pd.testing.assert_series_equal(ours.skills_, theirs.skills_)


def test_agreement_takes_crowdkit_names(temp: tuple[pd.DataFrame, pd.Series]) -> None:
    labels, _ = temp
    crowdkit_style = labels.rename(columns={"item": "task", "annotator": "worker"})
    for metric in ("percent", "fleiss", "krippendorff", "ac1"):
        a = agreement(labels, metric=metric, ci=None).value
        b = agreement(crowdkit_style, metric=metric, ci=None).value
        assert a is not None and a == b


def test_polars_tables_are_accepted(temp: tuple[pd.DataFrame, pd.Series]) -> None:
    pl = pytest.importorskip("polars")
    labels, truth = temp
    frame = pl.from_pandas(labels)
    gold = truth.iloc[:40]
    gold_frame = pl.DataFrame({"item": list(gold.index), "label": list(gold.to_numpy())})
    for factory in (MajorityVote, DawidSkene, GLAD):
        expected = factory().fit(labels, gold)
        got = factory().fit(frame, gold_frame)
        pd.testing.assert_frame_equal(expected.probas_, got.probas_)
    lazy = frame.lazy().rename({"item": "task", "annotator": "worker"})
    assert DawidSkene().fit_predict(lazy).equals(DawidSkene().fit_predict(labels))
    for level in ("nominal", "ordinal"):
        a = krippendorff_alpha(labels, level=level, ci=None).value
        assert krippendorff_alpha(frame, level=level, ci=None).value == a
    multi = pl.DataFrame(
        {"item": [1, 1, 2, 2], "annotator": ["a", "b", "a", "b"], "label": ["x|y", "x", "y", "y"]}
    )
    fitted = MultiLabelAggregator().fit(multi)
    assert fitted.fit_predict(multi.to_pandas()).equals(fitted.labels_)


def test_polars_with_missing_label_names_the_row() -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame(
        {"item": [1, 1, 2], "annotator": ["a", "b", "a"], "label": ["x", None, "y"]}
    )
    with pytest.raises(InputError, match="empty label") as err:
        DawidSkene().fit(frame)
    assert err.value.location == "row 2" and err.value.field == "label"


# -- the bad inputs, one by one ----------------------------------------------------
def _table(labels: list[object]) -> pd.DataFrame:
    return pd.DataFrame({"item": [1, 1, 2, 2], "annotator": ["a", "b", "a", "b"], "label": labels})


@pytest.mark.parametrize("empty", [np.nan, None, "", "  "])
def test_nan_or_empty_label_is_refused_everywhere(empty: object, tmp_path: Path) -> None:
    table = _table(["x", "y", empty, "x"])
    for call in (
        lambda: agreement(table, metric="krippendorff"),
        lambda: agreement(table, metric="fleiss"),
        lambda: DawidSkene().fit(table),
        lambda: MACE().fit(table),
    ):
        with pytest.raises(InputError) as err:
            call()
        assert err.value.location == "row 3" and err.value.field == "label"
    path = tmp_path / "labels.csv"
    table.to_csv(path, index=False)
    for command in (["agree", str(path)], ["aggregate", str(path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert "labels.csv, row 3, field 'label'" in result.stderr


def test_one_reader_only(tmp_path: Path) -> None:
    """Agreement is undefined (null, with the reason); aggregation returns that reader's labels."""
    table = pd.DataFrame({"item": [1, 2, 3], "annotator": ["a"] * 3, "label": ["x", "y", "x"]})
    for metric in ("percent", "fleiss", "krippendorff", "ac1"):
        res = agreement(table, metric=metric)
        assert res.value is None and res.ci is None and "one annotator" in (res.reason or "")
    for factory in CATEGORICAL:
        assert factory().fit_predict(table).tolist() == ["x", "y", "x"]
    path = tmp_path / "one.csv"
    table.to_csv(path, index=False)
    result = runner.invoke(app, ["agree", str(path), "--json"])
    assert result.exit_code == 0
    assert '"value": null' in result.stdout and "one annotator" in result.stdout


def test_items_with_a_single_label() -> None:
    """Left out of agreement and counted (``n_single``); aggregated to their one label."""
    table = pd.DataFrame(
        {
            "item": [1, 1, 2, 2, 3, 3, 4],
            "annotator": ["a", "b", "a", "b", "a", "b", "a"],
            "label": ["x", "x", "y", "y", "x", "y", "y"],
        }
    )
    res = krippendorff_alpha(table, ci=None)
    assert res.n_items == 3 and res.n_single == 1
    assert res.value == krippendorff_alpha(table[table["item"] != 4], ci=None).value
    for factory in CATEGORICAL:
        assert factory().fit_predict(table)[4] == "y"


def test_unknown_classes_are_named() -> None:
    table = _table(["x", "y", "z", "x"])
    for call in (
        lambda: agreement(table, metric="fleiss", classes=["x", "y"]),
        lambda: DawidSkene(classes=["x", "y"]).fit(table),
        lambda: GLAD(classes=["x", "y"]).fit(table),
    ):
        with pytest.raises(InputError, match="unknown class 'z'") as err:
            call()
        assert err.value.location == "row 3"


def test_mismatched_mask_shapes_and_spacings() -> None:
    a, b = np.zeros((4, 4), bool), np.zeros((4, 5), bool)
    a[1, 1] = b[1, 1] = True
    with pytest.raises(InputError, match="shape"):
        quality.mask_metrics(a, b, (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        quality.mask_metrics(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="shape"):
        quality.STAPLE().fit([a, b])


def test_gold_naming_unknown_items(temp: tuple[pd.DataFrame, pd.Series]) -> None:
    labels, _ = temp
    for factory in CATEGORICAL:
        with pytest.raises(InputError, match="gold names item 'nope'") as err:
            factory().fit(labels, pd.Series({"nope": "1"}))
        assert err.value.field == "item"
