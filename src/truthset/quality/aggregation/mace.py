"""MACE: Multi-Annotator Competence Estimation.

Hovy, Berg-Kirkpatrick, Vaswani & Hovy (2013), "Learning whom to trust with MACE",
NAACL-HLT, 1120-1130.

On each item a reader either *knows* the answer (with probability ``competence_j``) and gives
the true class, or *spams*: gives a label drawn from their own spam distribution ``xi_j`` over
the classes, whatever the truth. The true classes have a uniform prior. The model is fitted by
EM, or by variational Bayes (the default, as in the paper and crowd-kit) with a symmetric
``Beta(alpha, beta)`` prior on spamming and a symmetric ``Dirichlet(strategy_prior)`` prior on
each spam distribution. Several random restarts are run and the one with the highest marginal
log-likelihood is kept.

Conventions follow crowd-kit's ``MACE`` (same priors, smoothing ``smoothing / K`` for EM, fixed
iteration count) with three differences, all deliberate:

* every quantity is computed in log space, on ``readers × classes`` tables and sparse count
  matrices (see :class:`_MaceProblem`), so items with many labels do not underflow and the fit
  is one to two orders of magnitude faster;
* the restarts really differ: each draws its start from one ``numpy`` generator seeded by
  ``random_state`` (crowd-kit reseeds every restart with the same seed, so its restarts are
  copies of one run);
* gold answers are clamped: a gold item's posterior is its gold class in every E-step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import digamma

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.table import EncodedLabels

__all__ = ["MACE"]

#: Smallest probability used inside a logarithm (keeps ``log 0`` finite when EM smoothing is 0).
_TINY = 1e-300
#: Most item × class × restart numbers held at once.
_BATCH_CELLS = 4_000_000


class _MaceProblem:
    """The sparse design of one MACE fit and its E-step.

    Every parameter the E-step needs depends on a label row only through its (reader, label)
    pair, so the E-step works on ``readers × classes`` tables and a sparse count matrix
    ``item_class_pair`` ((class, item) × (reader, label) pairs, nonzero only where the class is
    the label) and its transpose. Each E-step is then two sparse matrix products. Class-major
    rows make the item × class × restart arrays ``class × item × restart`` in memory, so the
    reductions over classes are element-wise passes over contiguous blocks.
    """

    def __init__(self, encoded: EncodedLabels, gold: np.ndarray) -> None:
        order = np.lexsort((encoded.labels, encoded.annotators, encoded.items))
        items = encoded.items[order]
        annotators = encoded.annotators[order]
        labels = encoded.labels[order]
        self.n_items = n = encoded.n_items
        self.n_annotators = m = encoded.n_annotators
        self.n_classes = k = encoded.n_classes
        pair = annotators * k + labels
        ones = np.ones(len(items))
        self.item_class_pair = sparse.csr_matrix(
            (ones, (labels * n + items, pair)), shape=(k * n, m * k)
        )
        self.pair_item_class = self.item_class_pair.T.tocsr()
        self.pair_counts = np.bincount(pair, minlength=m * k).reshape(m, k).astype(float)
        self.annotator_counts = self.pair_counts.sum(axis=1)
        self.gold_rows = np.flatnonzero(gold >= 0)
        self.gold_classes = gold[self.gold_rows]

    def e_step(
        self, spam: np.ndarray, know: np.ndarray, theta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One E-step for ``R`` parameter sets at once (one per restart, the last axis).

        Parameters
        ----------
        spam, know:
            Reader × R: the (possibly sub-normalised, under VB) weights of spamming and knowing.
        theta:
            Reader × class × R spam distributions.

        Returns
        -------
        log_likelihood:
            R marginal log-likelihoods of the labels (of labels and gold where gold is given).
        posterior:
            Item × class × R posteriors of the true class.
        knowing_counts:
            Reader × 2 × R expected counts of (spamming, knowing).
        strategy_counts:
            Reader × class × R expected counts of spam labels.
        """
        n, k, r = self.n_items, self.n_classes, theta.shape[2]
        # P(label y | truth c) = spam * theta[y] + know * [y == c], per (reader, label) pair.
        spam_term = np.maximum(spam[:, None, :] * theta, _TINY)
        match_term = spam_term + know[:, None, :]
        log_spam = np.log(spam_term)
        log_ratio = (np.log(match_term) - log_spam).reshape(-1, r)
        # class × item × restart. The log-likelihood of an item's labels under truth c is
        # sum(log_spam) over its labels (the same for every c, so it cancels in the posterior
        # and is added to the marginal likelihood below in closed form) plus log_ratio over the
        # labels equal to c.
        logits = np.asarray(self.item_class_pair @ log_ratio).reshape(k, n, r)
        if len(self.gold_rows):
            gold_logits = logits[self.gold_classes, self.gold_rows, :]
            logits[:, self.gold_rows] = -np.inf
            logits[self.gold_classes, self.gold_rows, :] = gold_logits
        top = logits.max(axis=0)
        posterior = logits
        posterior -= top
        np.exp(posterior, out=posterior)
        total = posterior.sum(axis=0)
        posterior /= total
        log_likelihood = (np.log(total) + top).sum(axis=0)
        log_likelihood += self.pair_counts.reshape(-1) @ log_spam.reshape(-1, r) - n * np.log(k)
        # P(spamming on a label y | data) = 1 - P(truth = y) * (1 - spam / match); summed per
        # (reader, label) pair that is n_jy - (1 - spam / match) * sum of P(truth = y).
        own = np.asarray(self.pair_item_class @ posterior.reshape(k * n, r)).reshape(theta.shape)
        strategy_counts = self.pair_counts[:, :, None] - (1.0 - spam_term / match_term) * own
        strategy_counts = np.maximum(strategy_counts, 0.0)
        spam_counts = strategy_counts.sum(axis=1)
        knowing_counts = np.stack([spam_counts, self.annotator_counts[:, None] - spam_counts], 1)
        return log_likelihood, posterior.transpose(1, 0, 2), knowing_counts, strategy_counts


def _normalize(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """``counts + smoothing`` divided by its sums along axis 1 (zero sums stay 0)."""
    smoothed = counts + smoothing
    total = smoothed.sum(axis=1, keepdims=True)
    return np.divide(smoothed, total, out=np.zeros_like(smoothed), where=total > 1e-12)


def _variational_normalize(counts: np.ndarray, prior: float | np.ndarray) -> np.ndarray:
    """Mean-field VB update along axis 1: ``exp(digamma(n + a) - digamma(sum(n + a)))``."""
    smoothed = counts + prior
    return np.exp(digamma(smoothed) - digamma(smoothed.sum(axis=1, keepdims=True)))


class MACE(Aggregator):
    """MACE (Hovy et al., 2013): reader competence and spam distributions, by EM or VB.

    Parameters
    ----------
    n_iter:
        EM / VB iterations in each restart.
    n_restarts:
        Random restarts; the one with the highest marginal log-likelihood is kept.
    smoothing:
        EM only: ``smoothing / K`` is added to every expected count before normalising
        (the paper's and crowd-kit's default, 0.01).
    random_state:
        Seed of the generator that draws every restart's starting point.
    method:
        ``"vb"`` (variational Bayes with the priors below) or ``"em"``.
    default_noise:
        Starting weights are drawn uniformly from ``[1, 1 + default_noise]``, then normalised.
    alpha, beta:
        VB only: ``Beta`` prior parameters on (spamming, knowing).
    strategy_prior:
        VB only: symmetric ``Dirichlet`` prior parameter on each spam distribution.
    classes:
        The schema's classes in order (see :class:`Aggregator`).

    Attributes
    ----------
    competence_ : pd.Series
        Probability that each reader knows the answer rather than spams (indexed by annotator).
    skills_ : pd.Series
        The same values under the name every aggregator shares (what ``truthset aggregate``
        prints).
    spam_distributions_ : pd.DataFrame
        Annotator × class: the label distribution each reader draws from when spamming.
    log_likelihood_ : float
        Marginal log-likelihood of the kept restart.
    n_iter_ : int
        Iterations run in the kept restart.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"item": [1, 1, 1, 2, 2, 2], "annotator": ["a", "b", "c"] * 2,
    ...                       "label": ["x", "x", "y", "y", "y", "y"]})
    >>> MACE().fit_predict(table).tolist()
    ['x', 'y']
    """

    def __init__(
        self,
        n_iter: int = 50,
        n_restarts: int = 10,
        smoothing: float = 0.01,
        random_state: int = 0,
        method: Literal["vb", "em"] = "vb",
        *,
        default_noise: float = 0.5,
        alpha: float = 0.5,
        beta: float = 0.5,
        strategy_prior: float = 10.0,
        classes: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(classes=classes)
        if n_iter < 1:
            raise InputError("n_iter must be at least 1", field="n_iter")
        if n_restarts < 1:
            raise InputError("n_restarts must be at least 1", field="n_restarts")
        if method not in ("vb", "em"):
            raise InputError(f"method must be 'vb' or 'em', not {method!r}", field="method")
        if smoothing < 0:
            raise InputError("smoothing must not be negative", field="smoothing")
        if min(alpha, beta, strategy_prior) <= 0:
            raise InputError("alpha, beta and strategy_prior must be positive", field="alpha")
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.smoothing = smoothing
        self.random_state = random_state
        self.method = method
        self.default_noise = default_noise
        self.alpha = alpha
        self.beta = beta
        self.strategy_prior = strategy_prior

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        """Run the restarts; set ``competence_``, ``spam_distributions_``, ``n_iter_``; return
        the posterior of the best restart."""
        problem = _MaceProblem(encoded, gold)
        m, k = encoded.n_annotators, encoded.n_classes
        rng = np.random.default_rng(self.random_state)
        smoothing = self.smoothing / k
        prior_spam_know = np.array([self.alpha, self.beta])

        # Every restart's start comes from the one generator, in turn, so restart r starts at
        # the same point whatever n_restarts is.
        starts = [
            (
                _normalize(rng.uniform(1.0, 1.0 + self.default_noise, size=(m, 2)), 0.0),
                _normalize(rng.uniform(1.0, 1.0 + self.default_noise, size=(m, k)), 0.0),
            )
            for _ in range(self.n_restarts)
        ]
        # Restarts run side by side (a trailing axis), in batches that keep the item × class ×
        # restart arrays to a few million numbers.
        batch = max(1, min(self.n_restarts, _BATCH_CELLS // max(1, encoded.n_items * k)))
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for first in range(0, self.n_restarts, batch):
            chunk = starts[first : first + batch]
            spamming = np.stack([spam for spam, _ in chunk], axis=2)  # m × 2 × R
            theta = np.stack([th for _, th in chunk], axis=2)  # m × k × R
            loglik, _, knowing, strategy = problem.e_step(spamming[:, 0], spamming[:, 1], theta)
            for _ in range(self.n_iter):
                if self.method == "vb":
                    spamming = _variational_normalize(knowing, prior_spam_know[None, :, None])
                    theta = _variational_normalize(strategy, self.strategy_prior)
                else:
                    spamming = _normalize(knowing, smoothing)
                    theta = _normalize(strategy, smoothing)
                loglik, _, knowing, strategy = problem.e_step(spamming[:, 0], spamming[:, 1], theta)
            # The first restart wins ties, as if they had run one after another.
            winner = int(np.argmax(loglik))
            if best is None or loglik[winner] > best[0]:
                best = (float(loglik[winner]), spamming[:, :, winner], theta[:, :, winner])

        assert best is not None
        loglik_best, spamming_best, theta_best = best
        _, posterior, _, _ = problem.e_step(
            spamming_best[:, :1], spamming_best[:, 1:], theta_best[:, :, None]
        )
        posterior = np.ascontiguousarray(posterior[:, :, 0])
        spamming, theta = spamming_best, theta_best
        self.n_iter_ = self.n_iter
        self.log_likelihood_ = loglik_best
        weights = spamming.sum(axis=1)
        competence = np.divide(spamming[:, 1], weights, out=np.zeros(m), where=weights > 0)
        self.competence_ = pd.Series(competence, index=encoded.annotator_index, name="competence")
        self.skills_ = self.competence_.rename("skill")
        self.spam_distributions_ = pd.DataFrame(
            _normalize(theta, 0.0), index=encoded.annotator_index, columns=encoded.classes
        )
        return posterior
