"""Benchmark: label-error detection against cleanlab, and per-image drafting cost.

1. Confident learning (``truthset.quality.label_errors``) against cleanlab 2.x on the same
   synthetic out-of-sample probabilities (``n`` items, ``k`` classes, 15 % of labels flipped):
   time of ``find_label_issues`` on each side, overlap of the flagged sets, and the bootstrap
   noise-rate interval's cost.
2. Drafting adapters on a 512 x 512 image: the classical segmenter, and an ONNX 3x3
   convolution model (built here with ``onnx.helper``) on ONNX Runtime's CPU provider.

Times are the median of ``--repeats`` runs (wall and CPU time: the machine is shared). Run::

    .venv/bin/python bench/bench_prelabel.py            # n = 20000, k = 10
    .venv/bin/python bench/bench_prelabel.py --n 2000   # quick

Writes ``docs/_bench_prelabel.md`` (``--out``) and prints the same table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeats`` calls, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), result


def noisy(n: int, k: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Given labels and out-of-sample probabilities with ``noise`` of labels flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 2.5
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    y = true.copy()
    flip = rng.random(n) < noise
    y[flip] = (y[flip] + rng.integers(1, k, flip.sum())) % k
    return y, p


def onnx_conv(path: Path) -> bytes:
    """A 3x3 convolution to two channels (background / foreground)."""
    import onnx
    from onnx import TensorProto, helper

    w = np.zeros((2, 1, 3, 3), np.float32)
    w[0] = -1 / 9
    w[1] = 1 / 9
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, None, None])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 3, 3], w.ravel().tolist()),
         helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path.read_bytes()


def main() -> None:
    """Run the benchmark and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/_bench_prelabel.md"))
    args = parser.parse_args()

    from cleanlab.filter import find_label_issues as cl_find

    from truthset.prelabel.adapters import ClassicalSegmenter, OnnxAdapter
    from truthset.prelabel.output import check_output
    from truthset.quality import label_errors as le

    y, p = noisy(args.n, args.k, 0.15)
    ours_w, ours_c, ours = timed(lambda: le.find_label_issues(y, p), args.repeats)
    theirs_w, theirs_c, theirs = timed(lambda: cl_find(y, p), args.repeats)
    jaccard = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
    boot_w, boot_c, _ = timed(lambda: le.noise_rates(y, p, n_boot=200), 1)

    rng = np.random.default_rng(1)
    image = (rng.random((512, 512)) * 60).astype(np.uint8)
    for _ in range(20):
        r, c = rng.integers(20, 490, 2)
        image[r - 10:r + 10, c - 10:c + 10] = 220
    seg = ClassicalSegmenter("mask", {"thresholds": {"lesion": [0.5, 1.0]}, "min_size": 20})
    cls_w, cls_c, raw = timed(lambda: check_output(
        seg.predict(image), kind="mask", registered=["lesion"], image_shape=image.shape),
        args.repeats)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxAdapter(onnx_conv(Path(tmp) / "m.onnx"), "mask",
                           {"classes": ["background", "lesion"]})
    onnx_w, onnx_c, _ = timed(lambda: check_output(
        onnx.predict(image), kind="mask", registered=["lesion"], image_shape=image.shape),
        args.repeats)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Pre-labelling and label-error detection benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {load:.1f} (shared machine). "
        f"Command: `.venv/bin/python bench/bench_prelabel.py --n {args.n} --k {args.k}`. "
        f"Median of {args.repeats} runs.",
        "",
        "| what | Truthset wall s | Truthset CPU s | peer | peer wall s | peer CPU s | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| find_label_issues, n={args.n}, k={args.k} | {ours_w:.3f} | {ours_c:.3f} | "
        f"cleanlab {_version('cleanlab')} | {theirs_w:.3f} | {theirs_c:.3f} | "
        f"Jaccard {jaccard:.3f} ({int(ours.sum())} vs {int(theirs.sum())} flagged) |",
        f"| noise rates + 200-resample bootstrap CI | {boot_w:.3f} | {boot_c:.3f} | — | — | — "
        "| — |",
        f"| classical segmenter, 512x512, 20 blobs | {cls_w:.4f} | {cls_c:.4f} | — | — | — | "
        f"{len(raw.objects)} objects |",
        f"| ONNX Runtime CPU, 3x3 conv, 512x512 (+ checks) | {onnx_w:.4f} | {onnx_c:.4f} | — "
        f"| — | — | device {onnx.device} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text, encoding="utf-8")


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
