"""`handoff` command line (DESIGN § 9)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from broker.config.settings import Settings, load_settings

if TYPE_CHECKING:
    from broker.security.tokens import IssuedToken, TokenStore

T = TypeVar("T")

__all__ = ["app", "main"]

app = typer.Typer(help="kela-handoff: referrals between Kela and social services.",
                  no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="Party tokens.", no_args_is_help=True)
routes_app = typer.Typer(help="Routes per area.", no_args_is_help=True)
schema_app = typer.Typer(help="The common schema.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead letters.", no_args_is_help=True)
rabbit_app = typer.Typer(help="RabbitMQ topology.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail of case reads and writes.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(routes_app, name="routes")
app.add_typer(schema_app, name="schema")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(rabbit_app, name="rabbitmq")
app.add_typer(audit_app, name="audit")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config (or HANDOFF_CONFIG).",
                                                exists=True, dir_okay=False)]


def _settings(config: Path | None) -> Settings:
    from broker.observability.logs import configure_logging

    settings = load_settings(config)
    configure_logging(settings.log.level, settings.log.format)
    return settings


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run the service (HTTP API, outbox relay, delivery workers)."""
    from broker.runtime.serve import serve

    asyncio.run(serve(_settings(config)))


@app.command()
def demo(
    config: ConfigOpt = None,
    rate: Annotated[float, typer.Option(help="Referrals per second sent by simulated Kela handlers.")] = 2.0,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 0.0,
    port: Annotated[int, typer.Option(help="HTTP port of the service.")] = 8080,
) -> None:
    """Run the service on the embedded default with simulated Kela handlers and intake teams."""
    from broker.devtools.demo import run_demo

    asyncio.run(run_demo(config, rate=rate, duration=duration, port=port))


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
        result: T = _run_ledger(config, run)
    except HandoffError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # the party rules of the config (id pattern, role, area)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return result


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


def _run_ledger(config: Path | None, job: Any) -> Any:
    from broker.store.ledger import Ledger

    settings = load_settings(config)

    async def main() -> Any:
        ledger = Ledger.from_url(settings.store.url)
        try:
            await ledger.migrate()
            return await job(settings, ledger)
        finally:
            await ledger.dispose()

    return asyncio.run(main())


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

    _run_ledger(config, job)


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

    _run_ledger(config, job)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Walk every hash chain; exit 1 and name the first broken link if a record was changed,
    removed or inserted. Prints each chain's head (record count and hash) to keep outside the
    database, so that a truncation can be shown too."""
    from broker.security.audit import verify

    async def job(_settings: Settings, ledger: Any) -> Any:
        return await verify(ledger.engine)

    report = _run_ledger(config, job)
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

    count = _run_ledger(config, job)
    if output:
        typer.echo(f"{count} records written to {output}")


@app.command()
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

    _run_ledger(config, job)


@app.command()
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

    _run_ledger(config, job)


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


bench_app = typer.Typer(help="Benchmarks (reported as ratios and figures, never as timed tests).")
app.add_typer(bench_app, name="bench")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    store_url: Annotated[str | None, typer.Option(
        help="Ledger store; default: a fresh database on postgres@127.0.0.1:5432, dropped after.")] = None,
    amqp_url: Annotated[str, typer.Option(
        help="RabbitMQ; its default vhost is replaced by a throw-away one when rabbitmqctl works.")
    ] = "amqp://guest:guest@127.0.0.1:5672/",
    count: Annotated[int, typer.Option(min=1, help="Messages for the ceiling and saturation runs.")] = 3000,
    rate: Annotated[float, typer.Option(min=0.1, help="Offered referrals/s of the fixed-rate run.")] = 200.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of the fixed-rate run (not with --soak).")
                        ] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP clients at saturation.")] = 32,
    soak: Annotated[float, typer.Option(min=0, help="Minutes of fixed-rate soak (0 = off).")] = 0.0,
    processes: Annotated[str, typer.Option(
        help="Service processes sharing the load; a list such as 1,2 runs the bench once per count "
             "and reports how throughput grows.")] = "1",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure the RabbitMQ ceiling and the end-to-end referral path in one run (issue 5).

    `handoff bench metrics` and `handoff bench statistics` time the ledger-backed reads instead.
    """
    import sys

    if ctx.invoked_subcommand is not None:
        return

    from broker.devtools.bench import (
        BenchError,
        BenchOptions,
        parse_process_counts,
        render_report,
        render_scaling,
        run_bench,
        run_scaling,
    )
    from broker.observability.logs import configure_logging

    configure_logging("warning", "console")

    def started(pids: list[int]) -> None:
        typer.echo(f"service pid(s): {' '.join(map(str, pids))}", err=True)

    try:
        counts = parse_process_counts(processes)
        options = BenchOptions(store_url=store_url, amqp_url=amqp_url, count=count, rate=rate,
                               duration_s=duration, concurrency=concurrency, soak_minutes=soak,
                               processes=counts[0])
        if len(counts) == 1:
            result = asyncio.run(run_bench(options, show_progress=sys.stderr.isatty(), on_started=started))
            typer.echo(json.dumps(result.as_json()) if as_json else render_report(result))
            return
        scaling = asyncio.run(run_scaling(options, counts, show_progress=sys.stderr.isatty(),
                                          on_started=started))
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(scaling.as_json()) if as_json else render_scaling(scaling))


StoreOpt = Annotated[str, typer.Option(help="Ledger to seed and measure (a dedicated database!).")]


def _ledger_bench(store_url: str, cases: int, job: Any) -> Any:
    from broker.devtools.bench_metrics import seed_cases
    from broker.store.ledger import Ledger

    async def main() -> Any:
        ledger = Ledger.from_url(store_url)
        try:
            await ledger.migrate()

            def progress(done: int, total: int) -> None:
                typer.echo(f"\rseeding {done}/{total}", nl=False, err=True)

            added = await seed_cases(ledger, cases, progress=progress)
            if added:
                typer.echo("", err=True)
            return await job(ledger)
        finally:
            await ledger.dispose()

    return asyncio.run(main())


@bench_app.command("metrics")
def bench_metrics(
    store_url: StoreOpt = "postgresql+asyncpg://postgres@127.0.0.1:5432/handoff_bench",
    cases: Annotated[int, typer.Option(min=0, help="Seed the ledger up to this many cases.")] = 1_000_000,
    scrapes: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Seed synthetic, personal-data-free cases and time a /metrics scrape (target: 100 ms on PG)."""
    import dataclasses

    from broker.devtools.bench_metrics import bench_scrape

    result = _ledger_bench(store_url, cases, lambda ledger: bench_scrape(ledger, scrapes=scrapes))
    data = dataclasses.asdict(result)
    typer.echo(json.dumps(data) if as_json else
               f"{data['store']}: {data['cases']} cases, scrape median {data['median_ms']} ms, "
               f"p95 {data['p95_ms']} ms, max {data['max_ms']} ms ({data['series']} series)")


@bench_app.command("statistics")
def bench_statistics_cmd(
    store_url: StoreOpt = "postgresql+asyncpg://postgres@127.0.0.1:5432/handoff_bench",
    cases: Annotated[int, typer.Option(min=0, help="Seed the ledger up to this many cases.")] = 1_000_000,
    months: Annotated[int, typer.Option(min=1, max=36)] = 12,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time § 11 statistics over the last months, every area (target: under 2 s at a million cases)."""
    import dataclasses

    from broker.devtools.bench_metrics import bench_statistics

    result = _ledger_bench(store_url, cases, lambda ledger: bench_statistics(ledger, months=months))
    data = dataclasses.asdict(result)
    typer.echo(json.dumps(data) if as_json else
               f"{data['store']}: {data['cases']} cases, {data['months']} months x every area "
               f"({data['rows']} rows): median {data['median_ms']} ms, max {data['max_ms']} ms")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
