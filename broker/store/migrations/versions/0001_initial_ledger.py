"""initial ledger

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('cases',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('kela_reference', sa.String(length=128), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('urgency', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('area', sa.String(length=8), nullable=True),
    sa.Column('municipality_code', sa.String(length=3), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_reply_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('assessment_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ack_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('assessment_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalated', sa.String(length=64), nullable=False),
    sa.Column('received_month', sa.String(length=7), nullable=False),
    sa.Column('reroute_count', sa.Integer(), nullable=False),
    sa.Column('first_reply_s', sa.Integer(), nullable=True),
    sa.Column('needs_mask', sa.Integer(), nullable=False),
    sa.Column('findings_mask', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=24), nullable=True),
    sa.Column('decision', sa.String(length=24), nullable=True),
    sa.Column('referral_quality', sa.String(length=32), nullable=True),
    sa.Column('feedback_rating', sa.Integer(), nullable=True),
    sa.Column('feedback_heard', sa.Boolean(), nullable=True),
    sa.Column('return_count', sa.Integer(), nullable=False),
    sa.Column('areas_tried', sa.String(length=200), nullable=False),
    sa.Column('unroutable_reason', sa.String(length=200), nullable=True),
    sa.Column('referral_json', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_cases')),
    sa.UniqueConstraint('referral_id', name=op.f('uq_cases_referral_id')),
    sa.UniqueConstraint('sender', 'kela_reference', name='uq_cases_sender_reference')
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_area_state', ['area', 'state'], unique=False)
        batch_op.create_index('ix_cases_month_area', ['received_month', 'area'], unique=False)
        batch_op.create_index('ix_cases_month_area_reply', ['received_month', 'area', 'first_reply_s'], unique=False)
        batch_op.create_index('ix_cases_open_ack', ['area', 'ack_due_at'], unique=False, postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND acknowledged_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND acknowledged_at IS NULL"))
        batch_op.create_index('ix_cases_open_assessment', ['area', 'assessment_due_at'], unique=False, postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND assessment_started_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND assessment_started_at IS NULL"))
        batch_op.create_index('ix_cases_open_decision', ['area', 'decision_due_at'], unique=False, postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND decided_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND decided_at IS NULL"))
        batch_op.create_index('ix_cases_received', ['received_at'], unique=False)
        batch_op.create_index('ix_cases_state_received', ['state', 'received_at'], unique=False)
        batch_op.create_index('ix_cases_unanswered', ['area', 'urgency', 'delivered_at'], unique=False, postgresql_where=sa.text("state = 'delivered' AND first_reply_at IS NULL"), sqlite_where=sa.text("state = 'delivered' AND first_reply_at IS NULL"))

    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=True),
    sa.Column('area', sa.String(length=8), nullable=True),
    sa.Column('queue', sa.String(length=128), nullable=True),
    sa.Column('exchange', sa.String(length=64), nullable=False),
    sa.Column('routing_key', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index('ix_dead_letters_event', ['event_id'], unique=False)
        batch_op.create_index('ix_dead_letters_open', ['replayed_at', 'area'], unique=False)

    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('area', sa.String(length=8), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('dedupe_key', sa.String(length=160), nullable=True),
    sa.Column('body_sha256', sa.String(length=64), nullable=True),
    sa.Column('data', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_events_event_id')),
    sa.UniqueConstraint('referral_id', 'dedupe_key', name='uq_events_referral_dedupe')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_referral_seq', ['referral_id', 'seq'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=True),
    sa.Column('exchange', sa.String(length=64), nullable=False),
    sa.Column('routing_key', sa.String(length=128), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('publish_attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_status_id', ['status', 'id'], unique=False)

    op.create_table('processed',
    sa.Column('consumer', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id', name=op.f('pk_processed'))
    )
    op.create_table('updates',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('referral_id', sa.String(length=36), nullable=False),
    sa.Column('kela_reference', sa.String(length=128), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_updates')),
    sa.UniqueConstraint('event_id', name=op.f('uq_updates_event_id'))
    )



def downgrade() -> None:

    op.drop_table('updates')
    op.drop_table('processed')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_status_id')

    op.drop_table('outbox')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_referral_seq')

    op.drop_table('events')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_dead_letters_open')
        batch_op.drop_index('ix_dead_letters_event')

    op.drop_table('dead_letters')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_unanswered', postgresql_where=sa.text("state = 'delivered' AND first_reply_at IS NULL"), sqlite_where=sa.text("state = 'delivered' AND first_reply_at IS NULL"))
        batch_op.drop_index('ix_cases_state_received')
        batch_op.drop_index('ix_cases_received')
        batch_op.drop_index('ix_cases_open_decision', postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND decided_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND decided_at IS NULL"))
        batch_op.drop_index('ix_cases_open_assessment', postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND assessment_started_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND assessment_started_at IS NULL"))
        batch_op.drop_index('ix_cases_open_ack', postgresql_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND acknowledged_at IS NULL"), sqlite_where=sa.text("state IN ('routed', 'delivered', 'acknowledged', 'in_progress', 'info_requested') AND acknowledged_at IS NULL"))
        batch_op.drop_index('ix_cases_month_area_reply')
        batch_op.drop_index('ix_cases_month_area')
        batch_op.drop_index('ix_cases_area_state')

    op.drop_table('cases')

