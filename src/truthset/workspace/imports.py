"""Importing items (media files) and labels (long tables) into a project."""

from __future__ import annotations

import hashlib
import mimetypes
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.schema import ClassificationMode, SchemaKind
from truthset.imaging.archive import iter_zip_members
from truthset.imaging.raster import read_raster, strip_metadata
from truthset.io.tables import read_table
from truthset.quality.table import normalize_table
from truthset.store.blobs import BlobStore, sha256_file
from truthset.store.models import Annotation, Item, Project
from truthset.store.pseudonyms import PseudonymVault
from truthset.workspace.medical import Source, ingest_medical
from truthset.workspace.projects import rules
from truthset.workspace.users import users_by_name

#: Suffixes imported as 2D images.
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")

Progress = Callable[[int], None]


@dataclass
class ImportSummary:
    """What an import did: ids of what was stored, what was quarantined, skipped and refused,
    and why."""

    ingested: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)


def expand_paths(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Files to import with the external id each gets (its path relative to the folder given)."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                found.append((child, child.relative_to(path).as_posix()))
        else:
            found.append((path, path.name))
    return found


def sniff(name: str, head: bytes) -> str:
    """What a file is, from its first bytes (at least 352) and, failing that, its name:
    ``"dicom"``, ``"nifti"``, ``"zip"``, ``"raster"``, ``"dicomdir"``, ``"hidden"`` or
    ``"unknown"``."""
    base = name.rsplit("/", 1)[-1]
    lower = base.lower()
    if base.startswith(".") or base in ("Thumbs.db", "__MACOSX"):
        return "hidden"
    if base.upper() == "DICOMDIR":
        return "dicomdir"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00" \
            or lower.endswith((".nii", ".nii.gz")):
        return "nifti"
    if head[:4] == b"PK\x03\x04" or lower.endswith(".zip"):
        return "zip"
    if head.startswith(_RASTER_MAGIC) or Path(lower).suffix in RASTER_SUFFIXES:
        return "raster"
    if lower.endswith((".dcm", ".dicom", ".ima")):
        return "dicom"  # no preamble: read_dicom says why it is refused
    return "unknown"


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(352)


def count_units(paths: Sequence[str | Path]) -> int:
    """How many files an import of ``paths`` will look at (zip members counted one by one),
    for a progress bar."""
    total = 0
    for path, _ext in expand_paths(paths):
        try:
            if sniff(path.name, _head(path)) == "zip":
                with zipfile.ZipFile(path) as archive:
                    total += sum(1 for i in archive.infolist() if not i.is_dir())
                continue
        except (OSError, zipfile.BadZipFile):
            pass
        total += 1
    return total


def _probe_raster(
    path: Path | None, data: bytes | None = None, label: str | None = None
) -> dict[str, object]:
    """Check that the file (``path``, or ``data`` called ``label``) is a readable 2D image
    (fully decoded, limits checked before decoding); return its media facts."""
    label = label or str(path)
    info = read_raster(path if path is not None else data or b"", name=label).info
    media_type = mimetypes.guess_type(label)[0] or {
        "PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff",
    }.get(info.format, "application/octet-stream")
    return {"media_type": media_type, "width": info.width, "height": info.height,
            "mode": info.mode}


@dataclass
class _Raster:
    external_id: str
    media: dict[str, object]
    path: Path | None = None
    data: bytes | None = None


class _Counter:
    """Counts files looked at and reports to the progress callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.done = 0
        self.progress = progress

    def tick(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done)


def import_items(
    session: Session,
    blobs: BlobStore,
    project: Project,
    paths: Sequence[str | Path],
    *,
    continue_on_error: bool = False,
    progress: Progress | None = None,
    metadata: dict[str, dict[str, str]] | None = None,
    vault: PseudonymVault | None = None,
) -> ImportSummary:
    """Import files, folders and zip archives as items of ``project``, dispatched by content:

    - 2D images (PNG, JPEG, TIFF) become one item each (external id: the path relative to
      the folder given); PNG text/EXIF chunks and JPEG EXIF/XMP/comments are removed first
      (:func:`truthset.imaging.raster.strip_metadata`), so the stored blob may differ from
      the file;
    - DICOM files are de-identified in memory as the project's imaging settings say, then
      stored; a series becomes one item (or every instance one item), see
      :func:`truthset.workspace.medical.ingest_medical` (needs ``vault``);
    - NIfTI volumes become one item each, with their free-text header fields cleared;
    - zip archives are opened safely (no traversal, links, bombs) and their members
      dispatched the same way. ``DICOMDIR`` and hidden files are skipped.

    Every file is checked; a refused file never stops the others from being checked. With
    ``continue_on_error=False`` (the default) one refused file refuses the whole batch: an
    :class:`InputError` lists every refused file and the caller's transaction rolls back
    (de-identified blobs already written stay, unreferenced; nothing identifiable is ever
    written). With ``continue_on_error=True`` the good files are imported and the refused
    ones reported. A 2D image whose external id is already in the project with the same
    content is skipped, as is a DICOM instance already imported.

    ``metadata`` maps an external id of a 2D image to item fields (modality, body_part, site,
    manufacturer, patient_pseudonym, age_band, sex); unknown keys go to ``attributes``.
    """
    summary = ImportSummary()
    counter = _Counter(progress)
    existing = {
        ext: media
        for ext, media in session.execute(
            select(Item.external_id, Item.media).where(Item.project_id == project.id)
        )
    }
    accepted: list[_Raster] = []
    medical: list[Source] = []

    def raster(external_id: str, label: str, path: Path | None, data: bytes | None) -> None:
        facts = _probe_raster(path, data, label)  # refuses before reading a bad file whole
        # Text chunks, EXIF and comments can name the patient: they never reach storage.
        clean = strip_metadata(data if data is not None else _read(path, label), name=label)
        digest = hashlib.sha256(clean).hexdigest()
        if external_id in existing:
            if existing[external_id] and existing[external_id][0].get("sha256") == digest:
                summary.skipped.append((external_id, "already imported (same content)"))
                return
            raise InputError(
                f"item {external_id!r} already exists with different content", source=label
            )
        name = Path(label).name
        accepted.append(_Raster(external_id, {**facts, "sha256": digest, "name": name},
                                None, clean))

    def dispatch(kind: str, external_id: str, label: str, path: Path | None,
                 data: bytes | None) -> None:
        if kind == "hidden":
            summary.skipped.append((label, "hidden file"))
        elif kind == "dicomdir":
            summary.skipped.append((label, "DICOMDIR (a directory record, not an image)"))
        elif kind == "raster":
            raster(external_id, label, path, data)
        elif kind in ("dicom", "nifti"):
            medical.append(Source(name=external_id if kind == "nifti" else label,
                                  data=data if data is not None else _read(path, label),
                                  kind=kind))
            return  # counted when ingested
        else:
            raise InputError(
                "unsupported file type: not DICOM, NIfTI, a zip archive or a "
                f"{'/'.join(sorted(s.lstrip('.').upper() for s in RASTER_SUFFIXES))} image",
                source=label,
            )
        counter.tick()

    for path, external_id in expand_paths(paths):
        label = str(path)
        try:
            if not path.exists():
                raise InputError("no such file", source=label)
            kind = sniff(path.name, _head(path))
            if kind != "zip":
                dispatch(kind, external_id, label, path, None)
                continue
            for member in iter_zip_members(path):
                member_label = f"{label}!{member.name}"
                try:
                    dispatch(sniff(member.name, member.data[:352]), member.name, member_label,
                             None, member.data)
                except InputError as exc:
                    summary.refused.append((member_label, exc.reason))
                    counter.tick()
        except InputError as exc:
            where = f"{label}!{exc.location}" if exc.location and label != exc.location else label
            summary.refused.append((where, exc.reason))
            counter.tick()
    if medical:
        if vault is None:
            raise InputError("DICOM and NIfTI imports need the workspace's pseudonym vault",
                             field="vault")
        report = ingest_medical(session, blobs, vault, project, medical,
                                progress=lambda _n: counter.tick())
        summary.ingested.extend(report.ingested)
        summary.quarantined.extend(report.quarantined)
        summary.skipped.extend(report.skipped)
        summary.refused.extend(report.refused)
    if summary.refused and not continue_on_error:
        listing = "; ".join(f"{p}: {why}" for p, why in summary.refused)
        raise InputError(f"{len(summary.refused)} file(s) refused, nothing imported — {listing}")
    fields = {"modality", "body_part", "site", "manufacturer", "patient_pseudonym", "age_band",
              "sex"}
    for entry in accepted:
        if entry.path is not None:
            stored = blobs.put_file(entry.path)
        else:
            stored = blobs.put_bytes(entry.data or b"")
        if stored != entry.media["sha256"]:
            raise InputError("the file changed while it was imported",
                             source=str(entry.path or entry.external_id))
        meta = dict((metadata or {}).get(entry.external_id, {}))
        item = Item(
            project_id=project.id,
            external_id=entry.external_id,
            kind="image",
            media=[entry.media],
            **{k: meta.pop(k) for k in list(meta) if k in fields},
            attributes=meta,
        )
        session.add(item)
        summary.ingested.append(entry.external_id)
    session.flush()
    audit.record(
        session,
        action="import",
        entity_type="items",
        project_id=project.id,
        after={
            "ingested": len(summary.ingested),
            "quarantined": len(summary.quarantined),
            "skipped": len(summary.skipped),
            "refused": [why for _p, why in summary.refused],
        },
    )
    return summary


def _read(path: Path | None, label: str) -> bytes:
    try:
        return (path or Path(label)).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", source=label) from exc


def _parse_labels(
    values: Iterable[str], *, mode: ClassificationMode | None, classes: Sequence[str],
    source: str,
) -> list[dict[str, object]]:
    allowed = set(classes)
    payloads: list[dict[str, object]] = []
    for row, raw in enumerate(values, start=1):
        text = str(raw).strip()
        names = [p.strip() for p in text.split("|")] if mode == ClassificationMode.MULTI else [text]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise InputError(
                f"unknown class {unknown[0]!r}; the schema has {', '.join(classes)}",
                source=source, location=f"row {row}", field="label",
            )
        payloads.append({"labels": sorted(set(names))} if mode == ClassificationMode.MULTI
                        else {"label": names[0]})
    return payloads


def import_labels(
    session: Session,
    project: Project,
    path: str | Path,
    *,
    source_name: str = "import",
) -> int:
    """Import a long label table (``item,annotator,label``; CSV/TSV/JSONL/Parquet) as
    annotations of a classification project. Optional column: ``time_spent_s``.

    Every row is checked first; one bad row (unknown item, annotator or class, empty value)
    refuses the whole file with the row named. Multi-label values are separated by ``|``.

    Returns
    -------
    int
        The number of annotations created.
    """
    source = str(path)
    table = read_table(path)
    extra = table["time_spent_s"] if "time_spent_s" in table.columns else None
    table = normalize_table(table, source=source)
    current = rules(session, project)
    if current.schema.kind != SchemaKind.CLASSIFICATION:
        raise InputError(
            f"label tables hold classifications; project {project.key!r} has a "
            f"{current.schema.kind} schema", source=source,
        )
    items: dict[str, int] = {
        external_id: item_id
        for external_id, item_id in session.execute(
            select(Item.external_id, Item.id).where(Item.project_id == project.id)
        )
    }
    users = users_by_name(session)
    item_ids = table["item"].astype(str).map(items)
    if item_ids.isna().any():
        row = int(item_ids.isna().to_numpy().argmax())
        raise InputError(
            f"unknown item {table['item'].iloc[row]!r} (not in project {project.key!r})",
            source=source, location=f"row {row + 1}", field="item",
        )
    author_ids = table["annotator"].astype(str).map({k: u.id for k, u in users.items()})
    if author_ids.isna().any():
        row = int(author_ids.isna().to_numpy().argmax())
        raise InputError(
            f"unknown annotator {table['annotator'].iloc[row]!r}; add them with "
            "`truthset user add` first",
            source=source, location=f"row {row + 1}", field="annotator",
        )
    payloads = _parse_labels(
        table["label"], mode=current.schema.mode, classes=current.schema.class_names,
        source=source,
    )
    spent = pd.to_numeric(extra, errors="coerce") if extra is not None else None
    rows = [
        Annotation(
            project_id=project.id,
            item_id=int(item_id),
            author_id=int(author_id),
            source="human",
            payload=payload,
            schema_version=current.schema_version,
            guideline_version=current.guideline_version,
            time_spent_s=None if spent is None or pd.isna(spent.iloc[k]) else float(spent.iloc[k]),
        )
        for k, (item_id, author_id, payload) in enumerate(
            zip(item_ids, author_ids, payloads, strict=True)
        )
    ]
    session.add_all(rows)
    session.flush()
    audit.record(
        session, action="import", entity_type="annotations", project_id=project.id,
        after={"file": Path(path).name, "sha256": sha256_file(path), "rows": len(rows),
               "source": source_name},
    )
    return len(rows)
