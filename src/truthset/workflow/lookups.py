"""Reading back what the workflow stored, page by page: a project's annotations (as far as the
caller may see them) and the current consensus of its items.

Writing them is :mod:`.annotations`, the queue and :mod:`.consensus`; who may see what is
:mod:`truthset.auth.policy` (its SQL condition is passed in here as ``visible``).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from truthset.domain.errors import NotFoundError
from truthset.store.models import Annotation, Consensus, Item, Project
from truthset.store.pages import Page, paginate


def annotations_page(
    session: Session, project: Project, *, item: Item | None = None,
    visible: ColumnElement[bool] | None = None, cursor: str | None, limit: int,
) -> Page[Annotation]:
    """One page of the project's annotations (every revision and draft) in id order.

    Parameters
    ----------
    session:
        The open session.
    project:
        The project.
    item:
        Only this item's annotations.
    visible:
        Only the annotations this condition selects
        (:func:`truthset.auth.policy.annotation_filter`); ``None``: all of them.
    cursor, limit:
        The page (see :func:`truthset.store.pages.paginate`).

    Raises
    ------
    InputError
        ``cursor`` is not a cursor this server issued (field ``cursor``).
    """
    stmt = select(Annotation).where(Annotation.project_id == project.id)
    if item is not None:
        stmt = stmt.where(Annotation.item_id == item.id)
    if visible is not None:
        stmt = stmt.where(visible)
    return paginate(session, stmt, Annotation.id, cursor=cursor, limit=limit)


def current_consensus_page(session: Session, project: Project, *, cursor: str | None,
                           limit: int) -> Page[Consensus]:
    """One page of the current (latest) consensus of each of the project's items that has
    one, in consensus id order (see :func:`truthset.store.pages.paginate`).

    Raises
    ------
    InputError
        ``cursor`` is not a cursor this server issued (field ``cursor``).
    """
    latest = Consensus.latest_ids(project.id)
    return paginate(session, select(Consensus).where(Consensus.id.in_(latest)), Consensus.id,
                    cursor=cursor, limit=limit)


def current_consensus(session: Session, item: Item) -> Consensus:
    """The current (latest) consensus of ``item``.

    Raises
    ------
    NotFoundError
        No consensus of the item was computed yet.
    """
    row = session.scalar(select(Consensus).where(Consensus.item_id == item.id)
                         .order_by(Consensus.id.desc()).limit(1))
    if row is None:
        raise NotFoundError(f"item {item.id} has no consensus yet")
    return row
