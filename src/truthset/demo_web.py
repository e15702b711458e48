"""The demo in the browser (``truthset demo --serve``): sign-ins and work left to do.

:func:`demo_logins` gives one demo user of each role a fresh random password (printed once by
the command, stored only as an argon2id hash; the change is audited with the hash redacted) and
makes every demo user a member of the demo project in their own role, so the web application
shows each of them the pages of that role. Nothing about the simulated reads changes.

:func:`add_browser_projects` adds two small projects on pydicom's example DICOM images (CT, MR,
JPEG 2000; de-identified on import), both run by the workflow with two blinded readers: in
``lesions`` (boxes and masks) ``ana`` and ``ben`` have already drawn boxes on the CT through the
queue and disagree, so the CT waits for the adjudicator (``sam``) and the other two images wait
for a newcomer to draw; in ``findings`` nothing is labelled yet, so a newcomer walks an item
through two blinded reads and an adjudication.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from truthset.auth.memberships import add_member, roles_in
from truthset.auth.passwords import hash_password
from truthset.domain.roles import Role
from truthset.store.models import Item, User
from truthset.workflow import policies, queue
from truthset.workspace import projects, users
from truthset.workspace.medical import Source, ingest_medical
from truthset.workspace.workspace import Workspace

#: A geometric schema (boxes; masks are painted too when the guideline asks).
BOX_SCHEMA = """\
name: lung lesions
kind: box
description: Outline every lesion with a box (and paint it when the guideline asks).
classes:
  - name: nodule
    definition: Round opacity up to 30 mm.
    risk: high
  - name: mass
    definition: Opacity larger than 30 mm.
    risk: high
  - name: artefact
    definition: Not anatomy; explain in the reason.
    risk: low
"""

GUIDELINE = """\
# Marking lung lesions

- Draw a **box** tight around each lesion.
- Paint the lesion with the **brush** when its edge is clear.
- When torn between *nodule* and *mass*, measure: over 30 mm is a mass.
"""

#: A classification schema the workflow runs.
FINDINGS_SCHEMA = """\
name: finding
kind: classification
mode: single
description: The main finding on the image.
classes:
  - name: normal
    definition: Nothing to report.
    risk: low
  - name: nodule
    definition: Round opacity up to 30 mm.
    risk: high
  - name: mass
    definition: Opacity over 30 mm.
    risk: high
"""

#: Two blinded readers; any disagreement goes to a tier-3 adjudicator.
CONSENSUS_POLICY = """\
policy:
  workflow: consensus
  method: mv
  k: 2
  min_agreement: 1.0
  target: 0.9
"""

#: Two blinded readers draw boxes; a mean matched F1 between them under 0.8 (boxes matching at
#: IoU >= 0.5, classes equal) goes to a tier-3 adjudicator. A finding enters the consensus
#: only when both readers saw it (the others are shown as minority findings).
LESIONS_POLICY = """\
policy:
  workflow: consensus
  k: 2
  iou_threshold: 0.5
  min_support: 1.0
  target_f1: 0.8
"""

#: What ``ana`` and ``ben`` drew on the CT of ``lesions`` (COCO boxes in pixels of the 128 x 128
#: image): both a nodule in the same place, and only ben a mass, so they disagree (matched F1
#: 0.67) and the CT waits for the adjudicator.
LESION_READS: dict[str, list[dict[str, object]]] = {
    "ana": [{"type": "box", "label": "nodule", "frame": 0, "bbox": [46.0, 56.0, 14.0, 13.0]}],
    "ben": [{"type": "box", "label": "nodule", "frame": 0, "bbox": [47.0, 55.0, 15.0, 14.0]},
            {"type": "box", "label": "mass", "frame": 0, "bbox": [70.0, 28.0, 30.0, 26.0]}],
}

#: One reader, every read reviewed by a tier-2 reader.
REVIEW_POLICY = """\
policy:
  workflow: single_review
  review_rate: {low: 1.0, medium: 1.0, high: 1.0}
"""


#: One sign-in per role: user name, role, tier, display name (made when the demo lacks them).
DEMO_ACCOUNTS: tuple[tuple[str, str, int, str], ...] = (
    ("ana", "annotator", 1, "Reader Ana"),
    ("ben", "annotator", 1, "Reader Ben"),
    ("rita", "reviewer", 2, "Rita"),
    ("sam", "adjudicator", 3, "Sam"),
    ("max", "manager", 1, "Max"),
    ("audrey", "auditor", 1, "Audrey Auditor"),
)


@dataclass(frozen=True)
class DemoLogin:
    """A demo account the browser can sign in with."""

    username: str
    role: str
    password: str


def demo_logins(workspace: Workspace, project_key: str, *, actor: str = "demo") -> list[DemoLogin]:
    """Give each :data:`DEMO_ACCOUNTS` user a fresh password; return the sign-ins.

    Every active non-admin user becomes a member of ``project_key`` in their global role (the
    roles they already had there stay), so project pages list the right people.
    """
    logins: list[DemoLogin] = []
    with workspace.unit(actor) as session:
        project = projects.get_project(session, project_key)
        for name, role, tier, display in DEMO_ACCOUNTS:
            user = session.scalar(select(User).where(User.username == name))
            if user is None:
                user = users.add_user(session, username=name, role=role, tier=tier,
                                      display_name=display)
            password = secrets.token_urlsafe(12)
            user.password_hash = hash_password(password)
            logins.append(DemoLogin(name, user.role, password))
        for user in session.scalars(select(User).where(User.active.is_(True))
                                    .order_by(User.id)):
            if user.role in (Role.ADMIN.value, Role.SERVICE.value):
                continue
            if Role(user.role) not in roles_in(session, user.id, project.id):
                add_member(session, project, user, user.role)
    return logins


#: The example DICOM files (from pydicom) the browser projects use.
EXAMPLE_IMAGES = ("ct", "mr", "jpeg2k")


def add_browser_projects(workspace: Workspace, *, actor: str = "demo") -> list[str]:
    """Add the ``lesions`` and ``findings`` projects (see the module docstring) with every
    :data:`DEMO_ACCOUNTS` user as a member in their role, and :data:`LESION_READS` read
    through the queue; return their keys."""
    import pydicom.examples

    files = [Path(str(pydicom.examples.get_path(name))) for name in EXAMPLE_IMAGES]
    made = []
    with workspace.unit(actor) as session:
        accounts = []
        for name, role, tier, display in DEMO_ACCOUNTS:
            user = session.scalar(select(User).where(User.username == name))
            if user is None:
                user = users.add_user(session, username=name, role=role, tier=tier,
                                      display_name=display)
            accounts.append((user, role))
        for key, name, schema, policy in (
                ("lesions", "Lung lesions: boxes and masks (demo)", BOX_SCHEMA, LESIONS_POLICY),
                ("findings", "Main finding, two readers + adjudication (demo)", FINDINGS_SCHEMA,
                 CONSENSUS_POLICY)):
            project = projects.create_project(session, key=key, name=name, schema_text=schema,
                                              schema_source="demo", guideline_text=GUIDELINE)
            for user, role in accounts:
                add_member(session, project, user, role)
            ingest_medical(session, workspace.blobs, workspace.vault, project,
                           [Source(name=f.name, data=f.read_bytes()) for f in files])
            policies.set_policy(session, project, policy, source="demo policy")
            made.append(key)
        queue.enqueue(session, projects.get_project(session, "findings"), None)
        lesions = projects.get_project(session, "lesions")
        ct = session.scalar(select(Item.external_id).where(Item.project_id == lesions.id)
                            .order_by(Item.id).limit(1))
        queue.enqueue(session, lesions, [str(ct)])  # the CT first: the demo readers read it
    for reader, objects in LESION_READS.items():
        with workspace.unit(reader) as session:
            project = projects.get_project(session, "lesions")
            user = users.get_user(session, reader)
            task = queue.next_task(session, project, user).task
            if task is None or task.external_id != ct:
                raise RuntimeError(f"the demo reader {reader} was not given the CT of lesions")
            queue.submit(session, project, user, task.task_id, {"objects": objects},
                         time_spent_s=40.0)
    with workspace.unit(actor) as session:
        queue.enqueue(session, projects.get_project(session, "lesions"), None)  # the others
    return made
