"""The plain-table interface of the quality engine.

Every estimator and metric takes a *long table*: one row per recorded label, with the columns
``item``, ``annotator`` and ``label``. crowd-kit's names ``task`` and ``worker`` are accepted too,
so a crowd-kit user switches with one line. Internally the table is encoded once into integer
codes (:class:`EncodedLabels`), which is what the numpy cores work on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError

#: crowd-kit column names and the Truthset names they map to.
COLUMN_ALIASES: dict[str, str] = {"task": "item", "worker": "annotator"}
REQUIRED_COLUMNS: tuple[str, str, str] = ("item", "annotator", "label")


def as_pandas(table: Any) -> Any:
    """``table`` as a pandas DataFrame when it is a polars DataFrame or LazyFrame, or a pyarrow
    Table (anything with ``to_pandas``); other objects are returned unchanged.

    polars is not a dependency: its frames are recognised by their ``to_pandas`` method (which
    needs pyarrow, a dependency), so a polars user passes a frame as it is.
    """
    if isinstance(table, pd.DataFrame):
        return table
    collect = getattr(table, "collect", None)
    if callable(collect) and type(table).__name__ == "LazyFrame":
        table = collect()
    to_pandas = getattr(table, "to_pandas", None)
    if callable(to_pandas) and hasattr(table, "columns"):
        converted = to_pandas()
        if isinstance(converted, pd.DataFrame):
            return converted
    return table


def normalize_table(table: Any, *, source: str | None = None) -> pd.DataFrame:
    """Return ``table`` with the columns ``item``, ``annotator``, ``label`` (aliases renamed).

    ``table`` is a pandas DataFrame, or a polars DataFrame / pyarrow Table (converted with
    :func:`as_pandas`).

    Rows whose label is missing (NaN, ``None`` or an empty string) are refused with the row
    number, because a silently dropped label changes every figure computed from the table.

    Raises
    ------
    InputError
        A required column is missing, or a row has no item, annotator or label.
    """
    table = as_pandas(table)
    if not isinstance(table, pd.DataFrame):
        raise InputError(
            "expected a table (pandas or polars DataFrame) with item, annotator, label",
            source=source,
        )
    renamed = table.rename(
        columns={k: v for k, v in COLUMN_ALIASES.items() if k in table.columns and v not in table}
    )
    missing = [c for c in REQUIRED_COLUMNS if c not in renamed.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; expected item, annotator, label "
            f"(or crowd-kit's task, worker, label); found {', '.join(map(str, table.columns))}",
            source=source,
        )
    out = renamed.loc[:, list(REQUIRED_COLUMNS)].reset_index(drop=True)
    for column in REQUIRED_COLUMNS:
        values = out[column]
        bad = values.isna().to_numpy().copy()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            # Blank strings are found among the distinct values (hashing, no Python loop over
            # the rows): a million labels have a handful of distinct ones.
            codes, uniques = pd.factorize(values)
            blank_unique = np.fromiter(
                (isinstance(v, str) and not v.strip() for v in uniques),
                dtype=bool,
                count=len(uniques),
            )
            if blank_unique.any():
                bad |= (codes >= 0) & blank_unique[np.maximum(codes, 0)]
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"empty {column} ({int(bad.sum())} row(s) in all)",
                source=source,
                location=f"row {row + 1}",
                field=column,
            )
    return out


@dataclass(frozen=True)
class EncodedLabels:
    """A long label table encoded as integer codes.

    Attributes
    ----------
    items, annotators, labels:
        Integer arrays of equal length, one entry per recorded label.
    item_index, annotator_index, classes:
        The original values behind each code (``item_index[items[k]]`` is the item of row k).
    """

    items: np.ndarray
    annotators: np.ndarray
    labels: np.ndarray
    item_index: pd.Index
    annotator_index: pd.Index
    classes: pd.Index

    @property
    def n_items(self) -> int:
        """Number of distinct items."""
        return len(self.item_index)

    @property
    def n_annotators(self) -> int:
        """Number of distinct annotators."""
        return len(self.annotator_index)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def counts(self) -> np.ndarray:
        """Item × class matrix of how many labels each item received for each class."""
        flat = self.items.astype(np.int64) * self.n_classes + self.labels
        return np.bincount(flat, minlength=self.n_items * self.n_classes).reshape(
            self.n_items, self.n_classes
        )


def _sorted_unique(values: pd.Series) -> pd.Index:
    """Distinct values in natural order: numerically when all look like numbers (so "10"
    follows "9"), otherwise sorted, otherwise (mixed types) in first-seen order."""
    uniques = list(pd.unique(values))
    numeric = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce")
    if len(uniques) and not numeric.isna().any():
        order = np.argsort(numeric.to_numpy(dtype=float), kind="stable")
        return pd.Index([uniques[i] for i in order])
    try:
        return pd.Index(sorted(uniques))
    except TypeError:
        return pd.Index(uniques)


def encode(
    table: Any,
    *,
    classes: Sequence[Any] | None = None,
    source: str | None = None,
) -> EncodedLabels:
    """Encode a long label table into integer codes.

    Parameters
    ----------
    table:
        Long table with ``item, annotator, label`` (or ``task, worker, label``): pandas, or
        polars / pyarrow (converted with :func:`as_pandas`).
    classes:
        The allowed classes, in order (the order matters for ordinal methods). When omitted,
        the classes are the distinct labels, sorted.
    source:
        Named in error messages (a file name, say).

    Raises
    ------
    InputError
        Missing columns, empty values, or a label outside ``classes`` (the first such row is
        named).
    """
    df = normalize_table(table, source=source)
    item_codes, item_index = pd.factorize(df["item"], sort=True)
    annotator_codes, annotator_index = pd.factorize(df["annotator"], sort=True)
    if classes is None:
        class_index = _sorted_unique(df["label"])
    else:
        class_index = pd.Index(list(classes))
        if class_index.has_duplicates:
            raise InputError("classes are listed more than once", source=source, field="classes")
    label_codes = class_index.get_indexer(df["label"])
    if (label_codes < 0).any():
        row = int(np.flatnonzero(label_codes < 0)[0])
        raise InputError(
            f"unknown class {df['label'].iloc[row]!r}; known classes: "
            f"{', '.join(map(str, class_index))}",
            source=source,
            location=f"row {row + 1}",
            field="label",
        )
    return EncodedLabels(
        items=np.asarray(item_codes, dtype=np.int64),
        annotators=np.asarray(annotator_codes, dtype=np.int64),
        labels=np.asarray(label_codes, dtype=np.int64),
        item_index=pd.Index(item_index, name="item"),
        annotator_index=pd.Index(annotator_index, name="annotator"),
        classes=pd.Index(class_index, name="label"),
    )
