"""Helpers of the web application tests: a live server on a fresh workspace, system Chromium.

The browser tests drive Debian's ``chromium`` through Playwright (``executable_path``; never a
downloaded browser). They skip when either is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from truthset.demo_web import (
    BOX_SCHEMA,
    CONSENSUS_POLICY,
    FINDINGS_SCHEMA,
    GUIDELINE,
    REVIEW_POLICY,
)

__all__ = ["BOX_SCHEMA", "CONSENSUS_POLICY", "FINDINGS_SCHEMA", "GUIDELINE", "REVIEW_POLICY"]

#: Password of every test user.
PASSWORD = "correct horse battery staple"

PEOPLE = (("ana", "annotator", 1), ("ben", "annotator", 1), ("rita", "reviewer", 2),
          ("sam", "adjudicator", 3), ("max", "manager", 2), ("audrey", "auditor", 1))


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    """Skip unless Playwright and a system Chromium are both present; return its path."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    path = os.environ.get("TRUTHSET_CHROMIUM") or chromium_path()
    if not path:
        pytest.skip("no system chromium (apt-get install chromium)")
    return path


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A uvicorn server in a thread."""

    url: str
    workspace: Any


@contextmanager
def live_server(workspace: Any) -> Iterator[LiveServer]:
    """Serve ``create_app(workspace)`` on a free port until the block ends."""
    import uvicorn

    from truthset.api.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(workspace), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", workspace)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def build_box_project(root: Path, *, key: str = "lesions") -> Any:
    """A workspace with a box-schema project, one de-identified CT (DICOM) item, and users
    ``ana`` and ``ben`` (annotators), ``rita`` (reviewer), ``sam`` (adjudicator), ``max``
    (manager), ``audrey`` (auditor), all with :data:`PASSWORD`."""
    import pydicom.examples

    from truthset.auth.memberships import add_member
    from truthset.workspace import projects, users
    from truthset.workspace.medical import Source, ingest_medical
    from truthset.workspace.workspace import Workspace

    saved = {k: os.environ.pop(k) for k in ("TRUTHSET_DATABASE_URL", "TRUTHSET_BLOB_URL")
             if k in os.environ}
    try:
        workspace = Workspace.init(root / "workspace")
    finally:
        os.environ.update(saved)
    with workspace.unit("test") as s:
        project = projects.create_project(s, key=key, name="Lung lesions (test)",
                                          schema_text=BOX_SCHEMA, guideline_text=GUIDELINE)
        for name, role, tier in PEOPLE:
            user = users.add_user(s, username=name, role=role, tier=tier, password=PASSWORD,
                                  display_name=name.title())
            add_member(s, project, user, role)
        path = Path(str(pydicom.examples.get_path("ct")))
        report = ingest_medical(s, workspace.blobs, workspace.vault, project,
                                [Source(name=path.name, data=path.read_bytes())])
        assert report.ingested, report.refused
    return workspace


def add_workflow_project(workspace: Any, *, key: str, policy: str,
                         schema: str = FINDINGS_SCHEMA) -> int:
    """Add a project (a classification schema unless ``schema`` says otherwise) run by the
    workflow ``policy`` (same users, same CT); enqueue its item and return the item id."""
    import pydicom.examples

    from truthset.auth.memberships import add_member
    from truthset.store.models import Item
    from truthset.workflow import policies, queue
    from truthset.workspace import projects, users
    from truthset.workspace.medical import Source, ingest_medical

    with workspace.unit("test") as s:
        project = projects.create_project(s, key=key, name=f"Findings ({key})",
                                          schema_text=schema, guideline_text=GUIDELINE)
        for name, role, _tier in PEOPLE:
            add_member(s, project, users.get_user(s, name), role)
        path = Path(str(pydicom.examples.get_path("ct")))
        report = ingest_medical(s, workspace.blobs, workspace.vault, project,
                                [Source(name=path.name, data=path.read_bytes())])
        assert report.ingested, report.refused
        policies.set_policy(s, project, policy, source="test policy")
        queue.enqueue(s, project, None)
        item = s.query(Item).filter(Item.project_id == project.id).one()
        return int(item.id)


def start_workflow(workspace: Any, *, key: str, policy: str) -> None:
    """Run project ``key`` by the workflow ``policy`` and queue every item."""
    from truthset.workflow import policies, queue
    from truthset.workspace import projects

    with workspace.unit("test") as s:
        project = projects.get_project(s, key)
        policies.set_policy(s, project, policy, source="test policy")
        queue.enqueue(s, project, None)


def series_sources(n_slices: int = 12, size: int = 64) -> list[Any]:
    """A synthetic CT series (a bright ball in a dim box), ``n_slices`` axial slices 2 mm apart,
    as import sources: enough geometry for the three-plane (MPR) view."""
    import numpy as np
    import pydicom.examples
    from pydicom.uid import generate_uid

    from truthset.workspace.medical import Source

    template = pydicom.examples.ct
    series, study = generate_uid(), generate_uid()
    z, y, x = np.mgrid[0:n_slices, 0:size, 0:size]
    centre = size / 2
    ball = (x - centre) ** 2 + (y - centre) ** 2 + ((z - n_slices / 2) * 4) ** 2 < (size / 3) ** 2
    volume = (ball * 1000 + 100).astype(np.int16)
    out = []
    for k in range(n_slices):
        ds = template.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.InstanceNumber = k + 1
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = volume[k].tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(Source(name=f"slice{k:02d}.dcm", data=buffer.getvalue()))
    return out


def add_series_project(workspace: Any, *, key: str = "volumes") -> int:
    """A box-schema project holding one synthetic CT series (see :func:`series_sources`);
    returns the item id."""
    from truthset.auth.memberships import add_member
    from truthset.store.models import Item
    from truthset.workspace import projects, users
    from truthset.workspace.medical import ingest_medical

    with workspace.unit("test") as s:
        project = projects.create_project(s, key=key, name="Volumes (test)",
                                          schema_text=BOX_SCHEMA, guideline_text=GUIDELINE)
        for name, role, _tier in PEOPLE:
            add_member(s, project, users.get_user(s, name), role)
        report = ingest_medical(s, workspace.blobs, workspace.vault, project, series_sources())
        assert report.ingested, report.refused
        item = s.query(Item).filter(Item.project_id == project.id).one()
        return int(item.id)
