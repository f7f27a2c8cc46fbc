"""outbox attempted_at

The reconciliation sweep asks the ledger, not RabbitMQ, what is not yet delivered: an outbox row
that was published, is not settled by any consumer, and has not been seen by a worker for a while.
`attempted_at` is when a worker last tried it (written on failed attempts only, off the hot path), so
a message that is alive in the retry tiers is not taken for a lost one.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('attempted_at')
