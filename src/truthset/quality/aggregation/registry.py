"""Aggregation methods by their short names (``mv``, ``ds``…), for the CLI and services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from truthset.domain.errors import InputError
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.dawid_skene import DawidSkene, OneCoinDawidSkene
from truthset.quality.aggregation.glad import GLAD
from truthset.quality.aggregation.mace import MACE
from truthset.quality.aggregation.ordinal import OrdinalDawidSkene
from truthset.quality.aggregation.vote import MajorityVote, MedianVote, WeightedMajorityVote

#: Short name → estimator class.
AGGREGATORS: dict[str, Callable[..., Aggregator]] = {
    "mv": MajorityVote,
    "wmv": WeightedMajorityVote,
    "ds": DawidSkene,
    "onecoin": OneCoinDawidSkene,
    "glad": GLAD,
    "mace": MACE,
    "median": MedianVote,
    "ordinal-ds": OrdinalDawidSkene,
}


def make_aggregator(
    method: str, *, classes: Sequence[Any] | None = None, **params: Any
) -> Aggregator:
    """An unfitted aggregator for the short name ``method``.

    Raises
    ------
    InputError
        Unknown method name (the known ones are listed).
    """
    try:
        factory = AGGREGATORS[method]
    except KeyError:
        raise InputError(
            f"unknown aggregation method {method!r}; choose one of {', '.join(AGGREGATORS)}",
            field="method",
        ) from None
    model = factory(**params)
    model.classes = classes
    return model
