"""Benchmark: Krippendorff's alpha of Truthset against the ``krippendorff`` package.

Reliability data: ``annotators × items`` ratings on a 1..5 scale with a share of cells missing
(NaN), the layout both libraries take. Each library is timed on the same matrix (point estimate,
no bootstrap); the median of ``--repeat`` runs is printed with the two values, which must agree.

Run::

    .venv/bin/python bench/bench_agreement.py --annotators 1000 --items 100000 --repeat 3

A second part times the bootstrap: 1,000 resamples of alpha on ``--boot-items`` items.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import krippendorff
import numpy as np

from truthset.quality.agreement import krippendorff_alpha


def make_data(annotators: int, items: int, missing: float, seed: int) -> np.ndarray:
    """Ratings 1..5 around a per-item true value, ``missing`` share of cells NaN."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, size=items)
    noise = rng.integers(-1, 2, size=(annotators, items)) * (rng.random((annotators, items)) < 0.3)
    data = np.clip(truth[None, :] + noise, 1, 5).astype(np.float64)
    data[rng.random((annotators, items)) < missing] = np.nan
    return data


def ours_alpha(data: np.ndarray, level: str) -> float:
    """Truthset's alpha (point estimate)."""
    value = krippendorff_alpha(data, level=level, ci=None).value
    return float("nan") if value is None else value


def peer_alpha(data: np.ndarray, level: Any) -> float:
    """The ``krippendorff`` package's alpha."""
    return float(krippendorff.alpha(data, level_of_measurement=level))


def timed(fn: Callable[[], float], repeat: int) -> tuple[float, float, float]:
    """Median wall time of ``repeat`` calls, the value of the last, and the median CPU time
    (``process_time``, all threads of the process)."""
    times, cpus, value = [], [], float("nan")
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(times), value, statistics.median(cpus)


def main() -> None:
    """Parse arguments, run both libraries, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--missing", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--levels", default="nominal,interval")
    parser.add_argument("--boot-items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = make_data(args.annotators, args.items, args.missing, args.seed)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"krippendorff {importlib.metadata.version('krippendorff')}"
    )
    print(
        f"data: {args.annotators} annotators x {args.items} items, "
        f"{np.isnan(data).mean():.1%} missing, values 1..5; median of {args.repeat} runs\n"
    )
    print(
        "| level | truthset s (CPU s) | krippendorff pkg s (CPU s) | speed-up wall / CPU "
        "| truthset alpha | pkg alpha |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for level in args.levels.split(","):
        ours_t, ours, ours_c = timed(partial(ours_alpha, data, level), args.repeat)
        peer_t, peer, peer_c = timed(partial(peer_alpha, data, level), args.repeat)
        assert abs(ours - peer) < 1e-9, (level, ours, peer)
        print(
            f"| {level} | {ours_t:.2f} ({ours_c:.2f}) | {peer_t:.2f} ({peer_c:.2f}) "
            f"| {peer_t / ours_t:.1f}x / {peer_c / ours_c:.1f}x | {ours:.6f} | {peer:.6f} |"
        )

    boot = make_data(5, args.boot_items, args.missing, args.seed + 1)
    print(f"\nbootstrap: 1000 resamples, 5 annotators x {args.boot_items} items\n")
    print("| level | point + 1000 bootstraps (s) | alpha | 95% CI |")
    print("| --- | ---: | ---: | --- |")
    for level in ("nominal", "ordinal", "interval", "ratio"):
        start = time.perf_counter()
        res = krippendorff_alpha(boot, level=level, ci=0.95, n_boot=1000, random_state=0)
        took = time.perf_counter() - start
        assert res.value is not None and res.ci is not None
        print(f"| {level} | {took:.2f} | {res.value:.4f} | [{res.ci[0]:.4f}, {res.ci[1]:.4f}] |")


if __name__ == "__main__":
    main()
