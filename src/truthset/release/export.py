"""Exports of a stored release: label tables with provenance columns (CSV, Parquet) and the
imaging formats of :mod:`truthset.imaging.export` that the release's schema can fill.

- ``csv`` / ``parquet``: ``labels`` (one row per item: final label, how it was reached, split,
  consensus method, posterior, agreement, readers, reviewers, adjudicator and reason, rule
  versions, pre-label model, subgroups) and ``reads`` (one row per read behind each label);
- ``coco``: box and polygon schemas, one COCO file per split, built by
  :func:`truthset.imaging.export.coco_dataset`;
- ``nifti``, ``dicom-seg`` (mask schemas) and ``dicom-sr`` (box / polygon schemas) of DICOM
  items, written under ``imaging/`` by :func:`truthset.workspace.imaging_export.export_imaging`
  from the release's frozen final labels.

Every export is audited, and so is any access to the test split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.quality.shapes import parse_objects
from truthset.release.render import LABEL_COLUMNS, READ_COLUMNS, label_rows, read_rows
from truthset.release.service import load_content
from truthset.store.blobs import BlobStore
from truthset.store.models import Item, Project, Release

IMAGING_FORMATS = ("nifti", "dicom-seg", "dicom-sr")
FORMATS = ("csv", "parquet", "coco", *IMAGING_FORMATS)


def _tables(items: Sequence[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = pd.DataFrame(label_rows(items), columns=list(LABEL_COLUMNS))
    reads = pd.DataFrame(read_rows(items), columns=list(READ_COLUMNS))
    return labels, reads


def _coco(session: Session, content: dict[str, Any], items: Sequence[dict[str, Any]],
          folder: Path) -> list[Path]:
    from truthset.imaging.export import CocoAnnotation, CocoImage, coco_dataset

    definition = content["rules"]["schema"]["definition"]
    if definition.get("kind") not in ("box", "polygon"):
        raise InputError(f"COCO needs a box or polygon schema; this release's schema is "
                         f"{definition.get('kind')!r}", field="format")
    categories = {k: c["name"] for k, c in enumerate(definition["classes"], start=1)}
    by_name = {v: k for k, v in categories.items()}
    written = []
    for split in sorted({str(i["split"]) for i in items}):
        images, annotations = [], []
        for n, item in enumerate((i for i in items if str(i["split"]) == split), start=1):
            row = session.get(Item, item["item_id"])
            media = next((m for m in (row.media if row else []) or []
                          if isinstance(m, dict) and (m.get("width") or m.get("columns"))), None)
            if media is None:
                raise InputError(f"item {item['external_id']!r} has no image size",
                                 field="media")
            images.append(CocoImage(n, item["external_id"],
                                    int(media.get("width") or media["columns"]),
                                    int(media.get("height") or media["rows"])))
            # Either spelling of an object (quality.shapes): web bbox / points / rle, or
            # stored corners / [[x, y], ...] / runs.
            for obj in parse_objects(item["final_label"] or {"objects": []}):
                if len(obj.box) == 6:
                    continue  # COCO has no 3D boxes
                x0, y0, x1, y1 = obj.box
                box = None if obj.kind != "box" else (x0, y0, x1 - x0, y1 - y0)
                flat = (tuple(c for p in obj.points for c in p) if obj.points is not None
                        else None)
                annotations.append(CocoAnnotation(
                    image_id=n, category_id=by_name[obj.label], box=box, polygon=flat,
                    mask=obj.mask))
        path = folder / f"coco_{split}.json"
        path.write_text(json.dumps(coco_dataset(images, categories, annotations), indent=1),
                        encoding="utf-8")
        written.append(path)
    return written


def export_release(
    session: Session,
    release: Release,
    folder: str | Path,
    *,
    formats: Iterable[str] = ("csv", "parquet"),
    splits: Iterable[str] | None = None,
    blobs: BlobStore | None = None,
) -> list[Path]:
    """Write the release in ``formats`` into an empty ``folder``; return the files written.
    The imaging formats read the items' DICOM files from ``blobs``.

    Raises
    ------
    InputError
        Unknown format or split, a format the schema cannot fill, or a non-empty folder.
    """
    wanted = [f.strip().lower() for f in formats]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown export format(s) {', '.join(unknown)}; use "
                         f"{', '.join(FORMATS)}", field="format")
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise InputError("the export folder exists and is not empty", source=str(out))
    content = load_content(session, release)
    included = [i for i in content["items"] if i["included"]]
    present = sorted({str(i["split"]) for i in included})
    chosen = present if splits is None else list(dict.fromkeys(splits))
    bad = [s for s in chosen if s not in present]
    if bad:
        raise InputError(f"unknown split(s) {', '.join(bad)}; this release has "
                         f"{', '.join(present)}", field="split")
    items = [i for i in content["items"] if i["included"] and str(i["split"]) in chosen]
    imaging = [f for f in wanted if f in IMAGING_FORMATS]
    if imaging and blobs is None:
        raise InputError("imaging exports need the blob store", field="format")
    out.mkdir(parents=True, exist_ok=True)
    labels, reads = _tables(items)
    written: list[Path] = []
    if "csv" in wanted:
        for name, frame in (("labels", labels), ("reads", reads)):
            path = out / f"{name}.csv"
            frame.to_csv(path, index=False, lineterminator="\n")
            written.append(path)
    if "parquet" in wanted:
        for name, frame in (("labels", labels), ("reads", reads)):
            path = out / f"{name}.parquet"
            frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}) \
                .to_parquet(path, index=False)
            written.append(path)
    if "coco" in wanted:
        written += _coco(session, content, items, out)
    if imaging:
        from truthset.workspace.imaging_export import export_imaging

        assert blobs is not None
        project = session.get(Project, release.project_id)
        assert project is not None
        result = export_imaging(session, blobs, project, out / "imaging", formats=imaging,
                                payloads={i["item_id"]: i["final_label"] for i in items})
        written += result.written
    audit.record(session, action="release.export", entity_type="releases", entity_id=release.id,
                 project_id=release.project_id,
                 after={"release": release.name, "formats": wanted, "splits": chosen,
                        "items": len(items)})
    n_test = sum(1 for i in items if i["split"] == "test")
    if n_test:
        audit.record(session, action="release.test_split_access", entity_type="releases",
                     entity_id=release.id, project_id=release.project_id,
                     after={"release": release.name, "test_items": n_test, "via": "export"})
    return written
