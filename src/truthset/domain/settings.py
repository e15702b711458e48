"""Per-project settings that are not the schema or the workflow policy."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from truthset.domain.errors import InputError


class DicomItem(StrEnum):
    """What one item is when DICOM is imported."""

    SERIES = "series"  #: a whole series (a volume, or a cine) is one item
    INSTANCE = "instance"  #: every instance (image) is one item


class DeidSettings(BaseModel):
    """De-identification options on top of the PS3.15 basic profile (see
    :class:`truthset.imaging.deid.DeidOptions`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retain_longitudinal_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False

    @property
    def standard(self) -> str:
        """Which de-identification standard data imported with these settings meets."""
        if self.retain_longitudinal_modified_dates or self.retain_patient_characteristics:
            return ("DICOM PS3.15 basic profile with options; NOT HIPAA Safe Harbor "
                    "(shifted dates or retained characteristics)")
        return "DICOM PS3.15 basic profile (header identifiers as HIPAA Safe Harbor lists them)"


class ImagingSettings(BaseModel):
    """How a project ingests medical images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dicom_item: DicomItem = DicomItem.SERIES
    deid: DeidSettings = DeidSettings()


def imaging_settings(settings: dict[str, Any] | None) -> ImagingSettings:
    """The imaging settings stored in a project's ``settings`` (defaults when absent).

    Raises
    ------
    InputError
        A stored or given value is invalid (the field is named).
    """
    try:
        return ImagingSettings.model_validate((settings or {}).get("imaging", {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(first["msg"], field="imaging." + ".".join(map(str, first["loc"]))) from exc
