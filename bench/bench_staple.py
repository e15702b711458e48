"""Benchmark: Truthset's STAPLE and mask metrics against SimpleITK on a large volume.

Synthetic readers: one ellipsoid, perturbed per reader (centre shifted by a few voxels, radii
scaled by a few percent, 0.1 % of voxels flipped at random). Times are the median of
``--repeats`` runs in this process; the machine is shared, so the load average is recorded.

Run::

    .venv/bin/python bench/bench_staple.py                       # 512 x 512 x 200, 5 readers
    .venv/bin/python bench/bench_staple.py --shape 128 128 50    # quick

Writes ``docs/_bench_staple.md`` (``--out``) and prints the same table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import SimpleITK as sitk  # noqa: N813

from truthset.quality.masks import mask_metrics
from truthset.quality.staple import STAPLE

T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T, float]:
    """Median wall time of ``repeats`` calls, the last result, and the median CPU time
    (``process_time``: every thread of this process, so SimpleITK's worker threads count)."""
    times, cpus = [], []
    result: Any = None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(times), result, statistics.median(cpus)


def make_readers(
    shape: tuple[int, int, int], n: int, seed: int, flip: float = 0.001
) -> list[np.ndarray]:
    """One perturbed ellipsoid per reader, plus a sprinkle of isolated errors."""
    rng = np.random.default_rng(seed)
    grids = [np.arange(s, dtype=np.float32) for s in shape]
    centre = np.array(shape, dtype=float) / 2
    radii = np.array(shape, dtype=float) / 4
    out = []
    for _ in range(n):
        c = centre + rng.normal(0, 2.0, 3)
        r = radii * (1 + rng.normal(0, 0.04, 3))
        acc = ((grids[0] - c[0]) / r[0]) ** 2
        m = acc[:, None, None] + (((grids[1] - c[1]) / r[1]) ** 2)[None, :, None]
        m = m + (((grids[2] - c[2]) / r[2]) ** 2)[None, None, :]
        mask = m <= 1
        del m
        flips = rng.integers(0, mask.size, int(mask.size * flip))
        mask.reshape(-1)[flips] ^= True
        out.append(mask)
    return out


def cpu_model() -> str:
    """``Model name`` line of lscpu, or the platform processor."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    """Run the benchmark and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200])
    parser.add_argument("--readers", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 2.5])
    parser.add_argument("--out", type=Path, default=Path("docs/_bench_staple.md"))
    args = parser.parse_args()
    shape = tuple(args.shape)
    spacing = tuple(args.spacing)

    masks = list(make_readers(shape, args.readers, seed=0))  # type: ignore[arg-type]
    load_before = os.getloadavg()

    # --- STAPLE
    def ours() -> Any:
        return STAPLE().fit(masks)

    images = []
    for m in masks:
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(spacing[::-1])
        images.append(img)
    state: dict[str, Any] = {}

    def theirs() -> np.ndarray:
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(1.0)
        out = f.Execute(images)
        state["filter"] = f
        state["image"] = out  # the array view below is only valid while the image lives
        return sitk.GetArrayViewFromImage(out)

    t_ours, res, c_ours = timed(ours, args.repeats)
    t_sitk, prob_sitk, c_sitk = timed(theirs, args.repeats)
    f = state["filter"]
    prob_diff = float(np.abs(res.probability - prob_sitk).max())
    sens_diff = float(np.abs(res.sensitivity - np.asarray(f.GetSensitivity())).max())
    spec_diff = float(np.abs(res.specificity - np.asarray(f.GetSpecificity())).max())
    cons_diff = int(np.count_nonzero(res.consensus != (prob_sitk > 0.5)))
    del prob_sitk, state["filter"], state["image"]

    # --- metrics between two clean readers (no flipped voxels: ITK measures between voxel
    # sets, Truthset between surfaces; they agree for solid convex objects, not for holes)
    masks.clear()
    a, b = make_readers(shape, 2, seed=0, flip=0.0)  # type: ignore[arg-type]
    images = []
    for m in (a, b):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(spacing[::-1])
        images.append(img)

    def ours_metrics() -> Any:
        return mask_metrics(a, b, spacing)

    def sitk_metrics() -> tuple[float, float, float]:
        hd = sitk.HausdorffDistanceImageFilter()
        hd.Execute(images[0], images[1])
        ov = sitk.LabelOverlapMeasuresImageFilter()
        ov.Execute(images[0], images[1])
        return hd.GetHausdorffDistance(), ov.GetDiceCoefficient(), ov.GetJaccardCoefficient()

    t_m_ours, m, c_m_ours = timed(ours_metrics, args.repeats)
    t_m_sitk, (hd_s, dice_s, jac_s), c_m_sitk = timed(sitk_metrics, args.repeats)
    load_after = os.getloadavg()

    command = "python bench/bench_staple.py " + " ".join(
        [
            f"--shape {' '.join(map(str, shape))}",
            f"--readers {args.readers}",
            f"--repeats {args.repeats}",
            f"--spacing {' '.join(map(str, spacing))}",
        ]
    )
    voxels = int(np.prod(shape))
    lines = [
        "## STAPLE and mask metrics vs SimpleITK",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared: load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after)",
        f"- SimpleITK {sitk.Version.VersionString()} (ITK {sitk.Version.ITKVersionString()}), "
        f"numpy {np.__version__}; SimpleITK default threads: "
        f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}",
        f"- command: `{command}`",
        f"- data: {shape[0]} x {shape[1]} x {shape[2]} = {voxels / 1e6:.1f} M voxels, "
        f"{args.readers} readers (perturbed ellipsoids, 0.1 % voxels flipped), "
        f"spacing {spacing}",
        f"- time: median of {args.repeats} runs, inputs already in memory; wall clock, and in "
        "brackets CPU time of the process (all threads)",
        "",
        "| task | Truthset | SimpleITK | agreement |",
        "| --- | ---: | ---: | --- |",
        f"| binary STAPLE ({res.n_iter} EM iterations; SimpleITK {f.GetElapsedIterations()}) "
        f"| {t_ours:.2f} s ({c_ours:.2f}) | {t_sitk:.2f} s ({c_sitk:.2f}) "
        f"| max abs prob diff {prob_diff:.1e}; "
        f"sens {sens_diff:.1e}, spec {spec_diff:.1e}; consensus voxels differing: {cons_diff} |",
        f"| Dice + IoU + Hausdorff + HD95 + ASSD, 2 clean ellipsoids (Truthset) / Hausdorff + "
        f"overlap filters (SimpleITK) | {t_m_ours:.2f} s ({c_m_ours:.2f}) | "
        f"{t_m_sitk:.2f} s ({c_m_sitk:.2f}) | "
        f"HD {m.hausdorff:.4f} vs {hd_s:.4f} mm; Dice {m.dice:.6f} vs {dice_s:.6f}; "
        f"IoU {m.iou:.6f} vs {jac_s:.6f} |",
        "",
        f"Speed-up (wall): STAPLE {t_sitk / t_ours:.1f}x, metrics {t_m_sitk / t_m_ours:.1f}x "
        f"(CPU: {c_sitk / c_ours:.1f}x, {c_m_sitk / c_m_ours:.1f}x); Truthset also computes "
        "HD95 and ASSD in its time.",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
