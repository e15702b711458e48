"""STAPLE consensus of several readers' masks, binary and multi-label, and voxelwise votes.

STAPLE (Warfield, Zou & Wells, IEEE TMI 23(7), 2004) estimates, by expectation–maximisation, a
probabilistic true segmentation together with each reader's performance: sensitivity and
specificity for binary masks, a full confusion matrix for label maps (the multi-category
extension, section II-C of the paper).

Conventions follow ITK / SimpleITK so that the numbers agree with
``SimpleITK.STAPLEImageFilter`` and ``SimpleITK.MultiLabelSTAPLEImageFilter``:

Binary (:class:`STAPLE`, as ``STAPLEImageFilter`` with ``ConfidenceWeight=1``)
    - the initial probability of every voxel is the fraction of readers who marked it;
    - the prior ``g`` is the mean of that initial map (the mean foreground fraction of the
      readers), kept fixed (``prior=None``); ``prior="global"`` re-estimates it as the mean
      posterior in every M-step instead, and a float fixes it to that value;
    - every iteration is an M-step (sensitivity ``p`` and specificity ``q`` from the current
      map) followed by an E-step (posterior map from ``p``, ``q`` and ``g``);
    - it stops when, after at least two iterations, no ``p`` or ``q`` moved by more than
      ``tol`` (ITK: squared change <= 1e-14, i.e. ``tol=1e-7``), or after ``max_iter``.

Multi-label (:class:`MultiLabelSTAPLE`, as ``MultiLabelSTAPLEImageFilter``)
    - labels are ``0 .. max label`` over all inputs (absent labels get prior 0);
    - the prior of each label is its frequency over all readers' voxels;
    - confusion matrices start from majority voting: for each reader, row ``j`` (reader's
      label) is the distribution of the voted label over the voxels where that reader said
      ``j``, voxels whose vote is tied being left out;
    - each iteration is an E-step then an M-step (``confusion[k, j, c] = P(reader k says j |
      truth c)``); it stops when no matrix entry moves by ``tol`` (ITK: 1e-5) or more;
    - the label of a voxel is its most probable label; a tie for the maximum (or a voxel no
      label can explain) gets the undecided label, ``max label + 1`` by default.

Speed: the posterior of a voxel depends only on the *pattern* of its readers' labels, so each
iteration works on the distinct patterns and their voxel counts (at most ``2**R`` for ``R``
binary readers, usually a handful), not on the voxels. Voxels where all readers agree are two of
those patterns. The result is exactly the voxelwise EM, at the cost of one pass over the volume
to encode the patterns and one gather to write the probability map.

Degenerate inputs never produce NaN:

- a rate whose denominator is empty (sensitivity when no voxel is estimated foreground, e.g.
  all masks empty; specificity when every voxel is foreground) is reported as 1.0 (vacuously
  perfect) and named in ``notes``;
- a voxel pattern that no hypothesis can explain (all products 0, only reachable with rates of
  exactly 0 or 1 or floating-point underflow) gets the prior as its probability;
- identical readers give their own mask, with sensitivity = specificity = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from truthset.domain.errors import InputError

__all__ = [
    "STAPLE",
    "MultiLabelSTAPLE",
    "MultiLabelStapleResult",
    "StapleResult",
    "majority_vote_labels",
    "majority_vote_mask",
    "vote_fraction",
]

Prior = float | Literal["global"] | None
TieRule = Literal["background", "foreground"]

#: Largest pattern alphabet counted with ``numpy.bincount`` (else ``numpy.unique``).
_BINCOUNT_LIMIT = 1 << 22
#: Voxels per chunk when counting patterns (bounds the temporary ``intp`` copy).
_CHUNK = 1 << 22


# --------------------------------------------------------------------------- inputs


def _reader_names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"reader {i}" for i in range(n)]
    if len(names) != n:
        raise InputError(f"{len(names)} names given for {n} masks", field="names")
    return [str(v) for v in names]


def _stack_inputs(
    masks: Sequence[ArrayLike] | NDArray[np.generic], names: Sequence[str] | None
) -> tuple[list[NDArray[np.generic]], list[str]]:
    arrays = [np.asarray(m) for m in masks]
    if len(arrays) == 0:
        raise InputError("at least one mask is needed")
    labels = _reader_names(len(arrays), names)
    ref_shape = arrays[0].shape
    for arr, name in zip(arrays[1:], labels[1:], strict=True):
        if arr.shape != ref_shape:
            raise InputError(
                f"mask shapes differ: {labels[0]} has shape {ref_shape}, "
                f"{name} has shape {arr.shape}",
                field="shape",
            )
    if arrays[0].ndim == 0:
        raise InputError("masks must be arrays, not scalars")
    return arrays, labels


def _binary_masks(
    masks: Sequence[ArrayLike] | NDArray[np.generic],
    names: Sequence[str] | None,
    foreground: int | None,
) -> tuple[list[NDArray[np.bool_]], list[str]]:
    arrays, labels = _stack_inputs(masks, names)
    out: list[NDArray[np.bool_]] = []
    for arr, name in zip(arrays, labels, strict=True):
        if foreground is not None:
            out.append(np.asarray(arr == foreground, dtype=bool))
        elif arr.dtype == np.bool_:
            out.append(arr.astype(bool, copy=False))
        else:
            if arr.size and (arr.min() < 0 or arr.max() > 1):
                raise InputError(
                    f"{name} is not binary (values {arr.min()}..{arr.max()}); "
                    "pass foreground=<label> or use MultiLabelSTAPLE",
                    source=name,
                )
            out.append(arr != 0)
    return out, labels


def _label_maps(
    maps: Sequence[ArrayLike] | NDArray[np.generic], names: Sequence[str] | None
) -> tuple[list[NDArray[np.int64]], list[str], int]:
    arrays, labels = _stack_inputs(maps, names)
    out: list[NDArray[np.int64]] = []
    max_label = 0
    for arr, name in zip(arrays, labels, strict=True):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise InputError(f"{name} must hold integer labels, got dtype {arr.dtype}", source=name)
        if arr.size and arr.min() < 0:
            raise InputError(f"{name} has negative labels (min {arr.min()})", source=name)
        out.append(arr)  # type: ignore[arg-type]
        if arr.size:
            max_label = max(max_label, int(arr.max()))
    return out, labels, max_label + 1


# --------------------------------------------------------------------------- patterns


def _code_dtype(alphabet: int) -> type[np.unsignedinteger] | None:
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if alphabet <= int(np.iinfo(dt).max) + 1:
            return dt
    return None


@dataclass
class _Patterns:
    """Distinct reader patterns of a set of aligned label arrays.

    ``table`` (P, R) holds each pattern's label per reader, ``counts`` its number of voxels;
    :meth:`gather` writes one value per pattern back to every voxel.
    """

    table: NDArray[np.int64]
    counts: NDArray[np.float64]
    shape: tuple[int, ...]
    codes: NDArray[np.unsignedinteger] | None = None
    code_of_pattern: NDArray[np.int64] | None = None
    inverse: NDArray[np.intp] | None = None
    alphabet: int = 0
    n_voxels: int = field(default=0)

    def gather(self, values: NDArray[Any]) -> NDArray[Any]:
        """Per-pattern ``values`` (P, ...) -> per-voxel array of the input shape (+ trailing)."""
        values = np.asarray(values)
        trailing = values.shape[1:]
        if self.codes is not None and self.code_of_pattern is not None:
            full = np.zeros((self.alphabet, *trailing), dtype=values.dtype)
            full[self.code_of_pattern] = values
            flat = np.take(full, self.codes, axis=0)
        else:
            assert self.inverse is not None
            flat = np.take(values, self.inverse, axis=0)
        return flat.reshape(*self.shape, *trailing)


def _patterns(arrays: Sequence[NDArray[np.generic]], base: int) -> _Patterns:
    """Encode each voxel's labels (one per reader, each in ``0..base-1``) as one pattern."""
    n_readers = len(arrays)
    shape = arrays[0].shape
    n_vox = int(np.prod(shape))
    base = max(base, 2)
    alphabet = base**n_readers
    dtype = _code_dtype(alphabet)
    if dtype is not None:
        codes = np.zeros(n_vox, dtype=dtype)
        tmp = np.empty(n_vox, dtype=dtype)
        for arr in reversed(arrays):  # Horner: code = sum label_k * base**k
            np.multiply(codes, dtype(base), out=codes)
            np.copyto(tmp, arr.reshape(-1), casting="unsafe")
            np.add(codes, tmp, out=codes)
        del tmp
        if alphabet <= _BINCOUNT_LIMIT:
            counts_full = np.zeros(alphabet, dtype=np.int64)
            for start in range(0, n_vox, _CHUNK):
                counts_full += np.bincount(codes[start : start + _CHUNK], minlength=alphabet)
            present = np.flatnonzero(counts_full)
            counts = counts_full[present]
            table = _decode(present.astype(np.uint64), base, n_readers)
            return _Patterns(
                table=table,
                counts=counts.astype(np.float64),
                shape=shape,
                codes=codes,
                code_of_pattern=present,
                alphabet=alphabet,
                n_voxels=n_vox,
            )
        uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return _Patterns(
            table=_decode(uniq.astype(np.uint64), base, n_readers),
            counts=counts.astype(np.float64),
            shape=shape,
            inverse=inverse.reshape(-1),
            n_voxels=n_vox,
        )
    # Too many readers for one integer code: unique rows.
    stack = np.stack([a.reshape(-1) for a in arrays], axis=1).astype(np.int64)
    rows, inverse, counts = np.unique(stack, axis=0, return_inverse=True, return_counts=True)
    return _Patterns(
        table=rows.astype(np.int64),
        counts=counts.astype(np.float64),
        shape=shape,
        inverse=inverse.reshape(-1),
        n_voxels=n_vox,
    )


def _decode(codes: NDArray[np.uint64], base: int, n_readers: int) -> NDArray[np.int64]:
    table = np.empty((codes.size, n_readers), dtype=np.int64)
    rest = codes.copy()
    b = np.uint64(base)
    for k in range(n_readers):
        table[:, k] = (rest % b).astype(np.int64)
        rest //= b
    return table


# --------------------------------------------------------------------------- binary STAPLE


@dataclass(frozen=True)
class StapleResult:
    """Result of binary :class:`STAPLE`.

    Attributes
    ----------
    consensus:
        Boolean mask: ``probability > threshold`` (0.5 by default).
    probability:
        Posterior probability of foreground per voxel (``float32`` by default).
    sensitivity, specificity:
        One value per reader (true-positive and true-negative fraction against the estimate).
    prior:
        Prior foreground probability used in the last E-step.
    n_iter:
        EM iterations run (SimpleITK's ``GetElapsedIterations()`` reports ``n_iter - 1``).
    converged:
        Whether the stopping rule was met before ``max_iter``.
    readers:
        Reader names, in input order.
    notes:
        Degenerate situations met (vacuous rates, unexplainable patterns).
    """

    consensus: NDArray[np.bool_]
    probability: NDArray[np.floating]
    sensitivity: NDArray[np.float64]
    specificity: NDArray[np.float64]
    prior: float
    n_iter: int
    converged: bool
    readers: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _log(x: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore"):
        return np.log(x)


class STAPLE:
    """Binary STAPLE (Warfield et al. 2004) with SimpleITK's conventions.

    Parameters
    ----------
    max_iter:
        Largest number of EM iterations.
    tol:
        Stop when no reader's sensitivity or specificity changed by more than ``tol``
        (after at least two iterations). ``1e-7`` is ITK's rule.
    prior:
        ``None``: fixed prior = mean foreground fraction of the readers (ITK). ``"global"``:
        re-estimated in every M-step as the mean posterior. A float in [0, 1]: fixed prior.
    threshold:
        Consensus = ``probability > threshold``.
    dtype:
        Floating type of the probability map (``float32`` halves the memory of ``float64``;
        the EM itself runs in ``float64``).
    """

    def __init__(
        self,
        max_iter: int = 10_000,
        tol: float = 1e-7,
        prior: Prior = None,
        threshold: float = 0.5,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        if max_iter < 1:
            raise InputError("max_iter must be at least 1", field="max_iter")
        if not tol >= 0:
            raise InputError("tol must be >= 0", field="tol")
        if isinstance(prior, str):
            if prior != "global":
                raise InputError(f"unknown prior {prior!r}; use None, 'global' or a float")
        elif prior is not None and not 0.0 <= float(prior) <= 1.0:
            raise InputError(f"prior must lie in [0, 1], got {prior}", field="prior")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.prior = prior
        self.threshold = float(threshold)
        self.dtype = dtype

    def fit(
        self,
        masks: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
        *,
        foreground: int | None = None,
    ) -> StapleResult:
        """Estimate the consensus of several readers' binary masks.

        Parameters
        ----------
        masks:
            One mask per reader (same shape, any dimension), or a stacked array whose first
            axis is the reader. Boolean, or 0/1 integers unless ``foreground`` is given.
        names:
            Reader names used in messages and in the result.
        foreground:
            Label that counts as foreground (every other value is background), as ITK's
            ``ForegroundValue``.

        Returns
        -------
        StapleResult
            Consensus, probability map and each reader's sensitivity and specificity.

        Raises
        ------
        InputError
            When shapes differ (naming the two readers) or a mask is not binary.
        """
        arrays, readers = _binary_masks(masks, names, foreground)
        pats = _patterns(arrays, 2)
        D = pats.table.astype(bool)  # (P, R)
        c = pats.counts
        n = float(pats.n_voxels)
        notes: list[str] = []

        W = D.mean(axis=1)  # initial: fraction of readers marking the voxel
        if self.prior is None or self.prior == "global":
            g = float(np.dot(c, W) / n)
        else:
            g = float(self.prior)

        R = D.shape[1]
        p = np.ones(R)
        q = np.ones(R)
        last_p = np.full(R, -10.0)
        last_q = np.full(R, -10.0)
        converged = False
        unexplained = False
        n_iter = 0
        tol2 = self.tol * self.tol
        for it in range(self.max_iter):
            n_iter = it + 1
            # M-step
            cw = c * W
            cnw = c * (1.0 - W)
            p_den = cw.sum()
            q_den = cnw.sum()
            p = D.T.astype(float) @ cw / p_den if p_den > 0 else np.ones(R)
            q = (~D).T.astype(float) @ cnw / q_den if q_den > 0 else np.ones(R)
            np.clip(p, 0.0, 1.0, out=p)  # rounding can exceed 1 by one ulp
            np.clip(q, 0.0, 1.0, out=q)
            if self.prior == "global":
                g = float(cw.sum() / n)
            # E-step (log space: no underflow with many readers)
            la = np.where(D, _log(p)[None, :], _log(1.0 - p)[None, :]).sum(axis=1)
            lb = np.where(D, _log(1.0 - q)[None, :], _log(q)[None, :]).sum(axis=1)
            W, bad = _posterior(la + _log(np.array(g)), lb + _log(np.array(1.0 - g)), g)
            unexplained = unexplained or bool(bad.any())
            done = (
                it != 0
                and bool(np.all((p - last_p) ** 2 <= tol2))
                and bool(np.all((q - last_q) ** 2 <= tol2))
            )
            last_p, last_q = p, q
            if done:
                converged = True
                break

        if not p_den > 0:
            notes.append("sensitivity undefined (no voxel estimated foreground): reported as 1.0")
        if not q_den > 0:
            notes.append(
                "specificity undefined (every voxel estimated foreground): reported as 1.0"
            )
        if unexplained:
            notes.append("some voxel patterns had zero likelihood under both classes: prior used")

        probability = pats.gather(W.astype(self.dtype))
        consensus = pats.gather(self.threshold < W)
        return StapleResult(
            consensus=consensus.astype(bool),
            probability=probability.astype(self.dtype, copy=False),
            sensitivity=np.asarray(p, dtype=np.float64),
            specificity=np.asarray(q, dtype=np.float64),
            prior=g,
            n_iter=n_iter,
            converged=converged,
            readers=tuple(readers),
            notes=tuple(notes),
        )

    def fit_predict(
        self,
        masks: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
        *,
        foreground: int | None = None,
    ) -> NDArray[np.bool_]:
        """Fit, then return the consensus mask (the shape every estimator shares)."""
        return self.fit(masks, names, foreground=foreground).consensus

    def fit_predict_proba(
        self,
        masks: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
        *,
        foreground: int | None = None,
    ) -> NDArray[np.floating]:
        """Fit, then return the probability map (posterior probability of foreground)."""
        return self.fit(masks, names, foreground=foreground).probability


def _posterior(
    l1: NDArray[np.float64], l0: NDArray[np.float64], fallback: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``exp(l1) / (exp(l1) + exp(l0))`` safely; ``fallback`` where both are ``-inf``."""
    bad = np.isneginf(l1) & np.isneginf(l0)
    with np.errstate(invalid="ignore", over="ignore"):
        W = 1.0 / (1.0 + np.exp(l0 - l1))
    W = np.where(bad, fallback, W)
    return W, bad


# --------------------------------------------------------------------------- multi-label


@dataclass(frozen=True)
class MultiLabelStapleResult:
    """Result of :class:`MultiLabelSTAPLE`.

    Attributes
    ----------
    labels:
        Consensus label map; ties and unexplainable voxels get ``undecided_label``.
    probabilities:
        Posterior probability of each label, shape ``(n_labels, *shape)``, or ``None`` when
        not requested.
    confusion:
        ``(n_readers, n_labels, n_labels)``: ``confusion[k, j, c]`` = probability that reader
        ``k`` says ``j`` when the truth is ``c`` (each column sums to 1, or is 0 for a label no
        voxel supports). SimpleITK's ``GetConfusionMatrix(k)`` is this matrix with one more,
        all-zero, row (``n_labels + 1`` rows) flattened row by row.
    prior:
        Prior probability of each label.
    undecided_label:
        Label written where the consensus is undecided.
    n_iter:
        EM iterations run (SimpleITK's ``ElapsedNumberOfIterations`` counts the same way
        minus one when it converged).
    converged:
        Whether the stopping rule was met before ``max_iter``.
    readers:
        Reader names.
    """

    labels: NDArray[np.integer]
    probabilities: NDArray[np.floating] | None
    confusion: NDArray[np.float64]
    prior: NDArray[np.float64]
    undecided_label: int
    n_iter: int
    converged: bool
    readers: tuple[str, ...]


class MultiLabelSTAPLE:
    """Multi-label STAPLE (Warfield et al. 2004, section II-C) with ITK's conventions.

    Parameters
    ----------
    max_iter:
        Largest number of EM iterations.
    tol:
        Stop when the largest change of any confusion-matrix entry is below ``tol`` (ITK:
        ``1e-5``).
    prior:
        ``None``: label frequencies over all readers (ITK). Else one probability per label.
    undecided_label:
        Label for undecided voxels; default ``max label + 1``.
    return_probabilities:
        Also return the per-label probability maps (``n_labels`` x volume in ``dtype``).
    dtype:
        Floating type of the probability maps.
    """

    def __init__(
        self,
        max_iter: int = 10_000,
        tol: float = 1e-5,
        prior: Sequence[float] | NDArray[np.floating] | None = None,
        undecided_label: int | None = None,
        return_probabilities: bool = True,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        if max_iter < 1:
            raise InputError("max_iter must be at least 1", field="max_iter")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.undecided_label = undecided_label
        self.return_probabilities = return_probabilities
        self.dtype = dtype

    def fit(
        self,
        label_maps: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
    ) -> MultiLabelStapleResult:
        """Estimate the consensus label map of several readers.

        Parameters
        ----------
        label_maps:
            One non-negative integer label map per reader (same shape), or a stacked array.
        names:
            Reader names used in messages and in the result.

        Returns
        -------
        MultiLabelStapleResult
            Label map, per-label probabilities and reader confusion matrices.

        Raises
        ------
        InputError
            When shapes differ (naming the two readers), labels are negative or not integers,
            or the prior has the wrong length.
        """
        arrays, readers, L = _label_maps(label_maps, names)
        R = len(arrays)
        pats = _patterns(arrays, L)
        T = pats.table  # (P, R) labels
        c = pats.counts
        undecided = L if self.undecided_label is None else int(self.undecided_label)

        if self.prior is None:
            freq = np.zeros(L)
            for k in range(R):
                freq += np.bincount(T[:, k], weights=c, minlength=L)
            prior = freq / freq.sum()
        else:
            if self.prior.shape[0] < L:
                raise InputError(
                    f"prior has {self.prior.shape[0]} values but labels run 0..{L - 1}",
                    field="prior",
                )
            prior = self.prior[:L]

        # Initial confusion matrices from majority voting (tied votes left out).
        vote = _vote_table(T, L, undecided=-1)
        decided = vote >= 0
        M = np.zeros((R, L, L))
        for k in range(R):
            np.add.at(M[k], (T[decided, k], vote[decided]), c[decided])
            rows = M[k].sum(axis=1, keepdims=True)
            np.divide(M[k], rows, out=M[k], where=rows > 0)

        log_prior = _log(prior)
        converged = False
        n_iter = 0
        reader_idx = np.arange(R)[None, :]
        for it in range(self.max_iter):
            n_iter = it + 1
            W = _ml_posterior(M, T, log_prior, reader_idx)  # (P, L)
            cW = c[:, None] * W
            U = np.zeros_like(M)
            for k in range(R):
                np.add.at(U[k], T[:, k], cW)
            col = U.sum(axis=1, keepdims=True)
            np.divide(U, col, out=U, where=col > 0)
            delta = float(np.abs(U - M).max())
            M = U
            if delta < self.tol:
                converged = True
                break

        W = _ml_posterior(M, T, log_prior, reader_idx)
        winner = np.argmax(W, axis=1)
        top = W[np.arange(W.shape[0]), winner]
        n_top = (top[:, None] == W).sum(axis=1)
        label_table = np.where((top > 0) & (n_top == 1), winner, undecided)
        out_dtype = _label_dtype(max(L, undecided))
        labels_map = pats.gather(label_table.astype(out_dtype))
        probs = None
        if self.return_probabilities:
            probs = np.moveaxis(pats.gather(W.astype(self.dtype)), -1, 0)
        return MultiLabelStapleResult(
            labels=labels_map,
            probabilities=probs,
            confusion=M,
            prior=prior,
            undecided_label=undecided,
            n_iter=n_iter,
            converged=converged,
            readers=tuple(readers),
        )

    def fit_predict(
        self,
        label_maps: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
    ) -> NDArray[np.integer]:
        """Fit, then return the consensus label map."""
        return self.fit(label_maps, names).labels

    def fit_predict_proba(
        self,
        label_maps: Sequence[ArrayLike] | NDArray[np.generic],
        names: Sequence[str] | None = None,
    ) -> NDArray[np.floating]:
        """Fit, then return the per-label probability maps, shape ``(n_labels, *shape)``."""
        keep = self.return_probabilities
        self.return_probabilities = True
        try:
            probabilities = self.fit(label_maps, names).probabilities
        finally:
            self.return_probabilities = keep
        assert probabilities is not None
        return probabilities


def _ml_posterior(
    M: NDArray[np.float64],
    T: NDArray[np.int64],
    log_prior: NDArray[np.float64],
    reader_idx: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Normalised posterior (P, L) of each pattern; all-zero rows where nothing explains it."""
    logM = _log(M)  # (R, L, L)
    logW = log_prior[None, :] + logM[reader_idx, T, :].sum(axis=1)  # (P, L)
    top = logW.max(axis=1, keepdims=True)
    finite = np.isfinite(top)
    with np.errstate(invalid="ignore"):
        W = np.where(finite, np.exp(logW - np.where(finite, top, 0.0)), 0.0)
    s = W.sum(axis=1, keepdims=True)
    np.divide(W, s, out=W, where=s > 0)
    return W


def _label_dtype(max_value: int) -> type[np.integer]:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return dt
    return np.int64


# --------------------------------------------------------------------------- votes


def _vote_table(T: NDArray[np.int64], L: int, undecided: int) -> NDArray[np.int64]:
    """Majority label of each pattern row; ``undecided`` where the maximum is tied."""
    votes = np.zeros((T.shape[0], L), dtype=np.int64)
    rows = np.arange(T.shape[0])
    for k in range(T.shape[1]):
        np.add.at(votes, (rows, T[:, k]), 1)
    winner = np.argmax(votes, axis=1)
    top = votes[rows, winner]
    tied = (votes == top[:, None]).sum(axis=1) > 1
    return np.where(tied, undecided, winner)


def vote_fraction(
    masks: Sequence[ArrayLike] | NDArray[np.generic],
    names: Sequence[str] | None = None,
    *,
    foreground: int | None = None,
    dtype: type[np.floating] = np.float32,
) -> NDArray[np.floating]:
    """Fraction of readers marking each voxel (STAPLE's starting point).

    Parameters
    ----------
    masks:
        One binary mask per reader (same shape) or a stacked array.
    names:
        Reader names for messages.
    foreground:
        Label that counts as foreground, else masks must be 0/1 or boolean.
    dtype:
        Floating type of the result.

    Returns
    -------
    numpy.ndarray
        Values ``k / R`` for ``k`` readers out of ``R``.
    """
    arrays, _ = _binary_masks(masks, names, foreground)
    pats = _patterns(arrays, 2)
    return pats.gather(pats.table.mean(axis=1).astype(dtype))


def majority_vote_mask(
    masks: Sequence[ArrayLike] | NDArray[np.generic],
    names: Sequence[str] | None = None,
    *,
    ties: TieRule = "background",
    foreground: int | None = None,
) -> NDArray[np.bool_]:
    """Voxelwise majority vote of binary masks, with an explicit rule for ties.

    Parameters
    ----------
    masks:
        One binary mask per reader (same shape) or a stacked array.
    names:
        Reader names for messages.
    ties:
        What a voxel marked by exactly half of an even number of readers becomes:
        ``"background"`` (default, strict majority needed) or ``"foreground"``. Use
        :func:`vote_fraction` to find the tied voxels themselves (fraction exactly 0.5).
    foreground:
        Label that counts as foreground, else masks must be 0/1 or boolean.

    Returns
    -------
    numpy.ndarray of bool
        The consensus mask.
    """
    if ties not in ("background", "foreground"):
        raise InputError(f"unknown tie rule {ties!r}; use 'background' or 'foreground'")
    arrays, _ = _binary_masks(masks, names, foreground)
    pats = _patterns(arrays, 2)
    n_yes = pats.table.sum(axis=1)
    R = pats.table.shape[1]
    win = 2 * n_yes >= R if ties == "foreground" else 2 * n_yes > R
    return pats.gather(win).astype(bool)


def majority_vote_labels(
    label_maps: Sequence[ArrayLike] | NDArray[np.generic],
    names: Sequence[str] | None = None,
    *,
    undecided_label: int | None = None,
) -> NDArray[np.integer]:
    """Voxelwise plurality vote of label maps; ties for the most votes are marked undecided.

    Same rule as ITK's ``LabelVotingImageFilter``.

    Parameters
    ----------
    label_maps:
        One non-negative integer label map per reader (same shape) or a stacked array.
    names:
        Reader names for messages.
    undecided_label:
        Label of tied voxels; default ``max label + 1``.

    Returns
    -------
    numpy.ndarray
        The voted label map.
    """
    arrays, _, L = _label_maps(label_maps, names)
    undecided = L if undecided_label is None else int(undecided_label)
    pats = _patterns(arrays, L)
    table = _vote_table(pats.table, L, undecided)
    return pats.gather(table.astype(_label_dtype(max(L, undecided))))
