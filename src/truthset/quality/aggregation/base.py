"""The one shape every categorical aggregator shares.

An aggregator takes a long label table (``item, annotator, label``; crowd-kit's ``task, worker,
label`` accepted) and, optionally, gold answers for some items; it returns one label per item,
per-class posterior probabilities, and fitted reader parameters. The shape follows scikit-learn
and crowd-kit::

    mv = MajorityVote().fit(table)
    mv.labels_            # pd.Series: item -> label
    mv.probas_            # pd.DataFrame: item x class
    DawidSkene().fit_predict(table)        # labels
    DawidSkene().fit_predict_proba(table)  # probabilities

Subclasses implement :meth:`Aggregator._fit_encoded`, which works on integer codes only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Self, TypeAlias

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError
from truthset.quality.table import EncodedLabels, as_pandas, encode

#: Gold answers: a Series ``item -> label`` or a DataFrame with ``item`` (or ``task``) and
#: ``label`` columns.
GoldLike: TypeAlias = pd.Series | pd.DataFrame | None


def encode_gold(gold: GoldLike, encoded: EncodedLabels, *, source: str | None = None) -> np.ndarray:
    """Return an array over items: the gold class code, or -1 where no gold answer is known.

    Raises
    ------
    InputError
        Gold names an item that has no labels, or a class outside the schema.
    """
    codes = np.full(encoded.n_items, -1, dtype=np.int64)
    if gold is None:
        return codes
    gold = as_pandas(gold)
    if isinstance(gold, pd.DataFrame):
        frame = gold.rename(columns={"task": "item", "true_label": "label"})
        if not {"item", "label"} <= set(frame.columns):
            raise InputError("gold needs the columns item and label", source=source)
        series = pd.Series(frame["label"].to_numpy(), index=frame["item"].to_numpy())
    else:
        series = gold
    duplicated = series.index.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise InputError(
            f"gold gives item {series.index[row]!r} more than once",
            source=source,
            location=f"row {row + 1}",
            field="item",
        )
    item_pos = encoded.item_index.get_indexer(series.index)
    if (item_pos < 0).any():
        row = int(np.flatnonzero(item_pos < 0)[0])
        raise InputError(
            f"gold names item {series.index[row]!r}, which has no labels",
            source=source,
            location=f"row {row + 1}",
            field="item",
        )
    class_pos = encoded.classes.get_indexer(series.to_numpy())
    if (class_pos < 0).any():
        row = int(np.flatnonzero(class_pos < 0)[0])
        raise InputError(
            f"gold label {series.iloc[row]!r} is not a known class",
            source=source,
            location=f"row {row + 1}",
            field="label",
        )
    codes[item_pos] = class_pos
    return codes


class Aggregator(ABC):
    """Base class of the categorical aggregators.

    Parameters
    ----------
    classes:
        The schema's classes in order. When omitted, the distinct labels of the table, sorted.

    Attributes
    ----------
    classes_ : pd.Index
        The classes, in the order of the columns of ``probas_``.
    probas_ : pd.DataFrame
        Item × class posterior probabilities (rows sum to 1).
    labels_ : pd.Series
        The aggregated label of each item (``pd.NA`` where a tie policy leaves it undecided).
    confidence_ : pd.Series
        Posterior probability of the chosen label.
    n_iter_ : int
        Iterations run (0 for closed-form methods).
    """

    classes: Sequence[Any] | None

    def __init__(self, *, classes: Sequence[Any] | None = None) -> None:
        self.classes = classes

    # -- public API ---------------------------------------------------------------------------
    def fit(
        self,
        table: pd.DataFrame,
        gold: GoldLike = None,
        *,
        source: str | None = None,
        gold_source: str | None = None,
    ) -> Self:
        """Fit on a long label table, with gold answers clamped where given.

        Parameters
        ----------
        table:
            Long table ``item, annotator, label`` (or ``task, worker, label``).
        gold:
            Known answers for some items (a Series ``item -> label`` or a table with ``item``
            and ``label``); every gold item must have labels in ``table``.
        source, gold_source:
            Names (file paths, say) used in error messages about ``table`` and ``gold``.

        Raises
        ------
        InputError
            Bad table (missing column, empty value, unknown class) or gold (unknown item or
            class, an item given twice).
        """
        encoded = encode(table, classes=self.classes, source=source)
        gold_codes = encode_gold(gold, encoded, source=gold_source)
        self._encoded = encoded
        self.n_iter_ = 0
        proba = self._fit_encoded(encoded, gold_codes)
        self._set_results(encoded, proba)
        return self

    def fit_predict(self, table: pd.DataFrame, gold: GoldLike = None) -> pd.Series:
        """Fit, then return the aggregated label of each item (a Series indexed by item)."""
        return self.fit(table, gold).labels_

    def fit_predict_proba(self, table: pd.DataFrame, gold: GoldLike = None) -> pd.DataFrame:
        """Fit, then return the item × class table of posterior probabilities."""
        return self.fit(table, gold).probas_

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _fit_encoded(self, encoded: EncodedLabels, gold: np.ndarray) -> np.ndarray:
        """Return the ``n_items × n_classes`` posterior; set fitted reader attributes."""

    def _choose(self, proba: np.ndarray) -> np.ndarray:
        """Class code chosen for each item; -1 means undecided. Default: highest posterior,
        lowest class code on exact ties."""
        return np.asarray(np.argmax(proba, axis=1), dtype=np.int64)

    def _set_results(self, encoded: EncodedLabels, proba: np.ndarray) -> None:
        self.classes_ = encoded.classes
        self.probas_ = pd.DataFrame(proba, index=encoded.item_index, columns=encoded.classes)
        chosen = self._choose(proba)
        values = np.asarray(encoded.classes, dtype=object)[np.maximum(chosen, 0)]
        values[chosen < 0] = pd.NA
        self.labels_ = pd.Series(values, index=encoded.item_index, name="label")
        conf = proba[np.arange(len(chosen)), np.maximum(chosen, 0)]
        self.confidence_ = pd.Series(
            np.where(chosen < 0, np.nan, conf), index=encoded.item_index, name="confidence"
        )
