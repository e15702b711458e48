"""Render images for viewing: window/level, VOI LUT, MONOCHROME1, planes, PNG/JPEG bytes.

Windowing follows the DICOM linear VOI function (PS3.3 C.11.2.1.2.1) and maps to 8 bits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from pydicom.pixels import apply_voi_lut

from truthset.domain.errors import InputError
from truthset.imaging.dicom import DicomImage

Plane = Literal["axial", "coronal", "sagittal"]
ImageFormat = Literal["png", "jpeg"]


@dataclass(frozen=True)
class Window:
    """A VOI window: centre and width in modality units (HU for CT).

    Parameters
    ----------
    center:
        Window centre (level).
    width:
        Window width (at least 1).
    """

    center: float
    width: float


#: CT presets (Radiopaedia's common window settings, HU).
CT_PRESETS: dict[str, Window] = {
    "brain": Window(40, 80),
    "subdural": Window(75, 215),
    "stroke": Window(40, 40),
    "bone": Window(400, 1800),
    "lung": Window(-600, 1500),
    "mediastinum": Window(50, 350),
    "soft_tissue": Window(50, 400),
    "abdomen": Window(50, 400),
    "liver": Window(30, 150),
}


def apply_window(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Map values through the DICOM linear window to uint8.

    Parameters
    ----------
    values:
        Modality values (after the modality LUT).
    window:
        Centre and width.
    invert:
        Invert the output (MONOCHROME1).

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.
    """
    if window.width < 1:
        raise InputError(f"window width must be >= 1, got {window.width}", field="width")
    c, w = float(window.center), float(window.width)
    scaled = ((values.astype(np.float32) - np.float32(c - 0.5)) / np.float32(w - 1) + 0.5) * 255
    if w == 1:
        scaled = np.where(values > c - 0.5, 255.0, 0.0).astype(np.float32)
    out = np.clip(scaled, 0, 255, out=scaled)
    out = np.rint(out, out=out).astype(np.uint8)
    return 255 - out if invert else out


def file_window(image: DicomImage, frame: int = 0) -> Window | None:
    """The first WindowCenter/WindowWidth pair the file recommends, if any.

    Parameters
    ----------
    image:
        The image.
    frame:
        Frame index for enhanced multi-frame images (Frame VOI LUT functional group).

    Returns
    -------
    Window or None
    """
    ds = image.dataset
    source = ds
    if "WindowCenter" not in ds:
        for key in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            groups = ds.get(key)
            if not groups:
                continue
            item = groups[min(frame, len(groups) - 1)]
            voi = item.get("FrameVOILUTSequence")
            if voi:
                source = voi[0]
                break
    if "WindowCenter" not in source or "WindowWidth" not in source:
        return None
    center = source.WindowCenter
    width = source.WindowWidth
    c = float(center[0] if hasattr(center, "__len__") else center)
    w = float(width[0] if hasattr(width, "__len__") else width)
    return Window(c, max(w, 1.0))


def to_display(
    image: DicomImage,
    *,
    frame: int = 0,
    window: Window | None = None,
    preset: str | None = None,
) -> np.ndarray:
    """Turn one frame into 8-bit display values.

    The window comes from, in order: ``window``; ``preset`` (CT only, see
    :data:`CT_PRESETS`); the file's VOI LUT Sequence (through pydicom's ``apply_voi_lut``);
    the file's WindowCenter/WindowWidth; the frame's min/max. MONOCHROME1 is inverted.
    Colour images are returned as RGB uint8.

    Parameters
    ----------
    image:
        The image.
    frame:
        Frame index (0 for single-frame images).
    window, preset:
        An explicit window, or the name of a CT preset.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, 3)`` uint8.
    """
    if image.info.frames > 1 and not 0 <= frame < image.info.frames:
        raise InputError(f"frame {frame} out of range 0..{image.info.frames - 1}", field="frame")
    pixels = image.pixels()
    if image.info.frames > 1:
        pixels = pixels[frame]
    if image.info.samples_per_pixel != 1:
        return _to_uint8_colour(pixels)
    invert = image.info.photometric_interpretation == "MONOCHROME1"
    if preset is not None:
        if preset not in CT_PRESETS:
            raise InputError(
                f"unknown preset {preset!r}; known: {', '.join(CT_PRESETS)}", field="preset"
            )
        window = CT_PRESETS[preset]
    if window is None and "VOILUTSequence" in image.dataset:
        lut = image.dataset.VOILUTSequence[0]
        out = apply_voi_lut(pixels, image.dataset, index=0, prefer_lut=True)
        bits = int(lut.LUTDescriptor[2])
        scaled = np.asarray(out, dtype=np.float32) * (255.0 / (2**bits - 1))
        result = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return 255 - result if invert else result
    if window is None:
        window = file_window(image, frame)
    if window is None:
        lo, hi = float(np.min(pixels)), float(np.max(pixels))
        window = Window((lo + hi + 1) / 2, max(hi - lo + 1, 1.0))
    return apply_window(pixels, window, invert=invert)


def volume_plane(
    volume: np.ndarray,
    spacing: tuple[float, float, float | None],
    plane: Plane,
    index: int,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Take one plane out of a ``(slices, rows, columns)`` volume.

    Axial is a slice as stored; coronal takes one row across all slices and sagittal one
    column. Coronal and sagittal planes are flipped so that the last slice is at the top.

    Parameters
    ----------
    volume:
        ``(slices, rows, columns)``.
    spacing:
        ``(row, column, slice)`` in mm (slice ``None`` is taken as the row spacing).
    plane:
        ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    index:
        Position along the plane's normal axis.

    Returns
    -------
    (plane, pixel_size)
        The 2D array and its ``(vertical, horizontal)`` pixel size in mm.
    """
    row_sp, col_sp, slice_sp = spacing
    slice_sp = slice_sp or row_sp
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}.get(plane)
    if axis is None:
        raise InputError(f"unknown plane {plane!r}", field="plane")
    if not 0 <= index < volume.shape[axis]:
        raise InputError(
            f"{plane} index {index} out of range 0..{volume.shape[axis] - 1}", field="index"
        )
    if plane == "axial":
        return volume[index], (row_sp, col_sp)
    if plane == "coronal":
        return volume[::-1, index, :], (slice_sp, col_sp)
    return volume[::-1, :, index], (slice_sp, row_sp)


def with_aspect(pixels: np.ndarray, pixel_size: tuple[float, float]) -> np.ndarray:
    """Resample so that displayed pixels are square in millimetres.

    The axis with the larger pixel size is stretched (bilinear) by the spacing ratio.

    Parameters
    ----------
    pixels:
        2D uint8 (or 3D RGB) array.
    pixel_size:
        ``(vertical, horizontal)`` mm per pixel.

    Returns
    -------
    numpy.ndarray
        The resampled array (the input itself when the pixels are already square).
    """
    dy, dx = pixel_size
    if abs(dy - dx) <= 1e-6 * max(dy, dx):
        return pixels
    h, w = pixels.shape[:2]
    taller = (w, max(1, round(h * dy / dx)))
    wider = (max(1, round(w * dx / dy)), h)
    size = taller if dy > dx else wider
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def encode(pixels: np.ndarray, fmt: ImageFormat = "png", *, quality: int = 90) -> bytes:
    """Encode 8-bit pixels as PNG or JPEG.

    Parameters
    ----------
    pixels:
        ``(rows, columns)`` or ``(rows, columns, 3)`` uint8.
    fmt:
        ``"png"`` (lossless, zlib level 1 for speed) or ``"jpeg"``.
    quality:
        JPEG quality.

    Returns
    -------
    bytes
        The encoded image.
    """
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if fmt == "png":
        picture.save(buffer, format="PNG", compress_level=1)
    elif fmt == "jpeg":
        picture.save(buffer, format="JPEG", quality=quality)
    else:
        raise InputError(f"unknown output format {fmt!r}", field="format")
    return buffer.getvalue()


def render_dicom(
    image: DicomImage,
    *,
    frame: int = 0,
    window: Window | None = None,
    preset: str | None = None,
    fmt: ImageFormat = "png",
) -> bytes:
    """Render one frame to PNG/JPEG bytes with square pixels.

    Parameters
    ----------
    image:
        The image.
    frame:
        Frame index.
    window, preset:
        See :func:`to_display`.
    fmt:
        ``"png"`` or ``"jpeg"``.

    Returns
    -------
    bytes
        The encoded image.
    """
    pixels = to_display(image, frame=frame, window=window, preset=preset)
    row_sp, col_sp, _ = image.info.spacing
    if row_sp and col_sp:
        pixels = with_aspect(pixels, (row_sp, col_sp))
    return encode(pixels, fmt)


def render_plane(
    volume: np.ndarray,
    spacing: tuple[float, float, float | None],
    plane: Plane,
    index: int,
    window: Window,
    *,
    invert: bool = False,
    fmt: ImageFormat = "png",
) -> bytes:
    """Render an axial, coronal or sagittal plane of a volume with the correct aspect.

    Parameters
    ----------
    volume:
        ``(slices, rows, columns)`` in modality units.
    spacing:
        ``(row, column, slice)`` in mm.
    plane, index:
        Which plane.
    window:
        Window to apply.
    invert:
        Invert (MONOCHROME1).
    fmt:
        ``"png"`` or ``"jpeg"``.

    Returns
    -------
    bytes
        The encoded image.
    """
    pixels, size = volume_plane(volume, spacing, plane, index)
    return encode(with_aspect(apply_window(pixels, window, invert=invert), size), fmt)


def _to_uint8_colour(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    lo, hi = float(pixels.min()), float(pixels.max())
    scaled = (pixels.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
