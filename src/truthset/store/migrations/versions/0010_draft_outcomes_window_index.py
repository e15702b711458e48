"""draft_outcomes: index the acceptance window (project, class, id)

The window of a class is its latest outcomes (``ORDER BY id DESC LIMIT window``), asked on every
read of a drafted item; with ``id`` in the index that is a backward index scan that stops after
``window`` rows instead of sorting every outcome of the class.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Replace the (project, class) index with (project, class, id)."""
    op.drop_index("ix_draft_outcomes_class", table_name="draft_outcomes")
    op.create_index("ix_draft_outcomes_class", "draft_outcomes",
                    ["project_id", "class_name", "id"])


def downgrade() -> None:
    """Back to the (project, class) index."""
    op.drop_index("ix_draft_outcomes_class", table_name="draft_outcomes")
    op.create_index("ix_draft_outcomes_class", "draft_outcomes", ["project_id", "class_name"])
