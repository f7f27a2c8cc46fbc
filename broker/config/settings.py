"""Settings: one frozen model, loaded once from TOML and then `HANDOFF_*` environment variables.

This is the only module that reads the environment (STYLE habit 6): route secrets named by
`secret_env` are resolved here, at load time, so nothing downstream touches `os.environ`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from broker.domain.deadlines import SlaPolicy

__all__ = [
    "DEMO_TOKENS", "DeliverySettings", "LogSettings", "Party", "RelaySettings", "RetentionSettings",
    "Route", "RoutingSettings", "ServerSettings", "Settings", "StoreSettings", "TransportSettings",
    "load_settings", "webhook_url_allowed",
]

ENV_PREFIX = "HANDOFF_"
MIB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=MIB, ge=1024)
    shutdown_timeout_s: float = 10.0
    public_base_url: str | None = None
    # Token buckets per party (and per client address for requests without a valid token), kept in
    # each process: N processes behind a balancer admit up to N times the rate. 0 turns them off.
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=0)
    # Proxies (CIDRs) whose X-Forwarded-For names the client, for the per-address limits; from any
    # other peer the header is ignored. Behind an Ingress or load balancer, list its addresses.
    trusted_proxies: tuple[str, ...] = ()
    # A client must deliver its whole request body within this time (slowloris guard): 408.
    read_timeout_s: float = Field(default=30.0, gt=0)
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    # TLS on the listener; with a client CA, every connection must present a certificate it signed.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        # HANDOFF_SERVER_TRUSTED_PROXIES may be a JSON array or "10.0.0.0/8,192.168.0.0/16".
        return [c.strip() for c in v.split(",") if c.strip()] if isinstance(v, str) else v

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        try:
            return tuple(str(ipaddress.ip_network(c, strict=False)) for c in v)
        except ValueError as exc:
            raise ValueError(f"server.trusted_proxies: {exc}") from None

    @model_validator(mode="after")
    def _tls_complete(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("server.tls_cert_file and server.tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("server.tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


class StoreSettings(_Section):
    url: str = "sqlite+aiosqlite:///./var/handoff.db"
    pool_size: int = 10
    echo: bool = False
    # Deadlines against a database that is down or frozen (SIGSTOP, a hung network): a request
    # fails with 503 within them instead of hanging, and a consumer's message is retried.
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Opening a PostgreSQL connection.")
    statement_timeout_s: float = Field(
        default=30.0, gt=0, description="One PostgreSQL statement (client side and server side).")
    pool_timeout_s: float = Field(default=5.0, gt=0, description="Waiting for a pooled connection.")
    min_free_disk_mb: int = Field(
        default=64, ge=0, description="SQLite: /readyz is not ready below this much free disk.")

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError("store.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


class TransportSettings(_Section):
    url: str = "embedded"
    prefetch: int = Field(default=32, ge=1, le=1000)
    delivery_limit: int = Field(default=5, ge=1)
    retry_tiers_s: tuple[float, ...] = (1, 5, 30, 120, 300)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v != "embedded" and not v.startswith(("amqp://", "amqps://")):
            raise ValueError('transport.url must be "embedded" or an amqp:// URL')
        return v


class DeliverySettings(_Section):
    initial_backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=300.0, gt=0)
    give_up_after_s: float = Field(default=24 * 3600.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    file_scan_interval_s: float = Field(default=1.0, gt=0, description="How often reply files are read.")


class RelaySettings(_Section):
    batch_size: int = Field(default=200, ge=1)
    poll_interval_s: float = Field(default=0.5, gt=0)


class ReconcileSettings(_Section):
    """The reconciliation sweep (`broker.outbox.reconcile`): the ledger's answer to a lost message."""

    after_s: float = Field(
        default=900.0, gt=0, description="A published event that no consumer settled and no worker "
        "tried for this long is published again; keep it above the longest retry tier plus the "
        "delivery timeout.")
    interval_s: float = Field(default=60.0, gt=0, description="Seconds between sweeps.")
    batch_size: int = Field(default=500, ge=1, description="Outbox rows examined per sweep.")


class RoutingSettings(_Section):
    max_returns: int = Field(default=2, ge=0)


class RetentionSettings(_Section):
    """How long personal data of a closed case is kept (issue 8; `handoff purge`)."""

    months_after_close: int = Field(
        default=24, ge=1, description="Personal data of a case is purged this many months after "
        "it closed; statistics and the audit stay.")
    schedule_interval_s: float = Field(
        default=0.0, ge=0, description="0: purge only by `handoff purge`; > 0: the service purges "
        "by the policy every this many seconds.")


class LogSettings(_Section):
    level: str = "info"
    format: Literal["console", "json"] = "console"


class Party(_Section):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    role: Literal["kela", "intake", "admin"]
    area: str | None = None
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # A Kela party sees the cases it sent and their updates; Kela's central reader sees every
    # sender's cases and the whole /v1/updates feed (README "Who sees which case").
    central_reader: bool = False

    @model_validator(mode="after")
    def _intake_has_area(self) -> Party:
        if self.role == "intake" and not self.area:
            raise ValueError("an intake party needs an area")
        if self.central_reader and self.role != "kela":
            raise ValueError("central_reader is for a party with role kela")
        return self


class Route(_Section):
    area: str = Field(min_length=1, max_length=8)
    delivery: Literal["webhook", "pull", "files"]
    url: str | None = None
    directory: Path | None = None
    secret_env: str | None = None
    format: Literal["json", "xml"] = "json"
    secret: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _target_given(self) -> Route:
        if self.delivery == "webhook":
            if not self.url:
                raise ValueError(f"route {self.area}: webhook delivery needs url")
            if not webhook_url_allowed(self.url):
                raise ValueError(f"route {self.area}: webhook url must be https:// "
                                 "(http:// only for loopback hosts)")
            if not self.secret_env:
                raise ValueError(f"route {self.area}: webhook delivery needs secret_env")
        if self.delivery == "files" and self.directory is None:
            raise ValueError(f"route {self.area}: files delivery needs directory")
        return self


# Well-known tokens of the demo parties: the laptop default, announced loudly at start.
DEMO_TOKENS: dict[str, str] = {
    "kela-demo": "demo-kela-token",
    "admin-demo": "demo-admin-token",
}


def _sha(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def demo_intake_token(area: str) -> str:
    return f"demo-intake-{area}-token"


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    transport: TransportSettings = TransportSettings()
    delivery: DeliverySettings = DeliverySettings()
    relay: RelaySettings = RelaySettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    routing: RoutingSettings = RoutingSettings()
    sla: SlaPolicy = SlaPolicy()
    retention: RetentionSettings = RetentionSettings()
    log: LogSettings = LogSettings()
    parties: tuple[Party, ...] = ()
    routes: tuple[Route, ...] = ()
    demo_parties: bool = Field(default=False, description="True when the built-in demo parties are used.")

    def route_for(self, area: str) -> Route | None:
        for route in self.routes:
            if route.area == area:
                return route
        return None

    @property
    def intake_areas(self) -> list[str]:
        return sorted({r.area for r in self.routes if r.area != "kela"})


def _demo_parties(areas: list[str]) -> list[dict[str, Any]]:
    parties: list[dict[str, Any]] = [
        {"id": "kela-demo", "role": "kela", "token_sha256": _sha(DEMO_TOKENS["kela-demo"])},
        {"id": "admin-demo", "role": "admin", "token_sha256": _sha(DEMO_TOKENS["admin-demo"])},
    ]
    parties += [
        {"id": f"intake-{a}", "role": "intake", "area": a, "token_sha256": _sha(demo_intake_token(a))}
        for a in areas
    ]
    return parties


def _coerce_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """HANDOFF_<SECTION>_<KEY> (or HANDOFF_<SECTION>__<KEY>) overrides `[section] key`.

    Keys contain underscores, so the section is matched by name first; list sections
    (`HANDOFF_PARTIES`, `HANDOFF_ROUTES`) take a JSON array.
    """
    sections = sorted(Settings.model_fields, key=len, reverse=True)
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == "HANDOFF_CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in sections:
            if rest == section:
                data[section] = _coerce_env_value(raw)
                break
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:].lstrip("_")
                value = raw if key in ("url", "host") else _coerce_env_value(raw)
                data.setdefault(section, {})[key] = value
                break


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the config file (or HANDOFF_CONFIG), apply env overrides, resolve route secrets."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None and environ.get("HANDOFF_CONFIG"):
        path = Path(environ["HANDOFF_CONFIG"])
    data: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    _apply_env(data, environ)
    if "routes" not in data or "parties" not in data:
        # Only the laptop defaults need the area list; a configured deployment's settings load
        # without reading the classification CSV.
        from broker.domain.routing import Classification

        areas = Classification.load().area_codes
        if "routes" not in data:
            # The laptop default: every mainland area's intake polls its inbox; Åland stays
            # unroutable until someone configures it, as DESIGN § 5 asks.
            data["routes"] = [{"area": a, "delivery": "pull"} for a in areas if a != "91"]
        if "parties" not in data:
            # `parties = []` (or HANDOFF_PARTIES='[]') says so on purpose: ledger tokens only.
            data["parties"] = _demo_parties(areas)
            data["demo_parties"] = True
    routes = []
    for route in data["routes"]:
        route = dict(route)
        if route.get("secret_env"):
            secret = environ.get(route["secret_env"])
            if secret is not None:
                route["secret"] = secret
        routes.append(route)
    data["routes"] = routes
    return Settings.model_validate(data)


def webhook_url_allowed(url: str) -> bool:
    """https:// only, except loopback hosts used in development and tests (DESIGN § 10)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
