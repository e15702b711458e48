"""The authorisation matrix: every route of the OpenAPI document × every caller.

``EXPECT`` names, for each ``METHOD /path`` the app serves, one or more probes and who may make
them. ``test_every_route_has_an_expectation`` compares it with the live OpenAPI document, so a
new route without an entry here fails the suite. Each probe is then run by every caller:

- project roles in ``alpha``: ``padmin`` (project admin), ``manager``, ``annotator``,
  ``reviewer``, ``adjudicator``, ``auditor``, ``service``;
- ``nobody`` (no role in any project), ``outsider`` (annotator in ``beta`` only);
- ``root`` (global administrator) and ``gaudit`` (global auditor).

An allowed caller gets the probe's success status (and a write leaves audit events behind); a
denied one gets 403 ``forbidden``, exactly one ``denied`` audit event and nothing else written.
Probes with another project's ids check that ids never cross projects, and content checks
check blinding (readers see only their own labels, no consensus).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from test_api_support import PROJECT_ROLES, SCHEMA, Seeded, bearer, client, png, seed
from truthset import audit
from truthset.auth import memberships, tokens
from truthset.store.models import ApiToken, AuditEvent, Consensus, Item, Membership
from truthset.workflow.annotations import record_annotation
from truthset.workflow.consensus import compute_consensus
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

CALLERS = [*PROJECT_ROLES, "nobody", "outsider", "root", "gaudit"]
EVERYONE = frozenset(CALLERS)
MANAGE = frozenset({"padmin", "manager", "root"})
MEMBERS = frozenset(PROJECT_ROLES) | {"root", "gaudit"}
OVERSEE = MANAGE | {"reviewer", "adjudicator", "auditor", "gaudit"}
READERS = frozenset({"annotator", "reviewer", "adjudicator"})
AUDITORS = frozenset({"auditor", "gaudit"})
GLOBAL_AUDIT = frozenset({"root", "gaudit"})
BETA_READERS = frozenset({"outsider", "root", "gaudit"})
NONE: frozenset[str] = frozenset()
OK = (200, 201, 204)


class World:
    """A seeded workspace shared by the matrix (module scope, SQLite)."""

    def __init__(self, ws: Workspace, seeded: Seeded, tmp: Any) -> None:
        self.ws = ws
        self.seeded = seeded
        self.tmp = tmp
        self.c: TestClient = client(ws)

    def ids(self) -> dict[str, Any]:
        """Values for the path placeholders."""
        a0, a1 = self.seeded.items["alpha"]
        b0, b1 = self.seeded.items["beta"]
        return {"a0": a0, "a1": a1, "b0": b0, "b1": b1}

    def head(self) -> int:
        """The audit chain's length."""
        with self.ws.sessions() as s:
            return audit.stored_head(s).seq

    def events_since(self, seq: int) -> list[dict[str, Any]]:
        """Audit events after ``seq``."""
        with self.ws.sessions() as s:
            rows = s.scalars(select(AuditEvent).where(AuditEvent.seq > seq)
                             .order_by(AuditEvent.seq)).all()
            return [{"action": r.action, "actor": r.actor, "after": _json(r.after)}
                    for r in rows]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


Prepare = Callable[[World, str], dict[str, Any]]
Check = Callable[[World, str, Any], None]


@dataclass
class Probe:
    """One request, who may make it, and what an allowed caller gets back.

    ``path`` is the concrete path (``{a0}``, ``{b0}``, ``{caller}`` and whatever ``prepare``
    returns are filled in); ``ok`` the statuses an allowed caller gets (404 for another
    project's ids); ``public`` probes need no credentials and deny nobody.
    """

    path: str
    allowed: frozenset[str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    ok: tuple[int, ...] = OK
    prepare: Prepare | None = None
    check: Check | None = None
    public: bool = False
    label: str = ""


# --- set-up helpers run before a probe (for every caller, allowed or not) -------------------
def _member(username: str, role: str, present: bool) -> Prepare:
    def prepare(world: World, _caller: str) -> dict[str, Any]:
        with world.ws.unit("seed") as s:
            project = projects.get_project(s, "alpha")
            user = users.get_user(s, username)
            has = s.scalar(select(Membership).where(
                Membership.project_id == project.id, Membership.user_id == user.id,
                Membership.role == role)) is not None
            if present and not has:
                memberships.add_member(s, project, user, role)
            if not present and has:
                memberships.remove_member(s, project, user, role)
        return {}
    return prepare


def _own_token(world: World, caller: str) -> dict[str, Any]:
    with world.ws.unit("seed") as s:
        issued = tokens.create_token(s, users.get_user(s, caller), name="to-revoke")
        return {"token_id": issued.token.id}


def _spare_token(world: World, _caller: str) -> dict[str, Any]:
    with world.ws.sessions() as s:
        spare = users.get_user(s, "spare")
        token_id = s.scalar(select(ApiToken.id).where(ApiToken.user_id == spare.id))
    return {"token_id": token_id}


def _upload(world: World, caller: str) -> dict[str, Any]:
    path = png(world.tmp / f"up-{caller}.png", seed=1000 + CALLERS.index(caller))
    return {"files": [("files", (f"up-{caller}.png", io.BytesIO(path.read_bytes()),
                                 "image/png"))]}


def _consensus_exists(world: World, _caller: str) -> dict[str, Any]:
    with world.ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        if s.scalar(select(Consensus.id).where(Consensus.project_id == alpha.id)) is None:
            compute_consensus(s, alpha, method="mv")
    return {}


def _release_ready(world: World, _caller: str) -> dict[str, Any]:
    """Alpha's items have a final consensus (what a release freezes)."""
    with world.ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        for item in s.scalars(select(Item).where(Item.project_id == alpha.id)):
            if s.scalar(select(Consensus.id).where(Consensus.item_id == item.id,
                                                   Consensus.status == "final")) is None:
                s.add(Consensus(project_id=alpha.id, item_id=item.id, method="mv",
                                label={"label": "normal"}, status="final"))
    return {}


def _release_r0(world: World, caller: str) -> dict[str, Any]:
    """Alpha has release ``r0``."""
    from truthset.release import service

    _release_ready(world, caller)
    with world.ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        if not any(r.name == "r0" for r in service.list_releases(s, alpha)):
            service.create_release(s, alpha, world.ws.blobs, name="r0", actor="seed",
                                   exclude_unresolved="matrix")
    return {}


def _job_row(status: str) -> Prepare:
    def prepare(world: World, _caller: str) -> dict[str, Any]:
        from truthset.store.models import Job

        with world.ws.unit("seed") as s:
            alpha = projects.get_project(s, "alpha")
            job = Job(kind="acceptance", params={"project": "alpha"}, project_id=alpha.id,
                      status=status, backend="inprocess", created_by="seed")
            s.add(job)
            s.flush()
            return {"job_id": job.id}
    return prepare


def _beta_job(world: World, _caller: str) -> dict[str, Any]:
    from truthset.store.models import Job

    with world.ws.unit("seed") as s:
        beta = projects.get_project(s, "beta")
        job = Job(kind="acceptance", params={"project": "beta"}, project_id=beta.id,
                  status="succeeded", backend="inprocess", created_by="seed")
        s.add(job)
        s.flush()
        return {"job_id": job.id}


def _jobs_of_both(world: World, caller: str) -> dict[str, Any]:
    """A job of alpha, then a newer one of beta (which alpha's page must not list)."""
    _job_row("succeeded")(world, caller)
    _beta_job(world, caller)
    return {}


def _only_alpha_jobs(_world: World, _caller: str, reply: Any) -> None:
    page = reply.json()
    assert page["items"] and len(page["items"]) <= 2
    assert {j["params"]["project"] for j in page["items"]} == {"alpha"}


def _paused_class(world: World, _caller: str) -> dict[str, Any]:
    from truthset.store.models import ClassAutomation

    with world.ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        row = s.scalar(select(ClassAutomation).where(ClassAutomation.project_id == alpha.id,
                                                     ClassAutomation.class_name == "effusion"))
        if row is None:
            row = ClassAutomation(project_id=alpha.id, class_name="effusion")
            s.add(row)
        row.status, row.reason, row.decided_by = "paused", "low acceptance", "system"
    return {}


def _job_done(world: World, _caller: str, reply: Any) -> None:
    from truthset.jobs.service import wait_for

    # A queued job runs in this process: let it finish before the next probe counts events.
    assert wait_for(world.ws, reply.json()["id"], timeout_s=30).status == "succeeded"


#: The workflow probes' policy: every stage open to tier 1, so alpha's members qualify.
WORKFLOW_POLICY = ("workflow: consensus\nk: 2\ntarget: 0.9\ntiers:\n  annotate: 1\n"
                   "  review: 1\n  adjudicate: 1\n")


def _workflow_item(world: World, caller: str, *, queued: bool) -> dict[str, Any]:
    """A fresh item of alpha (queued under the workflow policy when ``queued``)."""
    from truthset.workflow import policies, queue

    with world.ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        if policies.current_policy(s, alpha).version == 0:
            policies.set_policy(s, alpha, WORKFLOW_POLICY)
        n = len(s.scalars(select(Item.id).where(Item.project_id == alpha.id)).all())
        name = f"wf-{caller}-{n}"
        s.add(Item(project_id=alpha.id, external_id=name, kind="image"))
        s.flush()
        if queued:
            queue.enqueue(s, alpha, [name])
    return {"item_name": name}


def _fresh_slot(world: World, caller: str) -> dict[str, Any]:
    return _workflow_item(world, caller, queued=True)


def _fresh_item(world: World, caller: str) -> dict[str, Any]:
    return _workflow_item(world, caller, queued=False)


# --- content checks (blinding) ---------------------------------------------------------------
def _only_own_labels_unless_overseer(world: World, caller: str, reply: Any) -> None:
    authors = {a["author"] for a in reply.json()["items"]}
    if caller in OVERSEE:
        assert {"annotator", "annotator2"} <= authors, authors
    else:
        assert authors <= {caller}, f"{caller} saw labels of {authors - {caller}}"


def _own_projects_only(world: World, caller: str, reply: Any) -> None:
    keys = {p["key"] for p in reply.json()["items"]}
    expected = {"nobody": set(), "outsider": {"beta"}}.get(
        caller, {"alpha", "beta"} if caller in GLOBAL_AUDIT else {"alpha"})
    assert expected <= keys and (caller in GLOBAL_AUDIT or keys == expected), keys


def _filtered_events(world: World, caller: str, reply: Any) -> None:
    items = reply.json()["items"]
    with world.ws.sessions() as s:
        alpha = projects.get_project(s, "alpha").id
    assert items, "the seeded annotations of alpha left no create events"
    assert all(e["action"] == "create" and e["entity_type"] == "annotations"
               and e["project_id"] == alpha for e in items)
    assert [e["seq"] for e in items] == sorted((e["seq"] for e in items), reverse=True)


#: A STOW-RS request's content type.
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b'


#: Every route of the API, by ``METHOD /template``, with its probes.
EXPECT: dict[str, list[Probe]] = {
    # -- meta and sign-in (public) --
    "GET /healthz": [Probe("/healthz", EVERYONE, public=True)],
    "POST /api/v1/auth/login": [
        Probe("/api/v1/auth/login", EVERYONE, public=True, ok=(401,),
              kwargs={"json": {"username": "{caller}", "password": "wrong password!"}}),
    ],
    "GET /api/v1/auth/oidc/login": [Probe("/api/v1/auth/oidc/login", EVERYONE, public=True,
                                          ok=(404,))],
    "GET /api/v1/auth/oidc/callback": [
        Probe("/api/v1/auth/oidc/callback?code=c&state=s", EVERYONE, public=True, ok=(404,)),
    ],
    # -- the caller's own credentials (any signed-in user; bearer callers have no session) --
    "POST /api/v1/auth/logout": [Probe("/api/v1/auth/logout", EVERYONE, ok=(422,))],
    "GET /api/v1/auth/me": [Probe("/api/v1/auth/me", EVERYONE)],
    "GET /api/v1/auth/csrf": [Probe("/api/v1/auth/csrf", EVERYONE, ok=(422,))],
    "GET /api/v1/auth/tokens": [Probe("/api/v1/auth/tokens", EVERYONE)],
    "POST /api/v1/auth/tokens": [Probe("/api/v1/auth/tokens", EVERYONE,
                                       kwargs={"json": {"name": "mine"}})],
    "DELETE /api/v1/auth/tokens/{token_id}": [
        Probe("/api/v1/auth/tokens/{token_id}", EVERYONE, prepare=_own_token),
        Probe("/api/v1/auth/tokens/{token_id}", EVERYONE, ok=(404,), prepare=_spare_token,
              label="someone else's token is not found"),
    ],
    # -- users --
    "GET /api/v1/users": [Probe("/api/v1/users", frozenset({"root"}))],
    "POST /api/v1/users": [Probe("/api/v1/users", frozenset({"root"}),
                                 kwargs={"json": {"username": "u-{caller}",
                                                  "role": "annotator"}})],
    "GET /api/v1/users/{username}": [
        Probe("/api/v1/users/{caller}", EVERYONE, label="yourself"),
        Probe("/api/v1/users/spare", frozenset({"root"}), label="someone else"),
    ],
    "PATCH /api/v1/users/{username}": [
        Probe("/api/v1/users/spare", frozenset({"root"}),
              kwargs={"json": {"tier": 2}, "headers": {"If-Match": "*"}}),
    ],
    "POST /api/v1/users/{username}/tokens": [
        Probe("/api/v1/users/spare/tokens", frozenset({"root"}), kwargs={"json": {"name": "t"}}),
    ],
    # -- projects --
    "GET /api/v1/projects": [Probe("/api/v1/projects", EVERYONE, check=_own_projects_only)],
    "POST /api/v1/projects": [
        Probe("/api/v1/projects", frozenset({"root"}),
              kwargs={"json": {"key": "p-{caller}", "schema_yaml": "SCHEMA"}}),
    ],
    "GET /api/v1/projects/{key}": [
        Probe("/api/v1/projects/alpha", MEMBERS),
        Probe("/api/v1/projects/beta", BETA_READERS, label="another project"),
    ],
    "PATCH /api/v1/projects/{key}": [
        Probe("/api/v1/projects/alpha", MANAGE,
              kwargs={"json": {"description": "d-{caller}"}, "headers": {"If-Match": "*"}}),
    ],
    "GET /api/v1/projects/{key}/members": [
        Probe("/api/v1/projects/alpha/members", MANAGE | AUDITORS),
    ],
    "PUT /api/v1/projects/{key}/members/{username}/{role}": [
        Probe("/api/v1/projects/alpha/members/spare/reviewer", MANAGE,
              prepare=_member("spare", "reviewer", present=False)),
        Probe("/api/v1/projects/alpha/members/spare/admin", frozenset({"padmin", "root"}),
              prepare=_member("spare", "admin", present=False),
              label="only administrators grant admin"),
    ],
    "DELETE /api/v1/projects/{key}/members/{username}/{role}": [
        Probe("/api/v1/projects/alpha/members/spare/auditor", MANAGE,
              prepare=_member("spare", "auditor", present=True)),
    ],
    "GET /api/v1/projects/{key}/schemas": [Probe("/api/v1/projects/alpha/schemas", MEMBERS)],
    "POST /api/v1/projects/{key}/schemas": [
        Probe("/api/v1/projects/alpha/schemas", MANAGE,
              kwargs={"json": {"schema_yaml": "SCHEMA"}, "headers": {"If-Match": "*"}}),
    ],
    "GET /api/v1/projects/{key}/schemas/{version}": [
        Probe("/api/v1/projects/alpha/schemas/1", MEMBERS),
        Probe("/api/v1/projects/beta/schemas/1", BETA_READERS, label="another project"),
    ],
    "GET /api/v1/projects/{key}/guidelines": [
        Probe("/api/v1/projects/alpha/guidelines", MEMBERS),
    ],
    "POST /api/v1/projects/{key}/guidelines": [
        Probe("/api/v1/projects/alpha/guidelines", MANAGE,
              kwargs={"json": {"body": "b", "change_note": "c"}, "headers": {"If-Match": "*"}}),
    ],
    "GET /api/v1/projects/{key}/guidelines/{version}": [
        Probe("/api/v1/projects/alpha/guidelines/1", MEMBERS),
    ],
    # -- items and media --
    "GET /api/v1/projects/{key}/items": [
        Probe("/api/v1/projects/alpha/items", MEMBERS),
        Probe("/api/v1/projects/beta/items", BETA_READERS, label="another project"),
    ],
    "POST /api/v1/projects/{key}/items": [
        Probe("/api/v1/projects/alpha/items", MANAGE | {"service"}, prepare=_upload),
    ],
    "GET /api/v1/projects/{key}/items/{item_id}": [
        Probe("/api/v1/projects/alpha/items/{a0}", MEMBERS),
        Probe("/api/v1/projects/alpha/items/{b0}", MEMBERS, ok=(404,),
              label="another project's item id under this project"),
        Probe("/api/v1/projects/beta/items/{b0}", BETA_READERS, label="another project"),
    ],
    "GET /api/v1/projects/{key}/items/{item_id}/media/{index}": [
        Probe("/api/v1/projects/alpha/items/{a0}/media/0", MEMBERS),
        Probe("/api/v1/projects/alpha/items/{b0}/media/0", MEMBERS, ok=(404,),
              label="another project's item id under this project"),
        Probe("/api/v1/projects/beta/items/{b0}/media/0", BETA_READERS,
              label="another project"),
    ],
    # -- annotations (blinded) --
    "GET /api/v1/projects/{key}/annotations": [
        Probe("/api/v1/projects/alpha/annotations?limit=500", MEMBERS,
              check=_only_own_labels_unless_overseer),
    ],
    "GET /api/v1/projects/{key}/items/{item_id}/annotations": [
        Probe("/api/v1/projects/alpha/items/{a0}/annotations", MEMBERS,
              check=_only_own_labels_unless_overseer),
        Probe("/api/v1/projects/alpha/items/{b0}/annotations", MEMBERS, ok=(404,),
              label="another project's item id under this project"),
    ],
    "POST /api/v1/projects/{key}/items/{item_id}/annotations": [
        Probe("/api/v1/projects/alpha/items/{a1}/annotations", READERS,
              kwargs={"json": {"payload": {"label": "effusion"}}}),
        Probe("/api/v1/projects/alpha/items/{b0}/annotations", READERS, ok=(404,),
              kwargs={"json": {"payload": {"label": "effusion"}}},
              label="another project's item id under this project"),
        Probe("/api/v1/projects/beta/items/{b0}/annotations", frozenset({"outsider"}),
              kwargs={"json": {"payload": {"label": "effusion"}}}, label="another project"),
    ],
    # -- consensus and agreement (overseers only; readers are blinded) --
    "POST /api/v1/projects/{key}/consensus": [
        Probe("/api/v1/projects/alpha/consensus", MANAGE, kwargs={"json": {}}),
    ],
    "GET /api/v1/projects/{key}/consensus": [
        Probe("/api/v1/projects/alpha/consensus", OVERSEE, prepare=_consensus_exists),
    ],
    "GET /api/v1/projects/{key}/items/{item_id}/consensus": [
        Probe("/api/v1/projects/alpha/items/{a0}/consensus", OVERSEE,
              prepare=_consensus_exists),
        Probe("/api/v1/projects/alpha/items/{b0}/consensus", OVERSEE, ok=(404,),
              label="another project's item id under this project"),
    ],
    "GET /api/v1/projects/{key}/agreement": [
        Probe("/api/v1/projects/alpha/agreement?metric=percent", OVERSEE),
    ],
    "GET /api/v1/projects/{key}/agreement/trend": [
        Probe("/api/v1/projects/alpha/agreement/trend?n_boot=100", OVERSEE),
    ],
    "GET /api/v1/projects/{key}/agreement/readers": [
        Probe("/api/v1/projects/alpha/agreement/readers", OVERSEE),
    ],
    "GET /api/v1/projects/{key}/agreement/classes": [
        Probe("/api/v1/projects/alpha/agreement/classes?n_boot=100", OVERSEE),
    ],
    # -- background jobs and pre-labelling oversight --
    "GET /api/v1/projects/{key}/jobs": [
        Probe("/api/v1/projects/alpha/jobs", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/jobs/page": [
        Probe("/api/v1/projects/alpha/jobs/page?limit=2", MANAGE | AUDITORS,
              prepare=_jobs_of_both, check=_only_alpha_jobs,
              label="newest first, never another project's job"),
    ],
    "POST /api/v1/projects/{key}/jobs": [
        Probe("/api/v1/projects/alpha/jobs", MANAGE, ok=(201,), check=_job_done,
              kwargs={"json": {"kind": "acceptance", "params": {}}}),
    ],
    "GET /api/v1/projects/{key}/jobs/{job_id}": [
        Probe("/api/v1/projects/alpha/jobs/{job_id}", MANAGE | AUDITORS,
              prepare=_job_row("succeeded")),
        Probe("/api/v1/projects/alpha/jobs/{job_id}", MANAGE | AUDITORS, ok=(404,),
              prepare=_beta_job, label="another project's job id under this project"),
    ],
    "POST /api/v1/projects/{key}/jobs/{job_id}/cancel": [
        Probe("/api/v1/projects/alpha/jobs/{job_id}/cancel", MANAGE,
              prepare=_job_row("queued")),
    ],
    "GET /api/v1/projects/{key}/prelabel/models": [
        Probe("/api/v1/projects/alpha/prelabel/models", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/prelabel/acceptance": [
        Probe("/api/v1/projects/alpha/prelabel/acceptance", MANAGE | AUDITORS),
    ],
    "POST /api/v1/projects/{key}/prelabel/classes/{class_name}/resume": [
        Probe("/api/v1/projects/alpha/prelabel/classes/effusion/resume", MANAGE,
              prepare=_paused_class, kwargs={"json": {"note": "new model version"}}),
    ],
    # -- workflow: policy, task queue, reviews, adjudications, readers, escalations --
    "GET /api/v1/projects/{key}/policy": [Probe("/api/v1/projects/alpha/policy", MEMBERS)],
    "PUT /api/v1/projects/{key}/policy": [
        Probe("/api/v1/projects/alpha/policy", MANAGE, kwargs={"json": {"text": "WF_POLICY"}}),
    ],
    "POST /api/v1/projects/{key}/tasks/enqueue": [
        Probe("/api/v1/projects/alpha/tasks/enqueue", MANAGE, prepare=_fresh_item,
              kwargs={"json": {}}),
    ],
    "POST /api/v1/projects/{key}/tasks/next": [
        Probe("/api/v1/projects/alpha/tasks/next", READERS, prepare=_fresh_slot),
    ],
    "POST /api/v1/projects/{key}/tasks/{task_id}/submit": [
        Probe("/api/v1/projects/alpha/tasks/999999/submit", READERS, ok=(404,),
              kwargs={"json": {"payload": {"label": "normal"}}}, label="unknown task"),
    ],
    "GET /api/v1/projects/{key}/disagreement": [
        Probe("/api/v1/projects/alpha/disagreement", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/cost": [
        Probe("/api/v1/projects/alpha/cost", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/queue": [
        Probe("/api/v1/projects/alpha/queue", MANAGE | AUDITORS),
    ],
    "POST /api/v1/projects/{key}/tasks/{task_id}/skip": [
        Probe("/api/v1/projects/alpha/tasks/999999/skip", READERS, ok=(404,),
              label="unknown task"),
    ],
    "POST /api/v1/projects/{key}/tasks/{task_id}/flag": [
        Probe("/api/v1/projects/alpha/tasks/999999/flag", READERS, ok=(404,),
              kwargs={"json": {"reason": "unclear"}}, label="unknown task"),
    ],
    "POST /api/v1/projects/{key}/tasks/{task_id}/reviews": [
        Probe("/api/v1/projects/alpha/tasks/999999/reviews", frozenset({"reviewer",
                                                                         "adjudicator"}),
              ok=(404,), kwargs={"json": {"decision": "accept"}}, label="unknown task"),
    ],
    "POST /api/v1/projects/{key}/tasks/{task_id}/adjudications": [
        Probe("/api/v1/projects/alpha/tasks/999999/adjudications", frozenset({"adjudicator"}),
              ok=(404,), kwargs={"json": {"payload": {"label": "normal"}, "reason": "r"}},
              label="unknown task"),
    ],
    "GET /api/v1/projects/{key}/readers": [
        Probe("/api/v1/projects/alpha/readers", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/readers/me": [
        Probe("/api/v1/projects/alpha/readers/me", READERS),
    ],
    "GET /api/v1/projects/{key}/readers/{username}": [
        Probe("/api/v1/projects/alpha/readers/annotator", MANAGE | AUDITORS),
    ],
    "GET /api/v1/projects/{key}/escalations": [
        Probe("/api/v1/projects/alpha/escalations", OVERSEE),
    ],
    "GET /api/v1/projects/{key}/escalations/check": [
        Probe("/api/v1/projects/alpha/escalations/check", OVERSEE),
    ],
    # -- releases --
    "GET /api/v1/projects/{key}/releases": [
        Probe("/api/v1/projects/alpha/releases", OVERSEE),
    ],
    "POST /api/v1/projects/{key}/releases": [
        Probe("/api/v1/projects/alpha/releases", MANAGE, ok=(201,), prepare=_release_ready,
              kwargs={"json": {"name": "r-{caller}", "exclude_unresolved": "matrix"}}),
    ],
    "GET /api/v1/projects/{key}/releases/{name}": [
        Probe("/api/v1/projects/alpha/releases/r0", OVERSEE, prepare=_release_r0),
        Probe("/api/v1/projects/beta/releases/r0", frozenset({"root", "gaudit"}), ok=(404,),
              label="another project's release"),
    ],
    "GET /api/v1/projects/{key}/releases/{name}/diff": [
        Probe("/api/v1/projects/alpha/releases/r0/diff?against=r0", OVERSEE,
              prepare=_release_r0),
    ],
    "POST /api/v1/projects/{key}/releases/{name}/signatures": [
        Probe("/api/v1/projects/alpha/releases/r0/signatures", MANAGE, ok=(403,),
              prepare=_release_r0, kwargs={"json": {"password": "none set", "meaning": "r"}},
              label="no password set: the refusal is audited"),
    ],
    "GET /api/v1/projects/{key}/releases/{name}/verify": [
        Probe("/api/v1/projects/alpha/releases/r0/verify", OVERSEE, prepare=_release_r0),
    ],
    "GET /api/v1/projects/{key}/releases/{name}/files/{path}": [
        Probe("/api/v1/projects/alpha/releases/r0/files/manifest.json",
              MANAGE | AUDITORS | {"service"}, prepare=_release_r0),
    ],
    "GET /api/v1/projects/{key}/releases/{name}/signatures/{username}": [
        Probe("/api/v1/projects/alpha/releases/r0/signatures/manager",
              MANAGE | AUDITORS | {"service"}, ok=(404,), prepare=_release_r0,
              label="unsigned release"),
    ],
    # -- audit --
    "GET /api/v1/audit/events": [
        Probe("/api/v1/audit/events?project=alpha", MANAGE | AUDITORS, label="one project"),
        Probe("/api/v1/audit/events", GLOBAL_AUDIT, label="every project"),
        Probe("/api/v1/audit/events?project=alpha&action=create&entity_type=annotations"
              "&since=2000-01-01&order=desc", MANAGE | AUDITORS, check=_filtered_events,
              label="filtered"),
    ],
    "GET /api/v1/audit/verify": [Probe("/api/v1/audit/verify", GLOBAL_AUDIT)],
    "GET /api/v1/audit/head": [Probe("/api/v1/audit/head", GLOBAL_AUDIT)],
}

#: DICOMweb under /dicomweb/projects/{key}: QIDO-RS searches (200 on a project without DICOM),
#: WADO-RS retrievals of an unknown UID (404 once authorised) and STOW-RS with an unterminated
#: multipart body (422 once authorised).
_DICOMWEB = "/dicomweb/projects/{key}"
_UIDS = {"key": "alpha", "study": "1.2.3", "series": "1.2.3", "sop": "1.2.3", "frames": "1",
         "frame": "1"}
_SOP = "/studies/{study}/series/{series}/instances/{sop}"
for _tail in ("/instances", "/series", "/studies", "/studies/{study}/instances",
              "/studies/{study}/series", "/studies/{study}/series/{series}/instances"):
    EXPECT[f"GET {_DICOMWEB}{_tail}"] = [Probe((_DICOMWEB + _tail).format(**_UIDS), MEMBERS)]
EXPECT[f"GET {_DICOMWEB}/studies"].append(
    Probe("/dicomweb/projects/beta/studies", BETA_READERS, label="another project"))
for _tail in ("/studies/{study}", "/studies/{study}/metadata", "/studies/{study}/series/{series}",
              "/studies/{study}/series/{series}/metadata", _SOP, _SOP + "/metadata",
              _SOP + "/rendered", _SOP + "/frames/{frames}", _SOP + "/frames/{frame}/rendered"):
    EXPECT[f"GET {_DICOMWEB}{_tail}"] = [
        Probe((_DICOMWEB + _tail).format(**_UIDS), MEMBERS, ok=(404,), label="unknown UID")]
for _tail in ("/studies", "/studies/{study}"):
    EXPECT[f"POST {_DICOMWEB}{_tail}"] = [
        Probe((_DICOMWEB + _tail).format(**_UIDS), MANAGE | {"service"}, ok=(422,),
              kwargs={"content": b"x", "headers": {"Content-Type": STOW_TYPE}},
              label="unterminated multipart body")]

#: Routes under these prefixes act on the caller's own credentials, not on project data.
SELF_SERVICE = ("POST /api/v1/auth/", "DELETE /api/v1/auth/", "GET /api/v1/auth/")

CASES = [(route, k, probe) for route, probes in EXPECT.items() for k, probe in enumerate(probes)]


def _operations(app_doc: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in app_doc["paths"].items()
            for method in ops if method in ("get", "post", "put", "patch", "delete", "head")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    ws = Workspace.init(tmp / "ws", database_url=f"sqlite:///{tmp / 'ws.db'}")
    seeded = seed(ws, tmp)
    with ws.unit("seed") as s:
        spare = users.add_user(s, username="spare", role="annotator")
        tokens.create_token(s, spare, name="spare's")
        alpha = projects.get_project(s, "alpha")
        for name in ("annotator", "annotator2"):
            author = users.get_user(s, name)
            for item in s.scalars(select(Item).where(Item.project_id == alpha.id)):
                record_annotation(s, alpha, item=item, author=author,
                                  payload={"label": "nodule" if name == "annotator" else
                                           "normal"})
    try:
        yield World(ws, seeded, tmp)
    finally:
        ws.close()


def test_every_route_has_an_expectation(world: World) -> None:
    served = _operations(world.c.get("/openapi.json").json())
    missing = sorted(served - set(EXPECT))
    stale = sorted(set(EXPECT) - served)
    assert not missing, f"routes without an authorisation expectation in {__name__}: {missing}"
    assert not stale, f"expectations for routes the app no longer serves: {stale}"


def test_auditors_change_nothing() -> None:
    """No probe that writes project data admits an auditor (own credentials aside)."""
    for route, _k, probe in CASES:
        if route.startswith(("GET ", "HEAD ")) or route.startswith(SELF_SERVICE) \
                or probe.public:
            continue
        assert not probe.allowed & AUDITORS, (route, probe.label)


def _fill(text: str, values: dict[str, Any]) -> str:
    return text.format(**values)


def _render(value: Any, values: dict[str, Any]) -> Any:
    if value == "SCHEMA":
        return SCHEMA
    if value == "WF_POLICY":
        return WORKFLOW_POLICY
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    return value


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("route", "k", "probe"), CASES,
                         ids=[f"{r}#{k}" + (f" ({p.label})" if p.label else "")
                              for r, k, p in CASES])
def test_matrix(world: World, caller: str, route: str, k: int, probe: Probe) -> None:
    values = {**world.ids(), "caller": caller}
    kwargs: dict[str, Any] = {}
    if probe.prepare is not None:
        extra = probe.prepare(world, caller)
        if "files" in extra:
            kwargs["files"] = extra.pop("files")
        values.update(extra)
    kwargs.update({name: _render(v, values) for name, v in probe.kwargs.items()
                   if name != "headers"})
    headers = dict(probe.kwargs.get("headers", {}))
    if not probe.public:
        headers.update(bearer(world.seeded.tokens[caller]))
    method = route.split(" ", 1)[0]
    before = world.head()
    reply = world.c.request(method, _fill(probe.path, values), headers=headers, **kwargs)
    if caller in probe.allowed:
        assert reply.status_code in probe.ok, (reply.status_code, reply.text)
        if probe.check is not None:
            probe.check(world, caller, reply)
        written = world.events_since(before)
        if method != "GET" and reply.status_code in OK:
            assert written, "a successful change left no audit event"
        if reply.status_code == 404:  # ids of another project: refused, nothing written
            assert written == [], written
    else:
        assert reply.status_code == 403, (reply.status_code, reply.text)
        assert reply.json()["error"] == "forbidden"
        events = world.events_since(before)
        # The refusal wrote exactly one event, "denied", by the caller, and nothing else.
        assert [e["action"] for e in events] == ["denied"], events
        assert events[0]["actor"] == caller
        assert events[0]["after"]["route"] == route.split(" ", 1)[1]


def test_unauthenticated_callers_get_401_everywhere_but_public_routes(world: World) -> None:
    values = {**world.ids(), "caller": "nobody", "token_id": 1, "job_id": 1}
    for route, probes in EXPECT.items():
        probe = probes[0]
        if probe.public:
            continue
        method = route.split(" ", 1)[0]
        before = world.head()
        reply = world.c.request(method, _fill(probe.path, values))
        assert reply.status_code == 401, (route, reply.status_code)
        assert reply.json()["field"] == "Authorization"
        assert world.head() == before
