"""workflow queue: task outcomes (cost and throughput accounting)

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``task_outcomes`` and the index the task queue orders by."""
    op.create_table(
        "task_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("time_spent_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id"),
    )
    op.create_index("ix_task_outcomes_project_id", "task_outcomes", ["project_id"])
    op.create_index("ix_task_outcomes_item_id", "task_outcomes", ["item_id"])
    op.create_index("ix_tasks_assignee", "tasks", ["assignee_id", "item_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` made."""
    op.drop_index("ix_tasks_assignee", table_name="tasks")
    op.drop_index("ix_task_outcomes_item_id", table_name="task_outcomes")
    op.drop_index("ix_task_outcomes_project_id", table_name="task_outcomes")
    op.drop_table("task_outcomes")
