"""Importing items (media files) and labels (long tables) into a project."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.schema import ClassificationMode, SchemaKind
from truthset.imaging.raster import read_raster
from truthset.io.tables import read_table
from truthset.quality.table import normalize_table
from truthset.store.blobs import BlobStore, sha256_file
from truthset.store.models import Annotation, Item, Project
from truthset.workspace.projects import rules
from truthset.workspace.users import users_by_name

#: Suffixes imported as 2D images.
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

Progress = Callable[[int], None]


@dataclass
class ImportSummary:
    """What an import did: ids of what was stored, what was skipped and refused, and why."""

    ingested: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


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


def _probe_raster(path: Path) -> dict[str, object]:
    """Check that ``path`` is a readable 2D image (fully decoded, limits checked before
    decoding); return its media facts."""
    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise InputError(
            f"unsupported file type {path.suffix or '(none)'}; this import takes "
            f"{', '.join(sorted(RASTER_SUFFIXES))}",
            source=str(path),
        )
    info = read_raster(path, name=str(path)).info
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {"media_type": media_type, "width": info.width, "height": info.height,
            "mode": info.mode}


def import_items(
    session: Session,
    blobs: BlobStore,
    project: Project,
    paths: Sequence[str | Path],
    *,
    continue_on_error: bool = False,
    progress: Progress | None = None,
    metadata: dict[str, dict[str, str]] | None = None,
) -> ImportSummary:
    """Import 2D image files (or folders of them) as items of ``project``.

    Every file is checked before anything is stored in the database. With
    ``continue_on_error=False`` (the default) one refused file refuses the whole batch: an
    :class:`InputError` lists every refused file and the caller's transaction rolls back. With
    ``continue_on_error=True`` the good files are imported and the refused ones reported.
    A file whose external id is already in the project with the same content is skipped.

    ``metadata`` maps an external id to item fields (modality, body_part, site, manufacturer,
    patient_pseudonym, age_band, sex); unknown keys go to the item's ``attributes``.
    """
    summary = ImportSummary()
    existing = {
        ext: media
        for ext, media in session.execute(
            select(Item.external_id, Item.media).where(Item.project_id == project.id)
        )
    }
    accepted: list[tuple[Path, str, dict[str, object]]] = []
    for number, (path, external_id) in enumerate(expand_paths(paths), start=1):
        try:
            if not path.exists():
                raise InputError("no such file", source=str(path))
            facts = _probe_raster(path)
            digest = sha256_file(path)
            if external_id in existing:
                if existing[external_id] and existing[external_id][0].get("sha256") == digest:
                    summary.skipped.append((external_id, "already imported (same content)"))
                    continue
                raise InputError(
                    f"item {external_id!r} already exists with different content",
                    source=str(path),
                )
            accepted.append((path, external_id, {**facts, "sha256": digest, "name": path.name}))
        except InputError as exc:
            summary.refused.append((str(path), exc.reason))
        finally:
            if progress:
                progress(number)
    if summary.refused and not continue_on_error:
        listing = "; ".join(f"{p}: {why}" for p, why in summary.refused)
        raise InputError(f"{len(summary.refused)} file(s) refused, nothing imported — {listing}")
    fields = {"modality", "body_part", "site", "manufacturer", "patient_pseudonym", "age_band",
              "sex"}
    for path, external_id, media in accepted:
        stored = blobs.put_file(path)
        assert stored == media["sha256"], "file changed while importing"
        meta = dict((metadata or {}).get(external_id, {}))
        item = Item(
            project_id=project.id,
            external_id=external_id,
            kind="image",
            media=[media],
            **{k: meta.pop(k) for k in list(meta) if k in fields},
            attributes=meta,
        )
        session.add(item)
        summary.ingested.append(external_id)
    session.flush()
    audit.record(
        session,
        action="import",
        entity_type="items",
        project_id=project.id,
        after={
            "ingested": len(summary.ingested),
            "skipped": len(summary.skipped),
            "refused": [why for _p, why in summary.refused],
        },
    )
    return summary


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
