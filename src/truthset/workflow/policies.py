"""Storing a project's workflow policy (versioned) and its gold / calibration items.

The policy YAML is parsed by :func:`truthset.domain.policy.parse_policy`; here it is checked
against the project (its readers can carry it out) and stored as a new
:class:`~truthset.store.models.PolicyVersion`. A project without a stored policy runs the
default :class:`~truthset.domain.policy.Policy` (three blinded readers, majority vote).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.domain.policy import GEOMETRIC_KINDS, Policy, check_policy_readers, parse_policy
from truthset.domain.roles import Role
from truthset.quality.shapes import ImageBounds, parse_objects
from truthset.store.models import GoldItem, Item, Membership, PolicyVersion, Project, User
from truthset.workspace.projects import rules

#: Purposes a known-answer item may serve.
GOLD_PURPOSES = ("gold", "calibration")

#: Roles that read items (the others administer, audit or run services).
READER_ROLES = frozenset({Role.ANNOTATOR.value, Role.REVIEWER.value, Role.ADJUDICATOR.value})


@dataclass(frozen=True)
class CurrentPolicy:
    """The policy in force for a project and its version (0: the built-in default)."""

    policy: Policy
    version: int


def reader_roles(session: Session, project: Project, user: User) -> frozenset[str]:
    """The reading roles ``user`` holds in ``project``.

    A project with memberships reads its members' project roles; a project nobody is a member
    of (the embedded, command-line set-up) reads each user's global role.
    """
    if not user.active:
        return frozenset()
    held = set(session.scalars(select(Membership.role).where(
        Membership.project_id == project.id, Membership.user_id == user.id)))
    if not held and session.scalar(
            select(Membership.id).where(Membership.project_id == project.id).limit(1)) is None:
        held = {user.role}
    return frozenset(held & READER_ROLES)


def project_readers(session: Session, project: Project) -> list[tuple[User, frozenset[str]]]:
    """Every active user who may read in ``project``, with their reading roles there."""
    out = []
    for user in session.scalars(select(User).where(User.active.is_(True)).order_by(User.id)):
        held = reader_roles(session, project, user)
        if held:
            out.append((user, held))
    return out


def set_policy(
    session: Session, project: Project, text: str, *, source: str | None = None
) -> PolicyVersion:
    """Validate ``text`` and store it as the project's next policy version.

    Raises
    ------
    InputError
        The YAML is invalid, a field is out of range (named), the schema is a measurement
        schema, or a stage the policy uses has no qualified active reader. (Gold and
        calibration run on every schema a policy runs: reads are scored against the known
        answers by :mod:`truthset.workflow.scoring`.)
    """
    policy = parse_policy(text, source=source)
    schema = rules(session, project).schema
    if schema.kind.value == "measurement":
        raise InputError("workflow policies run classification, box, polygon and mask "
                         "schemas, not measurements", source=source, field="schema")
    people = [(u.username, role, u.tier, u.specialty)
              for u, held in project_readers(session, project) for role in sorted(held)]
    # One person counts once per stage however many roles they hold.
    check_policy_readers(policy, _dedupe(people), source=source, kind=schema.kind.value)
    latest = session.scalar(select(func.max(PolicyVersion.version))
                            .where(PolicyVersion.project_id == project.id))
    row = PolicyVersion(project_id=project.id, version=(latest or 0) + 1, source_text=text,
                        definition=policy.to_dict())
    session.add(row)
    session.flush()
    session.info.pop(("truthset.workflow.policy", project.id), None)
    return row


def _dedupe(people: list[tuple[str, str, int, str]]) -> list[tuple[str, str, int, str]]:
    # Keep each person's most senior role: qualifies() is monotone in role seniority.
    rank = {Role.ANNOTATOR.value: 0, Role.REVIEWER.value: 1, Role.ADJUDICATOR.value: 2}
    best: dict[str, tuple[str, str, int, str]] = {}
    for person in people:
        if person[0] not in best or rank[person[1]] > rank[best[person[0]][1]]:
            best[person[0]] = person
    return list(best.values())


def current_policy(session: Session, project: Project) -> CurrentPolicy:
    """The latest stored policy of ``project`` (the default policy, version 0, if none); read
    once per unit of work."""
    key = ("truthset.workflow.policy", project.id)
    cached = session.info.get(key)
    if isinstance(cached, CurrentPolicy):
        return cached
    found = _load_policy(session, project)
    session.info[key] = found
    return found


def _load_policy(session: Session, project: Project) -> CurrentPolicy:
    row = session.scalar(select(PolicyVersion).where(PolicyVersion.project_id == project.id)
                         .order_by(PolicyVersion.version.desc()).limit(1))
    if row is None:
        return CurrentPolicy(Policy(), 0)
    return CurrentPolicy(Policy.model_validate(row.definition), row.version)


def add_gold(
    session: Session, project: Project, answers: Mapping[str, str | Mapping[str, Any]], *,
    purpose: str = "gold", source: str | None = None,
) -> list[GoldItem]:
    """Mark items (by external id) as known-answer items: ``gold`` (mixed into queues) or
    ``calibration`` (the batch each new reader passes first).

    Parameters
    ----------
    answers:
        External id -> the reference answer: a class (single or ordinal classification), or
        a whole payload — ``{"label": c}``, ``{"labels": [...]}`` (multi-label) or
        ``{"objects": [...]}`` (box, polygon, mask; either object spelling, see
        :mod:`truthset.quality.shapes`), checked against the schema and the item's image
        like a read.

    Raises
    ------
    InputError
        Unknown purpose, unknown item or class, an answer that does not fit the schema or the
        image (the item and ``label`` / the payload's field are named).
    ConflictError
        An item is already gold or calibration, or already has workflow tasks.
    """
    from truthset.store.models import Task

    if purpose not in GOLD_PURPOSES:
        raise InputError(f"purpose must be gold or calibration, not {purpose!r}",
                         source=source, field="purpose")
    schema = rules(session, project).schema
    items = {i.external_id: i for i in session.scalars(
        select(Item).where(Item.project_id == project.id,
                           Item.external_id.in_(list(answers))))}
    geometric = schema.kind.value in GEOMETRIC_KINDS
    out = []
    for external_id, answer in answers.items():
        item = items.get(external_id)
        if item is None:
            raise InputError(f"no item {external_id!r} in project {project.key!r}",
                             source=source, location=f"item {external_id}", field="item")
        payload = {"label": answer} if isinstance(answer, str) else dict(answer)
        try:
            clean = schema.validate_payload(payload)
            if geometric:
                parse_objects(clean, bounds=ImageBounds.from_media(item.media))
        except InputError as exc:
            field = "label" if isinstance(answer, str) else exc.field or "payload"
            raise InputError(exc.reason, source=source, location=f"item {external_id}",
                             field=field) from None
        if session.scalar(select(GoldItem.id).where(GoldItem.item_id == item.id)) is not None:
            raise ConflictError(f"item {external_id!r} already has a known answer")
        if session.scalar(select(Task.id).where(Task.item_id == item.id).limit(1)) is not None:
            raise ConflictError(f"item {external_id!r} is already in the workflow; a known-"
                                "answer item must not be labelled as a regular item too")
        row = GoldItem(project_id=project.id, item_id=item.id, label=clean, purpose=purpose)
        session.add(row)
        out.append(row)
    session.flush()
    return out


def gold_answers(session: Session, project: Project,
                 purpose: str | None = None) -> dict[int, tuple[str, str]]:
    """Item id -> ``(label, purpose)`` of the project's known-answer items (``label``: the
    class of a single-label answer, ``"None"`` for other schemas' payloads)."""
    stmt = select(GoldItem).where(GoldItem.project_id == project.id)
    if purpose is not None:
        stmt = stmt.where(GoldItem.purpose == purpose)
    return {g.item_id: (str(g.label.get("label")), g.purpose) for g in session.scalars(stmt)}


def get_reader(session: Session, username: str) -> User:
    """The active user ``username``.

    Raises
    ------
    NotFoundError
        No such user, or the user is deactivated.
    """
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        raise NotFoundError(f"no active user {username!r}")
    return user


def usernames(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """User id -> user name for ``ids``."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
                .all())
