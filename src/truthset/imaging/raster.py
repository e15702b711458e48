"""Read 2D raster images (PNG, JPEG, TIFF...) with Pillow, with limits checked first.

The size check runs on the header, before any pixel is decoded, so a "decompression bomb"
(a small file that declares a huge canvas) is refused without allocating memory. A truncated
file is refused too (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from truthset.domain.errors import InputError
from truthset.imaging.model import RasterInfo

#: Largest accepted canvas (width x height), per frame. 2D medical images rarely pass 100 MP
#: (a whole-slide image does, and belongs in a tiled format rather than here).
MAX_PIXELS = 100_000_000
#: Largest accepted side in pixels.
MAX_SIDE = 65_536
#: Largest accepted number of frames/pages.
MAX_FRAMES = 1_000

RasterSource = str | os.PathLike[str] | bytes | BinaryIO


@dataclass(frozen=True)
class RasterImage:
    """A decoded raster image.

    Parameters
    ----------
    info:
        Format, size, mode and frame count.
    pixels:
        The first frame as a numpy array: ``(height, width)`` for grey,
        ``(height, width, channels)`` for colour.
    """

    info: RasterInfo
    pixels: np.ndarray


def probe_raster(source: RasterSource, *, name: str | None = None) -> RasterInfo:
    """Read only the header of a raster image and check the limits.

    Parameters
    ----------
    source:
        A path, bytes or a binary file object.
    name:
        What to call the source in error messages.

    Returns
    -------
    RasterInfo
        Format, size, mode, frames.

    Raises
    ------
    InputError
        Not an image Pillow knows, or dimensions over :data:`MAX_PIXELS`/:data:`MAX_SIDE`/
        :data:`MAX_FRAMES`.
    """
    with _Opened(source, name) as (image, label):
        return _checked_info(image, label)


def read_raster(
    source: RasterSource,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> RasterImage:
    """Read a raster image after checking its declared size.

    Parameters
    ----------
    source:
        A path, bytes or a binary file object.
    name:
        What to call the source in error messages.
    max_pixels:
        Largest accepted ``width * height``.

    Returns
    -------
    RasterImage
        Info and the first frame's pixels.

    Raises
    ------
    InputError
        Unknown format, absurd dimensions (checked before decoding) or a truncated file.
    """
    with _Opened(source, name) as (image, label):
        info = _checked_info(image, label, max_pixels=max_pixels)
        try:
            image.load()
            pixels = np.asarray(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(
                f"truncated or corrupt {info.format} image: {exc}", source=label
            ) from exc
    return RasterImage(info=info, pixels=pixels)


class _Opened:
    """Context manager opening an image lazily (header only) with a clear error."""

    def __init__(self, source: RasterSource, name: str | None) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            self.label = name or "<bytes>"
            self.stream: BinaryIO | str = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            self.label = name or str(source)
            if not os.path.isfile(source):
                raise InputError("file does not exist", source=self.label)
            self.stream = str(source)
        else:
            self.label = name or str(getattr(source, "name", "<stream>"))
            self.stream = source
        self.image: Image.Image | None = None

    def __enter__(self) -> tuple[Image.Image, str]:
        try:
            with warnings.catch_warnings():
                # Our own size check replaces Pillow's bomb warning; its hard error stays.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.image = Image.open(self.stream)
        except UnidentifiedImageError as exc:
            raise InputError("not an image format Pillow can read", source=self.label) from exc
        except Image.DecompressionBombError as exc:
            raise InputError(f"image dimensions too large: {exc}", source=self.label) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"unreadable image ({exc})", source=self.label) from exc
        return self.image, self.label

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


def _checked_info(image: Image.Image, label: str, *, max_pixels: int = MAX_PIXELS) -> RasterInfo:
    width, height = image.size
    frames = int(getattr(image, "n_frames", 1) or 1)
    if width <= 0 or height <= 0:
        raise InputError(f"empty image {width}x{height}", source=label)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InputError(
            f"image dimensions too large: {width}x{height} "
            f"(limit {max_pixels} pixels, {MAX_SIDE} per side)",
            source=label,
        )
    if frames > MAX_FRAMES:
        raise InputError(f"too many frames: {frames} (limit {MAX_FRAMES})", source=label)
    return RasterInfo(
        source=label,
        format=str(image.format),
        width=width,
        height=height,
        mode=image.mode,
        frames=frames,
    )


#: PNG chunks that carry free text or capture details (names, dates, devices, EXIF).
_PNG_DROP = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_metadata(data: bytes, *, name: str = "<bytes>") -> bytes:
    """Remove metadata that can identify a patient from PNG and JPEG bytes, without
    re-encoding the pixels.

    PNG: ``tEXt``, ``zTXt``, ``iTXt``, ``eXIf`` and ``tIME`` chunks are dropped. JPEG: EXIF and
    XMP (APP1), APP3-APP13, APP15 and comments are dropped; JFIF (APP0), the ICC profile
    (APP2) and Adobe's colour transform flag (APP14) are kept because decoding needs them.
    Other formats (TIFF) come back unchanged: their tags are interleaved with the image data.

    Raises
    ------
    InputError
        A PNG or JPEG whose structure is broken (truncated chunk or segment).
    """
    if data.startswith(_PNG_SIGNATURE):
        return _strip_png(data, name)
    if data.startswith(b"\xff\xd8"):
        return _strip_jpeg(data, name)
    return data


def _strip_png(data: bytes, name: str) -> bytes:
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise InputError("truncated PNG chunk", source=name)
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise InputError(f"truncated PNG chunk {kind.decode('latin-1')}", source=name)
        if kind not in _PNG_DROP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def _strip_jpeg(data: bytes, name: str) -> bytes:
    out = [b"\xff\xd8"]
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise InputError("broken JPEG segment structure", source=name)
        marker = data[pos + 1] if pos + 1 < len(data) else 0
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            out.append(data[pos:pos + 2])
            pos += 2
            continue
        if marker == 0xD9:
            out.append(data[pos:pos + 2])
            break
        if pos + 4 > len(data):
            raise InputError("truncated JPEG segment", source=name)
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise InputError("truncated JPEG segment", source=name)
        segment = data[pos:end]
        if marker == 0xDA:  # start of scan: entropy-coded data and the rest, as they are
            out.append(data[pos:])
            break
        keep = not (marker == 0xFE or marker == 0xE1 or 0xE3 <= marker <= 0xED
                    or marker == 0xEF or (marker == 0xE2 and not segment[4:16].startswith(
                        b"ICC_PROFILE")))
        if keep:
            out.append(segment)
        pos = end
    return b"".join(out)
