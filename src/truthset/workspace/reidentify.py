"""Re-identification: what original identifier a pseudonym stands for. Administrators only,
every look-up audited (the audit event names the pseudonym and who asked, never the
original)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError, PermissionDeniedError
from truthset.domain.roles import Role
from truthset.store.models import Project, User
from truthset.store.pseudonyms import PseudonymVault


def reidentify(
    session: Session, vault: PseudonymVault, project: Project, pseudonym: str, *, actor: str,
    reason: str,
) -> list[tuple[str, str]]:
    """``(kind, original)`` behind ``pseudonym`` in ``project`` (a patient's issuer and ID
    are shown as ``ISSUER / ID``); empty when the vault does not know it. The attempt is
    audited either way.

    Raises
    ------
    PermissionDeniedError
        ``actor`` is not an active global administrator.
    InputError
        No reason given.
    """
    user = session.scalar(select(User).where(User.username == actor))
    if user is None or not user.active or user.role != Role.ADMIN.value:
        raise PermissionDeniedError("only an administrator may re-identify a pseudonym "
                                    "(pass --actor USERNAME)")
    if not reason.strip():
        raise InputError("say why you need the original identity", field="reason")
    found = [(kind, original.replace("\x00", " / "))
             for kind, original in vault.reidentify(project.key, pseudonym)]
    audit.record(session, action="reidentify", entity_type="pseudonym", entity_id=pseudonym,
                 project_id=project.id,
                 after={"by": user.username, "reason": reason.strip(), "found": len(found)})
    return found
