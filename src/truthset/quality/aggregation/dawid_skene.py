"""Dawid–Skene EM: full confusion matrices (:class:`DawidSkene`) and one skill per reader
(:class:`OneCoinDawidSkene`).

Dawid & Skene (1979) model each reader ``w`` by a confusion matrix
``π[w, true, observed] = P(reader w says observed | the item's true class is true)`` and each
item by a latent true class with prior ``p``. EM alternates

* **M-step** — soft counts ``T[w, observed, true] = Σ P(item true class = true)`` over reader
  ``w``'s labels that say ``observed``; normalised over ``observed`` they are ``π``; the prior is
  the mean posterior over items;
* **E-step** — ``log P(true = c | labels of i) ∝ log p[c] + Σ_labels log π[w, c, observed]``.

Speed
-----
Both sums are sparse matrix products. The labels are encoded once as a sparse
``(annotator·K + observed) × item`` incidence matrix ``X`` (one stored entry per label, repeated
labels summed), so an M-step is ``X @ P`` and an E-step ``Xᵀ @ log π`` (with ``log π`` laid out as
``(annotator·K + observed) × K``): each iteration costs ``O(n_labels · K + n_annotators · K²)``
time and keeps no per-label dense array. Ten million labels fit in well under 4 GB
(``bench/bench_aggregation_speed.py``).

Conventions (aligned with crowd-kit 1.4.2 so that results agree)
-------------------------------------------------------------------
* initial posteriors are the majority-vote shares (repeated labels counted), gold items clamped;
* each iteration is E-step, gold clamp, prior, M-step, then the evidence lower bound per label;
  EM stops after ``n_iter`` iterations or when the bound improves by less than ``tol``;
* confusion entries are clipped below at ``1e-10`` before normalisation, over the labels a reader
  actually used (a label a reader never gave has probability 0);
* exact posterior ties go to the first class in ``classes_`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.table import EncodedLabels
from truthset.quality.threads import one_blas_thread

#: Floor on probabilities before logs, as in crowd-kit.
EPS = 1e-10

FloatDType = Literal["float64", "float32"]


@dataclass(frozen=True)
class LabelMatrices:
    """Sparse incidence of labels, built once per fit.

    Attributes
    ----------
    by_pair:
        CSR ``(n_annotators·K) × n_items``; entry = how many times reader ``w`` said class ``k``
        on item ``i`` (row ``w·K + k``).
    by_item:
        Its transpose, in CSR form (``n_items × n_annotators·K``).
    pair_counts:
        Labels per (annotator, observed class), shape ``(n_annotators, K)``.
    n_per_item:
        Labels per item.
    """

    by_pair: sp.csr_matrix
    by_item: sp.csr_matrix
    pair_counts: np.ndarray
    n_per_item: np.ndarray


def label_matrices(encoded: EncodedLabels, dtype: FloatDType = "float64") -> LabelMatrices:
    """Build the sparse incidence matrices used by the EM methods."""
    K = encoded.n_classes
    n_pairs = encoded.n_annotators * K
    pair = encoded.annotators * K + encoded.labels
    idx_dtype = np.int32 if max(n_pairs, encoded.n_items) < 2**31 - 1 else np.int64
    ones = np.ones(len(pair), dtype=dtype)
    by_pair = sp.csr_matrix(
        (ones, (pair.astype(idx_dtype), encoded.items.astype(idx_dtype))),
        shape=(n_pairs, encoded.n_items),
    )
    del ones
    by_pair.sum_duplicates()
    by_item = by_pair.T.tocsr()
    pair_counts = np.bincount(pair, minlength=n_pairs).reshape(encoded.n_annotators, K)
    n_per_item = np.bincount(encoded.items, minlength=encoded.n_items)
    return LabelMatrices(by_pair, by_item, pair_counts, n_per_item)


def vote_shares(encoded: EncodedLabels, dtype: FloatDType = "float64") -> np.ndarray:
    """Item × class share of the labels (majority-vote probabilities)."""
    counts = encoded.counts().astype(dtype)
    return counts / counts.sum(axis=1, keepdims=True)


def clamp_gold(proba: np.ndarray, gold: np.ndarray) -> None:
    """Set the posterior of every gold item to its known class (in place)."""
    known = np.flatnonzero(gold >= 0)
    if len(known):
        proba[known] = 0.0
        proba[known, gold[known]] = 1.0


def row_max(values: np.ndarray) -> np.ndarray:
    """Maximum of each row of an ``n × K`` array with small ``K``.

    A loop over the K columns (never over rows): numpy's ``max(axis=1)`` on a short last axis
    is several times slower than K element-wise ``maximum`` passes.
    """
    out = values[:, 0].copy()
    for k in range(1, values.shape[1]):
        np.maximum(out, values[:, k], out=out)
    return out


def row_sum(values: np.ndarray) -> np.ndarray:
    """Sum of each row of an ``n × K`` array with small ``K`` (K element-wise passes: several
    times faster than ``sum(axis=1)`` or a matrix-vector product on a short last axis)."""
    out = values[:, 0].copy()
    for k in range(1, values.shape[1]):
        out += values[:, k]
    return out


def column_mean(values: np.ndarray) -> np.ndarray:
    """Mean of each column of an ``n × K`` array with small ``K`` (one pass per column)."""
    n = max(values.shape[0], 1)
    return np.array([values[:, k].sum() / n for k in range(values.shape[1])], values.dtype)


def softmax_rows(log_like: np.ndarray) -> np.ndarray:
    """Row-wise normalised ``exp`` of log-likelihoods (max-shifted for stability; in place)."""
    log_like -= row_max(log_like)[:, None]
    np.exp(log_like, out=log_like)
    log_like /= row_sum(log_like)[:, None]
    return log_like


def e_step(mats: LabelMatrices, log_conf: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Posterior over true classes from the log confusion lookups.

    ``log_conf`` has shape ``(n_annotators, observed, true)``.
    """
    A, K, _ = log_conf.shape
    log_like = np.asarray(mats.by_item @ log_conf.reshape(A * K, K))
    log_like += np.log(np.maximum(priors, EPS))
    return softmax_rows(log_like)


def soft_counts(mats: LabelMatrices, proba: np.ndarray) -> np.ndarray:
    """``T[w, observed, true]``: posterior mass of each true class behind each reader's labels."""
    A, K = mats.pair_counts.shape
    return np.asarray(mats.by_pair @ proba).reshape(A, K, proba.shape[1])


def normalise_confusion(counts: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Clip soft counts below at EPS over the used labels, normalise over ``observed``."""
    conf = np.where(present[:, :, None], np.maximum(counts, EPS), 0.0)
    conf /= conf.sum(axis=1, keepdims=True)
    return conf


def safe_log(values: np.ndarray) -> np.ndarray:
    """``log`` with zeros mapped to 0 (they are never looked up: the label was never given)."""
    out = np.zeros_like(values)
    np.log(values, out=out, where=values > 0)
    return out


def lower_bound(
    counts: np.ndarray, log_conf: np.ndarray, priors: np.ndarray, proba: np.ndarray
) -> float:
    """Evidence lower bound, summed as crowd-kit does (prior term once per label)."""
    joint = float(np.sum(counts * log_conf))
    mass_per_class = counts.sum(axis=(0, 1))
    joint += float(mass_per_class @ np.log(np.maximum(priors, EPS)))
    clipped = np.maximum(proba, EPS).ravel()
    entropy = -float(clipped @ np.log(clipped))
    return joint + entropy


class DawidSkene(Aggregator):
    """Dawid–Skene (1979) EM with a full confusion matrix per reader.

    Parameters
    ----------
    n_iter:
        Most EM iterations.
    tol:
        Stop when the evidence lower bound per label improves by less than this.
    init:
        ``"mv"`` — start from majority-vote shares (the only start, as in crowd-kit).
    class_prior:
        ``"estimate"`` (default): the class frequencies are the mean posterior, updated every
        iteration (as crowd-kit). ``"uniform"``: they stay equal, so an item's posterior rests
        on its reads alone (on items read only two or three times the estimated frequencies can
        collapse onto one class; see ``docs/benchmarks.md`` section 9).
    smoothing:
        Pseudo-count added to every confusion cell a reader used before normalising (0 = plain
        maximum likelihood, as crowd-kit).
    dtype:
        ``"float64"`` (default) or ``"float32"`` (half the memory on very large tables).
    classes:
        The schema's classes in order (see :class:`~truthset.quality.aggregation.base.Aggregator`).

    Attributes
    ----------
    confusion_matrices_ : np.ndarray
        ``annotator × true × observed``; each ``[w, c]`` row sums to 1 over the labels reader
        ``w`` used.
    confusion_ : pd.DataFrame
        The same, tidy: ``annotator, true, observed, probability`` (used labels only).
    priors_ : pd.Series
        Estimated class marginals.
    skills_ : pd.Series
        Each reader's expected accuracy, ``Σ_c priors[c] · π[w, c, c]``.
    n_iter_ : int
        EM iterations run.
    loss_history_ : list[float]
        Evidence lower bound per label after each iteration.

    Notes
    -----
    Gold answers (``fit(table, gold)``) are clamped: gold items keep a posterior of 1 on their
    known class throughout EM, so readers' confusion matrices are learnt from them with full
    weight (semi-supervised EM). A reader with a single label, or an item with a single label,
    is handled like any other: the single reader's matrix is fitted to the majority vote, so with
    one reader the result is that reader's labels. A reader who only ever gave one class has
    ``π[w, c, that class] = 1`` for every ``c`` and so carries no information (the maximum
    likelihood answer, as in crowd-kit): an item labelled only by such readers gets the class
    the priors favour. Use :class:`OneCoinDawidSkene` or a weighted vote when readers see
    few items.
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-5,
        init: Literal["mv"] = "mv",
        *,
        smoothing: float = 0.0,
        class_prior: Literal["estimate", "uniform"] = "estimate",
        dtype: FloatDType = "float64",
        classes: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(classes=classes)
        if init != "mv":
            raise InputError(f"unknown init {init!r}; use 'mv'", field="init")
        if n_iter < 0:
            raise InputError("n_iter must be >= 0", field="n_iter")
        if smoothing < 0:
            raise InputError("smoothing must be >= 0", field="smoothing")
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        if class_prior not in ("estimate", "uniform"):
            raise InputError(f"unknown class_prior {class_prior!r}; use 'estimate' or "
                             "'uniform'", field="class_prior")
        self.smoothing = smoothing
        self.class_prior = class_prior
        self.dtype: FloatDType = dtype

    def _class_priors(self, proba: np.ndarray) -> np.ndarray:
        """Class frequencies: the mean posterior, or equal under ``class_prior="uniform"``."""
        if self.class_prior == "uniform":
            return np.full(proba.shape[1], 1.0 / proba.shape[1], dtype=proba.dtype)
        return column_mean(proba)

    # -- the model-specific M-step ------------------------------------------------------------
    def _confusion(self, counts: np.ndarray, mats: LabelMatrices) -> np.ndarray:
        """Confusion ``[w, observed, true]`` from soft counts (full Dawid–Skene)."""
        present = mats.pair_counts > 0
        if self.smoothing:
            counts = counts + self.smoothing * present[:, :, None]
        return normalise_confusion(counts, present)

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        mats = label_matrices(encoded, self.dtype)
        proba = vote_shares(encoded, self.dtype)
        clamp_gold(proba, gold)
        priors = self._class_priors(proba)
        counts = soft_counts(mats, proba)
        conf = self._confusion(counts, mats)
        log_conf = safe_log(conf)
        loss = -np.inf
        history: list[float] = []
        n_done = 0
        for _ in range(self.n_iter):
            proba = e_step(mats, log_conf, priors)
            clamp_gold(proba, gold)
            priors = self._class_priors(proba)
            counts = soft_counts(mats, proba)
            conf = self._confusion(counts, mats)
            log_conf = safe_log(conf)
            n_done += 1
            new_loss = lower_bound(counts, log_conf, priors, proba) / len(encoded.labels)
            history.append(new_loss)
            if new_loss - loss < self.tol:
                break
            loss = new_loss
        self.n_iter_ = n_done
        self.loss_history_ = history
        self._store_params(encoded, conf, priors)
        return np.asarray(proba, dtype=np.float64)

    def _store_params(self, encoded: EncodedLabels, conf: np.ndarray, priors: np.ndarray) -> None:
        classes = encoded.classes
        annotators = encoded.annotator_index
        self.confusion_matrices_ = np.ascontiguousarray(conf.transpose(0, 2, 1), dtype=np.float64)
        A, K = len(annotators), len(classes)
        w, t, o = np.meshgrid(np.arange(A), np.arange(K), np.arange(K), indexing="ij")
        values = self.confusion_matrices_.ravel()
        used = np.broadcast_to(
            (conf.sum(axis=2) > 0)[:, None, :], (A, K, K)
        ).ravel()  # observed label was used by the reader
        self.confusion_ = pd.DataFrame(
            {
                "annotator": annotators.to_numpy()[w.ravel()[used]],
                "true": classes.to_numpy()[t.ravel()[used]],
                "observed": classes.to_numpy()[o.ravel()[used]],
                "probability": values[used],
            }
        )
        self.priors_ = pd.Series(np.asarray(priors, dtype=np.float64), index=classes, name="prior")
        diag = np.einsum("wcc->wc", self.confusion_matrices_)
        self.skills_ = pd.Series(diag @ self.priors_.to_numpy(), index=annotators, name="skill")


def fit_beta_prior(successes: np.ndarray, trials: np.ndarray) -> tuple[float, float] | None:
    """Beta(a, b) prior of per-reader accuracies, fitted by empirical Bayes.

    Maximises the beta-binomial marginal likelihood
    ``Σ_w log B(k_w + a, n_w − k_w + b) − log B(a, b)`` of reader ``w`` being right ``k_w`` times
    in ``n_w`` (soft counts allowed), over the mean ``a/(a+b)`` in ``[1e-4, 1 − 1e-4]`` and the
    concentration ``a + b`` in ``[0.5, 1e4]`` (the upper end pools readers completely: their
    scores vary no more than chance would make them).

    Parameters
    ----------
    successes, trials:
        Per reader: right answers and answers.

    Returns
    -------
    tuple[float, float] | None
        ``(a, b)``, or ``None`` when fewer than two readers have answers (nothing to pool).
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    keep = n > 0
    k, n = np.clip(k[keep], 0.0, n[keep]), n[keep]
    if len(n) < 2:
        return None
    pooled = float(np.clip(k.sum() / n.sum(), 1e-3, 1 - 1e-3))

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        # x = (logit mean, log concentration); value and gradient.
        mean, conc = float(expit(x[0])), float(np.exp(x[1]))
        a, b = mean * conc, (1.0 - mean) * conc
        value = float(np.sum(betaln(k + a, n - k + b)) - len(n) * betaln(a, b))
        total = digamma(n + conc)
        d_a = float(np.sum(digamma(k + a) - total) - len(n) * (digamma(a) - digamma(conc)))
        d_b = float(np.sum(digamma(n - k + b) - total) - len(n) * (digamma(b) - digamma(conc)))
        grad = np.array([(d_a - d_b) * conc * mean * (1.0 - mean),
                         (d_a * mean + d_b * (1.0 - mean)) * conc])
        return -value, -grad

    lo, hi = np.log(1e-4 / (1 - 1e-4)), np.log((1 - 1e-4) / 1e-4)
    # One BLAS thread: L-BFGS-B's vectors have two entries (see truthset.quality.threads).
    with one_blas_thread():
        result = minimize(nll, np.array([np.log(pooled / (1 - pooled)), np.log(10.0)]),
                          jac=True, method="L-BFGS-B",
                          bounds=[(lo, hi), (np.log(0.5), np.log(1e4))])
    mean, conc = float(expit(result.x[0])), float(np.exp(result.x[1]))
    return mean * conc, (1.0 - mean) * conc


class OneCoinDawidSkene(DawidSkene):
    """Dawid–Skene with one accuracy per reader ("one-coin", Zhang et al. 2016).

    Reader ``w`` gives the true class with probability ``s_w`` and each wrong class with
    probability ``(1 − s_w)/(K − 1)``. The M-step sets ``s_w`` to the mean posterior of the class
    the reader chose, as crowd-kit does; confusion entries are clipped to ``[1e-10, 1 − 1e-10]``.
    Gold answers are clamped as in :class:`DawidSkene` (crowd-kit's one-coin takes none).

    Parameters
    ----------
    skill_prior:
        ``"none"`` (default): maximum likelihood, as above. ``"empirical"``: every reader's
        accuracy has a Beta(a, b) prior, fitted at every M-step by empirical Bayes
        (:func:`fit_beta_prior`) to all readers' counts, and ``s_w`` is the mean of the reader's
        Beta posterior, ``(agree_w + a) / (n_w + a + b)``: a reader seen on few items is pulled
        towards the crowd's accuracy instead of 0 or 1. The counts are the reads that say
        something about a reader: on gold items (right or wrong, counted whole) and on items
        read more than once (soft counts). An item read once is left out: with equal class
        frequencies its one read fits every accuracy equally well, and counting it would echo
        the reader's current accuracy back as evidence. With fewer than two readers counted
        the prior is a flat Beta(1, 1). A pair ``(a, b)`` fixes the prior instead. With a
        prior, EM stops when no reader's accuracy moves by more than ``tol``.
    **kwargs:
        As :class:`DawidSkene`.

    Attributes
    ----------
    skills_ : pd.Series
        ``s_w``, each reader's accuracy.
    skill_prior_ : tuple[float, float] | None
        The Beta prior used in the last M-step (``None`` without one).
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, init: Literal["mv"] = "mv", *,
                 skill_prior: Literal["none", "empirical"] | tuple[float, float] = "none",
                 **kwargs: Any) -> None:
        super().__init__(n_iter, tol, init, **kwargs)
        if isinstance(skill_prior, str):
            if skill_prior not in ("none", "empirical"):
                raise InputError(f"unknown skill_prior {skill_prior!r}; use 'none', "
                                 "'empirical' or a pair (a, b)", field="skill_prior")
        elif len(skill_prior) != 2 or min(skill_prior) <= 0:
            raise InputError("skill_prior (a, b) must be two positive numbers",
                             field="skill_prior")
        self.skill_prior = skill_prior
        self.skill_prior_: tuple[float, float] | None = None

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        if self.skill_prior == "none":
            return super()._fit_encoded(encoded, gold)
        mats = label_matrices(encoded, self.dtype)
        # Reads that inform the accuracies: on gold items, and on items read more than once.
        informs = ((gold >= 0) | (mats.n_per_item > 1)).astype(self.dtype)
        self._informed = np.asarray(mats.by_pair @ informs).reshape(mats.pair_counts.shape)
        proba = vote_shares(encoded, self.dtype)
        clamp_gold(proba, gold)
        priors = self._class_priors(proba)
        conf = self._confusion(soft_counts(mats, proba * informs[:, None]), mats)
        previous = self._skills
        n_done = 0
        for _ in range(self.n_iter):
            proba = e_step(mats, safe_log(conf), priors)
            clamp_gold(proba, gold)
            priors = self._class_priors(proba)
            conf = self._confusion(soft_counts(mats, proba * informs[:, None]), mats)
            n_done += 1
            moved = float(np.max(np.abs(self._skills - previous), initial=0.0))
            previous = self._skills
            if moved < self.tol:
                break
        self.n_iter_ = n_done
        self.loss_history_ = []
        self._store_params(encoded, conf, priors)
        return np.asarray(proba, dtype=np.float64)

    def _confusion(self, counts: np.ndarray, mats: LabelMatrices) -> np.ndarray:
        A, K, _ = counts.shape
        n_labels = mats.pair_counts.sum(axis=1)
        agree = np.einsum("wkk->w", counts)
        if self.skill_prior != "none":
            n_labels = self._informed.sum(axis=1)
        if self.skill_prior == "none":
            skills = agree / np.maximum(n_labels, 1)
        else:
            prior = (fit_beta_prior(agree, n_labels) if self.skill_prior == "empirical"
                     else (float(self.skill_prior[0]), float(self.skill_prior[1])))
            if prior is None:  # fewer than two readers informed: a flat Beta(1, 1)
                prior = (1.0, 1.0)
            self.skill_prior_ = prior
            a, b = prior
            skills = (agree + a) / np.maximum(n_labels + a + b, 1e-12)
        self._skills = skills
        if K == 1:
            return np.ones((A, 1, 1))
        wrong = (1.0 - skills) / (K - 1)
        conf = np.broadcast_to(wrong[:, None, None], (A, K, K)).copy()
        conf[:, np.arange(K), np.arange(K)] = skills[:, None]
        np.clip(conf, EPS, 1.0 - EPS, out=conf)
        conf[~(mats.pair_counts > 0)] = 0.0
        return conf

    def _store_params(self, encoded: EncodedLabels, conf: np.ndarray, priors: np.ndarray) -> None:
        super()._store_params(encoded, conf, priors)
        self.skills_ = pd.Series(
            np.asarray(self._skills, dtype=np.float64), index=encoded.annotator_index, name="skill"
        )
