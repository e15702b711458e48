"""imaging: the DICOM instance index (QIDO-RS, WADO-RS, series merging)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``imaging_instances``."""
    op.create_table(
        "imaging_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.Integer(), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("qido", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "sop_instance_uid"),
    )
    op.create_index("ix_imaging_instances_item_id", "imaging_instances", ["item_id"])
    op.create_index("ix_imaging_instances_study", "imaging_instances",
                    ["project_id", "study_instance_uid"])
    op.create_index("ix_imaging_instances_series", "imaging_instances",
                    ["project_id", "series_instance_uid"])


def downgrade() -> None:
    """Drop ``imaging_instances``."""
    op.drop_index("ix_imaging_instances_series", table_name="imaging_instances")
    op.drop_index("ix_imaging_instances_study", table_name="imaging_instances")
    op.drop_index("ix_imaging_instances_item_id", table_name="imaging_instances")
    op.drop_table("imaging_instances")
