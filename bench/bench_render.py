"""Benchmark: one 512x512 CT slice to PNG (p50/p95), Truthset vs Orthanc's /rendered.

Run:  .venv/bin/python bench/bench_render.py [--repeat 200] [--orthanc /usr/sbin/Orthanc]

Truthset is timed end to end from the bytes already read into a DicomImage: decode the
native pixels, modality LUT, window (file window), 8-bit, PNG encode. Orthanc (if its binary
is present) is started on 127.0.0.1 only with a throw-away storage folder, the same file is
uploaded, and ``GET /instances/{id}/rendered`` (PNG) is timed over HTTP on the loopback, so
its numbers include HTTP and Orthanc's own decode cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from truthset.imaging.dicom import read_dicom
from truthset.imaging.render import render_dicom


def _ct512() -> str:
    for name in ("693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm"):
        path = get_testdata_file(name)
        if path:
            return str(path)
    raise SystemExit("no 512x512 CT test file installed")


def _stats(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {
        "n": len(samples),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "mean_ms": round(statistics.fmean(arr), 2),
    }


def bench_truthset(path: str, repeat: int) -> dict[str, float]:
    image = read_dicom(path)
    render_dicom(image)  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        render_dicom(image)
        samples.append(time.perf_counter() - t0)
    return _stats(samples)


def bench_orthanc(binary: str, path: str, repeat: int) -> dict[str, float] | str:
    if not shutil.which(binary) and not os.path.exists(binary):
        return f"Orthanc binary {binary} not found"
    work = Path(tempfile.mkdtemp(prefix="orthanc-bench-"))
    port = 18042
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpBindAddress": "127.0.0.1",
        "Plugins": [],
    }
    (work / "config.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([binary, str(work / "config.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/system", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            return "Orthanc did not start"
        data = Path(path).read_bytes()
        request = urllib.request.Request(f"{base}/instances", data=data, method="POST")
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        url = f"{base}/instances/{answer['ID']}/rendered"
        urllib.request.urlopen(url, timeout=10).read()  # warm-up
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=10).read()
            samples.append(time.perf_counter() - t0)
        assert body.startswith(b"\x89PNG")
        return _stats(samples)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    args = parser.parse_args()
    path = _ct512()
    image = read_dicom(path)
    print(
        f"file: {Path(path).name} {image.info.rows}x{image.info.columns} "
        f"{image.info.transfer_syntax_name}"
    )
    print("truthset render_dicom -> PNG:", bench_truthset(path, args.repeat))
    print("orthanc /instances/{id}/rendered:", bench_orthanc(args.orthanc, path, args.repeat))


if __name__ == "__main__":
    main()
