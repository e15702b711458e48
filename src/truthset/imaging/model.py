"""Typed, immutable descriptions of images, series and volumes.

These objects carry what the rest of Truthset needs to know about an image without holding a
pydicom dataset or a pixel array: identity (UIDs), what it is (modality, body part, maker), its
pixel grid (rows, columns, frames, dtype, photometric interpretation, transfer syntax) and its
geometry (spacing and orientation).

Conventions
-----------
* ``spacing`` is ``(row, column, slice)`` in millimetres: ``row`` is the distance between the
  centres of adjacent rows (DICOM PixelSpacing[0]), ``column`` between adjacent columns
  (PixelSpacing[1]), ``slice`` between adjacent slices (``None`` when unknown).
* ``orientation`` is DICOM ImageOrientationPatient: the six direction cosines of the row
  direction (towards increasing column index) then the column direction, in the LPS patient
  frame.
* ``affine`` of a :class:`SeriesInfo` is a 4x4 matrix (row-major nested tuples) that maps the
  index ``(slice, row, column, 1)`` of the series volume (numpy shape ``(slices, rows,
  columns)``) to LPS patient coordinates in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

Vector3 = tuple[float, float, float]
Matrix4 = tuple[
    tuple[float, float, float, float],
    tuple[float, float, float, float],
    tuple[float, float, float, float],
    tuple[float, float, float, float],
]


@dataclass(frozen=True)
class ImageInfo:
    """What one DICOM instance (single or multi-frame) is, without its pixels.

    Parameters
    ----------
    source:
        Where it was read from (a path, or ``"<bytes>"``).
    modality, body_part, manufacturer:
        Modality (0008,0060), Body Part Examined (0018,0015), Manufacturer (0008,0070).
    study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid:
        Identity of the instance.
    rows, columns, frames:
        Pixel grid; ``frames`` is 1 for single-frame images.
    samples_per_pixel:
        1 for grey-scale, 3 for colour.
    spacing:
        ``(row, column, slice)`` in mm; any part is ``None`` when the file does not say.
    orientation:
        ImageOrientationPatient (6 cosines), or ``None``.
    position:
        ImagePositionPatient of the first frame (mm, LPS), or ``None``.
    pixel_dtype:
        numpy dtype name of the stored values (``"uint16"``, ``"int16"``, ``"uint8"``...).
    photometric_interpretation:
        ``"MONOCHROME1"``, ``"MONOCHROME2"``, ``"RGB"``, ``"YBR_FULL_422"``...
    transfer_syntax_uid, transfer_syntax_name:
        Encoding of the pixel data (UID and its name).
    instance_number:
        InstanceNumber (0020,0013) when present.
    """

    source: str
    modality: str | None
    body_part: str | None
    manufacturer: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    spacing: tuple[float | None, float | None, float | None]
    orientation: tuple[float, float, float, float, float, float] | None
    position: Vector3 | None
    pixel_dtype: str
    photometric_interpretation: str | None
    transfer_syntax_uid: str | None
    transfer_syntax_name: str | None
    instance_number: int | None = None


@dataclass(frozen=True)
class SeriesInfo:
    """A geometrically consistent, sorted DICOM series.

    Parameters
    ----------
    study_instance_uid, series_instance_uid:
        Identity of the series.
    modality, body_part, manufacturer:
        Copied from the first instance.
    shape:
        ``(slices, rows, columns)`` of the volume.
    spacing:
        ``(row, column, slice)`` in mm; ``slice`` is measured between sorted positions
        (``None`` for a one-slice series without SliceThickness).
    orientation:
        ImageOrientationPatient shared by every slice.
    origin:
        ImagePositionPatient of the first slice after sorting (mm, LPS).
    affine:
        4x4 matrix mapping ``(slice, row, column, 1)`` to LPS millimetres.
    sop_instance_uids:
        Instances in slice order.
    pixel_dtype:
        dtype of the stored values of the first instance.
    """

    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    body_part: str | None
    manufacturer: str | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float | None]
    orientation: tuple[float, float, float, float, float, float]
    origin: Vector3
    affine: Matrix4
    sop_instance_uids: tuple[str, ...]
    pixel_dtype: str


@dataclass(frozen=True)
class VolumeInfo:
    """Geometry of a NIfTI volume as nibabel reports it.

    Parameters
    ----------
    source:
        The path read.
    shape:
        Array shape as stored (``(i, j, k)`` or ``(i, j, k, t)``).
    spacing:
        Voxel sizes (nibabel ``header.get_zooms()``), one per axis.
    affine:
        4x4 matrix mapping ``(i, j, k, 1)`` to RAS+ millimetres (nibabel's convention).
    dtype:
        numpy dtype name of the data on disk.
    axis_codes:
        Orientation letters of the voxel axes (for example ``("R", "A", "S")``).
    """

    source: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: Matrix4
    dtype: str
    axis_codes: tuple[str, ...]


@dataclass(frozen=True)
class RasterInfo:
    """What a 2D raster image (PNG, JPEG, TIFF...) is.

    Parameters
    ----------
    source:
        The path read, or ``"<bytes>"``.
    format:
        Pillow's format name (``"PNG"``, ``"JPEG"``, ``"TIFF"``).
    width, height:
        Size in pixels.
    mode:
        Pillow mode (``"L"``, ``"RGB"``, ``"I;16"``...).
    frames:
        Number of frames (pages of a TIFF, frames of an animated PNG).
    """

    source: str
    format: str
    width: int
    height: int
    mode: str
    frames: int


def as_matrix4(rows: object) -> Matrix4:
    """Turn a 4x4 array-like into the nested-tuple :data:`Matrix4` form.

    Parameters
    ----------
    rows:
        Anything numpy can turn into a 4x4 float array.

    Returns
    -------
    Matrix4
        Row-major nested tuples of Python floats.
    """
    import numpy as np

    arr = np.asarray(rows, dtype=float).reshape(4, 4)
    return tuple(tuple(float(v) for v in row) for row in arr)  # type: ignore[return-value]
