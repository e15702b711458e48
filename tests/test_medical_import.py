"""Medical ingest through ``import_items`` / ``truthset import items``: dispatch by content,
per-project imaging settings, series grouping and merging, indexing, refusals that do not stop
the batch. Real sample files from pydicom, pydicom-data and nibabel."""

from __future__ import annotations

import copy
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as nibabel_data
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from test_imaging_helpers import bundled, make_series
from truthset.cli.main import app
from truthset.domain.errors import InputError
from truthset.store.models import AuditEvent, ImagingInstance, Item
from truthset.workspace import imports, projects
from truthset.workspace.workspace import Workspace

SCHEMA = """
name: findings
kind: classification
mode: single
classes:
  - {name: normal, definition: "No finding."}
  - {name: abnormal, definition: "Any finding."}
"""


def _project(ws: Workspace, key: str = "ct", **imaging: object) -> None:
    with ws.unit("admin") as s:
        projects.create_project(s, key=key, name=key, schema_text=SCHEMA,
                                imaging=imaging or None)


def _import(ws: Workspace, key: str, paths: list[Path], **kw: object) -> imports.ImportSummary:
    with ws.unit("admin") as s:
        return imports.import_items(s, ws.blobs, projects.get_project(s, key), paths,
                                    vault=ws.vault, **kw)  # type: ignore[arg-type]


def _items(ws: Workspace, key: str = "ct") -> list[Item]:
    with ws.unit("reader") as s:
        project = projects.get_project(s, key)
        return list(s.scalars(select(Item).where(Item.project_id == project.id)
                              .order_by(Item.id)))


def _mixed_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A folder as a site would send it: a CT series, an MR, an ultrasound, a NIfTI, a PNG,
    a DICOMDIR, a hidden file, plus a truncated DICOM and a text file posing as DICOM."""
    folder = tmp_path / "incoming"
    series, _volume = make_series(folder / "ct", slices=6)
    shutil.copy(bundled("MR_small.dcm"), folder / "mr.dcm")
    shutil.copy(bundled("US1_J2KR.dcm"), folder / "us.dcm")
    shutil.copy(Path(nibabel_data) / "anatomical.nii", folder / "anat.nii")
    Image.new("L", (32, 24), 7).save(folder / "photo.png")
    shutil.copy(bundled("DICOMDIR"), folder / "DICOMDIR")
    (folder / ".DS_Store").write_bytes(b"\0" * 10)
    whole = Path(bundled("CT_small.dcm")).read_bytes()
    (folder / "cut.dcm").write_bytes(whole[: len(whole) // 2])
    (folder / "fake.dcm").write_text("not dicom at all")
    return folder, series


def test_a_mixed_folder_is_dispatched_by_content_and_indexed(
    workspace: Workspace, tmp_path: Path
) -> None:
    folder, series = _mixed_folder(tmp_path)
    _project(workspace)
    with pytest.raises(InputError, match="cut.dcm") as err:
        _import(workspace, "ct", [folder])
    assert "fake.dcm" in str(err.value)
    assert _items(workspace) == []  # default: one refusal refuses the batch
    ticks: list[int] = []
    summary = _import(workspace, "ct", [folder], continue_on_error=True, progress=ticks.append)
    assert ticks == list(range(1, imports.count_units([folder]) + 1))
    refused = {Path(p).name: why for p, why in summary.refused}
    assert set(refused) == {"cut.dcm", "fake.dcm"}
    assert "truncated" in refused["cut.dcm"] and "not a DICOM file" in refused["fake.dcm"]
    skipped = {Path(p).name for p, _ in summary.skipped}
    assert {"DICOMDIR", ".DS_Store"} <= skipped
    assert [q for q, _ in summary.quarantined]  # the ultrasound: no BurnedInAnnotation
    items = {i.kind + ":" + (i.modality or "-"): i for i in _items(workspace)}
    assert set(items) == {"series:CT", "image:MR", "image:US", "volume:-", "image:-"}
    ct = items["series:CT"]
    original = pydicom.dcmread(series[0])
    assert ct.external_id == ct.attributes["series_instance_uid"] != original.SeriesInstanceUID
    assert ct.attributes["study_instance_uid"] != original.StudyInstanceUID
    assert ct.attributes["shape"] == [6, 128, 128]
    assert ct.attributes["spacing"][:2] == pytest.approx([0.661468, 0.661468])
    assert ct.attributes["spacing"][2] == pytest.approx(2.5)
    assert ct.attributes["orientation"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert ct.manufacturer == "GE MEDICAL SYSTEMS" and ct.status == "active"
    assert ct.patient_pseudonym and ct.patient_pseudonym.startswith("P-")
    assert items["image:US"].status == "quarantined"
    assert "US" in items["image:US"].attributes["quarantine_reasons"][0]
    assert items["volume:-"].attributes["shape"] == [33, 41, 25]
    with workspace.unit("reader") as s:
        rows = s.scalars(select(ImagingInstance).where(ImagingInstance.item_id == ct.id)).all()
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "import")).all()
    assert len(rows) == 6 and {r.series_instance_uid for r in rows} == {ct.external_id}
    # slices are stored in geometric order, instances indexed with their de-identified UIDs
    assert [m["sop_instance_uid"] for m in ct.media] == [r.sop_instance_uid for r in
                                                          sorted(rows, key=lambda r: r.id)]
    stored = pydicom.dcmread(io.BytesIO(workspace.blobs.get_bytes(ct.media[0]["sha256"])))
    assert stored.PatientIdentityRemoved == "YES" and stored.PatientID == ct.patient_pseudonym
    assert stored.SOPInstanceUID == ct.media[0]["sop_instance_uid"]
    assert events and events[-1].after is not None


def test_reimport_skips_and_a_later_part_of_a_series_joins_its_item(
    workspace: Workspace, tmp_path: Path
) -> None:
    paths, volume = make_series(tmp_path / "s", slices=6)
    _project(workspace)
    first = _import(workspace, "ct", paths[:3])
    assert len(first.ingested) == 1
    again = _import(workspace, "ct", paths[:3])
    assert again.ingested == [] and len(again.skipped) == 3
    rest = _import(workspace, "ct", paths[3:])
    assert rest.ingested == first.ingested
    (item,) = _items(workspace)
    assert item.attributes["shape"] == [6, 128, 128] and len(item.media) == 6
    # geometric order across both imports: stored slice k holds base + 10 k
    firsts = [pydicom.dcmread(io.BytesIO(workspace.blobs.get_bytes(m["sha256"]))).pixel_array
              for m in item.media]
    assert np.array_equal(np.stack(firsts), volume)


def test_instance_mode_options_and_safelist_come_from_the_project(
    workspace: Workspace, tmp_path: Path
) -> None:
    paths, _ = make_series(tmp_path / "s", slices=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0029, "ACME SAFE", create=True)
        block.add_new(0x10, "DS", "2.5")
        other = ds.private_block(0x0031, "ACME PHI", create=True)
        other.add_new(0x10, "LO", "Somebody^Private")
        ds.StudyDescription = "CT head"
        ds.save_as(path, enforce_file_format=True)
    _project(workspace, dicom_item="instance",
             deid={"clean_descriptors": True, "retain_longitudinal_modified_dates": True,
                   "private_safelist": ["0029,ACME SAFE,10"]})
    summary = _import(workspace, "ct", paths)
    assert len(summary.ingested) == 3
    items = _items(workspace)
    assert {i.kind for i in items} == {"image"}
    assert all(i.external_id == i.attributes["sop_instance_uid"] for i in items)
    ds = pydicom.dcmread(io.BytesIO(workspace.blobs.get_bytes(items[0].media[0]["sha256"])))
    codes = {c.CodeValue for c in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113105", "113107", "113111"}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.StudyDescription == "CT head"
    assert ds.private_block(0x0029, "ACME SAFE")[0x10].value == 2.5
    assert (0x0031, 0x0010) not in ds
    assert "NOT HIPAA Safe Harbor" in items[0].attributes["deidentification"]


def test_bad_imaging_settings_are_refused_with_the_field(workspace: Workspace) -> None:
    with pytest.raises(InputError, match="imaging.deid.private_safelist"):
        _project(workspace, deid={"private_safelist": ["0028,X,10"]})
    with pytest.raises(InputError, match="imaging.dicom_item"):
        _project(workspace, dicom_item="study")


def test_zip_archives_are_opened_safely_and_the_batch_goes_on(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    paths, _ = make_series(tmp_path / "s", slices=4)
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as z:
        for p in paths:
            z.write(p, f"study/{p.name}")
        z.write(Path(nibabel_data) / "example4d.nii.gz", "vol/example4d.nii.gz")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("ok.dcm", Path(bundled("MR_small.dcm")).read_bytes())
        z.writestr("../../etc/passwd.dcm", b"x")
    try:
        _project(ws)
        summary = _import(ws, "ct", [good, evil], continue_on_error=True)
        assert summary.refused == [(f"{evil}!../../etc/passwd.dcm",
                                    "path traversal ('..') in archive")]
        kinds = sorted(i.kind for i in _items(ws))
        assert kinds == ["series", "volume"]
        volume = next(i for i in _items(ws) if i.kind == "volume")
        assert volume.external_id == "vol/example4d.nii.gz"
        assert volume.attributes["shape"] == [128, 96, 24, 2]
    finally:
        ws.close()


def test_inconsistent_series_geometry_is_refused_and_others_imported(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    paths, _ = make_series(tmp_path / "bad", slices=4)
    ds = pydicom.dcmread(paths[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(paths[1], enforce_file_format=True)
    make_series(tmp_path / "good", slices=3)
    try:
        _project(ws)
        summary = _import(ws, "ct", [tmp_path / "bad", tmp_path / "good"],
                          continue_on_error=True)
        assert len(summary.ingested) == 1
        assert len(summary.refused) == 1
        assert "inconsistent ImageOrientationPatient" in summary.refused[0][1]
    finally:
        ws.close()


def test_multiframe_enhanced_and_compressed_files_decode_after_ingest(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    names = ["eCT_Supplemental.dcm", "color3d_jpeg_baseline.dcm", "MR_small_RLE.dcm",
             "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        shutil.copy(bundled(name), folder / name)
    try:
        _project(ws, dicom_item="instance")
        summary = _import(ws, "ct", [folder])
        # the three MR files are one instance in three transfer syntaxes: imported once
        assert len(summary.ingested) + len(summary.quarantined) == 3
        assert len(summary.skipped) == 2
        by_modality = {i.modality: i for i in _items(ws)}
        ect = by_modality["CT"]
        assert ect.kind == "series" and ect.attributes["shape"] == [2, 512, 512]
        cine = by_modality["US"]
        assert cine.status == "quarantined" and cine.media[0]["frames"] == 120
        mr = pydicom.dcmread(io.BytesIO(ws.blobs.get_bytes(by_modality["MR"].media[0]["sha256"])))
        assert mr.file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(mr.pixel_array, pydicom.dcmread(bundled("MR_small.dcm")).pixel_array)
    finally:
        ws.close()


def test_absurd_dimensions_are_refused_before_decoding(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    ds.NumberOfFrames = 10_000_000
    bad = tmp_path / "absurd.dcm"
    ds.save_as(bad, enforce_file_format=True)
    ws = Workspace.init(tmp_path / "ws")
    try:
        _project(ws)
        summary = _import(ws, "ct", [bad], continue_on_error=True)
        assert summary.refused and "absurd dimensions" in summary.refused[0][1]
    finally:
        ws.close()


def test_cli_project_settings_and_import_summary(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "ws"
    env = {"TRUTHSET_WORKSPACE": str(root), "TRUTHSET_ACTOR": "admin"}
    assert runner.invoke(app, ["init", str(root)], env=env).exit_code == 0
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    settings = tmp_path / "imaging.yaml"
    settings.write_text("imaging:\n  dicom_item: series\n  deid:\n    clean_descriptors: true\n")
    result = runner.invoke(app, ["project", "create", "ct", "--schema", str(schema),
                                 "--imaging", str(settings), "--dicom-item", "instance",
                                 "--retain-patient-characteristics"], env=env)
    assert result.exit_code == 0, result.output
    folder, _ = _mixed_folder(tmp_path)
    result = runner.invoke(app, ["import", "items", str(folder), "-p", "ct"], env=env)
    assert result.exit_code == 2 and "cut.dcm" in result.output
    result = runner.invoke(app, ["import", "items", str(folder), "-p", "ct",
                                 "--continue-on-error"], env=env)
    assert result.exit_code == 2  # something was refused: the exit code says so
    assert "ingested 9, quarantined 1, skipped 2, refused 2" in result.output
    assert "refused" in result.output and "fake.dcm" in result.output
    with Workspace.open(root) as ws, ws.unit("reader") as s:
        project = projects.get_project(s, "ct")
        assert project.settings["imaging"]["dicom_item"] == "instance"
        assert project.settings["imaging"]["deid"]["clean_descriptors"] is True
        assert project.settings["imaging"]["deid"]["retain_patient_characteristics"] is True
        n = s.scalar(select(func.count()).select_from(Item).where(Item.sex.is_not(None)))
        assert n  # patient characteristics retained: sex indexed


def test_nifti_header_text_and_extensions_are_removed(tmp_path: Path) -> None:
    import nibabel as nib

    img = nib.load(Path(nibabel_data) / "anatomical.nii")
    header = copy.deepcopy(img.header)
    header["descrip"] = b"Quincy Zebediah 19310317"
    header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Patient: Quincy Zebediah"))
    planted = tmp_path / "named.nii"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, header), planted)
    assert b"Quincy" in planted.read_bytes()
    ws = Workspace.init(tmp_path / "ws")
    try:
        _project(ws)
        _import(ws, "ct", [planted])
        (item,) = _items(ws)
        data = ws.blobs.get_bytes(item.media[0]["sha256"])
        assert b"Quincy" not in data and b"19310317" not in data
        back = nib.Nifti1Image.from_bytes(data)
        assert np.allclose(back.affine, img.affine)
        assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(img.dataobj))
    finally:
        ws.close()


def test_a_risky_addition_requarantines_a_series_and_a_clean_one_keeps_the_decision(
    tmp_path: Path,
) -> None:
    from truthset.workspace import quarantine, users

    ws = Workspace.init(tmp_path / "ws")
    paths, _ = make_series(tmp_path / "s", slices=4)
    ds = pydicom.dcmread(paths[2])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(paths[2], enforce_file_format=True)
    try:
        _project(ws)
        with ws.unit("admin") as s:
            users.add_user(s, username="root", role="admin")
        _import(ws, "ct", paths[:2])
        assert _items(ws)[0].status == "active"
        risky = _import(ws, "ct", paths[2:3])
        assert risky.quarantined and "BurnedInAnnotation is YES" in risky.quarantined[0][1]
        (item,) = _items(ws)
        assert item.status == "quarantined"
        with ws.unit("root") as s:
            quarantine.clear_item(s, projects.get_project(s, "ct"), item.external_id,
                                  actor="root", note="checked: only a ruler")
        clean = _import(ws, "ct", paths[3:])
        assert clean.ingested == [item.external_id]
        (item,) = _items(ws)
        assert item.status == "active" and len(item.media) == 4
        assert item.attributes["quarantine_decision"]["by"] == "root"
    finally:
        ws.close()


def test_png_and_jpeg_metadata_never_reach_storage(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    pixels = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    image = Image.fromarray(pixels)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Quincy Zebediah")
    info.add_itxt("Comment", "MRN-88412907")
    folder = tmp_path / "photos"
    folder.mkdir()
    image.save(folder / "a.png", pnginfo=info)
    exif = Image.Exif()
    exif[0x013B] = "Quincy Zebediah"  # Artist
    image.save(folder / "b.jpg", exif=exif, comment=b"MRN-88412907", quality=95)
    assert all(b"Quincy" in p.read_bytes() for p in folder.iterdir())
    ws = Workspace.init(tmp_path / "ws")
    try:
        _project(ws)
        summary = _import(ws, "ct", [folder])
        assert sorted(summary.ingested) == ["a.png", "b.jpg"]
        for item in _items(ws):
            data = ws.blobs.get_bytes(item.media[0]["sha256"])
            assert b"Quincy" not in data and b"MRN-88412907" not in data
            decoded = np.asarray(Image.open(io.BytesIO(data)))
            original = np.asarray(Image.open(folder / item.external_id))
            assert np.array_equal(decoded, original)  # pixels untouched, no re-encoding
        again = _import(ws, "ct", [folder])
        assert len(again.skipped) == 2  # same content after cleaning: skipped
    finally:
        ws.close()
