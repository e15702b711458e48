"""Per-project settings that are not the schema or the workflow policy."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

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
    #: Private elements kept (Retain Safe Private): ``"gggg,CREATOR,ee"`` (hex group, private
    #: creator, hex element offset), for example ``"0019,GEMS_ACQU_01,1b"``.
    private_safelist: tuple[str, ...] = ()

    @field_validator("private_safelist")
    @classmethod
    def _check_safelist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            parse_private_entry(entry)
        return value

    def safelist(self) -> frozenset[tuple[int, str, int]]:
        """The safelist as ``(group, creator, element offset)`` triples."""
        return frozenset(parse_private_entry(e) for e in self.private_safelist)

    @property
    def standard(self) -> str:
        """Which de-identification standard data imported with these settings meets."""
        if self.retain_longitudinal_modified_dates or self.retain_patient_characteristics:
            return ("DICOM PS3.15 basic profile with options; NOT HIPAA Safe Harbor "
                    "(shifted dates or retained characteristics)")
        return "DICOM PS3.15 basic profile (header identifiers as HIPAA Safe Harbor lists them)"


def parse_private_entry(entry: str) -> tuple[int, str, int]:
    """Parse ``"gggg,CREATOR,ee"`` into ``(group, creator, element offset)``.

    Raises
    ------
    ValueError
        Not three comma-separated parts, an even (public) or non-hex group, or an offset
        outside 00-ff.
    """
    parts = [p.strip() for p in str(entry).split(",")]
    if len(parts) != 3 or not parts[1]:
        raise ValueError(f"private safelist entry {entry!r} is not 'gggg,CREATOR,ee'")
    try:
        group, offset = int(parts[0], 16), int(parts[2], 16)
    except ValueError:
        raise ValueError(f"private safelist entry {entry!r}: group and element must be hex")\
            from None
    if group % 2 == 0 or not 0x0009 <= group <= 0xFFFF:
        raise ValueError(f"private safelist entry {entry!r}: {parts[0]} is not a private group")
    if not 0 <= offset <= 0xFF:
        raise ValueError(f"private safelist entry {entry!r}: element offset must be 00-ff")
    return group, parts[1], offset


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
