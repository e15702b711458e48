"""``truthset serve``, ``truthset token create|revoke|list`` and ``truthset member add|remove``."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from truthset.api.logs import LOG_CONFIG
from truthset.auth import memberships, tokens
from truthset.cli.app import app, console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.workspace.projects import get_project
from truthset.workspace.users import get_user
from truthset.workspace.workspace import ENV_WORKSPACE, resolve_workspace_dir

token_app = typer.Typer(help="API tokens for scripts (Authorization: Bearer).",
                        no_args_is_help=True)
member_app = typer.Typer(help="Project roles of users.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(member_app, name="member")


@app.command("serve")
@handle_errors
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-* from --forwarded-allow-ips (behind a "
                                "TLS-terminating proxy; sets Secure cookies).")
    ] = False,
    forwarded_allow_ips: Annotated[str, typer.Option(help="Proxies to trust.")] = "127.0.0.1",
    workspace: WorkspaceOption = None,
) -> None:
    """Run the web API (uvicorn) on the workspace."""
    import uvicorn

    folder = resolve_workspace_dir(workspace)
    open_workspace(folder).close()  # fail early (and migrate) before starting workers
    os.environ[ENV_WORKSPACE] = str(Path(folder).resolve())
    console.print(f"Truthset API on http://{host}:{port} (docs at /docs), workers: {workers}")
    uvicorn.run(
        "truthset.api.app:create_app_from_env", factory=True, host=host, port=port,
        workers=workers, proxy_headers=proxy_headers, forwarded_allow_ips=forwarded_allow_ips,
        log_level="info", access_log=False, log_config=LOG_CONFIG,
        # A worker imports the whole stack before it answers the supervisor's health check;
        # on a busy small machine that takes longer than uvicorn's default 5 s.
        timeout_worker_healthcheck=120,
    )


@token_app.command("create")
@handle_errors
def token_create(
    username: Annotated[str, typer.Argument(help="The user the token acts as.")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "",
    days: Annotated[int, typer.Option(min=0, help="Lifetime in days; 0 = never expires.")] = 90,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Create an API token and print it (shown once; only its hash is stored)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        issued = tokens.create_token(session, get_user(session, username), name=name,
                                     lifetime=timedelta(days=days) if days else None)
        token_id, secret = issued.token.id, issued.secret
    typer.echo(secret)
    console.print(f"token {token_id} for {username}", style="dim", highlight=False)


@token_app.command("revoke")
@handle_errors
def token_revoke(
    token: Annotated[str, typer.Argument(help="The token id, or the token itself.")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Revoke an API token (it stops working at once)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        if token.isdigit():
            row = tokens.revoke_token(session, int(token))
        else:
            row = tokens.revoke_secret(session, token)
        token_id = row.id
    console.print(f"token {token_id} revoked")


@token_app.command("list")
@handle_errors
def token_list(
    username: Annotated[str, typer.Argument(help="Whose tokens.")],
    workspace: WorkspaceOption = None,
) -> None:
    """List a user's tokens (ids, names, expiry, revocation; never secrets)."""
    with open_workspace(workspace) as ws, ws.sessions() as session:
        rows = tokens.list_tokens(session, get_user(session, username))
        for row in rows:
            state = "revoked" if row.revoked_at else f"expires {row.expires_at or 'never'}"
            typer.echo(f"{row.id}\t{row.name}\t{state}")


@member_app.command("add")
@handle_errors
def member_add(
    project: Annotated[str, typer.Argument(help="Project key.")],
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="admin, manager, annotator, reviewer, "
                                             "adjudicator, auditor or service.")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Give a user a role in a project."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        memberships.add_member(session, get_project(session, project),
                               get_user(session, username), role)
    console.print(f"{username} is {role} in {project}")


@member_app.command("remove")
@handle_errors
def member_remove(
    project: Annotated[str, typer.Argument(help="Project key.")],
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="The role to take away.")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Take a role in a project away from a user."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        memberships.remove_member(session, get_project(session, project),
                                  get_user(session, username), role)
    console.print(f"{username} is no longer {role} in {project}")
