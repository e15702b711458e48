"""De-identification (PS3.15 Annex E basic profile + options) and burned-in risk."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from test_imaging_helpers import bundled, make_series
from truthset.domain.errors import InputError
from truthset.imaging.deid import (
    DeidOptions,
    burned_in_risk,
    deidentify,
    load_action_table,
    patient_date_offset,
    remap_uid,
)

SECRET = b"project-secret-0123456789abcdef"
SAFE = (0x0029, "ACME SAFE", 0x10)
ALL_OPTIONS = DeidOptions(
    retain_longitudinal_modified_dates=True,
    retain_patient_characteristics=True,
    clean_descriptors=True,
    private_safelist=frozenset({SAFE}),
)


def _item(**values: object) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


# The 18 HIPAA Safe Harbor identifier kinds, each planted at least once.
PLANTED = {
    "names": [
        "Zebediah",
        "Quincy",
        "Hortensia Vandermeer",
        "Okonkwo",
        "Thistlewood",
        "Fennimore",
        "Marlowe",
    ],
    "geography": [
        "742 Evergreen Terrace",
        "Springfield",
        "97403",
        "Saint Wilhelmina Hospital",
        "Wilhelmina Boulevard",
        "Lane County",
    ],
    "dates": ["19310317", "20190412", "20190413"],
    "phone": ["541-555-0142"],
    "fax": ["541-555-0199"],
    "email": ["zebediah.quincy@example.org"],
    "ssn": ["078-05-1120"],
    "mrn": ["MRN-88412907", "SWH-MRN"],
    "health_plan": ["HPN-55501234"],
    "account": ["ACCT-20077321"],
    "licence": ["LIC-MD-4471920"],
    "vehicle": ["7XKZ412", "1HGCM82633A004352"],
    "device": ["SN-CT-99812345", "CTSCAN-WEST-07", "00812345678901"],
    "url": ["portal.swh.example"],
    "ip": ["192.168.44.21"],
    "biometric": ["RTN-5566778"],
    "face_photo": ["1.2.826.0.1.3680043.2.1125.777.1"],
    "other_codes": [
        "ACC-QZ-0077",
        "STUDY-QZ-4411",
        "TRIAL-SUBJ-3390",
        "RPID-661177",
        "SPS-661178",
        "1.2.826.0.1.3680043.2.1125.888.2",
    ],
}


def phi_dataset() -> Dataset:
    """CT_small with every identifier kind planted in headers, sequences and private tags."""
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.PatientName = "Quincy^Zebediah^Marlowe"
    ds.OtherPatientNames = "Zebby Quincy"
    ds.PatientMotherBirthName = "Hortensia Vandermeer"
    ds.ReferringPhysicianName = "Okonkwo^Adaeze"
    ds.PerformingPhysicianName = "Thistlewood^Barnaby"
    ds.OperatorsName = "Fennimore^Lysander"
    ds.PatientAddress = "742 Evergreen Terrace, Springfield, OR 97403"
    ds.InstitutionName = "Saint Wilhelmina Hospital"
    ds.InstitutionAddress = "1600 Wilhelmina Boulevard, Eugene"
    ds.RegionOfResidence = "Lane County"
    ds.PatientBirthDate = "19310317"
    ds.PatientAge = "094Y"
    ds.PatientSex = "F"
    ds.StudyDate = ds.SeriesDate = "20190412"
    ds.AcquisitionDate = ds.ContentDate = "20190413"
    ds.PatientTelephoneNumbers = "+1-541-555-0142"
    ds.PatientTelecomInformation = "fax +1-541-555-0199"
    ds.PatientID = "MRN-88412907"
    ds.IssuerOfPatientID = "SWH-MRN"
    ds.OtherPatientIDsSequence = Sequence(
        [_item(PatientID="078-05-1120", TypeOfPatientID="TEXT", IssuerOfPatientID="SSA")]
    )
    ds.PatientInsurancePlanCodeSequence = Sequence(
        [_item(CodeValue="HPN-55501234", CodingSchemeDesignator="99INS", CodeMeaning="plan")]
    )
    ds.AdmissionID = "ACCT-20077321"
    ds.PhysiciansOfRecordIdentificationSequence = Sequence(
        [
            _item(
                PersonIdentificationCodeSequence=Sequence(
                    [
                        _item(
                            CodeValue="LIC-MD-4471920",
                            CodingSchemeDesignator="99LIC",
                            CodeMeaning="licence",
                        )
                    ]
                ),
                PersonTelecomInformation="zebediah.quincy@example.org",
            )
        ]
    )
    ds.DeviceSerialNumber = "SN-CT-99812345"
    ds.StationName = "CTSCAN-WEST-07"
    ds.UniqueDeviceIdentifier = "(01)00812345678901(21)XYZ"
    ds.PatientComments = (
        "Drove vehicle 7XKZ412 VIN 1HGCM82633A004352; https://portal.swh.example/p "
        "from 192.168.44.21; retina RTN-5566778"
    )
    ds.ReferencedPatientPhotoSequence = Sequence(
        [
            _item(
                ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.4",
                ReferencedSOPInstanceUID="1.2.826.0.1.3680043.2.1125.777.1",
            )
        ]
    )
    ds.AccessionNumber = "ACC-QZ-0077"
    ds.StudyID = "STUDY-QZ-4411"
    ds.ClinicalTrialSubjectID = "TRIAL-SUBJ-3390"
    ds.ReferencedPatientSequence = Sequence(
        [
            _item(
                ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1",
                ReferencedSOPInstanceUID="1.2.826.0.1.3680043.2.1125.888.2",
            )
        ]
    )
    ds.RequestAttributesSequence = Sequence(
        [
            _item(
                RequestedProcedureID="RPID-661177",
                ScheduledProcedureStepID="SPS-661178",
                RequestedProcedureDescription="CT head for Zebediah Quincy, call 541-555-0142",
            )
        ]
    )
    # A sequence the table does not list, holding identifiers one level down.
    ds.SourcePatientGroupIdentificationSequence = Sequence(
        [_item(PatientID="MRN-88412907", IssuerOfPatientID="SWH-MRN")]
    )
    # Descriptors that the Clean Descriptors option keeps after cleaning.
    ds.StudyDescription = "CT HEAD Quincy MRN-88412907 on 20190412"
    ds.SeriesDescription = "AX 5mm for zebediah.quincy@example.org at 192.168.44.21"
    ds.ImageComments = "Saint Wilhelmina Hospital, Lane County"
    # Private tags: one block full of PHI, one safelisted harmless value.
    phi = ds.private_block(0x0029, "ACME PHI", create=True)
    phi.add_new(0x10, "LO", "Quincy^Zebediah")
    phi.add_new(0x11, "LO", "078-05-1120")
    phi.add_new(0x12, "LT", "retina RTN-5566778 plate 7XKZ412")
    safe = ds.private_block(0x0029, "ACME SAFE", create=True)
    safe.add_new(0x10, "DS", "2.5")
    return ds


def _original_uids(ds: Dataset) -> list[str]:
    return [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID]


@pytest.mark.parametrize("options", [DeidOptions(), ALL_OPTIONS], ids=["basic", "all-options"])
def test_no_planted_identifier_survives(tmp_path: Path, options: DeidOptions) -> None:
    original = phi_dataset()
    offset = -400 if options.retain_longitudinal_modified_dates else None
    result = deidentify(
        original, secret=SECRET, pseudonym="PSN-0001", date_offset_days=offset, options=options
    )
    out = tmp_path / "deid.dcm"
    result.dataset.save_as(out, enforce_file_format=True)
    written = out.read_bytes().lower()
    as_json = json.dumps(pydicom.dcmread(out).to_json_dict()).lower()
    planted = [v for values in PLANTED.values() for v in values] + _original_uids(original)
    survivors = [v for v in planted if v.lower().encode() in written or v.lower() in as_json]
    assert survivors == []
    # The original is untouched and still holds them (the check above is not vacuous).
    original_bytes = tmp_path / "orig.dcm"
    original.save_as(original_bytes)
    blob = original_bytes.read_bytes().lower()
    assert all(v.lower().encode() in blob for values in PLANTED.values() for v in values)


def test_markers_and_options_recorded() -> None:
    basic = deidentify(phi_dataset(), secret=SECRET, pseudonym="PSN-0001").dataset
    assert basic.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in basic.DeidentificationMethodCodeSequence] == ["113100"]
    assert basic.LongitudinalTemporalInformationModified == "REMOVED"
    assert basic.PatientName == "PSN-0001" and basic.PatientID == "PSN-0001"
    assert basic.PatientSex == ""  # basic profile: Z
    assert "PatientAge" not in basic  # basic profile: X
    assert basic.StudyDate == ""
    assert "StudyDescription" not in basic
    full = deidentify(
        phi_dataset(),
        secret=SECRET,
        pseudonym="PSN-0001",
        date_offset_days=-400,
        options=ALL_OPTIONS,
    )
    ds = full.dataset
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
        "113100",
        "113105",
        "113107",
        "113108",
        "113111",
    ]
    assert all(i.CodingSchemeDesignator == "DCM" for i in ds.DeidentificationMethodCodeSequence)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientSex == "F"
    assert ds.PatientAge == "090Y"  # Safe Harbor: ages over 89 aggregated
    assert ds.StudyDate == (dt.date(2019, 4, 12) - dt.timedelta(days=400)).strftime("%Y%m%d")
    assert ds.PatientBirthDate == ""  # birth date stays Z even with the date option
    assert ds.StudyDescription.startswith("CT HEAD")  # cleaned, not removed
    assert "*" in ds.StudyDescription
    block = ds.private_block(0x0029, "ACME SAFE")
    assert float(block[0x10].value) == 2.5
    with pytest.raises(KeyError):
        ds.private_block(0x0029, "ACME PHI")
    record = full.record
    assert record.original_patient_id == "MRN-88412907"
    assert record.pseudonym == "PSN-0001"
    assert record.uid_map[phi_dataset().StudyInstanceUID] == ds.StudyInstanceUID
    assert record.date_offset_days == -400
    assert record.removed_private_elements >= 4
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_every_listed_text_attribute_is_removed() -> None:
    """Plant a marker in every text attribute of the E.1-1 table; none may survive."""
    table = load_action_table()
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    planted: dict[str, str] = {}
    for tag, _code in table.exact.items():
        if tag >> 16 < 0x0008 or tag & 0xFFFF == 0:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr not in ("LO", "SH", "PN", "LT", "ST", "UT", "UC"):
            continue
        marker = f"PHI{tag:08X}"
        ds.add_new(tag, vr, marker)
        planted[keyword_for_tag(tag)] = marker
    assert len(planted) > 150
    out = deidentify(ds, secret=SECRET, pseudonym="PSN-0002").dataset
    text = json.dumps(out.to_json_dict())
    assert [k for k, m in planted.items() if m in text] == []


def test_uids_and_dates_consistent_across_instances_and_runs(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, slices=3)
    datasets = [pydicom.dcmread(p) for p in sorted(paths)]
    for i, ds in enumerate(datasets):
        ds.PatientID = "MRN-1"
        ds.StudyDate = "20200229"
        ds.AcquisitionDateTime = f"2020022{i}103000.5+0100"
    datasets[1].ReferencedImageSequence = Sequence(
        [
            _item(
                ReferencedSOPClassUID=datasets[0].SOPClassUID,
                ReferencedSOPInstanceUID=datasets[0].SOPInstanceUID,
            )
        ]
    )
    offset = patient_date_offset(SECRET, "MRN-1")
    assert offset == patient_date_offset(SECRET, "MRN-1") < 0
    options = DeidOptions(retain_longitudinal_modified_dates=True)
    run1 = [
        deidentify(
            d, secret=SECRET, pseudonym="P1", date_offset_days=offset, options=options
        ).dataset
        for d in datasets
    ]
    run2 = [
        deidentify(
            copy.deepcopy(d),
            secret=SECRET,
            pseudonym="P1",
            date_offset_days=offset,
            options=options,
        ).dataset
        for d in datasets
    ]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({getattr(d, key) for d in run1 + run2}) == 1
        assert getattr(run1[0], key) != getattr(datasets[0], key)
    assert [d.SOPInstanceUID for d in run1] == [d.SOPInstanceUID for d in run2]
    assert len({d.SOPInstanceUID for d in run1}) == 3
    assert run1[1].ReferencedImageSequence[0].ReferencedSOPInstanceUID == run1[0].SOPInstanceUID
    assert run1[1].ReferencedImageSequence[0].ReferencedSOPClassUID == datasets[0].SOPClassUID
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in (run1[0].StudyInstanceUID,))
    expected = dt.date(2020, 2, 29) + dt.timedelta(days=offset)
    for i, d in enumerate(run1):
        assert d.StudyDate == expected.strftime("%Y%m%d")
        shifted = dt.date(2020, 2, 20 + i) + dt.timedelta(days=offset)
        assert d.AcquisitionDateTime == shifted.strftime("%Y%m%d") + "103000.5+0100"
    other = deidentify(
        datasets[0],
        secret=b"another-secret-0123456789",
        pseudonym="P1",
        date_offset_days=offset,
        options=options,
    ).dataset
    assert other.StudyInstanceUID != run1[0].StudyInstanceUID
    assert remap_uid(datasets[0].StudyInstanceUID, SECRET) == run1[0].StudyInstanceUID


def test_bad_arguments_are_refused() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    with pytest.raises(InputError, match="date_offset_days"):
        deidentify(
            ds,
            secret=SECRET,
            pseudonym="P",
            options=DeidOptions(retain_longitudinal_modified_dates=True),
        )
    with pytest.raises(InputError, match="date_offset_days"):
        deidentify(ds, secret=SECRET, pseudonym="P", date_offset_days=-3)
    with pytest.raises(InputError, match="secret"):
        deidentify(ds, secret=b"short", pseudonym="P")
    with pytest.raises(InputError, match="pseudonym"):
        deidentify(ds, secret=SECRET, pseudonym="")


def test_burned_in_risk() -> None:
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    assert not burned_in_risk(ct)
    ct.BurnedInAnnotation = "YES"
    assert burned_in_risk(ct)
    us = pydicom.dcmread(bundled("examples_ybr_color.dcm"), stop_before_pixels=True)
    us.pop("BurnedInAnnotation", None)
    assert us.Modality == "US" and burned_in_risk(us)
    us.BurnedInAnnotation = "NO"
    assert not burned_in_risk(us)
    sc = Dataset()
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    sc.Modality = "CT"
    assert burned_in_risk(sc)
    shot = Dataset()
    shot.Modality = "CT"
    shot.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert burned_in_risk(shot)
