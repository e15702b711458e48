"""``truthset demo``: build a complete sample project offline, in seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from truthset.cli.app import app, console, err_console, handle_errors
from truthset.demo import run_demo


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@app.command("demo")
@handle_errors
def demo_cmd(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Folder to build the demo in (default: a new "
                                   "truthset-demo-<time> folder here)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated readers.")] = 0,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Then serve the web application on the demo, with a sign-in for each "
                        "role (printed).")] = False,
    host: Annotated[str, typer.Option(help="Address to serve on (with --serve).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (with --serve).")] = 8000,
) -> None:
    """Build a sample project: real images, simulated readers, consensus, agreement, release."""
    folder = directory or Path(f"truthset-demo-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    with err_console.status("building the demo…") as status:
        result = run_demo(folder, seed=seed,
                          step=lambda msg: status.update(f"demo: {msg}…"))
    console.print(f"[bold]Truthset demo[/]: {result.n_items} items, {result.n_reads} reads by "
                  f"{len(result.readers)} simulated readers\n")
    readers = Table("reader", "simulated skill", "accuracy vs truth", "agreement with consensus",
                    title="Readers")
    for name, row in result.readers.iterrows():
        readers.add_row(str(name), f"{row['simulated_skill']:.2f}", f"{row['vs_truth']:.2f}",
                        f"{row['vs_consensus']:.2f}")
    console.print(readers)
    agree = Table("coefficient", "level", "value", "95% CI", title="Agreement between readers")
    for entry in result.agreement:
        ci = entry.get("ci")
        agree.add_row(entry["metric"], entry.get("level") or "", _fmt(entry.get("value")),
                      f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "—")
    console.print(agree)
    console.print(
        "Consensus accuracy against the simulated truth: "
        + ", ".join(f"{m} {v:.1%}" for m, v in result.consensus_accuracy.items())
    )
    work = result.workflow
    if work:
        console.print(f"Workflow: {work['reads']} reads handed out by the task queue, "
                      f"{work['escalations']} escalations, {work['adjudications']} settled by the "
                      "senior reader")
        for name, reason in work["not_working"].items():
            console.print(f"  {name} got no task: {reason}")
        gold = work["gold"]
        if len(gold):
            console.print("  accuracy on known-answer items: " + ", ".join(
                f"{r.reader} {r.accuracy:.0%}" for r in gold.itertuples() if r.n_gold))
    root = result.folder.resolve()
    console.print("\n[bold]Made[/]:")
    console.print(f"  workspace   {root / 'workspace'}   (try: truthset project list "
                  f"-w {root / 'workspace'})")
    console.print(f"  images      {root / 'sample-images'}")
    for made in (result.release, result.second_release):
        if made is None:
            continue
        console.print(f"  release {made.name:<3} {made.folder.resolve()}  ({made.n_items} items, "
                      f"{made.n_excluded} excluded, signed; manifest sha256 "
                      f"{made.manifest_sha256[:16]}…)")
        console.print(f"              datasheet {made.folder.resolve() / 'datasheet.html'}; "
                      f"check: truthset release verify {made.folder.resolve()}")
    if result.diff:
        diff_file = result.folder.resolve() / "releases" / "diff-v1-v2.txt"
        console.print(f"  diff        {diff_file}  ({result.diff['summary']['label_changed']} "
                      f"labels changed, {result.diff['summary']['removed']} removed)")
    console.print(f"  audit log   truthset audit verify -w {root / 'workspace'}")
    if serve:
        _serve_demo(root / "workspace", host, port)


def _serve_demo(folder: Path, host: str, port: int) -> None:
    """Give the demo users passwords, print them, and run the web application."""
    import os

    import uvicorn

    from truthset.demo import PROJECT_KEY
    from truthset.demo_web import add_browser_projects, demo_logins
    from truthset.workspace.workspace import ENV_WORKSPACE, Workspace

    with Workspace.open(folder) as workspace:
        extra = add_browser_projects(workspace)
        logins = demo_logins(workspace, PROJECT_KEY)
    table = Table("role", "user name", "password", title="Sign in as (passwords made for this run)")
    for login in logins:
        table.add_row(login.role, login.username, login.password)
    console.print()
    console.print(table)
    console.print(f"Projects: {PROJECT_KEY} (the demo above), " + ", ".join(extra)
                  + " (DICOM, two blinded readers each: in lesions ana and ben disagree on the "
                  "CT's boxes, so sign in as sam to adjudicate them, and draw boxes and masks on "
                  "the other images as ana or ben; in findings sign in as ana and ben, disagree, "
                  "then settle it as sam).")
    console.print(f"[bold]Open http://{host}:{port}/[/] (API docs at /docs). Ctrl+C stops it.")
    os.environ[ENV_WORKSPACE] = str(folder.resolve())
    uvicorn.run("truthset.api.app:create_app_from_env", factory=True, host=host, port=port,
                log_level="warning", access_log=False)
