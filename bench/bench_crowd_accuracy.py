"""Accuracy of every Truthset aggregator beside crowd-kit's same-named methods.

Run::

    .venv/bin/python bench/bench_crowd_accuracy.py [--datasets snow2008_rte ...]

For each public crowd dataset in ``../shared/data/crowd`` it fits every method on all labels,
scores accuracy over the items that have a reference answer (``dawid_skene_1979`` has none: only
the share of items where both libraries give the same label is reported) and prints one Markdown
table (accuracy, same labels and fit time per method, ours beside crowd-kit's).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from truthset.io.tables import read_table
from truthset.quality.aggregation.registry import AGGREGATORS

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
DATASETS = ["snow2008_rte", "snow2008_temp", "adult_ipeirotis", "dawid_skene_1979"]


def ours() -> dict[str, Callable[[], Any]]:
    """Truthset methods by CLI name."""
    return {name: AGGREGATORS[name] for name in ("mv", "wmv", "ds", "onecoin", "glad", "mace")}


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
        truth_path = CROWD / name / "truth.csv"
        truth = None
        if truth_path.exists():
            t = read_table(truth_path)
            truth = pd.Series(t["label"].to_numpy(), index=t["item"].to_numpy())
        ck_table = labels.rename(columns={"item": "task", "annotator": "worker"})
        scored = 0 if truth is None else len(truth.index.intersection(labels["item"].unique()))
        theirs = crowdkit_methods()
        for method, make in ours().items():
            start = time.perf_counter()
            mine = make().fit_predict(labels)
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            peer = theirs[method]().fit_predict(ck_table)
            ck_s = time.perf_counter() - start
            peer = peer.reindex(mine.index)
            same = float((mine.astype(str) == peer.astype(str)).mean())
            acc = None if truth is None else accuracy(mine, truth)
            ck_acc = None if truth is None else accuracy(peer, truth)
            rows.append((name, scored, method, acc, ck_acc, same, ours_s, ck_s))
            print(f"{name} {method}: {acc} vs {ck_acc}; same labels {same:.4f}", flush=True)

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    print()
    print(
        "| dataset | items scored | method | Truthset acc. | crowd-kit acc. | same labels "
        "| Truthset s | crowd-kit s |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, scored, method, acc, ck_acc, same, s1, s2 in rows:
        print(
            f"| {name} | {scored} | {method} | {fmt(acc)} | {fmt(ck_acc)} | {same:.4f} "
            f"| {s1:.2f} | {s2:.2f} |"
        )
    print()
    frame = pd.DataFrame(
        rows, columns=["dataset", "n", "method", "ours", "ck", "same", "s1", "s2"]
    ).dropna(subset=["ours"])
    best = frame.groupby("dataset")[["ours", "ck"]].max()
    print("| dataset | best Truthset | best crowd-kit |")
    print("| --- | ---: | ---: |")
    for name, row in best.iterrows():
        print(f"| {name} | {row['ours']:.4f} | {row['ck']:.4f} |")


if __name__ == "__main__":
    main()
