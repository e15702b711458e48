"""Gold and calibration on box, polygon, mask and multi-label schemas, on SQLite and
PostgreSQL: reads scored against known answers with numbers worked out independently (IoU and
matched counts by hand for small boxes, medpy's Dice for masks, scikit-learn's recall,
specificity and Hamming loss for multi-label), calibration passed and failed, a reader
suspended for one class and told why, kept off items of that class, and their own feedback
over the API."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from geometry_support import HEIGHT, WIDTH, box, disc, mask, schema
from test_api_support import bearer, client
from truthset.auth import memberships, tokens
from truthset.domain.errors import ConflictError, InputError
from truthset.quality.boxes import matched_f1
from truthset.store.models import GoldItem, Item, ReaderStatus
from truthset.workflow import policies, queue, scoring
from truthset.workflow import readers as rd
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace
from workflow_support import call

CLASSES = ("nodule", "mass", "cyst")


def _project(ws: Workspace, schema_text: str, policy: str,
             known: dict[str, tuple[str, Any]], *, n_items: int = 2, n_readers: int = 3) -> None:
    """Project ``chest`` with readers r0.., ``adj``, regular items i00.. and the known-answer
    items ``known`` (external id -> purpose, reference payload) of WIDTH x HEIGHT pixels; the
    policy stored and the regular items queued."""
    media = [{"sha256": "0" * 64, "media_type": "image/png", "width": WIDTH, "height": HEIGHT}]
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=schema_text)
        for k in range(n_readers):
            users.add_user(s, username=f"r{k}", role="annotator")
        users.add_user(s, username="adj", role="adjudicator", tier=3)
        users.add_user(s, username="lead", role="manager", tier=2)
        for name in [f"i{k:02d}" for k in range(n_items)] + list(known):
            s.add(Item(project_id=p.id, external_id=name, kind="image", media=media))
        s.flush()
        for purpose in ("calibration", "gold"):
            answers = {e: ref for e, (use, ref) in known.items() if use == purpose}
            if answers:
                policies.add_gold(s, p, answers, purpose=purpose)
        policies.set_policy(s, p, policy)
        queue.enqueue(s, p)


def _read_known(ws: Workspace, name: str, answers: dict[str, Any], stage: str) -> str:
    """``name`` takes their next task (a known-answer one, of ``stage``) and answers it."""
    task = call(ws, name, queue.next_task).task
    assert task is not None and task.stage == stage and task.context == {}, task
    call(ws, name, queue.submit, task.task_id, answers[task.external_id])
    return task.external_id


def _stats(ws: Workspace, name: str, **kw: Any) -> rd.ReaderStats:
    with ws.sessions() as s:
        return rd.reader_stats(s, projects.get_project(s, "chest"), users.get_user(s, name),
                               **kw)


def _statuses(ws: Workspace) -> dict[tuple[str, str], tuple[str, str]]:
    with ws.sessions() as s:
        names = dict(s.execute(sa.text("SELECT id, username FROM users")).all())
        return {(names[r.user_id], r.class_name): (r.status, r.message)
                for r in s.scalars(sa.select(ReaderStatus))}


# -- boxes --------------------------------------------------------------------------------------
#: Reference answers (x, y, w, h). Hand-worked IoUs of the reads below:
#: [11,10,10,10] vs [10,10,10,10]: 9*10 / (100 + 100 - 90) = 90/110 = 0.818 (match)
#: [45,20,10,10] vs [40,20,10,10]: 5*10 / (200 - 50) = 0.333 (no match)
#: [22,22,8,8] vs [20,20,8,8]: 6*6 / (64 + 64 - 36) = 36/92 = 0.391 (no match)
BOX_REFS = {
    "cal0": [box("nodule", 10, 10, 10, 10), box("mass", 40, 20, 10, 10)],
    "cal1": [box("cyst", 5, 5, 8, 8)],
    "g0": [box("nodule", 10, 10, 10, 10), box("mass", 40, 20, 10, 10)],
    "g1": [box("nodule", 20, 20, 8, 8)],
    "g2": [box("nodule", 5, 5, 10, 10), box("nodule", 30, 30, 10, 10)],
}
#: r0 fails calibration: cal0 F1 2*1/(2+2) = 0.5, cal1 F1 2*1/(1+2) = 0.667; mean 0.583 < 0.6.
R0_BOXES = {"cal0": [box("nodule", 11, 10, 10, 10), box("mass", 45, 20, 10, 10)],
            "cal1": [box("cyst", 5, 5, 8, 8), box("nodule", 30, 30, 5, 5)]}
#: r1 passes calibration (both exact: mean F1 1.0), then misses nodules on gold.
R1_BOXES = {"cal0": BOX_REFS["cal0"], "cal1": BOX_REFS["cal1"],
            "g0": [box("mass", 40, 20, 10, 10)],                        # nodule 0/1, mass 1/1
            "g1": [box("nodule", 22, 22, 8, 8)],                        # nodule 0/1 (IoU .391)
            "g2": [box("nodule", 5, 5, 10, 10)]}                        # nodule 1/2
#: By hand, per gold item: (nodule matched, nodule reference objects, read score = matched F1).
R1_GOLD_NODULE = {"g0": (0, 1), "g1": (0, 1), "g2": (1, 2)}
R1_SCORES = {"cal0": 1.0, "cal1": 1.0, "g0": 2 * 1 / (2 + 1), "g1": 0.0, "g2": 2 * 1 / (2 + 1)}
BOX_POLICY = ("workflow: consensus\nk: 2\ntarget_f1: 0\niou_threshold: 0.5\n"
              "calibration: {threshold: 0.6}\ngold: {rate: 1.0, threshold: 0.7, min_reads: 2}\n")


def test_box_gold_calibration_suspension_and_feedback(workspace: Workspace) -> None:
    known = {e: ("calibration" if e.startswith("cal") else "gold", {"objects": objs})
             for e, objs in BOX_REFS.items()}
    _project(workspace, schema("box"), BOX_POLICY, known)
    calibration = {e: {"objects": o} for e, o in R0_BOXES.items()}
    assert [_read_known(workspace, "r0", calibration, "calibrate") for _ in range(2)] == [
        "cal0", "cal1"]
    failed = call(workspace, "r0", queue.next_task)
    assert failed.task is None
    assert failed.reason.startswith("calibration not passed: matched F1 58% over 2 cases "
                                    "(IoU >= 0.50), under the threshold of 60%")

    answers = {e: {"objects": o} for e, o in R1_BOXES.items()}
    for _ in range(2):
        _read_known(workspace, "r1", answers, "calibrate")
    order = [_read_known(workspace, "r1", answers, "annotate") for _ in range(3)]
    assert sorted(order) == ["g0", "g1", "g2"]  # gold looks like any annotate task
    # When was r1 first under 70% with >= 2 nodule gold cases? (hand numbers, in read order)
    matched = objects = cases = 0
    expected = None
    for name in order:
        m, n = R1_GOLD_NODULE[name]
        matched, objects, cases = matched + m, objects + n, cases + 1
        if expected is None and cases >= 2 and matched / objects < 0.7:
            expected = (f"suspended for nodule: you found {matched / objects:.0%} of the "
                        f"{objects} nodule objects of the {cases} nodule reference cases (a "
                        "match needs IoU >= 0.50 with a reference object of the class) "
                        "(threshold 70%); review the guideline's nodule examples")
    status = _statuses(workspace)
    assert status[("r1", "")][0] == "passed"
    assert status[("r1", "nodule")] == ("suspended", expected)
    assert ("r1", "mass") not in status  # mass: 1 gold case < min_reads
    assert status[("r0", "")][0] == "failed"

    stats = _stats(workspace, "r1", block=2)
    # Over calibration and gold: nodule matched 1 + 0 + 0 + 1 = 2 of 1 + 1 + 1 + 2 = 5
    # reference objects on 4 cases; r1 drew 1 + 0 + 1 + 1 = 3 nodule boxes.
    nodule = stats.per_class.loc["nodule"]
    assert (nodule["n"], nodule["objects"]) == (4, 5)
    assert nodule["sensitivity"] == pytest.approx(2 / 5)
    assert nodule["precision"] == pytest.approx(2 / 3)
    assert np.isnan(nodule["specificity"])
    mass = stats.per_class.loc["mass"]
    assert (mass["n"], mass["sensitivity"], mass["precision"]) == (2, 1.0, 1.0)
    assert stats.per_class.loc["cyst", "n"] == 1
    read_order = ["cal0", "cal1", *order]
    assert stats.accuracy == pytest.approx(np.mean([R1_SCORES[e] for e in read_order]))
    blocks = [read_order[k:k + 2] for k in range(0, 5, 2)]
    assert list(stats.trend["accuracy"]) == pytest.approx(
        [np.mean([R1_SCORES[e] for e in b]) for b in blocks])
    assert stats.confusion.empty and "precision" in stats.scoring
    assert stats.to_dict()["per_class"][0]["specificity"] is None

    # Suspended for nodule: an item r2 drew a nodule on is not offered to r1.
    r2 = {e: {"objects": o} for e, o in BOX_REFS.items()}
    for stage, n in (("calibrate", 2), ("annotate", 3)):
        for _ in range(n):
            _read_known(workspace, "r2", r2, stage)
    first = call(workspace, "r2", queue.next_task).task
    assert first.external_id == "i00"
    call(workspace, "r2", queue.submit, first.task_id,
         {"objects": [box("nodule", 10, 10, 10, 10)]})
    offered = call(workspace, "r1", queue.next_task).task
    assert offered is not None and offered.external_id == "i01"
    assert _stats(workspace, "r2").accuracy == 1.0 and ("r2", "nodule") not in _statuses(
        workspace)

    # The reader's own view over the API (and a manager's view of them).
    c = client(workspace)
    with workspace.unit("admin") as s:
        project = projects.get_project(s, "chest")
        heads = {}
        for name in ("r0", "r1", "r2", "adj", "lead"):
            user = users.get_user(s, name)
            memberships.add_member(s, project, user, user.role)
            heads[name] = bearer(tokens.create_token(s, user, name="t").secret)
    mine = c.get("/api/v1/projects/chest/readers/me", headers=heads["r1"])
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert expected in body["messages"]
    assert body["stats"]["suspensions"] == {"nodule": expected}
    per_class = {row["class"]: row for row in body["stats"]["per_class"]}
    assert per_class["nodule"]["sensitivity"] == pytest.approx(0.4)
    assert per_class["nodule"]["precision"] == pytest.approx(2 / 3)
    assert per_class["nodule"]["objects"] == 5 and per_class["nodule"]["specificity"] is None
    assert body["stats"]["scoring"]["schema"] == "box"
    assert not re.search(r"\b(g[0-2]|cal[01])\b", mine.text)  # gold stays unidentifiable
    listing = c.get("/api/v1/projects/chest/readers", headers=heads["lead"]).json()
    row = {r["reader"]: r for r in listing}["r1"]
    assert row["suspended"] == "nodule" and row["min_sensitivity"] == pytest.approx(0.4)
    assert c.get("/api/v1/projects/chest/readers/r1", headers=heads["r0"]).status_code == 403


def test_known_answers_are_checked_against_the_schema_and_image(workspace: Workspace) -> None:
    _project(workspace, schema("box"), "workflow: consensus\nk: 2\ntarget_f1: 0\n", {})
    with workspace.unit("admin") as s:
        p = projects.get_project(s, "chest")
        s.add(Item(project_id=p.id, external_id="g9", kind="image",
                   media=[{"width": WIDTH, "height": HEIGHT}]))
        s.flush()
        for answer, field in (({"objects": [box("nodule", 60, 10, 10, 10)]}, "objects.0.bbox"),
                              ({"objects": [box("tumour", 1, 1, 5, 5)]}, "objects.0.label"),
                              ("nodule", "label")):
            with pytest.raises(InputError) as err:
                policies.add_gold(s, p, {"g9": answer})
            assert err.value.field == field and err.value.location == "item g9"
        with pytest.raises(ConflictError, match="already in the workflow"):
            policies.add_gold(s, p, {"i00": {"objects": []}})
        # Gold and calibration are no longer refused on a geometric schema.
        policies.set_policy(s, p, "workflow: consensus\nk: 2\ntarget_f1: 0\n"
                                  "gold: {rate: 0.2}\ncalibration: {threshold: 0.5}\n")
        policies.add_gold(s, p, {"g9": {"objects": [box("nodule", 1, 1, 5, 5)]}})
    with workspace.sessions() as s:
        assert s.scalars(sa.select(GoldItem.label)).one()["objects"][0]["bbox"] == [1, 1, 5, 5]


# -- masks --------------------------------------------------------------------------------------
MASK_POLICY = ("workflow: consensus\nk: 2\ntarget_dice: 0.8\n"
               "calibration: {threshold: 0.7}\ngold: {rate: 1.0, threshold: 0.7, min_reads: 2}\n")


def _masks(*objects: tuple[str, np.ndarray]) -> dict[str, Any]:
    return {"objects": [mask(label, pixels) for label, pixels in objects]}


def test_mask_gold_scored_by_dice_per_class(workspace: Workspace) -> None:
    dc = pytest.importorskip("medpy.metric.binary").dc
    refs = {"cal0": _masks(("nodule", disc(20, 20, 6))),
            "g0": _masks(("nodule", disc(20, 20, 6)), ("mass", disc(45, 30, 5))),
            "g1": _masks(("nodule", disc(30, 25, 8))),
            "g2": _masks(("mass", disc(40, 20, 6)))}
    r0 = {"cal0": _masks(("nodule", disc(21, 20, 6))),
          "g0": _masks(("nodule", disc(27, 20, 6)), ("mass", disc(45, 30, 5))),
          "g1": _masks(("cyst", disc(10, 10, 3))),
          "g2": _masks(("mass", disc(40, 20, 6)))}
    r1 = {"cal0": _masks(("nodule", disc(27, 20, 6)))}
    known = {e: ("calibration" if e.startswith("cal") else "gold", ref)
             for e, ref in refs.items()}
    _project(workspace, schema("mask"), MASK_POLICY, known)
    # Independent Dice (medpy): cal0 0.893 (>= 0.8), g0 nodule 0.304, r1's cal0 0.304.
    d_cal0 = dc(disc(21, 20, 6), disc(20, 20, 6))
    d_g0 = dc(disc(27, 20, 6), disc(20, 20, 6))
    assert d_cal0 >= 0.8 > d_g0
    _read_known(workspace, "r1", r1, "calibrate")
    failed = call(workspace, "r1", queue.next_task)
    assert failed.task is None and failed.reason.startswith(
        f"calibration not passed: mean Dice per class {d_g0:.0%} over 1 cases")
    _read_known(workspace, "r0", r0, "calibrate")
    order = [_read_known(workspace, "r0", r0, "annotate") for _ in range(3)]
    assert sorted(order) == ["g0", "g1", "g2"]
    status = _statuses(workspace)
    assert status[("r0", "")] == ("passed", f"calibration passed: mean Dice per class "
                                            f"{d_cal0:.0%} over 1 cases (threshold 70%)")
    # nodule gold cases g0 (Dice 0.30) and g1 (nothing painted: 0): 0 of 2 reach 0.80.
    assert status[("r0", "nodule")] == (
        "suspended", "suspended for nodule: your nodule masks reached Dice >= 0.80 on 0% of "
                     "the 2 nodule reference cases (threshold 70%); review the guideline's "
                     "nodule examples")
    assert ("r0", "mass") not in status and ("r0", "cyst") not in status

    stats = _stats(workspace, "r0")
    nodule, mass, cyst = (stats.per_class.loc[c] for c in CLASSES)
    assert nodule["n"] == 3 and nodule["sensitivity"] == pytest.approx(1 / 3)
    assert nodule["dice"] == pytest.approx((d_cal0 + d_g0 + 0.0) / 3)
    assert nodule["specificity"] == 1.0  # g2 has no nodule and r0 painted none
    assert (mass["n"], mass["sensitivity"], mass["dice"], mass["specificity"]) == (
        2, 1.0, 1.0, 1.0)
    assert cyst["n"] == 0 and np.isnan(cyst["sensitivity"])
    assert cyst["specificity"] == pytest.approx(3 / 4)  # painted a cyst on g1
    # Read scores: mean Dice over the classes either paints (g1: nodule 0, cyst 0).
    scores = {"cal0": d_cal0, "g0": (d_g0 + 1.0) / 2, "g1": 0.0, "g2": 1.0}
    assert stats.accuracy == pytest.approx(np.mean(list(scores.values())))
    assert stats.to_dict()["scoring"]["sensitivity"].endswith("Dice >= 0.80")


# -- multi-label ----------------------------------------------------------------------------------
MULTI_REFS = {"cal0": ["nodule"], "g0": ["nodule", "mass"], "g1": ["nodule"], "g2": ["cyst"],
              "g3": []}
MULTI_R0 = {"cal0": ["nodule"], "g0": ["mass"], "g1": [], "g2": ["cyst", "nodule"],
            "g3": ["mass"]}


def test_multi_label_gold_against_scikit_learn(workspace: Workspace) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    policy = ("workflow: consensus\nk: 2\ntarget: 0.5\ncalibration: {threshold: 0.6}\n"
              "gold: {rate: 1.0, threshold: 0.7, min_reads: 2}\n")
    known = {e: ("calibration" if e.startswith("cal") else "gold", {"labels": labels})
             for e, labels in MULTI_REFS.items()}
    _project(workspace, schema("classification", "multi"), policy, known)
    _read_known(workspace, "r1", {"cal0": {"labels": ["mass", "cyst"]}}, "calibrate")
    failed = call(workspace, "r1", queue.next_task)  # 0 of 3 classes right
    assert failed.task is None and failed.reason.startswith(
        "calibration not passed: share of classes answered right 0% over 1 cases")
    answers = {e: {"labels": labels} for e, labels in MULTI_R0.items()}
    _read_known(workspace, "r0", answers, "calibrate")
    order = ["cal0"] + [_read_known(workspace, "r0", answers, "annotate") for _ in range(4)]
    assert _statuses(workspace)[("r0", "nodule")] == (
        "suspended", "suspended for nodule: you recognised 0% of the 2 nodule reference cases "
                     "(threshold 70%); review the guideline's nodule examples")
    stats = _stats(workspace, "r0")
    y_true = np.array([[c in MULTI_REFS[e] for c in CLASSES] for e in order], dtype=int)
    y_pred = np.array([[c in MULTI_R0[e] for c in CLASSES] for e in order], dtype=int)
    sensitivity = metrics.recall_score(y_true, y_pred, average=None, zero_division=np.nan)
    specificity = [m[0, 0] / (m[0, 0] + m[0, 1])
                   for m in metrics.multilabel_confusion_matrix(y_true, y_pred)]
    assert list(stats.per_class["sensitivity"]) == pytest.approx(list(sensitivity))
    assert list(stats.per_class["specificity"]) == pytest.approx(specificity)
    assert list(stats.per_class["n"]) == list(y_true.sum(axis=0))
    assert stats.accuracy == pytest.approx(1 - metrics.hamming_loss(y_true, y_pred))
    # Suspended for nodule: an item another reader marked nodule is kept from r0.
    r2 = {e: {"labels": labels} for e, labels in MULTI_REFS.items()}
    for stage, n in (("calibrate", 1), ("annotate", 4)):
        for _ in range(n):
            _read_known(workspace, "r2", r2, stage)
    first = call(workspace, "r2", queue.next_task).task
    call(workspace, "r2", queue.submit, first.task_id, {"labels": ["nodule"]})
    offered = call(workspace, "r0", queue.next_task).task
    assert offered is not None and offered.external_id != first.external_id


# -- the pure scoring ---------------------------------------------------------------------------
def test_score_read_polygons_by_bounding_box_and_3d_free_masks() -> None:
    square = {"type": "polygon", "label": "nodule", "points": [10, 10, 20, 10, 20, 20, 10, 20]}
    shifted = {"type": "polygon", "label": "nodule", "points": [12, 10, 22, 10, 22, 20, 12, 20]}
    got = scoring.score_read("polygon", {"objects": [shifted]}, {"objects": [square]},
                             classes=CLASSES, iou_threshold=0.5)
    # bounding boxes [12,10,22,20] vs [10,10,20,20]: 8*10 / (200 - 80) = 0.667 >= 0.5
    assert got.score == 1.0 and got.classes[0].matched == 1
    strict = scoring.score_read("polygon", {"objects": [shifted]}, {"objects": [square]},
                                classes=CLASSES, iou_threshold=0.7)
    assert strict.score == 0.0 and (strict.classes[0].n_truth, strict.classes[0].n_said) == (1, 1)
    empty = scoring.score_read("mask", {"objects": []}, {"objects": []}, classes=CLASSES)
    assert empty.score == 1.0 and all(c.dice is None for c in empty.classes)
    with pytest.raises(InputError):
        scoring.score_read("measurement", {}, {}, classes=CLASSES)


_BOX = st.tuples(st.integers(0, 40), st.integers(0, 30), st.integers(1, 20), st.integers(1, 15),
                 st.sampled_from(CLASSES))


@settings(max_examples=60, deadline=None)
@given(st.lists(_BOX, max_size=6), st.lists(_BOX, max_size=6))
def test_per_class_matching_equals_labelled_matching(read: list[Any], ref: list[Any]) -> None:
    """Splitting by class before matching finds the same pairs as one matching with labels
    (boxes of different classes never match), so the read's score is matched_f1's F1."""
    def objects(boxes: list[Any]) -> dict[str, Any]:
        return {"objects": [box(c, x, y, w, h) for x, y, w, h, c in boxes]}

    got = scoring.score_read("box", objects(read), objects(ref), classes=CLASSES,
                             iou_threshold=0.5)
    corners = [[[x, y, x + w, y + h] for x, y, w, h, _c in b] for b in (read, ref)]
    whole = matched_f1(np.asarray(corners[0], dtype=float).reshape(-1, 4),
                       np.asarray(corners[1], dtype=float).reshape(-1, 4), 0.5,
                       pred_labels=[b[4] for b in read], ref_labels=[b[4] for b in ref])
    assert sum(c.matched for c in got.classes) == whole.tp
    assert got.score == pytest.approx(whole.f1)
