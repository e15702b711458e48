"""``truthset release``: create, list, show, verify, rebuild, write out, diff, sign and export
releases."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from truthset.cli.app import EXIT_FAILED, app, console, err_console, handle_errors
from truthset.cli.context import ActorOption, WorkspaceOption, actor_name, open_workspace
from truthset.domain.errors import InputError
from truthset.release import diff as release_diff
from truthset.release import service
from truthset.release.manifest import VerifyReport, verify_folder
from truthset.workspace import projects

release_app = typer.Typer(help="Freeze, sign, verify, diff and export dataset releases.",
                          no_args_is_help=True)
app.add_typer(release_app, name="release")

ProjectArg = Annotated[str, typer.Argument(help="Project key.")]
NameArg = Annotated[str, typer.Argument(help="Release name, e.g. v1.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, raw in enumerate(values, start=1):
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected KEY=VALUE, got {raw!r}", source=f"--{what}",
                             location=f"value {k}")
        out[key.strip()] = value.strip()
    return out


def _exclusions(values: list[str], file: Path | None) -> dict[str, str]:
    out = _pairs(values, "exclude")
    if file is not None:
        import pandas as pd

        try:
            frame = pd.read_csv(file, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the exclusion list: {exc}", source=str(file)) from exc
        missing = {"item", "reason"} - set(frame.columns)
        if missing:
            raise InputError("the exclusion list needs columns item and reason",
                             source=str(file), field=", ".join(sorted(missing)))
        for row, (item, reason) in enumerate(zip(frame["item"], frame["reason"], strict=True),
                                             start=2):
            if not item.strip():
                raise InputError("empty item id", source=str(file), location=f"row {row}",
                                 field="item")
            out[item.strip()] = reason
    return out


def _fractions(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    pairs = _pairs([p for p in text.split(",") if p.strip()], "splits")
    try:
        return {k: float(v) for k, v in pairs.items()}
    except ValueError:
        raise InputError("split shares must be numbers, e.g. train=0.7,validation=0.15,"
                         "test=0.15", source="--splits") from None


def _identifiers(path: Path | None) -> list[tuple[str, str]]:
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the identifier list: {exc}", source=str(path)) from exc
    return [("listed", line.strip()) for line in lines if line.strip()]


@release_app.command("create")
@handle_errors
def create_cmd(
    project: ProjectArg,
    name: NameArg,
    exclude: Annotated[list[str], typer.Option(
        "--exclude", help="ITEM=REASON: leave an item out on purpose (repeatable).")] = [],  # noqa: B006
    exclude_file: Annotated[Path | None, typer.Option(
        help="CSV with columns item, reason: items to leave out.")] = None,
    exclude_unresolved: Annotated[str | None, typer.Option(
        help="Leave every unresolved item out with this reason (otherwise they refuse the "
             "release).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the patient-level splits.")] = 0,
    splits: Annotated[str | None, typer.Option(
        help="Split shares, e.g. train=0.7,validation=0.15,test=0.15.")] = None,
    parent: Annotated[str | None, typer.Option(
        help="Release to diff against (default: the latest).")] = None,
    limitation: Annotated[list[str], typer.Option(
        "--limitation", help="A known limitation for the datasheet (repeatable).")] = [],  # noqa: B006
    max_adjudicated_share: Annotated[float, typer.Option(
        help="Separation of duties: an approver may have adjudicated at most this share.")
    ] = service.DEFAULT_MAX_ADJUDICATED_SHARE,
    identifiers: Annotated[Path | None, typer.Option(
        help="File of further identifiers (one a line) that no release file may contain.")
    ] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write the release folder here.")] = None,
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Freeze the project's final labels into a new, immutable release."""
    who = actor_name(actor)
    excluded = _exclusions(exclude, exclude_file)
    shares = _fractions(splits)
    extra = _identifiers(identifiers)
    with open_workspace(workspace) as ws:
        with ws.unit(who) as s:
            proj = projects.get_project(s, project)
            release = service.create_release(
                s, proj, ws.blobs, name=name, actor=who, exclude=excluded,
                exclude_unresolved=exclude_unresolved, seed=seed, fractions=shares,
                parent=parent, limitations=limitation,
                max_adjudicated_share=max_adjudicated_share,
                identifiers=service.vault_identifiers(ws.vault, proj.key) + extra)
            items = service.release_items(s, release)
        n_in = sum(1 for i in items if i.included)
        console.print(f"Created release [bold]{release.name}[/] of {project}: {n_in} items, "
                      f"{len(items) - n_in} excluded")
        console.print(f"  manifest sha256 {release.manifest_sha256}")
        console.print(f"  merkle root     {release.merkle_root}")
        console.print("  status          created (not final until signed: truthset release "
                      f"sign {project} {release.name} --as USER --meaning ...)")
        if out is not None:
            with ws.unit(who) as s:
                proj = projects.get_project(s, project)
                folder = service.write_folder(s, ws.blobs, service.get_release(s, proj, name),
                                              out)
            console.print(f"  written to      {folder.resolve()}")


@release_app.command("list")
@handle_errors
def list_cmd(project: ProjectArg, workspace: WorkspaceOption = None) -> None:
    """List a project's releases."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        proj = projects.get_project(s, project)
        table = Table("name", "status", "created", "by", "manifest sha256", "signatures",
                      title=f"Releases of {project}")
        for r in service.list_releases(s, proj):
            sigs = ", ".join(f"{g.printed_name} ({g.meaning})" for g in service.signatures(s, r))
            table.add_row(r.name, r.status, str(r.created_at)[:19], r.created_by,
                          r.manifest_sha256[:16] + "…", sigs or "—")
        console.print(table)


@release_app.command("write")
@handle_errors
def write_cmd(project: ProjectArg, name: NameArg,
              folder: Annotated[Path, typer.Argument(help="Empty folder to write into.")],
              workspace: WorkspaceOption = None, actor: ActorOption = None) -> None:
    """Write a stored release (files, manifest, signatures) into a folder (audited)."""
    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        proj = projects.get_project(s, project)
        out = service.write_folder(s, ws.blobs, service.get_release(s, proj, name), folder)
    console.print(f"Wrote release {name} to {out.resolve()}")


def _print_report(report: VerifyReport) -> None:
    for label, names in (("changed", report.changed), ("missing", report.missing),
                         ("extra", report.extra)):
        for n in names:
            console.print(f"  [red]{label}[/]: {n}")
    for p in report.problems:
        console.print(f"  [red]problem[/]: {p}")
    for sig in report.signatures:
        mark = "[green]ok[/]" if sig.ok else f"[red]invalid[/]: {sig.problem}"
        console.print(f"  signature {sig.file}: {sig.printed_name} — {sig.meaning!r} at "
                      f"{sig.signed_at} ({sig.key}): {mark}")


@release_app.command("verify")
@handle_errors
def verify_cmd(folder: Annotated[Path, typer.Argument(help="Release folder.")],
               as_json: JsonOption = False,
               trusted_keys: Annotated[Path | None, typer.Option(
                   "--trusted-keys", help="JSON {signer: [key id, ...]} of approvers' keys "
                   "obtained out of band; other keys are refused.")] = None) -> None:
    """Check a release folder offline: every file against the manifest, the Merkle root, and
    every signature (Ed25519, or a legacy binding without key). Exit code 1 when anything is
    wrong."""
    if not folder.is_dir():
        raise InputError("not a folder", source=str(folder))
    trusted = None
    if trusted_keys is not None:
        try:
            raw = json.loads(trusted_keys.read_text())
            trusted = {str(k): [str(i) for i in v] for k, v in raw.items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise InputError(f"not a JSON object of signer -> key ids: {exc}",
                             field="trusted_keys", source=str(trusted_keys)) from exc
    report = verify_folder(folder, trusted)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        verdict = "[green]verified[/]" if report.ok else "[red]FAILED[/]"
        console.print(f"Release {report.release} in {folder}: {verdict} ({report.n_files} "
                      f"files, manifest sha256 {report.manifest_sha256}, merkle root "
                      f"{report.merkle_root})")
        _print_report(report)
        if not report.signatures:
            console.print("  no signature: the release is not final")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@release_app.command("rebuild")
@handle_errors
def rebuild_cmd(project: ProjectArg, name: NameArg,
                workspace: WorkspaceOption = None) -> None:
    """Render the release again from the database and compare with its stored files, byte for
    byte. Exit code 1 when they differ."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        proj = projects.get_project(s, project)
        report = service.rebuild(s, ws.blobs, service.get_release(s, proj, name))
    if report.identical:
        console.print(f"Release {name}: rebuilt from the database, byte-identical")
        return
    for n in report.differing:
        console.print(f"  [red]differs[/]: {n}")
    for n in report.missing_blobs:
        console.print(f"  [red]blob missing or altered[/]: {n}")
    raise typer.Exit(EXIT_FAILED)


@release_app.command("diff")
@handle_errors
def diff_cmd(project: ProjectArg,
             old: Annotated[str, typer.Argument(help="The earlier release.")],
             new: Annotated[str, typer.Argument(help="The later release.")],
             as_json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """What changed between two releases: items, labels (with reason and audit event), rule
    versions."""
    with open_workspace(workspace) as ws, ws.sessions() as s:
        proj = projects.get_project(s, project)
        result = release_diff.diff_releases(s, service.get_release(s, proj, old),
                                            service.get_release(s, proj, new))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(release_diff.diff_text(result))


@release_app.command("sign")
@handle_errors
def sign_cmd(
    project: ProjectArg,
    name: NameArg,
    signer: Annotated[str, typer.Option("--as", help="Your user name.")],
    meaning: Annotated[str, typer.Option(
        help="What the signature means, e.g. 'approved for training'.")],
    password_stdin: Annotated[bool, typer.Option(
        help="Read the password from standard input instead of prompting.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Sign a release: re-enter your password; the signature (printed name, UTC time,
    meaning) is bound to the release's manifest."""
    password = (sys.stdin.readline().rstrip("\n") if password_stdin
                else typer.prompt("Password", hide_input=True))
    with open_workspace(workspace) as ws:
        with ws.unit(signer) as s:
            proj = projects.get_project(s, project)
            release = service.get_release(s, proj, name)
            outcome = service.sign_release(
                s, ws.blobs, release, username=signer, password=password, meaning=meaning,
                identifiers=service.vault_identifiers(ws.vault, proj.key))
        if outcome.error is not None:
            raise outcome.error
        sig = outcome.signature
        assert sig is not None
    console.print(f"Signed release [bold]{name}[/]: {sig.printed_name}, {sig.meaning!r}, "
                  f"{sig.signed_at}")
    console.print(f"  bound to manifest sha256 {sig.manifest_sha256}")


@release_app.command("export")
@handle_errors
def export_cmd(
    project: ProjectArg,
    name: NameArg,
    folder: Annotated[Path, typer.Argument(help="Empty folder to write the export into.")],
    fmt: Annotated[list[str], typer.Option(
        "--format", help="csv, parquet, coco, nifti, dicom-seg, dicom-sr (repeatable; "
                         "default csv and parquet).")
    ] = [],  # noqa: B006
    split: Annotated[list[str], typer.Option(
        "--split", help="Only these splits (repeatable; default all).")] = [],  # noqa: B006
    workspace: WorkspaceOption = None,
    actor: ActorOption = None,
) -> None:
    """Export a release's labels with provenance columns (CSV/Parquet) and in the imaging
    formats its schema supports. Access to the test split is audited."""
    from truthset.release import export

    with open_workspace(workspace) as ws, ws.unit(actor_name(actor)) as s:
        proj = projects.get_project(s, project)
        written = export.export_release(s, service.get_release(s, proj, name),
                                        folder, formats=fmt or ["csv", "parquet"],
                                        splits=split or None, blobs=ws.blobs)
    for path in written:
        console.print(f"  wrote {path}")
    err_console.print(f"Exported release {name} ({len(written)} files)")
