"""Geometric payload objects (quality.shapes): the COCO RLE codec against pycocotools, the
rasteriser against matplotlib, both object spellings, and refusals naming the field; the
pure geometric decisions of engine.decide."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from truthset.domain.errors import InputError
from truthset.domain.policy import parse_policy
from truthset.domain.schema import parse_schema
from truthset.quality.payloads import encode_mask
from truthset.quality.shapes import (
    ImageBounds,
    Shape,
    decode_rle,
    encode_rle,
    parse_objects,
    rasterise,
)
from truthset.workflow.engine import ItemState, ReviewOutcome, decide

masks = arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=150, deadline=None)
@given(masks)
def test_rle_round_trips_and_matches_pycocotools(mask: np.ndarray) -> None:
    coco = pytest.importorskip("pycocotools.mask")
    rle = encode_rle(mask)
    assert np.array_equal(decode_rle(rle), mask)
    rows, cols = mask.shape
    assert rle["size"] == [rows, cols] and sum(rle["counts"]) == rows * cols
    theirs = coco.decode(coco.frPyObjects(rle, rows, cols)).astype(bool)
    assert np.array_equal(theirs, mask)
    compressed = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert np.array_equal(coco.decode(compressed).astype(bool), decode_rle(rle))


def test_rasterised_polygons_and_boxes_match_pixel_centres() -> None:
    path_mod = pytest.importorskip("matplotlib.path")
    points = ((3.2, 2.0), (17.5, 4.1), (12.0, 15.7), (4.4, 11.0))
    shape = Shape("nodule", "polygon", 0, (3.2, 2.0, 17.5, 15.7), 0, points=points)
    got = rasterise(shape, 20, 24)
    yy, xx = np.mgrid[0:20, 0:24]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    truth = path_mod.Path(points).contains_points(centres).reshape(20, 24)
    assert np.array_equal(got, truth) and got.sum() > 50
    square = rasterise(Shape("nodule", "box", 0, (2.0, 3.0, 7.0, 5.0), 0), 10, 10)
    expected = np.zeros((10, 10), dtype=bool)
    expected[3:5, 2:7] = True
    assert np.array_equal(square, expected)


def test_both_spellings_read_alike() -> None:
    pixels = np.zeros((6, 8), dtype=bool)
    pixels[1:4, 2:5] = True
    web = parse_objects({"objects": [
        {"type": "box", "label": "a", "frame": 1, "bbox": [1, 2, 3, 4]},
        {"type": "polygon", "label": "a", "points": [0, 0, 4, 0, 4, 3]},
        {"type": "mask", "label": "b", "rle": encode_rle(pixels)}]})
    stored = parse_objects({"objects": [
        {"label": "a", "slice": 1, "box": [1, 2, 4, 6]},
        {"label": "a", "points": [[0, 0], [4, 0], [4, 3]]},
        {"label": "b", "mask": encode_mask(pixels)}]})
    for a, b in zip(web, stored, strict=True):
        assert (a.kind, a.label, a.frame, a.box, a.points) == (b.kind, b.label, b.frame, b.box,
                                                               b.points)
    assert np.array_equal(web[2].mask, stored[2].mask) and web[2].box == (2.0, 1.0, 5.0, 4.0)
    volume = np.zeros((3, 6, 8), dtype=bool)
    volume[2, 0, 0] = True
    (plane,) = parse_objects({"objects": [{"label": "b", "mask": encode_mask(volume)}]})
    assert plane.frame == 2 and plane.mask is not None and plane.mask.sum() == 1


@pytest.mark.parametrize(("obj", "field", "words"), [
    ({"type": "box", "label": "a", "bbox": [1, 2, 3]}, "objects.0.bbox", "x, y, width"),
    ({"type": "box", "label": "a", "bbox": [1, 2, 3, float("nan")]}, "objects.0.bbox.3",
     "finite"),
    ({"type": "box", "label": "a", "bbox": [50, 2, 20, 3]}, "objects.0.bbox", "outside"),
    ({"type": "box", "label": "a", "bbox": [1, 2, 3, 4], "frame": 2}, "objects.0.frame",
     "frame 2"),
    ({"type": "box", "label": "a", "bbox": [1, 2, 3, 4], "frame": -1}, "objects.0.frame",
     "non-negative"),
    ({"label": "a", "box": [5, 2, 1, 4]}, "objects.0.box", "beyond"),
    ({"type": "polygon", "label": "a", "points": [1, 2, 3, 4]}, "objects.0.points", "three"),
    ({"type": "polygon", "label": "a", "points": [1, 2, 3, 4, 5]}, "objects.0.points", "odd"),
    ({"type": "mask", "label": "a", "rle": {"size": [4, 4], "counts": "abc"}},
     "objects.0.rle.counts", "uncompressed"),
    ({"type": "mask", "label": "a", "rle": {"size": [4, 4], "counts": [3, -1, 14]}},
     "objects.0.rle.counts", "non-negative"),
    ({"type": "mask", "label": "a", "rle": {"size": [0, 4], "counts": []}},
     "objects.0.rle.size", "positive"),
    ({"type": "mask", "label": "a", "rle": {"size": [4, 4], "counts": [16]}}, "objects.0.rle",
     "does not fit"),
    ({"label": "a", "mask": {"shape": [6, 8], "runs": [40, 20]}}, "objects.0.mask", "past"),
    ({"label": "a"}, "objects.0", "needs bbox"),
    ({"type": "circle", "label": "a"}, "objects.0.type", "unknown object type"),
    ({"type": "box", "bbox": [1, 1, 1, 1]}, "objects.0.label", "label"),
])
def test_malformed_objects_are_refused_naming_the_field(obj: dict, field: str,
                                                        words: str) -> None:
    with pytest.raises(InputError, match=words) as err:
        parse_objects({"objects": [obj]}, bounds=ImageBounds(width=8, height=6, frames=2))
    assert err.value.field == field


def test_image_bounds_from_media() -> None:
    assert ImageBounds.from_media([{"width": 64, "height": 48}]) == ImageBounds(64, 48, 1)
    dicom = [{"columns": 128, "rows": 96, "frames": 1}, {"columns": 128, "rows": 96}]
    assert ImageBounds.from_media(dicom) == ImageBounds(128, 96, 2)
    assert ImageBounds.from_media([{"media_type": "text/plain"}]) is None


# -- the pure decisions ----------------------------------------------------------------------
BOX = parse_schema("name: l\nkind: box\nclasses:\n  - {name: nodule, risk: high}\n"
                   "  - {name: cyst, risk: low}\n")
RISKS = {c.name: c.risk for c in BOX.classes}


def _objs(*boxes: tuple[str, float, float]) -> dict:
    return {"objects": [{"type": "box", "label": c, "bbox": [x, y, 10, 10]} for c, x, y in boxes]}


def test_decide_geometric_consensus_and_by_risk_override() -> None:
    policy = parse_policy("workflow: consensus\nk: 2\ntarget_f1: 0.9\n"
                          "by_risk: {high: {k: 3, iou_threshold: 0.7}}\n")
    low = ItemState(reads=(("a", ""), ("b", "")),
                    payloads=(_objs(("cyst", 0, 0)), _objs(("cyst", 1, 0))))
    made = decide(policy, RISKS, low, schema=BOX)
    assert made.action == "final" and made.method == "wbf" and made.agreement == 1.0
    assert made.payload is not None and made.payload["objects"][0]["support"] == 2
    # A nodule (high risk) asks three readers, and its IoU threshold is 0.7: boxes shifted by
    # two pixels (IoU 0.67) are two findings.
    high = ItemState(reads=(("a", ""), ("b", "")),
                     payloads=(_objs(("nodule", 0, 0)), _objs(("nodule", 2, 0))))
    assert decide(policy, RISKS, high, schema=BOX).n == 1
    three = ItemState(reads=(*high.reads, ("c", "")),
                      payloads=(*high.payloads, _objs(("nodule", 0, 0))))
    step = decide(policy, RISKS, three, schema=BOX)
    assert step.action == "adjudicate" and step.parameters["iou_threshold"] == 0.7
    assert step.reason == ("mean matched F1 0.33 under target 0.90 (IoU >= 0.70); two of three "
                           "readers saw finding 1 (nodule); one of three readers saw finding 2 "
                           "(nodule)")


def test_decide_tiered_review_of_objects() -> None:
    policy = parse_policy("workflow: tiered\n")
    first = _objs(("cyst", 5, 5))
    state = ItemState(reads=(("a", ""),), payloads=(first,))
    assert decide(policy, RISKS, state, schema=BOX).action == "review"
    fixed = _objs(("nodule", 5, 5))
    corrected = ItemState(reads=state.reads, payloads=state.payloads,
                          review=ReviewOutcome("rev", None, payload=fixed))
    out = decide(policy, RISKS, corrected, schema=BOX)
    assert (out.action, out.payload, out.reason) == ("final", fixed, "review corrected")
    escalated = ItemState(reads=state.reads, payloads=state.payloads,
                          review=ReviewOutcome("rev", None, escalated=True))
    assert decide(policy, RISKS, escalated, schema=BOX).action == "adjudicate"
    judged = ItemState(reads=state.reads, payloads=state.payloads,
                       adjudication_payload={**fixed, "reason": "seen"})
    out = decide(policy, RISKS, judged, schema=BOX)
    assert (out.action, out.payload, out.method) == ("final", fixed, "adjudication")
