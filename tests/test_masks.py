"""Mask metrics against hand-computed values, SimpleITK, medpy and a KD-tree."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from medpy.metric import binary as medpy_binary
from scipy import ndimage
from scipy.spatial import cKDTree

from truthset.domain.errors import InputError
from truthset.quality.masks import (
    assd,
    dice,
    dice_per_label,
    directed_surface_distances,
    hausdorff,
    hd95,
    iou,
    iou_per_label,
    mask_metrics,
    mask_metrics_per_label,
    surface_distances,
)


def ellipsoid(
    shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]
) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1


def sitk_image(mask: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK is x, y, z
    return img


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """Non-convex random structures: smoothed noise thresholded."""
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    return noise > np.quantile(noise, 1.0 - fill)


# ----------------------------------------------------------------------- hand-computed


def test_dice_iou_hand_computed() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # 4 pixels
    b[1:3, 0:3] = True  # 6 pixels, 2 shared with a
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 6))
    assert iou(a, b) == pytest.approx(2 / 8)


def test_hausdorff_single_points_anisotropic() -> None:
    a = np.zeros((5, 6), bool)
    b = np.zeros((5, 6), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hausdorff(a, b) == pytest.approx(5.0)
    assert hausdorff(a, b, spacing=(2.0, 1.0)) == pytest.approx(np.sqrt(6.0**2 + 4.0**2))
    assert assd(a, b, spacing=(2.0, 1.0)) == pytest.approx(np.sqrt(52.0))


def test_nested_squares_distances() -> None:
    # a: 7x7 square, b: the 3x3 square at its centre. Surface of a is its outer ring (24
    # pixels), surface of b its ring of 8 pixels (the centre is interior).
    a = np.zeros((9, 9), bool)
    b = np.zeros((9, 9), bool)
    a[1:8, 1:8] = True
    b[3:6, 3:6] = True
    res = surface_distances(a, b)
    assert res.n_surface_a == 24 and res.n_surface_b == 8
    # every b-surface pixel is 2 from a's ring; a-ring pixels are 2 (edge middles) up to
    # sqrt(8) (corners) from b's ring.
    d_ab, d_ba = directed_surface_distances(a, b)
    assert np.allclose(d_ba, 2.0)
    assert d_ab.max() == pytest.approx(np.sqrt(8.0))
    assert res.hausdorff == pytest.approx(np.sqrt(8.0))


# ----------------------------------------------------------------------- empty masks


def test_both_empty() -> None:
    z = np.zeros((6, 7, 5), bool)
    m = mask_metrics(z, z, spacing=(1.0, 2.0, 3.0))
    assert m.dice == 1.0 and m.iou == 1.0
    assert m.hausdorff == 0.0 and m.hd95 == 0.0 and m.assd == 0.0
    assert m.reason == "both masks are empty"


@pytest.mark.parametrize("which", ["a", "b"])
def test_one_empty(which: str) -> None:
    z = np.zeros((6, 7), bool)
    f = z.copy()
    f[2:4, 2:5] = True
    a, b = (z, f) if which == "a" else (f, z)
    m = mask_metrics(a, b)
    assert m.dice == 0.0 and m.iou == 0.0
    assert np.isinf(m.hausdorff) and np.isinf(m.hd95) and np.isinf(m.assd)
    assert m.reason is not None and f"mask {which} is empty" in m.reason
    s = surface_distances(a, b)
    assert (s.n_surface_a, s.n_surface_b) == ((0, 6) if which == "a" else (6, 0))
    with pytest.raises(InputError):
        directed_surface_distances(a, b)


# ----------------------------------------------------------------------- validation


def test_shape_mismatch_names_both() -> None:
    with pytest.raises(InputError) as err:
        dice(np.zeros((4, 5)), np.zeros((4, 6)))
    assert "(4, 5)" in str(err.value) and "(4, 6)" in str(err.value)


def test_spacing_mismatch_names_both() -> None:
    a = np.ones((4, 5), bool)
    with pytest.raises(InputError) as err:
        hausdorff(a, a, spacing=(1.0, 0.5), spacing_b=(1.0, 0.7))
    assert "(1.0, 0.5)" in str(err.value) and "(1.0, 0.7)" in str(err.value)
    with pytest.raises(InputError):
        hausdorff(a, a, spacing=(1.0, 0.5, 2.0))
    with pytest.raises(InputError):
        hausdorff(a, a, spacing=(1.0, -1.0))
    # equal spacings are accepted
    assert hausdorff(a, a, spacing=(1.0, 0.5), spacing_b=[1.0, 0.5]) == 0.0


def test_bad_hd95_method() -> None:
    a = np.ones((3, 3), bool)
    with pytest.raises(InputError):
        hd95(a, a, method="median")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- SimpleITK


SPACINGS_3D = [(3.0, 0.7, 0.9), (1.0, 1.0, 1.0), (0.5, 2.5, 1.2)]


@pytest.mark.parametrize("spacing", SPACINGS_3D)
def test_hausdorff_and_overlap_vs_simpleitk_3d(spacing: tuple[float, float, float]) -> None:
    shape = (30, 60, 50)
    a = ellipsoid(shape, (14, 30, 25), (8, 20, 15))
    b = ellipsoid(shape, (16, 27, 27), (7, 22, 12))
    ia, ib = sitk_image(a, spacing), sitk_image(b, spacing)
    hd = sitk.HausdorffDistanceImageFilter()
    hd.Execute(ia, ib)
    ov = sitk.LabelOverlapMeasuresImageFilter()
    ov.Execute(ia, ib)
    m = mask_metrics(a, b, spacing)
    # ITK measures between voxel sets; for convex objects that equals the surface distance.
    assert m.hausdorff == pytest.approx(hd.GetHausdorffDistance(), rel=1e-9)
    assert m.dice == pytest.approx(ov.GetDiceCoefficient(), rel=1e-12)
    assert m.iou == pytest.approx(ov.GetJaccardCoefficient(), rel=1e-12)


def test_hausdorff_vs_simpleitk_2d() -> None:
    shape = (80, 90)
    a = ellipsoid(shape, (40, 40), (20, 30))
    b = ellipsoid(shape, (45, 50), (25, 20))
    spacing = (0.6, 1.4)
    hd = sitk.HausdorffDistanceImageFilter()
    hd.Execute(sitk_image(a, spacing), sitk_image(b, spacing))
    assert hausdorff(a, b, spacing) == pytest.approx(hd.GetHausdorffDistance(), rel=1e-9)


def test_per_label_overlap_vs_simpleitk() -> None:
    rng = np.random.default_rng(3)
    shape = (12, 40, 40)
    a = np.zeros(shape, np.uint8)
    b = np.zeros(shape, np.uint8)
    a[ellipsoid(shape, (6, 20, 20), (5, 15, 15))] = 1
    a[ellipsoid(shape, (6, 20, 20), (3, 6, 6))] = 2
    b[ellipsoid(shape, (6, 22, 19), (5, 14, 16))] = 1
    b[ellipsoid(shape, (6, 21, 20), (3, 7, 5))] = 2
    b[rng.random(shape) < 0.01] = 3  # a label only b has
    ov = sitk.LabelOverlapMeasuresImageFilter()
    ov.Execute(sitk.GetImageFromArray(a), sitk.GetImageFromArray(b))
    dices = dice_per_label(a, b)
    ious = iou_per_label(a, b)
    assert sorted(dices) == [1, 2, 3]
    for lab in (1, 2, 3):
        assert dices[lab] == pytest.approx(ov.GetDiceCoefficient(lab), rel=1e-12)
        assert ious[lab] == pytest.approx(ov.GetJaccardCoefficient(lab), rel=1e-12)
    per = mask_metrics_per_label(a, b, spacing=(2.0, 0.8, 0.8), labels=[1, 2, 4])
    assert per[4].dice == 1.0 and per[4].hausdorff == 0.0  # absent from both
    assert per[1].dice == pytest.approx(dices[1])


# ----------------------------------------------------------------------- medpy and KD-tree


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_metrics_vs_medpy_nonconvex(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (16, 48, 40)
    a = random_blobs(rng, shape, 0.15)
    b = random_blobs(rng, shape, 0.12)
    spacing = (2.5, 0.8, 0.6)
    res = surface_distances(a, b, spacing)
    assert res.hausdorff == pytest.approx(medpy_binary.hd(a, b, spacing), rel=1e-12)
    assert res.hd95 == pytest.approx(medpy_binary.hd95(a, b, spacing), rel=1e-12)
    assert res.assd == pytest.approx(medpy_binary.assd(a, b, spacing), rel=1e-12)


def test_touching_image_border_vs_medpy() -> None:
    shape = (30, 30)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[0:10, 0:30] = True  # touches three borders
    b[5:30, 20:30] = True
    spacing = (1.0, 2.0)
    assert hausdorff(a, b, spacing) == pytest.approx(medpy_binary.hd(a, b, spacing))
    assert hd95(a, b, spacing) == pytest.approx(medpy_binary.hd95(a, b, spacing))
    assert assd(a, b, spacing) == pytest.approx(medpy_binary.assd(a, b, spacing))


def _surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    eroded = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1))
    return np.argwhere(mask & ~eroded) * np.asarray(spacing)


def test_hd95_both_definitions_vs_kdtree() -> None:
    rng = np.random.default_rng(7)
    shape = (20, 40, 36)
    a = random_blobs(rng, shape, 0.2)
    b = random_blobs(rng, shape, 0.1)
    spacing = (3.0, 0.75, 0.75)
    pa, pb = _surface_points(a, spacing), _surface_points(b, spacing)
    d_ab, _ = cKDTree(pb).query(pa)
    d_ba, _ = cKDTree(pa).query(pb)
    pooled = np.concatenate([d_ab, d_ba])
    assert hd95(a, b, spacing) == pytest.approx(np.percentile(pooled, 95), rel=1e-9)
    monai_style = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert hd95(a, b, spacing, method="max_directed") == pytest.approx(monai_style, rel=1e-9)
    assert hausdorff(a, b, spacing) == pytest.approx(pooled.max(), rel=1e-9)


def test_cropping_does_not_change_distances() -> None:
    small_a = ellipsoid((20, 20, 20), (10, 10, 10), (6, 8, 5))
    small_b = ellipsoid((20, 20, 20), (9, 11, 10), (7, 6, 6))
    big_a = np.zeros((60, 70, 80), bool)
    big_b = np.zeros((60, 70, 80), bool)
    big_a[30:50, 10:30, 50:70] = small_a
    big_b[30:50, 10:30, 50:70] = small_b
    sp = (1.5, 0.5, 0.9)
    assert surface_distances(big_a, big_b, sp) == surface_distances(small_a, small_b, sp)


# ----------------------------------------------------------------------- properties


mask_pairs = st.integers(min_value=4, max_value=9).flatmap(
    lambda n: st.tuples(
        arrays(np.bool_, (n, n + 1)),
        arrays(np.bool_, (n, n + 1)),
    )
)
spacings = st.tuples(
    st.floats(min_value=0.2, max_value=5.0), st.floats(min_value=0.2, max_value=5.0)
)


@settings(max_examples=60, deadline=None)
@given(pair=mask_pairs, spacing=spacings)
def test_metrics_are_symmetric(
    pair: tuple[np.ndarray, np.ndarray], spacing: tuple[float, float]
) -> None:
    a, b = pair
    ab = surface_distances(a, b, spacing)
    ba = surface_distances(b, a, spacing)
    assert dice(a, b) == dice(b, a)
    assert ab.hausdorff == ba.hausdorff
    assert ab.hd95 == pytest.approx(ba.hd95) or (np.isinf(ab.hd95) and np.isinf(ba.hd95))
    assert ab.assd == pytest.approx(ba.assd) or (np.isinf(ab.assd) and np.isinf(ba.assd))
    d, j = dice(a, b), iou(a, b)
    assert 0.0 <= j <= d <= 1.0
    assert d == pytest.approx(2 * j / (1 + j))
    if a.any() and b.any():
        assert ab.assd <= ab.hausdorff + 1e-12
        assert ab.hd95 <= ab.hausdorff + 1e-12


@settings(max_examples=40, deadline=None)
@given(a=arrays(np.bool_, (6, 7)), spacing=spacings)
def test_identical_masks_have_zero_distance(a: np.ndarray, spacing: tuple[float, float]) -> None:
    m = mask_metrics(a, a.copy(), spacing)
    assert m.dice == 1.0 and m.iou == 1.0
    assert m.hausdorff == 0.0 and m.hd95 == 0.0 and m.assd == 0.0
