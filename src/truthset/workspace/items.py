"""Items of a project: look-ups and pages (items are created by :mod:`.imports`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import NotFoundError
from truthset.store.models import Item, Project
from truthset.store.pages import Page, paginate


def get_item(session: Session, project: Project, item_id: int) -> Item:
    """The item ``item_id`` of ``project`` (an item of another project is not found here).

    Raises
    ------
    NotFoundError
        ``project`` has no item ``item_id``.
    """
    item = session.scalar(select(Item).where(Item.id == item_id, Item.project_id == project.id))
    if item is None:
        raise NotFoundError(f"no item {item_id} in project {project.key!r}")
    return item


def items_page(session: Session, project: Project, *, cursor: str | None,
               limit: int) -> Page[Item]:
    """One page of the project's items in id order (see
    :func:`truthset.store.pages.paginate`).

    Raises
    ------
    InputError
        ``cursor`` is not a cursor this server issued (field ``cursor``).
    """
    return paginate(session, select(Item).where(Item.project_id == project.id), Item.id,
                    cursor=cursor, limit=limit)


def items_by_external_id(session: Session, project: Project,
                         external_ids: Iterable[str]) -> list[Item]:
    """The project's items with these external ids, in id order (unknown ids are left out)."""
    return list(session.scalars(select(Item).where(
        Item.project_id == project.id, Item.external_id.in_(list(external_ids)))
        .order_by(Item.id)))
