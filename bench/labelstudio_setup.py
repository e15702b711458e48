"""Prepare a Label Studio instance for ``bench_api_load.py labelstudio``: readers with API
tokens in the first organisation, and a project of image-classification tasks that each need
``k`` annotations (Label Studio's overlap: ``maximum_annotations``).

Run with Label Studio's own interpreter (a separate virtual environment, never the project's),
with the same database environment the server runs with::

    DJANGO_DB=default POSTGRE_NAME=ls_bench POSTGRE_USER=postgres POSTGRE_PASSWORD= \\
    POSTGRE_HOST=127.0.0.1 POSTGRE_PORT=5432 LABEL_STUDIO_BASE_DATA_DIR=/tmp/lsdata \\
    /tmp/lsvenv/bin/python bench/labelstudio_setup.py --readers 200 --tasks 1000 --k 3 \\
        --out /tmp/ls_setup.json

Writes ``{"project": id, "tokens": [...], "server": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="finding" toName="image" choice="single">
    <Choice value="normal"/><Choice value="nodule"/><Choice value="effusion"/>
  </Choices>
</View>"""


def main() -> None:
    """Create readers, tokens, project and tasks; write the JSON the load benchmark reads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import label_studio

    sys.path.insert(0, os.path.dirname(label_studio.__file__))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    import django

    django.setup()
    from django.db import transaction
    from jwt_auth.models import JWTSettings
    from organizations.models import Organization
    from projects.models import Project
    from rest_framework.authtoken.models import Token
    from tasks.models import Task
    from users.models import User

    with transaction.atomic():
        org = Organization.objects.order_by("id").first()
        owner = User.objects.order_by("id").first()
        assert org is not None and owner is not None, "start Label Studio once first"
        # Scripts authenticate with per-user tokens (``Authorization: Token ...``), as in
        # Label Studio's SDK examples; newer releases turn these off by default.
        jwt, _ = JWTSettings.objects.get_or_create(organization=org)
        jwt.legacy_api_tokens_enabled = True
        jwt.save()
        tokens = []
        for n in range(args.readers):
            user, _created = User.objects.get_or_create(email=f"reader{n:03d}@bench.local",
                                                 defaults={"username": f"reader{n:03d}"})
            if _created:  # hashing is slow (PBKDF2); a second run reuses the readers
                user.set_password("bench-password-123")
                user.active_organization = org
                user.save()
            if not org.has_user(user):
                org.add_user(user)
            tokens.append(Token.objects.get_or_create(user=user)[0].key)
        Project.objects.filter(title="load").delete()
        project = Project.objects.create(
            title="load", label_config=LABEL_CONFIG, created_by=owner, organization=org,
            maximum_annotations=args.k, overlap_cohort_percentage=100, show_skip_button=False)
        Task.objects.bulk_create([
            Task(project=project, data={"image": f"/data/case{n:06d}.png"})
            for n in range(args.tasks)])
    project.update_tasks_states(maximum_annotations_changed=True,
                                overlap_cohort_percentage_changed=True,
                                tasks_number_changed=True)
    args.out.write_text(json.dumps({"project": project.id, "tokens": tokens,
                                    "server": f"label-studio {label_studio.__version__}"}))
    print(f"project {project.id}: {args.tasks} tasks x {args.k}, {len(tokens)} readers")


if __name__ == "__main__":
    main()
