"""The listener's TLS context: server certificate, and client certificates when a CA is given.

With `[server] tls_client_ca_file` every connection must present a certificate signed by that CA
(mutual TLS): a partner without one fails in the handshake, before any HTTP is read. Bearer tokens
are still required on top; the certificate proves the network path, the token the party.
"""

from __future__ import annotations

import ssl

from broker.config.settings import ServerSettings

__all__ = ["server_ssl_context"]


def server_ssl_context(server: ServerSettings) -> ssl.SSLContext | None:
    """None when TLS is not configured (plain HTTP, e.g. behind a terminating proxy)."""
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    if server.tls_client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=server.tls_client_ca_file)
    return context
