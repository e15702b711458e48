"""Active learning: how much a task is worth a reader's time, from model uncertainty and reader
disagreement. Pure.

``task_priority`` is in [0, 1]:

- model uncertainty = normalised entropy of the model's class probabilities (0 = certain,
  1 = uniform);
- disagreement = 1 - the share of the most common label among the readers (0 with fewer than
  two reads), rescaled by its maximum ``1 - 1/k`` so that a perfect split scores 1;
- with both, ``weight_model * uncertainty + (1 - weight_model) * disagreement``; with one, that
  one; with neither, 0.5 (nothing is known: neither pushed forward nor held back).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from truthset.domain.errors import InputError

__all__ = ["disagreement", "normalised_entropy", "task_priority"]


def normalised_entropy(probabilities: Mapping[str, float] | Sequence[float]) -> float:
    """Shannon entropy of a probability vector divided by ``log k`` (in [0, 1])."""
    values = np.asarray(list(probabilities.values()) if isinstance(probabilities, Mapping)
                        else list(probabilities), dtype=np.float64)
    if values.size < 2:
        return 0.0
    if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise InputError("probabilities must be non-negative numbers", field="probabilities")
    p = values / values.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(p)))


def disagreement(labels: Sequence[str], n_classes: int | None = None) -> float:
    """Readers' disagreement in [0, 1]: ``(1 - top share) / (1 - 1/k)``; 0 below two reads."""
    if len(labels) < 2:
        return 0.0
    counts = Counter(labels)
    top = max(counts.values()) / len(labels)
    k = max(n_classes or len(counts), 2)
    k = min(k, len(labels)) if n_classes is None else k
    return float(min(1.0, (1 - top) / (1 - 1 / max(k, 2))))


def task_priority(probabilities: Mapping[str, float] | Sequence[float] | None,
                  labels: Sequence[str] | None, *, weight_model: float = 0.5) -> float:
    """Priority of an item's next task in [0, 1] (higher = sooner)."""
    if not 0 <= weight_model <= 1:
        raise InputError("weight_model must lie in [0, 1]", field="weight_model")
    u = normalised_entropy(probabilities) if probabilities else None
    d = disagreement(list(labels), None) if labels and len(labels) >= 2 else None
    if u is not None and d is not None:
        return weight_model * u + (1 - weight_model) * d
    if u is not None:
        return u
    if d is not None:
        return d
    return 0.5
