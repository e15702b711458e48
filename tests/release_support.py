"""Shared set-up of the release tests (no tests here): a small labelled project."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from truthset.release import service
from truthset.store.models import Escalation, Item, Release, Task
from truthset.workflow.annotations import record_annotation
from truthset.workflow.consensus import compute_consensus
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()
PASSWORD = "approver password 1"
KEY = "chest"
READERS = ("ann", "bob", "cat")
#: Item -> (patient, site, the three readers' labels); the last item gets no reads.
PLAN: dict[str, tuple[str, str, tuple[str, str, str] | None]] = {
    "a.png": ("P-1", "north", ("normal", "normal", "normal")),
    "b.png": ("P-1", "north", ("nodule", "nodule", "normal")),
    "c.png": ("P-2", "north", ("effusion", "effusion", "effusion")),
    "d.png": ("P-3", "south", ("normal", "nodule", "normal")),
    "e.png": ("P-4", "south", ("nodule", "nodule", "nodule")),
    "f.png": ("P-5", "south", ("normal", "normal", "effusion")),
    "g.png": ("P-6", "east", ("effusion", "normal", "effusion")),
    "h.png": ("P-7", "east", None),
}


def build_project(ws: Workspace, tmp: Path) -> None:
    """Project ``chest``: 8 small images from 7 patients at 3 sites, 3 readers on all but
    ``h.png``, a majority-vote consensus; users ``quinn`` (manager, password), ``sam``
    (adjudicator + manager, password) and ``rita`` (reviewer)."""
    folder = tmp / "images"
    folder.mkdir()
    meta = {}
    for k, (name, (patient, site, _labels)) in enumerate(PLAN.items()):
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 255, (12, 16), dtype=np.uint8)).save(folder / name)
        meta[name] = {"patient_pseudonym": patient, "site": site, "sex": "F" if k % 2 else "M",
                      "age_band": "40-64", "manufacturer": "Acme"}
    with ws.unit("setup") as s:
        project = projects.create_project(s, key=KEY, name="Chest", schema_text=SCHEMA,
                                          guideline_text="Look carefully.")
        imports.import_items(s, ws.blobs, project, [folder], metadata=meta)
        for name in READERS:
            users.add_user(s, username=name, role="annotator")
        users.add_user(s, username="quinn", role="manager", display_name="Quinn Approver",
                       password=PASSWORD)
        users.add_user(s, username="sam", role="manager", display_name="Sam Senior",
                       tier=3, password=PASSWORD)
        users.add_user(s, username="rita", role="reviewer", tier=2)
        items = {i.external_id: i for i in s.scalars(select(Item))}
        authors = {n: users.get_user(s, n) for n in READERS}
        for name, (_p, _s, labels) in PLAN.items():
            if labels is None:
                continue
            for reader, label in zip(READERS, labels, strict=True):
                record_annotation(s, project, item=items[name], author=authors[reader],
                                  payload={"label": label}, time_spent_s=10.0)
        compute_consensus(s, project, method="mv")


def adjudicate(ws: Workspace, item: str, label: str, *, by: str = "sam",
               reason: str = "readers split") -> None:
    """``by`` settles ``item`` through an escalation and an adjudicate task."""
    with ws.unit("setup") as s:
        project = projects.get_project(s, KEY)
        row = s.scalar(select(Item).where(Item.external_id == item))
        assert row is not None
        user = users.get_user(s, by)
        now = datetime.now(UTC)
        task = Task(project_id=project.id, item_id=row.id, stage="adjudicate", status="done",
                    assignee_id=user.id, completed_at=now)
        s.add(task)
        s.flush()
        s.add(Escalation(project_id=project.id, item_id=row.id, task_id=task.id, from_tier=1,
                         to_tier=3, reason=reason, due_at=now, status="resolved"))
        record_annotation(s, project, item=row, author=user, payload={"label": label},
                          task_id=task.id)


def create(ws: Workspace, name: str, **kwargs: object) -> Release:
    """Create release ``name`` of the chest project (``h.png`` excluded unless told)."""
    kwargs.setdefault("exclude", {"h.png": "not read yet"})
    with ws.unit("lead") as s:
        project = projects.get_project(s, KEY)
        return service.create_release(s, project, ws.blobs, name=name, actor="lead",
                                      **kwargs)  # type: ignore[arg-type]


def sign(ws: Workspace, name: str, username: str = "quinn", password: str = PASSWORD,
         meaning: str = "approved for training") -> service.SignOutcome:
    """Sign release ``name``; the outcome (signature or audited refusal) is committed."""
    with ws.unit(username) as s:
        project = projects.get_project(s, KEY)
        release = service.get_release(s, project, name)
        return service.sign_release(s, ws.blobs, release, username=username,
                                    password=password, meaning=meaning)


def write(ws: Workspace, name: str, folder: Path) -> Path:
    """Write release ``name`` into ``folder``."""
    with ws.unit("lead") as s:
        project = projects.get_project(s, KEY)
        return service.write_folder(s, ws.blobs, service.get_release(s, project, name), folder)
