"""Benchmark: Truthset's GLAD and MACE against crowd-kit 1.4.2.

Two parts:

1. Speed and accuracy on simulated labels (default 20,000 items x 5 reads = 100,000 labels,
   100 readers, 5 classes): readers of mixed skill, spammers, and hard items.
2. Accuracy (and time) on the public crowd datasets in ../shared/data/crowd.

Writes a Markdown table to ``docs/_bench_glad_mace.md`` (or ``--out``). Run from the checkout::

    .venv/bin/python bench/bench_glad_mace.py

crowd-kit's GLAD takes minutes on 100,000 labels; the whole script takes about 10 minutes on a
2-core machine. Truthset's times are the median of ``--repeats`` runs; crowd-kit runs once.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crowdkit.aggregation as crowdkit
import numpy as np
import pandas as pd

from truthset.quality.aggregation.glad import GLAD
from truthset.quality.aggregation.mace import MACE

ROOT = Path(__file__).resolve().parents[1]
CROWD = ROOT.parent / "shared" / "data" / "crowd"


def simulate(
    n_items: int, reads: int, n_readers: int, n_classes: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """Simulated long table and truth.

    80% of readers answer correctly with probability U(0.5, 0.95), wrong answers uniform over
    the other classes; 10% spam uniformly at random; 10% always give one favourite class.
    A fifth of the items are hard: there, a reader's accuracy is pulled 60% of the way to chance.
    Each item is read by ``reads`` distinct readers drawn uniformly.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    kind = rng.choice(3, size=n_readers, p=[0.8, 0.1, 0.1])  # 0 skilled, 1 random, 2 constant
    accuracy = rng.uniform(0.5, 0.95, n_readers)
    favourite = rng.integers(0, n_classes, n_readers)
    hard = rng.random(n_items) < 0.2
    readers = np.argsort(rng.random((n_items, n_readers)), axis=1)[:, :reads].ravel()
    items = np.repeat(np.arange(n_items), reads)
    chance = 1.0 / n_classes
    acc = accuracy[readers]
    acc = np.where(hard[items], acc - 0.6 * (acc - chance), acc)
    correct = rng.random(len(items)) < acc
    wrong = (truth[items] + rng.integers(1, n_classes, len(items))) % n_classes
    labels = np.where(correct, truth[items], wrong)
    labels = np.where(kind[readers] == 1, rng.integers(0, n_classes, len(items)), labels)
    labels = np.where(kind[readers] == 2, favourite[readers], labels)
    table = pd.DataFrame(
        {
            "item": [f"t{i:06d}" for i in items],
            "annotator": [f"w{r:03d}" for r in readers],
            "label": [f"c{c}" for c in labels],
        }
    )
    truth_series = pd.Series([f"c{c}" for c in truth], index=[f"t{i:06d}" for i in range(n_items)])
    return table, truth_series


def timed(fn: Callable[[], pd.Series], repeats: int) -> tuple[pd.Series, float, float]:
    """Result of ``fn``, the median wall time and the median CPU time (``process_time``: all
    threads of this process) over ``repeats`` runs. On a shared machine the CPU time is the
    steadier figure: it does not count the time other processes held the cores."""
    walls, cpus = [], []
    result = pd.Series(dtype=object)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return result, statistics.median(walls), statistics.median(cpus)


def accuracy(labels: pd.Series, truth: pd.Series) -> float:
    """Share of the items with a known answer that got it."""
    common = truth.index.intersection(labels.index)
    return float((labels[common].astype(str) == truth[common].astype(str)).mean())


def ordered_for_crowdkit(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index]:
    """crowd-kit 1.4.2's MACE indexes its spam table by *sorted* worker and label names but reads
    it with first-appearance codes, which scrambles readers and labels unless the two orders
    agree. Renaming workers and labels to zero-padded first-appearance codes makes them agree.
    Returns the renamed table and the label names to map answers back."""
    workers, _ = pd.factorize(table["worker"])
    labels, label_names = pd.factorize(table["label"])
    out = table.assign(worker=[f"{w:06d}" for w in workers], label=[f"{c:06d}" for c in labels])
    return out, pd.Index(label_names)


def run_pair(
    table: pd.DataFrame, truth: pd.Series, repeats: int, *, mace_variants: bool
) -> list[dict[str, Any]]:
    """Fit both libraries' GLAD and MACE on one table; one row of results per method."""
    ck_table = table.rename(columns={"item": "task", "annotator": "worker"})
    rows: list[dict[str, Any]] = []
    ours_glad, t_ours, c_ours = timed(lambda: GLAD().fit_predict(table), repeats)
    theirs_glad, t_theirs, c_theirs = timed(lambda: crowdkit.GLAD().fit_predict(ck_table), 1)
    rows.append(row("GLAD", ours_glad, (t_ours, c_ours), theirs_glad, (t_theirs, c_theirs), truth))
    ours_mace, t_ours, c_ours = timed(lambda: MACE().fit_predict(table), repeats)
    theirs_mace, t_theirs, c_theirs = timed(lambda: crowdkit.MACE().fit_predict(ck_table), 1)
    rows.append(row("MACE", ours_mace, (t_ours, c_ours), theirs_mace, (t_theirs, c_theirs), truth))
    if mace_variants:
        one, _, _ = timed(lambda: crowdkit.MACE(n_restarts=1).fit_predict(ck_table), 1)
        # crowd-kit reseeds every restart identically, so 1 restart == its default 10.
        rows[-1]["crowd-kit 1 restart identical"] = bool((one == theirs_mace).all())
        renamed, names = ordered_for_crowdkit(ck_table)
        fixed, t_fixed, c_fixed = timed(lambda: crowdkit.MACE().fit_predict(renamed), 1)
        fixed = fixed.map(lambda code: names[int(code)])
        rows.append(
            row(
                "MACE (crowd-kit, order bug avoided)",
                ours_mace,
                (t_ours, c_ours),
                fixed,
                (t_fixed, c_fixed),
                truth,
            )
        )
    return rows


def row(
    method: str,
    ours: pd.Series,
    t_ours: tuple[float, float],
    theirs: pd.Series,
    t_theirs: tuple[float, float],
    truth: pd.Series,
) -> dict[str, Any]:
    """One line of the results table (times are ``(wall, cpu)`` pairs)."""
    theirs = theirs[ours.index]
    return {
        "method": method,
        "Truthset s": t_ours[0],
        "crowd-kit s": t_theirs[0],
        "speed-up": t_theirs[0] / t_ours[0],
        "Truthset CPU s": t_ours[1],
        "crowd-kit CPU s": t_theirs[1],
        "CPU speed-up": t_theirs[1] / t_ours[1],
        "Truthset acc": accuracy(ours, truth),
        "crowd-kit acc": accuracy(theirs, truth),
        "same labels": float((ours.astype(str) == theirs.astype(str)).mean()),
    }


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (no extra dependency)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if value < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("| " + " | ".join("---" for _ in frame.columns) + " |")
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, load: what the numbers were measured on."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln),
            platform.processor(),
        )
    except OSError:
        model = platform.processor()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average at the end {load}"


def main() -> None:
    """Run the benchmark and write the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--datasets", nargs="*", default=["snow2008_rte", "snow2008_temp", "adult_ipeirotis"]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_bench_glad_mace.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    sections: list[str] = []
    table, truth = simulate(args.items, args.reads, args.readers, args.classes)
    print(f"simulated: {len(table):,} labels", flush=True)
    sim = pd.DataFrame(run_pair(table, truth, args.repeats, mace_variants=False))
    print(sim.to_string(), flush=True)
    sections.append(
        f"### Simulated: {args.items:,} items x {args.reads} reads = {len(table):,} labels, "
        f"{args.readers} readers, {args.classes} classes\n\n" + markdown(sim)
    )
    for name in args.datasets:
        labels = pd.read_csv(CROWD / name / "labels.csv", dtype=str)
        gt = pd.read_csv(CROWD / name / "truth.csv", dtype=str).drop_duplicates("item")
        gt_series = pd.Series(gt["label"].to_numpy(), index=gt["item"].to_numpy())
        print(f"{name}: {len(labels):,} labels", flush=True)
        res = pd.DataFrame(run_pair(labels, gt_series, args.repeats, mace_variants=True))
        print(res.to_string(), flush=True)
        n_truth = len(gt_series.index.intersection(labels["item"].unique()))
        sections.append(
            f"### {name}: {len(labels):,} labels, accuracy on {n_truth:,} items with a "
            f"reference answer\n\n" + markdown(res)
        )
    header = (
        "## GLAD and MACE vs crowd-kit 1.4.2\n\n"
        f"Machine: {machine()}. Command: `.venv/bin/python bench/bench_glad_mace.py"
        f"{'' if args.items == 20_000 else f' --items {args.items}'}`. Truthset times: median "
        f"of {args.repeats} runs; crowd-kit: one run. Both with default settings; times include "
        "encoding the table. `s` = wall clock, `CPU s` = CPU time of the process (all its "
        "threads), the steadier figure on a shared machine.\n"
    )
    args.out.write_text(header + "\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
