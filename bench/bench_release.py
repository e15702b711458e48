"""Release build, verification, rebuild and diff on a synthetic project.

Run::

    .venv/bin/python bench/bench_release.py                       # 2,000 and 10,000 items
    .venv/bin/python bench/bench_release.py --items 50000 --db postgresql+psycopg://...

Simulation: ``n`` image items (one 16 x 12 PNG blob shared by all, so import cost stays out of
the numbers) from ``n / 2`` patients at 4 sites, 3 readers each over a 4-class schema, a
majority-vote consensus; 2 % of the items get no reads and are excluded as unresolved. Rows are
inserted in bulk through the ORM (audited like any write). Then: ``create_release`` (freeze,
splits, checks, render incl. datasheet HTML + PDF, identifier scan, store), ``verify_folder`` of
the written folder, ``rebuild`` from the database, a second release after 5 % of the labels
changed, and ``diff`` between the two.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from truthset.release import diff as release_diff
from truthset.release import service
from truthset.release.manifest import verify_folder
from truthset.store.models import Annotation, Consensus, Item
from truthset.workflow.consensus import compute_consensus
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = """\
name: bench
kind: classification
mode: single
classes:
  - {name: a}
  - {name: b}
  - {name: c}
  - {name: d}
"""
CLASSES = ("a", "b", "c", "d")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 12), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def build(ws: Workspace, n: int, seed: int = 0) -> None:
    """The synthetic project ``bench`` with ``n`` items."""
    rng = np.random.default_rng(seed)
    digest = ws.blobs.put_bytes(_png())
    media = [{"sha256": digest, "media_type": "image/png", "width": 16, "height": 12}]
    with ws.unit("bench") as s:
        project = projects.create_project(s, key="bench", name="bench", schema_text=SCHEMA,
                                          guideline_text="v1")
        readers = [users.add_user(s, username=f"r{k}", role="annotator") for k in range(3)]
        items = [Item(project_id=project.id, external_id=f"img-{i:06d}.png", kind="image",
                      media=media, site=f"site-{i % 4}", patient_pseudonym=f"P-{i // 2:06d}",
                      sex="FM"[i % 2], age_band=("18-39", "40-64", "65-89")[i % 3],
                      manufacturer=("A", "B")[i % 2])
                 for i in range(n)]
        s.add_all(items)
        s.flush()
        truth = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
        rows = []
        for i, item in enumerate(items):
            if i % 50 == 49:
                continue
            for reader in readers:
                label = truth[i] if rng.random() < 0.85 else rng.integers(4)
                rows.append(Annotation(project_id=project.id, item_id=item.id,
                                       author_id=reader.id, payload={"label": CLASSES[label]},
                                       schema_version=1, guideline_version=1,
                                       time_spent_s=float(rng.integers(5, 60))))
        s.add_all(rows)
        s.flush()
        compute_consensus(s, project, method="mv")


def change_labels(ws: Workspace, share: float) -> int:
    """A newer consensus with a different label for ``share`` of the items."""
    with ws.unit("bench") as s:
        project = projects.get_project(s, "bench")
        latest = {c.item_id: c for c in s.query(Consensus).filter(
            Consensus.project_id == project.id).order_by(Consensus.id)}
        picked = sorted(latest)[:: max(1, int(1 / share))]
        for item_id in picked:
            old = latest[item_id]
            new = CLASSES[(CLASSES.index(old.label["label"]) + 1) % 4]
            s.add(Consensus(project_id=project.id, item_id=item_id, method="mv",
                            parameters=old.parameters, label={"label": new},
                            posterior=old.posterior, confidence=old.confidence,
                            agreement=old.agreement,
                            input_annotation_ids=old.input_annotation_ids, status="final"))
        projects.add_guideline_version(s, project, body="v2", change_note="bench change")
    return len(picked)


def timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run ``fn`` and print its wall and CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    print(f"  {label:<34} wall {time.perf_counter() - wall:7.2f} s   "
          f"cpu {time.process_time() - cpu:7.2f} s")
    return out


def run(n: int, db: str | None) -> None:
    """Build and time one project of ``n`` items."""
    root = Path(tempfile.mkdtemp(prefix="bench-release-"))
    ws = Workspace.init(root / "ws", database_url=db)
    with ws:
        print(f"{n} items ({ws.engine.url.get_backend_name()}):")
        timed("build synthetic project", build, ws, n)

        def create(name: str) -> object:
            with ws.unit("bench") as s:
                project = projects.get_project(s, "bench")
                return service.create_release(s, project, ws.blobs, name=name, actor="bench",
                                              exclude_unresolved="bench")

        timed("create_release v1", create, "v1")
        with ws.unit("bench") as s:
            release = service.get_release(s, projects.get_project(s, "bench"), "v1")
            timed("write_folder v1", service.write_folder, s, ws.blobs, release, root / "v1")
        report = timed("verify_folder v1 (offline)", verify_folder, root / "v1")
        assert report.ok
        size = sum(p.stat().st_size for p in (root / "v1").iterdir() if p.is_file())
        print(f"  {'release folder size':<34} {size / 1e6:7.2f} MB")
        with ws.sessions() as s:
            release = service.get_release(s, projects.get_project(s, "bench"), "v1")
            rebuilt = timed("rebuild v1 from the database", service.rebuild, s, ws.blobs,
                            release)
            assert rebuilt.identical
        changed = change_labels(ws, 0.05)
        timed("create_release v2", create, "v2")
        with ws.sessions() as s:
            project = projects.get_project(s, "bench")
            a, b = (service.get_release(s, project, x) for x in ("v1", "v2"))
            result = timed("diff v1 -> v2", release_diff.diff_releases, s, a, b)
        assert result["summary"]["label_changed"] == changed


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="*", default=[2000, 10000])
    parser.add_argument("--db", default=None, help="database URL (default: SQLite file)")
    args = parser.parse_args()
    for n in args.items:
        run(n, args.db)


if __name__ == "__main__":
    main()
