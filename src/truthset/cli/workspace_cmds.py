"""``truthset init``, ``project``, ``user`` and ``import``: setting up a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
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
    imaging: Annotated[
        Path | None, typer.Option(help="Imaging settings (YAML): dicom_item, deid options, "
                                       "private_safelist. The options below override it.")
    ] = None,
    dicom_item: Annotated[
        str | None, typer.Option(help="A DICOM 'series' is one item, or every 'instance'.")
    ] = None,
    retain_dates: Annotated[
        bool | None, typer.Option("--retain-dates/--no-retain-dates",
                                  help="Retain Longitudinal Temporal Information (dates shifted "
                                       "per patient; not HIPAA Safe Harbor).", show_default=False)
    ] = None,
    retain_patient_characteristics: Annotated[
        bool | None, typer.Option("--retain-patient-characteristics/"
                                  "--no-retain-patient-characteristics",
                                  help="Keep sex, age, size, weight...", show_default=False)
    ] = None,
    clean_descriptors: Annotated[
        bool | None, typer.Option("--clean-descriptors/--no-clean-descriptors",
                                  help="Keep descriptions after cleaning them.",
                                  show_default=False)
    ] = None,
    private_safelist: Annotated[
        list[str] | None, typer.Option("--private-safelist",
                                       help="Private element to keep: 'gggg,CREATOR,ee' "
                                            "(repeat).")
    ] = None,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Create a project with its label schema, (optionally) guideline and imaging settings."""
    schema_text = _read_text(schema, "schema")
    guideline_text = _read_text(guideline, "guideline") if guideline else None
    imaging_settings = _imaging_options(
        imaging, dicom_item=dicom_item, retain_dates=retain_dates,
        retain_patient_characteristics=retain_patient_characteristics,
        clean_descriptors=clean_descriptors, private_safelist=private_safelist,
    )
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        project = projects.create_project(
            session, key=key, name=name, schema_text=schema_text, schema_source=str(schema),
            guideline_text=guideline_text, imaging=imaging_settings,
        )
        console.print(f"Created project [bold]{project.key}[/] (schema v1"
                      f"{', guideline v1' if guideline_text else ''})")


def _imaging_options(
    path: Path | None, *, dicom_item: str | None, retain_dates: bool | None,
    retain_patient_characteristics: bool | None, clean_descriptors: bool | None,
    private_safelist: list[str] | None,
) -> dict[str, Any] | None:
    """The imaging settings from a YAML file (``imaging:`` mapping or the mapping itself)
    and the command-line options; ``None`` when nothing was given."""
    settings: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(_read_text(path, "imaging settings")) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"malformed YAML: {exc}", source=str(path)) from exc
        if not isinstance(loaded, dict):
            raise InputError("imaging settings must be a mapping", source=str(path))
        settings = dict(loaded.get("imaging", loaded))
    deid = dict(settings.get("deid") or {})
    for name, value in (("retain_longitudinal_modified_dates", retain_dates),
                        ("retain_patient_characteristics", retain_patient_characteristics),
                        ("clean_descriptors", clean_descriptors)):
        if value is not None:
            deid[name] = value
    if private_safelist:
        deid["private_safelist"] = list(private_safelist)
    if deid:
        settings["deid"] = deid
    if dicom_item is not None:
        settings["dicom_item"] = dicom_item
    return settings or None


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
    """Import files, folders and zip archives as items: DICOM (de-identified on the way in),
    NIfTI and PNG/JPEG/TIFF, dispatched by content."""
    total = imports.count_units(paths)
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session, \
            _progress() as bar:
        task = bar.add_task("importing", total=total)
        proj = projects.get_project(session, project)
        summary = imports.import_items(
            session, ws.blobs, proj, paths, continue_on_error=continue_on_error,
            progress=lambda n: bar.update(task, completed=n), vault=ws.vault,
        )
    console.print(f"ingested {len(summary.ingested)}, quarantined {len(summary.quarantined)}, "
                  f"skipped {len(summary.skipped)}, refused {len(summary.refused)}")
    for what, why in summary.quarantined:
        err_console.print(f"  [yellow]quarantined[/] {what}: {why}", highlight=False)
    for what, why in summary.skipped:
        err_console.print(f"  [dim]skipped[/] {what}: {why}", highlight=False)
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
