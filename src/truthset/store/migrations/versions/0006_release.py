"""release tables: releases, release_items, release_files, release_signatures

Revision ID: 0006
Revises: 0003

Items, files and signatures of a release are append-only, and a release row may change only its
``status``: database triggers refuse anything else, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Tables whose rows never change once written.
_FROZEN = ("release_items", "release_files", "release_signatures")
#: Columns of ``releases`` fixed at creation (everything but ``status``).
_FIXED = ("project_id", "name", "created_by", "parent_id", "schema_version", "guideline_version",
          "policy_version", "audit_seq", "audit_hash", "settings", "rules", "checks",
          "manifest_sha256", "merkle_root", "created_at")


def upgrade() -> None:
    """Create the release tables and their immutability triggers."""
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("guideline_version", sa.Integer(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("audit_seq", sa.BigInteger(), nullable=False),
        sa.Column("audit_hash", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("merkle_root", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["parent_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_index("ix_releases_project_id", "releases", ["project_id"])
    op.create_table(
        "release_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("included", sa.Boolean(), nullable=False),
        sa.Column("final_label", sa.JSON(), nullable=True),
        sa.Column("label_source", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("subgroups", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "item_id"),
    )
    op.create_index("ix_release_items_release_id", "release_items", ["release_id"])
    op.create_table(
        "release_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "name"),
    )
    op.create_index("ix_release_files_release_id", "release_files", ["release_id"])
    op.create_table(
        "release_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("printed_name", sa.String(length=200), nullable=False),
        sa.Column("meaning", sa.String(length=100), nullable=False),
        sa.Column("signed_at", sa.String(length=40), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "user_id"),
        sa.UniqueConstraint("signature_sha256"),
    )
    op.create_index("ix_release_signatures_release_id", "release_signatures", ["release_id"])
    _create_triggers()


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in _FROZEN:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"
                )
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FIXED)
        op.execute(
            f"CREATE TRIGGER releases_fixed BEFORE UPDATE ON releases WHEN {changed} "
            "BEGIN SELECT RAISE(ABORT, 'a release is immutable; only its status changes'); END"
        )
        op.execute(
            "CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases "
            "BEGIN SELECT RAISE(ABORT, 'releases are never deleted'); END"
        )
        return
    op.execute(
        "CREATE FUNCTION truthset_release_rows_immutable() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME; END $$ LANGUAGE plpgsql"
    )
    for table in _FROZEN:
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION truthset_release_rows_immutable()"
        )
    changed = " OR ".join(f"NEW.{c}::text IS DISTINCT FROM OLD.{c}::text" for c in _FIXED)
    op.execute(
        "CREATE FUNCTION truthset_release_fixed() RETURNS trigger AS $$ BEGIN "
        "IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'releases are never deleted'; END IF; "
        f"IF {changed} THEN "
        "RAISE EXCEPTION 'a release is immutable; only its status changes'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER releases_fixed BEFORE UPDATE OR DELETE ON releases "
        "FOR EACH ROW EXECUTE FUNCTION truthset_release_fixed()"
    )


def downgrade() -> None:
    """Drop the release tables and triggers."""
    if op.get_bind().dialect.name != "sqlite":
        for table in _FROZEN:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        op.execute("DROP TRIGGER IF EXISTS releases_fixed ON releases")
        op.execute("DROP FUNCTION IF EXISTS truthset_release_rows_immutable()")
        op.execute("DROP FUNCTION IF EXISTS truthset_release_fixed()")
    for table in ("release_signatures", "release_files", "release_items", "releases"):
        op.drop_table(table)
