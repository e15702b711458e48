"""Cost and accuracy of workflow policies: simulated readers, and replays of real crowd data.

Run::

    .venv/bin/python bench/bench_policies.py [--items 2000] [--seeds 5] [--out FILE]

1. **Simulated** (the issue's set-up): 5 classes, 30 readers whose accuracies are drawn from
   Beta(6, 2) (mean 0.75), ``--items`` items with uniformly drawn true classes; each policy runs
   through :func:`truthset.workflow.simulate.run_policy` (the same ``decide()`` the services
   use) for ``--seeds`` seeds. Baseline: ``consensus`` with k=5 and majority vote.
2. **Replay** of the public crowd datasets in ``../shared/data/crowd`` (those with a reference):
   every policy asks for reads, and each read reveals the item's next recorded label (in a
   shuffled order, 3 seeds); an item that runs out of recorded labels is settled with what it
   has. Accuracy is over the items with a reference answer.

Prints Markdown tables (mean over seeds; labels = reads per item, calibration reads shown apart).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from truthset.domain.policy import Policy, parse_policy
from truthset.domain.schema import RiskLevel
from truthset.workflow.simulate import (
    LabelSource,
    RecordedLabels,
    SimulatedReaders,
    parse_readers,
    run_policy,
)

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
if not CROWD.is_dir():
    CROWD = Path(__file__).resolve().parents[1] / "tests" / "data" / "crowd"

BASELINE = "consensus k=5, mv"
POLICIES: dict[str, str] = {
    "consensus k=3, mv": "workflow: consensus\nk: 3\ntarget: 0\n",
    BASELINE: "workflow: consensus\nk: 5\ntarget: 0\n",
    "adaptive m=2..7, onecoin 0.8": "workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.8\n"
                                    "method: onecoin\non_exhausted: accept\n",
    "adaptive m=2..7, onecoin 0.9": "workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.9\n"
                                    "method: onecoin\non_exhausted: accept\n",
    "adaptive m=2..5, mv 0.6": "workflow: adaptive\nm: 2\nk_max: 5\ntarget: 0.6\n"
                               "method: mv\non_exhausted: accept\n",
    "adaptive m=2..7, mv 0.7": "workflow: adaptive\nm: 2\nk_max: 7\ntarget: 0.7\n"
                               "method: mv\non_exhausted: accept\n",
}
#: Calibration items read up front by every reader (estimates each reader's accuracy).
CALIBRATED = {
    "adaptive m=2..7, onecoin 0.8 + 20 calibration": (POLICIES["adaptive m=2..7, onecoin 0.8"],
                                                       20),
    "adaptive m=1..7, onecoin 0.9 + 20 calibration": (
        "workflow: adaptive\nm: 1\nk_max: 7\ntarget: 0.9\nmethod: onecoin\n"
        "on_exhausted: accept\n", 20),
}


def simulated(items: int, seeds: int) -> pd.DataFrame:
    """Mean accuracy and labels per item of every policy over ``seeds`` simulated pools."""
    rows = []
    classes = [f"c{k}" for k in range(5)]
    risks = dict.fromkeys(classes, RiskLevel.LOW)
    runs: dict[str, tuple[str, int]] = {name: (text, 0) for name, text in POLICIES.items()}
    runs.update(CALIBRATED)
    for name, (text, n_cal) in runs.items():
        policy = parse_policy(text)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            truth = {f"i{k}": classes[int(rng.integers(5))] for k in range(items)}
            calib = {f"cal{k}": classes[int(rng.integers(5))] for k in range(n_cal)}
            pool = parse_readers("30:beta(6,2)", rng)
            source = SimulatedReaders(pool, classes, {**truth, **calib}, rng)
            started = time.perf_counter()
            result = run_policy(policy, classes, risks, list(truth), source, calibration=calib)
            rows.append({"policy": name, "seed": seed, **result.summary,
                         "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows)


def replay(name: str, seeds: int) -> pd.DataFrame:
    """Every policy replayed on one recorded crowd dataset."""
    labels = pd.read_csv(CROWD / name / "labels.csv", dtype=str)
    truth_frame = pd.read_csv(CROWD / name / "truth.csv", dtype=str)
    truth = dict(zip(truth_frame["item"], truth_frame["label"], strict=True))
    labels = labels.drop_duplicates(["item", "annotator"], keep="last")
    if name == "adult_ipeirotis":  # score only the items with a reference answer
        labels = labels[labels["item"].isin(truth)]
    classes = sorted(set(labels["label"]))
    items = sorted(set(labels["item"]))
    risks = dict.fromkeys(classes, RiskLevel.LOW)
    rows = []
    for policy_name, text in POLICIES.items():
        policy: Policy = parse_policy(text)
        for seed in range(seeds):
            source: LabelSource = RecordedLabels(labels, truth, np.random.default_rng(seed))
            result = run_policy(policy, classes, risks, items, source)
            rows.append({"dataset": name, "policy": policy_name, "seed": seed,
                         **result.summary})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean (and sd of accuracy) over seeds, with labels relative to the baseline."""
    out = frame.groupby(by, sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
        labels_per_item=("labels_per_item", "mean"),
        calibration_per_item=("calibration_labels", "mean"),
        items=("items", "first"),
    )
    out["calibration_per_item"] = out["calibration_per_item"] / out["items"]
    base_key = (BASELINE,) if by == ["policy"] else None
    if base_key is not None:
        base = out.loc[BASELINE, "labels_per_item"]
        out["labels_vs_k5"] = out["labels_per_item"] / base
    else:
        base_labels = out.xs(BASELINE, level="policy")["labels_per_item"]
        out["labels_vs_k5"] = [v / base_labels[d] for (d, _p), v
                               in out["labels_per_item"].items()]
    return out.drop(columns="items")


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table with 3 decimals."""
    data = frame.reset_index()
    head = "| " + " | ".join(data.columns) + " |\n|" + "---|" * len(data.columns) + "\n"
    fmt: Callable[[object], str] = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n"
                          for row in data.itertuples(index=False))


def main() -> None:
    """Run both parts and print (or write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="*",
                        default=["snow2008_rte", "snow2008_temp", "adult_ipeirotis"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    sim = summarise(simulated(args.items, args.seeds), ["policy"])
    parts = [f"Machine: {platform.processor() or platform.machine()}, Python "
             f"{platform.python_version()}; `python bench/bench_policies.py --items {args.items}"
             f" --seeds {args.seeds}`\n",
             f"### Simulated: 5 classes, 30 readers ~ Beta(6,2), {args.items} items, "
             f"{args.seeds} seeds\n", markdown(sim)]
    if args.datasets:
        frames = [replay(name, 3) for name in args.datasets]
        rep = summarise(pd.concat(frames), ["dataset", "policy"])
        parts += ["\n### Replay of recorded crowd labels (3 shuffles)\n", markdown(rep)]
    parts.append(f"\nTotal time {time.perf_counter() - started:.0f} s.\n")
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
