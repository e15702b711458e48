"""Drafting volumes: the classical segmenter and the ONNX adapter on DICOM series and NIfTI
volumes, 3D connected components, physical spacing kept — checked against analytic volumes of
synthetic balls, a NIfTI round trip through nibabel, and an independent Dice."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from numpy.typing import NDArray
from pydicom.uid import generate_uid
from scipy import ndimage

from test_imaging_helpers import bundled
from truthset.prelabel import service
from truthset.prelabel.adapters import ClassicalSegmenter, OnnxAdapter, Pixels, nifti_bytes
from truthset.prelabel.output import check_output
from truthset.quality.payloads import decode_mask, encode_mask
from truthset.store.models import Annotation, DraftOutcome, Item, PrelabelDraft, User
from truthset.workflow.annotations import record_annotation
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

MASK_SCHEMA = """name: lesions
kind: mask
classes:
  - name: lesion
  - name: cyst
"""
THRESHOLD = {"thresholds": {"lesion": [0.5, 1.0]}}


def _ball(shape: tuple[int, ...], spacing: tuple[float, ...], radius_mm: float,
          centre: tuple[float, ...]) -> NDArray[np.bool_]:
    """Voxels whose centre lies within ``radius_mm`` of ``centre`` (voxel coordinates)."""
    idx = np.indices(shape).astype(float)
    d2 = sum(((idx[a] - centre[a]) * spacing[a]) ** 2 for a in range(len(shape)))
    return np.asarray(d2 <= radius_mm ** 2)


def _sphere_mm3(radius_mm: float) -> float:
    return 4 / 3 * np.pi * radius_mm ** 3


# -- the adapters on volumes ---------------------------------------------------------------------
def test_classical_segmenter_connects_in_3d_and_measures_in_mm() -> None:
    shape, spacing = (20, 40, 40), (1.0, 0.5, 0.5)
    ball = _ball(shape, spacing, 6.0, (7.3, 14.2, 13.9))
    staple = np.zeros(shape, dtype=bool)  # two bars along the slices, joined on slice 18
    staple[10:19, 30:34, 5:9] = True
    staple[10:19, 30:34, 30:34] = True
    staple[18, 30:34, 5:34] = True
    speck = np.zeros(shape, dtype=bool)
    speck[15:17, 5:7, 35:37] = True  # 8 voxels = 2 mm³: below min_size_mm
    volume = np.where(ball | staple | speck, 200, 10).astype(np.int16)
    seg = ClassicalSegmenter("mask", {**THRESHOLD, "min_size": 1, "min_size_mm": 10})
    px = Pixels(volume, spacing, volume=True)
    pred = check_output(seg.predict(px), kind="mask", registered=["lesion"],
                        image_shape=px.shape)
    assert len(pred.objects) == 2
    masks = sorted((o.mask for o in pred.objects if o.mask is not None),
                   key=lambda m: int(np.argwhere(m)[0][0]))
    assert np.array_equal(masks[0], ball) and np.array_equal(masks[1], staple)
    # In 2D each slice of the staple is two pieces; in 3D it is one component.
    assert ndimage.label(staple[12])[1] == 2
    payload = replace(pred, spacing=spacing).payload()
    first = payload["objects"][0]
    assert first["mask"]["shape"] == [20, 40, 40] and first["mask"]["spacing"] == [1.0, 0.5, 0.5]
    lo, hi = np.argwhere(ball).min(axis=0), np.argwhere(ball).max(axis=0) + 1
    assert first["box"] == [lo[2], lo[1], lo[0], hi[2], hi[1], hi[0]]  # x, y, z = col, row, slice
    # Voxels x voxel volume against the analytic 4/3 pi r³ (voxel sampling: within 1 %).
    assert first["size_mm"] == pytest.approx(_sphere_mm3(6.0), rel=0.01)
    assert np.array_equal(decode_mask(first["mask"]), ball)
    # Boxes of a volume are 3D and in bounds.
    boxes = ClassicalSegmenter("box", {**THRESHOLD, "min_size": 1, "min_size_mm": 10})
    got = check_output(boxes.predict(px), kind="box", registered=["lesion"],
                       image_shape=px.shape)
    assert sorted(o.box for o in got.objects)[0] == tuple(float(v) for v in first["box"])


def test_smoothing_in_mm_treats_anisotropic_axes_alike() -> None:
    shape, spacing = (16, 40, 40), (2.5, 0.5, 0.5)
    volume = np.where(_ball(shape, spacing, 6.0, (8, 20, 20)), 200.0, 10.0)
    seg = ClassicalSegmenter("mask", {**THRESHOLD, "smooth_mm": 1.0, "min_size": 1})
    raw = seg.predict(Pixels(volume, spacing, volume=True))
    (obj,) = raw["objects"]
    # The same ball smoothed with sigma 1 mm = (0.4, 2, 2) voxels, independently.
    smooth = ndimage.gaussian_filter(volume, [1.0 / s for s in spacing])
    norm = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    assert np.array_equal(obj["mask"], norm >= 0.5)


def _onnx_conv3d(path: Path) -> Path:
    """1x1x1 3D convolution: channel 0 = 0.5 - x, channel 1 = x - 0.5 (bright voxels win)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1, 1], [-1.0, 1.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])], "seg3d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, None, None, None])],
        [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_onnx_adapter_segments_a_volume(tmp_path: Path) -> None:
    shape, spacing = (20, 40, 40), (1.0, 0.6, 0.6)
    ball = _ball(shape, spacing, 6.0, (9.5, 19.5, 19.5))
    volume = np.where(ball, 250, 5).astype(np.uint8)
    config = {"classes": ["background", "lesion"]}
    seg = OnnxAdapter(_onnx_conv3d(tmp_path / "s3.onnx").read_bytes(), "mask", config)
    px = Pixels(volume, spacing, volume=True)
    pred = check_output(seg.predict(px), kind="mask", registered=["lesion"],
                        image_shape=shape)
    (obj,) = pred.objects
    assert obj.mask is not None and np.array_equal(obj.mask, ball)
    # Resized to the model's input size and back (nearest): the same ball, give or take an edge.
    small = OnnxAdapter(_onnx_conv3d(tmp_path / "s3.onnx").read_bytes(), "mask",
                        {**config, "input_size": [10, 20, 20]})
    (approx,) = check_output(small.predict(px), kind="mask", registered=["lesion"],
                             image_shape=shape).objects
    assert approx.mask is not None and approx.mask.shape == shape
    overlap = 2 * (approx.mask & ball).sum() / (approx.mask.sum() + ball.sum())
    assert overlap > 0.85


def test_onnx_boxes_of_a_volume_have_six_coordinates(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    rows = [[2.0, 3.0, 1.0, 10.0, 12.0, 6.0, 0.9, 1.0]]
    det = helper.make_tensor("d", TensorProto.FLOAT, [1, 8], rows[0])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=det)], "det3d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "d.onnx")
    adapter = OnnxAdapter((tmp_path / "d.onnx").read_bytes(), "box",
                          {"classes": ["background", "lesion"]})
    px = Pixels(np.zeros((8, 16, 16), np.uint8), (2.0, 1.0, 1.0), volume=True)
    (obj,) = check_output(adapter.predict(px), kind="box", registered=["lesion"],
                          image_shape=px.shape).objects
    assert obj.box == (2.0, 3.0, 1.0, 10.0, 12.0, 6.0) and obj.score == pytest.approx(0.9)


def test_a_volume_sent_to_a_remote_model_keeps_its_spacing() -> None:
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    back = nib.Nifti1Image.from_bytes(
        __import__("gzip").decompress(nifti_bytes(Pixels(volume, (3.0, 0.7, 0.8), True))))
    assert back.header.get_zooms() == (3.0, pytest.approx(0.7), pytest.approx(0.8))
    assert np.array_equal(np.asanyarray(back.dataobj), volume)


# -- through the workspace: NIfTI and DICOM series items -------------------------------------------
def _mask_project(ws: Workspace, paths: list[Path]) -> None:
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="vol", name="Volumes", schema_text=MASK_SCHEMA)
        users.add_user(s, username="reader", role="annotator")
        imports.import_items(s, ws.blobs, p, paths, vault=ws.vault)
        service.register_model(s, p, name="thr", version="1", kind="classical",
                               classes=["lesion"], config={**THRESHOLD, "min_size": 5})


def _draft(ws: Workspace) -> tuple[Item, dict[str, object]]:
    summary = service.run_prelabel(ws, "vol", "thr")
    assert summary.drafted == 1, summary.to_dict()
    with ws.sessions() as s:
        draft = s.scalars(sa.select(Annotation).where(Annotation.source == "model")).one()
        item = s.get_one(Item, draft.item_id)
        s.expunge(item)
        return item, draft.payload


def test_nifti_volume_drafted_in_3d_and_round_tripped_through_nibabel(
        workspace: Workspace, tmp_path: Path) -> None:
    shape, zooms = (40, 36, 20), (0.5, 0.6, 1.0)
    affine = np.diag([-0.5, 0.6, 1.0, 1.0])  # x flipped (LAS), as scanners often write
    affine[:3, 3] = [10.0, -20.0, 35.0]
    centre = (20.3, 17.4, 9.6)
    ball = _ball(shape, zooms, 6.0, centre)
    data = np.where(ball, 300, -50).astype(np.int16)
    path = tmp_path / "ball.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    _mask_project(workspace, [path])
    item, payload = _draft(workspace)
    assert item.kind == "volume"
    (obj,) = payload["objects"]  # type: ignore[misc]
    assert obj["mask"]["shape"] == list(shape)
    assert obj["mask"]["spacing"] == pytest.approx(list(zooms))
    assert obj["size_mm"] == pytest.approx(_sphere_mm3(6.0), rel=0.01)
    # Round trip: the draft as a NIfTI label map on the item's affine, read back by nibabel.
    mask = decode_mask(obj["mask"])
    out = tmp_path / "draft_labels.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.asarray(item.attributes["affine"])),
             out)
    back = nib.load(out)
    assert np.array_equal(np.asanyarray(back.dataobj).astype(bool), ball)
    centroid = back.affine @ np.append(np.argwhere(np.asanyarray(back.dataobj)).mean(axis=0), 1)
    # Where the ball is in the scanner's mm (half a voxel of sampling slack).
    assert centroid[:3] == pytest.approx((affine @ np.append(centre, 1))[:3], abs=0.3)
    # A reader trims the top slices of the 3D draft: Dice computed independently.
    edited = mask.copy()
    edited[:, :, 12:] = False
    with workspace.unit("reader") as s:
        p = projects.get_project(s, "vol")
        reader = s.scalars(sa.select(User).where(User.username == "reader")).one()
        record_annotation(s, p, item=s.get_one(Item, item.id), author=reader,
                          payload={"objects": [{"label": "lesion",
                                                "mask": encode_mask(edited)}]})
    with workspace.sessions() as s:
        outcome = s.scalars(sa.select(DraftOutcome)).one()
    want = 2 * (edited & mask).sum() / (edited.sum() + mask.sum())
    assert outcome.outcome == "edited" and outcome.dice == pytest.approx(want)
    assert outcome.iou == pytest.approx((edited & mask).sum() / (edited | mask).sum())


def _write_series(folder: Path, volume: NDArray[np.int16], spacing: tuple[float, float, float]
                  ) -> list[Path]:
    """Single-frame CT instances of ``volume`` (slices, rows, columns), written in reverse
    slice order; ``spacing`` = (slice, row, column) mm."""
    folder.mkdir(parents=True)
    src = pydicom.dcmread(bundled("CT_small.dcm"))
    series_uid, frame_uid = generate_uid(), generate_uid()
    paths = []
    for k in reversed(range(volume.shape[0])):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.PixelSpacing = [f"{spacing[1]}", f"{spacing[2]}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-10", "-10", f"{spacing[0] * k:.3f}"]
        ds.SliceThickness = f"{spacing[0]}"
        ds.PixelData = np.ascontiguousarray(volume[k]).tobytes()
        path = folder / f"s{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_dicom_series_drafted_as_a_volume_in_slice_order(workspace: Workspace,
                                                         tmp_path: Path) -> None:
    shape, spacing = (16, 40, 44), (1.0, 0.5, 0.55)
    ball = _ball(shape, spacing, 6.0, (7.4, 21.3, 20.2))  # off-centre: slice order matters
    stored = np.where(ball, 1400, 24).astype(np.int16)  # HU 376 vs -1000 after the rescale
    _mask_project(workspace, _write_series(tmp_path / "series", stored, spacing))
    item, payload = _draft(workspace)
    assert item.kind == "series" and len(item.media) == 16
    (obj,) = payload["objects"]  # type: ignore[misc]
    assert obj["mask"]["shape"] == list(shape)
    assert obj["mask"]["spacing"] == pytest.approx(list(spacing))
    assert np.array_equal(decode_mask(obj["mask"]), ball)
    assert obj["size_mm"] == pytest.approx(_sphere_mm3(6.0), rel=0.01)
    with workspace.sessions() as s:
        log = s.scalars(sa.select(PrelabelDraft)).one()
    assert (log.status, log.device) == ("drafted", "cpu")
