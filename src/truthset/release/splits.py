"""Train / validation / test splits made by patient, stratified by class and site, from a seed.

Pure (pandas and numpy): every item of a patient lands in the same split; within each stratum
(the patient's most frequent class and site) patients are shuffled with the seed and dealt to
the split furthest below its target share of items. Same input and seed, same splits.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "validation": 0.15, "test": 0.15}


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validate split shares (positive, summing to 1) and return them as a plain dict.

    Raises
    ------
    InputError
        A share is not positive, or they do not sum to 1 (field ``splits``).
    """
    clean = {str(k): float(v) for k, v in fractions.items()}
    if not clean or any(not np.isfinite(v) or v <= 0 for v in clean.values()):
        raise InputError("every split share must be a positive number", field="splits")
    if abs(sum(clean.values()) - 1.0) > 1e-6:
        raise InputError(f"split shares must sum to 1, not {sum(clean.values()):g}",
                         field="splits")
    return clean


def _modes(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per group, the most frequent value of ``column`` (ties: the smallest value)."""
    counts = (frame.assign(value=frame[column].fillna("").astype(str))
              .groupby(["group", "value"], sort=False).size().rename("n").reset_index())
    counts = counts.sort_values(["group", "n", "value"], ascending=[True, False, True])
    return counts.drop_duplicates("group").set_index("group")["value"]


def make_splits(
    table: pd.DataFrame,
    *,
    seed: int,
    fractions: Mapping[str, float] | None = None,
) -> pd.Series:
    """Assign every item a split.

    Parameters
    ----------
    table:
        Columns ``item``, ``patient`` (missing: the item is its own patient), ``label`` and
        ``site``.
    seed:
        Seed of the shuffle inside each stratum.
    fractions:
        Split name -> share of items (default 70/15/15 train/validation/test).

    Returns
    -------
    pandas.Series
        Split name by item, in the order of ``table``.
    """
    shares = check_fractions(fractions or DEFAULT_FRACTIONS)
    names = list(shares)
    if table.empty:
        return pd.Series([], dtype=object, name="split")
    frame = table[["item", "patient", "label", "site"]].copy()
    frame["group"] = [
        f"patient:{p}" if isinstance(p, str) and p else f"item:{i}"
        for i, p in zip(frame["item"], frame["patient"], strict=True)
    ]
    groups = frame.groupby("group", sort=True).size().rename("size").to_frame()
    groups["label"] = _modes(frame, "label")
    groups["site"] = _modes(frame, "site")
    groups = groups.reset_index()
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    for _stratum, members in groups.groupby(["label", "site"], sort=True):
        order = members.iloc[rng.permutation(len(members))]
        taken = dict.fromkeys(names, 0)
        total = 0
        for group, size in zip(order["group"], order["size"], strict=True):
            total += int(size)
            deficit = {n: shares[n] * total - taken[n] for n in names}
            pick = max(names, key=lambda n: (deficit[n], shares[n], -names.index(n)))
            taken[pick] += int(size)
            assigned[str(group)] = pick
    return pd.Series([assigned[g] for g in frame["group"]], index=table.index, name="split")


def patients_in_several_splits(table: pd.DataFrame, splits: pd.Series) -> list[str]:
    """Patients (non-empty ``patient``) whose items fall in more than one split."""
    frame = pd.DataFrame({"patient": table["patient"], "split": splits})
    frame = frame[frame["patient"].map(lambda p: isinstance(p, str) and bool(p))]
    counts = frame.groupby("patient")["split"].nunique()
    return sorted(str(p) for p in counts[counts > 1].index)
