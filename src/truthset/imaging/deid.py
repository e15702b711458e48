"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The attribute actions (D, Z, X, U and the compound X/Z, X/D, Z/D, X/Z/D, X/Z/U*) come from
the PS3.15 Table E.1-1 transcription shipped by Kitware's ``dicom-anonymizer`` package
(``dicomanonymizer.dicom_anonymization_databases``). The engine that applies them is ours,
because the package's own engine has gaps that matter here (see ``docs/imaging.md``): it
applies the table to the top level only, draws random (not reproducible) UIDs from a
process-wide dictionary, has no date shifting and no profile options.

Options (selectable with :class:`DeidOptions`), each recorded in
DeidentificationMethodCodeSequence only when applied:

* **Retain Longitudinal Temporal Information with Modified Dates** (113107): every date (DA)
  and date-time (DT) is shifted by one whole-day offset per patient, supplied by the caller;
  times of day are kept. Patient's Birth Date/Time still follow the basic profile.
* **Retain Patient Characteristics** (113108): sex, age, size, weight, ethnic group, smoking
  and pregnancy status are kept (ages over 89 years are capped to ``090Y`` unless told not to,
  the HIPAA Safe Harbor rule); allergies, patient state, pre-medication and special needs
  are cleaned.
* **Clean Descriptors** (113105): descriptions and comments are kept after cleaning: every
  identifying value found in the dataset (names and their components, IDs, addresses,
  phone numbers, dates...) and anything shaped like a date, phone number, e-mail address,
  URL, IP address, SSN or a code mixing letters and digits (6+ characters: record numbers,
  plates, serials) is replaced by ``*``. This is automatic, best-effort cleaning; free
  text can still hold identifiers that appear nowhere else in the header.
* **Retain Safe Private** (113111): private elements named in ``private_safelist`` are kept;
  every other private element is removed.

UIDs are replaced by ``2.25.<int>`` UIDs derived from an HMAC-SHA256 of the original UID
under a project secret, so the same study maps to the same new UIDs across files, runs and
imports, and references between instances stay intact. PatientName and PatientID become the
caller's pseudonym. The caller receives a :class:`DeidRecord` of original -> new values to
store apart from the data.

Shifted dates do not meet HIPAA Safe Harbor (which removes all date elements but the year);
the basic profile without the date option removes or empties them.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID_dictionary

from truthset.domain.errors import InputError

# ----------------------------------------------------------------------------- table

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
RETAIN_LONGITUDINAL_MODIFIED = (
    "113107",
    "Retain Longitudinal Temporal Information Modified Dates Option",
)
RETAIN_PATIENT_CHARACTERISTICS = ("113108", "Retain Patient Characteristics Option")
RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

_TABLE_VERSIONS = ("dicomfields_2026c", "dicomfields_2024b", "dicomfields_2023")
_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


@dataclass(frozen=True)
class ActionTable:
    """PS3.15 Table E.1-1 basic-profile actions.

    Parameters
    ----------
    version:
        Edition of the standard the table was transcribed from.
    exact:
        Action code per tag.
    masked:
        ``(group, element, group mask, element mask, code)`` for repeating groups
        (curve data 50xx, overlay data/comments 60xx).
    """

    version: str
    exact: Mapping[int, str]
    masked: tuple[tuple[int, int, int, int, str], ...]

    def action(self, tag: int) -> str | None:
        """Return the basic-profile action code of ``tag``, or ``None`` if not listed."""
        code = self.exact.get(int(tag))
        if code is not None:
            return code
        group, element = int(tag) >> 16, int(tag) & 0xFFFF
        for g, e, gm, em, c in self.masked:
            if group & gm == g & gm and element & em == e & em:
                return c
        return None


def load_action_table() -> ActionTable:
    """Load the newest PS3.15 E.1-1 transcription that ``dicom-anonymizer`` ships.

    Returns
    -------
    ActionTable
        Basic-profile action per tag.
    """
    import importlib

    for version in _TABLE_VERSIONS:
        try:
            module = importlib.import_module(
                f"dicomanonymizer.dicom_anonymization_databases.{version}"
            )
        except ModuleNotFoundError:
            continue
        exact: dict[int, str] = {}
        masked: list[tuple[int, int, int, int, str]] = []
        for category, code in _CATEGORIES.items():
            for entry in getattr(module, category):
                if len(entry) == 2:
                    exact[(entry[0] << 16) | entry[1]] = code
                else:
                    masked.append((entry[0], entry[1], entry[2], entry[3], code))
        return ActionTable(version=version, exact=MappingProxyType(exact), masked=tuple(masked))
    raise RuntimeError("dicom-anonymizer's PS3.15 table is not installed")  # pragma: no cover


_TABLE: ActionTable | None = None


def _table() -> ActionTable:
    global _TABLE
    if _TABLE is None:
        _TABLE = load_action_table()
    return _TABLE


def _tags(*keywords: str) -> frozenset[int]:
    out = set()
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is None:  # pragma: no cover - guards a typo in the lists below
            raise KeyError(kw)
        out.add(int(tag))
    return frozenset(out)


# PS3.15 Table E.1-1, "Rtn. Pat. Chars. Opt." column.
_PATIENT_CHARACTERISTICS_KEEP = _tags(
    "PatientAge",
    "PatientSex",
    "PatientSexNeutered",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "SmokingStatus",
    "PregnancyStatus",
)
_PATIENT_CHARACTERISTICS_CLEAN = _tags("Allergies", "PatientState", "PreMedication", "SpecialNeeds")
# PS3.15 Table E.1-1, "Clean Desc. Opt." column (attributes with C).
_CLEAN_DESCRIPTORS = _tags(
    "AcquisitionComments",
    "AcquisitionDeviceProcessingDescription",
    "AcquisitionFieldOfViewLabel",
    "AcquisitionProtocolDescription",
    "AdditionalPatientHistory",
    "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "ClinicalTrialSeriesDescription",
    "ClinicalTrialTimePointDescription",
    "CommentsOnRadiationDose",
    "CommentsOnThePerformedProcedureStep",
    "ContrastBolusAgent",
    "ContributionDescription",
    "DerivationDescription",
    "DeviceSettingDescription",
    "DischargeDiagnosisDescription",
    "FrameComments",
    "IdentifyingComments",
    "ImageComments",
    "ImagingServiceRequestComments",
    "Impressions",
    "InterpretationDiagnosisDescription",
    "InterpretationText",
    "LabelText",
    "LongDeviceDescription",
    "MedicalAlerts",
    "MultienergyAcquisitionDescription",
    "Occupation",
    "PatientComments",
    "PatientState",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "ReasonForRequestedProcedureCodeSequence",
    "ReasonForStudy",
    "ReasonForTheImagingServiceRequest",
    "ReasonForTheRequestedProcedure",
    "ReasonForVisit",
    "ReasonForVisitCodeSequence",
    "RequestAttributesSequence",
    "RequestedContrastAgent",
    "RequestedProcedureComments",
    "RequestedProcedureDescription",
    "RequestedSeriesDescription",
    "RespiratoryMotionCompensationTechniqueDescription",
    "ResultsComments",
    "ScheduledProcedureStepDescription",
    "SeriesDescription",
    "ServiceEpisodeDescription",
    "SpecimenDetailedDescription",
    "SpecimenShortDescription",
    "StudyComments",
    "StudyDescription",
    "VisitComments",
)
# Dates that stay under the basic profile even with the longitudinal option.
_BIRTH = _tags("PatientBirthDate", "PatientBirthTime")
# UI elements that name classes/syntaxes/schemes, not instances: never remapped.
_KEEP_UID_KEYWORDS = frozenset(
    {
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
        "CodingSchemeRegistry",
    }
)
_FILE_META_KEEP = _tags(
    "FileMetaInformationVersion",
    "MediaStorageSOPClassUID",
    "MediaStorageSOPInstanceUID",
    "TransferSyntaxUID",
    "ImplementationClassUID",
    "ImplementationVersionName",
)

_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
_FREE_TEXT_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_IDENTIFIER_VRS = {"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT"}
_SCRUB_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"[\w.+-]+@[\w-]+(\.[\w-]+)+",  # e-mail
        r"\b(?:https?|ftp)://\S+|\bwww\.\S+",  # URL
        r"\b\d{1,3}(?:\.\d{1,3}){3}\b",  # IPv4
        r"\b\d{3}-\d{2}-\d{4}\b",  # SSN
        r"\+?\d[\d ()./-]{6,}\d",  # phone/fax and long digit runs
        r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b",  # dates
        r"\b(19|20)\d{6}\b",  # DICOM dates
        # codes mixing letters and digits (MRNs, plates, VINs, serials): 6+ characters
        r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{5,}\b",
    )
]


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 profile options to apply on top of the basic profile.

    Parameters
    ----------
    retain_longitudinal_modified_dates:
        Shift dates by the caller's per-patient offset instead of removing them (113107).
    retain_patient_characteristics:
        Keep sex, age, size, weight and similar (113108).
    clean_descriptors:
        Keep descriptions/comments after cleaning them (113105).
    private_safelist:
        Private elements to keep, as ``(group, private creator, element offset)`` with the
        offset the low byte of the element number (for example ``(0x0019, "GEMS_ACQU_01",
        0x1B)``). A non-empty list applies Retain Safe Private (113111).
    cap_age_over_89:
        With retained patient characteristics, write ages of 90 years or more as ``090Y``.
    """

    retain_longitudinal_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False
    private_safelist: frozenset[tuple[int, str, int]] = frozenset()
    cap_age_over_89: bool = True

    def codes(self) -> tuple[tuple[str, str], ...]:
        """DICOM codes (DCM scheme) of the basic profile and the options that apply."""
        out = [BASIC_PROFILE]
        if self.clean_descriptors:
            out.append(CLEAN_DESCRIPTORS)
        if self.retain_longitudinal_modified_dates:
            out.append(RETAIN_LONGITUDINAL_MODIFIED)
        if self.retain_patient_characteristics:
            out.append(RETAIN_PATIENT_CHARACTERISTICS)
        if self.private_safelist:
            out.append(RETAIN_SAFE_PRIVATE)
        return tuple(out)


@dataclass(frozen=True)
class DeidRecord:
    """What de-identification replaced, for the caller to keep apart from the data.

    Parameters
    ----------
    pseudonym:
        The value written to PatientID and PatientName.
    original_patient_id, original_patient_name:
        The values they replaced.
    date_offset_days:
        Days added to every date (``None`` when dates were removed).
    uid_map:
        Original UID -> new UID for every UID replaced.
    method_codes:
        Code values written to DeidentificationMethodCodeSequence.
    profile_table:
        Edition of PS3.15 Table E.1-1 used.
    removed_private_elements:
        How many private elements were removed.
    """

    pseudonym: str
    original_patient_id: str | None
    original_patient_name: str | None
    date_offset_days: int | None
    uid_map: Mapping[str, str]
    method_codes: tuple[str, ...]
    profile_table: str
    removed_private_elements: int


@dataclass
class DeidResult:
    """The de-identified dataset and the record of what was replaced.

    Parameters
    ----------
    dataset:
        The de-identified copy (the input is left untouched).
    record:
        Original -> pseudonym / UID mappings.
    """

    dataset: Dataset
    record: DeidRecord


def remap_uid(uid: str, secret: bytes) -> str:
    """Map a UID to a ``2.25.<integer>`` UID with an HMAC-SHA256 keyed by ``secret``.

    The same UID and secret always give the same result; without the secret the original
    cannot be recovered or confirmed.

    Parameters
    ----------
    uid:
        The original UID.
    secret:
        The project's de-identification key.

    Returns
    -------
    str
        A UID of at most 44 characters under the ``2.25`` (UUID-derived) root.
    """
    digest = hmac.new(secret, uid.strip().encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def patient_date_offset(
    secret: bytes, patient_key: str, *, min_days: int = 30, max_days: int = 3650
) -> int:
    """A reproducible, secret-keyed date offset for one patient (always negative).

    Parameters
    ----------
    secret:
        The project's de-identification key.
    patient_key:
        A stable key of the patient (for example the original PatientID with its issuer).
    min_days, max_days:
        The offset lies in ``[-max_days, -min_days]``.

    Returns
    -------
    int
        Days to add to every date of this patient.
    """
    if not 0 < min_days <= max_days:
        raise InputError("need 0 < min_days <= max_days", field="min_days")
    digest = hmac.new(secret, b"date-offset\x00" + patient_key.encode(), hashlib.sha256).digest()
    return -(min_days + int.from_bytes(digest[:8], "big") % (max_days - min_days + 1))


def deidentify(
    dataset: Dataset,
    *,
    secret: bytes,
    pseudonym: str,
    date_offset_days: int | None = None,
    options: DeidOptions | None = None,
) -> DeidResult:
    """De-identify one dataset with the PS3.15 basic profile and the chosen options.

    Parameters
    ----------
    dataset:
        The original dataset (not modified; a deep copy is de-identified).
    secret:
        Project key for UID remapping (at least 16 bytes).
    pseudonym:
        Written to PatientID and PatientName.
    date_offset_days:
        Whole days added to every date; required (and non-zero) with
        ``retain_longitudinal_modified_dates``, refused otherwise.
    options:
        The profile options (default: basic profile only).

    Returns
    -------
    DeidResult
        The de-identified dataset and the record of replacements.

    Raises
    ------
    InputError
        A short secret, an empty or over-long pseudonym, or an offset that does not match
        the date option.
    """
    opts = options or DeidOptions()
    if len(secret) < 16:
        raise InputError("the de-identification secret must be at least 16 bytes", field="secret")
    if not pseudonym.strip() or len(pseudonym) > 64 or "\\" in pseudonym:
        raise InputError(
            "the pseudonym must be 1-64 characters without backslash", field="pseudonym"
        )
    if opts.retain_longitudinal_modified_dates:
        if not date_offset_days:
            raise InputError(
                "retaining modified dates needs a non-zero date_offset_days",
                field="date_offset_days",
            )
    elif date_offset_days is not None:
        raise InputError(
            "date_offset_days given but the modified-dates option is off",
            field="date_offset_days",
        )
    ds = copy.deepcopy(dataset)
    engine = _Engine(secret, opts, date_offset_days, _collect_identifiers(ds))
    original_id = _text(ds.get("PatientID"))
    original_name = _text(ds.get("PatientName"))
    engine.process(ds)
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    _mark(ds, opts)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in list(meta.keys()):
            if int(tag) not in _FILE_META_KEEP:
                del meta[tag]
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    record = DeidRecord(
        pseudonym=pseudonym,
        original_patient_id=original_id,
        original_patient_name=original_name,
        date_offset_days=date_offset_days,
        uid_map=MappingProxyType(dict(engine.uid_map)),
        method_codes=tuple(code for code, _ in opts.codes()),
        profile_table=_table().version,
        removed_private_elements=engine.removed_private,
    )
    return DeidResult(dataset=ds, record=record)


_SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
_RISKY_MODALITIES = frozenset({"US", "IVUS", "ES", "XC", "GM", "SM", "OT", "DOC", "SC"})


def burned_in_reasons(ds: Dataset) -> list[str]:
    """Say why the pixels of ``ds`` may hold burned-in text or a recognisable face.

    Parameters
    ----------
    ds:
        The dataset (header only is enough).

    Returns
    -------
    list of str
        Empty when there is no known risk.
    """
    reasons: list[str] = []
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        reasons.append("BurnedInAnnotation is YES")
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        reasons.append("RecognizableVisualFeatures is YES (a face may be recognisable)")
    if burned == "NO":
        return reasons
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if modality in _RISKY_MODALITIES:
        reasons.append(f"BurnedInAnnotation absent on modality {modality}")
    if sop_class in _SECONDARY_CAPTURE_CLASSES:
        reasons.append("BurnedInAnnotation absent on a secondary capture")
    if "SCREEN SAVE" in image_type or "SCREENSHOT" in image_type:
        reasons.append("BurnedInAnnotation absent on a screen capture")
    if "ConversionType" in ds and sop_class not in _SECONDARY_CAPTURE_CLASSES:
        reasons.append("BurnedInAnnotation absent on a converted (digitised) image")
    return reasons


def burned_in_risk(ds: Dataset) -> bool:
    """True when the pixels may show identifying text: the caller should quarantine.

    True when BurnedInAnnotation is ``YES`` (or RecognizableVisualFeatures is ``YES``), or
    when BurnedInAnnotation is absent on ultrasound and other camera/screen modalities,
    secondary captures and screen saves.

    Parameters
    ----------
    ds:
        The dataset.

    Returns
    -------
    bool
        Whether to hold the image back for pixel review.
    """
    return bool(burned_in_reasons(ds))


# ----------------------------------------------------------------------------- engine


@dataclass
class _Engine:
    secret: bytes
    options: DeidOptions
    offset: int | None
    identifiers: list[str]
    uid_map: dict[str, str] = field(default_factory=dict)
    removed_private: int = 0

    def process(self, ds: Dataset) -> None:
        table = _table()
        for tag in list(ds.keys()):
            if tag not in ds:
                continue
            elem = ds[tag]
            if tag.is_private:
                continue
            code = self._code(elem, table.action(tag))
            self._apply(ds, elem, code)
        self._private(ds)

    # which action
    def _code(self, elem: DataElement, basic: str | None) -> str | None:
        tag = int(elem.tag)
        o = self.options
        if o.retain_patient_characteristics:
            if tag in _PATIENT_CHARACTERISTICS_KEEP:
                return "K"
            if tag in _PATIENT_CHARACTERISTICS_CLEAN:
                return "C"
        if o.clean_descriptors and tag in _CLEAN_DESCRIPTORS:
            return "C"
        if o.retain_longitudinal_modified_dates and tag not in _BIRTH:
            if elem.VR in ("DA", "DT"):
                return "SHIFT"
            if elem.VR == "TM" or tag == int(Tag(0x0008, 0x0201)):
                return "K"
        if basic is not None:
            return basic
        if elem.VR == "UI":
            return "U?"
        if elem.VR in ("DA", "DT", "TM"):
            return "Z"  # dates outside the table: emptied rather than trusted
        if elem.VR == "SQ":
            return "K"
        return None

    def _apply(self, ds: Dataset, elem: DataElement, code: str | None) -> None:
        if code is None:
            return
        tag = elem.tag
        if code == "X":
            del ds[tag]
        elif code in ("Z", "X/Z"):
            _empty(elem)
        elif code in ("D", "X/D", "Z/D", "X/Z/D"):
            if elem.VR == "SQ":
                self._items(elem, clean=False)
            elif elem.VR == "UI":
                self._remap(elem)
            else:
                _dummy(elem)
        elif code == "U":
            self._remap(elem)
        elif code == "U?":
            keyword = keyword_for_tag(tag) or ""
            registered = all(str(v) in UID_dictionary for v in _as_list(elem.value) if v)
            if not (keyword.endswith("ClassUID") or keyword in _KEEP_UID_KEYWORDS or registered):
                self._remap(elem)
        elif code == "X/Z/U*":
            if elem.VR == "SQ":
                self._items(elem, clean=False)
            elif elem.VR == "UI":
                self._remap(elem)
            else:
                _empty(elem)
        elif code == "C":
            if elem.VR == "SQ":
                self._items(elem, clean=True)
            elif elem.VR in _TEXT_VRS and elem.value not in (None, ""):
                elem.value = _map_values(elem.value, self._scrub)
        elif code == "SHIFT":
            assert self.offset is not None
            offset = self.offset
            vr = elem.VR
            if elem.value not in (None, ""):
                elem.value = _map_values(elem.value, lambda v: _shift(v, offset, vr))
        elif code == "K":
            if elem.VR == "SQ":
                self._items(elem, clean=False)
            elif int(tag) == int(Tag(0x0010, 0x1010)) and self.options.cap_age_over_89:
                elem.value = _cap_age(str(elem.value or ""))

    def _items(self, elem: DataElement, *, clean: bool) -> None:
        for item in elem.value or []:
            self.process(item)
            if clean:
                for sub in item:
                    if sub.VR in _FREE_TEXT_VRS and sub.value not in (None, ""):
                        sub.value = _map_values(sub.value, self._scrub)

    def _remap(self, elem: DataElement) -> None:
        def one(v: Any) -> Any:
            text = str(v).strip()
            if not text:
                return v
            new = self.uid_map.get(text)
            if new is None:
                new = remap_uid(text, self.secret)
                self.uid_map[text] = new
            return new

        if elem.value not in (None, ""):
            elem.value = _map_values(elem.value, one)

    def _scrub(self, value: Any) -> Any:
        text = str(value)
        for ident in self.identifiers:
            text = re.sub(re.escape(ident), "*", text, flags=re.IGNORECASE)
        for pattern in _SCRUB_PATTERNS:
            text = pattern.sub("*", text)
        return text

    def _private(self, ds: Dataset) -> None:
        safelist = self.options.private_safelist
        keep_blocks: set[tuple[int, int]] = set()
        for tag in [t for t in ds.keys() if t.is_private]:  # noqa: SIM118
            group, element = tag.group, tag.element
            if 0x0010 <= element <= 0x00FF:
                continue  # creators: decided after their elements
            creator_tag = BaseTag((group << 16) | (element >> 8))
            creator = _text(ds.get(creator_tag)) if creator_tag in ds else None
            if creator is not None and (group, creator, element & 0xFF) in safelist:
                keep_blocks.add((group, element >> 8))
                elem = ds[tag]
                if elem.VR == "SQ":
                    self._items(elem, clean=False)
                continue
            del ds[tag]
            self.removed_private += 1
        for tag in [t for t in ds.keys() if t.is_private]:  # noqa: SIM118
            is_creator = 0x0010 <= tag.element <= 0x00FF
            if (is_creator and (tag.group, tag.element) not in keep_blocks) or tag.element < 0x0010:
                del ds[tag]
                self.removed_private += 1


# ----------------------------------------------------------------------------- helpers


def _collect_identifiers(ds: Dataset) -> list[str]:
    """Identifying strings in the dataset, used to clean descriptors (longest first)."""
    table = _table()
    found: set[str] = set()

    def visit(d: Dataset) -> None:
        for elem in d:
            tag = int(elem.tag)
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item)
                continue
            if tag in _CLEAN_DESCRIPTORS or tag in _PATIENT_CHARACTERISTICS_KEEP:
                continue
            action = table.action(tag)
            identifying = elem.tag.is_private or (action is not None and action not in ("U",))
            if elem.VR == "PN" or (identifying and elem.VR in _IDENTIFIER_VRS):
                for value in _as_list(elem.value):
                    text = str(value).strip()
                    parts = [text]
                    if elem.VR == "PN":
                        parts += re.split(r"[\^=\s,]+", text)
                    else:  # tokens that look like codes or names inside longer values
                        parts += [t for t in re.split(r"[\s,;:]+", text) if len(t) >= 4]
                    found.update(p for p in parts if len(p) >= 3)

    visit(ds)
    return sorted(found, key=len, reverse=True)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | MultiValue):
        return list(value)
    return [value]


def _map_values(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, list | tuple | MultiValue):
        return [fn(v) for v in value]
    return fn(value)


def _text(elem: Any) -> str | None:
    if elem is None:
        return None
    value = elem.value if hasattr(elem, "value") else elem
    text = str(value).strip() if value is not None else ""
    return text or None


def _empty(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        elem.value = b""
    elif elem.VR in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
        elem.value = None
    else:
        elem.value = ""


_DUMMIES: dict[str, Any] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "",
}


def _dummy(elem: DataElement) -> None:
    vr = elem.VR
    if vr in _DUMMIES:
        elem.value = _DUMMIES[vr]
    elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        elem.value = 0
    elif vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV", "AT"):
        _empty(elem)
    else:
        elem.value = "ANONYMIZED"


def _shift_date(text: str, days: int) -> str:
    if not text:
        return text
    precision = len(text)
    padded = text + "0101"[max(0, precision - 4) :] if precision < 8 else text[:8]
    try:
        day = dt.date(int(padded[:4]), int(padded[4:6]), int(padded[6:8]))
    except ValueError:
        return ""
    shifted = (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    return shifted[:precision] if precision < 8 else shifted


def _shift(value: Any, days: int, vr: str) -> str:
    text = str(value).strip()
    if "-" in text and vr == "DA":  # a date range
        return "-".join(_shift_date(part, days) for part in text.split("-"))
    if vr == "DA":
        return _shift_date(text, days)
    # DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; shift the date part, keep the rest.
    head = text[: min(8, len(text))]
    digits = len(head) if head.isdigit() else 0
    if digits < 4:
        return ""
    return _shift_date(head[:digits], days) + text[digits:]


def _cap_age(age: str) -> str:
    match = re.fullmatch(r"(\d{3})([DWMY])", age.strip())
    if not match:
        return age
    per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[match.group(2)]
    return "090Y" if int(match.group(1)) / per_year >= 90 else age


def _mark(ds: Dataset, opts: DeidOptions) -> None:
    ds.PatientIdentityRemoved = "YES"
    names = ["Truthset PS3.15 E.1 Basic Profile"] + [
        meaning[:64] for code, meaning in opts.codes() if code != BASIC_PROFILE[0]
    ]
    ds.DeidentificationMethod = names
    items = []
    for code, meaning in opts.codes():
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED" if opts.retain_longitudinal_modified_dates else "REMOVED"
    )


def identifying_values(ds: Dataset) -> Iterable[str]:
    """The identifying strings :func:`deidentify` would clean out of descriptors.

    Parameters
    ----------
    ds:
        An original dataset.

    Returns
    -------
    iterable of str
        Names (and name components), IDs, addresses, dates... longest first.
    """
    return tuple(_collect_identifiers(ds))
