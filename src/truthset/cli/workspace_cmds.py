"""``truthset init``, ``project``, ``user`` and ``import``: setting up a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from truthset.cli.app import EXIT_INPUT, app, console, err_console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.domain.errors import InputError
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

project_app = typer.Typer(help="Create and list projects.", no_args_is_help=True)
user_app = typer.Typer(help="Add and list users.", no_args_is_help=True)
import_app = typer.Typer(help="Import items and labels into a project.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(user_app, name="user")
app.add_typer(import_app, name="import")


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what}: {exc}", source=str(path)) from exc


@app.command("init")
@handle_errors
def init_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder to create the workspace in.")],
    database_url: Annotated[
        str | None, typer.Option(help="Database URL (default: SQLite file in the folder).")
    ] = None,
    blob_url: Annotated[
        str | None, typer.Option(help="Blob store: folder or fsspec URL (default: ./blobs).")
    ] = None,
) -> None:
    """Create a workspace: configuration, database (migrated) and blob store."""
    with Workspace.init(directory, database_url=database_url, blob_url=blob_url) as ws:
        console.print(f"Workspace ready in [bold]{ws.root.resolve()}[/]")
        console.print(f"  database: {ws.engine.url.render_as_string(hide_password=True)}")
        console.print(f"  blobs:    {ws.blobs.url}")


@project_app.command("create")
@handle_errors
def project_create(
    key: Annotated[str, typer.Argument(help="Short id: lowercase letters, digits, - and _.")],
    schema: Annotated[Path, typer.Option("--schema", help="Label schema (YAML).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    guideline: Annotated[
        Path | None, typer.Option(help="Guideline (Markdown), version 1.")
    ] = None,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Create a project with its label schema and (optionally) guideline."""
    schema_text = _read_text(schema, "schema")
    guideline_text = _read_text(guideline, "guideline") if guideline else None
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        project = projects.create_project(
            session, key=key, name=name, schema_text=schema_text, schema_source=str(schema),
            guideline_text=guideline_text,
        )
        console.print(f"Created project [bold]{project.key}[/] (schema v1"
                      f"{', guideline v1' if guideline_text else ''})")


@project_app.command("list")
@handle_errors
def project_list(workspace: WorkspaceOption = None) -> None:
    """List the projects of the workspace."""
    from truthset.workspace.queries import project_overview

    with open_workspace(workspace) as ws, ws.unit("cli:read") as session:
        table = Table("key", "name", "items", "annotations", "schema")
        for row in project_overview(session):
            table.add_row(row.key, row.name, str(row.n_items), str(row.n_annotations),
                          f"v{row.schema_version}")
        console.print(table)


@user_app.command("add")
@handle_errors
def user_add(
    username: Annotated[str, typer.Argument(help="Unique user name (never reused).")],
    role: Annotated[str, typer.Option(help="admin, manager, annotator, reviewer, adjudicator, "
                                           "auditor or service.")] = "annotator",
    tier: Annotated[int, typer.Option(help="1 annotator, 2 clinician reviewer, 3 senior.")] = 1,
    specialty: Annotated[str, typer.Option(help="e.g. radiology, pathology.")] = "",
    display_name: Annotated[str, typer.Option(help="Printed name (signatures).")] = "",
    password: Annotated[
        bool, typer.Option("--password", help="Prompt for a password (argon2id-hashed).")
    ] = False,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Add a user."""
    secret = (
        typer.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    )
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        user = users.add_user(
            session, username=username, role=role, tier=tier, specialty=specialty,
            display_name=display_name, password=secret,
        )
        console.print(f"Added user [bold]{user.username}[/] ({user.role}, tier {user.tier})")


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True,
    )


@import_app.command("items")
@handle_errors
def import_items_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project key.")],
    continue_on_error: Annotated[
        bool, typer.Option(help="Import the good files even if some are refused.")
    ] = False,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Import PNG/JPEG/TIFF images (files or folders) as items."""
    files = imports.expand_paths(paths)
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session, \
            _progress() as bar:
        task = bar.add_task("checking files", total=len(files))
        proj = projects.get_project(session, project)
        summary = imports.import_items(
            session, ws.blobs, proj, paths, continue_on_error=continue_on_error,
            progress=lambda n: bar.update(task, completed=n),
        )
    console.print(f"ingested {len(summary.ingested)}, skipped {len(summary.skipped)}, "
                  f"refused {len(summary.refused)}")
    for path, why in summary.refused:
        err_console.print(f"  [red]refused[/] {path}: {why}", highlight=False)
    if summary.refused:
        raise typer.Exit(EXIT_INPUT)


@import_app.command("labels")
@handle_errors
def import_labels_cmd(
    file: Annotated[Path, typer.Argument(help="Long table item,annotator,label (CSV/TSV/JSONL/"
                                              "Parquet).")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project key.")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Import labels as annotations (all rows or none)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = projects.get_project(session, project)
        n = imports.import_labels(session, proj, file)
    console.print(f"imported {n} annotations into {project}")
