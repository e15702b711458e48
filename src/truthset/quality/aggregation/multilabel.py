"""Multi-label schemas: several classes may be present on one item (findings on a chest X-ray).

:class:`MultiLabelAggregator` treats each class as its own binary question — "is this class
present?" — and aggregates it with any single-label aggregator (Dawid–Skene by default), so each
reader gets a separate confusion matrix (sensitivity and specificity) per class.

Input formats
-------------
1. **Sets** — the long table ``item, annotator, label`` where ``label`` is the *set* of classes
   the reader marked: a Python ``set``/``frozenset``/``list``/``tuple``, or a string of classes
   joined by ``sep`` (default ``"|"``; ``""`` or an empty collection = the reader marked none).
   Every class not in a reader's set counts as that reader saying *absent*.
2. **Presence rows** — one row per ``item, annotator, class, present`` (``present`` true/false,
   1/0, "yes"/"no"). A reader with no row for a class on an item said nothing about it (a
   missing answer, not an absence), which suits per-finding forms.

The format is chosen by the columns: a ``class`` and a ``present`` column mean format 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.dawid_skene import DawidSkene
from truthset.quality.table import COLUMN_ALIASES, as_pandas

_TRUE = {"1", "true", "t", "yes", "y", "present"}
_FALSE = {"0", "false", "f", "no", "n", "absent"}


def _as_set(value: Any, sep: str) -> frozenset[Any]:
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(sep) if part.strip())
    if isinstance(value, (set, frozenset, list, tuple, np.ndarray)):
        return frozenset(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return frozenset()
    return frozenset([value])


def _parse_present(values: pd.Series, source: str | None) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=bool)
    text = values.astype(str).str.strip().str.lower()
    ok_true = text.isin(_TRUE).to_numpy()
    ok_false = text.isin(_FALSE).to_numpy()
    bad = ~(ok_true | ok_false) | values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"present must be true/false, 1/0 or yes/no, not {values.iloc[row]!r}",
            source=source,
            location=f"row {row + 1}",
            field="present",
        )
    return ok_true


def presence_table(
    table: pd.DataFrame,
    *,
    classes: Sequence[Any] | None = None,
    sep: str = "|",
    source: str | None = None,
) -> tuple[pd.DataFrame, pd.Index]:
    """Convert either input format into presence rows ``item, annotator, class, present``.

    Returns
    -------
    (rows, classes)
        The presence rows and the classes (given, or every class seen, sorted).

    Raises
    ------
    InputError
        Missing columns, empty item/annotator, a class outside ``classes``, a bad ``present``.
    """
    table = as_pandas(table)
    if not isinstance(table, pd.DataFrame):
        raise InputError("expected a table (pandas or polars DataFrame)", source=source)
    df = table.rename(
        columns={k: v for k, v in COLUMN_ALIASES.items() if k in table and v not in table}
    )
    for column in ("item", "annotator"):
        if column not in df:
            raise InputError(f"missing column {column}", source=source, field=column)
        empty = df[column].isna().to_numpy() | (df[column].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise InputError(
                f"empty {column}", source=source, location=f"row {row + 1}", field=column
            )
    if {"class", "present"} <= set(df.columns):
        rows = pd.DataFrame(
            {
                "item": df["item"].to_numpy(),
                "annotator": df["annotator"].to_numpy(),
                "class": df["class"].to_numpy(),
                "present": _parse_present(df["present"].reset_index(drop=True), source),
            }
        )
        seen = pd.Index(pd.unique(rows["class"]))
    elif "label" in df:
        sets = [_as_set(v, sep) for v in df["label"]]
        row_ids = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
        marked = [c for s in sets for c in s]
        seen = pd.Index(pd.unique(pd.Series(marked, dtype=object)))
        all_classes = pd.Index(sorted(seen)) if classes is None else pd.Index(list(classes))
        codes = all_classes.get_indexer(pd.Index(marked, dtype=object))
        if (codes < 0).any():
            bad = int(np.flatnonzero(codes < 0)[0])
            raise InputError(
                f"unknown class {marked[bad]!r}; known classes: {', '.join(map(str, all_classes))}",
                source=source,
                location=f"row {int(row_ids[bad]) + 1}",
                field="label",
            )
        present = np.zeros((len(sets), len(all_classes)), dtype=bool)
        present[row_ids, codes] = True
        n, K = present.shape
        rows = pd.DataFrame(
            {
                "item": np.repeat(df["item"].to_numpy(), K),
                "annotator": np.repeat(df["annotator"].to_numpy(), K),
                "class": np.tile(all_classes.to_numpy(dtype=object), n),
                "present": present.ravel(),
            }
        )
        return rows, all_classes
    else:
        raise InputError(
            "expected item, annotator, label (a set of classes) or item, annotator, class, present",
            source=source,
        )
    if classes is None:
        out_classes = pd.Index(sorted(seen))
    else:
        out_classes = pd.Index(list(classes))
        unknown = ~seen.isin(out_classes)
        if unknown.any():
            bad_class = seen[np.argmax(unknown)]
            row = int(np.flatnonzero((rows["class"] == bad_class).to_numpy())[0])
            raise InputError(
                f"unknown class {bad_class!r}; known classes: {', '.join(map(str, out_classes))}",
                source=source,
                location=f"row {row + 1}",
                field="class",
            )
    return rows, out_classes


class MultiLabelAggregator:
    """Aggregate a multi-label schema one class at a time, as binary questions.

    Parameters
    ----------
    base:
        Factory of the binary aggregator (a class such as :class:`DawidSkene` or any callable
        returning an :class:`Aggregator`); one is fitted per class.
    threshold:
        A class is in an item's aggregated set when its posterior exceeds this.
    classes:
        The schema's classes (default: every class seen, sorted).
    sep:
        Separator of classes in string labels (format 1).
    **base_params:
        Passed to ``base`` for each class.

    Attributes
    ----------
    probas_ : pd.DataFrame
        Item × class posterior probability that the class is present. An item no reader
        answered for a class gets ``NaN`` there (format 2 only).
    present_ : pd.DataFrame
        Item × class booleans, ``probas_ > threshold``.
    labels_ : pd.Series
        Item → frozenset of the present classes.
    aggregators_ : dict
        Class → the fitted binary aggregator (its ``skills_``, ``confusion_matrices_``…).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"item": ["x1", "x1", "x2", "x2"], "annotator": ["a", "b"] * 2,
    ...                       "label": ["effusion|nodule", "effusion", "", "nodule"]})
    >>> MultiLabelAggregator().fit(table).present_.loc["x1", "effusion"]
    np.True_
    """

    def __init__(
        self,
        base: Callable[..., Aggregator] = DawidSkene,
        *,
        threshold: float = 0.5,
        classes: Sequence[Any] | None = None,
        sep: str = "|",
        **base_params: Any,
    ) -> None:
        self.base = base
        self.threshold = threshold
        self.classes = classes
        self.sep = sep
        self.base_params = base_params

    def fit(
        self,
        table: pd.DataFrame,
        gold: pd.Series | None = None,
        *,
        source: str | None = None,
    ) -> MultiLabelAggregator:
        """Fit one binary aggregator per class.

        Parameters
        ----------
        table:
            Either input format (see the module notes).
        gold:
            Optional ``item -> set of present classes`` (same conventions as format 1); each
            class's binary aggregator gets the matching gold answers clamped.
        """
        rows, classes = presence_table(table, classes=self.classes, sep=self.sep, source=source)
        items = pd.Index(sorted(pd.unique(rows["item"])), name="item")
        gold_sets = None
        if gold is not None:
            gold_sets = pd.Series([_as_set(v, self.sep) for v in gold], index=gold.index)
            unknown = ~gold_sets.index.isin(items)
            if unknown.any():
                row = int(np.argmax(unknown))
                raise InputError(
                    f"gold names item {gold_sets.index[row]!r}, which has no labels",
                    location=f"row {row + 1}",
                    field="item",
                )
        proba = np.full((len(items), len(classes)), np.nan)
        self.aggregators_: dict[Any, Aggregator] = {}
        by_class = rows.groupby("class", sort=False).indices
        for k, cls in enumerate(classes):
            idx = by_class.get(cls)
            if idx is None:
                proba[:, k] = 0.0 if "label" in table.columns else np.nan
                continue
            part = rows.iloc[idx]
            binary = pd.DataFrame(
                {"item": part["item"], "annotator": part["annotator"], "label": part["present"]}
            )
            model = self.base(classes=[False, True], **self.base_params)
            class_gold = None
            if gold_sets is not None:
                known = gold_sets.index.isin(pd.unique(part["item"]))
                class_gold = pd.Series(
                    [cls in s for s in gold_sets[known]], index=gold_sets.index[known]
                )
            model.fit(binary, class_gold)
            self.aggregators_[cls] = model
            pos = items.get_indexer(model.probas_.index)
            proba[pos, k] = model.probas_[True].to_numpy()
        self.classes_ = classes
        self.probas_ = pd.DataFrame(proba, index=items, columns=classes)
        self.present_ = self.probas_ > self.threshold
        self.labels_ = pd.Series(
            [frozenset(classes[row]) for row in self.present_.to_numpy()],
            index=items,
            name="label",
        )
        return self

    def fit_predict(self, table: pd.DataFrame, gold: pd.Series | None = None) -> pd.Series:
        """Fit, then return item → frozenset of present classes."""
        return self.fit(table, gold).labels_

    def fit_predict_proba(self, table: pd.DataFrame, gold: pd.Series | None = None) -> pd.DataFrame:
        """Fit, then return the item × class probability of presence."""
        return self.fit(table, gold).probas_
