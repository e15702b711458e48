"""Box IoU, matched F1 and box fusion: hand values, brute force, ensemble-boxes, properties."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from ensemble_boxes import weighted_boxes_fusion
from hypothesis import given, settings
from hypothesis import strategies as st

from truthset.domain.errors import InputError
from truthset.quality.boxes import box_iou_matrix, fuse_box_table, fuse_boxes, matched_f1

# ----------------------------------------------------------------------- IoU


def test_iou_hand_computed() -> None:
    a = [[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4]]
    b = [[1, 1, 3, 3], [1, 0, 2, 1], [0, 0, 2, 2]]
    m = box_iou_matrix(a, b)
    assert m[0, 0] == pytest.approx(1 / 7)  # overlap 1, union 4 + 4 - 1
    assert m[1, 1] == 0.0  # touching edges
    assert m[0, 2] == 1.0  # identical
    assert m[2, 0] == pytest.approx(4 / 16)  # contained
    assert m[1, 2] == pytest.approx(1 / 4)
    assert m.shape == (3, 3)


def test_iou_3d_and_degenerate() -> None:
    m = box_iou_matrix([[0, 0, 0, 2, 2, 2]], [[1, 1, 1, 3, 3, 3]])
    assert m[0, 0] == pytest.approx(1 / 15)
    assert box_iou_matrix([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0
    assert box_iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_iou_bad_boxes() -> None:
    with pytest.raises(InputError):
        box_iou_matrix([[2, 0, 1, 1]], [[0, 0, 1, 1]])
    with pytest.raises(InputError):
        box_iou_matrix([[0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(InputError):
        box_iou_matrix([[0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]])


# ----------------------------------------------------------------------- matched F1


def greedy_match_count(pred: np.ndarray, ref: np.ndarray, thr: float) -> int:
    """Highest-IoU-first greedy matching, as many detection scripts do it."""
    iou = box_iou_matrix(pred, ref)
    used_p: set[int] = set()
    used_r: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] >= thr and i not in used_p and j not in used_r:
            used_p.add(int(i))
            used_r.add(int(j))
    return len(used_p)


def test_hungarian_beats_greedy() -> None:
    ref = np.array([[0, 0, 10, 10], [3, 0, 13, 10]], float)
    pred = np.array([[1, 0, 11, 10], [-2, 0, 8, 10]], float)
    # IoUs: A-ref1 0.818, A-ref2 0.667, B-ref1 0.667, B-ref2 0.333
    assert greedy_match_count(pred, ref, 0.5) == 1
    res = matched_f1(pred, ref, 0.5)
    assert res.tp == 2 and res.fp == 0 and res.fn == 0
    assert res.f1 == 1.0
    assert [(i, j) for i, j, _ in res.matches] == [(0, 1), (1, 0)]
    assert res.matches[0][2] == pytest.approx(80 / 120)


def test_matched_f1_counts_and_threshold() -> None:
    ref = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]], float)
    pred = np.array([[0, 0, 2, 1], [5.5, 5, 6.5, 6], [20, 20, 21, 21]], float)
    res = matched_f1(pred, ref, 0.5)  # IoU exactly 0.5 counts; 1/3 does not
    assert (res.tp, res.fp, res.fn) == (1, 2, 2)
    assert res.precision == pytest.approx(1 / 3) and res.recall == pytest.approx(1 / 3)
    assert res.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    low = matched_f1(pred, ref, 0.3)
    assert low.tp == 2


def test_matched_f1_labels_and_empty() -> None:
    box = [[0, 0, 1, 1]]
    assert matched_f1(box, box, pred_labels=["a"], ref_labels=["b"]).tp == 0
    assert matched_f1(box, box, pred_labels=["a"], ref_labels=["a"]).tp == 1
    both = matched_f1(np.zeros((0, 4)), np.zeros((0, 4)))
    assert (both.precision, both.recall, both.f1) == (1.0, 1.0, 1.0)
    miss = matched_f1(np.zeros((0, 4)), box)
    assert (miss.precision, miss.recall, miss.f1) == (0.0, 0.0, 0.0)
    extra = matched_f1(box, np.zeros((0, 4)))
    assert (extra.precision, extra.recall, extra.fp) == (0.0, 0.0, 1)
    with pytest.raises(InputError):
        matched_f1(box, box, pred_labels=["a"])
    with pytest.raises(InputError):
        matched_f1(box, box, iou_threshold=0.0)


def brute_force_max_matches(pred: np.ndarray, ref: np.ndarray, thr: float) -> tuple[int, float]:
    iou = box_iou_matrix(pred, ref)
    n, m = iou.shape
    best = (0, 0.0)
    small, large = (n, m) if n <= m else (m, n)
    for perm in itertools.permutations(range(large), small):
        pairs = [(i, perm[i]) if n <= m else (perm[i], i) for i in range(small)]
        vals = [iou[i, j] for i, j in pairs if iou[i, j] >= thr]
        cand = (len(vals), float(sum(vals)))
        if cand[0] > best[0] or (cand[0] == best[0] and cand[1] > best[1] + 1e-12):
            best = cand
    return best


box_strategy = st.tuples(
    st.integers(0, 8), st.integers(0, 8), st.integers(1, 5), st.integers(1, 5)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=80, deadline=None)
@given(
    pred=st.lists(box_strategy, min_size=0, max_size=4),
    ref=st.lists(box_strategy, min_size=0, max_size=4),
    thr=st.sampled_from([0.1, 0.3, 0.5]),
)
def test_matching_is_optimal_vs_brute_force(
    pred: list[list[int]], ref: list[list[int]], thr: float
) -> None:
    p = np.asarray(pred, float).reshape(-1, 4)
    r = np.asarray(ref, float).reshape(-1, 4)
    res = matched_f1(p, r, thr)
    count, total = brute_force_max_matches(p, r, thr)
    assert res.tp == count
    assert sum(m[2] for m in res.matches) == pytest.approx(total)
    if len(p) and len(r):
        assert res.tp >= greedy_match_count(p, r, thr)


# ----------------------------------------------------------------------- fusion


def test_identical_boxes_fuse_to_that_box() -> None:
    box = np.array([[10.0, 20.0, 30.0, 45.0]])
    found = fuse_boxes({f"r{i}": box for i in range(5)})
    assert len(found) == 1
    f = found[0]
    assert f.box == pytest.approx((10.0, 20.0, 30.0, 45.0))
    assert f.n_readers == 5 and f.n_readers_total == 5 and f.support == 1.0
    assert f.readers == ("r0", "r1", "r2", "r3", "r4")
    assert f.mean_confidence is None


def test_one_of_five_vs_five_of_five() -> None:
    common = np.array([[0.0, 0.0, 10.0, 10.0]])
    rare = np.array([[50.0, 50.0, 60.0, 60.0]])
    boxes = {f"r{i}": common + i * 0.1 for i in range(5)}
    boxes["r3"] = np.vstack([boxes["r3"], rare])
    found = fuse_boxes(boxes)
    assert [(f.n_readers, f.n_readers_total) for f in found] == [(5, 5), (1, 5)]
    assert found[0].support == 1.0 and found[1].support == pytest.approx(0.2)
    assert found[1].readers == ("r3",)
    assert found[0].box == pytest.approx((0.2, 0.2, 10.2, 10.2))
    # a reader who read the image but marked nothing still counts
    found = fuse_boxes({"a": rare, "b": np.zeros((0, 4))})
    assert found[0].n_readers_total == 2 and found[0].support == 0.5


def test_reader_contributes_at_most_one_box_per_finding() -> None:
    boxes = {
        "a": np.array([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], float),
        "b": np.array([[0.2, 0, 10.2, 10]], float),
    }
    found = fuse_boxes(boxes)
    assert sorted(f.n_readers for f in found) == [1, 2]
    for f in found:
        assert len({r for r, _ in f.members}) == len(f.members)


def test_classes_are_fused_separately() -> None:
    box = np.array([[0, 0, 10, 10]], float)
    found = fuse_boxes({"a": box, "b": box}, labels_by_reader={"a": ["nodule"], "b": ["mass"]})
    assert sorted(str(f.label) for f in found) == ["mass", "nodule"]
    assert all(f.n_readers == 1 for f in found)


def test_weighted_coordinates() -> None:
    found = fuse_boxes(
        {"a": [[0, 0, 10, 10]], "b": [[1, 0, 11, 10]]},
        scores_by_reader={"a": [0.9], "b": [0.3]},
        reader_weights={"a": 1.0, "b": 2.0},
    )
    (f,) = found
    assert f.box[0] == pytest.approx((0.9 * 0 + 0.6 * 1) / 1.5)
    assert f.mean_confidence == pytest.approx(0.6)


@pytest.mark.parametrize("seed", range(5))
def test_coordinates_match_ensemble_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_readers = 4
    centres = [(0.2, 0.2), (0.7, 0.3), (0.4, 0.75)]
    boxes_list, scores_list, labels_list = [], [], []
    for _ in range(n_readers):
        rows, labs = [], []
        for k, (cx, cy) in enumerate(centres):
            if rng.random() < 0.25:
                continue  # this reader missed it
            w, h = 0.15 + rng.normal(0, 0.01), 0.12 + rng.normal(0, 0.01)
            x, y = cx + rng.normal(0, 0.01), cy + rng.normal(0, 0.01)
            rows.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2])
            labs.append(k % 2)
        boxes_list.append(np.asarray(rows).reshape(-1, 4))
        scores_list.append(rng.uniform(0.2, 1.0, len(rows)))
        labels_list.append(labs)
    weights = rng.uniform(0.5, 2.0, n_readers)
    ref_boxes, _, ref_labels = weighted_boxes_fusion(
        boxes_list, scores_list, labels_list, weights=list(weights), iou_thr=0.55
    )
    names = [f"r{i}" for i in range(n_readers)]
    found = fuse_boxes(
        dict(zip(names, boxes_list, strict=True)),
        0.55,
        labels_by_reader=dict(zip(names, labels_list, strict=True)),
        scores_by_reader=dict(zip(names, scores_list, strict=True)),
        reader_weights=dict(zip(names, weights, strict=True)),
    )
    ours = sorted((int(f.label), *f.box) for f in found)  # type: ignore[call-overload]
    theirs = sorted((int(lab), *b) for lab, b in zip(ref_labels, ref_boxes, strict=True))
    assert len(ours) == len(theirs)
    assert np.allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6)


reader_boxes = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(2, 12), st.integers(2, 12)),
    min_size=0,
    max_size=4,
).map(lambda rows: [[x, y, x + w, y + h] for x, y, w, h in rows])


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(reader_boxes, min_size=1, max_size=5),
    perm_seed=st.integers(0, 10_000),
)
def test_fusion_permutation_invariance(data: list[list[list[int]]], perm_seed: int) -> None:
    rng = np.random.default_rng(perm_seed)
    readers = {f"r{i}": np.asarray(b, float).reshape(-1, 4) for i, b in enumerate(data)}
    shuffled = {}
    for name in rng.permutation(list(readers)):
        arr = readers[str(name)]
        shuffled[str(name)] = arr[rng.permutation(len(arr))]
    a = fuse_boxes(readers)
    b = fuse_boxes(shuffled)

    def canon(found: list) -> list:  # type: ignore[type-arg]
        return sorted((f.readers, tuple(round(v, 9) for v in f.box)) for f in found)

    assert canon(a) == canon(b)
    assert sum(f.n_readers for f in a) == sum(len(v) for v in readers.values())


# ----------------------------------------------------------------------- table interface


def test_fuse_box_table() -> None:
    table = pd.DataFrame(
        {
            "item": ["img1"] * 4 + ["img2"] * 2,
            "annotator": ["ann", "bob", "cat", "dan", "ann", "bob"],
            "label": ["nodule", "nodule", "nodule", "", "mass", "mass"],
            "x0": ["10", "11", "60", "", "0", "0.5"],
            "y0": ["10", "10", "60", "", "0", "0"],
            "x1": ["20", "21", "70", "", "5", "5.5"],
            "y1": ["20", "20", "70", "", "5", "5"],
            "score": ["0.9", "0.5", "0.7", "", "1", ""],
        }
    )
    out = fuse_box_table(table)
    assert list(out.columns[:7]) == ["item", "finding", "label", "x0", "y0", "x1", "y1"]
    img1 = out[out["item"] == "img1"]
    assert img1["n_readers"].tolist() == [2, 1]
    assert img1["n_readers_total"].tolist() == [4, 4]  # dan read img1 and found nothing
    assert img1["readers"].tolist() == ["ann;bob", "cat"]
    assert img1["x0"].iloc[0] == pytest.approx((0.9 * 10 + 0.5 * 11) / 1.4)
    assert img1["mean_score"].iloc[0] == pytest.approx(0.7)
    img2 = out[out["item"] == "img2"]
    assert img2["support"].tolist() == [1.0]
    wider = fuse_box_table(table, annotators=["ann", "bob", "cat", "dan", "eve"])
    assert set(wider["n_readers_total"]) == {5}


def test_fuse_box_table_errors_name_row_and_field() -> None:
    table = pd.DataFrame(
        {
            "item": ["a", "a"],
            "annotator": ["x", "y"],
            "label": ["n", "n"],
            "x0": ["1", "oops"],
            "y0": ["1", "1"],
            "x1": ["2", "2"],
            "y1": ["2", "2"],
        }
    )
    with pytest.raises(InputError) as err:
        fuse_box_table(table, source="boxes.csv")
    assert err.value.location == "row 2" and err.value.field == "x0"
    assert err.value.source == "boxes.csv"
    with pytest.raises(InputError) as err:
        fuse_box_table(table.drop(columns=["y1"]))
    assert err.value.field == "y1"
    table.loc[1, "x0"] = "5"
    with pytest.raises(InputError) as err:
        fuse_box_table(table)
    assert err.value.location == "row 2"
