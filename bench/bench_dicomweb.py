"""Benchmark: DICOM import (de-identify + store + index) and DICOMweb over HTTP, Truthset
beside Orthanc with its DICOMweb plugin on the same files.

Run:  .venv/bin/python bench/bench_dicomweb.py [--slices 100] [--repeat 100]
      [--orthanc /usr/sbin/Orthanc] [--plugin /usr/share/orthanc/plugins/libOrthancDicomWeb.so]

Files: ``--slices`` copies of pydicom-data's 512 x 512 CT ``693_UNCR.dcm`` made into one series
(positions 1 mm apart). Truthset: ``import_items`` into a fresh SQLite workspace (read,
PS3.15 de-identification, blob write, instance index), then uvicorn on loopback with the
app and ``httpx`` sequential requests: QIDO-RS ``/studies``, WADO-RS one frame (native,
application/octet-stream), WADO-RS ``/rendered`` (PNG). Orthanc (Debian package, started by
this script with a temporary storage folder): ``POST /instances`` of the same files (it stores
them as they are: no de-identification), then the same three DICOMweb requests through its
plugin. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import uvicorn
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from truthset.api.app import create_app
from truthset.auth import memberships, tokens
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = "name: s\nkind: classification\nmode: single\nclasses: [{name: a}, {name: b}]\n"


def _series(folder: Path, n: int) -> list[Path]:
    src = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    series, study = generate_uid(), generate_uid()
    origin = [float(v) for v in src.ImagePositionPatient]
    paths = []
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k]
        ds.SliceThickness = "1"
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(samples), "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
            "mean_ms": round(1000 * statistics.fmean(ordered), 2)}


def _time(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return _stats(samples)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _dicomweb_requests(http: httpx.Client, base: str, headers: dict[str, str],
                       repeat: int) -> dict[str, object]:
    studies = http.get(f"{base}/studies", headers=headers).json()
    study = studies[0]["0020000D"]["Value"][0]
    instances = http.get(f"{base}/studies/{study}/instances", headers=headers).json()
    middle = instances[len(instances) // 2]
    series, sop = middle["0020000E"]["Value"][0], middle["00080018"]["Value"][0]
    url = f"{base}/studies/{study}/series/{series}/instances/{sop}"
    frame_accept = {**headers, "Accept": 'multipart/related; type="application/octet-stream"'}

    def frame() -> None:
        r = http.get(url + "/frames/1", headers=frame_accept)
        assert r.status_code == 200 and len(r.content) > 512 * 512 * 2

    def rendered() -> None:
        r = http.get(url + "/rendered", headers={**headers, "Accept": "image/png"})
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")

    def qido() -> None:
        assert http.get(f"{base}/studies", headers=headers).status_code == 200

    return {"qido_studies": _time(qido, repeat), "wado_frame": _time(frame, repeat),
            "wado_rendered": _time(rendered, repeat)}


def bench_truthset(paths: list[Path], repeat: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="truthset-bench-"))
    ws = Workspace.init(work / "ws")
    try:
        with ws.unit("bench") as s:
            project = projects.create_project(s, key="ct", name="ct", schema_text=SCHEMA)
            user = users.add_user(s, username="svc", role="annotator")
            memberships.add_member(s, project, user, "manager")
            token = tokens.create_token(s, user, name="bench").secret
        t0 = time.perf_counter()
        with ws.unit("bench") as s:
            summary = imports.import_items(s, ws.blobs, projects.get_project(s, "ct"), paths,
                                           vault=ws.vault)
        elapsed = time.perf_counter() - t0
        assert len(summary.ingested) == 1
        port = _port()
        server = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False,
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            with httpx.Client(timeout=30) as http:
                out = _dicomweb_requests(http, f"http://127.0.0.1:{port}/dicomweb/projects/ct",
                                         {"Authorization": f"Bearer {token}"}, repeat)
        finally:
            server.should_exit = True
            thread.join(10)
        return {"import_files_per_s": round(len(paths) / elapsed, 1),
                "import_s": round(elapsed, 2), **out}
    finally:
        ws.close()
        shutil.rmtree(work, ignore_errors=True)


def bench_orthanc(binary: str, plugin: str, paths: list[Path],
                  repeat: int) -> dict[str, object] | str:
    if not (shutil.which(binary) or os.path.exists(binary)):
        return f"Orthanc binary {binary} not found"
    if not os.path.exists(plugin):
        return f"Orthanc DICOMweb plugin {plugin} not found"
    work = Path(tempfile.mkdtemp(prefix="orthanc-bench-"))
    port = _port()
    config = {"Name": "bench", "StorageDirectory": str(work / "db"),
              "IndexDirectory": str(work / "db"), "HttpPort": port,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomServerEnabled": False, "HttpBindAddress": "127.0.0.1",
              "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (work / "config.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([binary, str(work / "config.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as http:
            for _ in range(100):
                try:
                    http.get(f"{base}/system")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                return "Orthanc did not start"
            t0 = time.perf_counter()
            for path in paths:
                assert http.post(f"{base}/instances", content=path.read_bytes()).status_code == 200
            elapsed = time.perf_counter() - t0
            out = _dicomweb_requests(http, f"{base}/dicom-web", {}, repeat)
        return {"import_files_per_s": round(len(paths) / elapsed, 1),
                "import_s": round(elapsed, 2), **out}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Run both sides and print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    parser.add_argument("--plugin", default="/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-series-"))
    try:
        paths = _series(folder, args.slices)
        result = {"slices": args.slices, "repeat": args.repeat,
                  "truthset": bench_truthset(paths, args.repeat),
                  "orthanc": bench_orthanc(args.orthanc, args.plugin, paths, args.repeat)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
