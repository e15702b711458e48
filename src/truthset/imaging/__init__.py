"""truthset.imaging: DICOM, NIfTI and raster images, with no knowledge of projects or storage.

Reading (:mod:`~truthset.imaging.dicom`, :mod:`~truthset.imaging.nifti`,
:mod:`~truthset.imaging.raster`, :mod:`~truthset.imaging.archive`), typed descriptions
(:mod:`~truthset.imaging.model`), de-identification (:mod:`~truthset.imaging.deid`),
rendering (:mod:`~truthset.imaging.render`) and label exports (:mod:`~truthset.imaging.export`).
"""

from truthset.imaging.archive import ZipMember, iter_zip_members
from truthset.imaging.deid import (
    DeidOptions,
    DeidRecord,
    DeidResult,
    burned_in_reasons,
    burned_in_risk,
    deidentify,
    patient_date_offset,
    remap_uid,
)
from truthset.imaging.dicom import (
    DicomImage,
    DicomSeries,
    group_series,
    image_info,
    read_dicom,
    read_series,
    split_series,
)
from truthset.imaging.model import ImageInfo, RasterInfo, SeriesInfo, VolumeInfo
from truthset.imaging.nifti import NiftiVolume, read_nifti
from truthset.imaging.raster import RasterImage, probe_raster, read_raster
from truthset.imaging.render import CT_PRESETS, Window, render_dicom, render_plane, to_display

__all__ = [
    "CT_PRESETS",
    "DeidOptions",
    "DeidRecord",
    "DeidResult",
    "DicomImage",
    "DicomSeries",
    "ImageInfo",
    "NiftiVolume",
    "RasterImage",
    "RasterInfo",
    "SeriesInfo",
    "VolumeInfo",
    "Window",
    "ZipMember",
    "burned_in_reasons",
    "burned_in_risk",
    "deidentify",
    "group_series",
    "image_info",
    "iter_zip_members",
    "patient_date_offset",
    "probe_raster",
    "read_dicom",
    "read_nifti",
    "read_raster",
    "read_series",
    "remap_uid",
    "render_dicom",
    "render_plane",
    "split_series",
    "to_display",
]
