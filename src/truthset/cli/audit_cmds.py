"""``truthset audit verify`` and ``truthset audit head``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from truthset import audit
from truthset.cli.app import EXIT_FAILED, app, console, err_console, handle_errors
from truthset.cli.context import WorkspaceOption, open_workspace
from truthset.domain.errors import InputError

audit_app = typer.Typer(help="Prove that the audit log is intact.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _read_anchor(path: Path) -> audit.ChainHead:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return audit.ChainHead(int(raw["seq"]), str(raw["hash"]), raw.get("at"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not an exported audit head: {exc}", source=str(path)) from exc


@audit_app.command("verify")
@handle_errors
def verify_cmd(
    anchor: Annotated[
        Path | None,
        typer.Option(help="A head exported earlier by `truthset audit head`: the chain must "
                          "still contain it (detects truncation and rewrites)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Walk the hash chain; name the first broken event. Exit 1 when broken."""
    anchored = _read_anchor(anchor) if anchor else None
    with open_workspace(workspace) as ws, ws.sessions() as session:
        result = audit.verify(session, anchor=anchored)
    if result.ok:
        head = result.head
        console.print(
            f"[green]audit log intact[/]: {result.n_events} events"
            + (f", head {head.seq} {head.hash}" if head else "")
        )
        return
    err_console.print(
        f"[bold red]audit log broken at event {result.broken_seq}[/]: {result.reason}",
        highlight=False,
    )
    raise typer.Exit(EXIT_FAILED)


@audit_app.command("head")
@handle_errors
def head_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Print the latest event's sequence number and hash as JSON, to anchor it elsewhere."""
    with open_workspace(workspace) as ws, ws.sessions() as session:
        result = audit.verify(session)
        if not result.ok:
            raise InputError(f"the chain is broken at event {result.broken_seq}: {result.reason}")
        head = result.head or audit.ChainHead(0, audit.GENESIS)
    text = json.dumps(head.to_dict())
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"head written to {output}")
    else:
        typer.echo(text)
