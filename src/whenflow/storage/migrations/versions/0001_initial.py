"""The initial schema: executions, node states and attempts, events, variables, logs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Written out by hand rather than imported from `tables.py`, so that it keeps
describing revision 0001 when the models move on; the migration test checks
that head still equals the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _execution_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["execution_id"],
        ["executions.id"],
        name=f"fk_{table}_execution_id_executions",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("pipeline_name", sa.Text(), nullable=False),
        sa.Column("pipeline_version", sa.Text(), nullable=False),
        sa.Column("definition_text", sa.Text(), nullable=False),
        sa.Column("definition_path", sa.Text(), nullable=True),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("outputs", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parent_execution_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index("ix_executions_created_at", "executions", ["created_at"])
    op.create_index("ix_executions_status_created_at", "executions", ["status", "created_at"])
    op.create_index(
        "ix_executions_pipeline_name_created_at", "executions", ["pipeline_name", "created_at"]
    )
    op.create_index("ix_executions_parent_execution_id", "executions", ["parent_execution_id"])

    op.create_table(
        "node_states",
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _execution_fk("node_states"),
        sa.PrimaryKeyConstraint("execution_id", "node_id", name="pk_node_states"),
    )

    op.create_table(
        "node_attempts",
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _execution_fk("node_attempts"),
        sa.PrimaryKeyConstraint(
            "execution_id", "node_id", "item_index", "attempt", name="pk_node_attempts"
        ),
    )

    op.create_table(
        "events",
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _execution_fk("events"),
        sa.PrimaryKeyConstraint("execution_id", "seq", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )

    op.create_table(
        "variables",
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        _execution_fk("variables"),
        sa.PrimaryKeyConstraint("execution_id", "scope", "name", name="pk_variables"),
    )

    op.create_table(
        "task_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        _execution_fk("task_logs"),
        sa.PrimaryKeyConstraint("id", name="pk_task_logs"),
    )
    op.create_index(
        "ix_task_logs_execution_id_node_id_id", "task_logs", ["execution_id", "node_id", "id"]
    )
    op.create_index("ix_task_logs_execution_id_id", "task_logs", ["execution_id", "id"])


def downgrade() -> None:
    op.drop_table("task_logs")
    op.drop_table("variables")
    op.drop_table("events")
    op.drop_table("node_attempts")
    op.drop_table("node_states")
    op.drop_table("executions")
