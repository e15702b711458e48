"""Cost and accuracy of workflow policies: simulated readers, and replays of real crowd data.

Run::

    .venv/bin/python bench/bench_policies.py [--items 2000] [--seeds 5] [--first-seed 0]
        [--tune] [--match TEXT] [--datasets ...] [--jobs N] [--out FILE]

1. **Simulated** (the issue's set-up): 5 classes, 30 readers whose accuracies are drawn from
   Beta(6, 2) (mean 0.75), ``--items`` items with uniformly drawn true classes; each policy runs
   through :func:`truthset.workflow.simulate.run_policy` (the same ``decide()`` the services
   use) for ``--seeds`` seeds from ``--first-seed``. Baseline: ``consensus`` with k=5 and
   majority vote. Each seed draws the true classes, then the reader pool, then the calibration
   answers, so every policy of a seed meets the same readers and items (a paired comparison).
   A ``known accuracies`` row runs the adaptive rule with every reader's true accuracy in the
   posterior: the most any estimate of them can give with readers taking items as they come
   (``…, skill routing``: with routing too).
   Rows marked ``skill routing`` run the policy with ``routing: skill`` the way the task queue
   serves it (:func:`truthset.workflow.simulate.run_arrivals`): readers ask for work one at a
   time, uniformly at random, so every reader does the same share, and the open read each takes
   is the one their read is most likely to settle; rows marked ``queue order (arrivals)`` run
   the same arrivals with the queue's order, to show what routing alone changes.
2. **Replay** of the public crowd datasets in ``../shared/data/crowd`` (those with a reference):
   every policy asks for reads, and each read reveals the item's next recorded label (in a
   shuffled order, 3 shuffles from ``--first-seed``); an item that runs out of recorded labels is
   settled with what it has. Accuracy is over the items with a reference answer.

``--tune`` runs instead every setting tried while choosing the adaptive options (the grid
``TUNING``), on seeds 100–104 and shuffles 100–102 unless ``--first-seed`` says otherwise: the
settings reported by the default run were chosen there, never on the seeds they are reported on.

Prints Markdown tables (mean over seeds; labels = reads per item, calibration reads shown apart),
and for the simulated part a table **per pool**: each policy against k=5 majority vote on the
same seed's pool, with 95 % intervals over pools and the number of pools where both halves of
the issue's target hold. The label share a fixed ``target`` spends follows the pool (weak pools
need more reads per item), so the mean over a few seeds moves by a few hundredths from one block
of seeds to the next; use ``--seeds 30`` or more to judge a setting.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from truthset.domain.policy import Policy, parse_policy
from truthset.domain.schema import RiskLevel
from truthset.workflow.engine import ItemState, decide
from truthset.workflow.routing import ReaderModel
from truthset.workflow.simulate import (
    LabelSource,
    RecordedLabels,
    SimReader,
    SimulatedReaders,
    parse_readers,
    run_arrivals,
    run_policy,
)

CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
if not CROWD.is_dir():
    CROWD = Path(__file__).resolve().parents[1] / "tests" / "data" / "crowd"

BASELINE = "consensus k=5, mv"


def adaptive(m: int, k_max: int, target: float, method: str, **fields: str) -> str:
    """An adaptive policy's YAML (reads accepted at ``k_max``)."""
    extra = "".join(f"{key}: {value}\n" for key, value in fields.items())
    return (f"workflow: adaptive\nm: {m}\nk_max: {k_max}\ntarget: {target}\n"
            f"method: {method}\non_exhausted: accept\n{extra}")


#: ``reader_prior: empirical`` and ``class_prior: uniform`` (the adaptive posterior options).
SHRUNK = {"reader_prior": "empirical", "class_prior": "uniform"}
#: ``routing: skill`` (readers arriving one at a time; see the module docstring).
SKILL = {"routing": "skill"}
POLICIES: dict[str, str] = {
    "consensus k=3, mv": "workflow: consensus\nk: 3\ntarget: 0\n",
    BASELINE: "workflow: consensus\nk: 5\ntarget: 0\n",
    "adaptive m=2..7, onecoin 0.8": adaptive(2, 7, 0.8, "onecoin"),
    "adaptive m=2..7, onecoin 0.9": adaptive(2, 7, 0.9, "onecoin"),
    "adaptive m=2..5, mv 0.6": adaptive(2, 5, 0.6, "mv"),
    "adaptive m=2..7, mv 0.7": adaptive(2, 7, 0.7, "mv"),
    "adaptive m=2..7, onecoin 0.8, shrunk": adaptive(2, 7, 0.8, "onecoin", **SHRUNK),
    "adaptive m=2..7, onecoin 0.9, shrunk": adaptive(2, 7, 0.9, "onecoin", **SHRUNK),
    "adaptive m=2..7, onecoin 0.8, shrunk, skill routing": adaptive(2, 7, 0.8, "onecoin",
                                                                    **SHRUNK, **SKILL),
}
#: Calibration items read up front by every reader (estimates each reader's accuracy).
CALIBRATED: dict[str, tuple[str, int]] = {
    "adaptive m=2..7, onecoin 0.8 + 20 calibration": (POLICIES["adaptive m=2..7, onecoin 0.8"],
                                                       20),
    "adaptive m=1..7, onecoin 0.9 + 20 calibration": (adaptive(1, 7, 0.9, "onecoin"), 20),
    "adaptive m=1..7, onecoin 0.88, shrunk + 20 calibration": (
        adaptive(1, 7, 0.88, "onecoin", **SHRUNK), 20),
    "adaptive m=1..7, onecoin 0.9, shrunk + 20 calibration": (
        adaptive(1, 7, 0.9, "onecoin", **SHRUNK), 20),
}
#: The reported skill-routed rows (settings chosen on the tuning seeds), and the same policies
#: served in queue order through the same arrivals.
ROUTED: dict[str, tuple[str, int]] = {
    "adaptive m=1..7, onecoin 0.925, shrunk + 20 calibration, skill routing": (
        adaptive(1, 7, 0.925, "onecoin", **SHRUNK, **SKILL), 20),
    "adaptive m=1..7, onecoin 0.925, shrunk + 20 calibration, queue order (arrivals)": (
        adaptive(1, 7, 0.925, "onecoin", **SHRUNK), 20),
}
#: Rows of the adaptive rule with every reader's true accuracy in the posterior.
KNOWN_ACCURACIES: dict[str, tuple[str, int]] = {
    **{f"known accuracies, m=1..7, {t}": (adaptive(1, 7, t, "onecoin"), 0) for t in (0.88, 0.9)},
    "known accuracies, m=1..7, 0.94, skill routing": (adaptive(1, 7, 0.94, "onecoin", **SKILL),
                                                      0),
}


def _tuning() -> dict[str, tuple[str, int]]:
    """Every setting tried while choosing the adaptive options: name -> (policy, calibration)."""
    grid: dict[str, tuple[str, int]] = {BASELINE: (POLICIES[BASELINE], 0)}
    posteriors = {"ML": {}, "prior": {"reader_prior": "empirical"},
                  "uniform": {"class_prior": "uniform"}, "prior+uniform": SHRUNK}
    for label, fields in posteriors.items():
        for target in (0.84, 0.86, 0.88, 0.9, 0.92):
            grid[f"m=1, onecoin {label} {target} + 20 cal"] = (
                adaptive(1, 7, target, "onecoin", **fields), 20)
        for n_cal in (0, 20):
            for target in (0.8, 0.85, 0.9):
                grid[f"m=2, onecoin {label} {target}" + (" + 20 cal" if n_cal else "")] = (
                    adaptive(2, 7, target, "onecoin", **fields), n_cal)
    for target in (0.88, 0.9):
        grid[f"m=1, ds {target} + 20 cal"] = (adaptive(1, 7, target, "ds"), 20)
        grid[f"m=1, ds uniform {target} + 20 cal"] = (
            adaptive(1, 7, target, "ds", class_prior="uniform"), 20)
    for target in (0.9, 0.92, 0.925, 0.93, 0.935, 0.94, 0.95, 0.96):
        grid[f"m=1, onecoin prior+uniform {target} + 20 cal, skill routing"] = (
            adaptive(1, 7, target, "onecoin", **SHRUNK, **SKILL), 20)
        grid[f"m=1, onecoin ML {target} + 20 cal, skill routing"] = (
            adaptive(1, 7, target, "onecoin", **SKILL), 20)
    for target in (0.8, 0.85, 0.88, 0.9):
        grid[f"m=1, onecoin prior+uniform {target}, skill routing"] = (
            adaptive(1, 7, target, "onecoin", **SHRUNK, **SKILL), 0)
    for target in (0.9, 0.92, 0.94):
        grid[f"m=1, onecoin prior+uniform {target} + 20 cal, queue order (arrivals)"] = (
            adaptive(1, 7, target, "onecoin", **SHRUNK), 20)
    for target in (0.84, 0.86, 0.88, 0.9, 0.92):
        grid[f"known accuracies, m=1..7, {target}"] = (adaptive(1, 7, target, "onecoin"), 0)
    for target in (0.88, 0.9, 0.92, 0.94):
        grid[f"known accuracies, m=1..7, {target}, skill routing"] = (
            adaptive(1, 7, target, "onecoin", **SKILL), 0)
    for target in (0.8, 0.85, 0.9):
        grid[f"known accuracies, m=2..7, {target}"] = (adaptive(2, 7, target, "onecoin"), 0)
    return grid


TUNING = _tuning()
#: Replayed in tuning: the uncalibrated adaptive settings (replays have no calibration items).
TUNING_REPLAY: dict[str, str] = {
    BASELINE: POLICIES[BASELINE],
    **{f"m=2, onecoin {label} {t}": adaptive(2, 7, t, "onecoin", **fields)
       for label, fields in (("ML", {}), ("prior", {"reader_prior": "empirical"}),
                             ("uniform", {"class_prior": "uniform"}),
                             ("prior+uniform", SHRUNK))
       for t in (0.8, 0.9, 0.95)},
    "m=2, mv 0.6 (k_max 5)": POLICIES["adaptive m=2..5, mv 0.6"],
    "m=2, mv 0.7": POLICIES["adaptive m=2..7, mv 0.7"],
    **{f"m=2, onecoin prior+uniform {t}, skill routing": adaptive(2, 7, t, "onecoin", **SHRUNK,
                                                                  **SKILL)
       for t in (0.8, 0.85, 0.9, 0.95)},
}


def _pool(seed: int, items: int, n_cal: int, classes: list[str]
          ) -> tuple[dict[str, str], dict[str, str], list[SimReader], np.random.Generator]:
    """One seed's true classes, calibration answers and reader pool (the same for every
    policy: the pool is drawn before the calibration answers), and the generator for reads."""
    rng = np.random.default_rng(seed)
    truth = {f"i{k}": classes[int(rng.integers(5))] for k in range(items)}
    pool = parse_readers("30:beta(6,2)", rng)
    calib = {f"cal{k}": classes[int(rng.integers(5))] for k in range(n_cal)}
    return truth, calib, pool, rng


def known_accuracies(policy: Policy, classes: list[str], truth: dict[str, str],
                     pool: list[SimReader], rng: np.random.Generator) -> dict[str, float]:
    """The adaptive rule of ``policy`` with each reader's true accuracy in a one-coin posterior
    (equal class frequencies): what a perfect estimate of the readers would give. Reads come
    from the same :class:`SimulatedReaders` as in :func:`run_policy`, one round at a time."""
    source = SimulatedReaders(pool, classes, truth, rng)
    accuracy = {r.name: r.accuracy for r in pool}
    risks = dict.fromkeys(classes, RiskLevel.LOW)
    reads: dict[str, list[tuple[str, str]]] = {item: [] for item in truth}
    final: dict[str, str | None] = {}
    pending = list(truth)
    while pending:
        still = []
        for item in pending:
            got = reads[item]
            like = np.ones(len(classes))
            for reader, label in got:
                a = accuracy[reader]
                like *= np.where(np.array(classes) == label, a, (1 - a) / (len(classes) - 1))
            post = dict(zip(classes, (like / like.sum()).tolist(), strict=True)) if got else None
            decision = decide(policy, risks, ItemState(reads=tuple(got), posterior=post))
            if decision.action != "read":
                final[item] = decision.label
                continue
            for _ in range(decision.n):
                read = source.read(item, {r for r, _l in got}, 1)
                assert read is not None
                got.append((read[0], read[1]))
            still.append(item)
        pending = still
    return {"items": float(len(truth)), "calibration_labels": 0.0,
            "accuracy": float(np.mean([final[i] == truth[i] for i in truth])),
            "labels_per_item": float(np.mean([len(reads[i]) for i in truth]))}


def simulate_one(name: str, text: str, n_cal: int, items: int, seed: int) -> dict[str, object]:
    """One policy on one seed's pool: its summary row."""
    classes = [f"c{k}" for k in range(5)]
    risks = dict.fromkeys(classes, RiskLevel.LOW)
    policy = parse_policy(text)
    truth, calib, pool, rng = _pool(seed, items, n_cal, classes)
    started = time.perf_counter()
    if name.startswith("known accuracies") and name.endswith("skill routing"):
        source = SimulatedReaders(pool, classes, truth, rng)
        oracle = ReaderModel.from_accuracies(classes, {r.name: r.accuracy for r in pool})
        summary = run_arrivals(policy, classes, risks, list(truth), source,
                               readers=oracle).summary
    elif name.startswith("known accuracies"):
        summary = known_accuracies(policy, classes, truth, pool, rng)
    elif name.endswith("(arrivals)"):
        source = SimulatedReaders(pool, classes, {**truth, **calib}, rng)
        summary = run_arrivals(policy, classes, risks, list(truth), source,
                               calibration=calib).summary
    else:
        source = SimulatedReaders(pool, classes, {**truth, **calib}, rng)
        summary = run_policy(policy, classes, risks, list(truth), source,
                             calibration=calib).summary
    return {"policy": name, "seed": seed, **summary, "seconds": time.perf_counter() - started}


def simulated(items: int, seeds: list[int], runs: dict[str, tuple[str, int]],
              jobs: int = 1) -> pd.DataFrame:
    """Accuracy and labels per item of every policy in ``runs`` on simulated pools (``jobs``
    worker processes; every run is seeded, so the result does not depend on it)."""
    work = [(name, text, n_cal, items, seed) for name, (text, n_cal) in runs.items()
            for seed in seeds]
    if jobs <= 1:
        return pd.DataFrame([simulate_one(*w) for w in work])
    with ProcessPoolExecutor(jobs) as pool:
        return pd.DataFrame(list(pool.map(simulate_one, *zip(*work, strict=True))))


def per_pool(frame: pd.DataFrame) -> pd.DataFrame:
    """Each policy against k=5 majority vote **on the same pool** (seed): the mean and 95 %
    interval (mean ± 1.96 standard errors over pools) of the accuracy gain and of the share of
    k=5's labels, and the pools where both halves of the target hold (gain ≥ 0 and share ≤
    0.5)."""
    base = frame[frame["policy"] == BASELINE].set_index("seed")
    rows = []
    for name, group in frame[frame["policy"] != BASELINE].groupby("policy", sort=False):
        g = group.set_index("seed")
        gain = g["accuracy"] - base.loc[g.index, "accuracy"]
        share = g["labels_per_item"] / base.loc[g.index, "labels_per_item"]
        half = 1.96 / np.sqrt(len(g)) if len(g) > 1 else float("nan")
        rows.append({
            "policy": name, "pools": len(g),
            "gain_vs_k5": float(gain.mean()),
            "gain_95%": f"{gain.mean() - half * gain.std():+.4f} … "
                        f"{gain.mean() + half * gain.std():+.4f}",
            "labels_vs_k5": float(share.mean()),
            "labels_95%": f"{share.mean() - half * share.std():.3f} … "
                          f"{share.mean() + half * share.std():.3f}",
            "pools_meeting": int(((gain >= 0) & (share <= 0.5)).sum()),
        })
    return pd.DataFrame(rows).set_index("policy")


def replay(name: str, seeds: list[int], policies: dict[str, str]) -> pd.DataFrame:
    """Every policy of ``policies`` replayed on one recorded crowd dataset."""
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
    for policy_name, text in policies.items():
        policy: Policy = parse_policy(text)
        for seed in seeds:
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
    parser.add_argument("--first-seed", type=int, default=None,
                        help="first seed (default 0; 100 with --tune)")
    parser.add_argument("--tune", action="store_true",
                        help="run the tuning grid instead of the reported policies")
    parser.add_argument("--match", default=None,
                        help="run only the settings whose name contains this text (and the "
                             "baseline)")
    parser.add_argument("--datasets", nargs="*",
                        default=["snow2008_rte", "snow2008_temp", "adult_ipeirotis"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the simulated part (results do not change)")
    args = parser.parse_args()
    first = args.first_seed if args.first_seed is not None else (100 if args.tune else 0)
    seeds = list(range(first, first + args.seeds))
    runs = TUNING if args.tune else {**{n: (t, 0) for n, t in POLICIES.items()}, **CALIBRATED,
                                     **ROUTED, **KNOWN_ACCURACIES}
    if args.match:
        runs = {n: v for n, v in runs.items() if args.match in n or n == BASELINE}
    started = time.perf_counter()
    what = "Tuning grid" if args.tune else "Simulated"
    match = f" --match {args.match!r}" if args.match else ""
    parts = [f"Machine: {platform.processor() or platform.machine()}, Python "
             f"{platform.python_version()}; `python bench/bench_policies.py --items {args.items}"
             f" --seeds {args.seeds} --first-seed {first}{' --tune' if args.tune else ''}"
             f"{match}`; load average before: "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"]
    if seeds:  # --seeds 0: replays only
        raw = simulated(args.items, seeds, runs, args.jobs)
        sim = summarise(raw, ["policy"])
        parts += [f"### {what}: 5 classes, 30 readers ~ Beta(6,2), {args.items} items, "
                  f"seeds {seeds[0]}–{seeds[-1]}\n", markdown(sim),
                  f"\n#### Per pool, against k=5 majority vote on the same pool "
                  f"(seeds {seeds[0]}–{seeds[-1]})\n", markdown(per_pool(raw))]
    if args.datasets:
        shuffles = list(range(first, first + 3))
        replayed = TUNING_REPLAY if args.tune else POLICIES
        if args.match:
            replayed = {n: t for n, t in replayed.items() if args.match in n or n == BASELINE}
        frames = [replay(name, shuffles, replayed) for name in args.datasets]
        rep = summarise(pd.concat(frames), ["dataset", "policy"])
        parts += [f"\n### Replay of recorded crowd labels (shuffles {shuffles[0]}–"
                  f"{shuffles[-1]})\n", markdown(rep)]
    parts.append(f"\nTotal time {time.perf_counter() - started:.0f} s; load average after: "
                 f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
