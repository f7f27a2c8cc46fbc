"""`handoff` command line: the top-level app, `run` and `demo`; the verb groups live beside it."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from broker.cli.bench import bench_app
from broker.cli.common import ConfigOpt, settings_for
from broker.cli.operations import audit_app, dead_app, purge, rabbit_app, routes_app, schema_app, stats
from broker.cli.tokens import token_app

__all__ = ["app", "main"]

app = typer.Typer(help="kela-handoff: referrals between Kela and social services.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run the service (HTTP API, outbox relay, delivery workers)."""
    from broker.runtime.serve import serve

    asyncio.run(serve(settings_for(config)))


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


app.add_typer(token_app, name="token")
app.add_typer(routes_app, name="routes")
app.add_typer(schema_app, name="schema")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(rabbit_app, name="rabbitmq")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
# Top-level verbs defined with their group (plain functions, mounted here).
app.command()(stats)
app.command()(purge)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
