"""OpenID Connect single sign-on (authorization code flow with PKCE and a nonce).

The identity provider is found by discovery (``<issuer>/.well-known/openid-configuration``).
The ID token is verified with the provider's published keys (RS256/ES256), for its issuer,
audience, expiry and nonce. The user is matched by a claim (``preferred_username`` by default)
to an *existing, active* Truthset user: SSO proves identity, it never creates accounts or
grants roles.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from sqlalchemy.orm import Session

from truthset.auth._secrets import aware, digest, now
from truthset.auth.errors import AuthenticationError
from truthset.store.models import OidcState

STATE_LIFETIME = timedelta(minutes=10)
ALGORITHMS = ["RS256", "ES256"]


@dataclass(frozen=True)
class OidcConfig:
    """The relying-party settings of one identity provider."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: str = "openid profile email"
    username_claim: str = "preferred_username"


class OidcClient:
    """Talks to one OpenID provider.

    Parameters
    ----------
    config:
        The provider and this client's registration.
    http:
        The HTTP client to reach the provider with (default: a new :class:`httpx.Client`).
    """

    def __init__(self, config: OidcConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http or httpx.Client(timeout=10.0)
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self.http.get(url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise AuthenticationError(f"identity provider unreachable or invalid: {exc}") from exc
        if not isinstance(data, dict):
            raise AuthenticationError("identity provider returned a non-object document")
        return data

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once)."""
        if self._metadata is None:
            meta = self._get_json(
                self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            if meta.get("issuer") != self.config.issuer:
                raise AuthenticationError("discovery document names a different issuer")
            self._metadata = meta
        return self._metadata

    def _keys(self, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            self._jwks = self._get_json(str(self.metadata()["jwks_uri"]))
        return self._jwks

    def begin(self, session: Session) -> str:
        """Start a sign-in: store state, nonce and PKCE verifier; return the URL to send the
        browser to."""
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        session.add(OidcState(state_hash=digest(state), nonce=nonce, code_verifier=verifier,
                              expires_at=now() + STATE_LIFETIME))
        session.flush()
        query = urlencode({
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri,
            "scope": self.config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        })
        return f"{self.metadata()['authorization_endpoint']}?{query}"

    def finish(self, session: Session, *, code: str, state: str) -> dict[str, Any]:
        """Complete a sign-in from the provider's redirect: consume the state (once), exchange
        the code, verify the ID token; return its claims.

        Raises
        ------
        AuthenticationError
            Unknown, used or expired state; a refused code; an invalid ID token.
        """
        pending = session.get(OidcState, digest(state))
        if pending is None:
            raise AuthenticationError("unknown or already used sign-in state")
        nonce, verifier = pending.nonce, pending.code_verifier
        expired = (aware(pending.expires_at) or now()) <= now()
        session.delete(pending)
        session.flush()
        if expired:
            raise AuthenticationError("the sign-in took too long; start again")
        try:
            response = self.http.post(
                str(self.metadata()["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.config.redirect_uri,
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret,
                    "code_verifier": verifier,
                },
            )
        except httpx.HTTPError as exc:
            raise AuthenticationError(f"identity provider unreachable: {exc}") from exc
        if response.status_code != 200:
            raise AuthenticationError("the identity provider refused the sign-in code")
        id_token = response.json().get("id_token")
        if not isinstance(id_token, str):
            raise AuthenticationError("the identity provider returned no ID token")
        claims = self.verify_id_token(id_token)
        if claims.get("nonce") != nonce:
            raise AuthenticationError("ID token nonce does not match this sign-in")
        return claims

    def verify_id_token(self, id_token: str) -> dict[str, Any]:
        """Verify signature, issuer, audience and expiry of an ID token; return its claims.

        Raises
        ------
        AuthenticationError
            Any check fails.
        """
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            key = self._key_for(kid)
            claims: dict[str, Any] = jwt.decode(
                id_token, key=key, algorithms=ALGORITHMS, audience=self.config.client_id,
                issuer=self.config.issuer, options={"require": ["exp", "iat", "sub", "aud"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid ID token: {exc}") from exc
        return claims

    def _key_for(self, kid: str | None) -> Any:
        for refresh in (False, True):  # a key rotation at the provider: fetch the set again
            keyset = jwt.PyJWKSet.from_dict(self._keys(refresh=refresh))
            for key in keyset.keys:
                if kid is None or key.key_id == kid:
                    return key.key
        raise AuthenticationError("ID token signed with an unknown key")

    def username(self, claims: dict[str, Any]) -> str:
        """The Truthset user name the claims name.

        Raises
        ------
        AuthenticationError
            The claim is missing.
        """
        value = claims.get(self.config.username_claim)
        if not isinstance(value, str) or not value:
            raise AuthenticationError(
                f"ID token has no {self.config.username_claim!r} claim to match a user"
            )
        return value
