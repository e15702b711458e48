"""Mask and box annotation payloads as arrays: the run-length mask codec, union masks and boxes
per class. Pure numpy.

A geometric payload is ``{"objects": [{"label", "box"?, "score"?, "mask"?}, ...]}``. A mask is
stored as ``{"shape": [...], "runs": [start, length, ...]}``: the C-order runs of foreground
voxels of a 2D (rows, columns) or 3D (slices, rows, columns) boolean array
(:func:`encode_mask` / :func:`decode_mask`); a draft of a volume adds ``"spacing"`` (mm per
array axis) to the mask and ``"size_mm"`` (mm³) to the object. Boxes follow
:mod:`truthset.quality.boxes`:
``[x0, y0, x1, y1]`` (or ``[x0, y0, z0, x1, y1, z1]``), x = column, y = row, z = slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def encode_mask(mask: NDArray[np.bool_]) -> dict[str, Any]:
    """Run-length encode a boolean mask: ``{"shape": [...], "runs": [start, length, ...]}``
    with starts into the C-order flattened array."""
    flat = np.asarray(mask, dtype=bool).ravel()
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = ends - starts
    return {"shape": [int(s) for s in mask.shape], "runs": [int(r) for r in runs]}


def decode_mask(encoded: Mapping[str, Any]) -> NDArray[np.bool_]:
    """Inverse of :func:`encode_mask`.

    Raises
    ------
    ValueError
        Malformed shape or runs (negative, overlapping or out of range).
    """
    shape = encoded.get("shape")
    runs = encoded.get("runs")
    if (not isinstance(shape, Sequence) or not shape
            or not all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError("mask.shape must be a list of positive integers")
    if not isinstance(runs, Sequence) or len(runs) % 2:
        raise ValueError("mask.runs must be a list of start, length pairs")
    size = int(np.prod(shape))
    arr = np.asarray(runs, dtype=np.int64).reshape(-1, 2) if runs else np.zeros((0, 2), np.int64)
    if (arr < 0).any() or (arr[:, 1] == 0).any():
        raise ValueError("mask.runs holds a negative start or an empty run")
    ends = arr[:, 0] + arr[:, 1]
    if len(arr) and (ends.max() > size or (arr[1:, 0] < ends[:-1]).any()):
        raise ValueError("mask.runs overlap or run past the end of the mask")
    flat = np.zeros(size, dtype=bool)
    for start, length in arr:
        flat[start:start + length] = True
    return flat.reshape(tuple(int(s) for s in shape))


def mask_box(mask: NDArray[np.bool_]) -> tuple[float, ...]:
    """Bounding box of a 2D/3D mask in the box convention of :mod:`truthset.quality.boxes`:
    ``[x0, y0, x1, y1]`` (or with z) where x = column, y = row, z = slice; ``x1`` exclusive."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    if mask.ndim == 2:
        return (float(lo[1]), float(lo[0]), float(hi[1]), float(hi[0]))
    return (float(lo[2]), float(lo[1]), float(lo[0]), float(hi[2]), float(hi[1]), float(hi[0]))


def payload_masks(payload: Mapping[str, Any], shape: Sequence[int] | None = None
                  ) -> dict[str, NDArray[np.bool_]]:
    """Union mask per class of a mask payload (classes without objects are absent)."""
    out: dict[str, NDArray[np.bool_]] = {}
    for obj in payload.get("objects", []) or []:
        if not isinstance(obj, Mapping) or "mask" not in obj:
            continue
        mask = decode_mask(obj["mask"])
        if shape is not None and tuple(mask.shape) != tuple(shape):
            raise ValueError("masks of one item have different shapes")
        label = str(obj["label"])
        out[label] = out[label] | mask if label in out else mask
    return out


def payload_boxes(payload: Mapping[str, Any]) -> dict[str, list[list[float]]]:
    """Boxes per class of a box (or mask) payload."""
    out: dict[str, list[list[float]]] = {}
    for obj in payload.get("objects", []) or []:
        if isinstance(obj, Mapping) and "box" in obj:
            out.setdefault(str(obj["label"]), []).append([float(v) for v in obj["box"]])
    return out
