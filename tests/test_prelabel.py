"""Pre-labelling: the three model adapters, the registry, refusing bad model output, and
acceptance tracking with pausing and a manager's resume."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image

from truthset import audit
from truthset.domain.errors import ConflictError, InputError, PermissionDeniedError
from truthset.prelabel import acceptance, service
from truthset.prelabel.adapters import ClassicalSegmenter, OnnxAdapter, read_nifti_bytes
from truthset.prelabel.output import (
    DraftRefused,
    check_output,
    decode_mask,
    encode_mask,
    payload_masks,
)
from truthset.store.models import (
    Annotation,
    ClassAutomation,
    DraftOutcome,
    Item,
    PrelabelDraft,
    User,
)
from truthset.workflow.annotations import record_annotation
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

MASK_SCHEMA = """name: lesions
kind: mask
classes:
  - name: lesion
    risk: high
  - name: cyst
"""
CLASS_SCHEMA = """name: finding
kind: classification
mode: single
classes:
  - name: normal
  - name: nodule
"""


def _image(value: int, square: bool = True, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A dark image with (optionally) one bright square at rows 4..12, cols 6..16."""
    a = np.full(size, 10, dtype=np.uint8)
    if square:
        a[4:12, 6:16] = value
    return a


def _project(ws: Workspace, tmp_path: Path, schema: str, images: list[np.ndarray]) -> None:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for k, img in enumerate(images):
        Image.fromarray(img).save(folder / f"img{k:02d}.png")
    with ws.unit("admin") as s:
        project = projects.create_project(s, key="p", name="P", schema_text=schema)
        users.add_user(s, username="reader", role="annotator")
        users.add_user(s, username="boss", role="manager")
        imports.import_items(s, ws.blobs, project, [folder])


# -- pure checks ----------------------------------------------------------------------------------
def test_mask_encoding_round_trips() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 9), (3, 5, 4), (1, 1)]:
        mask = rng.random(shape) > 0.6
        assert np.array_equal(decode_mask(encode_mask(mask)), mask)
    with pytest.raises(ValueError, match="overlap"):
        decode_mask({"shape": [4], "runs": [0, 3, 2, 1]})
    with pytest.raises(ValueError, match="past the end"):
        decode_mask({"shape": [4], "runs": [2, 3]})


@pytest.mark.parametrize(
    ("raw", "kind", "needle"),
    [
        ([1, 2], "classification", "not an object"),
        ({"probabilities": {"normal": 0.7, "nodule": 0.7}}, "classification", "sum to"),
        ({"probabilities": {"normal": float("nan"), "nodule": 1.0}}, "classification",
         "not a probability"),
        ({"probabilities": {"normal": 0.1, "other": 0.9}}, "classification",
         "not a class this model is registered"),
        ({"objects": [{"label": "lesion", "box": [0, 0, 40, 10]}]}, "box", "out of bounds"),
        ({"objects": [{"label": "lesion", "box": [5, 5, 2, 10]}]}, "box", "out of bounds"),
        ({"objects": [{"label": "lesion", "box": [1, 2, 3]}]}, "box", "must be 4 numbers"),
        ({"objects": [{"label": "cyst", "box": [1, 2, 3, 4]}]}, "box", "registered"),
        ({"label_map": np.zeros((5, 5), int), "label_names": {"lesion": 1}}, "mask",
         "the image is (24, 32)"),
        ({"label_map": np.full((24, 32), 2), "label_names": {"lesion": 1}}, "mask",
         "does not name"),
        ({"objects": [{"label": "lesion", "mask": np.ones((3, 3), bool)}]}, "mask",
         "the image is"),
    ],
)
def test_bad_model_output_is_refused_with_the_reason(raw: Any, kind: Any, needle: str) -> None:
    classes = ["normal", "nodule"] if kind == "classification" else ["lesion"]
    with pytest.raises(DraftRefused) as err:
        check_output(raw, kind=kind, registered=classes, image_shape=(24, 32))
    assert needle in err.value.reason


def test_classical_segmenter_finds_components_without_weights() -> None:
    img = _image(200)
    img[16:20, 20:30] = 220
    img[0, 0] = 255  # a one-pixel speck: below min_size
    seg = ClassicalSegmenter("mask", {"thresholds": {"lesion": [0.5, 1.0]}, "min_size": 4})
    pred = check_output(seg.predict(img), kind="mask", registered=["lesion"],
                        image_shape=img.shape)
    assert [o.box for o in pred.objects] == [(6.0, 4.0, 16.0, 12.0), (20.0, 16.0, 30.0, 20.0)]
    union = payload_masks(pred.payload())["lesion"]
    assert union.sum() == 8 * 10 + 4 * 10
    clf = ClassicalSegmenter("classification", {"thresholds": {"nodule": [0.5, 1.0]},
                                                "positive": "nodule", "negative": "normal"})
    assert check_output(clf.predict(img), kind="classification", registered=["nodule", "normal"],
                        image_shape=img.shape).label == "nodule"
    assert check_output(clf.predict(_image(0, square=False)), kind="classification",
                        registered=["nodule", "normal"], image_shape=(24, 32)).label == "normal"


# -- ONNX ----------------------------------------------------------------------------------------
def _onnx_classifier(path: Path) -> Path:
    """Mean intensity -> logits [0.5 - m, m - 0.5]*20 (bright = nodule), built at test time."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 2], [-20.0, 20.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [10.0, -10.0])
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "w", "b"], ["y"])],
        "clf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _onnx_segmenter(path: Path) -> Path:
    """1x1 convolution: channel 0 = 0.5 - x, channel 1 = x - 0.5 (argmax = bright pixels)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], [-1.0, 1.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, None, None])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_onnx_adapter_runs_a_user_model_on_the_cpu(tmp_path: Path) -> None:
    clf = OnnxAdapter(_onnx_classifier(tmp_path / "c.onnx").read_bytes(), "classification",
                      {"classes": ["normal", "nodule"]})
    assert clf.device in ("cpu", "cuda")
    bright = check_output(clf.predict(np.full((8, 8), 230, np.uint8)), kind="classification",
                          registered=["normal", "nodule"], image_shape=(8, 8))
    assert bright.label == "nodule" and bright.confidence is not None
    assert bright.confidence > 0.99
    seg = OnnxAdapter(_onnx_segmenter(tmp_path / "s.onnx").read_bytes(), "mask",
                      {"classes": ["background", "lesion"]})
    pred = check_output(seg.predict(_image(250)), kind="mask", registered=["lesion"],
                        image_shape=(24, 32))
    assert len(pred.objects) == 1 and pred.objects[0].box == (6.0, 4.0, 16.0, 12.0)
    with pytest.raises(InputError, match="cannot load"):
        OnnxAdapter(b"not a model", "mask", {"classes": ["background", "lesion"]})


def test_box_drafts_from_onnx_and_the_classical_segmenter(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    rows = [[6.0, 4.0, 16.0, 12.0, 0.9, 1.0], [0.0, 0.0, 40.0, 5.0, 0.8, 1.0]]
    detections = helper.make_tensor("d", TensorProto.FLOAT, [2, 6], [v for r in rows for v in r])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=detections)], "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "det.onnx")
    det = OnnxAdapter((tmp_path / "det.onnx").read_bytes(), "box",
                      {"classes": ["background", "lesion"]})
    raw = det.predict(_image(200))
    assert raw["objects"][0] == {"label": "lesion", "box": [6.0, 4.0, 16.0, 12.0],
                                 "score": pytest.approx(0.9)}
    with pytest.raises(DraftRefused, match="out of bounds"):  # the second box is 40 wide
        check_output(raw, kind="box", registered=["lesion"], image_shape=(24, 32))
    seg = ClassicalSegmenter("box", {"thresholds": {"lesion": [0.5, 1.0]}})
    pred = check_output(seg.predict(_image(200)), kind="box", registered=["lesion"],
                        image_shape=(24, 32))
    assert pred.payload() == {"objects": [{"label": "lesion", "score": 1.0,
                                           "box": [6.0, 4.0, 16.0, 12.0]}]}


def test_onnx_model_registered_and_run_as_a_job(workspace: Workspace, tmp_path: Path) -> None:
    from truthset.jobs import service as jobs

    _project(workspace, tmp_path, CLASS_SCHEMA,
             [_image(240, size=(8, 8)) * 0 + 240, _image(0, square=False)])
    path = _onnx_classifier(tmp_path / "m.onnx")
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        model = service.register_model(s, p, name="clf", version="1.0", kind="onnx",
                                       classes=["normal", "nodule"], model_file=path,
                                       blobs=workspace.blobs,
                                       config={"classes": ["normal", "nodule"]})
        assert workspace.blobs.exists(model.config["sha256"])
        job = jobs.enqueue(workspace, s, "prelabel", {"project": "p", "model": "clf"},
                           project=p, actor="boss")
    done = jobs.wait_for(workspace, job.id, timeout_s=60)
    assert done.status == "succeeded", done.error
    assert done.result["drafted"] == 2 and done.progress_done == done.progress_total == 2
    with workspace.sessions() as s:
        drafts = s.scalars(sa.select(Annotation).order_by(Annotation.item_id)).all()
        assert [(d.payload["label"], d.source, d.model_name, d.model_version) for d in drafts] \
            == [("nodule", "model", "clf", "1.0"), ("normal", "model", "clf", "1.0")]
        logged = s.scalars(sa.select(PrelabelDraft)).all()
        assert {d.job_id for d in logged} == {job.id}
        assert all(d.probabilities and d.device in ("cpu", "cuda") for d in logged)


def test_registry_refuses_bad_registrations(workspace: Workspace, tmp_path: Path) -> None:
    _project(workspace, tmp_path, MASK_SCHEMA, [_image(200)])
    cfg = {"thresholds": {"lesion": [0.5, 1.0]}}
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        with pytest.raises(InputError, match="unknown class 'tumour'"):
            service.register_model(s, p, name="m", version="1", kind="classical",
                                   classes=["tumour"], config=cfg)
        with pytest.raises(InputError, match="thresholds"):
            service.register_model(s, p, name="m", version="1", kind="classical",
                                   classes=["lesion"], config={})
        with pytest.raises(InputError, match="url"):
            service.register_model(s, p, name="m", version="1", kind="http",
                                   classes=["lesion"], config={"url": "ftp://x"})
        with pytest.raises(InputError, match=r"\.onnx file"):
            service.register_model(s, p, name="m", version="1", kind="onnx",
                                   classes=["lesion"], config={"classes": ["bg", "lesion"]})
        service.register_model(s, p, name="m", version="1", kind="classical",
                               classes=["lesion"], config=cfg)
        with pytest.raises(ConflictError):
            service.register_model(s, p, name="m", version="1", kind="classical",
                                   classes=["lesion"], config=cfg)
        assert service.get_model(s, p, "m").version == "1"
        service.retire_model(s, p, "m", "1")
    with pytest.raises(InputError, match="retired"):
        service.run_prelabel(workspace, "p", "m")


# -- remote HTTP model ----------------------------------------------------------------------------
# The model's timeout leaves room for a loaded CI machine (a 1 s timeout once failed there on the
# first, NIfTI-answering request); the slow answer stays well beyond it.
MODEL_TIMEOUT_S = 3.0
SLOW_ANSWER_S = 8.0


@pytest.fixture
def infer_server() -> Iterator[str]:
    """A real HTTP server in a thread, speaking a MONAI Label-style ``/infer/{model}``.

    What it answers depends on the image's brightest value, so one run sees every case.
    """
    app = FastAPI()

    @app.post("/infer/{model}")
    async def infer(model: str, output: str = "json", file: UploadFile = File(...),
                    params: str = Form("{}")) -> Response:
        image = read_nifti_bytes(await file.read())
        peak = round(float(image.max()))
        bright = image > 100
        if peak == 200:  # good answer as a NIfTI label map
            data = nib.Nifti1Image(bright.astype(np.int16), np.eye(4)).to_bytes()
            return Response(data, media_type="application/octet-stream")
        if peak == 201:  # good answer in JSON, MONAI Label's label + label_names
            return JSONResponse({"label": bright.astype(int).tolist(),
                                 "label_names": {"lesion": 1}})
        if peak == 202:  # too slow: well past the model's timeout, even on a loaded machine
            await asyncio.sleep(SLOW_ANSWER_S)
            return JSONResponse({"label": [], "label_names": {}})
        if peak == 203:  # malformed
            return JSONResponse(["not", "an", "answer"])
        if peak == 204:  # a class it may not draft
            return JSONResponse({"label": bright.astype(int).tolist(),
                                 "label_names": {"cyst": 1}})
        if peak == 205:  # geometry out of bounds
            return JSONResponse({"label": [[1, 0], [0, 1]], "label_names": {"lesion": 1}})
        return JSONResponse({"error": "boom"}, status_code=500)

    # The slow answer is still sleeping at teardown: cancel it rather than wait for it.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                            timeout_graceful_shutdown=0.5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def test_http_model_bad_answers_are_refused_and_the_run_goes_on(
        workspace: Workspace, tmp_path: Path, infer_server: str) -> None:
    _project(workspace, tmp_path, MASK_SCHEMA, [_image(v) for v in (200, 201, 202, 203, 204,
                                                                    205, 206)])
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        service.register_model(s, p, name="remote", version="7", kind="http",
                               classes=["lesion"], timeout_s=MODEL_TIMEOUT_S,
                               config={"url": infer_server, "model": "segmentation",
                                       "response": "json", "label_names": {"lesion": 1}})
        service.register_model(s, p, name="remote-img", version="7", kind="http",
                               classes=["lesion"], timeout_s=MODEL_TIMEOUT_S,
                               config={"url": infer_server, "model": "segmentation",
                                       "response": "image", "label_names": {"lesion": 1}})
    summary = service.run_prelabel(workspace, "p", "remote")
    # img00 is answered with a NIfTI file, which this JSON model does not expect: malformed
    assert (summary.drafted, summary.refused) == (1, 6)
    assert summary.reasons == {"timeout": 1, "malformed": 2, "class": 1, "geometry": 1,
                               "unreachable": 1}
    with workspace.sessions() as s:
        rows = s.execute(sa.select(Item.external_id, PrelabelDraft.status, PrelabelDraft.reason)
                         .join(Item, Item.id == PrelabelDraft.item_id)
                         .order_by(Item.external_id)).all()
        by_item = {Path(e).stem: (st, why) for e, st, why in rows}
        assert by_item["img00"] == ("refused", "malformed: the answer is not JSON")
        assert by_item["img01"][0] == "drafted"
        assert by_item["img02"] == ("refused", "timeout: the model did not answer within 3 s")
        assert by_item["img03"][0] == "refused" and "malformed" in by_item["img03"][1]
        assert "not a class this model is registered" in by_item["img04"][1]
        assert by_item["img05"][1].startswith("geometry:")
        assert "HTTP 500" in by_item["img06"][1]
        # refused items have no draft: they reach readers blank
        drafted_items = set(s.scalars(sa.select(Annotation.item_id)))
        assert len(drafted_items) == 1
    # the NIfTI-answering model drafts item 0 with the exact square
    image_summary = service.run_prelabel(workspace, "p", "remote-img", item_ids=[1])
    assert image_summary.drafted == 1
    with workspace.sessions() as s:
        draft = s.scalars(sa.select(Annotation).where(Annotation.model_name == "remote-img")).one()
        mask = payload_masks(draft.payload)["lesion"]
        assert mask.shape == (24, 32) and mask.sum() == 80 and mask[4:12, 6:16].all()


# -- acceptance -----------------------------------------------------------------------------------
def _read(ws: Workspace, item_id: int, payload: dict[str, Any]) -> None:
    with ws.unit("reader") as s:
        p = projects.get_project(s, "p")
        reader = s.scalars(sa.select(User).where(User.username == "reader")).one()
        record_annotation(s, p, item=s.get_one(Item, item_id), author=reader, payload=payload)


def test_acceptance_is_tracked_and_drafting_pauses_until_a_manager_resumes(
        workspace: Workspace, tmp_path: Path) -> None:
    _project(workspace, tmp_path, MASK_SCHEMA, [_image(200) for _ in range(6)])
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        service.register_model(s, p, name="thr", version="1", kind="classical",
                               classes=["lesion"], config={"thresholds": {"lesion": [0.5, 1]}})
        acceptance.set_acceptance_policy(s, p, min_acceptance=0.6, window=4, min_decisions=3)
    assert service.run_prelabel(workspace, "p", "thr", item_ids=[1, 2, 3, 4]).drafted == 4
    with workspace.sessions() as s:
        drafts = {a.item_id: a.payload for a in s.scalars(sa.select(Annotation))}
    square = payload_masks(drafts[1])["lesion"]
    from truthset.prelabel.output import encode_mask as enc

    smaller = square.copy()
    smaller[4:6] = False  # the reader trims two rows: Dice = 2*60/(80+60)
    _read(workspace, 1, drafts[1])  # accepted unchanged
    _read(workspace, 2, {"objects": [{"label": "lesion", "mask": enc(smaller)}]})  # edited
    with workspace.sessions() as s:  # recorded as each read was stored; 2 < min_decisions
        assert s.scalar(sa.select(sa.func.count()).select_from(DraftOutcome)) == 2
        assert acceptance.paused_classes(s, projects.get_project(s, "p")) == set()
    _read(workspace, 3, {"objects": []})  # rejected: 1 of 3 accepted < 60 %: paused now
    with workspace.sessions() as s:
        assert acceptance.paused_classes(s, projects.get_project(s, "p")) == {"lesion"}
    _read(workspace, 4, {"objects": [{"label": "cyst", "mask": enc(square)}]})  # rejected
    with workspace.unit("system") as s:
        p = projects.get_project(s, "p")
        assert acceptance.track(s, p) == (0, [])  # nothing missed, nothing counted twice
        report = {r.class_name: r for r in acceptance.acceptance_report(s, p)}
        lesion = report["lesion"]
        assert (lesion.accepted, lesion.edited, lesion.rejected) == (1, 1, 2)
        assert lesion.mean_dice == pytest.approx(2 * 60 / 140)
        assert lesion.mean_iou == pytest.approx(60 / 80)
        assert lesion.window_acceptance == pytest.approx(0.25) and lesion.status == "paused"
        assert acceptance.track(s, p) == (0, [])  # idempotent
    # paused: the next run drafts nothing of that class
    later = service.run_prelabel(workspace, "p", "thr", item_ids=[5, 6])
    assert (later.drafted, later.skipped) == (0, 2)
    with workspace.unit("reader") as s:
        p = projects.get_project(s, "p")
        reader = s.scalars(sa.select(User).where(User.username == "reader")).one()
        with pytest.raises(PermissionDeniedError):
            acceptance.resume_class(s, p, "lesion", manager=reader, note="please")
    with workspace.unit("boss") as s:
        p = projects.get_project(s, "p")
        boss = s.scalars(sa.select(User).where(User.username == "boss")).one()
        with pytest.raises(InputError, match="note"):
            acceptance.resume_class(s, p, "lesion", manager=boss, note=" ")
        acceptance.resume_class(s, p, "lesion", manager=boss, note="model v2 deployed")
        row = s.scalars(sa.select(ClassAutomation)).one()
        assert (row.status, row.decided_by) == ("active", "boss")
        # old outcomes no longer count against the class
        assert acceptance.evaluate_automation(s, p) == []
    with workspace.sessions() as s:  # audit events join the chain when their unit commits
        events = [e for e in audit.iter_events(s) if e["action"].startswith("prelabel.")]
        assert [e["action"] for e in events] == ["prelabel.pause", "prelabel.resume"]
        assert audit.verify(s).ok
    assert service.run_prelabel(workspace, "p", "thr", item_ids=[5, 6]).drafted == 2


def test_classification_and_box_outcomes() -> None:
    from truthset.domain.schema import SchemaKind

    assert acceptance.compare(SchemaKind.CLASSIFICATION, {"label": "a"}, {"label": "a"}) == [
        ("a", "accepted", None, None)]
    assert acceptance.compare(SchemaKind.CLASSIFICATION, {"label": "a"}, {"label": "b"}) == [
        ("a", "rejected", None, None)]
    box = {"objects": [{"label": "x", "box": [0, 0, 10, 10]}]}
    moved = {"objects": [{"label": "x", "box": [0, 0, 10, 8]}]}
    assert acceptance.compare(SchemaKind.BOX, box, box) == [("x", "accepted", 1.0, 1.0)]
    (_, outcome, f1, mean_iou), = acceptance.compare(SchemaKind.BOX, box, moved)
    assert outcome == "edited" and f1 == 1.0 and mean_iou == pytest.approx(0.8)
    with pytest.raises(InputError):
        acceptance.AcceptancePolicy(min_acceptance=2)
