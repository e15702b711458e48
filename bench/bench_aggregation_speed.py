"""Dawid–Skene speed and memory: Truthset beside crowd-kit on simulated readers.

Run::

    .venv/bin/python bench/bench_aggregation_speed.py   # 1M vs crowd-kit; 10M memory
    .venv/bin/python bench/bench_aggregation_speed.py --skip-crowdkit

Simulation: ``n_items`` items with a true class drawn from skewed priors over 5 classes, each
read by ``reads`` distinct readers out of 200; reader ``w`` answers correctly with probability
``a_w ~ U(0.55, 0.95)`` and otherwise picks a wrong class with reader-specific preferences
(a Dirichlet row), so confusion matrices are genuinely non-uniform.

Memory is measured in a fresh subprocess (``resource.getrusage(...).ru_maxrss``: peak resident
set of the whole process, simulation and the pandas table included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd

from truthset.quality.aggregation import DawidSkene

N_READERS = 200
K = 5


def simulate(n_items: int, reads: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Integer long table ``item, annotator, label`` and the true class of each item."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(K, n_items, p=[0.35, 0.25, 0.2, 0.12, 0.08]).astype(np.int8)
    accuracy = rng.uniform(0.55, 0.95, N_READERS)
    wrong_pref = rng.dirichlet(np.ones(K - 1), size=N_READERS)  # preference among wrong classes
    n = n_items * reads
    items = np.repeat(np.arange(n_items, dtype=np.int64), reads)
    # distinct readers per item: a random offset plus a random stride coprime with 200
    start = rng.integers(0, N_READERS, n_items)
    stride = rng.choice([1, 3, 7, 9, 11, 13], n_items)
    readers = (start[:, None] + stride[:, None] * np.arange(reads)) % N_READERS
    readers = readers.ravel()
    del start, stride
    true_l = truth[items]
    correct = rng.random(n) < accuracy[readers]
    cum = np.cumsum(wrong_pref, axis=1)[readers]
    offset = 1 + (rng.random(n)[:, None] > cum).sum(axis=1)  # 1..K-1
    del cum
    labels = np.where(correct, true_l, (true_l + offset) % K).astype(np.int64)
    del correct, offset, true_l
    table = pd.DataFrame({"item": items, "annotator": readers, "label": labels})
    return table, truth


def accuracy(labels: pd.Series, truth: np.ndarray) -> float:
    """Accuracy of an ``item -> label`` series against the simulated truth."""
    idx = labels.index.to_numpy(dtype=np.int64)
    return float((labels.to_numpy(dtype=np.int64) == truth[idx]).mean())


def memory_child(n_items: int, reads: int, dtype: str) -> None:
    """Fit DS once and print JSON with time, peak RSS and accuracy (run in a subprocess)."""
    table, truth = simulate(n_items, reads)
    start = time.perf_counter()
    model = DawidSkene(dtype=dtype).fit(table)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "labels": len(table),
                "dtype": dtype,
                "seconds": seconds,
                "n_iter": model.n_iter_,
                "peak_gib": peak_kib / 2**20,
                "accuracy": accuracy(model.labels_, truth),
            }
        )
    )


def main() -> None:
    """Run the 1M comparison and the 10M memory check; print Markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--big-items", type=int, default=2_000_000)
    parser.add_argument("--skip-crowdkit", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("ITEMS", "READS", "DTYPE"))
    args = parser.parse_args()
    if args.child:
        memory_child(int(args.child[0]), int(args.child[1]), args.child[2])
        return

    table, truth = simulate(args.items, args.reads)
    print(f"{len(table):,} labels, {args.items:,} items, {N_READERS} readers, {K} classes")
    times, cpus = [], []
    for _ in range(5):
        start, cpu = time.perf_counter(), time.process_time()
        ours = DawidSkene().fit(table)
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    ours_s, ours_cpu = min(times), min(cpus)
    ours_acc = accuracy(ours.labels_, truth)
    print(f"truthset DS: {ours_s:.2f} s (best of 5), {ours.n_iter_} iterations, acc {ours_acc:.4f}")
    rows = [("Truthset DawidSkene", ours_s, ours_cpu, ours.n_iter_, ours_acc)]
    if not args.skip_crowdkit:
        from crowdkit.aggregation import DawidSkene as CrowdKitDS

        ck_table = table.rename(columns={"item": "task", "annotator": "worker"})
        warnings.simplefilter("ignore")
        start, cpu = time.perf_counter(), time.process_time()
        theirs = CrowdKitDS(n_iter=100).fit(ck_table)
        ck_s = time.perf_counter() - start
        ck_cpu = time.process_time() - cpu
        ck_acc = accuracy(theirs.labels_, truth)
        agree = float((theirs.labels_.reindex(ours.labels_.index) == ours.labels_).mean())
        print(
            f"crowd-kit DS: {ck_s:.2f} s (once), {len(theirs.loss_history_)} iterations, "
            f"acc {ck_acc:.4f}; labels agree on {agree:.4%}"
        )
        rows.append(
            ("crowd-kit 1.4.2 DawidSkene", ck_s, ck_cpu, len(theirs.loss_history_), ck_acc)
        )
    print()
    print("| implementation | seconds (wall) | CPU seconds | iterations | accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, s, c, it, acc in rows:
        print(f"| {name} | {s:.2f} | {c:.2f} | {it} | {acc:.4f} |")
    if len(rows) == 2:
        print(
            f"\nspeed-up: {rows[1][1] / rows[0][1]:.1f}x wall, {rows[1][2] / rows[0][2]:.1f}x CPU"
        )

    print()
    print("| labels | dtype | seconds | iterations | peak RSS (GiB) | accuracy |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for dtype in ("float64", "float32"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(args.big_items), str(args.reads), dtype],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {r['labels']:,} | {r['dtype']} | {r['seconds']:.1f} | {r['n_iter']} | "
            f"{r['peak_gib']:.2f} | {r['accuracy']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
