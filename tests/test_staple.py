"""STAPLE and voxelwise votes against SimpleITK, degenerate inputs, properties."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from truthset.cli.main import app
from truthset.domain.errors import InputError
from truthset.quality.staple import (
    STAPLE,
    MultiLabelSTAPLE,
    majority_vote_labels,
    majority_vote_mask,
    vote_fraction,
)

runner = CliRunner()


def ellipsoid(
    shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]
) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1


def perturbed_readers(
    rng: np.random.Generator, shape: tuple[int, ...], n: int, noise: float = 0.0
) -> list[np.ndarray]:
    """Each reader: the same ellipsoid, shifted and resized a little, plus optional noise."""
    centre = tuple(s / 2 for s in shape)
    radii = tuple(s / 4 for s in shape)
    out = []
    for _ in range(n):
        c = tuple(x + rng.normal(0, 1.0) for x in centre)
        r = tuple(x * (1 + rng.normal(0, 0.08)) for x in radii)
        m = ellipsoid(shape, c, r)
        if noise:
            m ^= rng.random(shape) < noise
        out.append(m)
    return out


def sitk_staple(
    masks: list[np.ndarray], **options: float
) -> tuple[np.ndarray, sitk.STAPLEImageFilter]:
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    for key, value in options.items():
        getattr(f, f"Set{key}")(value)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return sitk.GetArrayFromImage(out), f


def assert_matches_sitk(masks: list[np.ndarray], **options: float) -> None:
    prob, f = sitk_staple(masks, **options)
    res = STAPLE().fit(masks) if not options else STAPLE(prior=options["prior"]).fit(masks)
    assert np.abs(res.probability - prob).max() < 1e-4
    assert np.allclose(res.sensitivity, f.GetSensitivity(), atol=1e-6)
    assert np.allclose(res.specificity, f.GetSpecificity(), atol=1e-6)
    assert res.converged
    assert res.n_iter == f.GetElapsedIterations() + 1
    clear = np.abs(prob - 0.5) > 1e-4
    assert np.array_equal(res.consensus[clear], (prob > 0.5)[clear])


# ----------------------------------------------------------------------- binary vs SimpleITK


def test_binary_random_2d_vs_simpleitk() -> None:
    rng = np.random.default_rng(0)
    truth = ellipsoid((64, 64), (32, 30), (15, 20))
    masks = [truth ^ (rng.random(truth.shape) < p) for p in (0.05, 0.1, 0.2, 0.3)]
    assert_matches_sitk(masks)


def test_binary_structured_3d_vs_simpleitk() -> None:
    rng = np.random.default_rng(1)
    masks = perturbed_readers(rng, (24, 48, 40), 5, noise=0.01)
    assert_matches_sitk(masks)


def test_binary_pure_noise_vs_simpleitk() -> None:
    rng = np.random.default_rng(2)
    masks = [rng.random((16, 20, 18)) < f for f in (0.3, 0.5, 0.6)]
    assert_matches_sitk(masks)


def test_fixed_prior_matches_confidence_weight() -> None:
    # SimpleITK scales its prior g by ConfidenceWeight; a fixed prior g*w must agree.
    rng = np.random.default_rng(4)
    masks = perturbed_readers(rng, (40, 40), 4, noise=0.05)
    g = float(np.mean([m.mean() for m in masks]))
    prob, f_sitk = sitk_staple(masks, ConfidenceWeight=1.4)
    res = STAPLE(prior=g * 1.4).fit(masks)
    assert np.abs(res.probability - prob).max() < 1e-4
    assert np.allclose(res.sensitivity, f_sitk.GetSensitivity(), atol=1e-6)


def test_foreground_value_like_itk() -> None:
    rng = np.random.default_rng(5)
    maps = [rng.integers(0, 3, (30, 30)).astype(np.uint8) for _ in range(3)]
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(2.0)
    prob = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in maps]))
    res = STAPLE().fit(maps, foreground=2)
    assert np.abs(res.probability - prob).max() < 1e-4


@pytest.mark.parametrize("n_readers", [12, 20, 70])
def test_many_readers_all_pattern_paths(n_readers: int) -> None:
    # 12: bincount on uint16 codes; 20: bincount, 2**20 patterns; 70: unique rows.
    rng = np.random.default_rng(n_readers)
    truth = ellipsoid((30, 30), (15, 15), (8, 10))
    masks = [truth ^ (rng.random(truth.shape) < rng.uniform(0.02, 0.3)) for _ in range(n_readers)]
    res = STAPLE().fit(masks)
    prob, f = sitk_staple(masks)
    assert np.abs(res.probability - prob).max() < 1e-4
    assert np.allclose(res.sensitivity, f.GetSensitivity(), atol=1e-6)


def test_probability_dtype_and_threshold() -> None:
    rng = np.random.default_rng(6)
    masks = perturbed_readers(rng, (30, 30), 3, noise=0.1)
    r32 = STAPLE().fit(masks)
    r64 = STAPLE(dtype=np.float64).fit(masks)
    assert r32.probability.dtype == np.float32 and r64.probability.dtype == np.float64
    assert np.array_equal(r64.consensus, r64.probability > 0.5)
    strict = STAPLE(threshold=0.9).fit(masks)
    assert np.array_equal(strict.consensus, r64.probability > 0.9)


def test_global_prior_is_mean_posterior() -> None:
    rng = np.random.default_rng(8)
    masks = perturbed_readers(rng, (40, 40), 5, noise=0.05)
    res = STAPLE(prior="global", tol=1e-10).fit(masks)
    assert res.converged
    # at the fixed point the prior equals the mean posterior probability
    assert res.prior == pytest.approx(float(res.probability.astype(np.float64).mean()), abs=1e-6)
    assert np.all((res.sensitivity >= 0) & (res.sensitivity <= 1))


# ----------------------------------------------------------------------- degenerate inputs


def test_identical_readers_give_their_mask() -> None:
    m = ellipsoid((20, 30), (10, 15), (5, 9))
    res = STAPLE().fit([m, m.copy(), m.copy()])
    assert np.array_equal(res.consensus, m)
    assert np.array_equal(res.probability, m.astype(np.float32))
    assert np.allclose(res.sensitivity, 1.0) and np.allclose(res.specificity, 1.0)
    assert res.notes == ()


def test_all_empty_masks() -> None:
    z = np.zeros((8, 9, 10), bool)
    res = STAPLE().fit([z, z, z])
    assert not res.consensus.any()
    assert np.all(res.probability == 0)
    assert np.all(res.sensitivity == 1.0) and np.all(res.specificity == 1.0)
    assert any("sensitivity undefined" in n for n in res.notes)


def test_all_full_masks() -> None:
    o = np.ones((5, 6), bool)
    res = STAPLE().fit([o, o])
    assert res.consensus.all() and np.all(res.probability == 1)
    assert any("specificity undefined" in n for n in res.notes)
    assert not np.isnan(res.specificity).any()


def test_reader_marking_nothing_or_everything() -> None:
    rng = np.random.default_rng(9)
    good = perturbed_readers(rng, (30, 30), 3)
    empty = np.zeros((30, 30), bool)
    full = np.ones((30, 30), bool)
    res = STAPLE().fit([*good, empty, full])
    assert not np.isnan(res.probability).any()
    assert res.sensitivity[3] == 0.0 and res.specificity[3] == 1.0
    assert res.sensitivity[4] == 1.0 and res.specificity[4] == 0.0
    # the readers who disagree with everyone carry no weight: consensus = vote of the others
    prob, _ = sitk_staple([*good, empty, full])
    finite = np.isfinite(prob)
    assert np.abs(res.probability[finite] - prob[finite]).max() < 1e-4


def test_bad_inputs() -> None:
    with pytest.raises(InputError) as err:
        STAPLE().fit([np.zeros((4, 4)), np.zeros((4, 5))], names=["a.nii", "b.nii"])
    assert "a.nii" in str(err.value) and "b.nii" in str(err.value)
    with pytest.raises(InputError):
        STAPLE().fit([np.full((3, 3), 2)])
    with pytest.raises(InputError):
        STAPLE().fit([])
    with pytest.raises(InputError):
        STAPLE(prior=1.5)
    with pytest.raises(InputError):
        STAPLE(prior="local")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        MultiLabelSTAPLE().fit([np.full((3, 3), -1)])


# ----------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 6),
    perm_seed=st.integers(0, 1000),
)
def test_reader_permutation_invariance(seed: int, n: int, perm_seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = perturbed_readers(rng, (16, 18), n, noise=0.05)
    perm = np.random.default_rng(perm_seed).permutation(n)
    a = STAPLE(dtype=np.float64).fit(masks)
    b = STAPLE(dtype=np.float64).fit([masks[i] for i in perm])
    assert np.allclose(a.probability, b.probability, atol=1e-9)
    assert np.allclose(a.sensitivity[perm], b.sensitivity, atol=1e-9)
    assert np.allclose(a.specificity[perm], b.specificity, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5))
def test_identical_readers_property(seed: int, n: int) -> None:
    m = np.random.default_rng(seed).random((7, 9)) < 0.4
    res = STAPLE().fit([m] * n)
    assert np.array_equal(res.consensus, m)
    assert not np.isnan(res.probability).any()


# ----------------------------------------------------------------------- multi-label


def sitk_multilabel(maps: list[np.ndarray]) -> tuple[np.ndarray, sitk.MultiLabelSTAPLEImageFilter]:
    f = sitk.MultiLabelSTAPLEImageFilter()
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in maps])
    return sitk.GetArrayFromImage(out), f


def structured_label_maps(
    rng: np.random.Generator, shape: tuple[int, ...], n: int
) -> list[np.ndarray]:
    outer = perturbed_readers(rng, shape, n)
    inner_shape_radii = tuple(s / 8 for s in shape)
    centre = tuple(s / 2 for s in shape)
    maps = []
    for k in range(n):
        m = outer[k].astype(np.uint8)
        c = tuple(x + rng.normal(0, 0.7) for x in centre)
        m[ellipsoid(shape, c, inner_shape_radii)] = 2
        m[rng.random(shape) < 0.02 * k] = 3
        maps.append(m)
    return maps


@pytest.mark.parametrize("shape", [(48, 52), (16, 32, 30)])
def test_multilabel_vs_simpleitk(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    maps = structured_label_maps(rng, shape, 5)
    labels, f = sitk_multilabel(maps)
    res = MultiLabelSTAPLE().fit(maps)
    L = 4
    assert np.array_equal(res.labels, labels)
    for k in range(5):
        cm = np.asarray(f.GetConfusionMatrix(k)).reshape(L + 1, L)
        assert np.abs(cm[:L] - res.confusion[k]).max() < 1e-4
        assert np.all(cm[L] == 0)
    assert res.probabilities is not None
    assert res.probabilities.shape == (L, *shape)
    assert np.allclose(res.probabilities.sum(axis=0), 1.0, atol=1e-5)
    decided = res.labels != res.undecided_label
    assert np.array_equal(np.argmax(res.probabilities, axis=0)[decided], res.labels[decided])


def test_multilabel_random_with_many_ties_vs_simpleitk() -> None:
    rng = np.random.default_rng(11)
    maps = [rng.integers(0, 3, (40, 40)).astype(np.uint8) for _ in range(4)]
    truth = rng.integers(0, 3, (40, 40)).astype(np.uint8)
    maps = [np.where(rng.random(truth.shape) < 0.6, truth, m) for m in maps]
    labels, f = sitk_multilabel(maps)
    res = MultiLabelSTAPLE().fit(maps)
    assert np.array_equal(res.labels, labels)
    for k in range(4):
        cm = np.asarray(f.GetConfusionMatrix(k)).reshape(4, 3)
        assert np.abs(cm[:3] - res.confusion[k]).max() < 1e-4


def test_multilabel_binary_equals_confusion_of_binary() -> None:
    m = ellipsoid((20, 20), (10, 10), (6, 7)).astype(np.uint8)
    res = MultiLabelSTAPLE().fit([m, m, m])
    assert np.array_equal(res.labels, m)
    assert np.allclose(res.confusion, np.eye(2)[None])
    assert res.undecided_label == 2


def test_multilabel_all_background() -> None:
    z = np.zeros((6, 6), np.uint8)
    res = MultiLabelSTAPLE().fit([z, z])
    assert np.all(res.labels == 0)
    assert res.probabilities is not None and not np.isnan(res.probabilities).any()


# ----------------------------------------------------------------------- votes


def test_label_voting_vs_simpleitk() -> None:
    rng = np.random.default_rng(12)
    maps = [rng.integers(0, 4, (20, 30)).astype(np.uint8) for _ in range(4)]
    ref = sitk.GetArrayFromImage(sitk.LabelVoting([sitk.GetImageFromArray(m) for m in maps]))
    ours = majority_vote_labels(maps)
    assert np.array_equal(ours, ref)
    assert np.any(ours == 4)  # ties exist and get max label + 1
    assert np.all(majority_vote_labels(maps, undecided_label=255)[ours == 4] == 255)


def test_majority_vote_mask_ties() -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert majority_vote_mask([a, b]).tolist() == [[True, False, False, False]]
    assert majority_vote_mask([a, b], ties="foreground").tolist() == [[True, True, True, False]]
    assert vote_fraction([a, b]).tolist() == [[1.0, 0.5, 0.5, 0.0]]
    c = np.array([[0, 1, 1, 0]], bool)
    assert majority_vote_mask([a, b, c]).tolist() == [[True, True, True, False]]
    with pytest.raises(InputError):
        majority_vote_mask([a, b], ties="coin")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- CLI


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
AFFINE[:3, 3] = [-10.0, 5.0, 30.0]


def test_cli_binary_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(20)
    masks = perturbed_readers(rng, (20, 24, 10), 3, noise=0.02)
    paths = [
        write_nifti(tmp_path / f"r{i}.nii.gz", m.astype(np.uint8), AFFINE)
        for i, m in enumerate(masks)
    ]
    out, prob = tmp_path / "consensus.nii.gz", tmp_path / "prob.nii.gz"
    result = runner.invoke(
        app, ["staple", *map(str, paths), "-o", str(out), "--probability", str(prob)]
    )
    assert result.exit_code == 0, result.output
    expected = STAPLE().fit(masks)
    cons_img, prob_img = nib.load(str(out)), nib.load(str(prob))
    assert np.allclose(cons_img.affine, AFFINE) and np.allclose(prob_img.affine, AFFINE)
    assert cons_img.header.get_xyzt_units() == ("mm", "unknown")
    assert cons_img.get_data_dtype() == np.uint8 and prob_img.get_data_dtype() == np.float32
    assert np.array_equal(np.asanyarray(cons_img.dataobj), expected.consensus.astype(np.uint8))
    assert np.allclose(np.asanyarray(prob_img.dataobj), expected.probability)
    assert "sensitivity" in result.stdout and "r2.nii.gz" in result.stdout
    assert f"{expected.sensitivity[0]:.4f}" in result.stdout


def test_cli_multilabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    maps = structured_label_maps(rng, (16, 20, 8), 3)
    paths = [
        write_nifti(tmp_path / f"m{i}.nii", m.astype(np.uint8), AFFINE) for i, m in enumerate(maps)
    ]
    out, prob = tmp_path / "labels.nii.gz", tmp_path / "probs.nii.gz"
    result = runner.invoke(
        app,
        ["staple", *map(str, paths), "-o", str(out), "--probability", str(prob), "--multilabel"],
    )
    assert result.exit_code == 0, result.output
    expected = MultiLabelSTAPLE().fit(maps)
    labels = np.asanyarray(nib.load(str(out)).dataobj)
    probs = np.asanyarray(nib.load(str(prob)).dataobj)
    assert np.array_equal(labels, expected.labels)
    assert probs.shape == (16, 20, 8, 4)
    assert expected.probabilities is not None
    assert np.allclose(np.moveaxis(probs, -1, 0), expected.probabilities)
    assert "P(says 2 | 2)" in result.stdout


def test_cli_mismatches_exit_2_naming_files(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.uint8), AFFINE)
    b = write_nifti(tmp_path / "b.nii.gz", np.zeros((4, 5, 7), np.uint8), AFFINE)
    c = write_nifti(tmp_path / "c.nii.gz", np.zeros((4, 5, 6), np.uint8), np.eye(4))
    out = str(tmp_path / "o.nii.gz")
    result = runner.invoke(app, ["staple", str(a), str(b), "-o", out])
    assert result.exit_code == 2
    assert "a.nii.gz" in result.stderr and "b.nii.gz" in result.stderr
    result = runner.invoke(app, ["staple", str(a), str(c), "-o", out])
    assert result.exit_code == 2
    assert "affine" in result.stderr and "c.nii.gz" in result.stderr
    result = runner.invoke(app, ["staple", str(a), str(tmp_path / "missing.nii"), "-o", out])
    assert result.exit_code == 2 and "missing.nii" in result.stderr
    labels = write_nifti(tmp_path / "l.nii.gz", np.full((4, 5, 6), 3, np.uint8), AFFINE)
    result = runner.invoke(app, ["staple", str(a), str(labels), "-o", out])
    assert result.exit_code == 2 and "not binary" in result.stderr
