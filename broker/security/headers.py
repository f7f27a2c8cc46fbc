"""The response headers of the service's security policy, defined once.

`BASE_HEADERS` go on every response (no sniffing, no referrer, no caching of case data);
`HTML_HEADERS` on every page (the one Content-Security-Policy: no scripts, no plugins, no framing,
forms only to the service itself). The HTTP middleware (`broker.web.security_headers`) applies them to
every response, and the dashboard to everything under /dashboard (its redirects and stylesheet too).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BASE_HEADERS", "CONTENT_SECURITY_POLICY", "HTML_HEADERS"]

# Service HTML carries no scripts; inline SVG needs no CSP exception, and styles come from the
# service's own static files (default-src 'self').
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")

BASE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HTML_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}
