"""Categorical aggregation: many readers' labels in, one label with its posterior out.

=============================  ===============================================================
:class:`MajorityVote`          most frequent label; explicit tie policy (``ties_``)
:class:`WeightedMajorityVote`  log-odds weighted vote (weights given, from gold, or from MV)
:class:`MedianVote`            ordinal median
:class:`DawidSkene`            full confusion matrices, EM, gold clamped
:class:`OneCoinDawidSkene`     one accuracy per reader, EM
:class:`OrdinalDawidSkene`     ordered-probit readers (bias, spread, lapse) for graded schemas
:class:`GLAD`                  reader skill × item difficulty (Whitehill et al. 2009)
:class:`MACE`                  spammer-aware competence model (Hovy et al. 2013)
:class:`MultiLabelAggregator`  one binary aggregation per class of a multi-label schema
=============================  ===============================================================
"""

from truthset.quality.aggregation.base import Aggregator, encode_gold
from truthset.quality.aggregation.dawid_skene import DawidSkene, OneCoinDawidSkene
from truthset.quality.aggregation.glad import GLAD
from truthset.quality.aggregation.mace import MACE
from truthset.quality.aggregation.multilabel import MultiLabelAggregator, presence_table
from truthset.quality.aggregation.ordinal import OrdinalDawidSkene
from truthset.quality.aggregation.vote import MajorityVote, MedianVote, WeightedMajorityVote

__all__ = [
    "GLAD",
    "MACE",
    "Aggregator",
    "DawidSkene",
    "MajorityVote",
    "MedianVote",
    "MultiLabelAggregator",
    "OneCoinDawidSkene",
    "OrdinalDawidSkene",
    "WeightedMajorityVote",
    "encode_gold",
    "presence_table",
]
