"""index annotations.parent_id

Whether a revision is superseded (a child revision names it as parent) is asked whenever the
current reads are listed, and by the acceptance window on every read of a drafted item.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index the parent of each annotation revision."""
    op.create_index("ix_annotations_parent_id", "annotations", ["parent_id"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_annotations_parent_id", table_name="annotations")
