"""The database tables, as SQLAlchemy Core `Table`s (DESIGN.md §7).

Core, not the ORM: the state store writes these with `executemany` on the hot
path, and the read queries select plain rows.

Two storage choices hold for every table, on SQLite and PostgreSQL alike:

- **Times are floats** (unix seconds, `DOUBLE PRECISION`): what the engine
  already holds, no timezone conversion, and the same bytes on both databases.
- **Structured values are JSON text** (`Text`), encoded by the store with
  `json.dumps`: one encoding on both databases, no dialect JSON type to
  compare in migrations, and it is faster than `sa.JSON`'s per-row processors.

Every child table references `executions.id` with `ON DELETE CASCADE`, so
deleting an execution deletes its history.
"""

from __future__ import annotations

import sqlalchemy as sa

# Constraint names are fixed here so that Alembic migrations can address them
# by name on every database (SQLite generates none otherwise).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# An execution id is a UUID in text form.
ExecutionId = sa.String(36)
# Unix seconds; double precision on both databases.
Timestamp: sa.Double[float] = sa.Double()
# SQLite only makes an `INTEGER PRIMARY KEY` the autoincrementing rowid.
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _execution_fk() -> sa.Column[str]:
    return sa.Column(
        "execution_id",
        ExecutionId,
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    )


executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", ExecutionId, primary_key=True),
    sa.Column("pipeline_name", sa.Text, nullable=False),
    sa.Column("pipeline_version", sa.Text, nullable=False),
    sa.Column("definition_text", sa.Text, nullable=False),
    sa.Column("definition_path", sa.Text, nullable=True),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON object
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("outputs", sa.Text, nullable=True),  # JSON object
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("parent_execution_id", ExecutionId, nullable=True),
    sa.Column("retry_of", ExecutionId, nullable=True),  # the execution this one retries
    sa.Index(None, "created_at"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "pipeline_name", "created_at"),
    sa.Index(None, "parent_execution_id"),
)

node_states = sa.Table(
    "node_states",
    metadata,
    _execution_fk(),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("execution_id", "node_id"),
)

node_attempts = sa.Table(
    "node_attempts",
    metadata,
    _execution_fk(),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("item_index", sa.Integer, nullable=False),  # -1 without forEach
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("error_type", sa.Text, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("execution_id", "node_id", "item_index", "attempt"),
)

events = sa.Table(
    "events",
    metadata,
    _execution_fk(),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON object
    sa.PrimaryKeyConstraint("execution_id", "seq"),
    sa.UniqueConstraint("event_id"),
)

variables = sa.Table(
    "variables",
    metadata,
    _execution_fk(),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),  # JSON; "null" when offloaded
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),  # JSON object
    sa.Column("artifact", sa.Text, nullable=True),  # JSON of ArtifactRef.to_json()
    sa.Column("created_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("execution_id", "scope", "name"),
)

task_logs = sa.Table(
    "task_logs",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    _execution_fk(),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("item_index", sa.Integer, nullable=False),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index(None, "execution_id", "node_id", "id"),
    sa.Index(None, "execution_id", "id"),
)

# Requests from outside the process that runs an execution (decisions, external
# events, cancels): written by whoever asks, consumed by the dispatcher, which
# marks a message applied in the same commit as the events it caused.
inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    _execution_fk(),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON object
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("applied_at", Timestamp, nullable=True),
    sa.Column("refusal", sa.Text, nullable=True),
    sa.Index(None, "execution_id", "applied_at"),
)

# Who runs an execution (DESIGN.md §7, "one owner"): at most one row per
# execution, written with its creation or by a takeover once `expires_at` has
# passed, renewed by every commit of its owner and deleted when it ends or
# its owner closes. Times are the owner's wall clock.
execution_owners = sa.Table(
    "execution_owners",
    metadata,
    sa.Column(
        "execution_id",
        ExecutionId,
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("owner_id", sa.Text, nullable=False),  # host:pid:random
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
)

# The registry (DESIGN.md §11): pushed pipelines and `kind: Task` definitions, one
# row per (kind, name, version); a published row is never updated again.
registry_versions = sa.Table(
    "registry_versions",
    metadata,
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("definition_text", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("published_at", Timestamp, nullable=True),
    sa.PrimaryKeyConstraint("kind", "name", "version"),
)

# API bearer tokens (DESIGN.md §10, §11): only the SHA-256 of a token is stored.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.UniqueConstraint("token_hash"),
)

# `Idempotency-Key` of API starts: the same (scope, key) names the same execution;
# `request_sha256` tells a replay (same body) from a conflict (another body).
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("request_sha256", sa.String(64), nullable=False),
    _execution_fk(),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("scope", "key"),
)

# Schedules of published pipelines (DESIGN.md §12), one row per (pipeline, schedule
# id); `spec` is `Schedule.to_json()`. `cycles` is the number of the last cycle
# started, raised in the transaction of each fire; `decided_until` is the latest
# slot skipped (by catch-up or overlap): no slot up to it fires any more.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # "<pipeline>:<schedule id>"
    sa.Column("pipeline_name", sa.Text, nullable=False),
    sa.Column("pipeline_version", sa.Text, nullable=False),
    sa.Column("schedule_id", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON object
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("cycles", sa.Integer, nullable=False),
    sa.Column("decided_until", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("pipeline_name", "schedule_id"),
)

# One row per fired slot: the unique (schedule, slot) key is inserted in the
# transaction that creates the slot's execution, so a slot never fires twice.
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column(
        "schedule_id", sa.Text, sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("slot", Timestamp, nullable=False),
    sa.Column("cycle", sa.Integer, nullable=False),
    sa.Column(
        "execution_id",
        ExecutionId,
        sa.ForeignKey("executions.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("schedule_id", "slot"),
    sa.Index(None, "schedule_id", "cycle"),
)

# Notifications of execution outcomes (`spec.notify`): one row per message, its
# final status (`sent` or `failed`) and the last error. Never changes the execution.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    _execution_fk(),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Index(None, "execution_id"),
)
