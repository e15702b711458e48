"""What a reader did with a model draft, and acceptance over a window: pure arithmetic.

:func:`compare_draft` gives, for every class a draft proposes, one :class:`ClassOutcome`:

- ``accepted`` — the reader's label for that class is the draft's, unchanged;
- ``edited`` — the reader kept the class but changed its geometry; Dice and IoU between draft
  and final (masks: :func:`truthset.quality.masks.dice` / ``iou`` of the class's union mask, 2D
  or 3D; boxes: matched F1 at IoU 0.5 as Dice and the mean IoU of the matched pairs, from
  :func:`truthset.quality.boxes.matched_f1`);
- ``rejected`` — the reader's label does not contain the class (classification: another
  label).

:func:`window_acceptance` is the share of a window of outcomes that count as accepted: the
``accepted`` ones plus the ``edited`` ones with Dice at or above the edit tolerance.

The database side (recording outcomes when a read is stored, pausing drafting) is
:mod:`truthset.workflow.acceptance`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from truthset.domain.schema import SchemaKind
from truthset.quality.boxes import matched_f1
from truthset.quality.masks import dice, iou
from truthset.quality.payloads import payload_boxes, payload_masks

OUTCOMES = ("accepted", "edited", "rejected")


class ClassOutcome(NamedTuple):
    """The outcome of one drafted class (a tuple: ``(class, outcome, dice, iou)``)."""

    class_name: str
    outcome: str
    dice: float | None
    iou: float | None


def compare_draft(kind: SchemaKind | str, draft: Mapping[str, Any], final: Mapping[str, Any]
                  ) -> list[ClassOutcome]:
    """Outcome of every class ``draft`` proposes, given the reader's ``final`` payload.

    Parameters
    ----------
    kind:
        The schema kind (``classification``, ``mask`` or ``box``).
    draft, final:
        Annotation payloads (see :mod:`truthset.quality.payloads`).

    Returns
    -------
    list of ClassOutcome
        Sorted by class; classification drafts have no Dice/IoU.
    """
    kind = SchemaKind(kind)
    if kind == SchemaKind.CLASSIFICATION:
        label = str(draft.get("label"))
        same = final.get("label") == label
        return [ClassOutcome(label, "accepted" if same else "rejected", None, None)]
    out: list[ClassOutcome] = []
    if kind == SchemaKind.MASK:
        d_masks = payload_masks(draft)
        f_masks = payload_masks(final)
        for cls, dm in sorted(d_masks.items()):
            fm = f_masks.get(cls)
            if fm is None or not fm.any():
                out.append(ClassOutcome(cls, "rejected", 0.0, 0.0))
            elif fm.shape == dm.shape and np.array_equal(fm, dm):
                out.append(ClassOutcome(cls, "accepted", 1.0, 1.0))
            elif fm.shape != dm.shape:
                out.append(ClassOutcome(cls, "edited", 0.0, 0.0))
            else:
                out.append(ClassOutcome(cls, "edited", dice(dm, fm), iou(dm, fm)))
        return out
    d_boxes = payload_boxes(draft)
    f_boxes = payload_boxes(final)
    for cls, db in sorted(d_boxes.items()):
        fb = f_boxes.get(cls, [])
        if not fb:
            out.append(ClassOutcome(cls, "rejected", 0.0, 0.0))
        elif sorted(map(tuple, fb)) == sorted(map(tuple, db)):
            out.append(ClassOutcome(cls, "accepted", 1.0, 1.0))
        else:
            match = matched_f1(np.asarray(db), np.asarray(fb), 0.5)
            mean_iou = float(np.mean([m[2] for m in match.matches])) if match.matches else 0.0
            out.append(ClassOutcome(cls, "edited", match.f1, mean_iou))
    return out


def counts_as_accepted(outcome: str, dice_score: float | None, edit_tolerance: float) -> bool:
    """Whether one outcome counts as accepted: ``accepted``, or ``edited`` with Dice at or
    above ``edit_tolerance`` (an edit without Dice counts as 0)."""
    if outcome == "accepted":
        return True
    return outcome == "edited" and (dice_score if dice_score is not None else 0.0) >= edit_tolerance


def window_acceptance(outcomes: Sequence[tuple[str, float | None]], edit_tolerance: float
                      ) -> float | None:
    """Share of ``(outcome, dice)`` pairs that count as accepted; ``None`` for no outcome."""
    if not outcomes:
        return None
    ok = sum(counts_as_accepted(o, d, edit_tolerance) for o, d in outcomes)
    return ok / len(outcomes)
