"""Inter-reader agreement: percent agreement, Cohen's, Fleiss' and Krippendorff's coefficients,
Gwet's AC1, per-class and reader-by-reader agreement, each with a bootstrap confidence interval.

Inputs
------
Every function takes the same kinds of data:

* a **long table** (``item, annotator, label``; crowd-kit's ``task, worker, label`` accepted) as a
  pandas DataFrame, or the :class:`~truthset.quality.table.EncodedLabels` made from one by
  :func:`~truthset.quality.table.encode`;
* a **reliability matrix**: annotators × items (a 2-D array), ``NaN`` (or ``None``) where a reader
  did not label an item — Krippendorff's layout and the ``krippendorff`` package's;
* ``counts=``: an **items × classes** matrix of how many readers chose each class (Fleiss'
  layout; accepted by the count-based coefficients);
* ``matrix=``: a **contingency table** of two readers (rows = first reader; Cohen only).

Classes are ordered as :func:`~truthset.quality.table.encode` orders them (numerically when every
label is a number, otherwise sorted) unless ``classes=`` gives the order. The ordinal level and
Cohen's weights use that order; the interval and ratio levels use the numeric value of each label
(an :class:`~truthset.domain.errors.InputError` when a label is not a number).

Undefined values
----------------
A coefficient that is not defined for the data comes back as ``value=None`` with ``reason`` set,
never as a made-up number and never as an exception: no labels; a single reader; no item with two
or more labels; every pairable label the same (expected disagreement 0, chance agreement 1);
a single class for AC1. Items with a single label cannot be paired: they are left out of the
pairable coefficients and counted in ``n_single``. (Fleiss' kappa and AC1 follow Gwet's handbook:
such items still count towards the class prevalence ``π``.) A reader who labels the same item twice
is refused (:class:`InputError` naming the row), because agreement with oneself is not agreement,
unless ``duplicates="last"`` (the last label of the table counts) or, for the count-based
coefficients, ``duplicates="keep"`` (every label is a separate value, as in Krippendorff's
coder-free formulation).

Confidence intervals
--------------------
Percentile bootstrap over items (``n_boot`` resamples, seeded by ``random_state``): the items are
resampled with replacement and the coefficient recomputed from per-item sufficient statistics, all
replicates at once (see :mod:`truthset.quality.agreement_core`). Replicates where the coefficient
is undefined are dropped; their number is in ``details["n_boot_undefined"]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from truthset.domain.errors import InputError
from truthset.quality import agreement_core as core
from truthset.quality.table import EncodedLabels, as_pandas, encode

__all__ = [
    "DUPLICATES",
    "LEVELS",
    "METRICS",
    "AgreementResult",
    "PairwiseAgreement",
    "agreement",
    "cohen_kappa",
    "counts_from_contingency",
    "fleiss_kappa",
    "gwet_ac1",
    "krippendorff_alpha",
    "pairwise_agreement",
    "per_class_agreement",
    "percent_agreement",
]

#: The coefficients :func:`agreement` knows, by name.
METRICS: tuple[str, ...] = ("percent", "cohen", "fleiss", "krippendorff", "ac1")
#: Krippendorff's levels of measurement.
LEVELS: tuple[str, ...] = core.LEVELS

_ALIASES = {
    "percent_agreement": "percent",
    "agreement": "percent",
    "kappa": "cohen",
    "cohen_kappa": "cohen",
    "fleiss_kappa": "fleiss",
    "alpha": "krippendorff",
    "krippendorff_alpha": "krippendorff",
    "gwet": "ac1",
    "gwet_ac1": "ac1",
}

_REASON_NO_LABELS = "no labels"
_REASON_ONE_READER = "only one annotator: agreement needs at least two"
_REASON_NO_PAIRS = "no item has two or more labels, so no pair of labels can be compared"


@dataclass(frozen=True)
class AgreementResult:
    """One agreement coefficient with its confidence interval and the data it rests on.

    Attributes
    ----------
    metric:
        ``percent``, ``cohen``, ``fleiss``, ``krippendorff`` or ``ac1``.
    value:
        The coefficient, or ``None`` when it is undefined for the data (see ``reason``).
    ci:
        ``(low, high)`` percentile bootstrap interval, or ``None`` (not asked for, or undefined).
    n_items:
        Items that entered the coefficient (items with two or more labels; for Cohen, items both
        readers labelled).
    n_annotators:
        Distinct readers, or ``None`` when the input did not identify readers (a count matrix).
    level:
        Krippendorff's level of measurement (``None`` for the other coefficients).
    reason:
        Why ``value`` is ``None``; ``None`` when it is defined.
    n_single:
        Items left out because they had a single label (or, for Cohen, one reader only).
    weights:
        Cohen's weights (``none``, ``linear``, ``quadratic``); ``None`` for the others.
    confidence:
        The confidence level of ``ci``.
    n_boot:
        Bootstrap resamples behind ``ci``.
    details:
        Parts of the coefficient: ``pa``/``pe`` (observed and chance agreement), ``po``,
        ``n_pairable_values`` (alpha), ``n_boot_undefined``.
    """

    metric: str
    value: float | None
    ci: tuple[float, float] | None
    n_items: int
    n_annotators: int | None
    level: str | None = None
    reason: str | None = None
    n_single: int = 0
    weights: str | None = None
    confidence: float | None = None
    n_boot: int | None = None
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``value`` and ``ci`` are ``None`` (JSON ``null``) when undefined."""
        return {
            "metric": self.metric,
            "value": self.value,
            "ci": None if self.ci is None else [self.ci[0], self.ci[1]],
            "n_items": self.n_items,
            "n_annotators": self.n_annotators,
            "level": self.level,
            "reason": self.reason,
            "n_single": self.n_single,
            "weights": self.weights,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "details": {k: _json_float(v) for k, v in self.details.items()},
        }


@dataclass(frozen=True)
class PairwiseAgreement:
    """Agreement of every pair of readers on the items they share.

    Attributes
    ----------
    metric:
        ``cohen`` or ``percent``.
    values:
        Readers × readers; NaN where two readers share no item or the coefficient is undefined
        (every shared label one class, for Cohen). The diagonal is each reader with themself.
    n_shared:
        Readers × readers: items both labelled.
    low, high:
        Readers × readers percentile bootstrap bounds (``None`` unless asked for).
    confidence:
        Their confidence level.
    """

    metric: str
    values: pd.DataFrame
    n_shared: pd.DataFrame
    low: pd.DataFrame | None = None
    high: pd.DataFrame | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: reader names, the value matrix (``None`` for NaN) and the shared counts."""
        return {
            "metric": self.metric,
            "annotators": [str(a) for a in self.values.index],
            "values": _json_matrix(self.values),
            "n_shared": self.n_shared.to_numpy().astype(int).tolist(),
            "low": None if self.low is None else _json_matrix(self.low),
            "high": None if self.high is None else _json_matrix(self.high),
            "confidence": self.confidence,
        }


def _json_matrix(frame: pd.DataFrame) -> list[list[float | None]]:
    return [[_json_float(v) for v in row] for row in frame.to_numpy()]


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --------------------------------------------------------------------------- inputs


def _check_ci(ci: float | None, n_boot: int) -> float | None:
    if ci is None or ci == 0:
        return None
    if not 0.0 < ci < 1.0:
        raise InputError(f"ci must be a confidence level between 0 and 1; got {ci}", field="ci")
    if n_boot < 1:
        raise InputError(f"n_boot must be at least 1; got {n_boot}", field="n_boot")
    return float(ci)


def _matrix_to_table(data: Any) -> pd.DataFrame:
    """Reliability matrix (annotators × items) → long table, dropping missing cells."""
    arr = np.asarray(data, dtype=object if not isinstance(data, np.ndarray) else None)
    if arr.ndim != 2:
        raise InputError(
            f"a reliability matrix must be annotators × items (2-D); got {arr.ndim} dimension(s)",
            field="data",
        )
    frame = pd.DataFrame(arr)
    long = frame.stack(future_stack=True).reset_index()
    long.columns = pd.Index(["annotator", "item", "label"])
    label = long["label"]
    keep = ~(label.isna() | (label.astype(str).str.strip() == ""))
    return long.loc[keep, ["item", "annotator", "label"]].reset_index(drop=True)


def _encoded(data: Any, classes: Sequence[Any] | None, duplicates: str = "error") -> EncodedLabels:
    data = as_pandas(data)
    if isinstance(data, EncodedLabels):
        enc = data
    elif isinstance(data, pd.DataFrame):
        enc = encode(data, classes=classes)
    elif data is None:
        raise InputError(
            "no data: pass a long table, a reliability matrix or counts=", field="data"
        )
    else:
        enc = encode(_matrix_to_table(data), classes=classes)
    return _handle_duplicates(enc, duplicates)


#: What to do when a reader labels the same item more than once.
DUPLICATES: tuple[str, ...] = ("error", "last", "keep")


def _handle_duplicates(enc: EncodedLabels, duplicates: str) -> EncodedLabels:
    """``error``: refuse (naming the row); ``last``: keep each reader's last label on an item;
    ``keep``: count every label as a separate value (count-based coefficients only)."""
    if duplicates not in DUPLICATES:
        raise InputError(
            f"unknown duplicates policy {duplicates!r}; use one of {', '.join(DUPLICATES)}",
            field="duplicates",
        )
    if duplicates == "keep":
        return enc
    key = pd.Series(enc.items * max(enc.n_annotators, 1) + enc.annotators)
    dup = key.duplicated(keep="last" if duplicates == "last" else "first").to_numpy()
    if not dup.any():
        return enc
    if duplicates == "last":
        keep = ~dup
        return EncodedLabels(
            items=enc.items[keep],
            annotators=enc.annotators[keep],
            labels=enc.labels[keep],
            item_index=enc.item_index,
            annotator_index=enc.annotator_index,
            classes=enc.classes,
        )
    row = int(np.flatnonzero(dup)[0])
    raise InputError(
        f"annotator {enc.annotator_index[enc.annotators[row]]!r} labels item "
        f"{enc.item_index[enc.items[row]]!r} more than once ({int(dup.sum())} repeated "
        "label(s) in all); keep one label per reader and item, or choose duplicates='last' "
        "(the last label counts) or 'keep' (every label counts as a separate value)",
        location=f"row {row + 1}",
        field="annotator",
    )


def _numeric_matrix_ratings(arr: np.ndarray, classes: Sequence[Any] | None) -> core.Ratings:
    """Numeric reliability matrix (annotators × items, NaN missing) → item × value counts.

    One pass over the matrix in row chunks that stay in cache. With few distinct values (the
    usual rating scale) each chunk is compared with all values at once and summed over the
    readers; with many, each cell is binary-searched and counted with ``bincount``. Whole-number
    ratings in a short range need no search for the distinct values at all.
    """
    values = arr.astype(np.float64, copy=False)
    if classes is not None:
        domain = np.asarray(list(classes), dtype=np.float64)
        counted = _count_values(values, domain)
    else:
        counted = None
        if values.size and not np.isnan(values).all():
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            if np.isfinite(lo) and np.isfinite(hi) and lo.is_integer() and hi - lo < _FEW_VALUES:
                domain = np.arange(lo, hi + 1.0)
                counted = _count_values(values, domain, refuse=False)
            if counted is None:
                domain = np.sort(pd.unique(values[np.isfinite(values)].ravel()))
        else:
            domain = np.empty(0)
        if counted is None:
            counted = _count_values(values, domain)
    assert counted is not None
    counts, present_rows = counted
    return _finish_matrix_counts(counts, domain, classes, present_rows)


#: Up to this many distinct values, cells are compared with every value at once.
_FEW_VALUES = 32


def _count_values(
    values: np.ndarray, domain: np.ndarray, *, refuse: bool = True
) -> tuple[np.ndarray, int] | None:
    """Item × value counts of ``values`` over ``domain`` (any order).

    A cell that is neither missing nor in ``domain`` raises :class:`InputError` naming its row
    and column, or (``refuse=False``) makes the function return ``None``.
    """
    n_items, k = values.shape[1], len(domain)
    few = k <= _FEW_VALUES
    order = np.argsort(domain, kind="stable")
    sorted_domain = domain[order]
    code_of = np.append(order, k)  # position in the sorted domain -> column; k = missing
    offset = np.arange(n_items, dtype=np.int64) * (k + 1)
    counts = np.zeros((k, n_items) if few else n_items * (k + 1), dtype=np.float64)
    present_rows = 0
    for start, chunk in _row_chunks(values, k if few else 1):
        missing = np.isnan(chunk)
        if few:
            hits = chunk[None, :, :] == domain[:, None, None]
            matched = hits.any(axis=0) | missing
            counts += hits.sum(axis=1)
        else:
            pos = np.searchsorted(sorted_domain, chunk)
            matched = (sorted_domain[pos.clip(0, max(k - 1, 0))] == chunk if k else missing) | (
                missing
            )
        if not matched.all():
            if not refuse:
                return None
            r, c = np.unravel_index(int(np.flatnonzero(~matched)[0]), chunk.shape)
            raise InputError(
                f"value {chunk[r, c]:g} is not one of the classes {domain.tolist()}",
                location=f"annotator row {start + r + 1}, item column {c + 1}",
            )
        if not few:
            pos[missing] = k
            counts += np.bincount((code_of[pos] + offset).ravel(), minlength=len(counts))
        present_rows += int((~missing.all(axis=1)).sum())
    if few:
        return counts.T, present_rows
    return counts.reshape(n_items, k + 1)[:, :k], present_rows


def _finish_matrix_counts(
    counts: np.ndarray, domain: np.ndarray, classes: Sequence[Any] | None, present_rows: int
) -> core.Ratings:
    matrix = counts
    if classes is None:
        used = matrix.sum(axis=0) > 0
        matrix, domain = matrix[:, used], domain[used]
    index = pd.Index(
        [int(v) if float(v).is_integer() else float(v) for v in domain]
        if classes is None
        else list(classes),
        name="label",
    )
    ratings = core.ratings_from_counts(sp.csr_array(matrix), index)
    return core.Ratings(counts=ratings.counts, classes=index, n_annotators=present_rows)


def _row_chunks(values: np.ndarray, width: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    rows = max(1, (1 << 20) // max(values.shape[1] * max(width, 1), 1))
    for start in range(0, values.shape[0], rows):
        yield start, values[start : start + rows]


def _ratings(
    data: Any, counts: Any, classes: Sequence[Any] | None, duplicates: str = "error"
) -> core.Ratings:
    if counts is not None:
        if data is not None:
            raise InputError("pass either data or counts=, not both", field="counts")
        return core.ratings_from_counts(counts, classes)
    if isinstance(data, list | tuple):
        data = np.asarray(data, dtype=object)
        if data.ndim == 2 and all(isinstance(v, int | float) for v in data.ravel()):
            data = data.astype(np.float64)
    if isinstance(data, np.ndarray) and data.ndim == 2 and data.dtype.kind in "iufb":
        return _numeric_matrix_ratings(data, classes)
    enc = _encoded(data, classes, duplicates)
    return core.ratings_from_codes(
        enc.items, enc.labels, enc.n_items, enc.classes, enc.n_annotators
    )


# --------------------------------------------------------------------------- results


def _interval(
    kernel: core.Kernel, n_units: int, confidence: float | None, n_boot: int, seed: Any
) -> tuple[tuple[float, float] | None, dict[str, float]]:
    if confidence is None or n_units == 0:
        return None, {}
    reps = core.bootstrap(kernel, n_units, n_boot, seed)
    low, high, n_def = core.percentile_interval(reps, confidence)
    extra = {"n_boot_undefined": float(n_boot - n_def[0])}
    if not np.isfinite(low[0]):
        return None, extra
    return (float(low[0]), float(high[0])), extra


def _undefined(
    metric: str, reason: str, *, n_items: int = 0, n_annotators: int | None = None, **kw: Any
) -> AgreementResult:
    return AgreementResult(
        metric=metric,
        value=None,
        ci=None,
        n_items=n_items,
        n_annotators=n_annotators,
        reason=reason,
        **kw,
    )


def _precheck(ratings: core.Ratings) -> str | None:
    if ratings.n_items == 0:
        return _REASON_NO_LABELS
    if ratings.n_annotators is not None and ratings.n_annotators < 2:
        return _REASON_ONE_READER
    if not (ratings.per_item() >= 2).any():
        return _REASON_NO_PAIRS
    return None


# --------------------------------------------------------------------------- Krippendorff


def krippendorff_alpha(
    data: Any = None,
    *,
    level: str = "nominal",
    counts: Any = None,
    classes: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Krippendorff's alpha at the nominal, ordinal, interval or ratio level, missing allowed.

    Computed from the coincidence matrix of the pairable values (Krippendorff 2011, "Computing
    Krippendorff's Alpha-Reliability"): ``alpha = 1 - D_o / D_e``. The ordinal metric uses the
    marginal frequencies of the classes in their order; interval and ratio use the labels'
    numeric values.

    Parameters
    ----------
    data:
        Long table, :class:`EncodedLabels`, or annotators × items reliability matrix (NaN missing).
    level:
        ``nominal``, ``ordinal``, ``interval`` or ``ratio``.
    counts:
        Instead of ``data``: items × classes matrix of label counts.
    classes:
        Class order (and, for a numeric matrix or ``counts``, the value of each column).
    ci:
        Confidence level of the bootstrap interval; ``None`` for none.
    n_boot:
        Bootstrap resamples of the pairable items.
    random_state:
        Seed of the bootstrap.
    duplicates:
        A reader labelling an item twice: ``error`` (refuse), ``last`` or ``keep``.

    Returns
    -------
    AgreementResult
        ``value`` is ``None`` with a reason when there is no pairable item, a single reader, or
        a single distinct pairable value (expected disagreement 0).

    Raises
    ------
    InputError
        Unknown level, non-numeric labels at the interval/ratio level, malformed input.
    """
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}", field="level")
    confidence = _check_ci(ci, n_boot)
    ratings = _ratings(data, counts, classes, duplicates)
    values = core.numeric_values(ratings.classes, level) if level in ("interval", "ratio") else None
    meta: dict[str, Any] = {"level": level, "n_annotators": ratings.n_annotators}
    reason = _precheck(ratings)
    stats = core.alpha_stats(ratings)
    if reason is not None:
        return _undefined("krippendorff", reason, n_single=stats.n_single, **meta)
    kernel = core.alpha_kernel(stats, level, values)
    ones = np.ones((1, stats.n_units))
    nc = core._wsum(ones, stats.counts)
    if (nc > 0).sum() < 2:
        return _undefined(
            "krippendorff",
            "every pairable label has the same value, so the expected disagreement is 0 and "
            "alpha is undefined",
            n_items=stats.n_units,
            n_single=stats.n_single,
            **meta,
        )
    value = float(kernel(ones)[0])
    n = float(nc.sum())
    interval, extra = _interval(kernel, stats.n_units, confidence, n_boot, random_state)
    return AgreementResult(
        metric="krippendorff",
        value=value,
        ci=interval,
        n_items=stats.n_units,
        n_single=stats.n_single,
        confidence=confidence,
        n_boot=n_boot if confidence is not None else None,
        details={"n_pairable_values": n, **extra},
        **meta,
    )


# --------------------------------------------------------------------------- Fleiss / AC1 / %


def _chance_metric(
    metric: str,
    data: Any,
    counts: Any,
    classes: Sequence[Any] | None,
    ci: float | None,
    n_boot: int,
    random_state: Any,
    duplicates: str,
) -> AgreementResult:
    confidence = _check_ci(ci, n_boot)
    ratings = _ratings(data, counts, classes, duplicates)
    stats = core.chance_stats(ratings)
    n_pairable = int(stats.pairable.sum())
    meta: dict[str, Any] = {"n_annotators": ratings.n_annotators, "n_single": stats.n_single}
    reason = _precheck(ratings)
    if reason is not None:
        return _undefined(metric, reason, n_items=n_pairable, **meta)
    if metric == "ac1" and ratings.n_classes < 2:
        return _undefined(
            metric, "AC1 needs at least two classes (q - 1 = 0)", n_items=n_pairable, **meta
        )
    kernel = core.chance_kernel(stats, metric)
    point = kernel(np.ones((1, stats.n_units)))
    details = {k: float(v[0]) for k, v in point.items() if k != "value"}
    if not np.isfinite(point["value"][0]):
        return _undefined(
            metric,
            "every label is the same class, so chance agreement is 1 and the coefficient is "
            "undefined",
            n_items=n_pairable,
            details=details,
            **meta,
        )
    interval, extra = _interval(
        lambda w: kernel(w)["value"], stats.n_units, confidence, n_boot, random_state
    )
    return AgreementResult(
        metric=metric,
        value=float(point["value"][0]),
        ci=interval,
        n_items=n_pairable,
        confidence=confidence,
        n_boot=n_boot if confidence is not None else None,
        details={**details, **extra},
        **meta,
    )


def percent_agreement(
    data: Any = None,
    *,
    counts: Any = None,
    classes: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Observed agreement: the mean, over items with two or more labels, of the share of agreeing
    label pairs (for two readers, the share of items on which they agree).

    Parameters and return value as in :func:`krippendorff_alpha` (no ``level``).
    """
    return _chance_metric("percent", data, counts, classes, ci, n_boot, random_state, duplicates)


def fleiss_kappa(
    data: Any = None,
    *,
    counts: Any = None,
    classes: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Fleiss' kappa, generalised to a varying number of labels per item (Gwet's handbook).

    ``pa`` = mean over items with two or more labels of ``Σ_k r_ik (r_ik - 1) / (r_i (r_i - 1))``;
    ``pe = Σ_k π_k²`` with ``π_k`` the mean over labelled items of ``r_ik / r_i``; kappa =
    ``(pa - pe) / (1 - pe)``. With the same number of readers on every item this is Fleiss (1971).

    Parameters
    ----------
    data:
        Long table, :class:`EncodedLabels` or annotators × items reliability matrix.
    counts:
        Instead of ``data``: items × classes counts (Fleiss' layout).
    classes, ci, n_boot, random_state, duplicates:
        As in :func:`krippendorff_alpha`.

    Returns
    -------
    AgreementResult
        ``details`` holds ``pa`` and ``pe``.
    """
    return _chance_metric("fleiss", data, counts, classes, ci, n_boot, random_state, duplicates)


def gwet_ac1(
    data: Any = None,
    *,
    counts: Any = None,
    classes: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Gwet's AC1 for any number of readers, missing labels allowed (Gwet, *Handbook of
    Inter-Rater Reliability*): ``pa`` as in :func:`fleiss_kappa`, ``pe = Σ_k π_k (1 - π_k) /
    (q - 1)`` with ``q`` the number of classes.

    Parameters and return value as in :func:`fleiss_kappa`. ``q`` counts every class in
    ``classes`` (or every distinct label), used or not.
    """
    return _chance_metric("ac1", data, counts, classes, ci, n_boot, random_state, duplicates)


def counts_from_contingency(matrix: Any) -> np.ndarray:
    """Items × classes counts of the items behind a two-reader contingency table.

    Cell ``(i, j)`` holding ``c`` stands for ``c`` items labelled ``i`` by one reader and ``j``
    by the other; the result has one row per item, so the multi-rater coefficients (Fleiss, AC1,
    percent, alpha) can be computed from a published 2×2 or K×K table.
    """
    table = _contingency(matrix)
    k = table.shape[0]
    cells = np.repeat(np.arange(k * k), table.ravel().astype(np.int64))
    out = np.zeros((len(cells), k))
    np.add.at(out, (np.arange(len(cells)), cells // k), 1.0)
    np.add.at(out, (np.arange(len(cells)), cells % k), 1.0)
    return out


# --------------------------------------------------------------------------- Cohen


def _contingency(matrix: Any) -> np.ndarray:
    try:
        table = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"contingency matrix must be numeric: {exc}", field="matrix") from None
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise InputError(
            f"a contingency matrix must be square (K × K); got shape {table.shape}",
            field="matrix",
        )
    if (~np.isfinite(table)).any() or (table < 0).any() or (table != np.round(table)).any():
        raise InputError("contingency counts must be non-negative whole numbers", field="matrix")
    return table


def _two_readers(
    enc: EncodedLabels, annotators: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per item, both readers' class codes (items labelled by both) and the one-reader count."""
    if annotators is not None:
        if len(annotators) != 2:
            raise InputError(
                f"Cohen's kappa compares two annotators; {len(annotators)} named",
                field="annotators",
            )
        pos = enc.annotator_index.get_indexer(list(annotators))
        if (pos < 0).any():
            raise InputError(
                f"annotator {list(annotators)[int(np.flatnonzero(pos < 0)[0])]!r} has no labels",
                field="annotators",
            )
        a, b = int(pos[0]), int(pos[1])
    else:
        if enc.n_annotators != 2:
            raise InputError(
                f"Cohen's kappa compares exactly two annotators; the table has "
                f"{enc.n_annotators} ({', '.join(map(str, enc.annotator_index[:10]))}"
                f"{', …' if enc.n_annotators > 10 else ''}); use fleiss, krippendorff or ac1, "
                "or name two annotators",
                field="annotator",
            )
        a, b = 0, 1
    first = np.full(enc.n_items, -1, dtype=np.int64)
    second = np.full(enc.n_items, -1, dtype=np.int64)
    sel_a, sel_b = enc.annotators == a, enc.annotators == b
    first[enc.items[sel_a]] = enc.labels[sel_a]
    second[enc.items[sel_b]] = enc.labels[sel_b]
    both = (first >= 0) & (second >= 0)
    one = int(((first >= 0) ^ (second >= 0)).sum())
    return first[both], second[both], one


def _cohen_inputs(
    data: Any,
    matrix: Any,
    classes: Sequence[Any] | None,
    annotators: Sequence[Any] | None,
    duplicates: str = "error",
) -> tuple[np.ndarray | None, np.ndarray | None, int, int, pd.Index]:
    """(cells per item or None, contingency table or None, k, n_single, classes)."""
    if matrix is not None:
        if data is not None:
            raise InputError("pass either data or matrix=, not both", field="matrix")
        table = _contingency(matrix)
        k = table.shape[0]
        index = pd.Index(range(k) if classes is None else list(classes), name="label")
        if len(index) != k:
            raise InputError(f"{len(index)} classes for a {k} × {k} table", field="classes")
        return None, table, k, 0, index
    if duplicates == "keep":
        raise InputError(
            "Cohen's kappa pairs one label per reader and item; use duplicates='error' or 'last'",
            field="duplicates",
        )
    enc = _encoded(data, classes, duplicates)
    first, second, one = _two_readers(enc, annotators)
    k = enc.n_classes
    return first * k + second, None, k, one, enc.classes


def cohen_kappa(
    data: Any = None,
    *,
    weights: str | None = None,
    matrix: Any = None,
    classes: Sequence[Any] | None = None,
    annotators: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Cohen's kappa of two readers, unweighted or with linear or quadratic weights.

    ``kappa = 1 - Σ w_ij p_ij / Σ w_ij p_i. p_.j`` with disagreement weights ``w`` over the class
    positions (``|i - j|`` linear, ``(i - j)²`` quadratic, ``[i != j]`` unweighted), as in
    Cohen (1960, 1968) and scikit-learn's ``cohen_kappa_score``.

    Parameters
    ----------
    data:
        Long table (or reliability matrix) with exactly two annotators, or more with
        ``annotators=`` naming two. Items labelled by one reader only are left out and counted.
    weights:
        ``None``/``"none"``, ``"linear"`` or ``"quadratic"``.
    matrix:
        Instead of ``data``: the K × K contingency table (rows = first reader).
    classes:
        Class order (the weights follow it).
    annotators:
        The two readers to compare when the table has more.
    ci, n_boot, random_state:
        Bootstrap over items (over the table's cells, multinomially, for ``matrix=``).
    duplicates:
        ``error`` or ``last`` (see :func:`krippendorff_alpha`).

    Raises
    ------
    InputError
        Not exactly two annotators (the count is named), an unknown weighting, a malformed table.
    """
    confidence = _check_ci(ci, n_boot)
    wname = "none" if weights is None else str(weights)
    cells, table, k, one, _ = _cohen_inputs(data, matrix, classes, annotators, duplicates)
    wmat = core.disagreement_weights(k, wname)
    meta: dict[str, Any] = {"n_annotators": 2, "n_single": one, "weights": wname}
    n_items = int(table.sum()) if table is not None else len(cells)  # type: ignore[arg-type]
    if n_items == 0:
        return _undefined("cohen", "the two annotators share no item", **meta)
    if table is None:
        assert cells is not None
        onehot = sp.csr_array(
            (np.ones(len(cells)), (np.arange(len(cells)), cells)), shape=(len(cells), k * k)
        )

        def kernel(w: np.ndarray) -> np.ndarray:
            return core.cohen_from_tables(core._wsum(w, onehot).reshape(-1, k, k), wmat)["value"]

        point = core.cohen_from_tables(np.asarray(onehot.sum(axis=0)).reshape(1, k, k), wmat)
    else:
        point = core.cohen_from_tables(table[None], wmat)
    details = {key: float(v[0]) for key, v in point.items() if key != "value"}
    if not np.isfinite(point["value"][0]):
        return _undefined(
            "cohen",
            "both annotators use a single class on the shared items, so chance agreement is 1 "
            "and kappa is undefined",
            n_items=n_items,
            details=details,
            **meta,
        )
    interval: tuple[float, float] | None = None
    extra: dict[str, float] = {}
    if confidence is not None:
        if table is None:
            interval, extra = _interval(kernel, n_items, confidence, n_boot, random_state)
        else:
            rng = np.random.default_rng(random_state)
            draws = rng.multinomial(n_items, table.ravel() / n_items, size=n_boot)
            reps = core.cohen_from_tables(draws.reshape(-1, k, k).astype(np.float64), wmat)
            low, high, n_def = core.percentile_interval(reps["value"][:, None], confidence)
            extra = {"n_boot_undefined": float(n_boot - n_def[0])}
            interval = (float(low[0]), float(high[0])) if np.isfinite(low[0]) else None
    return AgreementResult(
        metric="cohen",
        value=float(point["value"][0]),
        ci=interval,
        n_items=n_items,
        confidence=confidence,
        n_boot=n_boot if confidence is not None else None,
        details={**details, **extra},
        **meta,
    )


# --------------------------------------------------------------------------- per class


def per_class_agreement(
    data: Any = None,
    *,
    metric: str = "krippendorff",
    counts: Any = None,
    matrix: Any = None,
    classes: Sequence[Any] | None = None,
    annotators: Sequence[Any] | None = None,
    ci: float | None = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> dict[Any, AgreementResult]:
    """Agreement on each class against the rest (one-vs-rest), all classes at once.

    Every label is recoded to "this class" / "another class" and the binary coefficient computed:
    nominal alpha (``krippendorff``), ``fleiss``, ``ac1``, ``percent``, or ``cohen`` (two readers).

    Returns
    -------
    dict
        Class → :class:`AgreementResult` (``value=None`` with a reason for a class no pairable
        label uses or every pairable label uses).
    """
    name = _ALIASES.get(metric, metric)
    if name not in METRICS:
        raise InputError(
            f"unknown metric {metric!r}; use one of {', '.join(METRICS)}", field="metric"
        )
    confidence = _check_ci(ci, n_boot)
    if name == "cohen":
        cells, table, k, one, index = _cohen_inputs(data, matrix, classes, annotators, duplicates)
        if table is None:
            assert cells is not None
            onehot = sp.csr_array(
                (np.ones(len(cells)), (np.arange(len(cells)), cells)), shape=(len(cells), k * k)
            )
            n_units = len(cells)

            def ckernel(w: np.ndarray) -> np.ndarray:
                return core.cohen_per_class(core._wsum(w, onehot).reshape(-1, k, k))

            kernel: core.Kernel = ckernel
            point = kernel(np.ones((1, n_units)))[0]
        else:
            n_units = int(table.sum())
            point = core.cohen_per_class(table[None])[0]
            rng = np.random.default_rng(random_state)
            probs = table.ravel() / max(n_units, 1)
            kernel = lambda w: core.cohen_per_class(  # noqa: E731
                rng.multinomial(n_units, probs, size=len(w)).reshape(-1, k, k).astype(float)
            )
        base: dict[str, Any] = {"n_annotators": 2, "n_single": one, "weights": "none"}
        used = n_units
    else:
        ratings = _ratings(data, counts, classes, duplicates)
        index, k = ratings.classes, ratings.n_classes
        reason = _precheck(ratings)
        if reason is not None:
            return {c: _undefined(name, reason, n_annotators=ratings.n_annotators) for c in index}
        if name == "krippendorff":
            astats = core.alpha_stats(ratings)
            kernel, n_units, used = (
                core.alpha_per_class_kernel(astats),
                astats.n_units,
                astats.n_units,
            )
            base = {
                "n_annotators": ratings.n_annotators,
                "n_single": astats.n_single,
                "level": "nominal",
            }
        else:
            cstats = core.chance_stats(ratings)
            kernel = core.chance_per_class_kernel(cstats, name)
            n_units, used = cstats.n_units, int(cstats.pairable.sum())
            base = {"n_annotators": ratings.n_annotators, "n_single": cstats.n_single}
        point = kernel(np.ones((1, n_units)))[0]
    lows = highs = np.full(k, np.nan)
    undefined_reps = np.zeros(k)
    if confidence is not None and n_units > 0:
        reps = core.bootstrap(kernel, n_units, n_boot, random_state)
        lows, highs, n_def = core.percentile_interval(reps, confidence)
        undefined_reps = n_boot - n_def
    out: dict[Any, AgreementResult] = {}
    for j, cls in enumerate(index):
        if not np.isfinite(point[j]):
            out[cls] = _undefined(
                name,
                f"class {cls!r} is used by none or by all of the compared labels, so the "
                "one-vs-rest coefficient is undefined",
                n_items=used,
                **base,
            )
            continue
        out[cls] = AgreementResult(
            metric=name,
            value=float(point[j]),
            ci=(float(lows[j]), float(highs[j])) if np.isfinite(lows[j]) else None,
            n_items=used,
            confidence=confidence,
            n_boot=n_boot if confidence is not None else None,
            details={"n_boot_undefined": float(undefined_reps[j])} if confidence else {},
            **base,
        )
    return out


# --------------------------------------------------------------------------- pairwise


def pairwise_agreement(
    data: Any,
    *,
    metric: str = "cohen",
    classes: Sequence[Any] | None = None,
    duplicates: str = "error",
    ci: float | None = None,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
) -> PairwiseAgreement:
    """Reader × reader agreement (unweighted Cohen's kappa or percent agreement) on the items
    each pair shares; NaN where a pair shares no item.

    All pairs come from three sparse products (shared items, agreeing items, each reader's class
    use on the items shared with each other reader), not from a loop over pairs.

    Parameters
    ----------
    data:
        Long table, :class:`EncodedLabels` or annotators × items reliability matrix.
    metric:
        ``cohen`` or ``percent``.
    classes, duplicates:
        As in :func:`cohen_kappa`.
    ci:
        Confidence level of a percentile bootstrap interval per pair (off by default: the
        replicates cost ``n_boot`` × readers² memory and three sparse products each).
    n_boot, random_state:
        Bootstrap resamples of the items and their seed.

    Returns
    -------
    PairwiseAgreement
        With ``low``/``high`` matrices when ``ci`` is given.
    """
    name = _ALIASES.get(metric, metric)
    if name not in ("cohen", "percent"):
        raise InputError(f"pairwise agreement is cohen or percent; got {metric!r}", field="metric")
    if duplicates == "keep":
        raise InputError(
            "pairwise agreement pairs one label per reader and item; use 'error' or 'last'",
            field="duplicates",
        )
    confidence = _check_ci(ci, n_boot)
    enc = _encoded(data, classes, duplicates)
    a, n, k = enc.n_annotators, enc.n_items, enc.n_classes
    ones = np.ones(len(enc.items))
    present = sp.csr_array((ones, (enc.annotators, enc.items)), shape=(a, n))
    labelled = sp.csr_array((ones, (enc.annotators, enc.items * k + enc.labels)), shape=(a, n * k))

    def pair_values(item_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = item_weights[enc.items]
        present_w = sp.csr_array((w, (enc.annotators, enc.items)), shape=(a, n))
        labelled_w = sp.csr_array(
            (w, (enc.annotators, enc.items * k + enc.labels)), shape=(a, n * k)
        )
        shared = (present_w @ present.T).toarray()
        po = np.full((a, a), np.nan)
        np.divide((labelled_w @ labelled.T).toarray(), shared, out=po, where=shared > 0)
        if name == "percent":
            return po, shared
        by_class_w = sp.csr_array(
            (w, (enc.annotators * k + enc.labels, enc.items)), shape=(a * k, n)
        )
        # use[x, c, y]: items shared by x and y on which x said c
        use = (by_class_w @ present.T).toarray().reshape(a, k, a)
        pe = np.full((a, a), np.nan)
        np.divide(np.einsum("xcy,ycx->xy", use, use), shared**2, out=pe, where=shared > 0)
        values = np.full((a, a), np.nan)
        ok = (shared > 0) & ~np.isclose(pe, 1.0, rtol=0.0, atol=1e-12)
        np.divide(po - pe, 1.0 - pe, out=values, where=ok)
        return values, shared

    values, shared = pair_values(np.ones(n))
    names = pd.Index(enc.annotator_index, name="annotator")
    low = high = None
    if confidence is not None and n > 0:
        rng = np.random.default_rng(random_state)
        reps = np.stack(
            [
                pair_values(w)[0].ravel()
                for chunk in core.weight_chunks(n, n_boot, rng)
                for w in chunk
            ]
        )
        lo, hi, _ = core.percentile_interval(reps, confidence)
        defined = np.isfinite(values.ravel())
        lo, hi = np.where(defined, lo, np.nan), np.where(defined, hi, np.nan)
        low = pd.DataFrame(lo.reshape(a, a), index=names, columns=names)
        high = pd.DataFrame(hi.reshape(a, a), index=names, columns=names)
    return PairwiseAgreement(
        metric=name,
        values=pd.DataFrame(values, index=names, columns=names),
        n_shared=pd.DataFrame(shared.astype(np.int64), index=names, columns=names),
        low=low,
        high=high,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- one entry


def agreement(
    data: Any = None,
    metric: str = "krippendorff",
    level: str = "nominal",
    ci: float | None = 0.95,
    *,
    weights: str | None = None,
    counts: Any = None,
    matrix: Any = None,
    classes: Sequence[Any] | None = None,
    annotators: Sequence[Any] | None = None,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    duplicates: str = "error",
) -> AgreementResult:
    """Any agreement coefficient by name: ``percent``, ``cohen``, ``fleiss``, ``krippendorff``
    (``alpha``) or ``ac1``.

    ``level`` applies to Krippendorff's alpha; for Cohen's kappa an ordinal or interval level
    selects linear or quadratic weights unless ``weights`` is given. Other arguments as in the
    individual functions.

    Raises
    ------
    InputError
        Unknown metric or level, or bad input for the chosen coefficient.
    """
    name = _ALIASES.get(metric, metric)
    if name not in METRICS:
        raise InputError(
            f"unknown metric {metric!r}; use one of {', '.join(METRICS)}", field="metric"
        )
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}", field="level")
    boot: dict[str, Any] = {
        "ci": ci,
        "n_boot": n_boot,
        "random_state": random_state,
        "duplicates": duplicates,
    }
    if name == "krippendorff":
        return krippendorff_alpha(data, level=level, counts=counts, classes=classes, **boot)
    if name == "cohen":
        if weights is None and level != "nominal":
            weights = "linear" if level == "ordinal" else "quadratic"
        return cohen_kappa(
            data, weights=weights, matrix=matrix, classes=classes, annotators=annotators, **boot
        )
    fn = {"percent": percent_agreement, "fleiss": fleiss_kappa, "ac1": gwet_ac1}[name]
    return fn(data, counts=counts, classes=classes, **boot)
