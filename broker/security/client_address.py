"""The client's address as the rate limits see it, behind trusted proxies or not.

Behind a load balancer or an Ingress every request comes from the proxy's address, so per-address
limits would put every client in one bucket. `X-Forwarded-For` names the real client, but anyone can
send that header: it is read only when the direct peer is in `[server] trusted_proxies`, and then the
right-most address in it that is not itself a trusted proxy is the client (each proxy appends the
address it saw; what a client wrote sits further left and is never believed).

`X-Forwarded-Proto` (whether the client used https, for the Secure flag of a session cookie) is
believed on the same terms: only from a trusted peer, and only the value that peer wrote (the
right-most); from any other peer the scheme is that of the connection itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

__all__ = ["TRUSTED_PROXIES", "TrustedProxies"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(c, strict=False)
                                                    for c in cidrs)

    def trusts(self, address: _Address | None) -> bool:
        return address is not None and any(address in net for net in self.networks)

    def client_address(self, request: web.Request) -> str:
        """The peer's address, or (from a trusted peer) the nearest untrusted hop it forwarded."""
        peer = request.remote or "unknown"
        if not self.networks:
            return peer
        nearest = _parse(peer)
        if not self.trusts(nearest):
            return peer
        hops = [h for value in request.headers.getall("X-Forwarded-For", [])
                for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                # Not an address: nothing left of it can be believed; the last trusted hop stands.
                break
            nearest = address
            if not self.trusts(address):
                break
        return str(nearest)

    def scheme(self, request: web.Request) -> str:
        """`https` or `http` as the client used it, behind trusted proxies or not."""
        if request.secure:
            return "https"
        if not self.trusts(_parse(request.remote or "")):
            return request.scheme
        values = [v.strip().lower() for value in request.headers.getall("X-Forwarded-Proto", [])
                  for v in value.split(",") if v.strip()]
        return "https" if values and values[-1] == "https" else request.scheme


TRUSTED_PROXIES: web.AppKey[TrustedProxies] = web.AppKey("trusted_proxies", TrustedProxies)
