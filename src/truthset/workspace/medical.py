"""Ingesting DICOM and NIfTI as items: de-identified on the way in, never stored raw.

Order of work for every DICOM file: read (refuse non-DICOM, truncated, pixel-less files) →
de-identify in memory (PS3.15 basic profile + the project's options; patient identity replaced
by a pseudonym from the vault) → only then write the de-identified bytes to the blob store.
The original bytes are never written anywhere, so a process killed mid-import leaves nothing
identifiable behind. The original ↔ pseudonym and UID maps go to the pseudonym vault, a
separate database.

Images that may carry identity burned into the pixels (BurnedInAnnotation YES, or absent on
ultrasound, secondary capture and screenshots) become items with status ``quarantined``:
readers never get them until a person clears or redacts them.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import pydicom
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
from truthset.store.models import Item, Project
from truthset.store.pseudonyms import PseudonymVault

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_MEDIA_TYPE = "application/dicom"
NIFTI_MEDIA_TYPE = "application/x-nifti"


@dataclass(frozen=True)
class Source:
    """One file to ingest: a display name (never a patient identifier) and its bytes."""

    name: str
    data: bytes


@dataclass
class MedicalImport:
    """What :func:`ingest_medical` did."""

    ingested: list[str]
    quarantined: list[tuple[str, str]]
    refused: list[tuple[str, str]]
    skipped: list[tuple[str, str]]


def is_nifti(name: str) -> bool:
    """Whether ``name`` looks like a NIfTI file."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def _deid_options(settings: ImagingSettings) -> DeidOptions:
    d = settings.deid
    return DeidOptions(
        retain_longitudinal_modified_dates=d.retain_longitudinal_modified_dates,
        retain_patient_characteristics=d.retain_patient_characteristics,
        clean_descriptors=d.clean_descriptors,
    )


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _deidentified(
    source: Source, vault: PseudonymVault, project_key: str, settings: ImagingSettings,
    secret: bytes,
) -> tuple[DicomImage, bytes, list[str]]:
    """Read, de-identify and re-read one DICOM file; return the de-identified image, its
    bytes and burned-in-identity reasons (empty when none)."""
    original = read_dicom(source.data, name=source.name)
    ds = original.dataset
    patient_key = str(ds.get("PatientID", "") or "") or f"no-id:{ds.get('StudyInstanceUID', '')}"
    pseudonym = vault.derive(project_key, "patient", patient_key)
    offset = (
        patient_date_offset(secret, patient_key)
        if settings.deid.retain_longitudinal_modified_dates
        else None
    )
    result = deidentify(ds, secret=secret, pseudonym=pseudonym, date_offset_days=offset,
                        options=_deid_options(settings))
    vault.remember(project_key, "uid", dict(result.record.uid_map))
    data = _dicom_bytes(result.dataset)
    clean = read_dicom(data, name=source.name)
    return clean, data, burned_in_reasons(result.dataset)


def _media(images: Iterable[DicomImage], digests: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for image in images:
        info = image.info
        out.append({
            "sha256": digests[str(info.sop_instance_uid)],
            "media_type": DICOM_MEDIA_TYPE,
            "sop_instance_uid": info.sop_instance_uid,
            "frames": info.frames,
            "rows": info.rows,
            "columns": info.columns,
        })
    return out


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
    decides whether refusals abort the transaction.
    """
    settings = imaging_settings(project.settings)
    secret = vault.project_secret(project.key)
    report = MedicalImport([], [], [], [])
    existing = set(session.scalars(select(Item.external_id).where(Item.project_id == project.id)))
    images: list[DicomImage] = []
    digests: dict[str, str] = {}
    quarantine: dict[str, list[str]] = {}
    for number, source in enumerate(sources, start=1):
        try:
            if is_nifti(source.name):
                _ingest_nifti(session, blobs, project, source, existing, report)
            else:
                image, data, reasons = _deidentified(source, vault, project.key, settings,
                                                     secret)
                sop = str(image.info.sop_instance_uid)
                digests[sop] = blobs.put_bytes(data)
                images.append(image)
                if reasons:
                    quarantine[sop] = reasons
        except InputError as exc:
            report.refused.append((source.name, exc.reason))
        finally:
            if progress:
                progress(number)
    if settings.dicom_item == DicomItem.INSTANCE:
        groups = [[image] for image in images]
    else:
        series, refused = split_series(images)
        report.refused.extend((why.source or "series", why.reason) for why in refused)
        groups = [[image for image, _frame in s.slices] for s in series]
        groups = [list(dict.fromkeys(g)) for g in groups]  # multi-frame: one instance once
    for group in groups:
        first = group[0].info
        external_id = str(
            first.series_instance_uid if settings.dicom_item == DicomItem.SERIES
            else first.sop_instance_uid
        )
        if external_id in existing:
            report.skipped.append((external_id, "already imported"))
            continue
        reasons = sorted({r for image in group
                          for r in quarantine.get(str(image.info.sop_instance_uid), [])})
        item = Item(
            project_id=project.id,
            external_id=external_id,
            kind="series" if len(group) > 1 or first.frames > 1 else "image",
            media=_media(group, digests),
            modality=first.modality,
            body_part=first.body_part,
            manufacturer=first.manufacturer,
            patient_pseudonym=str(group[0].dataset.get("PatientID", "")) or None,
            attributes={
                "study_instance_uid": first.study_instance_uid,
                "series_instance_uid": first.series_instance_uid,
                "spacing": list(first.spacing),
                "orientation": list(first.orientation) if first.orientation else None,
                "deidentification": settings.deid.standard,
                **({"quarantine_reasons": reasons} if reasons else {}),
            },
            status="quarantined" if reasons else "active",
        )
        session.add(item)
        existing.add(external_id)
        if reasons:
            report.quarantined.append((external_id, "; ".join(reasons)))
        else:
            report.ingested.append(external_id)
    session.flush()
    return report


def _ingest_nifti(
    session: Session, blobs: BlobStore, project: Project, source: Source, existing: set[str],
    report: MedicalImport,
) -> None:
    """Store a NIfTI volume with its free-text header fields blanked (they can hold names)."""
    raw = source.data
    if source.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise InputError(f"not a gzip file: {exc}", source=source.name) from exc
    try:
        image = nib.Nifti1Image.from_bytes(raw)
    except Exception as exc:  # nibabel raises many types for bad headers
        raise InputError(f"not a readable NIfTI file: {exc}", source=source.name) from exc
    header = image.header
    for field in ("descrip", "aux_file", "db_name"):
        if field in header:
            header[field] = b""
    clean = nib.Nifti1Image(image.dataobj, image.affine, header)
    data = clean.to_bytes()
    checked = read_nifti_bytes(data, source.name)
    external_id = Path(source.name).name
    if external_id in existing:
        report.skipped.append((external_id, "already imported"))
        return
    digest = blobs.put_bytes(data)
    session.add(Item(
        project_id=project.id, external_id=external_id, kind="volume",
        media=[{"sha256": digest, "media_type": NIFTI_MEDIA_TYPE, "name": external_id}],
        attributes={"shape": list(checked["shape"]), "spacing": list(checked["spacing"])},
    ))
    existing.add(external_id)
    report.ingested.append(external_id)


def read_nifti_bytes(data: bytes, name: str) -> dict[str, Any]:
    """Shape and spacing of NIfTI bytes, through :func:`truthset.imaging.read_nifti`."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".nii") as fh:
        fh.write(data)
        fh.flush()
        try:
            volume = read_nifti(fh.name)
        except InputError as exc:
            raise InputError(exc.reason, source=name) from exc
    return {"shape": volume.info.shape, "spacing": volume.info.spacing}
