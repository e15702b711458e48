"""Export a project's labels on DICOM items as DICOM SEG, DICOM SR (TID 1500) or NIfTI label
maps: a thin service over :mod:`truthset.imaging.export`.

Which labels: the current consensus of each item (``labels="consensus"``) or one reader's
latest revision (``labels=<username>``). Objects are read by
:func:`truthset.quality.shapes.parse_objects`, in either spelling: masks as the web
application's COCO RLE ``{"type": "mask", "label", "frame": k, "rle": {"size", "counts"}}`` or
the stored ``{"label", "mask": {"shape", "runs"}}`` with the shape of the item's volume
``(slices, rows, columns)`` (or ``(rows, columns)`` for one image); boxes ``{"type": "box",
"label", "frame": k, "bbox": [x, y, w, h]}`` or ``{"label", "box": [x0, y0, x1, y1], "slice":
k}`` in pixels; polygons ``{"type": "polygon", "label", "frame": k, "points": [x0, y0, ...]}``
or ``{"label", "points": [[x, y], ...], "slice": k}``. In a label map (SEG, NIfTI), boxes and
polygons of a mask schema are rasterised.

Only de-identified DICOM items that are not quarantined are exported; reader names never
enter the files (observers are written as ``R-<user id>``). Every export is audited.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError, NotFoundError
from truthset.imaging import group_series, read_dicom
from truthset.imaging.dicom import DicomSeries
from truthset.imaging.export import (
    Finding,
    Segment,
    findings_to_dicom_sr,
    labelmap_to_nifti,
    segmentation_to_dicom_seg,
)
from truthset.quality.shapes import ImageBounds, parse_objects, rasterise
from truthset.store.blobs import BlobStore
from truthset.store.models import Annotation, Consensus, Item, Project, User
from truthset.workspace.medical import DICOM_MEDIA_TYPE
from truthset.workspace.projects import rules

FORMATS = ("dicom-seg", "dicom-sr", "nifti")


@dataclass
class ImagingExport:
    """What an export wrote, and the items it left out with the reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _labels(session: Session, project: Project, labels: str) -> tuple[dict[int, dict[str, Any]],
                                                                      str]:
    """Item id -> payload, and the observer name written into SR."""
    if labels == "consensus":
        rows = session.scalars(select(Consensus).where(
            Consensus.id.in_(Consensus.latest_ids(project.id))))
        return {r.item_id: r.label for r in rows}, "consensus"
    user = session.scalar(select(User).where(User.username == labels))
    if user is None:
        raise NotFoundError(f"no user {labels!r}; use 'consensus' or a reader's user name")
    out: dict[int, dict[str, Any]] = {}
    for row in session.scalars(select(Annotation).where(
            Annotation.project_id == project.id, Annotation.author_id == user.id)
            .order_by(Annotation.id)):
        out[row.item_id] = row.payload  # later revisions replace earlier ones
    return out, f"R-{user.id}"


def _series(blobs: BlobStore, item: Item) -> DicomSeries:
    images = [read_dicom(blobs.get_bytes(str(m["sha256"])), name=item.external_id)
              for m in item.media or [] if m.get("media_type") == DICOM_MEDIA_TYPE]
    if not images:
        raise InputError("not a DICOM item")
    (series,) = group_series(images)
    return series


def _label_map(payload: dict[str, Any], classes: list[str], shape: tuple[int, int, int],
               ) -> np.ndarray:
    """The volume's label map: each object's pixels (masks as they are, boxes and polygons
    rasterised) set to its class number, in object order."""
    labels = np.zeros(shape, dtype=np.uint8)
    bounds = ImageBounds(width=shape[2], height=shape[1], frames=shape[0])
    for obj in parse_objects(payload, bounds=bounds):
        if obj.frame < 0:
            continue  # a 3D box has no pixels of its own
        pixels = rasterise(obj, shape[1], shape[2])
        labels[obj.frame][pixels] = classes.index(obj.label) + 1
    return labels


def _findings(payload: dict[str, Any], slices: int) -> list[Finding]:
    out = []
    finding = ("52988006", "SCT", "Lesion")
    for obj in parse_objects(payload):
        if obj.kind == "mask":
            continue
        k = obj.index
        if len(obj.box) == 6:
            raise InputError(f"object {k}: only 2D boxes [x0, y0, x1, y1] go into SR",
                             field=f"objects.{k}.box")
        if not 0 <= obj.frame < slices:
            raise InputError(f"object {k}: slice {obj.frame} is outside the series",
                             field=f"objects.{k}.slice")
        tracking = f"{obj.label} #{k + 1}"
        if obj.points is not None:
            out.append(Finding(tracking, obj.points, source_index=obj.frame, finding=finding))
        else:
            x0, y0, x1, y1 = obj.box
            out.append(Finding.from_box(tracking, (x0, y0, x1 - x0, y1 - y0),
                                        source_index=obj.frame, finding=finding))
    return out


def export_imaging(
    session: Session, blobs: BlobStore, project: Project, folder: str | Path, *,
    formats: list[str], labels: str = "consensus",
    payloads: dict[int, dict[str, Any]] | None = None,
) -> ImagingExport:
    """Write SEG / SR / NIfTI files of the project's labelled DICOM items into ``folder``
    (``<item id>_seg.dcm``, ``<item id>_sr.dcm``, ``<item id>_labels.nii.gz``).

    Raises
    ------
    InputError
        Unknown format, a format the schema cannot fill (SEG and NIfTI need masks, SR boxes
        or polygons), a non-empty folder, or a malformed label (the item is named).
    NotFoundError
        ``labels`` names no user.

    ``payloads`` (item id -> label payload), when given, replaces ``labels``: a release exports
    its frozen final labels this way.
    """
    wanted = [f.strip().lower() for f in formats]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise InputError(f"unknown imaging export format(s) {', '.join(unknown) or '(none)'};"
                         f" use {', '.join(FORMATS)}", field="format")
    schema = rules(session, project).schema
    kind = str(schema.kind)
    if kind != "mask" and ({"dicom-seg", "nifti"} & set(wanted)):
        raise InputError(f"DICOM SEG and NIfTI label maps need a mask schema; project "
                         f"{project.key!r} has a {kind} schema", field="format")
    if kind not in ("box", "polygon") and "dicom-sr" in wanted:
        raise InputError(f"DICOM SR findings need a box or polygon schema; project "
                         f"{project.key!r} has a {kind} schema", field="format")
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise InputError("the export folder exists and is not empty", source=str(out))
    out.mkdir(parents=True, exist_ok=True)
    if payloads is None:
        payloads, observer = _labels(session, project, labels)
    else:  # given by the caller (a release's frozen final labels, by item id)
        observer = "release"
    classes = list(schema.class_names)
    segments = [Segment(k, name) for k, name in enumerate(classes, start=1)]
    result = ImagingExport()
    items = session.scalars(select(Item).where(Item.project_id == project.id,
                                               Item.id.in_(list(payloads) or [0]))
                            .order_by(Item.id))
    for item in items:
        if item.status == "quarantined":
            result.skipped.append((item.external_id, "quarantined"))
            continue
        try:
            series = _series(blobs, item)
        except InputError as exc:
            result.skipped.append((item.external_id, exc.reason))
            continue
        payload = payloads[item.id]
        try:
            if "dicom-seg" in wanted or "nifti" in wanted:
                label_map = _label_map(payload, classes, series.info.shape)
                used = [s for s in segments if (label_map == s.number).any()]
                if "dicom-seg" in wanted and used:
                    seg = segmentation_to_dicom_seg(series, label_map, used)
                    result.written.append(_save(seg, out / f"{item.id}_seg.dcm"))
                if "nifti" in wanted:
                    path = out / f"{item.id}_labels.nii.gz"
                    labelmap_to_nifti(series, label_map, path)
                    result.written.append(path)
            if "dicom-sr" in wanted:
                findings = _findings(payload, len(series.slices))
                if findings:
                    sr = findings_to_dicom_sr(series, findings, observer=observer)
                    result.written.append(_save(sr, out / f"{item.id}_sr.dcm"))
        except InputError as exc:
            raise InputError(exc.reason, source=f"item {item.external_id}",
                             field=exc.field) from exc
    audit.record(session, action="export", entity_type="items", project_id=project.id,
                 after={"formats": wanted, "labels": observer,
                        "files": [p.name for p in result.written],
                        "skipped": len(result.skipped)})
    return result


def _save(ds: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path
