"""Numeric kernels of the agreement metrics: per-item sufficient statistics and the bootstrap.

Every coefficient in :mod:`truthset.quality.agreement` is a function of *sums over items* of a
few per-item statistics (label counts per class, pairable-pair agreement, coincidences …). A
kernel here takes a weight matrix ``W`` of shape ``(B, n_units)`` — one row of item weights per
replicate — and returns the coefficient for every row at once. The point estimate is the kernel
at ``W = 1``; a bootstrap replicate is the kernel at the multiplicities of one resample of the
items. So 1,000 bootstrap replicates cost a handful of matrix products, not 1,000 recomputations.

Undefined replicates (no pairable item, expected disagreement 0 …) come back as NaN; the public
layer turns NaN at the point estimate into ``value=None`` with a reason.

This module is private to the quality engine: its names may change without notice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from truthset.domain.errors import InputError

#: A kernel maps a (B, n_units) weight matrix to the coefficient per replicate: shape (B,) for a
#: scalar coefficient, (B, K) for a per-class one.
Kernel = Callable[[np.ndarray], np.ndarray]

#: Entries of one chunk of bootstrap weights (kept small so the bincount stays in cache).
_WEIGHT_CHUNK = 1 << 17

LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")


@dataclass(frozen=True)
class Ratings:
    """Label counts of the items that received at least one label.

    Attributes
    ----------
    counts:
        Sparse ``items × classes`` matrix of label counts (CSR, float64).
    classes:
        The class behind each column, in order.
    n_annotators:
        Distinct readers, or ``None`` when the input carried no reader identity (a count matrix).
    """

    counts: sp.csr_array
    classes: pd.Index
    n_annotators: int | None

    @property
    def n_items(self) -> int:
        """Items with at least one label."""
        return int(self.counts.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (columns)."""
        return int(self.counts.shape[1])

    def per_item(self) -> np.ndarray:
        """Labels per item (``m_u``)."""
        return np.asarray(self.counts.sum(axis=1)).ravel()


def ratings_from_codes(
    items: np.ndarray, labels: np.ndarray, n_items: int, classes: pd.Index, n_annotators: int | None
) -> Ratings:
    """Build :class:`Ratings` from parallel item/label codes (items without labels are dropped)."""
    counts = sp.csr_array(
        (np.ones(len(items)), (items, labels)), shape=(n_items, len(classes)), dtype=np.float64
    )
    counts.sum_duplicates()
    m = np.asarray(counts.sum(axis=1)).ravel()
    if (m == 0).any():
        counts = sp.csr_array(counts[np.flatnonzero(m > 0)])
    return Ratings(counts=counts, classes=classes, n_annotators=n_annotators)


def ratings_from_counts(counts: object, classes: object = None) -> Ratings:
    """Validate an ``items × classes`` count matrix (non-negative integers) into :class:`Ratings`.

    Raises
    ------
    InputError
        Not two-dimensional, negative or fractional counts, or ``classes`` of the wrong length.
    """
    matrix = sp.csr_array(counts) if sp.issparse(counts) else None
    if matrix is None:
        try:
            dense = np.asarray(counts, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"counts must be numeric: {exc}", field="counts") from None
        if dense.ndim != 2:
            raise InputError(
                f"counts must be an items × classes matrix; got {dense.ndim} dimension(s)",
                field="counts",
            )
        matrix = sp.csr_array(dense)
    matrix = sp.csr_array(matrix, dtype=np.float64)
    data = matrix.data
    if (~np.isfinite(data)).any() or (data < 0).any() or (data != np.round(data)).any():
        rows = matrix.tocoo().row
        bad = (~np.isfinite(data)) | (data < 0) | (data != np.round(data))
        raise InputError(
            "counts must be non-negative whole numbers",
            location=f"row {int(rows[np.flatnonzero(bad)[0]]) + 1}",
            field="counts",
        )
    k = matrix.shape[1]
    class_index = pd.Index(range(k) if classes is None else list(classes), name="label")  # type: ignore[call-overload]
    if len(class_index) != k:
        raise InputError(
            f"{len(class_index)} classes given for a count matrix with {k} columns",
            field="classes",
        )
    m = np.asarray(matrix.sum(axis=1)).ravel()
    matrix = sp.csr_array(matrix[np.flatnonzero(m > 0)])
    return Ratings(counts=matrix, classes=class_index, n_annotators=None)


def numeric_values(classes: pd.Index, level: str) -> np.ndarray:
    """Numeric value of each class for the interval and ratio levels.

    Raises
    ------
    InputError
        A class is not a number, or (ratio) a value is negative.
    """
    values = pd.to_numeric(pd.Series(list(classes), dtype=object), errors="coerce").to_numpy(
        dtype=np.float64
    )
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"the {level} level needs numeric labels; {classes[int(np.flatnonzero(bad)[0])]!r} "
            "is not a number (use the nominal or ordinal level for categories)",
            field="label",
        )
    if level == "ratio" and (values < 0).any():
        raise InputError(
            f"the ratio level needs non-negative values; found {values.min():g}", field="label"
        )
    return values


# --------------------------------------------------------------------------- bootstrap


def weight_chunks(n_units: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield the multiplicities of ``n_boot`` resamples (with replacement) of ``n_units`` items,
    as float matrices of at most :data:`_WEIGHT_CHUNK` entries each."""
    rows = max(1, _WEIGHT_CHUNK // max(n_units, 1))
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        draws = rng.integers(0, n_units, size=(b, n_units))
        draws += (np.arange(b, dtype=np.int64) * n_units)[:, None]
        yield (
            np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        )


def bootstrap(
    kernel: Kernel, n_units: int, n_boot: int, seed: int | np.random.Generator | None
) -> np.ndarray:
    """Replicates of ``kernel`` over ``n_boot`` item resamples (NaN where undefined)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([kernel(w) for w in weight_chunks(n_units, n_boot, rng)], axis=0)


def percentile_interval(
    replicates: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval over the defined replicates, per column.

    Returns ``(low, high, n_defined)``; low/high are NaN where no replicate is defined.
    """
    reps = replicates.reshape(replicates.shape[0], -1)
    finite = np.isfinite(reps)
    n_defined = finite.sum(axis=0)
    tail = (1.0 - confidence) / 2.0
    low = np.full(reps.shape[1], np.nan)
    high = np.full(reps.shape[1], np.nan)
    ok = n_defined > 0
    if ok.any():
        q = np.nanquantile(np.where(finite, reps, np.nan)[:, ok], [tail, 1.0 - tail], axis=0)
        low[ok], high[ok] = q[0], q[1]
    return low, high, n_defined


# --------------------------------------------------------------------------- helpers


def _wsum(w: np.ndarray, per_item: np.ndarray | sp.csr_array) -> np.ndarray:
    """``w @ per_item`` for dense or sparse ``per_item`` (always a dense result)."""
    if sp.issparse(per_item):
        return np.asarray((per_item.T @ w.T).T)
    return w @ per_item


def _row_sq_sum(matrix: sp.csr_array) -> np.ndarray:
    return np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is zero."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------- Krippendorff


@dataclass(frozen=True)
class AlphaStats:
    """Pairable units of a reliability data set, ready for :func:`alpha_kernel`."""

    counts: sp.csr_array  # pairable units × values
    m: np.ndarray  # values per unit (>= 2)
    g: np.ndarray  # 1 / (m - 1)
    n_single: int  # units with exactly one value, left out

    @property
    def n_units(self) -> int:
        """Pairable units."""
        return int(self.counts.shape[0])


def alpha_stats(ratings: Ratings) -> AlphaStats:
    """Keep the units with two or more values (the pairable ones)."""
    m = ratings.per_item()
    keep = np.flatnonzero(m >= 2)
    counts = sp.csr_array(ratings.counts[keep])
    mk = m[keep]
    return AlphaStats(counts=counts, m=mk, g=1.0 / (mk - 1.0), n_single=int((m == 1).sum()))


def _ratio_distance(values: np.ndarray) -> np.ndarray:
    total = values[:, None] + values[None, :]
    diff = values[:, None] - values[None, :]
    out = np.zeros_like(total)
    np.divide(diff, total, out=out, where=total != 0)
    return out**2


def alpha_kernel(stats: AlphaStats, level: str, values: np.ndarray | None) -> Kernel:
    """Krippendorff's alpha as a kernel over pairable-unit weights.

    With the coincidence matrix ``o`` and marginals ``n_c``, ``alpha = 1 - (n - 1) Σ o δ² /
    Σ n_c n_k δ²``. Per unit only ``Σ_ck n_uc n_uk δ²_ck / (m_u - 1)`` is needed; it has a closed
    form for the nominal (``m² - Σ n_c²``) and interval (``2 (m Σ n v² - (Σ n v)²)``) metrics.
    The ordinal metric is the interval metric on the mid-ranks ``Σ_{g<c} n_g + n_c / 2`` of the
    marginal frequencies (Krippendorff 2011), so it is recomputed per replicate.
    """
    N, m, g = stats.counts, stats.m, stats.g

    def defined(nc: np.ndarray) -> np.ndarray:
        return (nc > 0).sum(axis=1) >= 2

    def finish(obs: np.ndarray, exp: np.ndarray, n: np.ndarray, nc: np.ndarray) -> np.ndarray:
        alpha = 1.0 - (n - 1.0) * _divide(obs, exp)
        return np.where(defined(nc), alpha, np.nan)

    if level == "nominal":
        d = (m * m - _row_sq_sum(N)) * g

        def nominal(w: np.ndarray) -> np.ndarray:
            nc = _wsum(w, N)
            n = nc.sum(axis=1)
            return finish(w @ d, n * n - (nc * nc).sum(axis=1), n, nc)

        return nominal

    if level == "interval":
        assert values is not None
        v = values - values.mean()
        v2 = v * v
        s1 = N @ v
        d = 2.0 * (m * (N @ v2) - s1 * s1) * g

        def interval(w: np.ndarray) -> np.ndarray:
            nc = _wsum(w, N)
            n = nc.sum(axis=1)
            s = nc @ v
            return finish(w @ d, 2.0 * (n * (nc @ v2) - s * s), n, nc)

        return interval

    if level == "ratio":
        assert values is not None
        delta = _ratio_distance(values)
        rows = max(1, (1 << 22) // max(N.shape[1], 1))
        d = (
            np.concatenate(
                [
                    np.asarray(((N[s : s + rows] @ delta) * N[s : s + rows].toarray()).sum(axis=1))
                    for s in range(0, max(N.shape[0], 1), rows)
                ]
            )[: N.shape[0]]
            * g
        )

        def ratio(w: np.ndarray) -> np.ndarray:
            nc = _wsum(w, N)
            n = nc.sum(axis=1)
            return finish(w @ d, ((nc @ delta) * nc).sum(axis=1), n, nc)

        return ratio

    if level == "ordinal":
        mg = sp.csr_array(N.multiply((m * g)[:, None]))

        def ordinal(w: np.ndarray) -> np.ndarray:
            nc = _wsum(w, N)
            n = nc.sum(axis=1)
            mid = np.cumsum(nc, axis=1) - nc / 2.0  # mid-ranks, one row per replicate
            mid -= mid.mean(axis=1, keepdims=True)
            y = np.asarray(N @ mid.T)  # units × replicates: Σ_c n_uc v_c
            obs = 2.0 * (
                (_wsum(w, mg) * mid * mid).sum(axis=1) - (w * (g[:, None] * y * y).T).sum(axis=1)
            )
            s = (nc * mid).sum(axis=1)
            exp = 2.0 * (n * (nc * mid * mid).sum(axis=1) - s * s)
            return finish(obs, exp, n, nc)

        return ordinal

    raise InputError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}", field="level")


def alpha_per_class_kernel(stats: AlphaStats) -> Kernel:
    """Nominal alpha of each class against the rest: ``(B, K)`` per replicate."""
    N, m, g = stats.counts, stats.m, stats.g
    dense = N.toarray()
    d = 2.0 * dense * (m[:, None] - dense) * g[:, None]  # units × classes

    def kernel(w: np.ndarray) -> np.ndarray:
        nc = w @ dense
        n = nc.sum(axis=1, keepdims=True)
        exp = 2.0 * nc * (n - nc)
        alpha = 1.0 - (n - 1.0) * _divide(w @ d, exp)
        return np.where((nc > 0) & (nc < n), alpha, np.nan)

    return kernel


# --------------------------------------------------------------------------- Fleiss, AC1, percent


@dataclass(frozen=True)
class ChanceStats:
    """Per-item statistics of the multi-rater chance-corrected coefficients (Gwet's handbook).

    ``pa_u`` is the share of agreeing ordered label pairs on a pairable item (0 elsewhere);
    ``share`` is each item's class distribution ``r_ik / r_i`` (every item with a label counts
    towards the class prevalence, pairable or not).
    """

    pa_u: np.ndarray
    pairable: np.ndarray
    share: sp.csr_array
    counts: sp.csr_array
    m: np.ndarray
    n_classes: int

    @property
    def n_units(self) -> int:
        """Items with at least one label."""
        return len(self.m)

    @property
    def n_single(self) -> int:
        """Items with exactly one label."""
        return int((self.m == 1).sum())


def chance_stats(ratings: Ratings) -> ChanceStats:
    """Per-item agreement and class shares."""
    N = ratings.counts
    m = ratings.per_item()
    pairable = (m >= 2).astype(np.float64)
    same = np.asarray((N.multiply(N) - N).sum(axis=1)).ravel()
    pa_u = np.where(m >= 2, same / np.maximum(m * (m - 1.0), 1.0), 0.0)
    share = sp.csr_array(N.multiply(1.0 / m[:, None]))
    return ChanceStats(
        pa_u=pa_u, pairable=pairable, share=share, counts=N, m=m, n_classes=ratings.n_classes
    )


def chance_kernel(stats: ChanceStats, metric: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Percent agreement, Fleiss' kappa or Gwet's AC1 with their ``pa`` and ``pe`` per replicate.

    ``pa`` = mean over pairable items of the agreeing share of label pairs; ``π_k`` = mean over
    all labelled items of ``r_ik / r_i``; Fleiss: ``pe = Σ π_k²``; AC1: ``pe = Σ π_k (1 - π_k) /
    (q - 1)`` (Gwet 2014, multiple raters with missing ratings).
    """
    q = stats.n_classes

    def kernel(w: np.ndarray) -> dict[str, np.ndarray]:
        pa = _divide(w @ stats.pa_u, w @ stats.pairable)
        if metric == "percent":
            return {"value": pa, "pa": pa}
        pi = _wsum(w, stats.share) / w.sum(axis=1, keepdims=True)
        if metric == "fleiss":
            pe = (pi * pi).sum(axis=1)
        else:
            pe = (pi * (1.0 - pi)).sum(axis=1) / (q - 1) if q > 1 else np.full(len(pa), np.nan)
        value = _divide(pa - pe, 1.0 - pe)
        value = np.where(np.isclose(pe, 1.0, rtol=0.0, atol=1e-12), np.nan, value)
        return {"value": value, "pa": pa, "pe": pe}

    return kernel


def chance_per_class_kernel(stats: ChanceStats, metric: str) -> Kernel:
    """One-vs-rest percent agreement, Fleiss' kappa or AC1 of every class: ``(B, K)``."""
    dense = stats.counts.toarray()
    m = stats.m[:, None]
    rest = m - dense
    pair_den = np.maximum(m * (m - 1.0), 1.0)
    pa_u = np.where(m >= 2, (dense * (dense - 1.0) + rest * (rest - 1.0)) / pair_den, 0.0)
    share = dense / m

    def kernel(w: np.ndarray) -> np.ndarray:
        pa = _divide(w @ pa_u, (w @ stats.pairable)[:, None])
        if metric == "percent":
            return pa
        pi = (w @ share) / w.sum(axis=1, keepdims=True)
        pe = pi * pi + (1.0 - pi) ** 2 if metric == "fleiss" else 2.0 * pi * (1.0 - pi)
        value = _divide(pa - pe, 1.0 - pe)
        return np.where(np.isclose(pe, 1.0, rtol=0.0, atol=1e-12), np.nan, value)

    return kernel


# --------------------------------------------------------------------------- Cohen


def disagreement_weights(k: int, weights: str | None) -> np.ndarray:
    """Cohen's disagreement weights over class positions 0..k-1."""
    idx = np.arange(k, dtype=np.float64)
    diff = np.abs(idx[:, None] - idx[None, :])
    if weights is None or weights == "none":
        return (diff > 0).astype(np.float64)
    if weights == "linear":
        return diff
    if weights == "quadratic":
        return diff**2
    raise InputError(f"unknown weights {weights!r}; use none, linear or quadratic", field="weights")


def cohen_from_tables(tables: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Cohen's kappa of ``(B, K, K)`` contingency tables (rows = first reader)."""
    n = tables.sum(axis=(1, 2))
    p = tables / np.where(n == 0, 1.0, n)[:, None, None]
    rows, cols = p.sum(axis=2), p.sum(axis=1)
    obs = np.einsum("bij,ij->b", p, weights)
    exp = np.einsum("bi,ij,bj->b", rows, weights, cols)
    kappa = 1.0 - _divide(obs, exp)
    kappa = np.where((n > 0) & ~np.isclose(exp, 0.0, rtol=0.0, atol=1e-12), kappa, np.nan)
    out = {"value": kappa}
    if not weights.diagonal().any() and (weights[~np.eye(len(weights), dtype=bool)] == 1).all():
        out["po"] = np.where(n > 0, 1.0 - obs, np.nan)
        out["pe"] = np.where(n > 0, 1.0 - exp, np.nan)
    return out


def cohen_per_class(tables: np.ndarray) -> np.ndarray:
    """One-vs-rest Cohen's kappa of every class from ``(B, K, K)`` tables: ``(B, K)``."""
    n = tables.sum(axis=(1, 2))[:, None]
    diag = np.diagonal(tables, axis1=1, axis2=2)
    rows, cols = tables.sum(axis=2), tables.sum(axis=1)
    po = (n - rows - cols + 2.0 * diag) / np.where(n == 0, 1.0, n)
    pr, pc = rows / np.where(n == 0, 1.0, n), cols / np.where(n == 0, 1.0, n)
    pe = pr * pc + (1.0 - pr) * (1.0 - pc)
    kappa = _divide(po - pe, 1.0 - pe)
    return np.where((n > 0) & ~np.isclose(pe, 1.0, rtol=0.0, atol=1e-12), kappa, np.nan)
