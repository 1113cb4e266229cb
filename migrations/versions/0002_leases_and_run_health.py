"""claim leases, run health: run_users.lease_expires_at, runs.status_reason and consecutive_failures, and the
run statuses paused, degraded and failed

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TS = sa.DateTime(timezone=True)
OLD_STATUSES = "status IN ('active', 'cancelled', 'done')"
NEW_STATUSES = "status IN ('active', 'paused', 'cancelled', 'done', 'degraded', 'failed')"


def upgrade() -> None:
    # On SQLite the check constraint change recreates `runs` (batch mode); coldlabel.store.engine runs
    # migrations with foreign keys off, so dropping the old table does not cascade into run_users.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("ck_runs_status", type_="check")
        batch.create_check_constraint("ck_runs_status", NEW_STATUSES)
    with op.batch_alter_table("run_users") as batch:
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
    op.create_index("ix_run_users_status_lease_expires_at", "run_users", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_run_users_status_lease_expires_at", table_name="run_users")
    with op.batch_alter_table("run_users") as batch:
        batch.drop_column("lease_expires_at")
    # The old schema knows only active/cancelled/done: a paused run was active, a settled one done.
    op.execute("UPDATE runs SET status = 'active' WHERE status = 'paused'")
    op.execute("UPDATE runs SET status = 'done' WHERE status IN ('degraded', 'failed')")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("ck_runs_status", type_="check")
        batch.create_check_constraint("ck_runs_status", OLD_STATUSES)
        batch.drop_column("consecutive_failures")
        batch.drop_column("status_reason")
