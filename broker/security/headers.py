"""The browser-facing response headers: written once, for the API middleware and the dashboard.

They keep browsers from sniffing, framing, caching or leaking referrers. API answers carry case
data (never to be cached by a browser or a proxy), and no HTML page of the service may be framed.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BASE_HEADERS", "CONTENT_SECURITY_POLICY", "HTML_HEADERS"]

BASE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Service HTML carries no scripts; inline styles and inline SVG need no CSP exception.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'none'; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HTML_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}
