"""Label-error detection by confident learning, combined with reader agreement.

Given out-of-sample predicted probabilities ``P`` (``n x K``: each row predicted by a model
that did not train on that example, e.g. cross-validation) and the given labels ``y`` (the
final labels), confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70, 2021) estimates the joint distribution of given and
true labels and finds the examples most likely mislabelled:

1. per-class thresholds ``t_j`` = mean of ``P[:, j]`` over examples labelled ``j``;
2. the **confident joint** ``C[i, j]`` counts examples labelled ``i`` whose probability of
   ``j`` reaches ``t_j`` (the largest such ``j`` when several do); it is calibrated so that
   row ``i`` sums to the number of examples labelled ``i``, and normalised into the joint
   ``Q``;
3. **prune by noise rate**: for each off-diagonal cell, the ``n * Q[i, j]`` examples labelled
   ``i`` with the largest margin ``P[:, j] - P[:, i]`` are flagged.

Flagged examples are **ranked** by self-confidence (``P`` of the given label, lowest first);
with several readers, the rank score mixes in disagreement: ``score = w * (1 -
self_confidence) + (1 - w) * (1 - agreement)``.

The **noise rate** of class ``i`` is ``P(true != i | given = i) = 1 - Q[i, i] / sum_j Q[i, j]``,
with a percentile bootstrap confidence interval (resampling examples). Run it on the test split
alone to ask whether the test set tells the truth.

These definitions follow cleanlab 2.x (``cleanlab.filter.find_label_issues`` with
``filter_by="prune_by_noise_rate"``, ``cleanlab.count.compute_confident_joint``); the tests
compare the two on the same inputs. Pure numpy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from truthset.domain.errors import InputError

__all__ = [
    "LabelIssues",
    "NoiseRates",
    "confident_joint",
    "find_label_issues",
    "noise_matrix",
    "noise_rates",
    "rank_label_issues",
]


def _check(labels: ArrayLike, pred_probs: ArrayLike) -> tuple[NDArray[np.int64],
                                                              NDArray[np.float64]]:
    y = np.asarray(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError("pred_probs must be an n x K array with K >= 2 classes",
                         field="pred_probs")
    if y.shape != (p.shape[0],):
        raise InputError(f"{len(y)} labels for {p.shape[0]} rows of probabilities",
                         field="labels")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= p.shape[1]).any():
        raise InputError(f"labels must be class indices 0..{p.shape[1] - 1}", field="labels")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise InputError("pred_probs must be probabilities in [0, 1]", field="pred_probs")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise InputError("each row of pred_probs must sum to 1", field="pred_probs")
    return y.astype(np.int64), p


def _thresholds(y: NDArray[np.int64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    sums = np.array([p[y == j, j].sum() for j in range(k)])
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def _confident_assignment(y: NDArray[np.int64], p: NDArray[np.float64]
                          ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """The confident true class of each example and whether it has one."""
    t = _thresholds(y, p)
    above = p >= t[None, :] - 1e-6
    masked = np.where(above, p, -np.inf)
    true = np.argmax(masked, axis=1)
    has: NDArray[np.bool_] = np.asarray(above.any(axis=1), dtype=bool)
    return true.astype(np.int64), has


def confident_joint(labels: ArrayLike, pred_probs: ArrayLike, *,
                    calibrate: bool = True) -> NDArray[np.float64]:
    """The confident joint ``C[given, true]`` (calibrated: row ``i`` sums to the number of
    examples labelled ``i``)."""
    y, p = _check(labels, pred_probs)
    k = p.shape[1]
    true, has = _confident_assignment(y, p)
    c = np.zeros((k, k))
    np.add.at(c, (y[has], true[has]), 1.0)
    if calibrate:
        counts = np.bincount(y, minlength=k).astype(float)
        rows = c.sum(axis=1)
        c = np.where(rows[:, None] > 0, c / np.maximum(rows, 1e-12)[:, None] * counts[:, None],
                     0.0)
    return c


def _joint(y: NDArray[np.int64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    c = confident_joint(y, p)
    total = c.sum()
    return c / total if total > 0 else c


def noise_matrix(labels: ArrayLike, pred_probs: ArrayLike) -> NDArray[np.float64]:
    """``P(given = i | true = j)`` estimated from the calibrated confident joint (columns sum
    to 1; as ``cleanlab.count.estimate_noise_matrices``' noise matrix)."""
    y, p = _check(labels, pred_probs)
    q = _joint(y, p)
    cols = q.sum(axis=0)
    return np.where(cols[None, :] > 0, q / np.maximum(cols, 1e-12)[None, :],
                    np.eye(p.shape[1]))


def find_label_issues(labels: ArrayLike, pred_probs: ArrayLike) -> NDArray[np.bool_]:
    """Boolean mask of likely label errors (confident learning, prune by noise rate)."""
    y, p = _check(labels, pred_probs)
    n, k = p.shape
    q = _joint(y, p)
    issues = np.zeros(n, dtype=bool)
    for i in range(k):
        members = np.flatnonzero(y == i)
        if len(members) == 0:
            continue
        for j in range(k):
            if i == j:
                continue
            m = round(float(n * q[i, j]))
            if m <= 0:
                continue
            margin = p[members, j] - p[members, i]
            order = members[np.argsort(-margin, kind="stable")]
            issues[order[:m]] = True
    # An example whose given label is its most probable class is never flagged (as cleanlab).
    issues &= np.argmax(p, axis=1) != y
    return issues


@dataclass(frozen=True)
class LabelIssues:
    """Ranked likely label errors."""

    table: pd.DataFrame  # index, given, suggested, self_confidence, agreement, score, is_issue


def rank_label_issues(
    labels: ArrayLike,
    pred_probs: ArrayLike,
    *,
    agreement: ArrayLike | None = None,
    n_readers: ArrayLike | None = None,
    weight_model: float = 0.7,
    ids: Sequence[object] | None = None,
) -> LabelIssues:
    """Every example with its issue flag and rank score, most likely errors first.

    Parameters
    ----------
    agreement:
        Share of readers who gave the final label (``NaN`` where unknown).
    n_readers:
        Readers per example; agreement is used only where at least two read it.
    weight_model:
        Weight ``w`` of the model's evidence in the score (the rest is disagreement).
    ids:
        Example identifiers for the table (default 0..n-1).
    """
    y, p = _check(labels, pred_probs)
    n = len(y)
    if not 0 <= weight_model <= 1:
        raise InputError("weight_model must lie in [0, 1]", field="weight_model")
    flagged = find_label_issues(y, p)
    self_conf = p[np.arange(n), y]
    agree = (np.full(n, np.nan) if agreement is None
             else np.asarray(agreement, dtype=np.float64).reshape(n))
    readers = np.ones(n) if n_readers is None else np.asarray(n_readers, dtype=float).reshape(n)
    use = (readers >= 2) & np.isfinite(agree)
    score = np.where(use, weight_model * (1 - self_conf) + (1 - weight_model) * (1 - agree),
                     1 - self_conf)
    table = pd.DataFrame({
        "id": list(ids) if ids is not None else np.arange(n),
        "given": y, "suggested": np.argmax(p, axis=1), "self_confidence": self_conf,
        "agreement": agree, "score": score, "is_issue": flagged,
    })
    table = table.sort_values(["is_issue", "score"], ascending=[False, False], kind="stable")
    return LabelIssues(table.reset_index(drop=True))


@dataclass(frozen=True)
class NoiseRates:
    """Per-class label-noise rate ``P(true != i | given = i)`` with a bootstrap CI."""

    rate: NDArray[np.float64]
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    n_given: NDArray[np.int64]
    level: float

    def to_frame(self, classes: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per class."""
        names = list(classes) if classes is not None else list(range(len(self.rate)))
        return pd.DataFrame({"class": names, "n": self.n_given, "noise_rate": self.rate,
                             "ci_low": self.low, "ci_high": self.high})


def _rates(y: NDArray[np.int64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = _joint(y, p)
    rows = q.sum(axis=1)
    return np.where(rows > 0, 1 - np.diag(q) / np.maximum(rows, 1e-12), np.nan)


def noise_rates(labels: ArrayLike, pred_probs: ArrayLike, *, level: float = 0.95,
                n_boot: int = 200, seed: int = 0) -> NoiseRates:
    """Per-class noise rates with a percentile bootstrap interval (deterministic by ``seed``)."""
    y, p = _check(labels, pred_probs)
    if not 0 < level < 1:
        raise InputError("level must lie in (0, 1)", field="level")
    if n_boot < 10:
        raise InputError("n_boot must be at least 10", field="n_boot")
    k = p.shape[1]
    rate = _rates(y, p)
    rng = np.random.default_rng(seed)
    boots = np.full((n_boot, k), np.nan)
    n = len(y)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        yb, pb = y[idx], p[idx]
        boots[b] = _rates(yb, pb)
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every resample
        low = np.nanquantile(boots, alpha, axis=0)
        high = np.nanquantile(boots, 1 - alpha, axis=0)
    return NoiseRates(rate, low, high, np.bincount(y, minlength=k).astype(np.int64), level)
