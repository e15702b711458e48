"""PyTorch (GPU) Dawid–Skene and binary STAPLE beside the CPU classes.

Run (on a machine with a CUDA GPU and PyTorch; ``src`` on the path)::

    PYTHONPATH=src python3 bench/bench_gpu.py                 # 1M / 10M / 100M labels, STAPLE
    PYTHONPATH=src python3 bench/bench_gpu.py --sizes 1e6 --cpu-sizes 1e6 --skip-staple

Dawid–Skene: ``n`` simulated labels, 5 classes, 5 reads per item (``n/5`` items), 200 readers
with accuracy ``U(0.55, 0.95)`` and reader-specific wrong-class preferences (the simulation of
``bench/bench_aggregation_speed.py``), generated **on the device** so that host transfers do not
dominate. Each timing is one whole fit from the integer code arrays (index set-up, majority-vote
start, EM to convergence), after a warm-up fit, bracketed by ``torch.cuda.synchronize()``;
median of ``--repeats``. The posterior stays on the device; its copy to the host is timed
separately. The CPU row is :class:`truthset.quality.aggregation.DawidSkene` on the same codes
(``_fit_encoded``: the EM alone, no table encoding), median of 3.

STAPLE: 512×512×200 voxels, 5 readers (a random blob truth, each reader flipping voxels near
the boundary and at random), masks generated on the device; GPU fit with the maps kept on the
device, and the host copy timed separately; CPU :class:`truthset.quality.staple.STAPLE` on the
same masks as numpy arrays.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from truthset.quality.aggregation import DawidSkene
from truthset.quality.gpu import dawid_skene_torch_tensors, staple_torch
from truthset.quality.staple import STAPLE
from truthset.quality.table import EncodedLabels

N_READERS = 200
K = 5
READS = 5


def simulate(n_labels: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Integer codes (items, annotators, labels) and the truth, made on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    n_items = n_labels // READS
    priors = torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08], device=device)
    truth = torch.multinomial(priors, n_items, replacement=True, generator=gen)
    acc = 0.55 + 0.4 * torch.rand(N_READERS, device=device, generator=gen)
    pref = -torch.log(torch.rand(N_READERS, K - 1, device=device, generator=gen))
    cum = torch.cumsum(pref / pref.sum(1, keepdim=True), 1)
    items = torch.arange(n_items, device=device).repeat_interleave(READS)
    start = torch.randint(0, N_READERS, (n_items,), device=device, generator=gen)
    strides = torch.tensor([1, 3, 7, 9, 11, 13], device=device)
    stride = strides[torch.randint(0, 6, (n_items,), device=device, generator=gen)]
    readers = (start[:, None] + stride[:, None] * torch.arange(READS, device=device)) % N_READERS
    readers = readers.reshape(-1)
    del start, stride
    true_l = truth[items]
    correct = torch.rand(n_items * READS, device=device, generator=gen) < acc[readers]
    u = torch.rand(n_items * READS, device=device, generator=gen)
    offset = 1 + (u[:, None] > cum[readers]).sum(1)
    labels = torch.where(correct, true_l, (true_l + offset) % K)
    del correct, u, offset, true_l
    return {
        "items": items,
        "annotators": readers,
        "labels": labels,
        "truth": truth,
        "n_items": n_items,
    }


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of ``fn`` after one warm-up call (synchronised), and its last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_ds(n_labels: int, device: torch.device, repeats: int, variants: list[str]) -> list[dict]:
    data = simulate(n_labels, device)
    rows = []
    for variant in variants:
        method, _, mode = variant.partition(":")
        kwargs: dict[str, Any] = {"method": method}
        if mode.startswith("every"):
            kwargs["check_every"] = int(mode[5:])
        elif mode.startswith("fixed"):
            kwargs.update(tol=None, n_iter=int(mode[5:]))
        try:
            seconds, res = timed(
                lambda kw=kwargs: dawid_skene_torch_tensors(
                    data["items"],
                    data["annotators"],
                    data["labels"],
                    data["n_items"],
                    N_READERS,
                    K,
                    device=device,
                    dtype=torch.float32,
                    **kw,
                ),
                repeats,
                device,
            )
        except torch.OutOfMemoryError as exc:
            print(f"{n_labels:,} {variant}: out of memory ({exc})", flush=True)
            continue
        acc = float((res.posterior.argmax(1) == data["truth"]).float().mean())
        start = time.perf_counter()
        res.posterior.cpu().numpy()
        copy_s = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        row = {
            "labels": n_labels,
            "impl": f"torch {variant}",
            "seconds": seconds,
            "iters": res.n_iter,
            "acc": acc,
            "copy_s": copy_s,
            "peak_gib": peak,
        }
        print(row, flush=True)
        rows.append(row)
        del res
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return rows


def bench_ds_cpu(n_labels: int, device: torch.device) -> dict:
    data = simulate(n_labels, device)
    n_items = data["n_items"]
    enc = EncodedLabels(
        items=data["items"].cpu().numpy(),
        annotators=data["annotators"].cpu().numpy(),
        labels=data["labels"].cpu().numpy(),
        item_index=pd.RangeIndex(n_items),
        annotator_index=pd.RangeIndex(N_READERS),
        classes=pd.RangeIndex(K),
    )
    truth = data["truth"].cpu().numpy()
    gold = np.full(n_items, -1)
    times = []
    model = DawidSkene(dtype="float32")
    for _ in range(3):
        start = time.perf_counter()
        proba = model._fit_encoded(enc, gold)
        times.append(time.perf_counter() - start)
    row = {
        "labels": n_labels,
        "impl": "CPU DawidSkene float32",
        "seconds": statistics.median(times),
        "iters": model.n_iter_,
        "acc": float((proba.argmax(1) == truth).mean()),
        "copy_s": 0.0,
        "peak_gib": 0.0,
    }
    print(row, flush=True)
    return row


def blob_masks(shape: tuple[int, int, int], n_readers: int, device: torch.device) -> torch.Tensor:
    """Stacked boolean masks (R, *shape): a smooth random blob, each reader perturbed."""
    gen = torch.Generator(device=device).manual_seed(1)
    z, y, x = (torch.linspace(-1, 1, s, device=device) for s in shape)
    r2 = z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2
    out = []
    for r in range(n_readers):
        radius = 0.5 + 0.03 * r
        noise = torch.rand(shape, device=device, generator=gen) < 0.01 * (r + 1)
        out.append((r2 < radius**2) ^ noise)
    return torch.stack(out)


def bench_staple(device: torch.device, repeats: int, shape: tuple[int, int, int]) -> list[dict]:
    masks = blob_masks(shape, 5, device)
    seconds, res = timed(
        lambda: staple_torch(masks, device=device, keep_on_device=True), repeats, device
    )
    start = time.perf_counter()
    host = res.to_numpy()
    copy_s = time.perf_counter() - start
    rows = [
        {
            "impl": "torch staple_torch",
            "seconds": seconds,
            "iters": res.n_iter,
            "copy_s": copy_s,
        }
    ]
    print(rows[-1], flush=True)
    np_masks = [m.cpu().numpy() for m in masks]
    times = []
    cpu = None
    for _ in range(2):
        start = time.perf_counter()
        cpu = STAPLE().fit(np_masks)
        times.append(time.perf_counter() - start)
    assert cpu is not None
    diff = float(np.abs(cpu.probability - host.probability).max())
    rows.append(
        {
            "impl": "CPU STAPLE",
            "seconds": statistics.median(times),
            "iters": cpu.n_iter,
            "copy_s": 0.0,
            "max_diff_vs_gpu": diff,
        }
    )
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    """Run the benchmarks and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1e6,1e7,1e8")
    parser.add_argument("--cpu-sizes", default="1e6,1e7")
    parser.add_argument(
        "--variants",
        default="index,index:every5,sparse",
        help="method[:everyN|:fixedN], comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-staple", action="store_true")
    parser.add_argument("--staple-shape", default="200,512,512")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    smi = "cpu" if device.type != "cuda" else subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    print(f"device: {smi}; torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    for size in args.sizes.split(","):
        rows += bench_ds(int(float(size)), device, args.repeats, args.variants.split(","))
    for size in filter(None, args.cpu_sizes.split(",")):
        rows.append(bench_ds_cpu(int(float(size)), device))
    print("\n| labels | implementation | seconds per fit | iterations | accuracy | host copy s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in sorted(rows, key=lambda r: r["labels"]):
        print(
            f"| {r['labels']:,} | {r['impl']} | {r['seconds']:.4f} | {r['iters']} | "
            f"{r['acc']:.4f} | {r['copy_s']:.3f} |"
        )
    if not args.skip_staple:
        srows = bench_staple(
            device, args.repeats, tuple(int(v) for v in args.staple_shape.split(","))  # type: ignore[arg-type]
        )
        print("\n| STAPLE 512×512×200 × 5 readers | seconds | iterations | host copy s |")
        print("| --- | ---: | ---: | ---: |")
        for r in srows:
            print(f"| {r['impl']} | {r['seconds']:.4f} | {r['iters']} | {r['copy_s']:.3f} |")


if __name__ == "__main__":
    main()
