"""Export labels: DICOM SEG, DICOM SR (TID 1500), NIfTI label maps and COCO JSON.

* :func:`segmentation_to_dicom_seg` builds a binary DICOM Segmentation (highdicom,
  ``SegmentationTypeValues.BINARY``: the classic SOP class every viewer reads).
* :func:`findings_to_dicom_sr` builds a Comprehensive 3D SR measurement report (TID 1500)
  with one planar ROI group per finding (box or polygon in image pixel coordinates).
* :func:`labelmap_to_nifti` writes a label map on the source series' grid with its affine
  (converted from DICOM LPS to NIfTI RAS+).
* :func:`coco_dataset` builds a COCO detection/segmentation dict from boxes, polygons and
  masks (masks as COCO RLE through pycocotools).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
from pycocotools import mask as mask_utils
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from truthset.domain.errors import InputError
from truthset.imaging.dicom import DicomSeries

MANUFACTURER = "Truthset"
SOFTWARE_VERSION = "0.1"
#: LPS (DICOM) to RAS (NIfTI) flips the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Segment:
    """One labelled structure of a segmentation.

    Parameters
    ----------
    number:
        Label value in the label map (1, 2, ...).
    label:
        Human-readable name.
    category, property_type:
        SNOMED-CT codes as ``(value, scheme, meaning)``; default "Morphologically abnormal
        structure" / "Lesion".
    """

    number: int
    label: str
    category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure")
    property_type: tuple[str, str, str] = ("52988006", "SCT", "Lesion")


def segmentation_to_dicom_seg(
    series: DicomSeries,
    labels: np.ndarray,
    segments: Sequence[Segment],
    *,
    series_number: int = 300,
    series_description: str = "Truthset segmentation",
) -> Dataset:
    """Build a binary DICOM SEG over a source series from a label map.

    Parameters
    ----------
    series:
        The source series (its datasets are the SEG's source images).
    labels:
        Integer label map of shape ``series.info.shape`` (0 = background).
    segments:
        One entry per label value used.
    series_number, series_description:
        Of the new SEG series.

    Returns
    -------
    pydicom.dataset.Dataset
        A highdicom ``Segmentation`` (write it with ``save_as``).

    Raises
    ------
    InputError
        Shape mismatch, labels without a segment, or a multi-frame source.
    """
    if labels.shape != series.info.shape:
        raise InputError(
            f"label map shape {labels.shape} differs from the series {series.info.shape}",
            field="labels",
        )
    known = {s.number for s in segments}
    present = {int(v) for v in np.unique(labels)} - {0}
    if present - known:
        raise InputError(f"label values without a segment: {sorted(present - known)}")
    if any(image.info.frames > 1 for image, _ in series.slices):
        raise InputError("multi-frame sources are not supported for SEG export yet")
    sources = [image.dataset for image, _ in series.slices]
    ordered = sorted(segments, key=lambda s: s.number)
    if [s.number for s in ordered] != list(range(1, len(ordered) + 1)):
        raise InputError("segment numbers must be 1..n", field="segments")
    stacked = np.stack([labels == s.number for s in ordered], axis=-1).astype(np.uint8)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.label,
            segmented_property_category=hd.sr.CodedConcept(*s.category),
            segmented_property_type=hd.sr.CodedConcept(*s.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for s in ordered
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="Truthset",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
    )
    return seg


@dataclass(frozen=True)
class Finding:
    """A 2D region on one source image with optional measurements.

    Parameters
    ----------
    tracking_id:
        Human-readable identifier of the finding (unique within the report).
    points:
        Closed polygon ``[(column, row), ...]`` in image pixel coordinates; use
        :meth:`from_box` for boxes.
    source_index:
        Which slice of the series it lies on.
    finding:
        Finding type code ``(value, scheme, meaning)``.
    measurements:
        ``{name: (value, UCUM unit)}`` e.g. ``{"Long axis": (12.5, "mm")}``.
    """

    tracking_id: str
    points: tuple[tuple[float, float], ...]
    source_index: int = 0
    finding: tuple[str, str, str] = ("52988006", "SCT", "Lesion")
    measurements: Mapping[str, tuple[float, str]] = field(default_factory=dict)

    @classmethod
    def from_box(
        cls,
        tracking_id: str,
        box: tuple[float, float, float, float],
        **kwargs: Any,
    ) -> Finding:
        """A finding from a box ``(x, y, width, height)`` in pixel coordinates."""
        x, y, w, h = box
        corners = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
        return cls(tracking_id=tracking_id, points=corners, **kwargs)


def findings_to_dicom_sr(
    series: DicomSeries,
    findings: Sequence[Finding],
    *,
    observer: str = "Truthset",
    series_number: int = 400,
) -> Dataset:
    """Build a TID 1500 measurement report (Comprehensive 3D SR) of planar ROIs.

    Parameters
    ----------
    series:
        The source series the findings lie on.
    findings:
        Regions with their measurements.
    observer:
        Name recorded as the device observer (pseudonymous reader IDs, not names).
    series_number:
        Of the new SR series.

    Returns
    -------
    pydicom.dataset.Dataset
        A highdicom ``Comprehensive3DSR``.
    """
    groups = []
    evidence: dict[str, Dataset] = {}
    for f in findings:
        if not 0 <= f.source_index < len(series.slices):
            raise InputError(f"source_index {f.source_index} out of range", field=f.tracking_id)
        image, _ = series.slices[f.source_index]
        evidence[image.dataset.SOPInstanceUID] = image.dataset
        pts = np.asarray((*f.points, f.points[0]), dtype=float)
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=pts,
            source_image=hd.sr.SourceImageForRegion.from_source_image(image.dataset),
        )
        measurements = [
            hd.sr.Measurement(
                name=_measurement_code(name),
                value=value,
                unit=hd.sr.CodedConcept(unit, "UCUM", unit),
            )
            for name, (value, unit) in f.measurements.items()
        ]
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier=f.tracking_id
                ),
                referenced_region=region,
                finding_type=hd.sr.CodedConcept(*f.finding),
                measurements=measurements or None,
            )
        )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name=observer
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion
        if series.info.modality == "CT"
        else codes.DCM.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence.values()),
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )


_MEASUREMENT_CODES = {
    "area": ("42798000", "SCT", "Area"),
    "long axis": ("103339001", "SCT", "Long Axis"),
    "short axis": ("103340004", "SCT", "Short Axis"),
    "diameter": ("81827009", "SCT", "Diameter"),
    "length": ("410668003", "SCT", "Length"),
    "mean": ("373098007", "SCT", "Mean"),
}


def _measurement_code(name: str) -> hd.sr.CodedConcept:
    code = _MEASUREMENT_CODES.get(name.strip().lower())
    if code is None:
        raise InputError(
            f"unknown measurement {name!r}; known: {', '.join(_MEASUREMENT_CODES)}",
            field="measurements",
        )
    return hd.sr.CodedConcept(*code)


def nifti_affine(series: DicomSeries) -> np.ndarray:
    """NIfTI (RAS+) affine of a series volume transposed to ``(column, row, slice)``.

    Parameters
    ----------
    series:
        The source series.

    Returns
    -------
    numpy.ndarray
        4x4 matrix mapping ``(i=column, j=row, k=slice, 1)`` to RAS+ mm.
    """
    reorder = np.zeros((4, 4))
    reorder[0, 2] = reorder[1, 1] = reorder[2, 0] = reorder[3, 3] = 1.0
    return np.asarray(LPS_TO_RAS @ series.affine @ reorder)


def labelmap_to_nifti(
    series: DicomSeries, labels: np.ndarray, path: str | os.PathLike[str]
) -> nib.Nifti1Image:
    """Write a label map on the series grid as NIfTI with the series' affine.

    Parameters
    ----------
    series:
        The source series.
    labels:
        ``(slices, rows, columns)`` integer labels.
    path:
        ``.nii`` or ``.nii.gz`` to write.

    Returns
    -------
    nibabel.Nifti1Image
        The written image (data ``(columns, rows, slices)``, uint8/uint16).
    """
    if labels.shape != series.info.shape:
        raise InputError(
            f"label map shape {labels.shape} differs from the series {series.info.shape}",
            field="labels",
        )
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    data = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(dtype)
    image = nib.Nifti1Image(data, nifti_affine(series))
    image.header.set_intent("label")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, os.fspath(path))
    return image


@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO export.

    Parameters
    ----------
    id:
        Integer image id.
    file_name:
        File name (or pseudonymous item id).
    width, height:
        Size in pixels.
    """

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoAnnotation:
    """One box, polygon or mask label.

    Parameters
    ----------
    image_id, category_id:
        References.
    box:
        ``(x, y, width, height)`` (derived from the polygon or mask when omitted).
    polygon:
        Flat ``[x1, y1, x2, y2, ...]`` list.
    mask:
        Boolean ``(height, width)`` mask, exported as COCO RLE.
    """

    image_id: int
    category_id: int
    box: tuple[float, float, float, float] | None = None
    polygon: tuple[float, ...] | None = None
    mask: np.ndarray | None = field(default=None, compare=False)


def coco_dataset(
    images: Sequence[CocoImage],
    categories: Mapping[int, str],
    annotations: Sequence[CocoAnnotation],
) -> dict[str, Any]:
    """Build a COCO dict (``images``, ``categories``, ``annotations``).

    Areas and boxes of masks and polygons are computed with pycocotools.

    Parameters
    ----------
    images:
        The images.
    categories:
        ``{id: name}``.
    annotations:
        Boxes, polygons or masks.

    Returns
    -------
    dict
        JSON-serialisable COCO dataset.
    """
    sizes = {im.id: (im.height, im.width) for im in images}
    out: list[dict[str, Any]] = []
    for n, ann in enumerate(annotations, start=1):
        if ann.image_id not in sizes:
            raise InputError(f"annotation {n} names unknown image {ann.image_id}")
        if ann.category_id not in categories:
            raise InputError(f"annotation {n} names unknown category {ann.category_id}")
        h, w = sizes[ann.image_id]
        entry: dict[str, Any] = {
            "id": n,
            "image_id": ann.image_id,
            "category_id": ann.category_id,
            "iscrowd": 0,
        }
        if ann.mask is not None:
            if ann.mask.shape != (h, w):
                raise InputError(f"annotation {n}: mask shape {ann.mask.shape} != {(h, w)}")
            rle = mask_utils.encode(np.asfortranarray(ann.mask.astype(np.uint8)))
            entry["area"] = float(mask_utils.area(rle))
            entry["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
            entry["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
            entry["iscrowd"] = 1
        elif ann.polygon is not None:
            rles = mask_utils.frPyObjects([list(ann.polygon)], h, w)
            merged = mask_utils.merge(rles)
            entry["segmentation"] = [list(ann.polygon)]
            entry["area"] = float(mask_utils.area(merged))
            entry["bbox"] = [float(v) for v in mask_utils.toBbox(merged)]
        elif ann.box is not None:
            x, y, bw, bh = ann.box
            entry["bbox"] = [float(x), float(y), float(bw), float(bh)]
            entry["area"] = float(bw * bh)
        else:
            raise InputError(f"annotation {n} has no box, polygon or mask")
        if ann.box is not None:
            entry["bbox"] = [float(v) for v in ann.box]
        out.append(entry)
    return {
        "images": [
            {"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
            for im in images
        ],
        "categories": [{"id": k, "name": v} for k, v in sorted(categories.items())],
        "annotations": out,
    }
