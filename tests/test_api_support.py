"""Shared set-up of the API tests (no tests here): a seeded workspace and clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from truthset.api.app import create_app
from truthset.api.deps import ApiSettings
from truthset.auth import memberships, tokens
from truthset.domain.roles import Role
from truthset.store.models import Item
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()
PASSWORD = "correct horse battery staple"

#: Project roles seeded in project "alpha" (one user each, named after the role).
PROJECT_ROLES = [r.value for r in Role if r != Role.ADMIN] + ["padmin"]


def png(path: Path, seed: int = 0, size: tuple[int, int] = (16, 12)) -> Path:
    """Write a small random grey PNG."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(path)
    return path


@dataclass
class Seeded:
    """What :func:`seed` made: tokens by user name, item ids by project key."""

    tokens: dict[str, str] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)


def seed(ws: Workspace, tmp: Path) -> Seeded:
    """Projects ``alpha`` and ``beta`` with two images each; one user per project role in
    alpha (``annotator``, ``reviewer``, …, ``padmin`` = project admin), ``annotator2``,
    ``outsider`` (annotator in beta only), global ``root`` (admin) and ``gaudit`` (auditor),
    and a ``nobody`` with no role anywhere; an API token for each."""
    out = Seeded()
    with ws.unit("seed") as s:
        made = {}
        for key in ("alpha", "beta"):
            project = projects.create_project(s, key=key, name=key.title(), schema_text=SCHEMA,
                                              guideline_text="Read carefully.")
            folder = tmp / f"img-{key}"
            folder.mkdir()
            for k in range(2):
                png(folder / f"{key}{k}.png", seed=k + (10 if key == "beta" else 0))
            imports.import_items(s, ws.blobs, project, [folder])
            made[key] = project
        people = [("root", "admin"), ("gaudit", "auditor"), ("nobody", "annotator"),
                  ("outsider", "annotator"), ("annotator2", "annotator")]
        people += [(r, "annotator") for r in PROJECT_ROLES]
        for name, global_role in people:
            user = users.add_user(s, username=name, role=global_role)
            out.tokens[name] = tokens.create_token(s, user, name="test").secret
            if name in PROJECT_ROLES:
                memberships.add_member(s, made["alpha"], user,
                                       "admin" if name == "padmin" else name)
            if name == "annotator2":
                memberships.add_member(s, made["alpha"], user, "annotator")
            if name == "outsider":
                memberships.add_member(s, made["beta"], user, "annotator")
        s.flush()
        for key, project in made.items():
            out.items[key] = sorted(
                i.id for i in s.query(Item).filter(Item.project_id == project.id))
    return out


def client(ws: Workspace, settings: ApiSettings | None = None) -> TestClient:
    """A test client of the API over ``ws``."""
    return TestClient(create_app(ws, settings), raise_server_exceptions=False)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an API token."""
    return {"Authorization": f"Bearer {token}"}
