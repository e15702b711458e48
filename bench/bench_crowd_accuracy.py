"""Accuracy of every Truthset aggregator beside crowd-kit's same-named methods.

Run::

    .venv/bin/python bench/bench_crowd_accuracy.py [--datasets snow2008_rte ...]

For each public crowd dataset with known answers (``../shared/data/crowd``) it fits every method
on all labels and scores accuracy over the items that have a reference answer; it prints one
Markdown table (accuracy and fit time per method, ours beside crowd-kit's).
"""

from __future__ import annotations

import argparse
import importlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from truthset.io.tables import read_table
from truthset.quality.aggregation import (
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
)

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
DATASETS = ["snow2008_rte", "snow2008_temp", "adult_ipeirotis"]


def ours() -> dict[str, Callable[[], Any]]:
    """Truthset methods by CLI name (GLAD and MACE when their modules exist)."""
    methods: dict[str, Callable[[], Any]] = {
        "mv": MajorityVote,
        "wmv": WeightedMajorityVote,
        "ds": DawidSkene,
        "onecoin": OneCoinDawidSkene,
    }
    for name, cls in (("glad", "GLAD"), ("mace", "MACE")):
        try:
            module = importlib.import_module(f"truthset.quality.aggregation.{name}")
            methods[name] = getattr(module, cls)
        except (ImportError, AttributeError):
            pass
    return methods


class WawaByHand:
    """crowd-kit's Wawa (majority vote weighted by each worker's agreement with MV), built from
    crowd-kit's MajorityVote because ``crowdkit.aggregation.Wawa`` fails with scikit-learn 1.6+
    (``check_is_fitted`` needs ``__sklearn_tags__``)."""

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        """Weighted vote with weights = agreement with the plain majority vote."""
        from crowdkit import aggregation as ck

        skills = ck.MajorityVote().fit(data).skills_
        return ck.MajorityVote().fit_predict(data, skills)


def crowdkit_methods() -> dict[str, Callable[[], Any]]:
    """crowd-kit's same-named methods (Wawa is its weighted majority vote)."""
    from crowdkit import aggregation as ck

    return {
        "mv": ck.MajorityVote,
        "wmv": WawaByHand,
        "ds": lambda: ck.DawidSkene(n_iter=100),
        "onecoin": lambda: ck.OneCoinDawidSkene(n_iter=100),
        "glad": ck.GLAD,
        "mace": ck.MACE,
    }


def accuracy(labels: pd.Series, truth: pd.Series) -> float:
    """Share of items with a reference answer whose label matches it."""
    common = labels.index.intersection(truth.index)
    return float((labels[common].astype(str) == truth[common].astype(str)).mean())


def main() -> None:
    """Run every method on every dataset and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for name in args.datasets:
        labels = read_table(CROWD / name / "labels.csv")
        t = read_table(CROWD / name / "truth.csv")
        truth = pd.Series(t["label"].to_numpy(), index=t["item"].to_numpy())
        ck_table = labels.rename(columns={"item": "task", "annotator": "worker"})
        scored = len(truth.index.intersection(labels["item"].unique()))
        theirs = crowdkit_methods()
        for method, make in ours().items():
            start = time.perf_counter()
            acc = accuracy(make().fit_predict(labels), truth)
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            ck_acc = accuracy(theirs[method]().fit_predict(ck_table), truth)
            ck_s = time.perf_counter() - start
            rows.append((name, scored, method, acc, ck_acc, ours_s, ck_s))
            print(f"{name} {method}: {acc:.4f} vs {ck_acc:.4f}", flush=True)
    print()
    print(
        "| dataset | items scored | method | Truthset acc. | crowd-kit acc. "
        "| Truthset s | crowd-kit s |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name, scored, method, acc, ck_acc, s1, s2 in rows:
        print(f"| {name} | {scored} | {method} | {acc:.4f} | {ck_acc:.4f} | {s1:.2f} | {s2:.2f} |")
    print()
    frame = pd.DataFrame(rows, columns=["dataset", "n", "method", "ours", "ck", "s1", "s2"])
    best = frame.groupby("dataset")[["ours", "ck"]].max()
    print("| dataset | best Truthset | best crowd-kit |")
    print("| --- | ---: | ---: |")
    for name, row in best.iterrows():
        print(f"| {name} | {row['ours']:.4f} | {row['ck']:.4f} |")


if __name__ == "__main__":
    main()
