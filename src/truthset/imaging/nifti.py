"""Read NIfTI volumes with nibabel."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from truthset.domain.errors import InputError
from truthset.imaging.model import VolumeInfo, as_matrix4


@dataclass
class NiftiVolume:
    """A NIfTI image: its description and a lazy handle on the data.

    Parameters
    ----------
    info:
        Shape, spacing, affine (RAS+) and dtype.
    image:
        The nibabel image (data is read on :meth:`data`).
    """

    info: VolumeInfo
    image: nib.Nifti1Image | nib.Nifti2Image

    def data(self) -> np.ndarray:
        """Read the voxel data with the scaling (scl_slope/scl_inter) applied.

        Returns
        -------
        numpy.ndarray
            Array of shape ``info.shape`` (float when the header scales, else stored dtype).

        Raises
        ------
        InputError
            When the file is shorter than its header says.
        """
        try:
            return np.asanyarray(self.image.dataobj)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read NIfTI data: {exc}", source=self.info.source) from exc


def read_nifti(path: str | os.PathLike[str]) -> NiftiVolume:
    """Read a ``.nii`` or ``.nii.gz`` file.

    Parameters
    ----------
    path:
        The file.

    Returns
    -------
    NiftiVolume
        With :class:`~truthset.imaging.model.VolumeInfo` (affine in nibabel's RAS+ convention,
        spacing from ``header.get_zooms()``).

    Raises
    ------
    InputError
        Missing file, not NIfTI, or a data block shorter than the header declares.
    """
    label = str(path)
    p = Path(path)
    if not p.is_file():
        raise InputError("file does not exist", source=label)
    try:
        image = nib.load(str(p))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, gzip errors
        raise InputError(f"not a readable NIfTI file ({exc})", source=label) from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"not a NIfTI image but {type(image).__name__}", source=label)
    header = image.header
    shape = tuple(int(s) for s in image.shape)
    expected = int(np.prod(shape)) * header.get_data_dtype().itemsize
    if not label.endswith(".gz"):
        available = p.stat().st_size - int(header.get_data_offset())
        if available < expected:
            raise InputError(
                f"truncated NIfTI file: {available} data bytes, {expected} expected", source=label
            )
    return NiftiVolume(info=_info(image, label), image=image)


def _info(image: nib.Nifti1Image | nib.Nifti2Image, label: str) -> VolumeInfo:
    header = image.header
    affine = image.affine if image.affine is not None else np.eye(4)
    return VolumeInfo(
        source=label,
        shape=tuple(int(s) for s in image.shape),
        spacing=tuple(float(z) for z in header.get_zooms()),
        affine=as_matrix4(affine),
        dtype=str(header.get_data_dtype()),
        axis_codes=tuple(str(c) for c in nib.aff2axcodes(affine)),
    )


def nifti_from_bytes(data: bytes, *, source: str = "<bytes>") -> NiftiVolume:
    """Read a NIfTI-1 or NIfTI-2 file given as bytes (gzipped or not).

    Parameters
    ----------
    data:
        The file's bytes (a stored blob, an HTTP answer).
    source:
        What to call it in errors.

    Returns
    -------
    NiftiVolume
        As :func:`read_nifti` gives.

    Raises
    ------
    InputError
        Not gzip or not NIfTI, or a data block shorter than the header declares.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"not a gzip file: {exc}", source=source) from exc
    problem: Exception | None = None
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = kind.from_bytes(data)
        except Exception as exc:  # nibabel raises many types for bad headers
            problem = exc
            continue
        expected = int(np.prod(image.shape)) * image.header.get_data_dtype().itemsize
        if len(data) - int(image.header.get_data_offset()) < expected:
            raise InputError("truncated NIfTI data", source=source)
        return NiftiVolume(info=_info(image, source), image=image)
    raise InputError(f"not a readable NIfTI file ({problem})", source=source)
