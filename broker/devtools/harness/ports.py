"""Loopback ports: a free one to listen on (or to find nothing listening), and a reachability probe."""

from __future__ import annotations

import socket
from collections.abc import Collection

__all__ = ["free_port", "port_open"]


def free_port(avoid: Collection[int] = ()) -> int:
    """A loopback TCP port that nothing listens on right now (connections to it are refused)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
