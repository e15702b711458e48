"""Exports round-tripped through the libraries users load them with."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from test_imaging_helpers import make_series
from truthset.domain.errors import InputError
from truthset.imaging.dicom import DicomSeries, read_series
from truthset.imaging.export import (
    CocoAnnotation,
    CocoImage,
    Finding,
    Segment,
    coco_dataset,
    findings_to_dicom_sr,
    labelmap_to_nifti,
    segmentation_to_dicom_seg,
)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> DicomSeries:
    folder = tmp_path_factory.mktemp("series")
    paths, _ = make_series(
        folder, slices=4, spacing=3.0, orientation=(1.0, 0.0, 0.0, 0.0, 0.8, -0.6)
    )
    [s] = read_series(paths)
    return s


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:3, 30:60, 40:70] = 1
    labels[2, 80:90, 10:20] = 2
    return labels


def test_dicom_seg_round_trip(series: DicomSeries, tmp_path: Path) -> None:
    labels = _labels(series.info.shape)
    seg = segmentation_to_dicom_seg(series, labels, [Segment(1, "tumour"), Segment(2, "cyst")])
    out = tmp_path / "seg.dcm"
    seg.save_as(out)
    back = hd.seg.segread(out)
    assert back.SegmentationType == "BINARY"
    assert [d.SegmentLabel for d in back.SegmentSequence] == ["tumour", "cyst"]
    source_uids = [image.dataset.SOPInstanceUID for image, _ in series.slices]
    for number in (1, 2):
        arr = back.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids, segment_numbers=[number], combine_segments=False
        ).squeeze(-1)
        np.testing.assert_array_equal(arr.astype(bool), labels == number)
    frame_uid = series.slices[0][0].dataset.FrameOfReferenceUID
    assert back.FrameOfReferenceUID == frame_uid
    with pytest.raises(InputError, match="without a segment"):
        segmentation_to_dicom_seg(series, labels, [Segment(1, "tumour")])


def test_dicom_sr_round_trip(series: DicomSeries, tmp_path: Path) -> None:
    findings = [
        Finding.from_box(
            "F1", (40.0, 30.0, 30.0, 20.0), source_index=1, measurements={"Long axis": (19.8, "mm")}
        ),
        Finding("F2", ((10.0, 80.0), (20.0, 80.0), (15.0, 90.0)), source_index=2),
    ]
    sr = findings_to_dicom_sr(series, findings)
    out = tmp_path / "sr.dcm"
    sr.save_as(out)
    back = hd.sr.srread(out)
    groups = back.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["F1", "F2"]
    box = groups[0].roi
    np.testing.assert_allclose(box.value, [[40, 30], [70, 30], [70, 50], [40, 50], [40, 30]])
    uid = series.slices[1][0].dataset.SOPInstanceUID
    assert box.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
    [measurement] = groups[0].get_measurements()
    assert measurement.value == pytest.approx(19.8)
    assert measurement.unit.value == "mm"


def test_nifti_labelmap_geometry(series: DicomSeries, tmp_path: Path) -> None:
    labels = _labels(series.info.shape)
    out = tmp_path / "labels.nii.gz"
    labelmap_to_nifti(series, labels, out)
    loaded = nib.load(out)
    np.testing.assert_array_equal(np.transpose(np.asanyarray(loaded.dataobj), (2, 1, 0)), labels)
    # Independent reader: SimpleITK reports LPS points for NIfTI indices.
    image = sitk.ReadImage(str(out))
    for k, j, i in [(0, 0, 0), (3, 100, 5), (2, 17, 99)]:
        lps = series.affine @ [k, j, i, 1]
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint((i, j, k)), lps[:3], atol=1e-3
        )


def test_coco_round_trip_with_pycocotools(tmp_path: Path) -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:20, 5:25] = True
    polygon = (30.0, 30.0, 50.0, 30.0, 50.0, 45.0, 30.0, 45.0)
    data = coco_dataset(
        [CocoImage(1, "a.png", width=60, height=50)],
        {1: "nodule", 2: "mass"},
        [
            CocoAnnotation(1, 1, box=(1.0, 2.0, 3.0, 4.0)),
            CocoAnnotation(1, 2, polygon=polygon),
            CocoAnnotation(1, 1, mask=mask),
        ],
    )
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert anns[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(coco.annToMask(anns[2]).astype(bool), mask)
    assert anns[2]["area"] == mask.sum() and anns[2]["bbox"] == [5.0, 10.0, 20.0, 10.0]
    poly_mask = coco.annToMask(anns[1])
    assert poly_mask.sum() == anns[1]["area"] and anns[1]["bbox"] == [30.0, 30.0, 20.0, 15.0]
    assert mask_utils.area(coco.annToRLE(anns[2])) == 200
