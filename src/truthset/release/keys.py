"""Approvers' Ed25519 signing keys.

Each approver gets a key pair the first time they sign. The private key is stored as PKCS#8 PEM
encrypted with a key derived from their password (``cryptography``'s
``BestAvailableEncryption``), so only someone who knows the password can sign; the public key is
stored in clear and copied into every signature file. The private key column is redacted in the
audit log and is never logged. When the password has changed since the newest key was made, the
old key cannot be opened and a new key pair is made (audited as a new ``signing_keys`` row).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.release.manifest import key_fingerprint, public_key_pem
from truthset.store.models import SigningKey, User


def _open(row: SigningKey, password: str) -> Ed25519PrivateKey | None:
    try:
        key = serialization.load_pem_private_key(row.private_key_pem.encode(),
                                                 password=password.encode())
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, Ed25519PrivateKey) else None


def user_keys(session: Session, user: User) -> list[SigningKey]:
    """The user's signing keys, newest first."""
    return list(session.scalars(select(SigningKey).where(SigningKey.user_id == user.id)
                                .order_by(SigningKey.id.desc())))


def signing_key(session: Session, user: User, password: str) -> Ed25519PrivateKey:
    """The private key ``user`` signs with, opened with their (already verified) password.

    Parameters
    ----------
    session
        Open session; a new key pair is added (not committed) when none opens.
    user
        The approver.
    password
        Their password, verified by the caller.

    Returns
    -------
    Ed25519PrivateKey
        The newest stored key the password opens, or a new one, stored encrypted.
    """
    newest = next(iter(user_keys(session, user)), None)
    if newest is not None:
        opened = _open(newest, password)
        if opened is not None:
            return opened
    key = Ed25519PrivateKey.generate()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()))
    session.add(SigningKey(user_id=user.id, key_id=key_fingerprint(key.public_key()),
                           public_key_pem=public_key_pem(key.public_key()),
                           private_key_pem=encrypted.decode()))
    session.flush()
    return key
