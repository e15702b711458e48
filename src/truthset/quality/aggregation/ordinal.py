"""Ordinal aggregation for ordered schemas (BI-RADS 1–5, Likert grades, severity scores).

Nominal Dawid–Skene gives every reader a free ``K × K`` confusion matrix: ``K(K − 1)``
parameters, most of them fitted from a handful of labels, and nothing tells it that calling a
BI-RADS 4 lesion "3" is a smaller error than calling it "1". :class:`OrdinalDawidSkene` keeps
the Dawid–Skene latent-class EM but replaces each confusion matrix by an **ordered-probit
reader** (a Thurstonian / cumulative-probit model with unit-spaced thresholds):

* an item of true grade ``c`` (grades coded ``0..K−1`` in ``classes`` order) gives reader ``w``
  the latent impression ``c + b_w + σ_w ε`` with ``ε ~ N(0, 1)``; the reader reports the grade
  whose interval ``[k − ½, k + ½)`` holds it (the end grades are open-ended);
* with probability ``λ_w`` the reader instead lapses and reports a uniformly random grade.

So ``π[w, c, k] = (1 − λ_w) [Φ((k + ½ − c − b_w)/σ_w) − Φ((k − ½ − c − b_w)/σ_w)] + λ_w / K``:
three parameters per reader — a systematic **bias** ``b_w`` (over- or under-calling), a
**spread** ``σ_w`` (how far from the truth errors reach) and a **lapse** rate ``λ_w`` (gross
errors) — and every confusion row is unimodal around ``c + b_w``, i.e. errors fall on adjacent
grades first. The M-step maximises each reader's expected complete-data log-likelihood over a
fixed grid of ``(b, σ, λ)`` (vectorised: one matrix product of the soft counts with the grid's
log-confusions), which includes the current value, so each iteration is a generalised EM step.

References: Dawid & Skene (1979); McCullagh (1980), "Regression models for ordinal data", JRSS-B
42(2) (cumulative link models); Thurstone's law of comparative judgement for the latent scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from truthset.quality.aggregation.dawid_skene import (
    EPS,
    DawidSkene,
    FloatDType,
    LabelMatrices,
)
from truthset.quality.table import EncodedLabels

#: Default parameter grids of the ordered-probit reader.
DEFAULT_BIASES = np.round(np.arange(-1.5, 1.5001, 0.1), 10)
DEFAULT_SPREADS = np.geomspace(0.15, 4.0, 28)
DEFAULT_LAPSES = np.array([1e-3, 0.01, 0.03, 0.1, 0.2, 0.4])

#: Readers scored against the grid per block (bounds the A × grid score matrix).
_BLOCK = 1024


def ordered_probit_confusion(
    n_classes: int, bias: np.ndarray, spread: np.ndarray, lapse: np.ndarray
) -> np.ndarray:
    """Confusion matrices ``[..., true, observed]`` of the ordered-probit reader.

    ``bias``, ``spread`` and ``lapse`` broadcast together; the result has their shape plus
    ``(K, K)`` and every row sums to 1.
    """
    K = n_classes
    b = np.asarray(bias, dtype=np.float64)[..., None, None]
    s = np.asarray(spread, dtype=np.float64)[..., None, None]
    lam = np.asarray(lapse, dtype=np.float64)[..., None, None]
    true = np.arange(K)[:, None]
    upper = np.arange(K)[None, :] + 0.5
    lower = upper - 1.0
    hi = np.where(np.arange(K)[None, :] == K - 1, 1.0, ndtr((upper - true - b) / s))
    lo = np.where(np.arange(K)[None, :] == 0, 0.0, ndtr((lower - true - b) / s))
    return (1.0 - lam) * np.maximum(hi - lo, 0.0) + lam / K


class OrdinalDawidSkene(DawidSkene):
    """Dawid–Skene EM with ordered-probit readers (see the module notes).

    Parameters
    ----------
    n_iter, tol, dtype:
        As in :class:`~truthset.quality.aggregation.dawid_skene.DawidSkene`.
    biases, spreads, lapses:
        Grids searched in the M-step (defaults: bias −1.5…1.5 by 0.1, spread 0.15…4
        geometric, lapse 0.001…0.4).
    classes:
        The grades **in order** (e.g. ``[1, 2, 3, 4, 5]``); when omitted, the sorted labels
        (numerically when they look like numbers).

    Attributes
    ----------
    bias_, spread_, lapse_ : pd.Series
        Each reader's fitted parameters.
    confusion_matrices_, confusion_, priors_, skills_, n_iter_ :
        As in :class:`DawidSkene` (``skills_`` = expected exact-grade accuracy).
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-5,
        *,
        biases: Sequence[float] | None = None,
        spreads: Sequence[float] | None = None,
        lapses: Sequence[float] | None = None,
        dtype: FloatDType = "float64",
        classes: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(n_iter=n_iter, tol=tol, dtype=dtype, classes=classes)
        self.biases = DEFAULT_BIASES if biases is None else np.asarray(biases, dtype=float)
        self.spreads = DEFAULT_SPREADS if spreads is None else np.asarray(spreads, dtype=float)
        self.lapses = DEFAULT_LAPSES if lapses is None else np.asarray(lapses, dtype=float)
        self._grid_for: int | None = None

    def _grid(self, K: int) -> tuple[np.ndarray, np.ndarray]:
        """Log-confusions of every grid point, ``(K·K [true, observed]) × G``, and the points."""
        if self._grid_for != K:
            b, s, lam = np.meshgrid(self.biases, self.spreads, self.lapses, indexing="ij")
            points = np.stack([b.ravel(), s.ravel(), lam.ravel()], axis=1)
            conf = ordered_probit_confusion(K, points[:, 0], points[:, 1], points[:, 2])
            self._grid_log = np.log(np.maximum(conf, EPS)).reshape(len(points), K * K).T.copy()
            self._grid_points = points
            self._grid_for = K
        return self._grid_log, self._grid_points

    def _confusion(self, counts: np.ndarray, mats: LabelMatrices) -> np.ndarray:
        A, K, _ = counts.shape
        grid_log, points = self._grid(K)
        # counts are [w, observed, true]; the grid is laid out [true, observed]
        by_true = counts.transpose(0, 2, 1).reshape(A, K * K).astype(np.float64)
        best = np.empty(A, dtype=np.int64)
        for start in range(0, A, _BLOCK):
            best[start : start + _BLOCK] = np.argmax(by_true[start : start + _BLOCK] @ grid_log, 1)
        params = points[best]
        self._params = params
        conf = ordered_probit_confusion(K, params[:, 0], params[:, 1], params[:, 2])
        return np.ascontiguousarray(conf.transpose(0, 2, 1))

    def _store_params(self, encoded: EncodedLabels, conf: np.ndarray, priors: np.ndarray) -> None:
        super()._store_params(encoded, conf, priors)
        index = encoded.annotator_index
        self.bias_ = pd.Series(self._params[:, 0], index=index, name="bias")
        self.spread_ = pd.Series(self._params[:, 1], index=index, name="spread")
        self.lapse_ = pd.Series(self._params[:, 2], index=index, name="lapse")
