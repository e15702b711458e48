"""``truthset prelabel``: register models, draft items, track acceptance, find label errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from truthset.cli.app import app, console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.cli.jobs_cmds import follow
from truthset.domain.errors import InputError
from truthset.io.tables import read_table
from truthset.jobs import service as jobs
from truthset.prelabel import acceptance, review, service
from truthset.prelabel.adapters import describe_device
from truthset.workspace.projects import get_project
from truthset.workspace.users import get_user

prelabel_app = typer.Typer(help="AI pre-labelling: models, drafts, acceptance, label errors.",
                           no_args_is_help=True)
app.add_typer(prelabel_app, name="prelabel")

ProjectOption = Annotated[str, typer.Option("--project", "-p", help="Project key.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the model configuration: {exc}", source=str(path)) \
            from None
    if not isinstance(data, dict):
        raise InputError("the model configuration must be a mapping", source=str(path))
    return data


@prelabel_app.command("register")
@handle_errors
def register_cmd(
    name: Annotated[str, typer.Argument(help="Model name.")],
    project: ProjectOption,
    version: Annotated[str, typer.Option(help="Model version.")],
    kind: Annotated[str, typer.Option(help="onnx, http or classical.")],
    classes: Annotated[str, typer.Option(help="Classes it may draft, comma-separated.")],
    config: Annotated[Path | None, typer.Option(help="Adapter configuration (YAML/JSON).")]
    = None,
    model_file: Annotated[Path | None, typer.Option(help="The .onnx file (kind onnx).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per item before a draft is "
                                                "refused.")] = 30.0,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Register a drafting model for a project."""
    cfg = _read_config(config)
    who = actor_name(actor)
    with open_workspace(workspace) as ws, ws.unit(who) as session:
        proj = get_project(session, project)
        row = service.register_model(
            session, proj, name=name, version=version, kind=kind,
            classes=[c.strip() for c in classes.split(",") if c.strip()], config=cfg,
            timeout_s=timeout, model_file=model_file, blobs=ws.blobs, actor=who)
        console.print(f"registered [bold]{row.name} {row.version}[/] ({row.kind}, "
                      f"{row.output}) for {', '.join(row.classes)}")


@prelabel_app.command("models")
@handle_errors
def models_cmd(project: ProjectOption, workspace: WorkspaceOption = None) -> None:
    """List a project's registered models."""
    with open_workspace(workspace) as ws, ws.sessions() as session:
        table = Table("name", "version", "kind", "output", "classes", "timeout s", "active")
        for m in service.list_models(session, get_project(session, project)):
            table.add_row(m.name, m.version, m.kind, m.output, ", ".join(m.classes),
                          f"{m.timeout_s:g}", "yes" if m.active else "no")
        console.print(table)


@prelabel_app.command("retire")
@handle_errors
def retire_cmd(
    name: Annotated[str, typer.Argument(help="Model name.")],
    project: ProjectOption,
    version: Annotated[str, typer.Option(help="Model version.")],
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Stop a model from drafting (its drafts stay)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        row = service.retire_model(session, get_project(session, project), name, version)
        console.print(f"retired {row.name} {row.version}")


@prelabel_app.command("run")
@handle_errors
def run_cmd(
    project: ProjectOption,
    model: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[str | None, typer.Option(help="Model version (default: latest).")]
    = None,
    item: Annotated[list[int] | None, typer.Option(help="Only these item ids (repeatable).")]
    = None,
    background: Annotated[bool, typer.Option(help="Queue and return (worker backend).")]
    = False,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Draft the project's items with a model, as a job with progress (Ctrl-C cancels)."""
    params: dict[str, Any] = {"project": project, "model": model}
    if version:
        params["version"] = version
    if item:
        params["items"] = list(item)
    who = actor_name(actor)
    with open_workspace(workspace) as ws:
        with ws.unit(who) as session:
            proj = get_project(session, project)
            service.get_model(session, proj, model, version)
            job = jobs.enqueue(ws, session, "prelabel", params, project=proj, actor=who)
        follow(ws, job, background=background)


@prelabel_app.command("acceptance")
@handle_errors
def acceptance_cmd(project: ProjectOption, as_json: JsonOption = False,
                   workspace: WorkspaceOption = None, actor: ActorOption = None) -> None:
    """Record new draft outcomes, pause classes whose acceptance fell, and show per class."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = get_project(session, project)
        n_new, paused = acceptance.track(session, proj)
        rows = acceptance.acceptance_report(session, proj)
        policy = acceptance.acceptance_policy(proj)
    if as_json:
        console.print_json(json.dumps({"new_outcomes": n_new,
                                       "paused_now": [p.class_name for p in paused],
                                       "classes": acceptance.as_dicts(rows)}))
        return
    console.print(f"{n_new} new outcomes; threshold {policy.min_acceptance:.0%} over the last "
                  f"{policy.window} drafts")
    table = Table("class", "status", "accepted", "edited", "rejected", "mean Dice", "window",
                  "acceptance")
    for r in rows:
        table.add_row(r.class_name, r.status, str(r.accepted), str(r.edited), str(r.rejected),
                      "-" if r.mean_dice is None else f"{r.mean_dice:.3f}", str(r.window_n),
                      "-" if r.window_acceptance is None else f"{r.window_acceptance:.0%}")
    console.print(table)
    for p in paused:
        console.print(f"[yellow]drafting paused for {p.class_name}[/]: acceptance "
                      f"{p.window_acceptance:.0%}", highlight=False)


@prelabel_app.command("policy")
@handle_errors
def policy_cmd(
    project: ProjectOption,
    min_acceptance: Annotated[float | None, typer.Option(help="Pause below this share.")]
    = None,
    window: Annotated[int | None, typer.Option(help="Outcomes in the window.")] = None,
    min_decisions: Annotated[int | None, typer.Option(help="Outcomes needed to judge.")]
    = None,
    edit_tolerance: Annotated[float | None, typer.Option(
        help="Edits with Dice at least this count as accepted.")] = None,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Show or change the project's acceptance policy."""
    changes = {k: v for k, v in {"min_acceptance": min_acceptance, "window": window,
                                  "min_decisions": min_decisions,
                                  "edit_tolerance": edit_tolerance}.items() if v is not None}
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = get_project(session, project)
        policy = (acceptance.set_acceptance_policy(session, proj, **changes) if changes
                  else acceptance.acceptance_policy(proj))
    console.print_json(json.dumps(policy.__dict__))


def _decide(project: str, class_name: str, as_user: str, note: str, resume: bool,
            workspace: Path | None) -> None:
    with open_workspace(workspace) as ws, ws.unit(as_user) as session:
        proj = get_project(session, project)
        user = get_user(session, as_user)
        fn = acceptance.resume_class if resume else acceptance.pause_class
        row = fn(session, proj, class_name, manager=user, note=note)
        console.print(f"drafting of {row.class_name}: {row.status} ({row.decided_by})")


AsOption = Annotated[str, typer.Option("--as", help="The manager deciding (user name).")]
NoteOption = Annotated[str, typer.Option(help="Why (kept in the audit log).")]


@prelabel_app.command("resume")
@handle_errors
def resume_cmd(class_name: Annotated[str, typer.Argument(help="Class.")], project: ProjectOption,
               as_user: AsOption, note: NoteOption, workspace: WorkspaceOption = None) -> None:
    """A manager resumes drafting of a paused class."""
    _decide(project, class_name, as_user, note, True, workspace)


@prelabel_app.command("pause")
@handle_errors
def pause_cmd(class_name: Annotated[str, typer.Argument(help="Class.")], project: ProjectOption,
              as_user: AsOption, note: NoteOption, workspace: WorkspaceOption = None) -> None:
    """A manager pauses drafting of a class by hand."""
    _decide(project, class_name, as_user, note, False, workspace)


@prelabel_app.command("errors")
@handle_errors
def errors_cmd(
    project: ProjectOption,
    probs: Annotated[Path, typer.Option(help="Out-of-sample probabilities: item + one column "
                                             "per class (CSV/TSV/JSONL/Parquet).")],
    split: Annotated[str | None, typer.Option(help="Only items of this split "
                                                   "(attributes.split).")] = None,
    top: Annotated[int, typer.Option(help="How many to show / send.")] = 20,
    send: Annotated[bool, typer.Option(help="Open review tasks for the top ones.")] = False,
    as_json: JsonOption = False,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Rank likely label errors (confident learning + reader agreement) and noise rates."""
    table = read_table(probs)
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as session:
        proj = get_project(session, project)
        report = review.detect_label_errors(session, proj, table, split=split)
        sent = review.send_to_review(session, proj, report, top=top) if send else []
    flagged = report.issues[report.issues["is_issue"]].head(top)
    if as_json:
        console.print_json(json.dumps({
            "items": report.n_items, "split": split,
            "issues": json.loads(flagged.drop(columns="item_id").to_json(orient="records")),
            "noise": json.loads(report.noise.to_json(orient="records")),
            "sent": sum(r.task_id is not None for r in sent)}))
        return
    console.print(f"{int(report.issues['is_issue'].sum())} likely errors among "
                  f"{report.n_items} items" + (f" (split {split})" if split else ""))
    t = Table("item", "given", "suggested", "self-confidence", "agreement", "score")
    for r in flagged.itertuples():
        t.add_row(str(r.item), str(r.given), str(r.suggested), f"{r.self_confidence:.3f}",
                  "-" if r.agreement != r.agreement else f"{r.agreement:.2f}", f"{r.score:.3f}")
    console.print(t)
    n = Table("class", "n", "noise rate", "95% CI")
    for rec in report.noise.to_dict("records"):
        n.add_row(str(rec["class"]), str(rec["n"]), f"{rec['noise_rate']:.3f}",
                  f"[{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]")
    console.print(n)
    if send:
        console.print(f"sent {sum(r.task_id is not None for r in sent)} items to review")


@prelabel_app.command("device")
@handle_errors
def device_cmd() -> None:
    """Where inference can run here (ONNX Runtime providers, torch CUDA)."""
    console.print_json(json.dumps(describe_device()))
