"""retention indexes

The purge finds closed, not yet purged cases by closing time (a partial index that stays as small
as those cases), and rewrites the feed, outbox and dead-letter rows of a batch of cases by
referral id (plain indexes, without which every batch would scan those tables whole).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_PURGEABLE = "state = 'closed' AND purged_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_purgeable', ['closed_at'], unique=False,
                              postgresql_where=sa.text(_PURGEABLE), sqlite_where=sa.text(_PURGEABLE))
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.create_index('ix_updates_referral', ['referral_id'], unique=False)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_referral', ['referral_id'], unique=False)
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index('ix_dead_letters_referral', ['referral_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_dead_letters_referral')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_referral')
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.drop_index('ix_updates_referral')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_purgeable', postgresql_where=sa.text(_PURGEABLE),
                            sqlite_where=sa.text(_PURGEABLE))
