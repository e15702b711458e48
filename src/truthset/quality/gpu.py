"""Optional PyTorch path (GPU where available) for Dawid–Skene and binary STAPLE.

``torch`` is an **optional** dependency (``pip install truthset[gpu]``): it is imported only when
a function of this module runs, so ``import truthset.quality.gpu`` works without it.

:func:`dawid_skene_torch`
    The EM of :class:`~truthset.quality.aggregation.DawidSkene` (same majority-vote start, gold
    clamp, ``1e-10`` clip, smoothing, evidence lower bound and stopping rule), with every
    per-label sum done on the device by ``index_select`` + ``index_add_`` (or by a sparse CSR
    product, ``method="sparse"``): no Python loop over labels, no host transfer inside the loop
    except the convergence test, which can be made every ``check_every`` iterations.
:class:`GPUDawidSkene`
    The same as an :class:`~truthset.quality.aggregation.base.Aggregator` (it *is* a
    :class:`~truthset.quality.aggregation.DawidSkene`, so ``confusion_``, ``priors_``,
    ``skills_`` and the tidy outputs are filled in the same way).
:func:`staple_torch`
    Binary STAPLE with :class:`~truthset.quality.staple.STAPLE`'s conventions (ITK's). As on the
    CPU, the voxels are reduced to their reader *patterns* (bit ``r`` = reader ``r``), counted by
    ``bincount`` on the device; the EM runs on the pattern table in float64 and the
    probability map is one gather.

Exactness: in float64 both reproduce the CPU classes to rounding (``tests/test_gpu.py``); in
float32 (the default for Dawid–Skene on a GPU) posteriors agree to about ``1e-5``. Timings:
``bench/bench_gpu.py``, results in ``docs/_bench_gpu.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from truthset.domain.errors import InputError
from truthset.quality.aggregation.dawid_skene import DawidSkene, FloatDType
from truthset.quality.staple import Prior, StapleResult
from truthset.quality.table import EncodedLabels

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "DSTorchResult",
    "GPUDawidSkene",
    "StapleTorchResult",
    "dawid_skene_torch",
    "dawid_skene_torch_tensors",
    "default_device",
    "staple_torch",
    "torch_available",
]

#: Floor on probabilities before logs (as the CPU classes and crowd-kit).
EPS = 1e-10

DSMethod = Literal["auto", "index", "sparse"]


# --------------------------------------------------------------------------- torch helpers


def _torch() -> Any:
    """Import torch, or raise a clear :class:`InputError` when it is not installed."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise InputError(
            "the torch backend needs PyTorch: pip install 'truthset[gpu]'", field="backend"
        ) from exc
    return torch


def torch_available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def default_device() -> str:
    """``"cuda"`` when a CUDA device is visible to PyTorch, else ``"cpu"``."""
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: Any) -> torch.dtype:
    torch = _torch()
    if dtype is None:
        return torch.float32  # type: ignore[no-any-return]
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "float64": torch.float64}[dtype]  # type: ignore[no-any-return]
        except KeyError:
            raise InputError(
                f"unknown dtype {dtype!r}; use float32 or float64", field="dtype"
            ) from None
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"unknown dtype {dtype!r}; use float32 or float64", field="dtype")
    return dtype  # type: ignore[no-any-return]


def _as_index(values: Any, device: torch.device) -> Tensor:
    """An integer array or tensor as an int64 tensor on ``device`` (no copy when it already is)."""
    torch = _torch()
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)


def _sync(device: torch.device) -> None:
    torch = _torch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- Dawid–Skene


@dataclass
class DSTorchResult:
    """Fitted Dawid–Skene model.

    Attributes
    ----------
    posterior:
        ``n_items × n_classes`` posterior of the true class (numpy, float64), or a tensor on the
        device from :func:`dawid_skene_torch_tensors`.
    confusion:
        ``n_annotators × observed × true`` (the CPU class's internal layout: each ``[w, :, c]``
        column sums to 1 over the labels reader ``w`` used).
    priors:
        Class marginals.
    n_iter:
        EM iterations run.
    loss_history:
        Evidence lower bound per label after each iteration.
    """

    posterior: Any
    confusion: Any
    priors: Any
    n_iter: int
    loss_history: list[float]


class _LabelOps:
    """The two per-label sums of an EM iteration, for one encoded table on one device.

    ``e_sum(table)`` returns ``S[i, :] = Σ_labels of i table[pair]`` (``n_items × K``);
    ``m_sum(proba)`` returns ``T[pair, :] = Σ_labels with that pair proba[item]``.
    ``pair = annotator · K + observed``.
    """

    def __init__(
        self,
        items: Tensor,
        pair: Tensor,
        n_items: int,
        n_pairs: int,
        dtype: torch.dtype,
        method: Literal["index", "sparse"],
        copies: int,
    ) -> None:
        torch = _torch()
        self.n_items = n_items
        self.n_pairs = n_pairs
        self.method = method
        n = items.numel()
        idx_dtype = torch.int32 if max(n_items, n_pairs * copies, n) < 2**31 - 1 else torch.int64
        if method == "sparse":
            ones = torch.ones(n, dtype=dtype, device=items.device)
            self.by_item = self._csr(items, pair, ones, n_items, n_pairs, idx_dtype)
            self.by_pair = self._csr(pair, items, ones, n_pairs, n_items, idx_dtype)
            return
        self.items = items.to(idx_dtype)
        self.pair = pair.to(idx_dtype)
        self.copies = max(1, int(copies))
        if self.copies > 1:
            # Spread the M-step's atomic adds over ``copies`` private tables (there are only
            # n_annotators·K target rows, so one table would serialise on a GPU).
            lane = torch.arange(n, device=items.device, dtype=idx_dtype) % self.copies
            self.m_index = self.pair + lane * n_pairs
        else:
            self.m_index = self.pair

    @staticmethod
    def _csr(
        rows: Tensor,
        cols: Tensor,
        values: Tensor,
        n_rows: int,
        n_cols: int,
        idx_dtype: torch.dtype,
    ) -> Tensor:
        torch = _torch()
        order = torch.argsort(rows, stable=True)
        crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(  # type: ignore[no-any-return]
                crow.to(idx_dtype),
                cols[order].to(idx_dtype),
                values,
                size=(n_rows, n_cols),
                check_invariants=False,
            )

    def e_sum(self, table: Tensor) -> Tensor:
        torch = _torch()
        if self.method == "sparse":
            return torch.sparse.mm(self.by_item, table)  # type: ignore[no-any-return]
        out = torch.zeros(self.n_items, table.shape[1], dtype=table.dtype, device=table.device)
        return out.index_add_(0, self.items, table.index_select(0, self.pair))  # type: ignore[no-any-return]

    def m_sum(self, proba: Tensor) -> Tensor:
        torch = _torch()
        if self.method == "sparse":
            return torch.sparse.mm(self.by_pair, proba)  # type: ignore[no-any-return]
        K = proba.shape[1]
        out = torch.zeros(
            self.copies * self.n_pairs, K, dtype=proba.dtype, device=proba.device
        ).index_add_(0, self.m_index, proba.index_select(0, self.items))
        if self.copies > 1:
            out = out.view(self.copies, self.n_pairs, K).sum(0)
        return out  # type: ignore[no-any-return]


def dawid_skene_torch_tensors(
    items: Any,
    annotators: Any,
    labels: Any,
    n_items: int,
    n_annotators: int,
    n_classes: int,
    n_iter: int = 100,
    tol: float | None = 1e-5,
    gold: Any = None,
    device: Any = None,
    dtype: Any = None,
    *,
    smoothing: float = 0.0,
    method: DSMethod = "auto",
    check_every: int = 1,
    m_copies: int | None = None,
) -> DSTorchResult:
    """Dawid–Skene EM on the device; the result's arrays stay tensors on the device.

    Same parameters as :func:`dawid_skene_torch`, which copies the result to numpy. Useful when
    the next step also runs on the device, and for timing without the host copy.
    """
    torch = _torch()
    if n_iter < 0:
        raise InputError("n_iter must be >= 0", field="n_iter")
    if smoothing < 0:
        raise InputError("smoothing must be >= 0", field="smoothing")
    if check_every < 1:
        raise InputError("check_every must be >= 1", field="check_every")
    dev = torch.device(device if device is not None else default_device())
    fdt = _resolve_dtype(dtype)
    K, A = int(n_classes), int(n_annotators)
    n_pairs = A * K

    it = _as_index(items, dev)
    an = _as_index(annotators, dev)
    lab = _as_index(labels, dev)
    n_labels = it.numel()
    if not (an.numel() == n_labels == lab.numel()):
        raise InputError("items, annotators and labels must have the same length")
    if n_labels == 0:
        raise InputError("no labels to aggregate")
    pair = an * K + lab
    del an
    if method == "auto":
        method = "index"
    if method not in ("index", "sparse"):
        raise InputError(f"unknown method {method!r}; use index or sparse", field="method")
    copies = m_copies if m_copies is not None else (32 if dev.type == "cuda" else 1)
    ops = _LabelOps(it, pair, int(n_items), n_pairs, fdt, method, copies)

    # Majority-vote start: share of each class among the item's labels.
    counts = torch.bincount(it * K + lab, minlength=int(n_items) * K).view(int(n_items), K)
    del it, lab
    proba = counts.to(fdt)
    proba /= proba.sum(1, keepdim=True)
    del counts
    present = (torch.bincount(pair, minlength=n_pairs) > 0).view(A, K)
    del pair
    mask3 = present[:, :, None]

    gold_idx: Tensor | None = None
    gold_rows: Tensor | None = None
    if gold is not None:
        g = _as_index(gold, dev)
        known = torch.nonzero(g >= 0).flatten()
        if known.numel():
            gold_idx = known
            gold_rows = torch.nn.functional.one_hot(g[known], K).to(fdt)

    def clamp(p: Tensor) -> None:
        if gold_idx is not None:
            p.index_copy_(0, gold_idx, gold_rows)

    def confusion(soft: Tensor) -> Tensor:
        if smoothing:
            soft = soft + smoothing * mask3
        conf = torch.where(mask3, soft.clamp_min(EPS), torch.zeros((), dtype=fdt, device=dev))
        return conf / conf.sum(1, keepdim=True).clamp_min(torch.finfo(fdt).tiny)

    def safe_log(x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.log(x), torch.zeros((), dtype=fdt, device=dev))

    clamp(proba)
    priors = proba.mean(0)
    soft = ops.m_sum(proba).view(A, K, K)
    conf = confusion(soft)
    log_conf = safe_log(conf)

    history = torch.empty(max(n_iter, 1), dtype=torch.float64, device=dev)
    stop_tol = -math.inf if tol is None else float(tol)
    checked = 0  # iterations whose loss has been compared on the host
    last_loss = -math.inf
    n_done = 0
    losses: list[float] = []
    for _ in range(n_iter):
        log_like = ops.e_sum(log_conf.view(n_pairs, K))
        log_like += torch.log(priors.clamp_min(EPS))
        proba = torch.softmax(log_like, dim=1)
        del log_like
        clamp(proba)
        priors = proba.mean(0)
        soft = ops.m_sum(proba).view(A, K, K)
        conf = confusion(soft)
        log_conf = safe_log(conf)
        # Evidence lower bound per label (crowd-kit's sum), kept on the device.
        clipped = proba.clamp_min(EPS)
        bound = (
            torch.sum(soft * log_conf, dtype=torch.float64)
            + torch.dot(soft.sum((0, 1)).double(), torch.log(priors.clamp_min(EPS)).double())
            - torch.sum(clipped * torch.log(clipped), dtype=torch.float64)
        )
        history[n_done] = bound / n_labels
        n_done += 1
        if stop_tol == -math.inf and n_done < n_iter:
            continue
        if n_done % check_every and n_done < n_iter:
            continue
        new = history[checked:n_done].tolist()
        stop = False
        for value in new:
            losses.append(value)
            checked += 1
            if value - last_loss < stop_tol:
                stop = True
                break
            last_loss = value
        if stop:
            break
    if len(losses) < n_done:
        losses = history[:n_done].tolist()
    return DSTorchResult(
        posterior=proba, confusion=conf, priors=priors, n_iter=n_done, loss_history=losses
    )


def dawid_skene_torch(
    items: Any,
    annotators: Any,
    labels: Any,
    n_items: int,
    n_annotators: int,
    n_classes: int,
    n_iter: int = 100,
    tol: float | None = 1e-5,
    gold: Any = None,
    device: Any = None,
    dtype: Any = None,
    *,
    smoothing: float = 0.0,
    method: DSMethod = "auto",
    check_every: int = 1,
    m_copies: int | None = None,
) -> DSTorchResult:
    """Dawid–Skene EM (full confusion matrices) in PyTorch, on a GPU when one is given.

    The same EM as :class:`~truthset.quality.aggregation.DawidSkene`: majority-vote start,
    gold items clamped, E-step → gold clamp → priors → M-step → evidence lower bound per label,
    stop after ``n_iter`` iterations or when the bound improves by less than ``tol``.

    Parameters
    ----------
    items, annotators, labels:
        Integer codes, one entry per label (numpy arrays or tensors, on any device);
        ``EncodedLabels.items`` etc.
    n_items, n_annotators, n_classes:
        Sizes of the three code ranges.
    n_iter:
        Most EM iterations.
    tol:
        Stop when the bound per label improves by less than ``tol``; ``None`` runs exactly
        ``n_iter`` iterations (no host synchronisation inside the loop).
    gold:
        Optional array over items: known class code, or -1.
    device:
        A torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``); default CUDA when available.
    dtype:
        ``torch.float32`` (default) or ``torch.float64`` (or their names).
    smoothing:
        Pseudo-count added to each confusion cell a reader used (as the CPU class).
    method:
        ``"index"`` (default: ``index_select`` + ``index_add_`` over the labels) or
        ``"sparse"`` (two CSR matrix products, as the CPU class; cuSPARSE on a GPU).
    check_every:
        Compare the bound on the host every this many iterations (fewer synchronisations).
        With ``1`` (default) the iteration count equals the CPU class's; with ``k > 1`` EM may
        run up to ``k − 1`` iterations past the CPU's stopping point (further towards the same
        fixed point); ``loss_history`` still lists every iteration run.
    m_copies:
        Private tables for the M-step's atomic adds (default 32 on CUDA, 1 on CPU).

    Returns
    -------
    DSTorchResult
        ``posterior`` (``n_items × K``), ``confusion`` (``n_annotators × observed × true``)
        and ``priors`` as float64 numpy arrays, with ``n_iter`` and ``loss_history``.

    Raises
    ------
    InputError
        PyTorch missing, bad parameters, or arrays of different lengths.
    """
    res = dawid_skene_torch_tensors(
        items,
        annotators,
        labels,
        n_items,
        n_annotators,
        n_classes,
        n_iter,
        tol,
        gold,
        device,
        dtype,
        smoothing=smoothing,
        method=method,
        check_every=check_every,
        m_copies=m_copies,
    )
    return DSTorchResult(
        posterior=res.posterior.double().cpu().numpy(),
        confusion=res.confusion.double().cpu().numpy(),
        priors=res.priors.double().cpu().numpy(),
        n_iter=res.n_iter,
        loss_history=res.loss_history,
    )


class GPUDawidSkene(DawidSkene):
    """:class:`~truthset.quality.aggregation.DawidSkene` fitted by :func:`dawid_skene_torch`.

    Parameters
    ----------
    n_iter, tol, smoothing, classes:
        As :class:`~truthset.quality.aggregation.DawidSkene`.
    dtype:
        ``"float32"`` (default here: GPUs are fastest in it) or ``"float64"`` (matches the CPU
        class to rounding).
    device:
        Torch device; default CUDA when available, else the CPU.
    method, check_every:
        See :func:`dawid_skene_torch`.

    Attributes
    ----------
    Those of :class:`~truthset.quality.aggregation.DawidSkene`, plus ``device_`` (the device
    used).
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-5,
        init: Literal["mv"] = "mv",
        *,
        smoothing: float = 0.0,
        dtype: FloatDType = "float32",
        classes: Sequence[Any] | None = None,
        device: str | None = None,
        method: DSMethod = "auto",
        check_every: int = 1,
    ) -> None:
        super().__init__(
            n_iter=n_iter, tol=tol, init=init, smoothing=smoothing, dtype=dtype, classes=classes
        )
        self.device = device
        self.method: DSMethod = method
        self.check_every = check_every

    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        device = self.device if self.device is not None else default_device()
        res = dawid_skene_torch(
            encoded.items,
            encoded.annotators,
            encoded.labels,
            encoded.n_items,
            encoded.n_annotators,
            encoded.n_classes,
            self.n_iter,
            self.tol,
            gold,
            device,
            self.dtype,
            smoothing=self.smoothing,
            method=self.method,
            check_every=self.check_every,
        )
        self.device_ = str(device)
        self.n_iter_ = res.n_iter
        self.loss_history_ = res.loss_history
        self._store_params(encoded, res.confusion, res.priors)
        return np.asarray(res.posterior, dtype=np.float64)


# --------------------------------------------------------------------------- binary STAPLE


@dataclass(frozen=True)
class StapleTorchResult:
    """Binary STAPLE on the device: what :class:`~truthset.quality.staple.StapleResult` holds,
    with the maps as tensors on the device (see :meth:`to_numpy`)."""

    consensus: Any
    probability: Any
    sensitivity: NDArray[np.float64]
    specificity: NDArray[np.float64]
    prior: float
    n_iter: int
    converged: bool
    readers: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def to_numpy(self, dtype: type[np.floating] = np.float32) -> StapleResult:
        """Copy the maps to the host as a :class:`~truthset.quality.staple.StapleResult`."""
        return StapleResult(
            consensus=self.consensus.cpu().numpy().astype(bool),
            probability=self.probability.cpu().numpy().astype(dtype, copy=False),
            sensitivity=self.sensitivity,
            specificity=self.specificity,
            prior=self.prior,
            n_iter=self.n_iter,
            converged=self.converged,
            readers=self.readers,
            notes=self.notes,
        )


def _stack_binary(
    masks: Any, names: Sequence[str] | None, foreground: int | None, device: torch.device
) -> tuple[torch.Tensor, list[str], tuple[int, ...]]:
    """Readers' masks as one boolean tensor ``(R, n_voxels)`` on ``device``, reader names and
    the masks' shape."""
    torch = _torch()
    arrays = [m if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m)) for m in masks]
    if not arrays:
        raise InputError("at least one mask is needed")
    if names is None:
        readers = [f"reader {i}" for i in range(len(arrays))]
    elif len(names) != len(arrays):
        raise InputError(f"{len(names)} names given for {len(arrays)} masks", field="names")
    else:
        readers = [str(v) for v in names]
    shape = tuple(arrays[0].shape)
    if len(shape) == 0:
        raise InputError("masks must be arrays, not scalars")
    out = []
    for arr, name in zip(arrays, readers, strict=True):
        if tuple(arr.shape) != shape:
            raise InputError(
                f"mask shapes differ: {readers[0]} has shape {shape}, "
                f"{name} has shape {tuple(arr.shape)}",
                field="shape",
            )
        a = arr.to(device)
        if foreground is not None:
            a = a == foreground
        elif a.dtype != torch.bool:
            if a.numel() and (bool((a < 0).any()) or bool((a > 1).any())):
                raise InputError(
                    f"{name} is not binary (values {a.min().item()}..{a.max().item()}); "
                    "pass foreground=<label> or use MultiLabelSTAPLE",
                    source=name,
                )
            a = a != 0
        out.append(a.reshape(-1))
    return torch.stack(out), readers, shape


def staple_torch(
    masks: Any,
    names: Sequence[str] | None = None,
    *,
    max_iter: int = 10_000,
    tol: float = 1e-7,
    prior: Prior = None,
    threshold: float = 0.5,
    foreground: int | None = None,
    device: Any = None,
    dtype: type[np.floating] = np.float32,
    keep_on_device: bool = False,
) -> StapleResult | StapleTorchResult:
    """Binary STAPLE (Warfield et al. 2004) in PyTorch.

    It follows :class:`~truthset.quality.staple.STAPLE`'s (ITK's) conventions.

    Parameters
    ----------
    masks:
        One mask per reader (same shape), a stacked array or tensor whose first axis is the
        reader, or a list of tensors (already on the device: no host copy).
    names:
        Reader names for messages and the result.
    max_iter, tol, prior, threshold, foreground, dtype:
        As :class:`~truthset.quality.staple.STAPLE`.
    device:
        Torch device; default CUDA when available.
    keep_on_device:
        Return a :class:`StapleTorchResult` whose maps stay on the device.

    Returns
    -------
    StapleResult or StapleTorchResult
        Consensus mask, probability map and each reader's sensitivity and specificity.

    Raises
    ------
    InputError
        PyTorch missing, shapes differ, a mask is not binary, or bad parameters.
    """
    torch = _torch()
    if max_iter < 1:
        raise InputError("max_iter must be at least 1", field="max_iter")
    if not tol >= 0:
        raise InputError("tol must be >= 0", field="tol")
    if isinstance(prior, str):
        if prior != "global":
            raise InputError(f"unknown prior {prior!r}; use None, 'global' or a float")
    elif prior is not None and not 0.0 <= float(prior) <= 1.0:
        raise InputError(f"prior must lie in [0, 1], got {prior}", field="prior")
    dev = torch.device(device if device is not None else default_device())
    stack, readers, shape = _stack_binary(masks, names, foreground, dev)
    R, n_vox = stack.shape

    # Reader patterns: bit r of a voxel's code = reader r's mark.
    if R <= 24:
        code = torch.zeros(n_vox, dtype=torch.int32, device=dev)
        for r in range(R):
            code |= stack[r].to(torch.int32) << r
        del stack
        full = torch.bincount(code, minlength=1 << R)
        present = torch.nonzero(full).flatten()
        counts = full[present].double()
        bits = (present[:, None] >> torch.arange(R, device=dev)) & 1
        D = bits.bool()  # (P, R)
        lookup = torch.zeros(1 << R, dtype=torch.int64, device=dev)
        lookup[present] = torch.arange(present.numel(), device=dev)
        inverse = lookup[code.long()]
        del code, full, lookup
    else:
        D, inverse, cnt = torch.unique(stack.T, dim=0, return_inverse=True, return_counts=True)
        D = D.bool()
        counts = cnt.double()
        del stack

    notes: list[str] = []
    n = float(n_vox)
    Df = D.double()
    W = Df.mean(1)
    g = float(torch.dot(counts, W) / n) if prior is None or prior == "global" else float(prior)
    p = torch.ones(R, dtype=torch.float64, device=dev)
    q = torch.ones(R, dtype=torch.float64, device=dev)
    last_p = torch.full((R,), -10.0, dtype=torch.float64, device=dev)
    last_q = torch.full((R,), -10.0, dtype=torch.float64, device=dev)
    converged = False
    unexplained = False
    n_iter = 0
    tol2 = tol * tol
    p_den = q_den = 0.0
    for it in range(max_iter):
        n_iter = it + 1
        cw = counts * W
        cnw = counts * (1.0 - W)
        p_den = float(cw.sum())
        q_den = float(cnw.sum())
        p = Df.T @ cw / p_den if p_den > 0 else torch.ones_like(p)
        q = (1.0 - Df).T @ cnw / q_den if q_den > 0 else torch.ones_like(q)
        p = p.clamp(0.0, 1.0)
        q = q.clamp(0.0, 1.0)
        if prior == "global":
            g = float(cw.sum() / n)
        la = torch.where(D, torch.log(p)[None, :], torch.log(1.0 - p)[None, :]).sum(1)
        lb = torch.where(D, torch.log(1.0 - q)[None, :], torch.log(q)[None, :]).sum(1)
        l1 = la + math.log(g) if g > 0 else torch.full_like(la, -math.inf)
        l0 = lb + math.log(1.0 - g) if g < 1 else torch.full_like(lb, -math.inf)
        bad = torch.isneginf(l1) & torch.isneginf(l0)
        W = torch.where(bad, torch.full_like(l1, g), torch.sigmoid(l1 - l0))
        unexplained = unexplained or bool(bad.any())
        done = (
            it != 0
            and bool(((p - last_p) ** 2 <= tol2).all())
            and bool(((q - last_q) ** 2 <= tol2).all())
        )
        last_p, last_q = p, q
        if done:
            converged = True
            break

    if not p_den > 0:
        notes.append("sensitivity undefined (no voxel estimated foreground): reported as 1.0")
    if not q_den > 0:
        notes.append("specificity undefined (every voxel estimated foreground): reported as 1.0")
    if unexplained:
        notes.append("some voxel patterns had zero likelihood under both classes: prior used")

    out_dtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    prob_map = W.to(out_dtype)[inverse].view(shape)
    cons_map = (threshold < W)[inverse].view(shape)
    res = StapleTorchResult(
        consensus=cons_map,
        probability=prob_map,
        sensitivity=p.cpu().numpy().astype(np.float64),
        specificity=q.cpu().numpy().astype(np.float64),
        prior=g,
        n_iter=n_iter,
        converged=converged,
        readers=tuple(readers),
        notes=tuple(notes),
    )
    return res if keep_on_device else res.to_numpy(dtype)
