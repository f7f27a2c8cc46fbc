"""intake updates

The intake feed (issue 17 § 4, DESIGN § 12): what an area hears of its cases (Kela's answers,
escalations, re-routings into and out of the area, deliveries), written in the transaction of the
change and paged by (area, seq) like Kela's feed. Its data holds ids, types, areas, times and deadline
names only, so a retention purge has no personal data to rewrite here.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('intake_updates',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('area', sa.String(length=8), nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_intake_updates'))
    )
    with op.batch_alter_table('intake_updates', schema=None) as batch_op:
        batch_op.create_index('ix_intake_updates_area_seq', ['area', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('intake_updates', schema=None) as batch_op:
        batch_op.drop_index('ix_intake_updates_area_seq')
    op.drop_table('intake_updates')
