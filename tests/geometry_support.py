"""Helpers of the geometric and multi-label workflow tests: a project with readers, sized image
items and a policy; payloads in the web application's form."""

from __future__ import annotations

from typing import Any

import numpy as np

from truthset.quality.shapes import encode_rle
from truthset.store.models import Item
from truthset.workflow import policies, queue
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

#: Image size of every item: 64 columns x 48 rows.
WIDTH, HEIGHT = 64, 48


def schema(kind: str, mode: str | None = None) -> str:
    """A schema of ``kind`` with classes nodule (high risk), mass (medium) and cyst (low)."""
    head = f"name: lesions\nkind: {kind}\n" + (f"mode: {mode}\n" if mode else "")
    return head + ("classes:\n"
                   "  - {name: nodule, risk: high}\n"
                   "  - {name: mass, risk: medium}\n"
                   "  - {name: cyst, risk: low}\n")


def make_geo_project(ws: Workspace, schema_text: str, policy: str, *, n_items: int = 1,
                     n_readers: int = 4, frames: int = 1) -> None:
    """Project ``chest`` (the name the workflow test helpers use) with readers r0.., ``rev``
    (reviewer, tier 2), ``adj`` (adjudicator, tier 3) and items i00.. of WIDTH x HEIGHT pixels
    (``frames`` images each); the policy stored and every item queued."""
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=schema_text)
        for k in range(n_readers):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="rev", role="reviewer", tier=2)
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        media = [{"sha256": f"{k:064x}", "media_type": "image/png", "width": WIDTH,
                  "height": HEIGHT} for k in range(frames)]
        for k in range(n_items):
            s.add(Item(project_id=p.id, external_id=f"i{k:02d}", kind="image", media=media))
        s.flush()
        policies.set_policy(s, p, policy)
        queue.enqueue(s, p)


def box(label: str, x: float, y: float, w: float, h: float, frame: int = 0) -> dict[str, Any]:
    """A box as the web application submits it."""
    return {"type": "box", "label": label, "frame": frame, "bbox": [x, y, w, h]}


def mask(label: str, pixels: np.ndarray, frame: int = 0) -> dict[str, Any]:
    """A mask as the web application submits it (COCO uncompressed RLE)."""
    return {"type": "mask", "label": label, "frame": frame, "rle": encode_rle(pixels)}


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    """A filled disc on a HEIGHT x WIDTH image."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.asarray((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r)
