"""Workflow commands: policies, known answers, the task queue, reviews, adjudications, reader
statistics, escalations, disagreement, cost, and ``truthset simulate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from truthset.cli.app import app, console, err_console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.domain.errors import InputError
from truthset.domain.policy import parse_policy
from truthset.domain.schema import RiskLevel
from truthset.io.tables import read_table
from truthset.jobs.handlers import overdue_check_status
from truthset.workflow import analysis, escalations, policies, queue
from truthset.workflow import readers as rd
from truthset.workflow.simulate import SimulatedReaders, parse_readers, run_policy
from truthset.workspace import projects, users

policy_app = typer.Typer(help="Set and show a project's workflow policy.", no_args_is_help=True)
gold_app = typer.Typer(help="Known-answer items: gold and calibration.", no_args_is_help=True)
task_app = typer.Typer(help="The task queue: queue items, take and submit tasks.",
                       no_args_is_help=True)
readers_app = typer.Typer(help="Reader statistics, feedback and reinstatement.",
                          no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(gold_app, name="gold")
app.add_typer(task_app, name="task")
app.add_typer(readers_app, name="readers")

Project = Annotated[str, typer.Argument(help="Project key.")]
Reader = Annotated[str, typer.Option("--as", help="The reader acting (user name).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(frame: pd.DataFrame, title: str, *, index: bool = False) -> Table:
    data = frame.reset_index() if index else frame
    table = Table(*[str(c) for c in data.columns], title=title)
    for row in data.itertuples(index=False):
        table.add_row(*[_fmt(v) for v in row])
    return table


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what}: {exc}", source=str(path)) from exc


# -- policy and known answers ------------------------------------------------------------------
@policy_app.command("set")
@handle_errors
def policy_set(project: Project, file: Annotated[Path, typer.Argument(help="Policy YAML.")],
               workspace: WorkspaceOption = None, actor: ActorOption = None) -> None:
    """Validate a policy against the project and its readers and store it as a new version."""
    text = _read(file, "policy")
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        row = policies.set_policy(s, projects.get_project(s, project), text, source=str(file))
        console.print(f"policy version {row.version} of {project!r}: "
                      f"{row.definition['workflow']} ({row.definition['name']})")
        for caution in parse_policy(text).cautions():
            err_console.print(f"[yellow]caution:[/yellow] {escape(caution)}")


@policy_app.command("show")
@handle_errors
def policy_show(project: Project, workspace: WorkspaceOption = None) -> None:
    """Print the policy in force (all fields, defaults filled in)."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        current = policies.current_policy(s, projects.get_project(s, project))
    console.print_json(json.dumps({"version": current.version, **current.policy.to_dict()}))
    for caution in current.policy.cautions():
        err_console.print(f"[yellow]caution:[/yellow] {escape(caution)}")


@gold_app.command("add")
@handle_errors
def gold_add(
    project: Project,
    file: Annotated[Path, typer.Argument(help="CSV/TSV/Parquet with columns item and label "
                                              "(a class) or payload (JSON: objects, labels).")],
    purpose: Annotated[str, typer.Option(help="gold (mixed into queues) or calibration.")] = (
        "gold"),
    workspace: WorkspaceOption = None, actor: ActorOption = None,
) -> None:
    """Mark items as known-answer items (their reference answers come from FILE: a class per
    item, or a whole payload as JSON for multi-label, box, polygon and mask schemas)."""
    table = read_table(file)
    if "item" not in table.columns:
        raise InputError("missing column 'item'", source=str(file), field="item")
    if "label" not in table.columns and "payload" not in table.columns:
        raise InputError("missing column 'label' (a class) or 'payload' (JSON)",
                         source=str(file), field="label")
    answers: dict[str, str | dict[str, Any]] = {}
    for row, (item, entry) in enumerate(zip(
            table["item"].astype(str),
            table["payload" if "payload" in table.columns else "label"], strict=True)):
        if "payload" not in table.columns:
            answers[item] = str(entry)
            continue
        try:
            value = json.loads(str(entry))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", source=str(file),
                             location=f"row {row + 1}", field="payload") from None
        if not isinstance(value, dict):
            raise InputError("a payload is a JSON object", source=str(file),
                             location=f"row {row + 1}", field="payload")
        answers[item] = value
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        rows = policies.add_gold(s, projects.get_project(s, project), answers, purpose=purpose,
                                 source=str(file))
    console.print(f"{len(rows)} {purpose} items added to {project!r}")


# -- the queue ---------------------------------------------------------------------------------
@task_app.command("enqueue")
@handle_errors
def task_enqueue(
    project: Project,
    item: Annotated[list[str] | None, typer.Option("--item", help="Only these items.")] = None,
    workspace: WorkspaceOption = None, actor: ActorOption = None,
) -> None:
    """Put items into the workflow (every item not yet queued, or those named)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        n = queue.enqueue(s, projects.get_project(s, project), item)
    console.print(f"{n} items queued in {project!r}")


@task_app.command("status")
@handle_errors
def task_status(project: Project, workspace: WorkspaceOption = None) -> None:
    """Slots per stage and status."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        frame = queue.queue_summary(s, projects.get_project(s, project))
    console.print(_table(frame, f"Tasks of {project}"))


@task_app.command("release-expired")
@handle_errors
def task_release_expired(project: Project, workspace: WorkspaceOption = None,
                         actor: ActorOption = None) -> None:
    """Return every task whose lease ran out to the pool."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        n = queue.release_expired(s, projects.get_project(s, project))
    console.print(f"{n} expired leases returned to the pool")


@task_app.command("reprioritise")
@handle_errors
def task_reprioritise(project: Project, workspace: WorkspaceOption = None,
                      actor: ActorOption = None) -> None:
    """Recompute the priority of open read tasks (after a new model run; the policy's
    active_learning term included)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        n = queue.reprioritise(s, projects.get_project(s, project))
    console.print(f"{n} open read tasks of {project!r} changed priority")


@task_app.command("next")
@handle_errors
def task_next(project: Project, reader: Reader, as_json: AsJson = False,
              workspace: WorkspaceOption = None) -> None:
    """Take your next task (or get back the one you hold). Exit code 0 with "no task" when
    nothing waits for you."""
    with open_workspace(workspace) as ws, ws.unit(reader) as s:
        result = queue.next_task(s, projects.get_project(s, project), users.get_user(s, reader))
    if as_json:
        console.print_json(json.dumps({"task": result.task.to_dict() if result.task else None,
                                       "reason": result.reason}))
        return
    if result.task is None:
        console.print(f"no task: {result.reason}")
        return
    view = result.task.to_dict()
    console.print(f"task {view['task_id']}: {view['stage']} item {view['item_id']} "
                  f"({view['external_id']}), lease until {view['lease_expires_at']}")
    if view["context"]:
        console.print_json(json.dumps(view["context"]))


def _done(result: queue.SubmitResult) -> None:
    console.print(f"task {result.task_id} done; item {result.item_status} ({result.next_step})")


@task_app.command("submit")
@handle_errors
def task_submit(
    project: Project, task_id: Annotated[int, typer.Argument(help="Task id.")], reader: Reader,
    label: Annotated[str | None, typer.Option(help="Class (single/ordinal schemas).")] = None,
    payload: PayloadOption = None,
    time_spent: Annotated[float | None, typer.Option(help="Seconds spent.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Submit your label for an annotate or calibration task you hold."""
    body = _payload(label, payload)
    with open_workspace(workspace) as ws, queue.audited_refusals(ws, reader), \
            ws.unit(reader) as s:
        result = queue.submit(s, projects.get_project(s, project), users.get_user(s, reader),
                              task_id, body, time_spent_s=time_spent)
    _done(result)


def _payload_value(text: str) -> dict[str, Any]:
    """A payload given as JSON text, or as the path of a file holding it."""
    source = None
    raw = text
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise InputError("--payload is neither a JSON object nor a readable file "
                             f"({text[:60]!r})", field="payload")
        raw, source = _read(path, "payload"), str(path)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", source=source,
                         location=f"line {exc.lineno}", field="payload") from None
    if not isinstance(value, dict):
        raise InputError('a payload is a JSON object, e.g. {"objects": [...]} or '
                         '{"labels": [...]}', source=source, field="payload")
    return value


def _optional_payload(label: str | None, payload: str | None) -> dict[str, Any] | None:
    """``--label`` as ``{"label": ...}``, or ``--payload`` (JSON or a file); not both."""
    if label is not None and payload is not None:
        raise InputError("give --label or --payload, not both", field="payload")
    if payload is not None:
        return _payload_value(payload)
    return None if label is None else {"label": label}


def _payload(label: str | None, payload: str | None) -> Any:
    body = _optional_payload(label, payload)
    if body is None:
        raise InputError("give --label or --payload", field="label")
    return body


#: ``--payload``: the whole payload, for multi-label and geometric schemas.
PayloadOption = Annotated[str | None, typer.Option(
    "--payload", help='Full payload as JSON or a JSON file: {"objects": [...]} (box, polygon, '
                      'mask; see docs/api.md) or {"labels": [...]} (multi-label).')]


@app.command("review")
@handle_errors
def review_cmd(
    project: Project, task_id: Annotated[int, typer.Argument(help="Review task id.")],
    reader: Reader,
    decision: Annotated[str, typer.Option(help="accept, correct, reject or escalate.")],
    label: Annotated[str | None, typer.Option(help="Corrected class (correct).")] = None,
    payload: PayloadOption = None,
    comment: Annotated[str, typer.Option(help="Why (required for reject/escalate).")] = "",
    time_spent: Annotated[float | None, typer.Option(help="Seconds spent.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Decide a review task you hold; a correction gives the corrected class (--label) or
    the corrected payload (--payload: objects or labels, as JSON or a file)."""
    body = _optional_payload(label, payload)
    with open_workspace(workspace) as ws, queue.audited_refusals(ws, reader), \
            ws.unit(reader) as s:
        result = queue.review(s, projects.get_project(s, project), users.get_user(s, reader),
                              task_id, decision, payload=body, comment=comment,
                              time_spent_s=time_spent)
    _done(result)


@app.command("adjudicate")
@handle_errors
def adjudicate_cmd(
    project: Project, task_id: Annotated[int, typer.Argument(help="Adjudication task id.")],
    reader: Reader,
    reason: Annotated[str, typer.Option(help="Why (required).")],
    label: Annotated[str | None, typer.Option(help="The final class (single/ordinal "
                                                   "schemas).")] = None,
    payload: PayloadOption = None,
    time_spent: Annotated[float | None, typer.Option(help="Seconds spent.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Give the final label of an escalated item you hold, with the reason: a class
    (--label) or the final payload (--payload: objects or labels, as JSON or a file)."""
    body = _payload(label, payload)
    with open_workspace(workspace) as ws, queue.audited_refusals(ws, reader), \
            ws.unit(reader) as s:
        result = queue.adjudicate(s, projects.get_project(s, project),
                                  users.get_user(s, reader), task_id, body,
                                  reason=reason, time_spent_s=time_spent)
    _done(result)


# -- readers -----------------------------------------------------------------------------------
@readers_app.command("stats")
@handle_errors
def readers_stats(project: Project,
                  reader: Annotated[str | None, typer.Option(
                      "--reader", help="One reader in detail.")] = None,
                  as_json: AsJson = False, workspace: WorkspaceOption = None) -> None:
    """Readers against known answers: accuracy, calibration, suspensions (one reader: per-class
    sensitivity/specificity, confusion matrix, trend)."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        p = projects.get_project(s, project)
        if reader is None:
            frame = rd.all_reader_stats(s, p)
            if as_json:
                console.print_json(frame.to_json(orient="records"))
            else:
                console.print(_table(frame, f"Readers of {project} (gold and calibration)"))
            return
        stats = rd.reader_stats(s, p, users.get_user(s, reader))
    _print_stats(stats, as_json)


def _print_stats(stats: rd.ReaderStats, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(stats.to_dict()))
        return
    single = stats.scoring.get("schema", "single") == "single"
    console.print(f"[bold]{stats.reader}[/]: {stats.n_gold} known-answer reads, "
                  f"{'accuracy' if single else 'score'} {_fmt(stats.accuracy)}, calibration "
                  f"{stats.calibration or '—'}")
    console.print(_table(stats.per_class, "Per class", index=True))
    if not single:
        for name, meaning in stats.scoring.items():
            if name != "schema":
                console.print(f"  {name}: {meaning}", highlight=False)
    if not stats.confusion.empty:
        console.print(_table(stats.confusion, "Confusion (rows: reference, columns: said)",
                             index=True))
    console.print(_table(stats.trend, "Trend (blocks of consecutive reads)"))
    for cls, message in stats.suspensions.items():
        console.print(f"[red]suspended[/] {cls}: {message}")


@readers_app.command("feedback")
@handle_errors
def readers_feedback(project: Project, reader: Reader, as_json: AsJson = False,
                     workspace: WorkspaceOption = None) -> None:
    """Your own statistics and the messages addressed to you."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        feedback = rd.reader_feedback(s, projects.get_project(s, project),
                                      users.get_user(s, reader))
    _print_stats(feedback.stats, as_json)
    if not as_json:
        for message in feedback.messages:
            console.print(f"- {message}")


@readers_app.command("reinstate")
@handle_errors
def readers_reinstate(
    project: Project, reader: Annotated[str, typer.Argument(help="User name.")],
    note: Annotated[str, typer.Option(help="Why (required).")],
    class_name: Annotated[str, typer.Option("--class", help="The suspended class (empty: "
                                                            "reopen calibration).")] = "",
    workspace: WorkspaceOption = None, actor: ActorOption = None,
) -> None:
    """Lift a reader's suspension for a class, or pass their calibration."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        row = rd.reinstate(s, projects.get_project(s, project), users.get_user(s, reader),
                           class_name, note)
    console.print(f"{reader}: {row.class_name or 'calibration'} {row.status}")


# -- escalations, disagreement, cost -----------------------------------------------------------
@app.command("escalations")
@handle_errors
def escalations_cmd(
    project: Project,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only those past due.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Record the overdue report in the "
                                                          "audit log.")] = False,
    raise_overdue: Annotated[bool, typer.Option("--raise-overdue", help="Send overdue "
                                                "escalations one tier up first.")] = False,
    as_json: AsJson = False, workspace: WorkspaceOption = None, actor: ActorOption = None,
) -> None:
    """Escalated items with their deadlines (overdue first in the adjudicators' queues)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        p = projects.get_project(s, project)
        if raise_overdue:
            raised = escalations.raise_overdue(s, p)
            err_console.print(f"{len(raised)} overdue escalations raised a tier")
        if report:
            frame = escalations.report_overdue(s, p)
        else:
            frame = escalations.list_escalations(s, p, status=None if all_ else "open",
                                                 overdue_only=overdue)
        check = overdue_check_status(s, p, float(ws.config.escalation_check_minutes))
    if as_json:
        console.print_json(frame.to_json(orient="records", date_format="iso"))
        return
    shown = frame.drop(columns=["item_id", "created_at"], errors="ignore")
    console.print(_table(shown, f"Escalations of {project}" + (" (overdue, reported)"
                                                              if report else "")))
    console.print(_check_line(check))


def _check_line(check: dict[str, Any]) -> str:
    """The periodic overdue check in one line: how often, when it last ran, what it did, when
    it is next due, and a warning when it is off or late
    (:func:`truthset.jobs.handlers.overdue_check_status`)."""
    period = float(check["period_minutes"])
    every = f"every {period:g} min" if period > 0 else "off (escalation_check_minutes: 0)"
    if not check.get("last_started_at"):
        line = f"Overdue check: {every}; it has not run yet."
    else:
        line = (f"Overdue check: {every}; last ran {check['last_started_at']} by "
                f"{check['runner']} ({check['status']}), raised {check['raised']} here.")
    if check.get("next_due_at"):
        line += f" Next due {check['next_due_at']}."
    if check["late"]:
        line += (" Late: more than two periods without a run; no truthset serve or worker is "
                 "keeping time.")
    elif not check["enabled"]:
        line += " Overdue escalations are raised only by hand (--raise-overdue)."
    return line


@app.command("disagreement")
@handle_errors
def disagreement_cmd(project: Project, top: Annotated[int, typer.Option(
        help="Candidate guideline examples to list.")] = 10, as_json: AsJson = False,
        workspace: WorkspaceOption = None) -> None:
    """Disagreement per class and per reader pair, and the items readers split on most (box,
    polygon and mask projects: matched F1 or Dice per class)."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        p = projects.get_project(s, project)
        by_class = analysis.disagreement_by_class(s, p)
        pairs = analysis.disagreement_by_pair(s, p)
        candidates = analysis.guideline_candidates(s, p, n=top)
    if as_json:
        console.print_json(json.dumps({
            name: json.loads(frame.to_json(orient="records"))
            for name, frame in (("by_class", by_class), ("by_pair", pairs),
                                ("candidates", candidates))}))
        return
    console.print(_table(by_class, "Per class"))
    console.print(_table(pairs, "Per reader pair (least agreeing first)"))
    console.print(_table(candidates, "Candidate guideline examples"))


@app.command("requeue")
@handle_errors
def requeue_cmd(
    project: Project,
    class_name: Annotated[list[str] | None, typer.Option("--class", help="Affected class.")] = (
        None),
    item: Annotated[list[str] | None, typer.Option("--item", help="Affected item.")] = None,
    workspace: WorkspaceOption = None, actor: ActorOption = None,
) -> None:
    """After a guideline change: read the affected items again."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        done = analysis.requeue_for_guideline(s, projects.get_project(s, project),
                                              classes=class_name or (), items=item or ())
    console.print(f"{len(done)} items re-queued" + (f": {', '.join(done)}" if done else ""))


@app.command("cost")
@handle_errors
def cost_cmd(project: Project, workspace: WorkspaceOption = None) -> None:
    """Labels and reader-minutes per item and estimated accuracy, per policy and per class
    (multi-label and geometric projects: an item counts in every class present in its final
    label)."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        report = analysis.cost_report(s, projects.get_project(s, project))
    console.print(_table(report["by_policy"], "Per policy", index=True))
    if report["class_counting"] == analysis.EACH_CLASS_PRESENT:
        console.print(_table(report["by_class"], "Per class present in the final label",
                             index=True))
        console.print(f"An item counts in every class present in its final label (its objects' "
                      f"classes or its set of labels; {analysis.NO_CLASS}: none), so the class "
                      f"rows may add up to more items than the policy rows; in_other_classes: "
                      f"items of the row that count in another class too.")
    else:
        console.print(_table(report["by_class"].drop(columns="in_other_classes"),
                             "Per class (final label)", index=True))
    console.print(_table(report["known_answer"], "Known-answer reads (calibration and gold)"))


# -- simulation --------------------------------------------------------------------------------
@app.command("simulate")
@handle_errors
def simulate_cmd(
    policy: Annotated[Path, typer.Option("--policy", help="Policy YAML.")],
    items: Annotated[int, typer.Option("--items", min=1, max=1_000_000,
                                       help="Items to simulate.")] = 1000,
    readers: Annotated[str, typer.Option(
        "--readers", help="Reader pool: N:ACCURACY[@TIER] or N:beta(A,B)[@TIER], comma-"
                          "separated, e.g. '20:beta(6,2), 3:0.9@2, 2:0.95@3'.")] = (
        "20:beta(6,2), 3:0.9@2, 2:0.95@3"),
    classes: Annotated[int, typer.Option(min=2, max=100, help="Number of classes.")] = 5,
    high_risk: Annotated[int, typer.Option(help="How many classes are high-risk (the last "
                                                "ones).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Run a policy against simulated readers; print its accuracy and cost."""
    text = _read(policy, "policy")
    parsed = parse_policy(text, source=str(policy))
    if not 0 <= high_risk <= classes:
        raise InputError("--high-risk must be between 0 and --classes", field="high_risk")
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(classes)]
    truth = {f"item{k:06d}": names[int(rng.integers(classes))] for k in range(items)}
    pool = parse_readers(readers, rng)
    risks = {n: RiskLevel.HIGH if k >= classes - high_risk else RiskLevel.LOW
             for k, n in enumerate(names)}
    with err_console.status("simulating…"):
        result = run_policy(parsed, names, risks, list(truth),
                            SimulatedReaders(pool, names, truth, rng))
    if as_json:
        console.print_json(json.dumps({"policy": result.policy, "workflow": result.workflow,
                                       "readers": len(pool), **result.summary}))
        return
    console.print(f"[bold]{result.policy}[/] ({result.workflow}) on {items} items, "
                  f"{len(pool)} readers, {classes} classes")
    summary = pd.DataFrame([result.summary]).T.rename(columns={0: "value"})
    console.print(_table(summary, "Accuracy and cost", index=True))
    console.print(_table(result.per_class(), "Per true class", index=True))
