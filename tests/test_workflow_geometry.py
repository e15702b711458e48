"""The workflow on box, polygon, mask and multi-label schemas, on SQLite and PostgreSQL: fused
consensus checked against independent computations (ensemble-boxes, SimpleITK STAPLE,
pycocotools, hand counts), adjudication with reasons and provenance, adaptive reads, review
corrections, refused payloads, release."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from geometry_support import HEIGHT, WIDTH, box, disc, make_geo_project, mask, schema
from truthset.domain.errors import InputError
from truthset.store.models import Annotation, AuditEvent, Consensus, Escalation, Item, Task
from truthset.workflow import queue
from truthset.workspace.workspace import Workspace
from workflow_support import call, count

CONSENSUS = "workflow: consensus\nk: 3\ntarget_f1: 0.8\niou_threshold: 0.5\n"


def _read(ws: Workspace, name: str, payload: dict[str, Any]) -> queue.SubmitResult:
    task = call(ws, name, queue.next_task).task
    assert task is not None and task.stage == "annotate"
    assert task.context == {}  # blinded: nobody else's objects
    return call(ws, name, queue.submit, task.task_id, payload)


def _latest(ws: Workspace) -> Consensus:
    with ws.sessions() as s:
        row = s.scalars(sa.select(Consensus).order_by(Consensus.id.desc()).limit(1)).one()
        s.expunge(row)
        return row


def _bbox(obj: dict[str, Any]) -> list[float]:
    return [float(v) for v in obj["bbox"]]


def test_agreed_boxes_become_final_with_weighted_box_fusion(workspace: Workspace) -> None:
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    make_geo_project(workspace, schema("box"), CONSENSUS)
    drawn = {"r0": [(10, 10, 10, 10), (40, 25, 10, 8)],
             "r1": [(12, 11, 10, 10), (41, 25, 9, 8)],
             "r2": [(11, 9, 11, 10), (40, 26, 10, 8)]}
    results = [_read(workspace, r, {"objects": [box("nodule", *b[0]), box("mass", *b[1])]})
               for r, b in drawn.items()]
    assert [r.item_status for r in results] == ["pending", "pending", "final"]
    row = _latest(workspace)
    assert row.method == "wbf" and row.status == "final"
    assert row.agreement == pytest.approx(1.0) and row.confidence == pytest.approx(1.0)
    assert row.input_annotation_ids == [r.annotation_id for r in results]
    assert row.parameters["iou_threshold"] == 0.5 and row.parameters["n_readers"] == 3
    assert row.parameters["workflow"] == "consensus" and row.parameters["target"] == 0.8
    assert "posterior_basis" not in row.parameters  # fused boxes: no class posterior fitted
    assert row.label["minority"] == []
    fused = {o["label"]: o for o in row.label["objects"]}
    assert set(fused) == {"nodule", "mass"}
    for k, cls in enumerate(("nodule", "mass")):
        obj = fused[cls]
        assert obj["support"] == 3 and obj["readers"] == ["r0", "r1", "r2"]
        assert obj["score"] == 1.0 and obj["type"] == "box" and obj["frame"] == 0
        # Independent truth 1: ensemble-boxes' weighted box fusion on normalised corners.
        corners = [[[(x) / WIDTH, y / HEIGHT, (x + w) / WIDTH, (y + h) / HEIGHT]]
                   for (x, y, w, h) in (b[k] for b in drawn.values())]
        got, _scores, _labels = ensemble_boxes.weighted_boxes_fusion(
            corners, [[1.0]] * 3, [[0]] * 3, iou_thr=0.5, skip_box_thr=0.0)
        x0, y0, x1, y1 = got[0] * [WIDTH, HEIGHT, WIDTH, HEIGHT]
        assert _bbox(obj) == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-4)
        # Independent truth 2: with equal weights the fused box is the mean of the corners.
        mean = np.mean([[x, y, x + w, y + h] for (x, y, w, h) in (b[k] for b in
                                                                     drawn.values())], axis=0)
        assert _bbox(obj) == pytest.approx([mean[0], mean[1], mean[2] - mean[0],
                                            mean[3] - mean[1]], abs=1e-6)


def test_disagreement_goes_to_adjudication_with_the_findings_named(
        workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"), CONSENSUS)
    payloads = {"r0": {"objects": [box("nodule", 10, 10, 10, 10)]},
                "r1": {"objects": [box("nodule", 11, 10, 10, 10)]},
                "r2": {"objects": [box("mass", 40, 25, 10, 8)]}}
    ids = [_read(workspace, r, p).annotation_id for r, p in payloads.items()]
    assert call(workspace, "r3", queue.next_task).task is None  # never more readers than k
    reason = ("mean matched F1 0.33 under target 0.80 (IoU >= 0.50); two of three readers saw "
              "finding 1 (nodule); one of three readers saw finding 2 (mass)")
    with workspace.sessions() as s:
        esc = s.scalars(sa.select(Escalation)).one()
        assert esc.reason == reason and esc.status == "open"
    assert call(workspace, "rev", queue.next_task).task is None  # adjudicators only
    task = call(workspace, "adj", queue.next_task).task
    assert task.stage == "adjudicate"
    ctx = task.context
    assert [(r["reader"], r["label"], r["payload"]) for r in ctx["reads"]] == [
        (name, None, payloads[name]) for name in ("r0", "r1", "r2")]
    assert ctx["escalation"]["reason"] == reason
    cons = ctx["consensus"]
    assert cons["method"] == "wbf" and cons["target"] == 0.8
    assert cons["agreement"] == pytest.approx(1 / 3)
    assert cons["parameters"]["pairs"] == [["r0", "r1", 1.0], ["r0", "r2", 0.0],
                                           ["r1", "r2", 0.0]]
    (kept,) = cons["payload"]["objects"]
    (minor,) = cons["payload"]["minority"]
    assert (kept["finding"], kept["label"], kept["support"], kept["readers"]) == (
        1, "nodule", 2, ["r0", "r1"])
    assert _bbox(kept) == pytest.approx([10.5, 10.0, 10.0, 10.0])
    assert (minor["finding"], minor["label"], minor["support"], minor["readers"]) == (
        2, "mass", 1, ["r2"])

    # Refused final labels: the field is named, nothing is written, the attempt is audited.
    before = count(workspace, Annotation)
    bad = [({"objects": [box("nodule", 60, 10, 10, 10)]}, "objects.0.bbox", "outside"),
           ({"objects": [box("nodule", 10, 10, 0, 10)]}, "objects.0.bbox", "positive"),
           ({"objects": [box("tumour", 10, 10, 5, 5)]}, "objects.0.label", "unknown class"),
           ({"objects": [{"type": "mask", "label": "nodule",
                          "rle": {"size": [HEIGHT, WIDTH], "counts": [5, 7]}}]},
            "objects.0.rle.counts", "cover"),
           ({"objects": [{"type": "mask", "label": "nodule",
                          "rle": {"size": [8, 8], "counts": [64]}}]}, "objects.0.rle", "shape"),
           ({"objects": [box("nodule", 10, 10, 5, 5, frame=3)]}, "objects.0.frame", "frame"),
           ({"objects": [{"type": "star", "label": "nodule"}]}, "objects.0.type", "type")]
    for payload, field, words in bad:
        with pytest.raises(queue.TaskInputError, match=words) as err:
            call(workspace, "adj", queue.adjudicate, task.task_id, payload, reason="seen")
        assert err.value.field == field
    with pytest.raises(queue.TaskInputError) as err:
        call(workspace, "adj", queue.adjudicate, task.task_id,
             {"objects": [box("nodule", 10, 10, 10, 10)]}, reason="  ")
    assert err.value.field == "reason"
    assert count(workspace, Annotation) == before
    assert count(workspace, AuditEvent, AuditEvent.action == "refused") == len(bad) + 1

    final = {"objects": [box("nodule", 10, 10, 11, 10)]}
    done = call(workspace, "adj", queue.adjudicate, task.task_id, final,
                reason="the mass is a vessel on the lateral view")
    assert done.item_status == "final"
    row = _latest(workspace)
    assert row.method == "adjudication" and row.label == final
    assert row.input_annotation_ids == [*ids, done.annotation_id]
    with workspace.sessions() as s:
        assert s.scalars(sa.select(Escalation)).one().status == "resolved"
        stored = s.get(Annotation, done.annotation_id)
        assert stored.payload["reason"] == "the mass is a vessel on the lateral view"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.mark.parametrize("method", ["staple", "vote"])
def test_mask_consensus_is_staple_or_vote_of_the_readers_masks(workspace: Workspace,
                                                                method: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    coco_mask = pytest.importorskip("pycocotools.mask")
    make_geo_project(workspace, schema("mask"),
                     f"workflow: consensus\nk: 3\ntarget_dice: 0.7\nmask_method: {method}\n")
    painted = {"r0": disc(30, 24, 9), "r1": disc(32, 23, 9), "r2": disc(31, 26, 8)}
    extra = disc(8, 8, 3)  # a cyst only r2 paints
    for name, pixels in painted.items():
        objects = [mask("nodule", pixels)] + ([mask("cyst", extra)] if name == "r2" else [])
        result = _read(workspace, name, {"objects": objects})
    stack = list(painted.values())
    expected_region = float(np.mean([_dice(a, b) for a, b in itertools.combinations(stack, 2)]))
    # The cyst region: r2 against two empty masks -> Dice 0, 0 and 1 (both empty).
    expected = (expected_region + (0 + 0 + 1) / 3) / 2
    assert expected < 0.7 and result.item_status == "pending"  # the lone cyst pulls it down
    with workspace.sessions() as s:
        reason = s.scalars(sa.select(Escalation)).one().reason
    assert reason.startswith(f"mean Dice {expected:.2f} under target 0.70")
    assert "one of three readers painted finding 2 (cyst)" in reason
    task = call(workspace, "adj", queue.next_task).task
    cons = task.context["consensus"]
    assert cons["method"] == method and cons["agreement"] == pytest.approx(expected)
    assert cons["parameters"]["metric"] == "dice" and cons["target"] == 0.7
    (nodule,) = cons["payload"]["objects"]
    assert nodule["support"] == 3 and nodule["type"] == "mask"
    fused = coco_mask.decode(coco_mask.frPyObjects(nodule["rle"], HEIGHT, WIDTH)).astype(bool)
    if method == "staple":
        images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
        probability = sitk.GetArrayFromImage(sitk.STAPLE(images, 1.0))
        truth = probability > 0.5
    else:
        truth = np.sum(stack, axis=0) >= 2
    assert np.array_equal(fused, truth)
    assert nodule["dice"] == pytest.approx(np.mean([_dice(m, truth) for m in stack]), abs=1e-6)
    (cyst,) = cons["payload"]["minority"]
    assert (cyst["label"], cyst["support"], cyst["readers"]) == ("cyst", 1, ["r2"])


def test_adaptive_asks_one_more_reader_while_boxes_disagree(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"),
                     "workflow: adaptive\nm: 2\nk_max: 3\ntarget_f1: 0.3\n")
    _read(workspace, "r0", {"objects": [box("nodule", 10, 10, 10, 10)]})
    second = _read(workspace, "r1", {"objects": []})  # r1 saw nothing
    assert second.next_step.startswith("read: mean matched F1 0.00 under target 0.30")
    assert second.next_step.endswith("one of two readers saw finding 1 (nodule); one more read")
    assert count(workspace, Task, Task.stage == "annotate") == 3
    third = _read(workspace, "r2", {"objects": [box("nodule", 10, 11, 10, 10)]})
    assert third.item_status == "final"
    assert call(workspace, "r3", queue.next_task).task is None
    row = _latest(workspace)
    assert row.agreement == pytest.approx(1 / 3) and row.method == "wbf"
    (obj,) = row.label["objects"]  # seen by two of three: at least min_support 0.5
    assert obj["support"] == 2 and obj["readers"] == ["r0", "r2"]
    assert _bbox(obj) == pytest.approx([10.0, 10.5, 10.0, 10.0])


def test_review_corrects_a_box_and_escalation_reaches_the_adjudicator(
        workspace: Workspace) -> None:
    make_geo_project(workspace, schema("box"), "workflow: single_review\n", n_items=2)
    first = {"objects": [box("nodule", 10, 10, 10, 10)]}
    read = _read(workspace, "r0", first)
    assert read.next_step == "review: high-risk label, review rate 100%"
    task = call(workspace, "rev", queue.next_task).task
    assert task.stage == "review"
    assert task.context["under_review"] == {"annotation_id": read.annotation_id,
                                            "label": None, "payload": first}
    with pytest.raises(queue.TaskInputError, match="must change"):
        call(workspace, "rev", queue.review, task.task_id, "correct", payload=first)
    with pytest.raises(queue.TaskInputError) as err:
        call(workspace, "rev", queue.review, task.task_id, "correct",
             payload={"objects": [box("nodule", 10, 40, 10, 10)]})
    assert err.value.field == "objects.0.bbox"
    moved = {"objects": [box("nodule", 12, 10, 10, 10)]}
    done = call(workspace, "rev", queue.review, task.task_id, "correct", payload=moved)
    assert done.item_status == "final" and done.next_step == "final: review corrected"
    row = _latest(workspace)
    assert (row.method, row.label, row.input_annotation_ids) == (
        "review", moved, [done.annotation_id])

    # The second item: the reviewer escalates; the adjudicator sees the read and the review.
    other = _read(workspace, "r1", {"objects": [box("nodule", 5, 5, 4, 4)]})
    task = call(workspace, "rev", queue.next_task).task
    call(workspace, "rev", queue.review, task.task_id, "escalate", comment="not sure")
    adj = call(workspace, "adj", queue.next_task).task
    assert adj.context["review"] == {"reviewer": "rev", "label": None, "escalated": True,
                                     "payload": None}
    assert adj.context["consensus"] is None  # one read, no fusion
    assert adj.context["reads"][0]["payload"] == {"objects": [box("nodule", 5, 5, 4, 4)]}
    final = call(workspace, "adj", queue.adjudicate, adj.task_id, {"objects": []},
                 reason="no lesion")
    assert final.item_status == "final"
    row = _latest(workspace)
    assert (row.method, row.label) == ("adjudication", {"objects": []})
    assert row.input_annotation_ids == [other.annotation_id, final.annotation_id]


def test_polygon_findings_cluster_by_bounding_box(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("polygon"), CONSENSUS)
    shapes = {"r0": [10, 10, 20, 10, 20, 20, 10, 20], "r1": [11, 10, 21, 10, 21, 20],
              "r2": [10, 11, 20, 11, 20, 21, 10, 21]}
    for name, points in shapes.items():
        _read(workspace, name, {"objects": [{"type": "polygon", "label": "mass",
                                             "points": points}]})
    row = _latest(workspace)
    assert row.method == "wbf" and row.status == "final"
    (obj,) = row.label["objects"]
    assert obj["type"] == "polygon" and obj["support"] == 3
    boxes = np.array([[10, 10, 20, 20], [11, 10, 21, 20], [10, 11, 20, 21]], dtype=float)
    mean = boxes.mean(axis=0)
    assert obj["bbox"] == pytest.approx([mean[0], mean[1], 10.0, 10.0])
    assert obj["points"] in list(shapes.values())  # a reader's own polygon


def test_multi_label_aggregates_each_class(workspace: Workspace) -> None:
    make_geo_project(workspace, schema("classification", "multi"),
                     "workflow: consensus\nk: 3\ntarget: 0.9\n", n_items=2)
    reads = {"r0": (["mass", "nodule"], ["cyst"]), "r1": (["nodule"], ["cyst"]),
             "r2": (["mass", "nodule"], ["cyst"])}
    for name, labels in reads.items():
        for item_labels in labels:
            _read(workspace, name, {"labels": item_labels})
    with workspace.sessions() as s:
        rows = {s.get(Item, c.item_id).external_id: c for c in s.scalars(sa.select(Consensus))}
        esc = s.scalars(sa.select(Escalation)).one()
    assert list(rows) == ["i01"]
    agreed = rows["i01"]
    assert agreed.label == {"labels": ["cyst"]} and agreed.method == "multilabel-mv"
    assert agreed.posterior == {"nodule": 0.0, "mass": 0.0, "cyst": 1.0}
    assert esc.reason == "mass: P(present) 0.67, certainty 0.67 under target 0.90"
    task = call(workspace, "adj", queue.next_task).task
    cons = task.context["consensus"]
    assert cons["payload"] == {"labels": ["mass", "nodule"]}
    assert cons["posterior"]["mass"] == pytest.approx(2 / 3)
    assert [r["payload"] for r in task.context["reads"]] == [
        {"labels": ["mass", "nodule"]}, {"labels": ["nodule"]}, {"labels": ["mass", "nodule"]}]
    with pytest.raises(queue.TaskInputError) as err:
        call(workspace, "adj", queue.adjudicate, task.task_id, {"labels": ["tumour"]},
             reason="x")
    assert err.value.field == "labels.0"
    call(workspace, "adj", queue.adjudicate, task.task_id, {"labels": ["nodule"]},
         reason="the mass is the nodule")
    assert _latest(workspace).label == {"labels": ["nodule"]}


def test_geometric_policy_settings_are_checked(workspace: Workspace) -> None:
    from truthset.domain.policy import parse_policy
    from truthset.workflow import policies
    from truthset.workspace import projects

    for text, field in (("iou_threshold: 1.0", "iou_threshold"), ("min_support: 0", "min_support"),
                        ("target_dice: 1.5", "target_dice"), ("target_f1: -0.1", "target_f1"),
                        ("mask_method: mean", "mask_method"),
                        ("by_risk: {high: {iou_threshold: 0}}", "by_risk.high.iou_threshold")):
        with pytest.raises(InputError) as err:
            parse_policy(text)
        assert err.value.field == field, text
    make_geo_project(workspace, schema("box"), CONSENSUS)
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        # Gold and calibration score geometric reads too (tests/test_workflow_gold_geometry.py).
        policies.set_policy(s, p, "workflow: consensus\nk: 3\ngold: {rate: 0.1}\n")
        # No adjudication asked (target 0) -> no adjudicator needed on a box schema either.
        policies.set_policy(s, p, "workflow: consensus\nk: 3\ntarget_f1: 0\n")


def test_a_geometric_project_goes_from_reads_to_a_release(workspace: Workspace,
                                                          tmp_path: Path) -> None:
    import json

    from truthset.release import service
    from truthset.release.export import export_release
    from truthset.workspace import projects

    make_geo_project(workspace, schema("box"), CONSENSUS, n_items=2)
    agreed = [[(10, 10, 10, 10)], [(11, 10, 10, 10)], [(10, 11, 10, 10)]]
    split = [[(30, 30, 8, 8)], [], [(5, 5, 6, 6)]]
    reads: dict[str, list[int]] = {"i00": [], "i01": []}
    for k, name in enumerate(("r0", "r1", "r2")):
        for item, boxes in (("i00", agreed[k]), ("i01", split[k])):
            result = _read(workspace, name, {"objects": [box("nodule", *b) for b in boxes]})
            reads[item].append(int(result.annotation_id))
    adj = call(workspace, "adj", queue.next_task).task
    adjudicated = call(workspace, "adj", queue.adjudicate, adj.task_id,
                       {"objects": [box("nodule", 30, 30, 8, 8)]}, reason="r0 is right")
    with workspace.unit("lead") as s:
        project = projects.get_project(s, "chest")
        release = service.create_release(s, project, workspace.blobs, name="v1", actor="lead",
                                         fractions={"train": 1.0})
        rows = {r.external_id: r for r in service.release_items(s, release)}
        assert all(r.included for r in rows.values()), [r.reason for r in rows.values()]
        content = service.load_content(s, release)
        files = export_release(s, release, tmp_path / "out", formats=["coco", "csv"])
    items = {i["external_id"]: i for i in content["items"]}
    fused = items["i00"]
    assert fused["label_source"] == "consensus"
    (obj,) = fused["final_label"]["objects"]
    assert "minority" not in fused["final_label"]
    assert obj["support"] == 3 and _bbox(obj) == pytest.approx([10 + 1 / 3, 10 + 1 / 3, 10, 10])
    prov = fused["provenance"]["consensus"]
    assert prov["method"] == "wbf" and prov["input_annotation_ids"] == reads["i00"]
    judged = items["i01"]
    assert judged["label_source"] == "adjudicated"
    assert judged["final_label"] == {"objects": [box("nodule", 30, 30, 8, 8)]}
    assert judged["provenance"]["adjudication"]["reason"] == "r0 is right"
    assert judged["provenance"]["consensus"]["input_annotation_ids"] == [
        *reads["i01"], adjudicated.annotation_id]
    coco = json.loads(next(p for p in files if p.name.startswith("coco_")).read_text())
    bboxes = sorted(tuple(round(v, 4) for v in a["bbox"]) for a in coco["annotations"])
    assert bboxes == [(10.3333, 10.3333, 10.0, 10.0), (30.0, 30.0, 8.0, 8.0)]


def test_compute_consensus_fuses_geometric_and_multi_label_reads(workspace: Workspace) -> None:
    from truthset.workflow.consensus import compute_consensus
    from truthset.workspace import projects

    make_geo_project(workspace, schema("box"), CONSENSUS)
    for name, b in (("r0", (10, 10, 10, 10)), ("r1", (12, 10, 10, 10))):
        _read(workspace, name, {"objects": [box("nodule", *b)]})
    with workspace.unit("lead") as s:
        project = projects.get_project(s, "chest")
        with pytest.raises(InputError, match="wbf") as err:
            compute_consensus(s, project, method="staple")
        assert err.value.field == "method"
        run = compute_consensus(s, project, method="mv", params={"iou_threshold": 0.6})
        assert run.method == "wbf" and list(run.labels["label"]) == ["1 object(s)"]
    row = _latest(workspace)
    assert row.parameters["iou_threshold"] == 0.6
    (obj,) = row.label["objects"]
    assert obj["readers"] == ["r0", "r1"] and _bbox(obj) == pytest.approx([11, 10, 10, 10])


def test_multi_label_posterior_is_the_policy_method_fitted_per_class(
        workspace: Workspace) -> None:
    import pandas as pd

    from truthset.quality.aggregation.dawid_skene import DawidSkene
    from truthset.quality.aggregation.multilabel import MultiLabelAggregator

    make_geo_project(workspace, schema("classification", "multi"),
                     "workflow: consensus\nk: 2\nmethod: ds\ntarget: 0.5\n", n_items=3)
    answers = {"r0": (["nodule"], ["mass", "nodule"], ["cyst"]),
               "r1": (["nodule"], ["nodule"], [])}
    records = []
    for name, per_item in answers.items():
        for labels in per_item:
            task = call(workspace, name, queue.next_task).task
            call(workspace, name, queue.submit, task.task_id, {"labels": labels})
            records.append((str(task.item_id), name, labels))
    row = _latest(workspace)  # the item the last read finalised
    assert row.method == "multilabel-ds" and row.status == "final"
    table = pd.DataFrame(records, columns=["item", "annotator", "label"])
    direct = MultiLabelAggregator(DawidSkene, classes=["nodule", "mass", "cyst"]).fit(table)
    expected = direct.probas_.loc[str(row.item_id)]
    assert row.posterior == pytest.approx({c: float(p) for c, p in expected.items()})
    assert row.label == {"labels": sorted(c for c in expected.index if expected[c] > 0.5)}


def test_a_mask_consensus_on_a_dicom_series_exports_as_dicom_seg(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    import io

    import pydicom

    from test_imaging_helpers import make_series
    from truthset.release import service
    from truthset.release.export import export_release
    from truthset.workflow import policies
    from truthset.workspace import imports, projects, users

    ws = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    paths, _volume = make_series(tmp_path / "series", slices=3)
    rows, cols = (int(v) for v in (pydicom.dcmread(paths[0]).Rows,
                                   pydicom.dcmread(paths[0]).Columns))
    yy, xx = np.mgrid[0:rows, 0:cols]

    def blob(cx: float, cy: float, r: float) -> np.ndarray:
        return np.asarray((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r)

    with ws, ws.unit("lead") as s:
        project = projects.create_project(s, key="chest", name="seg", schema_text=schema("mask"))
        imports.import_items(s, ws.blobs, project, paths, vault=ws.vault)
        for k in range(3):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        policies.set_policy(s, project, "workflow: consensus\nk: 3\ntarget_dice: 0.6\n"
                                        "mask_method: vote\n")
        queue.enqueue(s, project)
    painted = [blob(60, 64, 20), blob(64, 60, 20), blob(62, 66, 18)]
    try:
        for k, pixels in enumerate(painted):
            result = _read(ws, f"r{k}", {"objects": [mask("nodule", pixels, frame=1)]})
        assert result.item_status == "final", result.next_step
        vote = np.sum(painted, axis=0) >= 2
        with ws.unit("lead") as s:
            project = projects.get_project(s, "chest")
            release = service.create_release(s, project, ws.blobs, name="v1", actor="lead",
                                             fractions={"train": 1.0})
            assert all(r.included for r in service.release_items(s, release))
            files = export_release(s, release, tmp_path / "out", formats=["dicom-seg"],
                                   blobs=ws.blobs)
            item = s.scalars(sa.select(Item)).one()
            sources = [pydicom.dcmread(io.BytesIO(ws.blobs.get_bytes(m["sha256"])))
                       for m in item.media]
        (seg_path,) = [p for p in files if p.name.endswith("_seg.dcm")]
        seg = hd.seg.segread(seg_path)
        ordered = sorted(sources, key=lambda d: float(d.ImagePositionPatient[2]))
        got = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[d.SOPInstanceUID for d in ordered], segment_numbers=[1],
            combine_segments=False, ignore_spatial_locations=True).squeeze(-1).astype(bool)
        expected = np.zeros((3, rows, cols), dtype=bool)
        expected[1] = vote
        assert np.array_equal(got, expected)
    finally:
        ws.close()


def test_a_model_draft_counts_as_a_read_under_prelabels_draft(workspace: Workspace) -> None:
    from truthset.workflow.annotations import record_annotation
    from truthset.workspace import projects

    make_geo_project(workspace, schema("box"), "workflow: consensus\nk: 2\nprelabels: draft\n")
    with workspace.unit("admin") as s:  # a model's draft in the stored form (corners, score)
        p = projects.get_project(s, "chest")
        item = s.scalars(sa.select(Item).where(Item.project_id == p.id)).one()
        record_annotation(s, p, item=item, author=None, model=("detector", "1"),
                          payload={"objects": [{"label": "nodule", "score": 0.9,
                                                "box": [10, 10, 20, 20]}]})
    task = call(workspace, "r0", queue.next_task).task
    assert task.context == {"draft": {"label": None, "payload": {"objects": [
        {"label": "nodule", "score": 0.9, "box": [10, 10, 20, 20]}]}}}
    done = call(workspace, "r0", queue.submit, task.task_id,
                {"objects": [box("nodule", 11, 10, 10, 10)]})
    assert done.item_status == "final"
    row = _latest(workspace)
    (obj,) = row.label["objects"]
    assert obj["readers"] == ["model", "r0"] and obj["support"] == 2
    assert _bbox(obj) == pytest.approx([10.5, 10, 10, 10])
