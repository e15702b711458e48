"""Builders of small DICOM test data from pydicom's bundled files (shared by imaging tests)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def bundled(name: str) -> str:
    """Path of one of pydicom's bundled (or pydicom-data) test files."""
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not installed"
    return str(path)


def make_series(
    folder: Path,
    *,
    slices: int = 6,
    spacing: float = 2.5,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    order: Sequence[int] | None = None,
    base: str = "CT_small.dcm",
) -> tuple[list[Path], np.ndarray]:
    """Slice a volume into single-frame CT instances written to ``folder``.

    Each slice k holds the base image's stored values plus ``10 * k`` so sorting can be
    checked. Files are written in ``order`` (default: reversed) so the reader must sort.

    Returns
    -------
    (paths, volume)
        The file paths, and the expected stored volume in slice order ``(k, rows, cols)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(bundled(base))
    stored = src.pixel_array.astype(np.int16)
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row_dir, col_dir)
    origin = np.asarray([float(v) for v in src.ImagePositionPatient])
    series_uid = generate_uid()
    frame_uid = generate_uid()
    volume = np.stack([stored + np.int16(10 * k) for k in range(slices)])
    paths = []
    for k in order if order is not None else reversed(range(slices)):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = slices - k  # deliberately not the geometric order
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        pos = origin + normal * spacing * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.SliceThickness = f"{spacing}"
        ds.PixelData = volume[k].tobytes()
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths, volume


def without_pixels(src: str) -> Dataset:
    """A copy of a file's dataset with its Pixel Data removed."""
    ds = pydicom.dcmread(src)
    del ds.PixelData
    return ds
