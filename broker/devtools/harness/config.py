"""The `handoff run` config for a generated service (tests, bench): a dict, written as TOML by tomli_w.

Settings validate the file when the service loads it; `write_config` only serialises, so a caller
that wants an early error (the bench) calls `broker.config.settings.load_settings` on the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from broker.security.auth import hash_token

__all__ = ["party", "service_config", "webhook_route", "write_config"]


def party(party_id: str, role: str, token: str, **fields: Any) -> dict[str, Any]:
    """A `[[parties]]` entry: the token is stored as its SHA-256, as in production configs."""
    return {"id": party_id, "role": role, "token_sha256": hash_token(token), **fields}


def webhook_route(area: str, url: str, secret_env: str) -> dict[str, Any]:
    """A `[[routes]]` entry delivering `area` to a signed webhook; the secret comes from `secret_env`."""
    return {"area": area, "delivery": "webhook", "url": url, "secret_env": secret_env}


def service_config(*, port: int, store_url: str, transport_url: str, parties: Iterable[Mapping[str, Any]],
                   routes: Iterable[Mapping[str, Any]], log_level: str = "warning",
                   shutdown_timeout_s: float = 3, **sections: Mapping[str, Any]) -> dict[str, Any]:
    """A whole config: loopback server without rate limits (one token sends a generated load), JSON
    logs; `sections` adds keys to a section (`store={...}`) or adds a section (`reconcile={...}`)."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout_s": shutdown_timeout_s,
                   "rate_limit_per_s": 0},
        "store": {"url": store_url},
        "transport": {"url": transport_url},
        "log": {"level": log_level, "format": "json"},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(_plain(values))
    config["parties"] = [_plain(p) for p in parties]
    config["routes"] = [_plain(r) for r in routes]
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(_plain(config)), "utf-8")
    return path


def _plain(value: Any) -> Any:
    """Tuples and paths as TOML can hold them: lists and strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
