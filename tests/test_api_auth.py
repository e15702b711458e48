"""Authentication over HTTP: password sessions with CSRF, API tokens, throttling, argon2id
rehash, OpenID Connect against an in-process identity provider, and the token CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from test_api_support import PASSWORD, bearer, client
from truthset import audit
from truthset.api.deps import CSRF_HEADER, SESSION_COOKIE, ApiSettings
from truthset.auth.oidc import OidcClient, OidcConfig
from truthset.auth.throttle import ThrottlePolicy
from truthset.cli.main import app as cli_app
from truthset.store.models import ApiToken, AuditEvent, User
from truthset.workspace import users
from truthset.workspace.workspace import Workspace


def _user(ws: Workspace, name: str = "ann", role: str = "admin", password: str = PASSWORD) -> None:
    with ws.unit("seed") as s:
        users.add_user(s, username=name, role=role, password=password)


def _events(ws: Workspace, action: str) -> list[dict[str, Any]]:
    with ws.sessions() as s:
        return [e for e in audit.iter_events(s) if e["action"] == action]


def _head(ws: Workspace) -> int:
    with ws.sessions() as s:
        return audit.stored_head(s).seq


def _login(c: TestClient, name: str = "ann", password: str = PASSWORD) -> str:
    r = c.post("/api/v1/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


# --- sessions and CSRF ------------------------------------------------------------------------
def test_login_sets_a_hardened_cookie_and_logout_kills_the_session(workspace: Workspace) -> None:
    _user(workspace)
    c = client(workspace)
    r = c.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    secret = c.cookies[SESSION_COOKIE]
    assert c.get("/api/v1/auth/me").json()["user"]["username"] == "ann"
    # The database keeps only the hash of the cookie secret.
    with workspace.sessions() as s:
        stored = s.execute(select(func.count()).select_from(AuditEvent)
                           .where(AuditEvent.after.contains(secret))).scalar()
    assert stored == 0
    r = c.post("/api/v1/auth/logout", headers={CSRF_HEADER: r.json()["csrf_token"]})
    assert r.status_code == 204
    c.cookies.set(SESSION_COOKIE, secret)  # a stolen copy of the cookie is dead too
    r = c.get("/api/v1/auth/me")
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert _events(workspace, "login") and _events(workspace, "logout")


def test_cookie_is_secure_over_https(workspace: Workspace) -> None:
    _user(workspace)
    c = TestClient(client(workspace).app, base_url="https://truthset.test")
    r = c.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD})
    assert "secure" in r.headers["set-cookie"].lower()


def test_csrf_token_is_required_single_use_and_rotated(workspace: Workspace) -> None:
    _user(workspace)
    c = client(workspace)
    token = _login(c)
    body = {"name": "script"}
    before = _head(workspace)
    r = c.post("/api/v1/auth/tokens", json=body)  # no token
    assert r.status_code == 403 and r.json()["field"] == CSRF_HEADER
    r = c.post("/api/v1/auth/tokens", json=body, headers={CSRF_HEADER: "forged"})
    assert r.status_code == 403
    with workspace.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ApiToken)) == 0
    # The refusals wrote only their "denied" events.
    assert _head(workspace) == before + 2
    assert len(_events(workspace, "denied")) == 2
    r = c.post("/api/v1/auth/tokens", json=body, headers={CSRF_HEADER: token})
    assert r.status_code == 201
    fresh = r.headers[CSRF_HEADER]
    assert fresh and fresh != token
    replay = c.post("/api/v1/auth/tokens", json=body, headers={CSRF_HEADER: token})
    assert replay.status_code == 403 and "already used" in replay.json()["detail"]
    assert c.post("/api/v1/auth/tokens", json=body,
                  headers={CSRF_HEADER: fresh}).status_code == 201
    # Safe methods need no token; GET /auth/csrf issues a new one.
    new = c.get("/api/v1/auth/csrf").json()["csrf_token"]
    assert c.post("/api/v1/auth/tokens", json=body,
                  headers={CSRF_HEADER: new}).status_code == 201


def test_bearer_requests_need_no_csrf_token(workspace: Workspace) -> None:
    _user(workspace)
    c = client(workspace)
    _login(c)
    created = c.post("/api/v1/auth/tokens", json={},
                     headers={CSRF_HEADER: c.get("/api/v1/auth/csrf").json()["csrf_token"]})
    token = created.json()["token"]
    script = client(workspace)
    r = script.post("/api/v1/auth/tokens", json={"name": "x"}, headers=bearer(token))
    assert r.status_code == 201


# --- API tokens -------------------------------------------------------------------------------
def test_tokens_are_hashed_revocable_and_expire(workspace: Workspace) -> None:
    _user(workspace)
    c = client(workspace)
    admin = client(workspace)
    csrf = _login(admin)
    r = admin.post("/api/v1/users/ann/tokens", json={"name": "ci", "expires_in_days": 1},
                   headers={CSRF_HEADER: csrf})
    assert r.status_code == 201
    secret, token_id = r.json()["token"], r.json()["id"]
    assert secret.startswith("tst_")
    with workspace.sessions() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None and row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in e["after"] for e in audit.iter_events(s))
    assert c.get("/api/v1/auth/me", headers=bearer(secret)).status_code == 200
    # Expired: move the expiry into the past.
    with workspace.unit("test") as s:
        row = s.get(ApiToken, token_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = c.get("/api/v1/auth/me", headers=bearer(secret))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # Revoked.
    r2 = c.post("/api/v1/auth/tokens", json={}, headers=bearer(_cli_token(workspace, "ann")))
    assert r2.status_code == 201
    second = r2.json()
    assert c.delete(f"/api/v1/auth/tokens/{second['id']}",
                    headers=bearer(second["token"])).status_code == 204
    r = c.get("/api/v1/auth/me", headers=bearer(second["token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert c.get("/api/v1/auth/me", headers=bearer("tst_unknown")).status_code == 401


def _cli_token(ws: Workspace, user: str) -> str:
    result = CliRunner().invoke(cli_app, ["token", "create", user, "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def test_token_cli_create_and_revoke(workspace: Workspace) -> None:
    _user(workspace, role="annotator")
    secret = _cli_token(workspace, "ann")
    c = client(workspace)
    assert c.get("/api/v1/auth/me", headers=bearer(secret)).json()["via"] == "token"
    result = CliRunner().invoke(cli_app, ["token", "revoke", secret, "-w", str(workspace.root)])
    assert result.exit_code == 0, result.output
    assert c.get("/api/v1/auth/me", headers=bearer(secret)).status_code == 401
    unknown = CliRunner().invoke(cli_app, ["token", "create", "ghost", "-w", str(workspace.root)])
    assert unknown.exit_code == 3


# --- throttling -------------------------------------------------------------------------------
def test_failed_logins_lock_the_account_with_429_and_audit(workspace: Workspace) -> None:
    _user(workspace)
    policy = ThrottlePolicy(user_failures=3, ip_failures=100, lock=timedelta(minutes=5))
    c = client(workspace, ApiSettings(throttle=policy))
    for _ in range(3):
        r = c.post("/api/v1/auth/login", json={"username": "ann", "password": "wrong" * 3})
        assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"
    r = c.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 300
    assert SESSION_COOKIE not in c.cookies
    assert len(_events(workspace, "login_failed")) == 3
    assert len(_events(workspace, "lockout")) == 1
    assert len(_events(workspace, "login_throttled")) == 1
    assert all(PASSWORD not in e["after"] and "wrong" not in e["after"]
               for e in _events(workspace, "login_failed"))
    # Unknown user names get the same answer as wrong passwords.
    r = c.post("/api/v1/auth/login", json={"username": "ghost", "password": "x"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"


def test_login_rehashes_a_weaker_argon2_hash(workspace: Workspace) -> None:
    _user(workspace)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with workspace.unit("seed") as s:
        user = users.get_user(s, "ann")
        user.password_hash = weak
    _login(client(workspace))
    with workspace.sessions() as s:
        stored = s.scalar(select(User.password_hash).where(User.username == "ann"))
    assert stored is not None and stored != weak
    assert stored.startswith("$argon2id$") and "m=19456,t=2,p=1" in stored


# --- OpenID Connect ---------------------------------------------------------------------------
ISSUER = "https://idp.test"
CLIENT_ID = "truthset"
REDIRECT = "http://testserver/api/v1/auth/oidc/callback"


def _stub_issuer(user: str = "ann", **override: Any) -> FastAPI:
    """A minimal OpenID provider: discovery, JWKS, authorize (auto-approves ``user``) and a
    token endpoint that checks the client secret and PKCE, signing RS256 ID tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing = override.get("signing_key", key)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    codes: dict[str, dict[str, str]] = {}
    idp = FastAPI()

    @idp.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, str]:
        return {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks"}

    @idp.get("/jwks")
    def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    @idp.get("/authorize")
    def authorize(redirect_uri: str, state: str, nonce: str, code_challenge: str,
                  client_id: str) -> RedirectResponse:
        assert client_id == CLIENT_ID
        code = secrets.token_urlsafe(16)
        codes[code] = {"nonce": nonce, "challenge": code_challenge}
        return RedirectResponse(f"{redirect_uri}?code={code}&state={state}", status_code=302)

    @idp.post("/token")
    def token(code: str = Form(), code_verifier: str = Form(),
              client_secret: str = Form()) -> dict[str, str]:
        grant = codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or client_secret != "s3cret" or challenge != grant["challenge"]:
            raise HTTPException(400, "invalid_grant")
        now = datetime.now(UTC)
        claims = {"iss": ISSUER, "sub": "u-1", "aud": override.get("aud", CLIENT_ID),
                  "iat": now, "exp": now + override.get("ttl", timedelta(minutes=5)),
                  "nonce": grant["nonce"], "preferred_username": user}
        return {"id_token": jwt.encode(claims, signing, algorithm="RS256",
                                       headers={"kid": "k1"}), "token_type": "Bearer"}

    return idp


def _sso(ws: Workspace, idp: FastAPI) -> tuple[TestClient, TestClient]:
    http = TestClient(idp, base_url=ISSUER)
    oidc = OidcClient(OidcConfig(issuer=ISSUER, client_id=CLIENT_ID, client_secret="s3cret",
                                 redirect_uri=REDIRECT), http=http)
    return client(ws, ApiSettings(oidc=oidc)), http


def _round_trip(c: TestClient, http: TestClient) -> tuple[Any, dict[str, str]]:
    start = c.get("/api/v1/auth/oidc/login", follow_redirects=False)
    assert start.status_code == 302
    query = parse_qs(urlparse(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]
    back = http.get(start.headers["location"], follow_redirects=False)
    params = {k: v[0] for k, v in parse_qs(urlparse(back.headers["location"]).query).items()}
    return c.get("/api/v1/auth/oidc/callback", params=params), params


def test_oidc_sign_in_against_a_stub_issuer(workspace: Workspace) -> None:
    _user(workspace, role="annotator")
    c, http = _sso(workspace, _stub_issuer())
    r, params = _round_trip(c, http)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["username"] == "ann"
    assert c.get("/api/v1/auth/me").status_code == 200
    assert [json.loads(e["after"])["method"] for e in _events(workspace, "login")] == ["oidc"]
    # The state is single-use.
    again = client(workspace, c.app.state.settings).get("/api/v1/auth/oidc/callback",
                                                        params=params)
    assert again.status_code == 401


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"ttl": timedelta(minutes=-5)}, "expired"),
        ({"signing_key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
         "signature"),
    ],
)
def test_oidc_refuses_bad_id_tokens(workspace: Workspace, override: dict[str, Any],
                                    needle: str) -> None:
    _user(workspace, role="annotator")
    c, http = _sso(workspace, _stub_issuer(**override))
    r, _ = _round_trip(c, http)
    assert r.status_code == 401 and needle in r.json()["detail"].lower()
    assert SESSION_COOKIE not in c.cookies
    assert _events(workspace, "login_failed")


def test_oidc_never_creates_users(workspace: Workspace) -> None:
    c, http = _sso(workspace, _stub_issuer(user="stranger"))
    r, _ = _round_trip(c, http)
    assert r.status_code == 401 and "no active" in r.json()["detail"]


def test_sso_is_off_unless_configured(workspace: Workspace, tmp_path: Path) -> None:
    r = client(workspace).get("/api/v1/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 404
