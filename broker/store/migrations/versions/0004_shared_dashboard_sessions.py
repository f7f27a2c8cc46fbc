"""shared dashboard sessions

The dashboard's signing key and its logouts move into the ledger, so that every replica accepts the
same sessions and a logout anywhere ends the session everywhere.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_keys',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('key_hex', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_service_keys'))
    )
    op.create_table('dashboard_logouts',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_dashboard_logouts'))
    )


def downgrade() -> None:
    op.drop_table('dashboard_logouts')
    op.drop_table('service_keys')
