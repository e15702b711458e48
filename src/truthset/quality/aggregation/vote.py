"""Voting aggregators: majority vote, weighted majority vote and, for ordinal schemas, the median.

Every vote here is closed-form (``n_iter_ = 0``) and vectorised over labels with ``np.bincount``.

Tie policy
----------
A tie is an item whose top vote share is reached by two or more classes. What happens to it is
a parameter, never a hidden default, and the tied items are reported in ``ties_``:

* ``"lowest"`` — the first tied class in ``classes_`` order (the default). Off ties,
  ``MajorityVote()`` gives exactly crowd-kit's majority vote (labels, vote shares and reader
  skills); on ties crowd-kit takes the first column of ``value_counts().unstack()``, whose order
  depends on the pandas version (with pandas 3: the label most frequent in the whole table).
* ``"random"`` — one of the tied classes drawn uniformly with ``random_state`` (reproducible).
* ``"undecided"`` — no label (``pd.NA``) and a ``NaN`` confidence: the item needs a reader more.

Gold answers passed to ``fit`` are clamped: a gold item's label is its gold class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.dawid_skene import clamp_gold
from truthset.quality.table import EncodedLabels

TiePolicy = Literal["lowest", "random", "undecided"]
_TIE_POLICIES = ("lowest", "random", "undecided")
#: Relative tolerance under which two weighted vote shares count as tied.
_TIE_RTOL = 1e-12


def choose_with_ties(
    scores: np.ndarray, tie: TiePolicy, random_state: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(chosen class code or -1, tied mask)`` for an item × class score matrix."""
    top = scores.max(axis=1, keepdims=True)
    is_top = scores >= top - _TIE_RTOL * np.abs(top)
    tied = is_top.sum(axis=1) > 1
    if tie == "random":
        rng = np.random.default_rng(random_state)
        chosen = np.argmax(is_top * rng.random(scores.shape), axis=1)
    else:
        chosen = np.argmax(is_top, axis=1)
        if tie == "undecided":
            chosen = np.where(tied, -1, chosen)
    return np.asarray(chosen, dtype=np.int64), tied


def agreement(encoded: EncodedLabels, chosen: np.ndarray) -> np.ndarray:
    """Each reader's share of labels equal to the chosen label (undecided items left out);
    ``NaN`` for a reader with no decided item."""
    target = chosen[encoded.items]
    decided = target >= 0
    A = encoded.n_annotators
    hits = np.bincount(
        encoded.annotators, weights=(encoded.labels == target) & decided, minlength=A
    )
    total = np.bincount(encoded.annotators, weights=decided, minlength=A)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def _check_tie(tie: str) -> None:
    if tie not in _TIE_POLICIES:
        raise InputError(f"unknown tie policy {tie!r}; use one of {_TIE_POLICIES}", field="tie")


class MajorityVote(Aggregator):
    """The most frequent label of each item; the posterior is the vote share.

    Parameters
    ----------
    tie:
        Tie policy (``"lowest"``, ``"random"``, ``"undecided"``), see the module notes.
    random_state:
        Seed for ``tie="random"``.
    classes:
        The schema's classes in order.

    Attributes
    ----------
    ties_ : pd.Index
        Items whose top vote was shared by two or more classes.
    skills_ : pd.Series
        Each reader's agreement with the result (share of their labels equal to it).
    """

    def __init__(
        self,
        tie: TiePolicy = "lowest",
        random_state: int | None = 0,
        *,
        classes: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(classes=classes)
        _check_tie(tie)
        self.tie: TiePolicy = tie
        self.random_state = random_state

    def _scores(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        return encoded.counts().astype(np.float64)

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        scores = self._scores(encoded, gold)
        totals = scores.sum(axis=1, keepdims=True)
        proba = np.divide(
            scores,
            totals,
            out=np.full_like(scores, 1.0 / max(encoded.n_classes, 1)),
            where=totals > 0,
        )
        clamp_gold(proba, gold)
        chosen, tied = choose_with_ties(proba, self.tie, self.random_state)
        self._chosen = chosen
        self.ties_ = encoded.item_index[tied]
        self.skills_ = pd.Series(
            agreement(encoded, chosen), index=encoded.annotator_index, name="skill"
        )
        return proba

    def _choose(self, proba: np.ndarray) -> np.ndarray:
        return self._chosen


class WeightedMajorityVote(MajorityVote):
    """Majority vote where each reader's label counts with a weight.

    Parameters
    ----------
    weights:
        ``annotator -> weight`` (non-negative). When omitted, weights are the log-odds of each
        reader's estimated accuracy ``a`` under a one-coin model with ``K`` classes,
        ``w = log((K − 1) · a / (1 − a))`` floored at 0 (the optimal weighted vote for
        independent readers; Nitzan & Paroush 1982). ``a`` is the reader's accuracy on gold
        items when ``fit`` gets gold and the reader labelled some, otherwise their
        leave-one-out agreement: each of their labels compared with the majority vote of the
        *other* readers of the same item, where that vote is decided (so a reader's own vote
        never inflates their score). Both are smoothed as ``(hits + 1) / (n + 2)``. An item
        whose readers all weigh 0 gets the plain majority vote.
    tie, random_state, classes:
        As in :class:`MajorityVote`.

    Attributes
    ----------
    weights_ : pd.Series
        The weight used for each reader.
    skills_ : pd.Series
        The estimated accuracies behind the weights (given weights: agreement with the result).
    """

    def __init__(
        self,
        weights: pd.Series | None = None,
        tie: TiePolicy = "lowest",
        random_state: int | None = 0,
        *,
        classes: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(tie=tie, random_state=random_state, classes=classes)
        self.weights = weights

    def _estimated_accuracy(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        A = encoded.n_annotators
        # leave-one-out: each label against the majority vote of the *other* labels of its
        # item, counted only where that vote is decided (no self-agreement, no tie guessing)
        others = encoded.counts()[encoded.items].astype(np.float64)
        others[np.arange(len(encoded.labels)), encoded.labels] -= 1.0
        peer_vote, peer_tied = choose_with_ties(others, "lowest", None)
        decided = ~peer_tied & (others.sum(axis=1) > 0)
        del others
        hits = np.bincount(
            encoded.annotators, weights=decided & (peer_vote == encoded.labels), minlength=A
        )
        total = np.bincount(encoded.annotators, weights=decided, minlength=A)
        on_gold = gold[encoded.items] >= 0
        if on_gold.any():
            g_total = np.bincount(encoded.annotators, weights=on_gold, minlength=A)
            g_hits = np.bincount(
                encoded.annotators,
                weights=on_gold & (encoded.labels == gold[encoded.items]),
                minlength=A,
            )
            has_gold = g_total > 0
            hits = np.where(has_gold, g_hits, hits)
            total = np.where(has_gold, g_total, total)
        return (hits + 1.0) / (total + 2.0)

    def _scores(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        K = encoded.n_classes
        if self.weights is None:
            accuracy = self._estimated_accuracy(encoded, gold)
            weights = np.maximum(np.log(max(K - 1, 1) * accuracy / (1.0 - accuracy)), 0.0)
        else:
            given = pd.Series(self.weights)
            aligned = given.reindex(encoded.annotator_index)
            missing = aligned.isna().to_numpy()
            if missing.any():
                raise InputError(
                    f"no weight for annotator {encoded.annotator_index[np.argmax(missing)]!r} "
                    f"({int(missing.sum())} annotator(s) without a weight)",
                    field="weights",
                )
            weights = aligned.to_numpy(dtype=np.float64)
            if (weights < 0).any() or not np.isfinite(weights).all():
                raise InputError("weights must be finite and non-negative", field="weights")
            accuracy = None
        self.weights_ = pd.Series(weights, index=encoded.annotator_index, name="weight")
        self._accuracy = accuracy
        flat = encoded.items * K + encoded.labels
        scores = np.bincount(
            flat, weights=weights[encoded.annotators], minlength=encoded.n_items * K
        ).reshape(encoded.n_items, K)
        # an item whose readers all weigh 0 falls back to the plain vote
        unweighted = scores.sum(axis=1) <= 0
        if unweighted.any():
            scores[unweighted] = encoded.counts()[unweighted]
        return scores

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        proba = super()._fit_encoded(encoded, gold)
        if self._accuracy is not None:
            self.skills_ = pd.Series(self._accuracy, index=encoded.annotator_index, name="skill")
        return proba


class MedianVote(MajorityVote):
    """Ordinal vote: the median label of each item, in ``classes`` order.

    With an even number of labels the two middle labels may differ; that is a tie, settled by
    ``tie`` (``"lowest"`` = the lower median, ``"random"``, or ``"undecided"``). The
    posterior reported is the vote share (as for :class:`MajorityVote`); ``confidence_`` is
    the share of labels equal to the median. Pass ``classes`` in their clinical order (e.g.
    BI-RADS ``1..5``) — otherwise the sorted labels are taken as the order.

    Attributes
    ----------
    ties_ : pd.Index
        Items whose two middle labels differ.
    skills_ : pd.Series
        Each reader's agreement with the median.
    """

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        counts = encoded.counts()
        proba = counts / counts.sum(axis=1, keepdims=True)
        clamp_gold(proba, gold)
        n = counts.sum(axis=1)
        cum = np.cumsum(counts, axis=1)
        # lower median: first class whose cumulative count reaches ceil(n/2);
        # upper median: first class whose cumulative count exceeds floor(n/2)
        lower = np.argmax(cum >= (n[:, None] + 1) // 2, axis=1)
        upper = np.argmax(cum > n[:, None] // 2, axis=1)
        tied = lower != upper
        if self.tie == "random":
            rng = np.random.default_rng(self.random_state)
            chosen = np.where(rng.random(len(n)) < 0.5, lower, upper)
        elif self.tie == "undecided":
            chosen = np.where(tied, -1, lower)
        else:
            chosen = lower
        known = gold >= 0
        chosen = np.where(known, gold, chosen).astype(np.int64)
        tied &= ~known
        self._chosen = chosen
        self.ties_ = encoded.item_index[tied]
        self.skills_ = pd.Series(
            agreement(encoded, chosen), index=encoded.annotator_index, name="skill"
        )
        return np.asarray(proba, dtype=np.float64)
