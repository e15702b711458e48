"""What every workspace command needs: the workspace folder and the acting user."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

from truthset.workspace.workspace import Workspace

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $TRUTHSET_WORKSPACE, else the current directory).",
        show_default=False,
    ),
]
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who is acting, for the audit log (default: cli:<OS user>)."),
]


def actor_name(explicit: str | None) -> str:
    """The audit actor of a CLI call."""
    if explicit:
        return explicit
    env = os.environ.get("TRUTHSET_ACTOR")
    if env:
        return env
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def open_workspace(path: Path | None) -> Workspace:
    """Open the workspace named by ``--workspace`` / ``$TRUTHSET_WORKSPACE`` / the cwd."""
    return Workspace.open(path)
