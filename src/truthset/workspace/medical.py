"""Ingesting DICOM and NIfTI as items: de-identified on the way in, never stored raw.

Order of work for every DICOM file: read (refuse non-DICOM, truncated, pixel-less files,
absurd dimensions) → de-identify in memory (PS3.15 basic profile + the project's options;
patient identity replaced by a pseudonym from the vault) → only then write the de-identified
bytes to the blob store. The original bytes are never written anywhere, so a process killed
mid-import leaves nothing identifiable behind (only de-identified blobs that no row points
to yet). The original ↔ pseudonym and UID maps go to the pseudonym vault, a separate
database.

Images that may carry identity burned into the pixels (BurnedInAnnotation YES, or absent on
ultrasound, secondary capture and screenshots) become items with status ``quarantined``:
readers never get them until a manager or admin clears or redacts them
(:mod:`truthset.workspace.quarantine`).

The same path serves ``truthset import items`` and DICOMweb STOW-RS.
"""

from __future__ import annotations

import gzip
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.domain.settings import DicomItem, ImagingSettings, imaging_settings
from truthset.imaging import (
    DeidOptions,
    DicomImage,
    burned_in_reasons,
    deidentify,
    patient_date_offset,
    read_dicom,
    read_nifti,
    split_series,
)
from truthset.store.blobs import BlobStore
from truthset.store.models import ImagingInstance, Item, Project
from truthset.store.pseudonyms import PseudonymVault

log = logging.getLogger("truthset.import")

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_MEDIA_TYPE = "application/dicom"
NIFTI_MEDIA_TYPE = "application/x-nifti"

#: Attributes QIDO-RS answers with, per level (kept, de-identified, in ``qido``).
QIDO_STUDY = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyInstanceUID",
    "StudyDescription",
)
QIDO_SERIES = (
    "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "BodyPartExamined",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
)
QIDO_INSTANCE = (
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames",
)


@dataclass(frozen=True)
class Source:
    """One file to ingest: a display name (its path or member name; the external id of a
    NIfTI item) and its bytes."""

    name: str
    data: bytes
    #: ``"dicom"`` or ``"nifti"`` when the caller sniffed the content; else the name decides.
    kind: str = ""


@dataclass
class MedicalImport:
    """What :func:`ingest_medical` did; every entry is ``(what, why)`` except ``ingested``."""

    ingested: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: SOP Instance UIDs (after de-identification) stored by this import.
    instances: list[str] = field(default_factory=list)
    #: SOP Instance UIDs (after de-identification) of instances that were already stored.
    duplicates: list[str] = field(default_factory=list)


def is_nifti(name: str) -> bool:
    """Whether ``name`` looks like a NIfTI file."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def deid_options(settings: ImagingSettings) -> DeidOptions:
    """The :class:`DeidOptions` a project's settings select."""
    d = settings.deid
    return DeidOptions(
        retain_longitudinal_modified_dates=d.retain_longitudinal_modified_dates,
        retain_patient_characteristics=d.retain_patient_characteristics,
        clean_descriptors=d.clean_descriptors,
        private_safelist=d.safelist(),
    )


def dicom_bytes(ds: Dataset) -> bytes:
    """A dataset written as a DICOM Part 10 file, in memory."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class _Stored:
    """One de-identified instance, stored; the pixels are dropped once written."""

    image: DicomImage
    digest: str
    reasons: list[str]


class _VaultBatch:
    """Pseudonyms of one import: each patient's looked up once, the UID map written to the
    vault in one transaction at the end of the import (before the data are committed)."""

    def __init__(self, vault: PseudonymVault, project_key: str) -> None:
        self.vault = vault
        self.project_key = project_key
        self.patients: dict[str, str] = {}
        self.uids: dict[str, str] = {}

    def patient(self, key: str) -> str:
        if key not in self.patients:
            self.patients[key] = self.vault.derive(self.project_key, "patient", key)
        return self.patients[key]

    def flush(self) -> None:
        self.vault.remember(self.project_key, "uid", self.uids)
        self.uids = {}


def _deidentified(
    source: Source, vault: _VaultBatch, settings: ImagingSettings, secret: bytes,
) -> tuple[DicomImage, bytes, list[str]]:
    """Read, de-identify and re-read one DICOM file; return the de-identified image, its
    bytes and burned-in-identity reasons (empty when none).

    Warnings raised while the original is handled are swallowed: their text can quote
    header values (names, dates) and would leak them to the console or a log.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = read_dicom(source.data, name=source.name)
        ds = original.dataset
        patient_key = (str(ds.get("PatientID", "") or "")
                       or f"no-id:{ds.get('StudyInstanceUID', '')}")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        if issuer:
            patient_key = f"{issuer}\x00{patient_key}"
        pseudonym = vault.patient(patient_key)
        offset = (
            patient_date_offset(secret, patient_key)
            if settings.deid.retain_longitudinal_modified_dates
            else None
        )
        reasons = burned_in_reasons(ds)
        result = deidentify(ds, secret=secret, pseudonym=pseudonym, date_offset_days=offset,
                            options=deid_options(settings))
        vault.uids.update(result.record.uid_map)
        data = dicom_bytes(result.dataset)
    clean = read_dicom(data, name=source.name)
    return clean, data, reasons


def qido_attributes(ds: Dataset) -> dict[str, Any]:
    """The study/series/instance attributes QIDO-RS returns, as DICOM JSON (de-identified
    input assumed)."""
    subset = Dataset()
    for keyword in (*QIDO_STUDY, *QIDO_SERIES, *QIDO_INSTANCE):
        if keyword in ds:
            subset[keyword] = ds[keyword]
    return subset.to_json_dict()


def _media(stored: Iterable[_Stored]) -> list[dict[str, Any]]:
    out = []
    for entry in stored:
        info = entry.image.info
        out.append({
            "sha256": entry.digest,
            "media_type": DICOM_MEDIA_TYPE,
            "sop_instance_uid": info.sop_instance_uid,
            "frames": info.frames,
            "rows": info.rows,
            "columns": info.columns,
        })
    return out


def _instance_row(project: Project, item: Item, entry: _Stored) -> ImagingInstance:
    info = entry.image.info
    return ImagingInstance(
        project_id=project.id, item=item,
        study_instance_uid=str(info.study_instance_uid or ""),
        series_instance_uid=str(info.series_instance_uid or ""),
        sop_instance_uid=str(info.sop_instance_uid or ""),
        sop_class_uid=str(info.sop_class_uid or ""),
        modality=info.modality, instance_number=info.instance_number, frames=info.frames,
        rows=info.rows, columns=info.columns,
        transfer_syntax_uid=str(info.transfer_syntax_uid or ""), sha256=entry.digest,
        qido=qido_attributes(entry.image.dataset),
    )


def ingest_medical(
    session: Session,
    blobs: BlobStore,
    vault: PseudonymVault,
    project: Project,
    sources: Iterable[Source],
    *,
    progress: Callable[[int], None] | None = None,
) -> MedicalImport:
    """Ingest DICOM and NIfTI sources as items of ``project`` (see the module docstring).

    A refused file is reported with its reason and the rest of the batch continues; the caller
    decides whether refusals abort the transaction. With the project's ``dicom_item: series``
    a series becomes one item (instances of a series already imported are added to its
    item, after the geometry of the whole is checked again); with ``instance`` every
    instance is an item.
    """
    settings = imaging_settings(project.settings)
    secret = vault.project_secret(project.key)
    report = MedicalImport()
    existing = set(session.scalars(select(Item.external_id).where(Item.project_id == project.id)))
    known_sops = set(session.scalars(
        select(ImagingInstance.sop_instance_uid).where(ImagingInstance.project_id == project.id)
    ))
    stored: list[_Stored] = []
    seen: set[str] = set()
    batch = _VaultBatch(vault, project.key)
    for number, source in enumerate(sources, start=1):
        try:
            if source.kind == "nifti" or (not source.kind and is_nifti(source.name)):
                _ingest_nifti(session, blobs, project, source, existing, report)
                continue
            image, data, reasons = _deidentified(source, batch, settings, secret)
            sop = str(image.info.sop_instance_uid)
            if sop in known_sops or sop in seen:
                report.skipped.append((source.name, "instance already imported"))
                report.duplicates.append(sop)
                continue
            digest = blobs.put_bytes(data)
            image.dataset.pop("PixelData", None)  # geometry and header are all we keep
            seen.add(sop)
            stored.append(_Stored(image, digest, reasons))
        except InputError as exc:
            report.refused.append((source.name, exc.reason))
        finally:
            if progress:
                progress(number)
    batch.flush()
    if settings.dicom_item == DicomItem.INSTANCE:
        for entry in stored:
            _add_item(session, project, [entry], str(entry.image.info.sop_instance_uid),
                      existing, report, series=None)
    else:
        _add_series(session, blobs, project, stored, existing, report)
    session.flush()
    log.info("medical import into project %s: %d ingested, %d quarantined, %d skipped, "
             "%d refused", project.id, len(report.ingested), len(report.quarantined),
             len(report.skipped), len(report.refused))
    return report


def _add_series(
    session: Session, blobs: BlobStore, project: Project, stored: list[_Stored],
    existing: set[str], report: MedicalImport,
) -> None:
    by_uid: dict[str, list[_Stored]] = {}
    for entry in stored:
        by_uid.setdefault(str(entry.image.info.series_instance_uid), []).append(entry)
    for uid, entries in by_uid.items():
        item = (session.scalar(select(Item).where(Item.project_id == project.id,
                                                  Item.external_id == uid))
                if uid in existing else None)
        previous = _stored_instances(session, blobs, item) if item is not None else []
        series, refused = split_series([e.image for e in previous + entries])
        if refused:
            names = ", ".join(e.image.info.source for e in entries[:3])
            more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
            for why in refused:
                report.refused.append((f"{names}{more}", why.reason))
            continue
        order = {str(uid_): k for k, uid_ in enumerate(series[0].info.sop_instance_uids)}
        ordered = sorted(previous + entries,
                         key=lambda e: order.get(str(e.image.info.sop_instance_uid), 0))
        if item is None:
            _add_item(session, project, ordered, uid, existing, report, series=series[0])
        else:
            _extend_item(session, project, item, ordered, entries, report, series[0])


def _stored_instances(session: Session, blobs: BlobStore, item: Item) -> list[_Stored]:
    """The instances already stored for a series item, read back (headers only)."""
    rows = session.scalars(select(ImagingInstance).where(ImagingInstance.item_id == item.id))
    out = []
    for row in rows:
        image = read_dicom(blobs.get_bytes(row.sha256), name=row.sop_instance_uid)
        image.dataset.pop("PixelData", None)
        out.append(_Stored(image, row.sha256, []))
    return out


def _item_attributes(first: Any, series: Any, reasons: list[str],
                     settings: ImagingSettings) -> dict[str, Any]:
    spacing = list(series.spacing) if series is not None else list(first.spacing)
    attributes: dict[str, Any] = {
        "study_instance_uid": first.study_instance_uid,
        "series_instance_uid": first.series_instance_uid,
        "spacing": spacing,
        "orientation": list(first.orientation) if first.orientation else None,
        "deidentification": settings.deid.standard,
    }
    if series is not None:
        attributes["shape"] = list(series.shape)
        attributes["sop_class_uid"] = first.sop_class_uid
    else:
        attributes["sop_instance_uid"] = first.sop_instance_uid
        attributes["shape"] = [first.frames, first.rows, first.columns]
    if reasons:
        attributes["quarantine_reasons"] = reasons
    return attributes


def _add_item(
    session: Session, project: Project, group: list[_Stored], external_id: str,
    existing: set[str], report: MedicalImport, *, series: Any,
) -> None:
    if external_id in existing:
        report.skipped.append((external_id, "already imported"))
        return
    first = group[0].image.info
    settings = imaging_settings(project.settings)
    reasons = sorted({r for entry in group for r in entry.reasons})
    item = Item(
        project_id=project.id,
        external_id=external_id,
        kind="series" if len(group) > 1 or first.frames > 1 else "image",
        media=_media(group),
        modality=first.modality,
        body_part=first.body_part,
        manufacturer=first.manufacturer,
        patient_pseudonym=str(group[0].image.dataset.get("PatientID", "")) or None,
        sex=_sex(group[0].image.dataset),
        attributes=_item_attributes(first, series.info if series is not None else None,
                                    reasons, settings),
        status="quarantined" if reasons else "active",
    )
    session.add(item)
    session.add_all(_instance_row(project, item, entry) for entry in group)
    existing.add(external_id)
    report.instances.extend(str(e.image.info.sop_instance_uid) for e in group)
    if reasons:
        report.quarantined.append((external_id, "; ".join(reasons)))
    else:
        report.ingested.append(external_id)


def _extend_item(
    session: Session, project: Project, item: Item, ordered: list[_Stored],
    new: list[_Stored], report: MedicalImport, series: Any,
) -> None:
    """Add instances to a series item imported before. New instances that may show
    identity put the item (back) in quarantine; otherwise its status and any earlier
    quarantine decision stay."""
    settings = imaging_settings(project.settings)
    fresh = sorted({r for entry in new for r in entry.reasons})
    reasons = sorted(set(fresh) | set(item.attributes.get("quarantine_reasons", [])))
    item.media = _media(ordered)
    item.kind = "series"
    item.attributes = {**(item.attributes or {}),
                       **_item_attributes(ordered[0].image.info, series.info, reasons,
                                          settings)}
    if fresh:
        item.status = "quarantined"
    session.add_all(_instance_row(project, item, entry) for entry in new)
    report.instances.extend(str(e.image.info.sop_instance_uid) for e in new)
    if fresh:
        report.quarantined.append((item.external_id, "; ".join(fresh)))
    else:
        report.ingested.append(item.external_id)


def _sex(ds: Dataset) -> str | None:
    value = str(ds.get("PatientSex", "") or "").strip().upper()
    return value if value in ("F", "M", "O") else None


def _ingest_nifti(
    session: Session, blobs: BlobStore, project: Project, source: Source, existing: set[str],
    report: MedicalImport,
) -> None:
    """Store a NIfTI volume with its free-text header fields and extensions removed (they can
    hold names, or a whole DICOM header)."""
    raw = source.data
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"not a gzip file: {exc}", source=source.name) from exc
    image: nib.Nifti1Image | nib.Nifti2Image | None = None
    problem: Exception | None = None
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = kind.from_bytes(raw)
            break
        except Exception as exc:  # nibabel raises many types for bad headers
            problem = exc
    if image is None:
        raise InputError(f"not a readable NIfTI file: {problem}", source=source.name)
    for name in ("descrip", "aux_file", "db_name", "intent_name"):
        if name in image.header:
            image.header[name] = b""
    image.header.extensions.clear()
    try:
        data = image.to_bytes()
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"truncated or unreadable NIfTI data: {exc}",
                         source=source.name) from exc
    checked = read_nifti_bytes(data, source.name)
    external_id = source.name
    if external_id in existing:
        report.skipped.append((external_id, "already imported"))
        return
    digest = blobs.put_bytes(data)
    session.add(Item(
        project_id=project.id, external_id=external_id, kind="volume",
        media=[{"sha256": digest, "media_type": NIFTI_MEDIA_TYPE,
                "name": Path(external_id).name}],
        attributes={"shape": list(checked["shape"]), "spacing": list(checked["spacing"]),
                    "affine": checked["affine"]},
    ))
    existing.add(external_id)
    report.ingested.append(external_id)


def read_nifti_bytes(data: bytes, name: str) -> dict[str, Any]:
    """Shape, spacing and affine of NIfTI bytes, through :func:`truthset.imaging.read_nifti`."""
    with tempfile.NamedTemporaryFile(suffix=".nii") as fh:
        fh.write(data)
        fh.flush()
        try:
            volume = read_nifti(fh.name)
            volume.data()
        except InputError as exc:
            raise InputError(exc.reason, source=name) from exc
    return {"shape": volume.info.shape, "spacing": volume.info.spacing,
            "affine": [list(row) for row in volume.info.affine]}


def read_header(data: bytes) -> Dataset:
    """The header of stored DICOM bytes (pixels not read)."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
