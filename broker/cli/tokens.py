"""`handoff token ...`: party tokens kept in the ledger (or printed for the config)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from broker.cli.common import ConfigOpt, run_ledger
from broker.config.settings import Settings

if TYPE_CHECKING:
    from broker.security.tokens import IssuedToken, TokenStore

T = TypeVar("T")

__all__ = ["token_app"]

token_app = typer.Typer(help="Party tokens.", no_args_is_help=True)

ExpiresOpt = Annotated[float | None, typer.Option(
    "--expires-in-days", min=0, help="The token stops working after this many days (ledger only).")]


@token_app.command("create")
def token_create(party: Annotated[str, typer.Option("--party", help="Party id, e.g. kela-main.")],
                 role: Annotated[str, typer.Option(help="kela, intake or admin.")] = "kela",
                 area: Annotated[str | None, typer.Option(help="Area code for an intake.")] = None,
                 expires_in_days: ExpiresOpt = None,
                 central_reader: Annotated[bool, typer.Option(
                     "--central-reader",
                     help="Kela's central reader: sees every sender's cases and the whole "
                          "/v1/updates feed (role kela only; other Kela parties see their own)."
                 )] = False,
                 store: Annotated[bool, typer.Option(
                     "--store/--no-store",
                     help="Keep the token in the ledger ([store] url), where it can be rotated and "
                          "revoked; --no-store prints a [[parties]] entry for the config instead.")] = True,
                 config: ConfigOpt = None) -> None:
    """Create a token and print it once (the ledger keeps only its SHA-256)."""
    from broker.security.audit import operator_actor
    from broker.security.auth import hash_token, new_token

    if role not in ("kela", "intake", "admin"):
        raise typer.BadParameter("role must be kela, intake or admin", param_hint="--role")
    if role == "intake" and not area:
        raise typer.BadParameter("an intake needs --area", param_hint="--area")
    if central_reader and role != "kela":
        raise typer.BadParameter("only a kela party can be the central reader",
                                 param_hint="--central-reader")
    if store:
        def create(tokens: TokenStore, now: dt.datetime) -> Awaitable[IssuedToken]:
            return tokens.create(party, role, area, actor=operator_actor(), now=now,
                                 expires_in=_days(expires_in_days), central_reader=central_reader)

        _issued(_run_tokens(config, create))
        return
    if expires_in_days is not None:
        raise typer.BadParameter("config tokens do not expire; store it in the ledger",
                                 param_hint="--expires-in-days")
    token = new_token()
    typer.echo(f"token (shown once, give it to the party): {token}")
    typer.echo("")
    typer.echo("[[parties]]")
    typer.echo(f'id = "{party}"')
    typer.echo(f'role = "{role}"')
    if area:
        typer.echo(f'area = "{area}"')
    typer.echo(f'token_sha256 = "{hash_token(token)}"')
    if central_reader:
        typer.echo("central_reader = true")


@token_app.command("rotate")
def token_rotate(party: Annotated[str, typer.Option("--party", help="Party id.")],
                 grace_minutes: Annotated[float, typer.Option(
                     min=0, help="The old tokens keep working this long.")] = 0.0,
                 expires_in_days: ExpiresOpt = None,
                 config: ConfigOpt = None) -> None:
    """Give a party a new ledger token (same role, area and central-reader mark); its old tokens
    end after the grace."""
    from broker.security.audit import operator_actor

    def rotate(tokens: TokenStore, now: dt.datetime) -> Awaitable[IssuedToken]:
        return tokens.rotate(party, actor=operator_actor(), now=now,
                             grace=dt.timedelta(minutes=grace_minutes),
                             expires_in=_days(expires_in_days))

    _issued(_run_tokens(config, rotate))


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str | None, typer.Option("--id", help="Token id (from list).")] = None,
                 party: Annotated[str | None, typer.Option("--party", help="Every token of a party.")
                                  ] = None,
                 config: ConfigOpt = None) -> None:
    """Revoke ledger tokens at once: the next request with them is a 401 in every process."""
    if (token_id is None) == (party is None):
        raise typer.BadParameter("give exactly one of --id and --party")
    from broker.security.audit import operator_actor

    def revoke(tokens: TokenStore, now: dt.datetime) -> Awaitable[int]:
        return tokens.revoke(actor=operator_actor(), now=now, token_id=token_id, party_id=party)

    count = _run_tokens(config, revoke)
    typer.echo(f"revoked {count} token(s)")


@token_app.command("list")
def token_list(party: Annotated[str | None, typer.Option("--party", help="Only this party.")] = None,
               as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
               config: ConfigOpt = None) -> None:
    """List ledger tokens: id, party, role, area, central reader, dates and status (never the token
    or its hash)."""

    async def listed(tokens: TokenStore, now: dt.datetime) -> list[dict[str, str | bool | None]]:
        return [t.as_json(now) for t in await tokens.list(party_id=party)]

    for row in _run_tokens(config, listed):
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo("  ".join(f"{k}={v}" for k, v in row.items() if v not in (None, False)))


def _days(days: float | None) -> dt.timedelta | None:
    return dt.timedelta(days=days) if days is not None else None


def _issued(issued: IssuedToken) -> None:
    typer.echo(f"token (shown once, give it to the party): {issued.token}")
    info = issued.info.as_json(issued.info.created_at)
    typer.echo("  ".join(f"{k}={v}" for k, v in info.items() if v not in (None, False)))


def _run_tokens(config: Path | None, job: Callable[[TokenStore, dt.datetime], Awaitable[T]]) -> T:
    from broker.domain.errors import HandoffError
    from broker.security.tokens import TokenStore
    from broker.store.ledger import utcnow

    async def run(_settings: Settings, ledger: Any) -> T:
        return await job(TokenStore(ledger), utcnow())

    try:
        result: T = run_ledger(config, run)
    except HandoffError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # the party rules of the config (id pattern, role, area)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return result
