"""``truthset quarantine list|clear|redact`` (decide on images that may show identity) and
``truthset export imaging`` (labels as DICOM SEG / SR / NIfTI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from truthset.cli.app import app, console, err_console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.domain.errors import NotFoundError
from truthset.workspace import imaging_export, projects, quarantine, reidentify

quarantine_app = typer.Typer(
    help="Images held because their pixels may show identity: list, clear or redact them "
         "(project managers and administrators; pass --actor USERNAME).",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")

ProjectOption = Annotated[str, typer.Option("--project", "-p", help="Project key.")]


@quarantine_app.command("list")
@handle_errors
def quarantine_list(project: ProjectOption, workspace: WorkspaceOption = None) -> None:
    """List the quarantined items of a project and why each is held."""
    with open_workspace(workspace) as ws, ws.unit("cli:read") as session:
        proj = projects.get_project(session, project)
        table = Table("item", "kind", "modality", "instances", "why")
        for item in quarantine.list_quarantined(session, proj):
            table.add_row(item.external_id, item.kind, item.modality or "",
                          str(len(item.media or [])),
                          "; ".join(item.attributes.get("quarantine_reasons", [])))
        console.print(table)


@quarantine_app.command("clear")
@handle_errors
def quarantine_clear(
    item: Annotated[str, typer.Argument(help="External id of the item (series or instance "
                                             "UID).")],
    project: ProjectOption,
    note: Annotated[str, typer.Option(help="What you checked (required).")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Release an item unchanged: you looked at every frame and saw nothing identifying."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = projects.get_project(session, project)
        row = quarantine.clear_item(session, proj, item, actor=actor_name(actor), note=note)
        console.print(f"cleared item {row.id} ({row.external_id})")


@quarantine_app.command("redact")
@handle_errors
def quarantine_redact(
    item: Annotated[str, typer.Argument(help="External id of the item.")],
    project: ProjectOption,
    region: Annotated[list[str], typer.Option(
        "--region", help="Rectangle to black out in every frame: x,y,width,height (repeat).")],
    note: Annotated[str, typer.Option(help="Why these regions.")] = "",
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Black out rectangles in every frame of a quarantined DICOM item, then release it."""
    regions = [quarantine.Region.parse(r) for r in region]
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = projects.get_project(session, project)
        row = quarantine.redact_item(session, ws.blobs, proj, item, actor=actor_name(actor),
                                     regions=regions, note=note)
        console.print(f"redacted {len(row.media)} instance(s) of item {row.id} "
                      f"({row.external_id}) and released it")


export_app = typer.Typer(help="Export labels in medical imaging formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("imaging")
@handle_errors
def export_imaging_cmd(
    folder: Annotated[Path, typer.Argument(help="Empty folder to write into.")],
    project: ProjectOption,
    fmt: Annotated[list[str], typer.Option(
        "--format", help="dicom-seg, nifti (mask schemas), dicom-sr (box/polygon schemas); "
                         "repeatable.")],
    labels: Annotated[str, typer.Option(
        help="'consensus' or the user name of one reader.")] = "consensus",
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Write the labels of the project's DICOM items as DICOM SEG, DICOM SR (TID 1500) or
    NIfTI label maps (the export is audited)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = projects.get_project(session, project)
        result = imaging_export.export_imaging(session, ws.blobs, proj, folder, formats=fmt,
                                               labels=labels)
    for path in result.written:
        console.print(f"  wrote {path}")
    for what, why in result.skipped:
        err_console.print(f"  [dim]skipped[/] {what}: {why}", highlight=False)
    err_console.print(f"Exported {len(result.written)} file(s)")


pseudonym_app = typer.Typer(help="The pseudonym vault (administrators only).",
                            no_args_is_help=True)
app.add_typer(pseudonym_app, name="pseudonym")


@pseudonym_app.command("lookup")
@handle_errors
def pseudonym_lookup(
    pseudonym: Annotated[str, typer.Argument(help="A pseudonym (P-..., or a 2.25. UID).")],
    project: ProjectOption,
    reason: Annotated[str, typer.Option(help="Why you need the original (audited).")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Show the original identifier behind a pseudonym (the look-up is audited)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = projects.get_project(session, project)
        found = reidentify.reidentify(session, ws.vault, proj, pseudonym,
                                      actor=actor_name(actor), reason=reason)
    if not found:  # the attempt is audited all the same
        raise NotFoundError(f"no pseudonym {pseudonym!r} in project {project!r}")
    for kind, original in found:
        console.print(f"{kind}\t{original}", highlight=False)
