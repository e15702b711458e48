"""Rendering: windows, VOI LUT, MONOCHROME1, planes with aspect, PNG/JPEG bytes."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import apply_voi_lut

from test_imaging_helpers import bundled
from truthset.domain.errors import InputError
from truthset.imaging.dicom import DicomImage, read_dicom
from truthset.imaging.render import (
    CT_PRESETS,
    Window,
    apply_window,
    render_dicom,
    render_plane,
    to_display,
)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_window_matches_pydicom_linear_voi() -> None:
    image = read_dicom(bundled("CT_small.dcm"))
    hu = image.pixels().astype(np.float64)
    for window in (Window(40, 80), Window(-600, 1500), Window(300.5, 2.0)):
        ds = copy.deepcopy(image.dataset)
        ds.WindowCenter, ds.WindowWidth = window.center, window.width
        ds.VOILUTFunction = "LINEAR"
        reference = apply_voi_lut(hu, ds)  # pydicom maps onto the stored value range
        lo, hi = apply_voi_lut(np.array([-1e9, 1e9]), ds)  # that range's ends
        expected = (reference - lo) / (hi - lo) * 255
        ours = apply_window(hu, window).astype(np.float64)
        # pydicom's output range is the whole stored range, so compare the inner part.
        inside = (reference > lo) & (reference < hi)
        np.testing.assert_allclose(ours[inside], expected[inside], atol=1.0)
        assert np.all(ours[reference <= lo] == 0) and np.all(ours[reference >= hi] == 255)


def test_presets_saturate_outside_the_window() -> None:
    image = read_dicom(bundled("CT_small.dcm"))
    hu = image.pixels()
    for name, window in CT_PRESETS.items():
        out = to_display(image, preset=name)
        low = hu <= window.center - 0.5 - (window.width - 1) / 2
        high = hu > window.center - 0.5 + (window.width - 1) / 2
        assert np.all(out[low] == 0) and np.all(out[high] == 255), name
    with pytest.raises(InputError, match="unknown preset"):
        to_display(image, preset="kidney-stone")


def test_file_window_and_monochrome1_inversion() -> None:
    image = read_dicom(bundled("CT_small.dcm"))
    ds = image.dataset
    ds.WindowCenter, ds.WindowWidth = 50, 350
    default = to_display(image)
    np.testing.assert_array_equal(default, apply_window(image.pixels(), Window(50, 350)))
    ds1 = copy.deepcopy(ds)
    ds1.PhotometricInterpretation = "MONOCHROME1"
    inverted = to_display(
        DicomImage(
            info=image.info.__class__(
                **{**image.info.__dict__, "photometric_interpretation": "MONOCHROME1"}
            ),
            dataset=ds1,
        )
    )
    np.testing.assert_array_equal(inverted, 255 - default)


def test_voi_lut_sequence_is_applied() -> None:
    image = read_dicom(bundled("MR_small.dcm"))
    ds = image.dataset
    for key in ("WindowCenter", "WindowWidth"):
        ds.pop(key, None)
    from pydicom.dataset import Dataset

    lut = Dataset()
    first = 100
    table = np.linspace(65535, 0, 2048).astype(np.uint16)  # a decreasing 16-bit LUT
    lut.add_new("LUTDescriptor", "US", [len(table), first, 16])
    lut.add_new("LUTData", "US", table.tolist())
    ds.VOILUTSequence = [lut]
    out = to_display(image)
    stored = image.pixels().astype(np.int64)
    # Independent lookup: entries before the first mapped value take the first entry,
    # after the last the last (PS3.3 C.11.2.1.1), then scale 16 -> 8 bits.
    expected = np.rint(table[np.clip(stored - first, 0, len(table) - 1)] / 65535 * 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_min_max_fallback_and_png_round_trip() -> None:
    image = read_dicom(bundled("MR_small.dcm"))
    for key in ("WindowCenter", "WindowWidth"):
        image.dataset.pop(key, None)
    out = to_display(image)
    assert out.min() == 0 and out.max() == 255
    png = render_dicom(image)
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(_decode(png), out)  # square pixels: no resampling
    jpeg = render_dicom(image, fmt="jpeg")
    assert jpeg.startswith(b"\xff\xd8") and _decode(jpeg).shape == out.shape


def test_colour_frames_render() -> None:
    image = read_dicom(bundled("examples_ybr_color.dcm"))
    out = to_display(image, frame=3)
    assert out.shape == (image.info.rows, image.info.columns, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image.pixels()[3])


@pytest.mark.parametrize(
    ("plane", "shape"),
    [("axial", (64, 32)), ("coronal", (40, 32)), ("sagittal", (40, 64))],
)
def test_planes_have_physical_aspect(plane: str, shape: tuple[int, int]) -> None:
    volume = np.arange(10 * 64 * 32, dtype=np.float32).reshape(10, 64, 32)
    data = render_plane(volume, (0.5, 0.5, 2.0), plane, 5, Window(10000, 20000))  # type: ignore[arg-type]
    assert _decode(data).shape == shape


def test_plane_orientation_puts_last_slice_on_top() -> None:
    volume = np.zeros((4, 8, 8), dtype=np.float32)
    volume[-1] = 100.0  # the last slice is bright
    top = _decode(render_plane(volume, (1.0, 1.0, 1.0), "coronal", 2, Window(50, 100)))
    assert top[0].min() == 255 and top[-1].max() == 0
    with pytest.raises(InputError, match="out of range"):
        render_plane(volume, (1.0, 1.0, 1.0), "sagittal", 8, Window(50, 100))
