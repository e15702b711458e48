"""Helpers of the web application tests: a live server on a fresh workspace, system Chromium.

The browser tests drive Debian's ``chromium`` through Playwright (``executable_path``; never a
downloaded browser). They skip when either is missing.
"""

from __future__ import annotations

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

#: Password of every test user.
PASSWORD = "correct horse battery staple"

BOX_SCHEMA = """\
name: lung lesions
kind: box
description: Outline every lesion with a box (and paint it when the guideline asks).
classes:
  - name: nodule
    definition: Round opacity up to 30 mm.
    risk: high
  - name: mass
    definition: Opacity larger than 30 mm.
    risk: high
  - name: artefact
    definition: Not anatomy; explain in the reason.
    risk: low
"""

GUIDELINE = """\
# Marking lung lesions

- Draw a **box** tight around each lesion.
- Paint the lesion with the **brush** when its edge is clear.
- When torn between *nodule* and *mass*, measure: over 30 mm is a mass.
"""


FINDINGS_SCHEMA = """\
name: finding
kind: classification
mode: single
description: The main finding on the image.
classes:
  - name: normal
    definition: Nothing to report.
    risk: low
  - name: nodule
    definition: Round opacity up to 30 mm.
    risk: high
  - name: mass
    definition: Opacity over 30 mm.
    risk: high
"""

#: Two blinded readers; any disagreement goes to a tier-3 adjudicator.
CONSENSUS_POLICY = """\
policy:
  workflow: consensus
  method: mv
  k: 2
  min_agreement: 1.0
  target: 0.9
"""

#: One reader, every read reviewed by a tier-2 reader.
REVIEW_POLICY = """\
policy:
  workflow: single_review
  review_rate: {low: 1.0, medium: 1.0, high: 1.0}
"""

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


def add_workflow_project(workspace: Any, *, key: str, policy: str) -> int:
    """Add a classification project run by the workflow ``policy`` (same users, same CT);
    enqueue its item and return the item id."""
    import pydicom.examples

    from truthset.auth.memberships import add_member
    from truthset.store.models import Item
    from truthset.workflow import policies, queue
    from truthset.workspace import projects, users
    from truthset.workspace.medical import Source, ingest_medical

    with workspace.unit("test") as s:
        project = projects.create_project(s, key=key, name=f"Findings ({key})",
                                          schema_text=FINDINGS_SCHEMA, guideline_text=GUIDELINE)
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
