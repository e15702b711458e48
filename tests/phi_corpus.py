"""A deterministic corpus of PHI-laden DICOM files (all 18 HIPAA Safe Harbor identifier
kinds in headers, nested sequences and private tags), and a scanner that finds them."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from test_imaging_deid import PLANTED, phi_dataset

#: Root of the corpus' original UIDs (they identify the study too and must not survive).
UID_ROOT = "1.2.826.0.1.3680043.2.1125.4242"


def planted_values() -> list[str]:
    """Every planted identifying value, the original UIDs included."""
    values = [v for group in PLANTED.values() for v in group]
    base = phi_dataset()
    values += [base.StudyInstanceUID, base.FrameOfReferenceUID,
               f"{UID_ROOT}.1", f"{UID_ROOT}.2"]
    return sorted({v.lower() for v in values})


def phi_instance(k: int, *, modality: str = "CT", series: int = 1) -> Dataset:
    """Instance ``k`` of a PHI-laden series: CT_small with everything planted, its own SOP
    Instance UID and slice position (so a set of them forms a valid series)."""
    ds = phi_dataset()
    ds.SOPInstanceUID = f"{UID_ROOT}.{series}.{k + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = f"{UID_ROOT}.{series}"
    ds.InstanceNumber = k + 1
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * k]
    ds.SliceThickness = "5"
    if modality != "CT":
        ds.Modality = modality
        if "BurnedInAnnotation" in ds:
            del ds.BurnedInAnnotation
    return ds


def write_corpus(folder: Path, *, ct: int = 4, us: int = 1, truncated: int = 1) -> list[Path]:
    """Write ``ct`` instances of one CT series, ``us`` ultrasound instances (quarantined on
    import) and ``truncated`` cut-off copies (refused) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(ct):
        path = folder / f"ct_{k:03d}.dcm"
        phi_instance(k).save_as(path, enforce_file_format=True)
        paths.append(path)
    for k in range(us):
        path = folder / f"us_{k:03d}.dcm"
        phi_instance(k, modality="US", series=2).save_as(path, enforce_file_format=True)
        paths.append(path)
    for k in range(truncated):
        whole = copy.deepcopy(phi_instance(100 + k))
        full = folder / f"cut_{k:03d}.tmp"
        whole.save_as(full, enforce_file_format=True)
        data = full.read_bytes()
        full.unlink()
        path = folder / f"cut_{k:03d}.dcm"
        path.write_bytes(data[: len(data) - 3000])
        paths.append(path)
    return paths


def survivors(blobs: Iterable[bytes | str], values: Iterable[str] | None = None) -> list[str]:
    """The planted values found (case-insensitively) in any of ``blobs``.

    A value made only of digits (a ZIP code, a date) counts where it stands as a number of its
    own, not inside a longer run of digits: a fresh random UID (``2.25.<39 digits>``) contains
    a given 5-digit string about once in 3,000 UIDs, which is chance, not a leak.
    """
    wanted = [v.lower() for v in (values or planted_values())]
    patterns = {v: re.compile(rb"(?<![0-9])" + re.escape(v.encode()) + rb"(?![0-9])")
                for v in wanted if v.isdigit()}
    found: set[str] = set()
    for blob in blobs:
        text = blob.lower() if isinstance(blob, bytes) else blob.lower().encode()
        found.update(v for v in wanted
                     if (patterns[v].search(text) if v in patterns else v.encode() in text))
    return sorted(found)
