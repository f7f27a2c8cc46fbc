"""Every `handoff` verb that reads or writes case data or access is audited as one operator:
`cli:<os user>`, role `operator` (`broker.security.audit.operator_actor`)."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from broker.cli import app as cli
from broker.security.audit import operator_actor
from broker.store.ledger import Ledger
from broker.store.tables import audit


def test_operator_actor_is_the_os_account() -> None:
    actor = operator_actor()
    assert (actor.party_id, actor.role) == (f"cli:{getpass.getuser()}"[:64], "operator")


def test_cli_verbs_audit_as_the_operator(tmp_path: Path, store_url: str) -> None:
    config = tmp_path / "handoff.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', "utf-8")
    runner = CliRunner()
    for args in (["token", "create", "--party", "intake-o08", "--role", "intake", "--area", "08"],
                 ["token", "rotate", "--party", "intake-o08"],
                 ["token", "revoke", "--party", "intake-o08"]):
        result = runner.invoke(cli, [*args[:2], "-c", str(config), *args[2:]])
        assert result.exit_code == 0, result.output

    async def actors() -> set[tuple[str, str, str]]:
        ledger = Ledger.from_url(store_url)
        try:
            async with ledger.engine.connect() as conn:
                rows = await conn.execute(sa.select(audit.c.action, audit.c.party_id, audit.c.role))
                return {(action, party, role) for action, party, role in rows}
        finally:
            await ledger.dispose()

    me = operator_actor().party_id
    assert asyncio.run(actors()) == {("token_created", me, "operator"),
                                     ("token_rotated", me, "operator"),
                                     ("token_revoked", me, "operator")}
