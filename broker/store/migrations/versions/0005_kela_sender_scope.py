"""kela sender scope

A Kela party sees the cases it sent and their feed entries; a central reader sees all (issue 15).
The feed gets the case's sender, filled in from `cases` for the entries already there, and an index
on (sender, seq) so that a party's page is one index range; ledger tokens get `central_reader`.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender', sa.String(length=64), nullable=True))
    # Every entry belongs to a case; '' (no party has that id) only if one ever lost its case.
    op.execute("UPDATE updates SET sender = COALESCE((SELECT cases.sender FROM cases "
               "WHERE cases.referral_id = updates.referral_id), '')")
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.alter_column('sender', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index('ix_updates_sender_seq', ['sender', 'seq'], unique=False)
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('central_reader', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_column('central_reader')
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.drop_index('ix_updates_sender_seq')
        batch_op.drop_column('sender')
