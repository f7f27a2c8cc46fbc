"""The operator verbs: routes, schema, dead letters, audit, statistics, retention, RabbitMQ."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.cli.common import ConfigOpt, run_ledger
from broker.config.settings import Settings, load_settings

__all__ = ["audit_app", "dead_app", "purge", "rabbit_app", "routes_app", "schema_app", "stats"]

routes_app = typer.Typer(help="Routes per area.", no_args_is_help=True)
schema_app = typer.Typer(help="The common schema.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead letters.", no_args_is_help=True)
rabbit_app = typer.Typer(help="RabbitMQ topology.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail of case reads and writes.",
                        no_args_is_help=True)


@routes_app.command("check")
def routes_check(config: ConfigOpt = None) -> None:
    """Show how every area of the classification is reached; exit 1 on a broken route."""
    from broker.domain.routing import ALAND_AREA, Classification

    settings = load_settings(config)
    classification = Classification.load()
    problems = 0
    for code, area in classification.areas.items():
        route = settings.route_for(code)
        if route is None:
            note = "UNROUTABLE (no route)"
            if code == ALAND_AREA:
                note += " - Åland is outside the county reform"
            typer.echo(f"{code} {area.name_fi}: {note}")
            continue
        target = route.url or (str(route.directory) if route.directory else "inbox (pull)")
        issue = ""
        if route.delivery == "webhook":
            if route.secret is None:
                issue = f" ! secret variable {route.secret_env} is not set"
            elif route.url and not _webhook_url_ok(route.url):
                issue = " ! webhook URL must be https:// (loopback excepted)"
        problems += bool(issue)
        typer.echo(f"{code} {area.name_fi}: {route.delivery} -> {target}{issue}")
    unknown = [r.area for r in settings.routes if r.area not in classification.areas and r.area != "kela"]
    for a in unknown:
        typer.echo(f"{a}: ! route for an area that is not in the classification")
    raise typer.Exit(1 if problems or unknown else 0)


def _webhook_url_ok(url: str) -> bool:
    from broker.config.settings import webhook_url_allowed

    return webhook_url_allowed(url)


@schema_app.command("export")
def schema_export(directory: Annotated[Path, typer.Argument(help="Where to write the JSON Schemas.")],
                  ) -> None:
    """Write referral.json, reply.json and answer.json (JSON Schema 2020-12)."""
    from schemas.export import export_schemas

    for path in export_schemas(directory):
        typer.echo(str(path))


@dead_app.command("list")
def dead_letters_list(config: ConfigOpt = None,
                      limit: Annotated[int, typer.Option(min=1, max=500)] = 100) -> None:
    """List dead letters not yet replayed: case, reason, attempts."""

    from broker.security.audit import AuditEntry, append_alone, operator_actor
    from broker.store.ledger import utcnow

    async def job(_settings: Settings, ledger: Any) -> None:
        rows = await ledger.list_dead_letters(0, limit)
        await append_alone(ledger, operator_actor(),
                           [AuditEntry("dead_letter_read", r["referral_id"]) for r in rows], utcnow())
        for r in rows:
            typer.echo(json.dumps({"id": r["id"], "referral_id": r["referral_id"], "area": r["area"],
                                   "reason": r["reason"], "attempts": r["attempts"],
                                   "created_at": r["created_at"].isoformat()}))

    run_ledger(config, job)


@dead_app.command("replay")
def dead_letters_replay(dead_letter_id: int, config: ConfigOpt = None) -> None:
    """Put a dead letter back on the normal path once (a running service delivers it)."""
    from broker.cases.service import CaseService
    from broker.domain.errors import HandoffError
    from broker.domain.routing import Classification
    from broker.security.audit import operator_actor

    async def job(settings: Settings, ledger: Any) -> None:
        cases = CaseService(ledger, settings, Classification.load())
        try:
            typer.echo(json.dumps(await cases.replay_dead_letter(dead_letter_id, actor=operator_actor())))
        except HandoffError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(1) from None

    run_ledger(config, job)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Walk every hash chain; exit 1 and name the first broken link if a record was changed,
    removed or inserted. Prints each chain's head (record count and hash) to keep outside the
    database, so that a truncation can be shown too."""
    from broker.security.audit import verify

    async def job(_settings: Settings, ledger: Any) -> Any:
        return await verify(ledger.engine)

    report = run_ledger(config, job)
    for chain, (n, head) in sorted(report.heads.items()):
        typer.echo(f"chain {chain}: {n} records, head {head}")
    if report.broken is not None:
        typer.echo(f"BROKEN: {report.broken.describe()}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {report.records} records verified")


@audit_app.command("export")
def audit_export(
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), inclusive.")],
    referral_id: Annotated[str | None, typer.Option(help="Only this case's records.")] = None,
    party: Annotated[str | None, typer.Option(help="Only this party's records.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Audit records as JSON lines, for a controller answering an access request (GDPR art. 15)."""
    import sys

    from broker.security.audit import export

    try:
        first = dt.datetime.combine(dt.date.fromisoformat(start), dt.time(), dt.UTC)
        last = dt.datetime.combine(dt.date.fromisoformat(end), dt.time(), dt.UTC)
    except ValueError:
        raise typer.BadParameter("dates are YYYY-MM-DD", param_hint="--from/--to") from None
    if last < first:
        raise typer.BadParameter("--to is before --from", param_hint="--to")

    async def job(_settings: Settings, ledger: Any) -> int:
        count = 0
        with (output.open("w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)) as out:
            async for line in export(ledger.engine, first, last + dt.timedelta(days=1),
                                     referral_id=referral_id, party_id=party):
                out.write(line + "\n")
                count += 1
        return count

    count = run_ledger(config, job)
    if output:
        typer.echo(f"{count} records written to {output}")


def stats(
    from_: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    to: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    area: Annotated[str | None, typer.Option(help="One area code; default every area.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    config: ConfigOpt = None,
) -> None:
    """Print the § 11 statistics per area and month, as GET /v1/statistics does."""
    from broker.domain.errors import InvalidInput
    from broker.domain.routing import Classification
    from broker.store.statistics import compute_statistics, parse_stats_query, rows_to_csv

    classification = Classification.load()
    params = {"from": from_, "to": to, "format": fmt, **({"area": area} if area else {})}
    try:
        query = parse_stats_query(params, classification, own_area=None)
    except InvalidInput as exc:
        for e in exc.errors:
            typer.echo(f"error: --{e['loc'][-1]}: {e['msg']}", err=True)
        raise typer.Exit(2) from None

    async def job(_settings: Settings, ledger: Any) -> None:
        rows = await compute_statistics(ledger, classification, query)
        if query.format == "csv":
            typer.echo(rows_to_csv(rows), nl=False)
        else:
            typer.echo(json.dumps({"items": rows}, ensure_ascii=False, indent=2))

    run_ledger(config, job)


def purge(
    closed_before: Annotated[str | None, typer.Option(
        "--closed-before", metavar="YYYY-MM-DD",
        help="Purge cases closed before this day (Finnish time); default: today minus "
             "[retention] months_after_close.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Purge; without it, only say what would be "
                                                         "purged.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow a --closed-before later than the "
                                                         "retention policy's cutoff.")] = False,
    show_ids: Annotated[bool, typer.Option("--ids", help="Also list the referral ids.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Remove the personal data of closed cases past retention; statistics and audit stay.

    A dry run by default. A day later than the policy's cutoff is refused without --force, so a
    typo cannot purge last week's cases.
    """
    import datetime as dt

    from broker.domain.workdays import helsinki_date
    from broker.jobs import retention
    from broker.security.audit import operator_actor

    settings = load_settings(config)
    cutoff = retention.policy_cutoff(settings.retention.months_after_close)
    if closed_before is None:
        day = cutoff
    else:
        try:
            day = dt.date.fromisoformat(closed_before)
        except ValueError:
            typer.echo("error: --closed-before must be a day, YYYY-MM-DD", err=True)
            raise typer.Exit(2) from None
        if day > cutoff and not force:
            typer.echo(f"error: --closed-before {day} is later than the retention policy allows "
                       f"({cutoff}: {settings.retention.months_after_close} months after closing); "
                       "add --force if that is meant", err=True)
            raise typer.Exit(2)

    async def job(_settings: Settings, ledger: Any) -> None:
        found = await retention.plan(ledger, day)
        span = ""
        if found.oldest_closed_at and found.newest_closed_at:
            span = (f" (closed {helsinki_date(found.oldest_closed_at)} .. "
                    f"{helsinki_date(found.newest_closed_at)})")
        if show_ids:
            for rid in found.referral_ids:
                typer.echo(rid)
        if not apply:
            typer.echo(f"dry run: {found.count} cases closed before {day}{span} would be purged; "
                       "--apply purges them")
            return
        done = await retention.purge(ledger, day, operator_actor())
        typer.echo(f"purged {done} cases closed before {day}{span}")

    run_ledger(config, job)


@rabbit_app.command("definitions")
def rabbitmq_definitions(
    config: ConfigOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("deploy/rabbitmq/definitions.json"),
) -> None:
    """Write the topology the broker declares, for `rabbitmqctl import_definitions`."""
    from broker.transport.topology import topology_definitions

    settings = load_settings(config)
    doc = topology_definitions(settings.intake_areas, delivery_limit=settings.transport.delivery_limit,
                               retry_tiers_s=settings.transport.retry_tiers_s)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
    typer.echo(str(output))
