"""Reading DICOM, NIfTI, raster images and zip archives (truthset.imaging)."""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from test_imaging_helpers import bundled, make_series, without_pixels
from truthset.domain.errors import InputError
from truthset.imaging.archive import iter_zip_members
from truthset.imaging.dicom import group_series, read_dicom, read_series, split_series
from truthset.imaging.nifti import read_nifti
from truthset.imaging.raster import probe_raster, read_raster

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"

# ----------------------------------------------------------------------------- DICOM


def test_ct_info_and_rescale_against_raw_bytes() -> None:
    path = bundled("CT_small.dcm")
    image = read_dicom(path)
    info = image.info
    ds = pydicom.dcmread(path)
    assert info.modality == "CT"
    assert (info.rows, info.columns, info.frames) == (128, 128, 1)
    assert info.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert info.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert info.sop_instance_uid == ds.SOPInstanceUID
    assert info.study_instance_uid == ds.StudyInstanceUID
    assert info.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert info.pixel_dtype == "int16"
    assert info.photometric_interpretation == "MONOCHROME2"
    # Independent truth: decode the raw little-endian bytes ourselves.
    raw = np.frombuffer(ds.PixelData, dtype="<i2").reshape(128, 128).astype(np.float64)
    expected = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(image.pixels(), expected)
    assert image.pixels().min() < -800  # Hounsfield units, not stored values


def test_read_from_bytes_matches_path() -> None:
    path = bundled("MR_small.dcm")
    from_path = read_dicom(path)
    from_bytes = read_dicom(Path(path).read_bytes())
    assert from_bytes.info.source == "<bytes>"
    np.testing.assert_array_equal(from_bytes.pixels(), from_path.pixels())


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
    ],
)
def test_lossless_encodings_decode_to_the_same_pixels(name: str) -> None:
    reference = read_dicom(bundled("MR_small.dcm")).pixels()
    image = read_dicom(bundled(name))
    np.testing.assert_array_equal(image.pixels(), reference)


def test_jpeg2000_and_jpeg_baseline_decode() -> None:
    j2k = read_dicom(bundled("J2K_pixelrep_mismatch.dcm"))
    assert j2k.info.transfer_syntax_name is not None
    assert "2000" in j2k.info.transfer_syntax_name
    assert j2k.pixels().shape == (512, 512)
    us = read_dicom(bundled("examples_ybr_color.dcm"))
    arr = us.pixels()
    assert arr.shape == (us.info.frames, us.info.rows, us.info.columns, 3)
    assert us.info.samples_per_pixel == 3


def test_not_dicom_is_refused_with_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("hello, not an image")
    with pytest.raises(InputError) as err:
        read_dicom(bad)
    assert str(bad) in str(err.value)
    assert "not a DICOM file" in err.value.reason


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm"])
def test_truncated_files_are_refused(tmp_path: Path, name: str) -> None:
    data = Path(bundled(name)).read_bytes()
    for cut in (200, len(data) // 2, len(data) - 300, len(data) - 10):
        target = tmp_path / f"cut_{cut}.dcm"
        target.write_bytes(data[:cut])
        with pytest.raises(InputError) as err:
            read_dicom(target)
        assert str(target) in str(err.value)


def test_missing_pixel_data_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "nopix.dcm"
    without_pixels(bundled("CT_small.dcm")).save_as(target)
    with pytest.raises(InputError) as err:
        read_dicom(target)
    assert err.value.field == "PixelData"


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize(
    "orientation",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # axial
        (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # coronal
        (1.0, 0.0, 0.0, 0.0, math.cos(0.5), math.sin(0.5)),  # oblique
    ],
)
def test_series_sorting_and_affine_match_simpleitk(tmp_path: Path, orientation: tuple) -> None:
    paths, stored = make_series(
        tmp_path, slices=6, spacing=2.5, orientation=orientation, order=[3, 0, 5, 1, 4, 2]
    )
    [series] = read_series(paths)
    reference = _sitk_series(tmp_path)
    # Same voxels in the same order (SimpleITK applies the rescale too).
    np.testing.assert_allclose(series.volume(), sitk.GetArrayFromImage(reference), atol=1e-3)
    np.testing.assert_allclose(series.volume(), stored * 1.0 - 1024.0)
    # Same geometry: SimpleITK index (x, y, z) = our (column, row, slice).
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    sitk_affine = direction * np.asarray(reference.GetSpacing())
    np.testing.assert_allclose(series.affine[:3, :3], sitk_affine[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(series.affine[:3, 3], reference.GetOrigin(), atol=1e-5)
    assert series.info.shape == (6, 128, 128)
    assert series.info.spacing[2] == pytest.approx(2.5)


def test_inconsistent_series_are_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "a", slices=4)
    images = [read_dicom(p) for p in paths]
    # Different orientation on one slice.
    ds = pydicom.dcmread(paths[0])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    odd = tmp_path / "odd.dcm"
    ds.save_as(odd)
    with pytest.raises(InputError, match="ImageOrientationPatient"):
        group_series([*images, read_dicom(odd)])
    # Different pixel spacing.
    ds = pydicom.dcmread(paths[0])
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImagePositionPatient = [0, 0, 500]
    ds.save_as(odd)
    with pytest.raises(InputError, match="PixelSpacing"):
        group_series([*images, read_dicom(odd)])
    # A duplicated position (two acquisitions in one series).
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(odd)
    with pytest.raises(InputError, match="share one position"):
        group_series([*images, read_dicom(odd)])
    # A missing slice leaves an uneven gap.
    with pytest.raises(InputError, match="uneven slice spacing"):
        group_series([images[0], images[1], images[3]])


def test_series_with_different_sizes_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "a", slices=3)
    mr = pydicom.dcmread(bundled("MR_small.dcm"))
    mr.SeriesInstanceUID = pydicom.dcmread(paths[0]).SeriesInstanceUID
    other = tmp_path / "mr.dcm"
    mr.save_as(other)
    with pytest.raises(InputError, match="inconsistent pixel grid"):
        read_series([*paths, other])


def test_dicomdir_tree_groups_like_pydicom(tmp_path: Path) -> None:
    root = Path(bundled("CT_small.dcm")).parent / "dicomdirtests" / "98892001"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    series, refused = split_series(read_dicom(f) for f in files)
    truth: dict[str, int] = {}
    orientations: dict[str, set[tuple[float, ...]]] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        truth[ds.SeriesInstanceUID] = truth.get(ds.SeriesInstanceUID, 0) + 1
        orientations.setdefault(ds.SeriesInstanceUID, set()).add(
            tuple(float(v) for v in ds.ImageOrientationPatient)
        )
    mixed = {uid for uid, o in orientations.items() if len(o) > 1}
    assert mixed  # this tree holds a localizer series with several planes
    assert {e.source for e in refused} == {f"series {uid}" for uid in mixed}
    assert all("ImageOrientationPatient" in e.reason for e in refused)
    assert {s.info.series_instance_uid: s.info.shape[0] for s in series} == {
        uid: n for uid, n in truth.items() if uid not in mixed
    }
    with pytest.raises(InputError):
        group_series(read_dicom(f) for f in files)
    for s in series:
        positions = [
            np.dot(
                np.cross(s.info.orientation[:3], s.info.orientation[3:]),
                [float(v) for v in image.dataset.ImagePositionPatient],
            )
            for image, _ in s.slices
        ]
        assert positions == sorted(positions)


def test_enhanced_ct_geometry_from_functional_groups() -> None:
    path = bundled("eCT_Supplemental.dcm")
    image = read_dicom(path)
    ds = image.dataset
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert image.info.frames == 2
    assert image.info.spacing[:2] == pytest.approx([float(v) for v in measures.PixelSpacing])
    [series] = group_series([image])
    assert series.info.shape == (2, 512, 512)
    first = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    positions = sorted(
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in ds.PerFrameFunctionalGroupsSequence
    )
    assert series.info.spacing[2] == pytest.approx(abs(positions[1] - positions[0]))
    assert len(first.ImagePositionPatient) == 3
    # Per-frame rescale from the functional groups gives Hounsfield units.
    assert series.volume().min() < -500


# ----------------------------------------------------------------------------- NIfTI


def test_nifti_geometry_matches_simpleitk() -> None:
    volume = read_nifti(ANATOMICAL)
    reference = sitk.ReadImage(str(ANATOMICAL))
    assert volume.info.shape == reference.GetSize()
    assert volume.info.spacing == pytest.approx(reference.GetSpacing())
    # SimpleITK is LPS; nibabel RAS: flip the first two world axes.
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    affine = np.asarray(volume.info.affine)
    np.testing.assert_allclose(
        affine[:3, :3], lps_to_ras @ direction * reference.GetSpacing(), atol=1e-5
    )
    np.testing.assert_allclose(affine[:3, 3], lps_to_ras @ reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.data(), sitk.GetArrayFromImage(reference).T)


def test_nifti_refuses_non_nifti_and_truncated(tmp_path: Path) -> None:
    bad = tmp_path / "x.nii"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError):
        read_nifti(bad)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(ANATOMICAL.read_bytes()[:-500])
    with pytest.raises(InputError, match="truncated"):
        read_nifti(cut)


# ----------------------------------------------------------------------------- raster


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_raster_round_trip(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(arr).save(path, format=fmt)
    image = read_raster(path)
    assert (image.info.width, image.info.height, image.info.format) == (60, 40, fmt)
    np.testing.assert_array_equal(image.pixels, arr)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_absurd_dimensions_refused_before_decode() -> None:
    bomb = _png_header_only(60_000, 60_000)  # 3.6 GP declared in 60 bytes
    with pytest.raises(InputError, match="too large"):
        probe_raster(bomb, name="bomb.png")
    with pytest.raises(InputError, match="too large"):
        read_raster(bomb, name="bomb.png")


def test_truncated_and_unknown_rasters_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)).save(buf, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated") as err:
        read_raster(cut)
    assert str(cut) in str(err.value)
    with pytest.raises(InputError, match="not an image"):
        read_raster(b"plain text", name="x.png")


# ----------------------------------------------------------------------------- zip


def _zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_members_are_yielded(tmp_path: Path) -> None:
    ct = Path(bundled("CT_small.dcm")).read_bytes()
    archive = _zip(tmp_path / "ok.zip", {"study/a.dcm": ct, "./study/b.txt": b"note"})
    members = list(iter_zip_members(archive))
    assert [m.name for m in members] == ["study/a.dcm", "study/b.txt"]
    assert members[0].data == ct
    assert read_dicom(members[0].data, name=members[0].name).info.modality == "CT"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.dcm", "path traversal"),
        ("a/../../evil", "path traversal"),
        ("/etc/passwd", "absolute path"),
        ("C:/x.dcm", "absolute path"),
        ("..\\evil.dcm", "path traversal"),
    ],
)
def test_zip_path_traversal_refused(tmp_path: Path, name: str, reason: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"x", name: b"payload"})
    with pytest.raises(InputError, match=reason) as err:
        list(iter_zip_members(archive))
    assert err.value.location == name


def test_zip_symlink_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "link.zip", {"a.txt": b"x"}, symlink="passwd")
    with pytest.raises(InputError, match="symbolic link") as err:
        list(iter_zip_members(archive))
    assert err.value.location == "passwd"


def test_zip_bomb_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"zeros.bin": b"\x00" * (20 * 1024 * 1024)})
    assert os.path.getsize(archive) < 100_000
    with pytest.raises(InputError, match="ratio") as err:
        list(iter_zip_members(archive))
    assert err.value.location == "zeros.bin"
    with pytest.raises(InputError, match="expands to more than"):
        list(iter_zip_members(archive, max_total_bytes=1024 * 1024, max_ratio=1e9))
