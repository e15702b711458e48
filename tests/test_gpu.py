"""The optional PyTorch path (:mod:`truthset.quality.gpu`) against the CPU classes.

torch is not a dependency of Truthset (nor of its tests): where it cannot be imported, the tests
that need it are skipped and only the "torch missing" behaviour is checked. Where it can, the
torch Dawid–Skene and STAPLE run on CUDA when a GPU is visible, else on the CPU, and must
reproduce :class:`~truthset.quality.aggregation.DawidSkene` and
:class:`~truthset.quality.staple.STAPLE` (float64: to rounding; float32: to ~1e-5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from truthset.domain.errors import InputError
from truthset.io.tables import read_table
from truthset.quality import STAPLE, DawidSkene, encode, gpu

HAS_TORCH = gpu.torch_available()
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")


@pytest.fixture(scope="module")
def device() -> str:
    """CUDA when a GPU is visible to torch, else the CPU."""
    return gpu.default_device()


def _labels(crowd_dir: Path, name: str) -> pd.DataFrame:
    return read_table(crowd_dir / name / "labels.csv")


def _readers(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    """Perturbed balls: each reader's ball shifted and scaled a little, 1 % voxels flipped."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, dtype=float) / 2
    masks = []
    for _ in range(n):
        c = centre + rng.normal(0, 1.0, len(shape))
        r = min(shape) / 3 * rng.uniform(0.9, 1.1)
        dist = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)))
        m = dist < r
        m ^= rng.random(shape) < 0.01
        masks.append(m)
    return masks


# -- without torch ------------------------------------------------------------------------------
@pytest.mark.skipif(HAS_TORCH, reason="checks the message shown when PyTorch is missing")
def test_missing_torch_is_a_clear_error() -> None:
    assert gpu.torch_available() is False
    enc = encode(pd.DataFrame({"item": [1, 1], "annotator": ["a", "b"], "label": ["x", "y"]}))
    with pytest.raises(InputError, match="needs PyTorch"):
        gpu.dawid_skene_torch(enc.items, enc.annotators, enc.labels, 1, 2, 2)
    with pytest.raises(InputError, match="needs PyTorch"):
        gpu.staple_torch([np.zeros((2, 2), bool)] * 2)
    with pytest.raises(InputError, match="needs PyTorch"):
        gpu.GPUDawidSkene().fit(pd.DataFrame({"item": [1], "annotator": ["a"], "label": ["x"]}))


# -- Dawid–Skene ---------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("name", ["snow2008_rte", "adult_ipeirotis", "dawid_skene_1979"])
@pytest.mark.parametrize("method", ["index", "sparse"])
def test_ds_float64_matches_cpu(crowd_dir: Path, device: str, name: str, method: str) -> None:
    labels = _labels(crowd_dir, name)
    cpu = DawidSkene().fit(labels)
    dev = gpu.GPUDawidSkene(dtype="float64", device=device, method=method).fit(labels)
    assert dev.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(dev.probas_.to_numpy(), cpu.probas_.to_numpy(), atol=1e-8)
    np.testing.assert_allclose(dev.confusion_matrices_, cpu.confusion_matrices_, atol=1e-8)
    np.testing.assert_allclose(dev.loss_history_, cpu.loss_history_, rtol=1e-9)
    pd.testing.assert_series_equal(dev.skills_, cpu.skills_, atol=1e-8)
    assert (dev.labels_ == cpu.labels_).all()
    assert dev.device_ == device


@needs_torch
def test_ds_float32_close_to_cpu(crowd_dir: Path, device: str) -> None:
    labels = _labels(crowd_dir, "adult_ipeirotis")
    cpu = DawidSkene().fit(labels)
    dev = gpu.GPUDawidSkene(dtype="float32", device=device).fit(labels)
    np.testing.assert_allclose(dev.probas_.to_numpy(), cpu.probas_.to_numpy(), atol=1e-3)
    assert (dev.labels_ == cpu.labels_).mean() >= 0.999


@needs_torch
def test_ds_gold_and_smoothing_match_cpu(crowd_dir: Path, device: str) -> None:
    labels = _labels(crowd_dir, "snow2008_rte")
    truth = read_table(crowd_dir / "snow2008_rte" / "truth.csv")
    gold = pd.Series(truth["label"].to_numpy(), index=truth["item"].to_numpy()).iloc[::4]
    cpu = DawidSkene(smoothing=0.5).fit(labels, gold)
    dev = gpu.GPUDawidSkene(smoothing=0.5, dtype="float64", device=device).fit(labels, gold)
    np.testing.assert_allclose(dev.probas_.to_numpy(), cpu.probas_.to_numpy(), atol=1e-8)
    assert (dev.labels_[gold.index] == gold).all()


@needs_torch
def test_ds_fixed_iterations_and_check_every(crowd_dir: Path, device: str) -> None:
    labels = _labels(crowd_dir, "snow2008_temp")
    enc = encode(labels)
    args = (enc.items, enc.annotators, enc.labels, enc.n_items, enc.n_annotators, enc.n_classes)
    fixed = gpu.dawid_skene_torch(*args, n_iter=7, tol=None, device=device, dtype="float64")
    assert fixed.n_iter == 7
    cpu = DawidSkene(n_iter=7, tol=-np.inf).fit(labels)
    np.testing.assert_allclose(fixed.posterior, cpu.probas_.to_numpy(), atol=1e-8)
    every = gpu.dawid_skene_torch(*args, device=device, dtype="float64", check_every=5)
    assert every.n_iter % 5 == 0 or every.n_iter == 100


@needs_torch
def test_ds_bad_parameters(device: str) -> None:
    with pytest.raises(InputError, match="check_every"):
        gpu.dawid_skene_torch([0], [0], [0], 1, 1, 1, check_every=0, device=device)
    with pytest.raises(InputError, match="unknown method"):
        gpu.dawid_skene_torch([0], [0], [0], 1, 1, 1, method="dense", device=device)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="same length"):
        gpu.dawid_skene_torch([0, 0], [0], [0], 1, 1, 1, device=device)
    with pytest.raises(InputError, match="unknown dtype"):
        gpu.dawid_skene_torch([0], [0], [0], 1, 1, 1, dtype="float16", device=device)


# -- STAPLE --------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("prior", [None, "global", 0.3])
def test_staple_float64_matches_cpu(device: str, prior: object) -> None:
    masks = _readers((24, 30, 18), 5, seed=1)
    cpu = STAPLE(prior=prior, dtype=np.float64).fit(masks)  # type: ignore[arg-type]
    dev = gpu.staple_torch(masks, prior=prior, device=device, dtype=np.float64)  # type: ignore[arg-type]
    assert dev.n_iter == cpu.n_iter and dev.converged == cpu.converged
    np.testing.assert_allclose(dev.probability, cpu.probability, atol=1e-10)
    np.testing.assert_allclose(dev.sensitivity, cpu.sensitivity, atol=1e-12)
    np.testing.assert_allclose(dev.specificity, cpu.specificity, atol=1e-12)
    assert np.array_equal(dev.consensus, cpu.consensus)
    assert dev.prior == pytest.approx(cpu.prior)


@needs_torch
def test_staple_many_readers_and_on_device(device: str) -> None:
    """More than 24 readers take the ``unique`` path; results can stay on the device."""
    masks = _readers((10, 12, 8), 26, seed=2)
    cpu = STAPLE(dtype=np.float64).fit(masks)
    dev = gpu.staple_torch(masks, device=device, dtype=np.float64, keep_on_device=True)
    assert isinstance(dev, gpu.StapleTorchResult)
    host = dev.to_numpy(np.float64)
    np.testing.assert_allclose(host.probability, cpu.probability, atol=1e-10)
    assert np.array_equal(host.consensus, cpu.consensus)


@needs_torch
def test_staple_degenerate_and_bad_input(device: str) -> None:
    empty = [np.zeros((6, 6), bool)] * 3
    res = gpu.staple_torch(empty, device=device)
    cpu = STAPLE().fit(empty)
    assert not res.consensus.any() and res.notes == cpu.notes
    with pytest.raises(InputError, match="shapes differ"):
        gpu.staple_torch([np.zeros((4, 4)), np.zeros((4, 5))], device=device)
    with pytest.raises(InputError, match="not binary"):
        gpu.staple_torch([np.zeros((4, 4)), np.full((4, 4), 2)], device=device)
    labelled = [np.full((4, 4), 2), np.full((4, 4), 2)]
    assert gpu.staple_torch(labelled, foreground=2, device=device).consensus.all()
