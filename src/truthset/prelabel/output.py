"""What a model may say about an item, and the checks a model's answer must pass.

A model adapter hands back a *raw* answer (plain Python / numpy values, exactly as the model or
the remote service produced them). :func:`check_output` turns it into a :class:`Prediction` or
refuses it with a :class:`DraftRefused` naming the reason:

- malformed output (wrong type, missing field, NaN or negative probabilities, probabilities
  that do not sum to 1);
- a class the model is not registered to draft;
- geometry out of bounds (a box outside the image, a mask whose shape is not the image's).

Raw answers, by output kind:

``classification``
    ``{"probabilities": {class: p, ...}}`` (they must sum to 1 within 1e-3).
``mask``
    ``{"label_map": ndarray(int), "label_names": {class: index}}``: one class index per pixel,
    0 = background; or ``{"objects": [{"label", "mask": bool ndarray, "score"}]}``.
``box``
    ``{"objects": [{"label", "box": [x0, y0, x1, y1], "score"}]}`` in pixel coordinates
    (``x`` = column, ``y`` = row; see :mod:`truthset.quality.boxes`).

Stored payloads (what the draft annotation holds): classification ``{"label": name}``; boxes
``{"objects": [{"label", "box", "score"}]}``; masks ``{"objects": [{"label", "score", "box",
"mask": {"shape": [...], "runs": [start, length, ...]}}]}`` where ``runs`` are the C-order runs
of foreground voxels (see :func:`truthset.quality.payloads.encode_mask`). Pure module: numpy
and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

# The payload codec lives in quality.payloads (workflow.acceptance needs it too); the names stay
# importable from here.
from truthset.quality.payloads import decode_mask as decode_mask
from truthset.quality.payloads import encode_mask as encode_mask
from truthset.quality.payloads import mask_box as mask_box
from truthset.quality.payloads import payload_boxes as payload_boxes
from truthset.quality.payloads import payload_masks as payload_masks

OutputKind = Literal["classification", "mask", "box"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("classification", "mask", "box")


class DraftRefused(Exception):  # noqa: N818 - a refusal, not a failure of Truthset
    """A model's answer was refused; ``reason`` says why (written to the draft log)."""

    def __init__(self, reason: str, *, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class DraftObject:
    """One drafted object (a mask region or a box) of one class."""

    label: str
    score: float
    box: tuple[float, ...]
    mask: NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class Prediction:
    """A checked model answer for one item."""

    kind: OutputKind
    probabilities: dict[str, float] = field(default_factory=dict)
    objects: tuple[DraftObject, ...] = ()
    #: Voxel size in mm per axis of the masks (the item's spacing), when known.
    spacing: tuple[float, ...] | None = None

    @property
    def label(self) -> str | None:
        """The most probable class (classification only)."""
        if not self.probabilities:
            return None
        return max(self.probabilities.items(), key=lambda kv: (kv[1], kv[0]))[0]

    @property
    def confidence(self) -> float | None:
        """Probability of the drafted class, or the mean object score."""
        if self.kind == "classification":
            return self.probabilities[self.label] if self.label is not None else None
        if not self.objects:
            return None
        return float(np.mean([o.score for o in self.objects]))

    @property
    def classes(self) -> set[str]:
        """The classes this prediction drafts."""
        if self.kind == "classification":
            return {self.label} if self.label is not None else set()
        return {o.label for o in self.objects}

    def without(self, classes: set[str]) -> Prediction:
        """The same prediction with the objects of ``classes`` dropped (paused classes)."""
        if self.kind == "classification":
            return self if self.label not in classes else Prediction(self.kind)
        return Prediction(self.kind, dict(self.probabilities),
                          tuple(o for o in self.objects if o.label not in classes), self.spacing)

    def payload(self) -> dict[str, Any]:
        """The annotation payload of this draft (see the module docstring)."""
        if self.kind == "classification":
            return {"label": self.label}
        out = []
        for obj in self.objects:
            entry: dict[str, Any] = {"label": obj.label, "score": round(obj.score, 6),
                                     "box": [float(v) for v in obj.box]}
            if obj.mask is not None:
                entry["mask"] = encode_mask(obj.mask)
                if self.spacing is not None and len(self.spacing) == obj.mask.ndim:
                    entry["mask"]["spacing"] = [float(v) for v in self.spacing]
                    entry["size_mm"] = round(
                        float(obj.mask.sum()) * float(np.prod(self.spacing)), 6)
            out.append(entry)
        return {"objects": out}


# -- checking -----------------------------------------------------------------------------------
def _finite_score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise DraftRefused(f"{where} is not a number")
    score = float(value)
    if not math.isfinite(score) or score < 0 or score > 1:
        raise DraftRefused(f"{where} = {score} is not a probability in [0, 1]")
    return score


def _registered(label: Any, registered: set[str], where: str) -> str:
    if not isinstance(label, str):
        raise DraftRefused(f"{where} is not a class name")
    if label not in registered:
        raise DraftRefused(
            f"{where} {label!r} is not a class this model is registered to draft "
            f"({', '.join(sorted(registered))})", kind="class")
    return label


def check_output(
    raw: Any,
    *,
    kind: OutputKind,
    registered: Sequence[str],
    image_shape: Sequence[int],
    min_object_size: int = 1,
) -> Prediction:
    """Check a model's raw answer for one item and return it as a :class:`Prediction`.

    Parameters
    ----------
    raw:
        The adapter's answer (see the module docstring for its shape per ``kind``).
    kind:
        What the model was registered to output.
    registered:
        Classes the model may draft.
    image_shape:
        Spatial shape of the item's image (rows, columns[, slices first for volumes]).
    min_object_size:
        Connected regions of a label map smaller than this are dropped (noise).

    Raises
    ------
    DraftRefused
        Malformed output, an unregistered class, or geometry out of bounds.
    """
    allowed = set(registered)
    if not isinstance(raw, Mapping):
        raise DraftRefused(f"the model answered {type(raw).__name__}, not an object")
    spatial = tuple(int(s) for s in image_shape)
    if kind == "classification":
        probs = raw.get("probabilities")
        if not isinstance(probs, Mapping) or not probs:
            raise DraftRefused("a classification answer needs probabilities: {class: p}")
        clean = {str(k): _finite_score(v, f"probability of {k!r}") for k, v in probs.items()}
        total = sum(clean.values())
        if abs(total - 1.0) > 1e-3:
            raise DraftRefused(f"probabilities sum to {total:.4f}, not 1")
        prediction = Prediction("classification", clean)
        _registered(prediction.label, allowed, "drafted class")
        return prediction
    if kind == "mask" and "label_map" in raw:
        return _from_label_map(raw, allowed, spatial, min_object_size)
    objects = raw.get("objects")
    if not isinstance(objects, Sequence) or isinstance(objects, str | bytes):
        raise DraftRefused(f"a {kind} answer needs objects: [...]")
    out: list[DraftObject] = []
    for k, obj in enumerate(objects):
        where = f"objects[{k}]"
        if not isinstance(obj, Mapping):
            raise DraftRefused(f"{where} is not an object")
        label = _registered(obj.get("label"), allowed, f"{where}.label")
        score = _finite_score(obj.get("score", 1.0), f"{where}.score")
        if kind == "box":
            box = _check_box(obj.get("box"), spatial, where)
            out.append(DraftObject(label, score, box))
        else:
            mask = obj.get("mask")
            if isinstance(mask, Mapping):
                try:
                    mask = decode_mask(mask)
                except ValueError as exc:
                    raise DraftRefused(f"{where}.mask: {exc}") from None
            if not isinstance(mask, np.ndarray):
                raise DraftRefused(f"{where}.mask is not an array")
            if tuple(mask.shape) != spatial:
                raise DraftRefused(
                    f"{where}.mask has shape {tuple(mask.shape)}, the image is {spatial}",
                    kind="geometry")
            mask = mask.astype(bool)
            if not mask.any():
                continue
            out.append(DraftObject(label, score, mask_box(mask), mask))
    return Prediction(kind, {}, tuple(out))


def _check_box(box: Any, spatial: tuple[int, ...], where: str) -> tuple[float, ...]:
    dims = len(spatial)
    if (not isinstance(box, Sequence) or len(box) != 2 * dims
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)):
        raise DraftRefused(f"{where}.box must be {2 * dims} numbers")
    values = tuple(float(v) for v in box)
    if not all(math.isfinite(v) for v in values):
        raise DraftRefused(f"{where}.box holds a non-finite number")
    # Box axes are (x, y[, z]) = (column, row[, slice]); the image shape is ([slice,] row, col).
    extent = tuple(reversed(spatial))
    for axis in range(dims):
        lo, hi = values[axis], values[axis + dims]
        if not (0 <= lo < hi <= extent[axis]):
            raise DraftRefused(
                f"{where}.box {list(values)} is out of bounds of the {'x'.join(map(str, spatial))}"
                " image", kind="geometry")
    return values


def _from_label_map(raw: Mapping[str, Any], allowed: set[str], spatial: tuple[int, ...],
                    min_size: int) -> Prediction:
    label_map = raw.get("label_map")
    names = raw.get("label_names")
    if not isinstance(label_map, np.ndarray) or label_map.dtype.kind not in "iub":
        raise DraftRefused("label_map must be an integer array")
    if tuple(label_map.shape) != spatial:
        raise DraftRefused(f"label_map has shape {tuple(label_map.shape)}, the image is {spatial}",
                           kind="geometry")
    if not isinstance(names, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in names.values()):
        raise DraftRefused("label_names must map class names to integer indices")
    index_to_name = {int(v): str(k) for k, v in names.items() if int(v) != 0}
    present = {int(v) for v in np.unique(label_map) if int(v) != 0}
    unknown = sorted(present - set(index_to_name))
    if unknown:
        raise DraftRefused(f"label_map holds indices {unknown} that label_names does not name")
    given = raw.get("scores")
    scores: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    objects: list[DraftObject] = []
    for index in sorted(present):
        name = _registered(index_to_name[index], allowed, "label_map class")
        components, count = ndimage.label(label_map == index)
        for comp in range(1, count + 1):
            mask = components == comp
            if int(mask.sum()) < min_size:
                continue
            score = _finite_score(scores.get(name, 1.0), f"score of {name!r}")
            objects.append(DraftObject(name, score, mask_box(mask), mask))
    return Prediction("mask", {}, tuple(objects))
