"""`truthset export imaging`: a reader's masks as DICOM SEG and NIfTI, boxes as DICOM SR,
round-tripped through highdicom and nibabel; no reader name in the files; audited."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from sqlalchemy import select
from typer.testing import CliRunner

from test_imaging_helpers import make_series
from truthset.cli.main import app
from truthset.prelabel.output import encode_mask
from truthset.store.models import AuditEvent, Item
from truthset.workflow.annotations import record_annotation
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace


def _schema(kind: str) -> str:
    return (f"name: lesions\nkind: {kind}\nclasses:\n  - {{name: tumour, definition: x}}\n"
            "  - {name: cyst, definition: y}\n")


def test_masks_and_boxes_export_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws = Workspace.init(root)
    paths, _ = make_series(tmp_path / "s", slices=4)
    labels = np.zeros((4, 128, 128), dtype=np.uint8)
    labels[1:3, 30:60, 40:70] = 1
    labels[2, 80:90, 10:20] = 2
    try:
        with ws.unit("admin") as s:
            seg_project = projects.create_project(s, key="seg", name="seg",
                                                  schema_text=_schema("mask"))
            box_project = projects.create_project(s, key="box", name="box",
                                                  schema_text=_schema("box"))
            for project in (seg_project, box_project):
                imports.import_items(s, ws.blobs, project, paths, vault=ws.vault)
            reader = users.add_user(s, username="dr-quincy", role="annotator")
            items = {i.project_id: i for i in s.scalars(select(Item))}
            record_annotation(s, seg_project, item=items[seg_project.id], author=reader,
                              payload={"objects": [
                                  {"label": "tumour", "mask": encode_mask(labels == 1)},
                                  {"label": "cyst", "mask": encode_mask(labels == 2)}]})
            record_annotation(s, box_project, item=items[box_project.id], author=reader,
                              payload={"objects": [
                                  {"label": "tumour", "box": [40, 30, 70, 50], "slice": 1},
                                  {"label": "cyst", "points": [[10, 80], [20, 80], [15, 90]],
                                   "slice": 2}]})
            seg_item = items[seg_project.id]
            sources = [pydicom.dcmread(io.BytesIO(ws.blobs.get_bytes(m["sha256"])))
                       for m in seg_item.media]
        runner = CliRunner()
        out = tmp_path / "out"
        result = runner.invoke(app, ["export", "imaging", str(out), "-p", "seg", "--format",
                                     "dicom-seg", "--format", "nifti", "--labels", "dr-quincy",
                                     "-w", str(root)])
        assert result.exit_code == 0, result.output
        seg = hd.seg.segread(out / f"{seg_item.id}_seg.dcm")
        assert [d.SegmentLabel for d in seg.SegmentSequence] == ["tumour", "cyst"]
        uids = [d.SOPInstanceUID for d in sources]
        for number in (1, 2):
            got = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids, segment_numbers=[number],
                combine_segments=False).squeeze(-1)
            assert np.array_equal(got.astype(bool), labels == number)
        volume = nib.load(out / f"{seg_item.id}_labels.nii.gz")
        assert np.array_equal(np.transpose(np.asanyarray(volume.dataobj), (2, 1, 0)), labels)

        sr_out = tmp_path / "sr"
        result = runner.invoke(app, ["export", "imaging", str(sr_out), "-p", "box", "--format",
                                     "dicom-sr", "--labels", "dr-quincy", "-w", str(root)])
        assert result.exit_code == 0, result.output
        (sr_file,) = sr_out.iterdir()
        sr = hd.sr.srread(sr_file)
        groups = sr.content.get_planar_roi_measurement_groups()
        assert [g.tracking_identifier for g in groups] == ["tumour #1", "cyst #2"]
        np.testing.assert_allclose(groups[0].roi.value,
                                   [[40, 30], [70, 30], [70, 50], [40, 50], [40, 30]])
        for path in [*out.iterdir(), sr_file]:
            assert b"quincy" not in path.read_bytes().lower()

        wrong = runner.invoke(app, ["export", "imaging", str(tmp_path / "x"), "-p", "seg",
                                    "--format", "dicom-sr", "-w", str(root)])
        assert wrong.exit_code == 2 and "box or polygon schema" in wrong.output
        busy = runner.invoke(app, ["export", "imaging", str(out), "-p", "seg", "--format",
                                   "nifti", "--labels", "dr-quincy", "-w", str(root)])
        assert busy.exit_code == 2 and "not empty" in busy.output
        with ws.unit("check") as s:
            exports = s.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
        assert len(exports) == 2
    finally:
        ws.close()
