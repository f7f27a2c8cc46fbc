"""Alembic environment. The service passes its own connection in (`broker.migrate`), so migrations
run over the same engine and driver as the ledger; the CLI path builds a sync URL for autogenerate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from broker.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


_conn = config.attributes.get("connection")
if _conn is not None:
    _run(_conn)
else:
    _engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://", hide_parameters=True)
    with _engine.begin() as _c:
        _run(_c)
    _engine.dispose()
