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
