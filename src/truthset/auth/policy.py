"""Authorisation, in one place: who may do what, in which project.

Deny by default: an action is allowed only when one of the actor's roles in the project is
listed for it in :data:`PERMISSIONS`. A user's roles in a project are their memberships there,
plus ``admin`` for global administrators and ``auditor`` for global auditors (who read every
project and change nothing). Two further rules live here:

- **blinding**: while an item is in the annotate stage (it has an annotate task not yet
  completed), a user who annotates in the project sees only their own labels on it, and no
  consensus; readers without a read-all role see only their own labels, ever;
- **no self-approval**: nobody reviews or adjudicates their own annotation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from truthset.auth.memberships import roles_in
from truthset.domain.errors import PermissionDeniedError
from truthset.domain.roles import Role
from truthset.store.models import Annotation, Task


@dataclass(frozen=True)
class Principal:
    """The authenticated actor of a request."""

    user_id: int
    username: str
    global_role: str
    via: str  # "token", "session"
    credential_id: int

    @property
    def actor(self) -> str:
        """The name written to the audit log."""
        return self.username

    @property
    def is_admin(self) -> bool:
        """Whether the user is a global administrator."""
        return self.global_role == Role.ADMIN.value


class Action(StrEnum):
    """Everything an API caller can ask to do."""

    # global
    PROJECT_CREATE = "project.create"
    USER_ADMIN = "user.admin"
    AUDIT_READ_ALL = "audit.read_all"
    # project-scoped
    PROJECT_READ = "project.read"
    PROJECT_UPDATE = "project.update"
    SCHEMA_WRITE = "schema.write"
    GUIDELINE_WRITE = "guideline.write"
    MEMBERS_READ = "members.read"
    MEMBERS_MANAGE = "members.manage"
    ITEM_READ = "item.read"
    ITEM_CREATE = "item.create"
    ANNOTATION_READ = "annotation.read"
    ANNOTATION_READ_ALL = "annotation.read_all"
    ANNOTATION_CREATE = "annotation.create"
    CONSENSUS_READ = "consensus.read"
    CONSENSUS_COMPUTE = "consensus.compute"
    AGREEMENT_READ = "agreement.read"
    AUDIT_READ = "audit.read"
    TASK_WORK = "task.work"
    REVIEW = "review.create"
    ADJUDICATE = "adjudicate"
    STATS_READ = "stats.read"
    RELEASE_READ = "release.read"
    RELEASE_CREATE = "release.create"
    RELEASE_SIGN = "release.sign"
    RELEASE_DOWNLOAD = "release.download"


A, M, N, R, J, U, S = (Role.ADMIN, Role.MANAGER, Role.ANNOTATOR, Role.REVIEWER,
                       Role.ADJUDICATOR, Role.AUDITOR, Role.SERVICE)
_ALL = frozenset(Role)
_OVERSEERS = frozenset({A, M, R, J, U})

#: The one table of who may do what. Anything not listed is denied.
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.PROJECT_CREATE: frozenset({A}),
    Action.USER_ADMIN: frozenset({A}),
    Action.AUDIT_READ_ALL: frozenset({A, U}),
    Action.PROJECT_READ: _ALL,
    Action.PROJECT_UPDATE: frozenset({A, M}),
    Action.SCHEMA_WRITE: frozenset({A, M}),
    Action.GUIDELINE_WRITE: frozenset({A, M}),
    Action.MEMBERS_READ: frozenset({A, M, U}),
    Action.MEMBERS_MANAGE: frozenset({A, M}),
    Action.ITEM_READ: _ALL,
    Action.ITEM_CREATE: frozenset({A, M, S}),
    Action.ANNOTATION_READ: _ALL,
    Action.ANNOTATION_READ_ALL: _OVERSEERS,
    Action.ANNOTATION_CREATE: frozenset({N, R, J}),
    Action.CONSENSUS_READ: _OVERSEERS,
    Action.CONSENSUS_COMPUTE: frozenset({A, M}),
    Action.AGREEMENT_READ: _OVERSEERS,
    Action.AUDIT_READ: frozenset({A, M, U}),
    Action.TASK_WORK: frozenset({N, R, J}),
    Action.REVIEW: frozenset({R, J}),
    Action.ADJUDICATE: frozenset({J}),
    Action.STATS_READ: frozenset({A, M, U}),
    Action.RELEASE_READ: _OVERSEERS,
    Action.RELEASE_CREATE: frozenset({A, M}),
    Action.RELEASE_SIGN: frozenset({A, M}),
    Action.RELEASE_DOWNLOAD: frozenset({A, M, U, S}),
}

#: Actions that read only; a global auditor gets these in every project and nothing else.
READ_ONLY = frozenset({
    Action.AUDIT_READ_ALL, Action.PROJECT_READ, Action.MEMBERS_READ, Action.ITEM_READ,
    Action.ANNOTATION_READ, Action.ANNOTATION_READ_ALL, Action.CONSENSUS_READ,
    Action.AGREEMENT_READ, Action.AUDIT_READ, Action.STATS_READ, Action.RELEASE_READ,
    Action.RELEASE_DOWNLOAD,
})

_GLOBAL_ACTIONS = frozenset({Action.PROJECT_CREATE, Action.USER_ADMIN, Action.AUDIT_READ_ALL})


def _global_roles(principal: Principal) -> frozenset[Role]:
    if principal.global_role in (Role.ADMIN.value, Role.AUDITOR.value):
        return frozenset({Role(principal.global_role)})
    return frozenset()


def roles(session: Session, principal: Principal, project_id: int | None) -> frozenset[Role]:
    """The actor's roles in a project (global admin / auditor included); global roles only
    when ``project_id`` is ``None``."""
    found = _global_roles(principal)
    if project_id is not None:
        found = found | roles_in(session, principal.user_id, project_id)
    return found


def allowed(held: Iterable[Role], action: Action) -> bool:
    """Whether any of ``held`` may do ``action``."""
    permitted = PERMISSIONS.get(action, frozenset())
    return any(role in permitted for role in held)


def authorize(
    session: Session, principal: Principal, action: Action, project_id: int | None = None
) -> frozenset[Role]:
    """Check that the actor may do ``action`` (in ``project_id`` for project actions) and return
    their roles there.

    Raises
    ------
    PermissionDeniedError
        Denied (the message names the action, never data).
    """
    if action not in _GLOBAL_ACTIONS and project_id is None:
        raise PermissionDeniedError(f"{action.value} needs a project")
    held = roles(session, principal, None if action in _GLOBAL_ACTIONS else project_id)
    if not allowed(held, action):
        raise PermissionDeniedError(
            f"{principal.username!r} may not {action.value}"
            + (" in this project" if project_id is not None else "")
        )
    return held


def sees_all_labels(held: Iterable[Role]) -> bool:
    """Whether these roles may read other readers' labels at all (outside blinding)."""
    return allowed(held, Action.ANNOTATION_READ_ALL)


def blinded_item_ids(
    session: Session, held: frozenset[Role], project_id: int, item_ids: Iterable[int]
) -> set[int]:
    """Of ``item_ids``, those on which the actor must see only their own labels and no
    consensus.

    Everything is blinded for roles without a read-all permission. For a user who also
    annotates in the project, items still in the annotate stage (an annotate task not yet
    completed) are blinded too.
    """
    ids = set(item_ids)
    if not sees_all_labels(held):
        return ids
    if Role.ANNOTATOR not in held or not ids:
        return set()
    return set(
        session.scalars(
            select(Task.item_id).where(
                Task.project_id == project_id, Task.stage == "annotate",
                Task.completed_at.is_(None), Task.item_id.in_(ids),
            )
        )
    )


def check_not_own_work(principal: Principal, author_id: int | None, what: str = "work") -> None:
    """Refuse when the actor is the author of what they are about to approve.

    Raises
    ------
    PermissionDeniedError
        The actor wrote it.
    """
    if author_id is not None and author_id == principal.user_id:
        raise PermissionDeniedError(f"nobody may review or adjudicate their own {what}")


def _open_annotate_items(project_id: int) -> ColumnElement[bool]:
    return Annotation.item_id.in_(
        select(Task.item_id).where(
            Task.project_id == project_id, Task.stage == "annotate", Task.completed_at.is_(None)
        )
    )


def annotation_filter(
    principal: Principal, held: frozenset[Role], project_id: int
) -> ColumnElement[bool] | None:
    """The SQL condition selecting the annotations the actor may see (``None``: all of them).

    Same rule as :func:`blinded_item_ids`, as a WHERE clause for lists.
    """
    own = Annotation.author_id == principal.user_id
    if not sees_all_labels(held):
        return own
    if Role.ANNOTATOR not in held:
        return None
    return or_(own, ~_open_annotate_items(project_id))


def check_grant(held: frozenset[Role], role: Role) -> None:
    """Only administrators hand out the ``admin`` role; managers may grant the others.

    Raises
    ------
    PermissionDeniedError
        A non-administrator tried to grant ``admin``.
    """
    if role == Role.ADMIN and Role.ADMIN not in held:
        raise PermissionDeniedError("only an administrator may grant the admin role")


def check_revise(principal: Principal, held: frozenset[Role], author_id: int | None) -> None:
    """Readers revise only their own annotations; reviewers and adjudicators may correct
    others' (never by approving their own, see :func:`check_not_own_work`).

    Raises
    ------
    PermissionDeniedError
        An annotator tried to revise someone else's label.
    """
    if author_id == principal.user_id:
        return
    if not held & {Role.REVIEWER, Role.ADJUDICATOR}:
        raise PermissionDeniedError("you may revise only your own annotations")
