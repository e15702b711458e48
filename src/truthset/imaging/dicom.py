"""Read DICOM instances, group them into series and build volumes.

Everything here is plain file/bytes in, typed objects and numpy arrays out. Nothing knows about
projects or storage.

* :func:`read_dicom` reads one instance with pydicom (``force=False``: a file without the DICOM
  preamble/prefix is refused), checks that it carries pixel data and that the pixel data is
  complete, and returns a :class:`DicomImage`.
* :meth:`DicomImage.pixels` decodes pixels through pydicom's pixel handlers (native, RLE,
  JPEG, JPEG-LS, JPEG 2000 through pylibjpeg / pyjpegls / GDCM) and applies the modality LUT
  (RescaleSlope / RescaleIntercept, or a Modality LUT Sequence).
* :func:`group_series` groups instances into series, sorts slices along the slice normal
  (ImagePositionPatient projected on the cross product of the ImageOrientationPatient
  cosines), refuses series whose geometry is inconsistent, and builds the volume and its
  affine.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.pixels.utils import get_expected_length

from truthset.domain.errors import InputError
from truthset.imaging.model import ImageInfo, SeriesInfo, Vector3, as_matrix4

DicomSource = str | os.PathLike[str] | bytes | BinaryIO

#: Relative tolerance for "same" spacing and orientation between slices.
GEOMETRY_TOLERANCE = 1e-3
#: Largest allowed deviation of one slice gap from the median gap, as a fraction of the median.
SLICE_GAP_TOLERANCE = 0.05

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: Largest rows x columns x frames x samples one instance may declare (decoding would need
#: that many values in memory).
MAX_SAMPLES = 1 << 30


@dataclass(frozen=True)
class FrameGeometry:
    """Where one frame lies in the patient frame.

    Parameters
    ----------
    position:
        ImagePositionPatient of the frame's first pixel (mm, LPS), or ``None``.
    orientation:
        ImageOrientationPatient (6 cosines), or ``None``.
    pixel_spacing:
        ``(row, column)`` spacing in mm, or ``None``.
    slice_thickness:
        SliceThickness in mm, or ``None``.
    """

    position: Vector3 | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None


@dataclass
class DicomImage:
    """One DICOM instance read from a file or bytes.

    Parameters
    ----------
    info:
        The typed description of the instance.
    dataset:
        The pydicom dataset (with its pixel data, not yet decoded).
    """

    info: ImageInfo
    dataset: Dataset
    _frames: tuple[FrameGeometry, ...] = field(default=(), repr=False)

    @property
    def frame_geometry(self) -> tuple[FrameGeometry, ...]:
        """Geometry of every frame (one entry for single-frame images)."""
        if not self._frames:
            self._frames = tuple(_frame_geometry(self.dataset, self.info.frames))
        return self._frames

    def stored_pixels(self) -> np.ndarray:
        """Decode the stored pixel values (no modality LUT).

        Returns
        -------
        numpy.ndarray
            ``(rows, columns)``, ``(frames, rows, columns)`` or with a trailing samples axis
            for colour; colour is converted to RGB.

        Raises
        ------
        InputError
            When no installed decoder handles the transfer syntax or the data is corrupt.
        """
        try:
            return np.asarray(pixel_array(self.dataset))
        except Exception as exc:  # pydicom raises many kinds; all mean "cannot decode"
            raise InputError(
                f"cannot decode pixel data ({self.info.transfer_syntax_name}): {exc}",
                source=self.info.source,
                field="PixelData",
            ) from exc

    def pixels(self) -> np.ndarray:
        """Decode pixels and apply the modality LUT (rescale slope/intercept).

        Returns
        -------
        numpy.ndarray
            Grey-scale images come back as float32 in modality units (Hounsfield units for
            CT) when a rescale is present, in the stored dtype otherwise. Colour images are
            returned unchanged (RGB, uint8).
        """
        arr = self.stored_pixels()
        if self.info.samples_per_pixel != 1:
            return arr
        ds = self.dataset
        if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
            return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        rescale = _functional_rescale(ds, self.info.frames)
        if rescale is None:
            return arr
        slopes, intercepts = rescale
        out = arr.astype(np.float32)
        if out.ndim == 2:
            return out * np.float32(slopes[0]) + np.float32(intercepts[0])
        shape = (-1,) + (1,) * (out.ndim - 1)
        return out * slopes.reshape(shape) + intercepts.reshape(shape)


def read_dicom(source: DicomSource, *, name: str | None = None) -> DicomImage:
    """Read one DICOM instance that carries pixel data.

    Parameters
    ----------
    source:
        A path, the file's bytes, or a binary file object.
    name:
        What to call the source in error messages (defaults to the path or ``"<bytes>"``).

    Returns
    -------
    DicomImage
        The dataset and its :class:`~truthset.imaging.model.ImageInfo`.

    Raises
    ------
    InputError
        Not a DICOM Part 10 file, truncated, no pixel data, or a pixel grid that does not
        add up. The message names the file and the reason.
    """
    label = name or _source_label(source)
    fileobj: Any
    if isinstance(source, bytes | bytearray | memoryview):
        fileobj = io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise InputError("file does not exist", source=label)
        fileobj = str(path)
    else:
        fileobj = source
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(fileobj, force=False)
        except InvalidDicomError as exc:
            raise InputError(f"not a DICOM file ({exc})", source=label) from exc
        except (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            raise InputError(f"unreadable or truncated DICOM file ({exc})", source=label) from exc
    for w in caught:
        text = str(w.message)
        if "End of file" in text or "delimiter" in text.lower():
            raise InputError(f"truncated DICOM file: {text}", source=label)
    _check_element_lengths(ds, label)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise InputError(
            "no Transfer Syntax UID in the file meta information (truncated header?)",
            source=label,
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise InputError(
            "no Pixel Data (7FE0,0010): not an image object, or the file is truncated",
            source=label,
            field="PixelData",
        )
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise InputError(f"missing {keyword}", source=label, field=keyword)
    _check_dimensions(ds, label)
    _check_pixel_length(ds, label)
    return DicomImage(info=image_info(ds, source=label), dataset=ds)


def image_info(ds: Dataset, source: str = "<dataset>") -> ImageInfo:
    """Describe a dataset as an :class:`~truthset.imaging.model.ImageInfo`.

    Parameters
    ----------
    ds:
        A pydicom dataset with an image pixel module.
    source:
        What to record as the source.

    Returns
    -------
    ImageInfo
        Identity, pixel grid and geometry of the instance.
    """
    frames = _int(ds.get("NumberOfFrames")) or 1
    geometry = _frame_geometry(ds, 1)[0]
    spacing_between = _float(ds.get("SpacingBetweenSlices"))
    row_sp, col_sp = geometry.pixel_spacing or (None, None)
    if geometry.pixel_spacing is None and "ImagerPixelSpacing" in ds:
        imager = _floats(ds.ImagerPixelSpacing, 2)
        if imager is not None:
            row_sp, col_sp = imager
    slice_sp = spacing_between if spacing_between else geometry.slice_thickness
    meta = getattr(ds, "file_meta", Dataset())
    ts = meta.get("TransferSyntaxUID")
    return ImageInfo(
        source=source,
        modality=_str(ds.get("Modality")),
        body_part=_str(ds.get("BodyPartExamined")),
        manufacturer=_str(ds.get("Manufacturer")),
        study_instance_uid=_str(ds.get("StudyInstanceUID")),
        series_instance_uid=_str(ds.get("SeriesInstanceUID")),
        sop_instance_uid=_str(ds.get("SOPInstanceUID")),
        sop_class_uid=_str(ds.get("SOPClassUID")),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=frames,
        samples_per_pixel=_int(ds.get("SamplesPerPixel")) or 1,
        spacing=(row_sp, col_sp, slice_sp),
        orientation=geometry.orientation,
        position=geometry.position,
        pixel_dtype=_stored_dtype(ds),
        photometric_interpretation=_str(ds.get("PhotometricInterpretation")),
        transfer_syntax_uid=str(ts) if ts else None,
        transfer_syntax_name=ts.name if ts else None,
        instance_number=_int(ds.get("InstanceNumber")),
    )


@dataclass
class DicomSeries:
    """A sorted, geometrically consistent series and the instances it came from.

    Parameters
    ----------
    info:
        Geometry and identity of the series.
    slices:
        ``(image, frame index)`` pairs in slice order (frame index is 0 for single-frame
        instances).
    has_geometry:
        False when the instances carry no ImagePositionPatient/ImageOrientationPatient (for
        example CR or secondary capture); the affine is then a plain scaling.
    """

    info: SeriesInfo
    slices: tuple[tuple[DicomImage, int], ...]
    has_geometry: bool = True

    @property
    def affine(self) -> np.ndarray:
        """4x4 affine mapping ``(slice, row, column, 1)`` to LPS mm."""
        return np.asarray(self.info.affine, dtype=float)

    def volume(self) -> np.ndarray:
        """Decode every slice and stack them in slice order (modality LUT applied).

        Returns
        -------
        numpy.ndarray
            ``(slices, rows, columns)`` (a trailing samples axis for colour).
        """
        cache: dict[int, np.ndarray] = {}
        planes: list[np.ndarray] = []
        for image, frame in self.slices:
            key = id(image)
            if key not in cache:
                cache[key] = image.pixels()
            arr = cache[key]
            many = image.info.frames > 1
            planes.append(arr[frame] if many else arr)
        stacked = np.stack(planes, axis=0)
        return stacked.astype(np.float32) if stacked.dtype.kind == "f" else stacked


def read_series(paths: Iterable[DicomSource]) -> list[DicomSeries]:
    """Read files and group them into series (see :func:`group_series`).

    Parameters
    ----------
    paths:
        Paths (or bytes) of DICOM instances.

    Returns
    -------
    list of DicomSeries
        One per SeriesInstanceUID, in first-seen order.
    """
    return group_series(read_dicom(p) for p in paths)


def group_series(images: Iterable[DicomImage]) -> list[DicomSeries]:
    """Group instances by SeriesInstanceUID, sort slices and check geometry.

    Slices are sorted by their ImagePositionPatient projected on the slice normal
    (``row cosines x column cosines``). Every slice must share rows, columns, pixel spacing and
    orientation; positions must be distinct and evenly spaced (within
    :data:`SLICE_GAP_TOLERANCE`). Instances without position/orientation are stacked by
    InstanceNumber and marked ``has_geometry=False``.

    Parameters
    ----------
    images:
        Instances, in any order.

    Returns
    -------
    list of DicomSeries
        One per series, in first-seen order.

    Raises
    ------
    InputError
        When a series mixes sizes, spacings or orientations, repeats a position, or has
        uneven slice gaps; the message names the series and the reason.
    """
    return [_build_series(uid, members) for uid, members in _by_series(images).items()]


def split_series(
    images: Iterable[DicomImage],
) -> tuple[list[DicomSeries], list[InputError]]:
    """Like :func:`group_series`, but collect the refused series instead of raising.

    Parameters
    ----------
    images:
        Instances, in any order.

    Returns
    -------
    (series, refused)
        The consistent series, and one :class:`InputError` per refused series (its
        ``source`` names the series, its ``reason`` says why).
    """
    good: list[DicomSeries] = []
    refused: list[InputError] = []
    for uid, members in _by_series(images).items():
        try:
            good.append(_build_series(uid, members))
        except InputError as exc:
            refused.append(exc)
    return good, refused


def _by_series(images: Iterable[DicomImage]) -> dict[str, list[DicomImage]]:
    groups: dict[str, list[DicomImage]] = {}
    for image in images:
        key = image.info.series_instance_uid or f"<no series uid: {image.info.source}>"
        groups.setdefault(key, []).append(image)
    return groups


def _build_series(uid: str, members: Sequence[DicomImage]) -> DicomSeries:
    label = f"series {uid}"
    first = members[0].info
    slices: list[tuple[DicomImage, int, FrameGeometry]] = []
    for image in members:
        member = image.info
        if (member.rows, member.columns, member.samples_per_pixel) != (
            first.rows,
            first.columns,
            first.samples_per_pixel,
        ):
            raise InputError(
                "inconsistent pixel grid: "
                f"{member.rows}x{member.columns}x{member.samples_per_pixel} "
                f"in {member.source} but {first.rows}x{first.columns}x{first.samples_per_pixel} "
                f"in {first.source}",
                source=label,
            )
        for index, geom in enumerate(image.frame_geometry):
            slices.append((image, index, geom))

    with_geometry = [s for s in slices if s[2].position is not None and s[2].orientation]
    if with_geometry and len(with_geometry) != len(slices):
        raise InputError(
            "some slices have ImagePositionPatient/ImageOrientationPatient and some do not",
            source=label,
        )
    if not with_geometry:
        return _series_without_geometry(uid, members, slices)

    ref = slices[0][2]
    assert ref.orientation is not None
    for image, frame, geom in slices:
        where = f"{image.info.source} frame {frame + 1}"
        assert geom.orientation is not None
        if not np.allclose(geom.orientation, ref.orientation, atol=GEOMETRY_TOLERANCE):
            raise InputError(
                f"inconsistent ImageOrientationPatient: {list(geom.orientation)} at {where}, "
                f"{list(ref.orientation)} elsewhere",
                source=label,
            )
        if (geom.pixel_spacing is None) != (ref.pixel_spacing is None) or (
            geom.pixel_spacing is not None
            and ref.pixel_spacing is not None
            and not np.allclose(geom.pixel_spacing, ref.pixel_spacing, rtol=GEOMETRY_TOLERANCE)
        ):
            raise InputError(
                f"inconsistent PixelSpacing: {geom.pixel_spacing} at {where}, "
                f"{ref.pixel_spacing} elsewhere",
                source=label,
            )
    row_dir = np.asarray(ref.orientation[:3], dtype=float)
    col_dir = np.asarray(ref.orientation[3:], dtype=float)
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 0.5:
        raise InputError(
            f"ImageOrientationPatient {list(ref.orientation)} is not two orthogonal unit vectors",
            source=label,
        )
    normal /= np.linalg.norm(normal)
    distances = np.array([float(np.dot(normal, s[2].position)) for s in slices])  # type: ignore[arg-type]
    order = np.argsort(distances, kind="stable")
    slices = [slices[i] for i in order]
    distances = distances[order]
    slice_spacing: float | None
    if len(slices) > 1:
        gaps = np.diff(distances)
        if np.any(gaps < 1e-4):
            i = int(np.argmin(gaps))
            raise InputError(
                "two slices share one position "
                f"({slices[i][0].info.source} and {slices[i + 1][0].info.source}): "
                "several acquisitions or duplicates in one series",
                source=label,
            )
        median = float(np.median(gaps))
        worst = float(np.max(np.abs(gaps - median)))
        if worst > max(1e-3, SLICE_GAP_TOLERANCE * median):
            raise InputError(
                f"uneven slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
                "(missing slices?)",
                source=label,
            )
        slice_spacing = median
    else:
        slice_spacing = ref.slice_thickness
    row_sp, col_sp = ref.pixel_spacing or (1.0, 1.0)
    origin = np.asarray(slices[0][2].position, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = normal * (slice_spacing or 1.0)
    affine[:3, 1] = col_dir * row_sp
    affine[:3, 2] = row_dir * col_sp
    affine[:3, 3] = origin
    info = SeriesInfo(
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        modality=first.modality,
        body_part=first.body_part,
        manufacturer=first.manufacturer,
        shape=(len(slices), first.rows, first.columns),
        spacing=(float(row_sp), float(col_sp), slice_spacing),
        orientation=ref.orientation,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        affine=as_matrix4(affine),
        sop_instance_uids=tuple(s[0].info.sop_instance_uid or "" for s in slices),
        pixel_dtype=first.pixel_dtype,
    )
    return DicomSeries(info=info, slices=tuple((s[0], s[1]) for s in slices))


def _series_without_geometry(
    uid: str,
    members: Sequence[DicomImage],
    slices: list[tuple[DicomImage, int, FrameGeometry]],
) -> DicomSeries:
    first = members[0].info
    slices.sort(key=lambda s: (s[0].info.instance_number or 0, s[1]))
    row_sp = first.spacing[0] or 1.0
    col_sp = first.spacing[1] or 1.0
    affine = np.diag([first.spacing[2] or 1.0, row_sp, col_sp, 1.0])
    info = SeriesInfo(
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        modality=first.modality,
        body_part=first.body_part,
        manufacturer=first.manufacturer,
        shape=(len(slices), first.rows, first.columns),
        spacing=(row_sp, col_sp, first.spacing[2]),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        origin=(0.0, 0.0, 0.0),
        affine=as_matrix4(affine),
        sop_instance_uids=tuple(s[0].info.sop_instance_uid or "" for s in slices),
        pixel_dtype=first.pixel_dtype,
    )
    return DicomSeries(info=info, slices=tuple((s[0], s[1]) for s in slices), has_geometry=False)


# --------------------------------------------------------------------------- helpers


def _source_label(source: DicomSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    if isinstance(source, str | os.PathLike):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


def _check_element_lengths(ds: Dataset, label: str) -> None:
    """Refuse a file whose last element holds fewer bytes than its header declares."""
    for tag in list(ds.keys()):  # keys(): keep raw elements raw
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.value is not None:
            declared = raw.length
            if declared != 0xFFFFFFFF and len(raw.value) < declared:
                raise InputError(
                    f"truncated DICOM file: element {tag} holds {len(raw.value)} of "
                    f"{declared} bytes",
                    source=label,
                )


def _check_dimensions(ds: Dataset, label: str) -> None:
    """Refuse empty or absurd pixel grids before anything tries to decode them."""
    rows, columns = _int(ds.get("Rows")) or 0, _int(ds.get("Columns")) or 0
    frames = _int(ds.get("NumberOfFrames"))
    frames = 1 if frames is None else frames
    samples = _int(ds.get("SamplesPerPixel")) or 1
    if rows <= 0 or columns <= 0 or frames <= 0 or samples not in (1, 3, 4):
        raise InputError(
            f"impossible pixel grid: {rows} rows x {columns} columns x {frames} frames x "
            f"{samples} samples", source=label, field="Rows",
        )
    total = rows * columns * frames * samples
    if total > MAX_SAMPLES:
        raise InputError(
            f"absurd dimensions: {rows} x {columns} x {frames} frames x {samples} samples is "
            f"{total} values (limit {MAX_SAMPLES})", source=label, field="NumberOfFrames",
        )


def _check_pixel_length(ds: Dataset, label: str) -> None:
    ts = ds.file_meta.TransferSyntaxUID
    if "PixelData" not in ds or ts.is_compressed:
        return
    try:
        expected = get_expected_length(ds, unit="bytes")
    except (AttributeError, ValueError, TypeError) as exc:
        raise InputError(f"inconsistent image pixel module: {exc}", source=label) from exc
    actual = len(ds.PixelData)
    if actual < expected:
        raise InputError(
            f"truncated pixel data: {actual} bytes, {expected} expected for "
            f"{ds.Rows}x{ds.Columns}x{_int(ds.get('NumberOfFrames')) or 1} at "
            f"{ds.BitsAllocated} bits",
            source=label,
            field="PixelData",
        )


def _stored_dtype(ds: Dataset) -> str:
    if "FloatPixelData" in ds:
        return "float32"
    if "DoubleFloatPixelData" in ds:
        return "float64"
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits == 1:
        return "uint8"
    size = 8 if bits <= 8 else 16 if bits <= 16 else 32
    return f"{'int' if signed else 'uint'}{size}"


def _frame_geometry(ds: Dataset, frames: int) -> list[FrameGeometry]:
    """Per-frame geometry, from the top level or the enhanced functional groups."""
    top = FrameGeometry(
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_float(ds.get("SliceThickness")),
    )
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if shared is None and per_frame is None:
        if frames > 1 and top.position is not None:
            # A multi-frame image without functional groups: frames are stacked along the
            # normal at SpacingBetweenSlices (or SliceThickness).
            return _stacked_frames(ds, top, frames)
        return [top] * max(frames, 1)
    out: list[FrameGeometry] = []
    n = max(frames, 1)
    for index in range(n):
        item = per_frame[index] if per_frame is not None and index < len(per_frame) else None
        groups = [g for g in (item, shared) if g is not None]
        position = _group_value(groups, "PlanePositionSequence", "ImagePositionPatient", 3)
        orientation = _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        spacing = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing", 2)
        thickness = _group_value(groups, "PixelMeasuresSequence", "SliceThickness", 1)
        out.append(
            FrameGeometry(
                position=position or top.position,  # type: ignore[arg-type]
                orientation=orientation or top.orientation,  # type: ignore[arg-type]
                pixel_spacing=spacing or top.pixel_spacing,  # type: ignore[arg-type]
                slice_thickness=thickness[0] if thickness else top.slice_thickness,
            )
        )
    return out


def _stacked_frames(ds: Dataset, top: FrameGeometry, frames: int) -> list[FrameGeometry]:
    step = _float(ds.get("SpacingBetweenSlices")) or top.slice_thickness
    if step is None or top.orientation is None or top.position is None:
        return [top] * frames
    normal = np.cross(top.orientation[:3], top.orientation[3:])
    base = np.asarray(top.position, dtype=float)
    out = []
    for k in range(frames):
        p = base + normal * step * k
        out.append(
            FrameGeometry(
                position=(float(p[0]), float(p[1]), float(p[2])),
                orientation=top.orientation,
                pixel_spacing=top.pixel_spacing,
                slice_thickness=top.slice_thickness,
            )
        )
    return out


def _functional_rescale(ds: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if shared is None and per_frame is None:
        return None
    slopes = np.ones(max(frames, 1), dtype=np.float32)
    intercepts = np.zeros(max(frames, 1), dtype=np.float32)
    found = False
    for index in range(max(frames, 1)):
        item = per_frame[index] if per_frame is not None and index < len(per_frame) else None
        groups = [g for g in (item, shared) if g is not None]
        slope = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope", 1)
        intercept = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept", 1)
        if slope or intercept:
            found = True
            slopes[index] = slope[0] if slope else 1.0
            intercepts[index] = intercept[0] if intercept else 0.0
    return (slopes, intercepts) if found else None


def _group_value(
    groups: list[Dataset], sequence: str, keyword: str, count: int
) -> tuple[float, ...] | None:
    for group in groups:
        item = _first_item(group.get(sequence))
        if item is not None and keyword in item:
            values = _floats(item.get(keyword), count)
            if values is not None:
                return values
    return None


def _first_item(element: Any) -> Dataset | None:
    if element is None:
        return None
    value = element.value if hasattr(element, "value") else element
    try:
        return value[0] if len(value) else None
    except TypeError:
        return None


def _floats(element: Any, count: int) -> tuple[float, ...] | None:
    if element is None:
        return None
    value = element.value if hasattr(element, "value") else element
    if value is None or value == "":
        return None
    iterable = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    items = list(value) if iterable else [value]
    if len(items) != count:
        return None
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None


def _float(element: Any) -> float | None:
    values = _floats(element, 1)
    return values[0] if values else None


def _int(element: Any) -> int | None:
    value = element.value if hasattr(element, "value") else element
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(element: Any) -> str | None:
    value = element.value if hasattr(element, "value") else element
    if value is None:
        return None
    text = str(value).strip()
    return text or None
