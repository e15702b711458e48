"""The quality engine: agreement metrics and consensus, pure numpy/scipy, usable on any labels.

Categorical labels come as a long table ``item, annotator, label`` (crowd-kit's ``task,
worker, label`` works too)::

    from truthset.quality import DawidSkene, agreement

    DawidSkene().fit_predict(table)                       # item -> label
    agreement(table, metric="krippendorff", level="ordinal", ci=0.95).to_dict()

Masks and boxes have their own modules: :mod:`truthset.quality.masks`,
:mod:`truthset.quality.staple`, :mod:`truthset.quality.boxes`.
"""

from truthset.quality.aggregation import (
    GLAD,
    MACE,
    Aggregator,
    DawidSkene,
    MajorityVote,
    MedianVote,
    MultiLabelAggregator,
    OneCoinDawidSkene,
    OrdinalDawidSkene,
    WeightedMajorityVote,
)
from truthset.quality.aggregation.registry import AGGREGATORS, make_aggregator
from truthset.quality.agreement import (
    DUPLICATES,
    LEVELS,
    METRICS,
    AgreementResult,
    PairwiseAgreement,
    agreement,
    cohen_kappa,
    counts_from_contingency,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    pairwise_agreement,
    per_class_agreement,
    percent_agreement,
)
from truthset.quality.table import EncodedLabels, encode, normalize_table

__all__ = [
    "AGGREGATORS",
    "DUPLICATES",
    "GLAD",
    "LEVELS",
    "MACE",
    "METRICS",
    "Aggregator",
    "AgreementResult",
    "DawidSkene",
    "EncodedLabels",
    "MajorityVote",
    "MedianVote",
    "MultiLabelAggregator",
    "OneCoinDawidSkene",
    "OrdinalDawidSkene",
    "PairwiseAgreement",
    "WeightedMajorityVote",
    "agreement",
    "cohen_kappa",
    "counts_from_contingency",
    "encode",
    "fleiss_kappa",
    "gwet_ac1",
    "krippendorff_alpha",
    "make_aggregator",
    "normalize_table",
    "pairwise_agreement",
    "per_class_agreement",
    "percent_agreement",
]
