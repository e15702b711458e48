"""Overlap and surface-distance metrics for 2D and 3D segmentation masks.

Every distance is in physical units: the voxel ``spacing`` (one value per axis, in the array's
axis order) scales each axis, so anisotropic volumes (e.g. 0.7 x 0.7 x 3 mm) are measured
correctly.

Definitions
-----------
- **Surface** of a mask: its foreground voxels that have at least one background voxel among
  their face neighbours (``mask & ~binary_erosion(mask)``, connectivity 1, outside the array
  counts as background). This is the definition used by medpy (``connectivity=1``) and MONAI.
- **Directed surface distances** A -> B: for every surface voxel of A, the Euclidean distance
  (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``) to the nearest surface
  voxel of B.
- :func:`hausdorff`: the largest of both directed surface distances.
- :func:`hd95`: by default (``method="pooled"``) the 95th percentile of the *pooled* distances
  A -> B and B -> A, as medpy's ``hd95`` computes it. ``method="max_directed"`` gives MONAI's
  ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed 95th
  percentiles. Percentiles interpolate linearly (numpy's default).
- :func:`assd`: the mean of the pooled surface distances of both directions, as medpy's
  ``assd`` (medpy >= 0.5) and MONAI's ``compute_average_surface_distance(symmetric=True)``.
  (medpy < 0.5 averaged the two directed means instead.)

Empty masks
-----------
- both empty: Dice = IoU = 1 and every distance = 0 (the masks agree perfectly);
- one empty: Dice = IoU = 0 and every distance = ``inf``; :class:`MaskMetrics` and
  :class:`SurfaceDistances` carry the reason in their ``reason`` field.

Distances are computed only inside the bounding box of both masks plus a one-voxel margin,
which gives exactly the same numbers as the whole array, much faster for small structures in
large volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from truthset.domain.errors import InputError

__all__ = [
    "MaskMetrics",
    "SurfaceDistances",
    "assd",
    "dice",
    "dice_per_label",
    "hausdorff",
    "hd95",
    "iou",
    "iou_per_label",
    "mask_metrics",
    "mask_metrics_per_label",
    "surface_distances",
]

Spacing = Sequence[float] | NDArray[np.floating] | float | None
HD95Method = Literal["pooled", "max_directed"]

_BOTH_EMPTY = "both masks are empty"
_A_EMPTY = "mask a is empty, mask b is not: surface distances are undefined (inf)"
_B_EMPTY = "mask b is empty, mask a is not: surface distances are undefined (inf)"


@dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric surface-distance summary of two masks, in physical units.

    Attributes
    ----------
    hausdorff:
        Largest surface distance in either direction.
    hd95:
        95th percentile of the pooled surface distances (medpy's definition).
    hd95_max_directed:
        Larger of the two directed 95th percentiles (MONAI's definition).
    assd:
        Average symmetric surface distance: mean of the pooled distances of both directions
        (medpy >= 0.5, MONAI).
    n_surface_a, n_surface_b:
        Number of surface voxels of each mask.
    reason:
        Why the distances are degenerate (an empty mask), else ``None``.
    """

    hausdorff: float
    hd95: float
    hd95_max_directed: float
    assd: float
    n_surface_a: int
    n_surface_b: int
    reason: str | None = None


@dataclass(frozen=True)
class MaskMetrics:
    """Overlap and surface metrics of two masks.

    Attributes
    ----------
    dice, iou:
        Overlap (Sørensen–Dice coefficient and Jaccard index).
    hausdorff, hd95, assd:
        Surface distances in physical units (see :class:`SurfaceDistances`).
    volume_a, volume_b:
        Foreground volume of each mask in physical units (voxel count x voxel volume).
    reason:
        Why some metric is degenerate (an empty mask), else ``None``.
    """

    dice: float
    iou: float
    hausdorff: float
    hd95: float
    assd: float
    volume_a: float
    volume_b: float
    reason: str | None = None


# --------------------------------------------------------------------------- validation


def _as_bool(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(x)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"mask {name} must be 2D or 3D, got {arr.ndim} dimension(s) (shape {arr.shape})",
            field="shape",
        )
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"mask {name} must be numeric or boolean, got dtype {arr.dtype}")
    return arr != 0


def _spacing(spacing: Spacing, ndim: int, name: str) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = np.atleast_1d(np.asarray(spacing, dtype=float))
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.shape != (ndim,):
        raise InputError(
            f"{name} has {sp.size} value(s) but the masks have {ndim} axes", field="spacing"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{name} must be positive and finite, got {tuple(sp)}", field="spacing")
    return tuple(float(v) for v in sp)


def _check_pair(
    a: ArrayLike, b: ArrayLike, spacing: Spacing, spacing_b: Spacing
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], tuple[float, ...]]:
    ma = _as_bool(a, "a")
    mb = _as_bool(b, "b")
    if ma.shape != mb.shape:
        raise InputError(
            f"mask shapes differ: a has shape {ma.shape}, b has shape {mb.shape}", field="shape"
        )
    sa = _spacing(spacing, ma.ndim, "spacing")
    if spacing_b is not None:
        sb = _spacing(spacing_b, ma.ndim, "spacing_b")
        if not np.allclose(sa, sb, rtol=1e-6, atol=0.0):
            raise InputError(
                f"voxel spacings differ: a has spacing {sa}, b has spacing {sb}", field="spacing"
            )
    return ma, mb, sa


# --------------------------------------------------------------------------- overlap


def _overlap(ma: NDArray[np.bool_], mb: NDArray[np.bool_]) -> tuple[int, int, int]:
    inter = int(np.count_nonzero(ma & mb))
    return inter, int(np.count_nonzero(ma)), int(np.count_nonzero(mb))


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Sørensen–Dice coefficient ``2|A∩B| / (|A|+|B|)`` of two binary masks.

    Parameters
    ----------
    a, b:
        2D or 3D arrays of the same shape; any non-zero value is foreground.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises
    ------
    InputError
        When the shapes differ.
    """
    ma, mb, _ = _check_pair(a, b, None, None)
    inter, na, nb = _overlap(ma, mb)
    return 1.0 if na + nb == 0 else 2.0 * inter / (na + nb)


def iou(a: ArrayLike, b: ArrayLike) -> float:
    """Intersection over union (Jaccard index) ``|A∩B| / |A∪B|`` of two binary masks.

    Parameters
    ----------
    a, b:
        2D or 3D arrays of the same shape; any non-zero value is foreground.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    ma, mb, _ = _check_pair(a, b, None, None)
    inter, na, nb = _overlap(ma, mb)
    union = na + nb - inter
    return 1.0 if union == 0 else inter / union


def _labels_of(
    a: NDArray[np.generic], b: NDArray[np.generic], labels: Sequence[int] | None
) -> list[int]:
    if labels is not None:
        return [int(v) for v in labels]
    present = np.union1d(np.unique(a), np.unique(b))
    return [int(v) for v in present if v != 0]


def _label_pair(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.generic], NDArray[np.generic]]:
    la = np.asarray(a)
    lb = np.asarray(b)
    for name, arr in (("a", la), ("b", lb)):
        if arr.ndim not in (2, 3):
            raise InputError(f"label map {name} must be 2D or 3D, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise InputError(f"label map {name} must hold integers, got dtype {arr.dtype}")
    if la.shape != lb.shape:
        raise InputError(
            f"label map shapes differ: a has shape {la.shape}, b has shape {lb.shape}",
            field="shape",
        )
    return la, lb


def dice_per_label(
    a: ArrayLike, b: ArrayLike, labels: Sequence[int] | None = None
) -> dict[int, float]:
    """Dice of each label of two label maps (0 is background).

    Parameters
    ----------
    a, b:
        Integer label maps of the same shape.
    labels:
        Labels to score; default every non-zero label present in either map.

    Returns
    -------
    dict[int, float]
        Label -> Dice (1.0 for a requested label absent from both maps).
    """
    la, lb = _label_pair(a, b)
    return {lab: dice(la == lab, lb == lab) for lab in _labels_of(la, lb, labels)}


def iou_per_label(
    a: ArrayLike, b: ArrayLike, labels: Sequence[int] | None = None
) -> dict[int, float]:
    """IoU (Jaccard) of each label of two label maps (0 is background).

    Parameters
    ----------
    a, b:
        Integer label maps of the same shape.
    labels:
        Labels to score; default every non-zero label present in either map.

    Returns
    -------
    dict[int, float]
        Label -> IoU (1.0 for a requested label absent from both maps).
    """
    la, lb = _label_pair(a, b)
    return {lab: iou(la == lab, lb == lab) for lab in _labels_of(la, lb, labels)}


# --------------------------------------------------------------------------- surfaces


def _crop_to_union(
    ma: NDArray[np.bool_], mb: NDArray[np.bool_], margin: int = 1
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Crop both masks to the bounding box of their union, padded with ``margin`` zeros."""
    union = ma | mb
    slices = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=other))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    box = tuple(slices)
    pad = [(margin, margin)] * union.ndim
    return np.pad(ma[box], pad), np.pad(mb[box], pad)


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _directed(
    surf_from: NDArray[np.bool_], surf_to: NDArray[np.bool_], spacing: tuple[float, ...]
) -> NDArray[np.float64]:
    dist = ndimage.distance_transform_edt(~surf_to, sampling=spacing)
    return np.asarray(dist, dtype=np.float64)[surf_from]


def directed_surface_distances(
    a: ArrayLike, b: ArrayLike, spacing: Spacing = None, *, spacing_b: Spacing = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distances from each surface voxel of one mask to the other mask's surface, both ways.

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground), both non-empty.
    spacing:
        Voxel size per axis (array axis order); a scalar applies to every axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(a_to_b, b_to_a)``: one distance per surface voxel of ``a`` (resp. ``b``), in the
        order of ``numpy.nonzero`` on the cropped arrays.

    Raises
    ------
    InputError
        When shapes or spacings differ, or a mask is empty.
    """
    ma, mb, sp = _check_pair(a, b, spacing, spacing_b)
    if not ma.any() or not mb.any():
        raise InputError("directed surface distances need two non-empty masks")
    ca, cb = _crop_to_union(ma, mb)
    sa, sb = _surface(ca), _surface(cb)
    return _directed(sa, sb, sp), _directed(sb, sa, sp)


def _summarise(d_ab: NDArray[np.float64], d_ba: NDArray[np.float64]) -> SurfaceDistances:
    pooled = np.concatenate([d_ab, d_ba])
    return SurfaceDistances(
        hausdorff=float(pooled.max()),
        hd95=float(np.percentile(pooled, 95)),
        hd95_max_directed=float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))),
        assd=float(pooled.mean()),
        n_surface_a=int(d_ab.size),
        n_surface_b=int(d_ba.size),
    )


def surface_distances(
    a: ArrayLike, b: ArrayLike, spacing: Spacing = None, *, spacing_b: Spacing = None
) -> SurfaceDistances:
    """Hausdorff, HD95 (both definitions) and ASSD of two binary masks in one pass.

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground).
    spacing:
        Voxel size per axis (array axis order); a scalar applies to every axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.

    Returns
    -------
    SurfaceDistances
        All zero when both masks are empty; all ``inf`` (with ``reason``) when one is empty.

    Raises
    ------
    InputError
        When shapes or spacings differ (the message names both).
    """
    ma, mb, sp = _check_pair(a, b, spacing, spacing_b)
    has_a, has_b = bool(ma.any()), bool(mb.any())
    if not has_a and not has_b:
        return SurfaceDistances(0.0, 0.0, 0.0, 0.0, 0, 0, _BOTH_EMPTY)
    ca, cb = _crop_to_union(ma, mb)
    sa, sb = _surface(ca), _surface(cb)
    if not (has_a and has_b):
        inf = float("inf")
        n_a, n_b = int(np.count_nonzero(sa)), int(np.count_nonzero(sb))
        return SurfaceDistances(inf, inf, inf, inf, n_a, n_b, _B_EMPTY if has_a else _A_EMPTY)
    return _summarise(_directed(sa, sb, sp), _directed(sb, sa, sp))


def hausdorff(
    a: ArrayLike, b: ArrayLike, spacing: Spacing = None, *, spacing_b: Spacing = None
) -> float:
    """Symmetric Hausdorff distance between the surfaces of two masks, in physical units.

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground).
    spacing:
        Voxel size per axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.

    Returns
    -------
    float
        0.0 when both masks are empty, ``inf`` when exactly one is (see
        :func:`surface_distances` for the reason).
    """
    return surface_distances(a, b, spacing, spacing_b=spacing_b).hausdorff


def hd95(
    a: ArrayLike,
    b: ArrayLike,
    spacing: Spacing = None,
    *,
    spacing_b: Spacing = None,
    method: HD95Method = "pooled",
) -> float:
    """95th-percentile Hausdorff distance, in physical units.

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground).
    spacing:
        Voxel size per axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.
    method:
        ``"pooled"`` (default): 95th percentile of the pooled surface distances of both
        directions — medpy's ``hd95``. ``"max_directed"``: larger of the two directed 95th
        percentiles — MONAI's ``compute_hausdorff_distance(percentile=95)``.

    Returns
    -------
    float
        0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    res = surface_distances(a, b, spacing, spacing_b=spacing_b)
    if method == "pooled":
        return res.hd95
    if method == "max_directed":
        return res.hd95_max_directed
    raise InputError(f"unknown hd95 method {method!r}; use 'pooled' or 'max_directed'")


def assd(
    a: ArrayLike, b: ArrayLike, spacing: Spacing = None, *, spacing_b: Spacing = None
) -> float:
    """Average symmetric surface distance: mean of the pooled surface distances (as medpy).

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground).
    spacing:
        Voxel size per axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.

    Returns
    -------
    float
        0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    return surface_distances(a, b, spacing, spacing_b=spacing_b).assd


def mask_metrics(
    a: ArrayLike, b: ArrayLike, spacing: Spacing = None, *, spacing_b: Spacing = None
) -> MaskMetrics:
    """Dice, IoU, Hausdorff, HD95 (pooled) and ASSD of two binary masks.

    Parameters
    ----------
    a, b:
        Binary masks (2D or 3D, same shape; non-zero is foreground).
    spacing:
        Voxel size per axis; default 1.
    spacing_b:
        Spacing of ``b`` when it comes with its own; must equal ``spacing``.

    Returns
    -------
    MaskMetrics
        See the module docstring for the empty-mask conventions.
    """
    ma, mb, sp = _check_pair(a, b, spacing, spacing_b)
    inter, na, nb = _overlap(ma, mb)
    voxel = float(np.prod(sp))
    dist = surface_distances(ma, mb, sp)
    union = na + nb - inter
    return MaskMetrics(
        dice=1.0 if na + nb == 0 else 2.0 * inter / (na + nb),
        iou=1.0 if union == 0 else inter / union,
        hausdorff=dist.hausdorff,
        hd95=dist.hd95,
        assd=dist.assd,
        volume_a=na * voxel,
        volume_b=nb * voxel,
        reason=dist.reason,
    )


def mask_metrics_per_label(
    a: ArrayLike,
    b: ArrayLike,
    spacing: Spacing = None,
    *,
    spacing_b: Spacing = None,
    labels: Sequence[int] | None = None,
) -> dict[int, MaskMetrics]:
    """:func:`mask_metrics` for each label of two label maps (0 is background).

    Parameters
    ----------
    a, b:
        Integer label maps of the same shape.
    spacing, spacing_b:
        As in :func:`mask_metrics`.
    labels:
        Labels to score; default every non-zero label present in either map.

    Returns
    -------
    dict[int, MaskMetrics]
        Label -> metrics.
    """
    la, lb = _label_pair(a, b)
    return {
        lab: mask_metrics(la == lab, lb == lab, spacing, spacing_b=spacing_b)
        for lab in _labels_of(la, lb, labels)
    }
