"""Entry point of the ``truthset`` command: imports every command module, then runs the app."""

from __future__ import annotations

# Command modules register their commands on import (order = order in --help).
from truthset.cli import (  # noqa: F401
    aggregate_cmd,
    agree_cmd,
    audit_cmds,
    demo_cmd,
    imaging_cmds,
    jobs_cmds,
    prelabel_cmds,
    release_cmds,
    serve_cmds,
    staple_cmd,
    workflow_cmds,
    workspace_cmds,
)
from truthset.cli.app import app


def main() -> None:
    """Run the ``truthset`` command line."""
    app()


if __name__ == "__main__":
    main()
