"""Who is looking at the dashboard: bearer tokens, login sessions, CSRF tokens.

Access is `Authorization: Bearer <admin token>`, or the login form, which trades the admin token for
a session cookie (HttpOnly, SameSite=Strict, Secure over https). The cookie is an itsdangerous
`URLSafeTimedSerializer` token holding a random session id, the party and the SHA-256 of the token the
session was opened with: the digest is checked on every page, so revoking or expiring the token ends
the session. The signing key is made once and kept in the ledger (`service_keys`), and logouts are
recorded there too (`dashboard_logouts`), so every replica accepts the same sessions and a logout on one
ends the session on all, with no sticky sessions.

State-changing forms carry a CSRF token bound to the session (an itsdangerous signature of the
session id, or of the bearer's party), and the login form a double-submit token (`LOGIN_COOKIE`).
Whether the client used https, for the Secure flag, comes from the connection or, behind a proxy
listed in `[server] trusted_proxies`, from the `X-Forwarded-Proto` that proxy set; never from a
header any client can send.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer

from broker.domain.errors import Unauthorized
from broker.runtime.services import SERVICES
from broker.security.audit import Actor
from broker.security.auth import PRINCIPAL, Principal
from broker.security.client_address import TRUSTED_PROXIES
from broker.store.ledger import Ledger
from broker.web.errors import REQUEST_ID

__all__ = [
    "DASHBOARD",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "DashboardKeys",
    "LoginRequired",
    "Refused",
    "Session",
    "Viewer",
    "check_csrf",
    "check_login_nonce",
    "is_https",
    "load_dashboard_keys",
    "new_login_nonce",
    "session_expiry",
    "viewer_of",
]

SESSION_COOKIE = "handoff_dashboard"
LOGIN_COOKIE = "handoff_dashboard_login"
SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True)
class Session:
    sid: str
    party_id: str
    expires: int
    token_digest: str  # SHA-256 of the token the session was opened with (checked on every page)


@dataclass
class DashboardKeys:
    """The secret behind session cookies and CSRF tokens, shared by every replica through the ledger
    (`Ledger.shared_key`); which sessions were logged out is kept there too."""

    key: bytes
    ttl_s: int = SESSION_TTL_S

    def __post_init__(self) -> None:
        self._sessions = URLSafeTimedSerializer(self.key, salt="dashboard-session",
                                                signer_kwargs={"digest_method": hashlib.sha256})
        self._csrf = Signer(self.key, salt="dashboard-csrf", digest_method=hashlib.sha256)

    def issue(self, party_id: str, token_digest: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(18)
        value = self._sessions.dumps([sid, party_id, token_digest])
        ts = self._sessions.loads(value, return_timestamp=True)[1]
        return value, Session(sid, party_id, int(ts.timestamp()) + self.ttl_s, token_digest)

    def verify(self, value: str) -> Session | None:
        """The session in a cookie, or None when it is forged, garbled or older than `ttl_s`."""
        try:
            payload, signed_at = self._sessions.loads(value, max_age=self.ttl_s, return_timestamp=True)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not (isinstance(payload, list) and len(payload) == 3
                and all(isinstance(p, str) and p for p in payload)):
            return None
        sid, party_id, digest = payload
        return Session(sid, party_id, int(signed_at.timestamp()) + self.ttl_s, digest)

    def csrf_token(self, binding: str) -> str:
        return self._csrf.get_signature(binding).decode("ascii")

    def csrf_ok(self, binding: str, token: str | None) -> bool:
        return bool(token) and self._csrf.verify_signature(binding, str(token))


DASHBOARD: web.AppKey[DashboardKeys] = web.AppKey("dashboard", DashboardKeys)


async def load_dashboard_keys(app: web.Application, ledger: Ledger) -> None:
    """Called by the composition root once the ledger is migrated."""
    app[DASHBOARD] = DashboardKeys(await ledger.shared_key("dashboard"))


@dataclass(frozen=True)
class Viewer:
    party_id: str
    binding: str  # what the CSRF token is bound to: the session id, or the bearer party
    session: Session | None = None

    def actor(self, request: web.Request) -> Actor:
        return Actor(self.party_id, "admin", request.get(REQUEST_ID))


class Refused(Exception):
    """The request may not have the page: answered with the message `key` and `status`."""

    def __init__(self, key: str, status: int) -> None:
        super().__init__(key)
        self.key, self.status = key, status


class LoginRequired(Exception):
    """No valid session: the browser goes to the login form (and a dead cookie is cleared)."""

    def __init__(self, clear_cookie: bool) -> None:
        super().__init__("login required")
        self.clear_cookie = clear_cookie


async def viewer_of(request: web.Request) -> Viewer:
    """The admin looking at the page; raises `Refused` (401, 403) or `LoginRequired`."""
    svc = request.app[SERVICES]
    if "Authorization" in request.headers:
        try:
            principal = await svc.tokens.authenticate(request.headers["Authorization"])
        except Unauthorized:
            raise Refused("unauthorized", 401) from None
        request[PRINCIPAL] = principal
        if principal.role != "admin":
            raise Refused("forbidden", 403)
        return Viewer(principal.party_id, f"bearer:{principal.party_id}")
    raw = request.cookies.get(SESSION_COOKIE)
    session = request.app[DASHBOARD].verify(raw) if raw else None
    if session is not None and await svc.ledger.is_logged_out(session.sid):
        session = None
    owner: Principal | None = None
    if session is not None:
        # The token behind the session must still be valid (a revoke or expiry ends the session)
        # and still an admin's; ledger tokens log in as well as the config's.
        with contextlib.suppress(Unauthorized):
            owner = await svc.tokens.authenticate_digest(session.token_digest)
    if session is None or owner is None or owner.role != "admin" or owner.party_id != session.party_id:
        raise LoginRequired(clear_cookie=bool(raw))
    request[PRINCIPAL] = Principal(session.party_id, "admin", None)
    return Viewer(session.party_id, f"session:{session.sid}", session)


def check_csrf(request: web.Request, viewer: Viewer, form: Mapping[str, Any]) -> None:
    token = form.get("csrf")
    if not request.app[DASHBOARD].csrf_ok(viewer.binding, token if isinstance(token, str) else None):
        raise Refused("csrf_failed", 403)


def new_login_nonce() -> str:
    """The login form's double-submit token: in a hidden field and in `LOGIN_COOKIE`."""
    return secrets.token_urlsafe(24)


def check_login_nonce(request: web.Request, form: Mapping[str, Any]) -> None:
    nonce, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE)
    if not (isinstance(nonce, str) and cookie and hmac.compare_digest(nonce, cookie)):
        raise Refused("csrf_failed", 403)


def is_https(request: web.Request) -> bool:
    return request.app[TRUSTED_PROXIES].scheme(request) == "https"


def session_expiry(session: Session) -> dt.datetime:
    return dt.datetime.fromtimestamp(session.expires, dt.UTC)
