"""Skill-aware routing: which open read a reader should take (policy ``routing: skill``).

With ``routing: queue`` (the default) a reader takes the best free slot in queue order:
uncertain items first, then the oldest. With ``routing: skill`` the queue also asks how likely
*this reader's* read is to settle each candidate item, using the reader model the policy's
consensus method has fitted (one accuracy per reader for ``onecoin``, a confusion matrix per
reader for ``ds``):

- the **settle chance** of a read of an item by reader ``w`` is the probability, under the
  item's current posterior ``π`` and the reader's likelihood ``L_w[t, c] = P(w reads c | true
  t)``, that the posterior after that read reaches the target:
  ``Σ_c P(c) · 1[max_t π_t L_w[t, c] / P(c) ≥ target]`` with ``P(c) = Σ_t π_t L_w[t, c]``;
- the reader takes the candidate with the highest settle chance; when their read can settle
  none (a weak reader, or items far from the target), the candidate with the fewest reads
  (usually a fresh item); ties keep the queue order.

So reliable readers break the ties that weaker readers leave, and weaker readers take the first
reads, whose answers will be checked anyway. Every reader still takes the next task when they
ask for one: nobody is idled, and the blinding is unchanged (a reader sees neither the other
reads nor the posterior). The simulator and the task queue both call :func:`pick`.

Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from truthset.domain.policy import ROUTING_METHODS
from truthset.quality.aggregation.dawid_skene import DawidSkene, OneCoinDawidSkene

__all__ = ["REFIT_EVERY", "ROUTING_METHODS", "Candidate", "ReaderModel", "pick",
           "settle_chance", "settle_chances"]

#: Reads of a project after which the reader model routing uses is fitted anew (the task queue
#: and the simulator both); in between, an item's posterior is computed from its own reads
#: under the kept model (:meth:`ReaderModel.posterior`).
REFIT_EVERY = 30


@dataclass(frozen=True)
class ReaderModel:
    """Each reader's likelihood ``P(read c | true t)`` (``K × K``) and the class prior.

    Attributes
    ----------
    classes:
        Class names, in the order of every matrix and posterior.
    likelihoods:
        Reader -> ``K × K`` matrix, rows the true class, columns the read.
    prior:
        Class probabilities before any read (the posterior of an unread item).
    default:
        The likelihood used for a reader the model has not seen (the mean of the others, or
        an uninformative reader when there are none).
    """

    classes: tuple[str, ...]
    likelihoods: Mapping[str, np.ndarray]
    prior: np.ndarray
    default: np.ndarray

    @classmethod
    def from_accuracies(cls, classes: Sequence[str], accuracies: Mapping[str, float],
                        prior: Sequence[float] | None = None) -> ReaderModel:
        """A one-coin model: reader ``w`` reads the true class with probability ``s_w`` and
        each other class with ``(1 - s_w) / (K - 1)``; ``prior`` defaults to equal classes."""
        k = len(classes)
        mats = {str(w): _one_coin(float(s), k) for w, s in accuracies.items()}
        mean = float(np.mean(list(accuracies.values()))) if accuracies else 1.0 / k
        return cls(tuple(classes), mats, _prior(prior, k), _one_coin(mean, k))

    @classmethod
    def from_fit(cls, model: object, classes: Sequence[str]) -> ReaderModel:
        """The reader model of a fitted ``onecoin`` or ``ds`` aggregator.

        ``onecoin`` gives one accuracy per reader (``skills_``); ``ds`` a confusion matrix per
        reader (``confusion_matrices_``, rows the true class; a row the reader never used is
        spread evenly). The prior is the fitted class prior (``priors_``).

        Raises
        ------
        TypeError
            ``model`` is neither (it has no reader model routing can use).
        """
        k = len(classes)
        if not isinstance(model, DawidSkene):
            raise TypeError(f"{type(model).__name__} has no reader model to route with")
        prior = [float(model.priors_.get(c, 0.0)) for c in classes]
        if isinstance(model, OneCoinDawidSkene):
            return cls.from_accuracies(
                classes, {str(w): float(s) for w, s in model.skills_.items()}, prior)
        # The fit's matrices follow its own class order; put them in ``classes`` order.
        fitted = [str(c) for c in model.classes_]
        ours = [i for i, c in enumerate(classes) if c in fitted]
        theirs = [fitted.index(classes[i]) for i in ours]
        mats: dict[str, np.ndarray] = {}
        for w, raw in zip(model.skills_.index,
                          np.asarray(model.confusion_matrices_, dtype=float), strict=True):
            mat = np.zeros((k, k))
            mat[np.ix_(ours, ours)] = raw[np.ix_(theirs, theirs)]
            empty = mat.sum(axis=1) <= 0
            mat[empty] = 1.0 / k
            mats[str(w)] = mat / mat.sum(axis=1, keepdims=True)
        default = (np.mean(list(mats.values()), axis=0) if mats
                   else np.full((k, k), 1.0 / k))
        return cls(tuple(classes), mats, _prior(prior, k), default)

    def likelihood(self, reader: str) -> np.ndarray:
        """Reader's ``K × K`` likelihood (the default one for a reader the model has not seen)."""
        return self.likelihoods.get(reader, self.default)

    def posterior(self, reads: Sequence[tuple[str, str | None]]) -> np.ndarray:
        """An item's class posterior from its ``(reader, label)`` reads: the prior times each
        read's likelihood row, normalised (reads of a label outside the classes are ignored)."""
        post = self.prior.copy()
        for reader, label in reads:
            if label in self.classes:
                post = self.update(post, reader, label)
        return post

    def update(self, posterior: np.ndarray, reader: str, label: str) -> np.ndarray:
        """The posterior after ``reader`` reads ``label`` (Bayes' rule with the reader's row)."""
        new = posterior * self.likelihood(reader)[:, self.classes.index(label)]
        total = float(new.sum())
        return new / total if total > 0 else np.full(len(self.classes), 1.0 / len(self.classes))


def _one_coin(accuracy: float, k: int) -> np.ndarray:
    if k == 1:
        return np.ones((1, 1))
    mat = np.full((k, k), (1.0 - accuracy) / (k - 1))
    np.fill_diagonal(mat, accuracy)
    return mat


def _prior(prior: Sequence[float] | None, k: int) -> np.ndarray:
    if prior is None:
        return np.full(k, 1.0 / k)
    arr = np.clip(np.asarray(prior, dtype=float), 0.0, None)
    total = float(arr.sum())
    return arr / total if total > 0 else np.full(k, 1.0 / k)


def settle_chance(posterior: np.ndarray, likelihood: np.ndarray, target: float) -> float:
    """Probability that one more read (by a reader with ``likelihood``) brings the item's
    highest class posterior to ``target`` or above.

    Parameters
    ----------
    posterior:
        The item's class posterior now (length ``K``).
    likelihood:
        ``K × K``: ``P(read c | true t)``, rows the true class.
    target:
        The posterior the policy stops at.

    Examples
    --------
    Two classes, an item at 50/50 and a reader right 90 % of the time: whichever way they
    read, the posterior becomes 0.9, so the read settles the item at target 0.9 for sure.

    >>> import numpy as np
    >>> settle_chance(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]]), 0.9)
    1.0
    """
    return float(settle_chances(np.asarray(posterior, dtype=float)[None, :], likelihood,
                                target)[0])


def settle_chances(posteriors: np.ndarray, likelihood: np.ndarray, target: float) -> np.ndarray:
    """:func:`settle_chance` of many items at once (``posteriors``: ``n × K``)."""
    joint = posteriors[:, :, None] * likelihood[None, :, :]   # item × true t × read c
    p_read = joint.sum(axis=1)                                 # item × read c
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.where(p_read > 0, joint.max(axis=1) / p_read, 0.0)
    return np.where(best >= target - 1e-12, p_read, 0.0).sum(axis=1)


@dataclass(frozen=True)
class Candidate:
    """An open read the reader may take: ``key`` (slot or item), the item's reads so far and
    its current posterior (``None`` when it has no reads: the model's prior is used)."""

    key: Hashable
    reads: int
    posterior: np.ndarray | None = None


def pick(candidates: Sequence[Candidate], model: ReaderModel, reader: str, *, target: float,
         min_reads: int = 1) -> int:
    """Index of the candidate ``reader`` should take (see the module docstring).

    Parameters
    ----------
    candidates:
        Open reads in queue order (best first); at least one.
    model:
        The fitted reader model.
    reader:
        Who asks.
    target:
        The policy's target posterior.
    min_reads:
        Reads an item needs before it may settle (``m`` of an adaptive policy, ``k`` of a
        consensus): a read that leaves an item under it cannot settle it.

    Raises
    ------
    ValueError
        No candidates.
    """
    if not candidates:
        raise ValueError("no candidates to pick from")
    reads = np.array([c.reads for c in candidates])
    posts = np.stack([model.prior if c.posterior is None else np.asarray(c.posterior, float)
                      for c in candidates])
    chance = np.round(settle_chances(posts, model.likelihood(reader), target), 12)
    chance[reads + 1 < min_reads] = 0.0
    # Highest chance, then fewest reads; np.lexsort is stable, so ties keep the queue order.
    order = np.lexsort((reads, -chance))
    return int(order[0])
