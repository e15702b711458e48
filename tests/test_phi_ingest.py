"""No planted identifier survives import anywhere: blobs, database rows (every table, SQLite
and PostgreSQL), log lines, console output, warnings, exports, files of the workspace.
Quarantine decisions are permissioned and audited. A killed import leaves nothing
identifiable and a consistent database."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from sqlalchemy import select
from typer.testing import CliRunner

from phi_corpus import planted_values, survivors, write_corpus
from truthset import audit
from truthset.auth.memberships import add_member
from truthset.cli.main import app
from truthset.domain.errors import InputError, PermissionDeniedError
from truthset.imaging import group_series, read_dicom
from truthset.imaging.export import (
    CocoAnnotation,
    CocoImage,
    Finding,
    Segment,
    coco_dataset,
    findings_to_dicom_sr,
    labelmap_to_nifti,
    segmentation_to_dicom_seg,
)
from truthset.store.models import AuditEvent, ImagingInstance, Item
from truthset.workspace import imports, projects, quarantine, users
from truthset.workspace.workspace import Workspace

SCHEMA = """
name: findings
kind: classification
mode: single
classes:
  - {name: normal, definition: "No finding."}
  - {name: abnormal, definition: "Any finding."}
"""
ALL_OPTIONS = {
    "retain_longitudinal_modified_dates": True,
    "retain_patient_characteristics": True,
    "clean_descriptors": True,
    "private_safelist": ["0029,ACME SAFE,10"],
}


def _dump_tables(ws: Workspace) -> list[str]:
    """Every row of every table of the main database, as text."""
    out = []
    with ws.engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            out.extend(repr(tuple(row)) for row in conn.execute(select(table)))
    return out


def _exports(ws: Workspace, item: Item, folder: Path) -> list[bytes]:
    """SEG, SR, NIfTI and COCO exports of a stored (de-identified) series."""
    images = [read_dicom(ws.blobs.get_bytes(m["sha256"])) for m in item.media]
    (series,) = group_series(images)
    labels = np.zeros(series.info.shape, dtype=np.uint8)
    labels[:, 40:60, 40:60] = 1
    seg = segmentation_to_dicom_seg(series, labels, [Segment(1, "lesion")])
    sr = findings_to_dicom_sr(series, [Finding.from_box("F1", (40, 40, 20, 20))],
                              observer="R-0001")
    nifti = folder / "labels.nii.gz"
    labelmap_to_nifti(series, labels, nifti)
    coco = coco_dataset([CocoImage(1, item.external_id + "_0.png", 128, 128)],
                        {1: "lesion"}, [CocoAnnotation(1, 1, box=(40, 40, 20, 20))])
    buffers = []
    for ds in (seg, sr):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffers.append(buffer.getvalue())
    return [*buffers, nifti.read_bytes(), json.dumps(coco).encode()]


def test_no_planted_identifier_survives_anywhere(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus", ct=4, us=1, truncated=1)
    # not vacuous: the corpus holds every planted value
    assert survivors(p.read_bytes() for p in corpus) == planted_values()
    caplog.set_level(logging.DEBUG)
    with workspace.unit("admin") as s:
        projects.create_project(s, key="basic", name="basic", schema_text=SCHEMA)
        projects.create_project(s, key="options", name="options", schema_text=SCHEMA,
                                imaging={"deid": ALL_OPTIONS})
        admin = users.add_user(s, username="boss", role="admin")
        assert admin.id
    console: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with workspace.unit("admin") as s:
            summary = imports.import_items(s, workspace.blobs, projects.get_project(s, "basic"),
                                           [tmp_path / "corpus"], continue_on_error=True,
                                           vault=workspace.vault)
        assert len(summary.ingested) == 1 and len(summary.quarantined) == 1
        assert len(summary.refused) == 1
        console.append(repr(summary))
        result = CliRunner().invoke(app, ["import", "items", str(tmp_path / "corpus"),
                                          "-p", "options", "--continue-on-error",
                                          "-w", str(workspace.root), "--actor", "boss"])
        console.append(result.output)
        assert "ingested 1, quarantined 1, skipped 0, refused 1" in result.output
        with pytest.raises(InputError) as refused, workspace.unit("admin") as s:
            imports.import_items(s, workspace.blobs, projects.get_project(s, "basic"),
                                 [tmp_path / "corpus" / "cut_000.dcm"],
                                 vault=workspace.vault)
        console.append(str(refused.value))
    console.extend(str(w.message) for w in caught)
    # a manager redacts the quarantined ultrasound; the redacted copy is checked too
    with workspace.unit("boss") as s:
        project = projects.get_project(s, "basic")
        (held,) = quarantine.list_quarantined(s, project)
        quarantine.redact_item(s, workspace.blobs, project, held.external_id, actor="boss",
                               regions=[quarantine.Region(0, 0, 20, 10)], note="corner text")
        ct = s.scalar(select(Item).where(Item.project_id == project.id, Item.modality == "CT"))
        assert ct is not None
    exported = _exports(workspace, ct, tmp_path)
    stored = [workspace.blobs.get_bytes(d) for d in workspace.blobs]
    assert len(stored) >= 4
    rows = _dump_tables(workspace)
    assert any("quarantine.redact" in r for r in rows)  # the dump is not empty
    files = [p.read_bytes() for p in workspace.root.rglob("*")
             if p.is_file() and not p.name.startswith("pseudonyms.db")]
    assert survivors(stored) == []
    assert survivors(rows) == []
    assert survivors([caplog.text, *console]) == []
    assert survivors(exported) == []
    assert survivors(files) == []
    # the originals went where they belong: the separate vault
    assert ct.patient_pseudonym
    originals = workspace.vault.reidentify("basic", ct.patient_pseudonym)
    assert ("patient", "SWH-MRN\x00MRN-88412907") in originals


def _users(ws: Workspace) -> None:
    with ws.unit("admin") as s:
        project = projects.get_project(s, "ct")
        for name, role in (("root", "admin"), ("mia", "manager"), ("ann", "annotator")):
            user = users.add_user(s, username=name, role=role)
            if role != "admin":
                add_member(s, project, user, role)


def test_quarantine_clear_and_redact_are_permissioned_and_audited(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", ct=1, us=2, truncated=0)
    root = tmp_path / "ws"
    ws = Workspace.init(root)
    runner = CliRunner()
    try:
        with ws.unit("admin") as s:
            projects.create_project(s, key="ct", name="ct", schema_text=SCHEMA,
                                    imaging={"dicom_item": "instance"})
        _users(ws)
        with ws.unit("admin") as s:
            imports.import_items(s, ws.blobs, projects.get_project(s, "ct"),
                                 [tmp_path / "corpus"], vault=ws.vault)
        listing = runner.invoke(app, ["quarantine", "list", "-p", "ct", "-w", str(root)])
        assert listing.exit_code == 0 and "modality US" in listing.output
        with ws.unit("reader") as s:
            held = [i.external_id for i in
                    quarantine.list_quarantined(s, projects.get_project(s, "ct"))]
        assert len(held) == 2
        denied = runner.invoke(app, ["quarantine", "clear", held[0], "-p", "ct", "--note",
                                     "looked", "-w", str(root), "--actor", "ann"])
        assert denied.exit_code == 5 and "manager or admin" in denied.output
        with pytest.raises(PermissionDeniedError), ws.unit("nobody") as s:
            quarantine.clear_item(s, projects.get_project(s, "ct"), held[0], actor="nobody",
                                  note="x")
        cleared = runner.invoke(app, ["quarantine", "clear", held[0], "-p", "ct", "--note",
                                      "every frame checked, no text", "-w", str(root),
                                      "--actor", "mia"])
        assert cleared.exit_code == 0, cleared.output
        outside = runner.invoke(app, ["quarantine", "redact", held[1], "-p", "ct", "--region",
                                      "600,0,10,10", "-w", str(root), "--actor", "root"])
        assert outside.exit_code == 2 and "outside" in outside.output
        redacted = runner.invoke(app, ["quarantine", "redact", held[1], "-p", "ct", "--region",
                                       "0,0,30,12", "--region", "100,100,8,8", "-w", str(root),
                                       "--actor", "root"])
        assert redacted.exit_code == 0, redacted.output
        with ws.unit("reader") as s:
            project = projects.get_project(s, "ct")
            assert quarantine.list_quarantined(s, project) == []
            events = {e.action: e for e in s.scalars(select(AuditEvent))}
            # instance-mode items are named by their instance UID, which redaction renews
            renamed = json.loads(events["quarantine.redact"].after)["sop_instance_uids"][held[1]]
            items = {i.external_id: i for i in s.scalars(select(Item))}
            assert held[1] not in items
            items[held[1]] = items[renamed]
            row = s.scalar(select(ImagingInstance).where(
                ImagingInstance.sop_instance_uid == renamed))
            assert audit.verify(s).ok
        assert items[held[0]].status == "active"
        assert items[held[0]].attributes["quarantine_decision"]["by"] == "mia"
        media = items[held[1]].media[0]
        assert row is not None and row.sha256 == media["sha256"]
        ds = pydicom.dcmread(io.BytesIO(ws.blobs.get_bytes(media["sha256"])))
        assert ds.BurnedInAnnotation == "NO"
        pixels = ds.pixel_array
        assert not pixels[0:12, 0:30].any() and not pixels[100:108, 100:108].any()
        assert pixels[60:120, 60:120].any()
        assert "quarantine.clear" in events and "quarantine.redact" in events
        assert events["quarantine.redact"].actor == "root"
    finally:
        ws.close()


_IMPORT = """
import sys
from truthset.cli.main import main
sys.argv = ["truthset", "import", "items", sys.argv[1], "-p", "ct", "--continue-on-error",
            "--actor", "admin"]
main()
"""


def test_a_killed_import_leaves_nothing_identifiable_and_a_consistent_database(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, ct=0, us=0, truncated=0)
    from phi_corpus import phi_instance

    for k in range(60):  # one series per file: each file is its own unit of work
        phi_instance(k, series=10 + k).save_as(corpus / f"i_{k:03d}.dcm",
                                                enforce_file_format=True)
    root = tmp_path / "ws"
    ws = Workspace.init(root)
    with ws.unit("admin") as s:
        projects.create_project(s, key="ct", name="ct", schema_text=SCHEMA)
    ws.close()
    env = {**os.environ, "TRUTHSET_WORKSPACE": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT, str(corpus)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blob_dir = root / "blobs" / "sha256"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if blob_dir.exists() and sum(1 for p in blob_dir.rglob("*") if p.is_file()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the import finished before the kill"
    written = [p for p in blob_dir.rglob("*") if p.is_file()]
    assert len(written) >= 3
    files = [p.read_bytes() for p in root.rglob("*")
             if p.is_file() and not p.name.startswith("pseudonyms.db")]
    assert survivors(files) == []
    with Workspace.open(root) as ws, ws.unit("check") as s:
        assert s.scalar(select(sa.func.count()).select_from(Item)) == 0
        assert s.scalar(select(sa.func.count()).select_from(ImagingInstance)) == 0
        assert audit.verify(s).ok
    # the interrupted import can simply be run again
    result = CliRunner().invoke(app, ["import", "items", str(corpus), "-p", "ct", "-w",
                                      str(root), "--actor", "admin"])
    assert result.exit_code == 0, result.output
    assert "ingested 60" in result.output


def test_only_an_admin_reidentifies_and_every_lookup_is_audited(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", ct=2, us=0, truncated=0)
    root = tmp_path / "ws"
    ws = Workspace.init(root)
    runner = CliRunner()
    try:
        with ws.unit("admin") as s:
            projects.create_project(s, key="ct", name="ct", schema_text=SCHEMA)
        _users(ws)
        with ws.unit("admin") as s:
            imports.import_items(s, ws.blobs, projects.get_project(s, "ct"),
                                 [tmp_path / "corpus"], vault=ws.vault)
            item = s.scalar(select(Item))
            assert item is not None and item.patient_pseudonym
            pseudonym = item.patient_pseudonym
        args = ["pseudonym", "lookup", pseudonym, "-p", "ct", "-w", str(root), "--reason",
                "incidental finding follow-up"]
        denied = runner.invoke(app, [*args, "--actor", "mia"])  # a manager is not enough
        assert denied.exit_code == 5 and "MRN-88412907" not in denied.output
        found = runner.invoke(app, [*args, "--actor", "root"])
        assert found.exit_code == 0, found.output
        assert "SWH-MRN / MRN-88412907" in found.output
        unknown = runner.invoke(app, ["pseudonym", "lookup", "P-NOBODY", "-p", "ct", "-w",
                                      str(root), "--reason", "typo", "--actor", "root"])
        assert unknown.exit_code == 3
        with ws.unit("check") as s:
            events = s.scalars(select(AuditEvent).where(AuditEvent.action == "reidentify")).all()
        rows = _dump_tables(ws)
        assert [e.entity_id for e in events] == [pseudonym, "P-NOBODY"]
        assert survivors(rows) == []  # the audit names the pseudonym, never the original
    finally:
        ws.close()
