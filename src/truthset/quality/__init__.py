"""The quality engine: agreement metrics and consensus, pure numpy/scipy, usable on any labels.

Categorical labels come as a long table ``item, annotator, label`` (crowd-kit's ``task,
worker, label`` works too)::

    from truthset.quality import DawidSkene, agreement

    DawidSkene().fit_predict(table)                       # item -> label
    agreement(table, metric="krippendorff", level="ordinal", ci=0.95).to_dict()

Masks and boxes have their own modules — :mod:`truthset.quality.masks` (Dice, IoU, Hausdorff,
HD95, ASSD), :mod:`truthset.quality.staple` (STAPLE, voxelwise vote) and
:mod:`truthset.quality.boxes` (box IoU, matched F1, box fusion) — whose main names are
re-exported here. A polars DataFrame is accepted wherever a pandas one is.
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
from truthset.quality.boxes import (
    BoxFusion,
    BoxMatch,
    Finding,
    box_iou_matrix,
    fuse_box_table,
    fuse_boxes,
    matched_f1,
)
from truthset.quality.masks import (
    MaskMetrics,
    assd,
    dice,
    hausdorff,
    hd95,
    iou,
    mask_metrics,
    mask_metrics_per_label,
)
from truthset.quality.staple import (
    STAPLE,
    MultiLabelSTAPLE,
    MultiLabelStapleResult,
    StapleResult,
    majority_vote_labels,
    majority_vote_mask,
    vote_fraction,
)
from truthset.quality.table import EncodedLabels, as_pandas, encode, normalize_table

__all__ = [
    "AGGREGATORS",
    "DUPLICATES",
    "GLAD",
    "LEVELS",
    "MACE",
    "METRICS",
    "STAPLE",
    "Aggregator",
    "AgreementResult",
    "BoxFusion",
    "BoxMatch",
    "DawidSkene",
    "EncodedLabels",
    "Finding",
    "MajorityVote",
    "MaskMetrics",
    "MedianVote",
    "MultiLabelAggregator",
    "MultiLabelSTAPLE",
    "MultiLabelStapleResult",
    "OneCoinDawidSkene",
    "OrdinalDawidSkene",
    "PairwiseAgreement",
    "StapleResult",
    "WeightedMajorityVote",
    "agreement",
    "as_pandas",
    "assd",
    "box_iou_matrix",
    "cohen_kappa",
    "counts_from_contingency",
    "dice",
    "encode",
    "fleiss_kappa",
    "fuse_box_table",
    "fuse_boxes",
    "gwet_ac1",
    "hausdorff",
    "hd95",
    "iou",
    "krippendorff_alpha",
    "majority_vote_labels",
    "majority_vote_mask",
    "make_aggregator",
    "mask_metrics",
    "mask_metrics_per_label",
    "matched_f1",
    "normalize_table",
    "pairwise_agreement",
    "per_class_agreement",
    "percent_agreement",
    "vote_fraction",
]
