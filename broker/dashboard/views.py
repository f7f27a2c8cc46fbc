"""Operators' dashboard (DESIGN § 7, § 8): what waits, where, and for how long.

Server-rendered HTML with no JavaScript, for administrators only. Every figure on the overview comes
from a grouped aggregate query over an existing index; no page ever loads a whole case, and no page
shows an identity code, a name or any free text: only ids, codes, states and times.

Access: `Authorization: Bearer <admin token>`, or the login form, which trades the admin token for a
session cookie (HttpOnly, SameSite=Strict, Secure over https) holding an HMAC-signed session id, its
expiry and the digest of the token it was opened with (checked on every page, so revoking the token
ends the session). The signing key is made once and kept in the ledger (`service_keys`), and logouts
are recorded there too, so every replica accepts the same sessions and a logout on one ends the
session on all, with no sticky sessions. State-changing forms carry a CSRF token bound to the session
(HMAC of the session id), and the login form a double-submit token.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import html
import json
import math
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.config.settings import Settings
from broker.domain.errors import Conflict, InvalidInput, NotFound, Unauthorized
from broker.domain.routing import Classification
from broker.domain.workdays import HELSINKI, working_days_between
from broker.jobs.sla_clock import DEADLINE_COLUMNS
from broker.runtime.services import SERVICES, Services
from broker.security.audit import Actor
from broker.security.auth import PRINCIPAL, Principal, hash_token
from broker.security.rate_limits import CREDENTIAL_COOKIES
from broker.store.ledger import Ledger, is_referral_id, utcnow
from broker.store.statistics import SMALL as STATS_SMALL
from broker.store.statistics import StatsQuery, compute_statistics, parse_stats_query
from broker.store.tables import OPEN_STATES, cases, dead_letters, events
from broker.web.cursors import parse_position
from broker.web.errors import REQUEST_ID
from schemas.enums import Finding, Outcome, ReferralQuality
from schemas.hetu import contains_identity_code

__all__ = [
    "DASHBOARD",
    "LABELS",
    "AreaRow",
    "DashboardKeys",
    "Overview",
    "load_overview",
    "load_statistics",
    "setup_dashboard",
]


SESSION_COOKIE = "handoff_dashboard"
LOGIN_COOKIE = "handoff_dashboard_login"
SESSION_TTL_S = 8 * 3600
REFRESH_S = 30
LATENCY_WINDOW = dt.timedelta(days=30)
OVERDUE_LIST_LIMIT = 50
DEAD_LETTER_LIST_LIMIT = 50

_CSP = ("default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# An identity code typed into the lookup box must not be searched for, echoed, or kept in a URL
# any longer than it takes to refuse it.
_CODE = re.compile(r"[a-z0-9_]{1,40}")


# --- labels ------------------------------------------------------------------------------------

LANGS = ("fi", "sv", "en")

LABELS: dict[str, dict[str, str]] = {
    "fi": {
        "title": "Välityksen tilannekuva",
        "overview": "Yleiskuva",
        "lookup": "Hae tapaus",
        "case": "Tapaus",
        "lookup_placeholder": "lähetteen tunnus tai Kelan viite",
        "search": "Hae",
        "logout": "Kirjaudu ulos",
        "login_title": "Kirjaudu tilannekuvaan",
        "login_hint": "Anna ylläpitäjän tunniste (admin token).",
        "token": "Tunniste",
        "login": "Kirjaudu",
        "areas": "Alueet",
        "area": "Alue",
        "area_name": "Järjestäjä",
        "open": "Avoimia",
        "unanswered": "Vastaamatta",
        "overdue": "Myöhässä",
        "oldest_unanswered": "Vanhin vastaamaton (työpäiviä)",
        "p50": "1. vastaus p50 (h)",
        "p90": "1. vastaus p90 (h)",
        "replied_30d": "Vastattuja (30 pv)",
        "dead_letters": "Toimittamatta jääneet viestit",
        "dead_count": "Toimittamatta",
        "total": "Yhteensä",
        "overdue_cases": "Myöhässä olevat tapaukset",
        "overdue_limit": "enintään {n}, uusin määräaika ensin",
        "deadline": "Määräaika",
        "due_at": "Erääntyi",
        "referral_id": "Lähetteen tunnus",
        "kela_reference": "Kelan viite",
        "state": "Tila",
        "kind": "Laji",
        "urgency": "Kiireellisyys",
        "received_at": "Vastaanotettu",
        "delivered_at": "Toimitettu",
        "first_reply_at": "Ensimmäinen vastaus",
        "closed_at": "Suljettu",
        "deadlines": "Määräajat",
        "met_at": "Täytetty",
        "status": "Tilanne",
        "timeline": "Tapahtumat",
        "event_type": "Tapahtuma",
        "time": "Aika",
        "actor": "Osapuoli",
        "detail": "Tieto",
        "reply_status": "vastauksen tila",
        "replay": "Lähetä uudelleen",
        "reason": "Syy",
        "attempts": "Yrityksiä",
        "created_at": "Luotu",
        "none": "Ei yhtään.",
        "not_found": "Tapausta ei löytynyt.",
        "matches": "Useita osumia: valitse tapaus.",
        "hetu_refused": "Henkilötunnuksella ei voi hakea. Hae lähetteen tunnuksella tai Kelan viitteellä.",
        "forbidden": "Tämä sivu on vain ylläpitäjille.",
        "unauthorized": "Tunniste ei kelpaa.",
        "csrf_failed": "Lomakkeen tarkiste puuttuu tai on väärä. Lataa sivu uudelleen.",
        "flash_replayed": "Viesti lähetettiin uudelleen.",
        "flash_already": "Viesti oli jo lähetetty uudelleen.",
        "flash_missing": "Viestiä ei ole.",
        "times_note": "Ajat Suomen aikaa.",
        "refresh_note": "Sivu päivittyy {n} sekunnin välein.",
        "generated_at": "Päivitetty",
        "overdue_marker": "myöhässä",
        "met": "täytetty",
        "pending": "odottaa",
        "not_applicable": "ei koske",
        "acknowledge": "vastaanoton kuittaus",
        "assessment": "palvelutarpeen arvion aloitus",
        "decision": "päätös",
        "language": "Kieli",
        "statistics": "Tilastot",
        "stats_title": "Tilastot kuukausittain",
        "stats_intro": "Pseudonyymit koontiluvut vastaanottokuukauden (Suomen aika) mukaan; "
                       "ei tapauskohtaisia tietoja.",
        "from_month": "Alkaen (kk)",
        "to_month": "Asti (kk)",
        "all_areas": "Kaikki alueet yhteensä",
        "show": "Näytä",
        "month": "Kuukausi",
        "referrals": "Lähetteitä",
        "chart_first_reply": "Aika ensimmäiseen vastaukseen (tuntia)",
        "median_h": "Mediaani (h)",
        "p90_h": "90. persentiili (h)",
        "chart_overdue_share": "Myöhässä olevien osuus lähetteistä",
        "overdue_share": "Myöhässä / lähetteet",
        "chart_outcomes": "Lopputulokset",
        "chart_findings": "Rakenteelliset havainnot",
        "chart_quality": "Lähetteen laatu (vastaanottajan arvio)",
        "hidden_note": "= alle 5 tapausta: piilotettu (tai ei tapauksia).",
        "combined_note": "Kaikkien alueiden luku piilotetaan, jos jonkin alueen osuus siitä on piilotettu.",
        "chart_desc": "{title}, {area}, {span}: pylväs kuukautta kohden, arvo pylvään yllä. Samat luvut "
                      "ovat kaavion alla olevassa taulukossa. {dash} = alle 5 tapausta: piilotettu.",
        "bad_parameter": "Virheellinen parametri",
        "err_month_format": "anna kuukausi muodossa VVVV-KK",
        "err_range": "alkukuukausi on loppukuukauden jälkeen",
        "err_range_too_long": "enintään 36 kuukautta kerrallaan",
        "err_unknown_area": "tuntematon aluekoodi",
        "o_services_arranged": "Palvelut järjestetty",
        "o_client_declined": "Asiakas kieltäytyi",
        "o_no_need": "Ei tarvetta",
        "o_unreachable": "Ei tavoitettu",
        "o_moved": "Muuttanut",
        "o_other": "Muu",
        "f_housing_shortage": "Asuntopula",
        "f_benefit_gap": "Aukko etuuksissa",
        "f_service_gap": "Aukko palveluissa",
        "f_long_waiting_time": "Pitkä odotusaika",
        "f_language_barrier": "Kielimuuri",
        "f_digital_barrier": "Digitaalinen este",
        "f_cooperation_gap": "Yhteistyön puute",
        "f_other": "Muu",
        "q_sufficient": "Riittävä",
        "q_insufficient_information": "Tiedot riittämättömät",
        "q_not_needed": "Ei tarpeellinen",
    },
    "sv": {
        "title": "Lägesbild för överlämningar",
        "overview": "Översikt",
        "lookup": "Sök ärende",
        "case": "Ärende",
        "lookup_placeholder": "remissens id eller FPA:s referens",
        "search": "Sök",
        "logout": "Logga ut",
        "login_title": "Logga in i lägesbilden",
        "login_hint": "Ange administratörens token.",
        "token": "Token",
        "login": "Logga in",
        "areas": "Områden",
        "area": "Område",
        "area_name": "Anordnare",
        "open": "Öppna",
        "unanswered": "Obesvarade",
        "overdue": "Försenade",
        "oldest_unanswered": "Äldsta obesvarade (arbetsdagar)",
        "p50": "1:a svar p50 (h)",
        "p90": "1:a svar p90 (h)",
        "replied_30d": "Besvarade (30 d)",
        "dead_letters": "Olevererade meddelanden",
        "dead_count": "Olevererade",
        "total": "Totalt",
        "overdue_cases": "Försenade ärenden",
        "overdue_limit": "högst {n}, senaste tidsfrist först",
        "deadline": "Tidsfrist",
        "due_at": "Förföll",
        "referral_id": "Remissens id",
        "kela_reference": "FPA:s referens",
        "state": "Status",
        "kind": "Typ",
        "urgency": "Brådska",
        "received_at": "Mottagen",
        "delivered_at": "Levererad",
        "first_reply_at": "Första svar",
        "closed_at": "Avslutad",
        "deadlines": "Tidsfrister",
        "met_at": "Uppfylld",
        "status": "Läge",
        "timeline": "Händelser",
        "event_type": "Händelse",
        "time": "Tid",
        "actor": "Part",
        "detail": "Uppgift",
        "reply_status": "svarets status",
        "replay": "Skicka igen",
        "reason": "Orsak",
        "attempts": "Försök",
        "created_at": "Skapad",
        "none": "Inga.",
        "not_found": "Inget ärende hittades.",
        "matches": "Flera träffar: välj ärende.",
        "hetu_refused": "Det går inte att söka med personbeteckning. "
                        "Sök med remissens id eller FPA:s referens.",
        "forbidden": "Sidan är endast för administratörer.",
        "unauthorized": "Token är ogiltig.",
        "csrf_failed": "Formulärets kontrollvärde saknas eller är fel. Ladda om sidan.",
        "flash_replayed": "Meddelandet skickades igen.",
        "flash_already": "Meddelandet hade redan skickats igen.",
        "flash_missing": "Meddelandet finns inte.",
        "times_note": "Tider i finsk tid.",
        "refresh_note": "Sidan uppdateras var {n}:e sekund.",
        "generated_at": "Uppdaterad",
        "overdue_marker": "försenad",
        "met": "uppfylld",
        "pending": "väntar",
        "not_applicable": "gäller inte",
        "acknowledge": "mottagningskvittens",
        "assessment": "start av servicebehovsbedömning",
        "decision": "beslut",
        "language": "Språk",
        "statistics": "Statistik",
        "stats_title": "Statistik per månad",
        "stats_intro": "Pseudonyma sammanställningar efter mottagningsmånad (finsk tid); "
                       "inga uppgifter om enskilda ärenden.",
        "from_month": "Från (månad)",
        "to_month": "Till (månad)",
        "all_areas": "Alla områden sammanlagt",
        "show": "Visa",
        "month": "Månad",
        "referrals": "Remisser",
        "chart_first_reply": "Tid till första svar (timmar)",
        "median_h": "Median (h)",
        "p90_h": "90:e percentilen (h)",
        "chart_overdue_share": "Andel försenade av remisserna",
        "overdue_share": "Försenade / remisser",
        "chart_outcomes": "Utfall",
        "chart_findings": "Strukturella iakttagelser",
        "chart_quality": "Remissens kvalitet (mottagarens bedömning)",
        "hidden_note": "= färre än 5 ärenden: dolt (eller inga ärenden).",
        "combined_note": "Summan för alla områden döljs om något områdes andel av den är dold.",
        "chart_desc": "{title}, {area}, {span}: en stapel per månad, värdet ovanför stapeln. Samma siffror "
                      "finns i tabellen under diagrammet. {dash} = färre än 5 ärenden: dolt.",
        "bad_parameter": "Ogiltig parameter",
        "err_month_format": "ange månaden som ÅÅÅÅ-MM",
        "err_range": "startmånaden är efter slutmånaden",
        "err_range_too_long": "högst 36 månader åt gången",
        "err_unknown_area": "okänd områdeskod",
        "o_services_arranged": "Tjänster ordnade",
        "o_client_declined": "Klienten avböjde",
        "o_no_need": "Inget behov",
        "o_unreachable": "Nåddes inte",
        "o_moved": "Har flyttat",
        "o_other": "Annat",
        "f_housing_shortage": "Bostadsbrist",
        "f_benefit_gap": "Lucka i förmåner",
        "f_service_gap": "Lucka i tjänster",
        "f_long_waiting_time": "Lång väntetid",
        "f_language_barrier": "Språkbarriär",
        "f_digital_barrier": "Digital barriär",
        "f_cooperation_gap": "Brister i samarbetet",
        "f_other": "Annat",
        "q_sufficient": "Tillräcklig",
        "q_insufficient_information": "Otillräckliga uppgifter",
        "q_not_needed": "Inte behövlig",
    },
    "en": {
        "title": "Hand-off dashboard",
        "overview": "Overview",
        "lookup": "Find case",
        "case": "Case",
        "lookup_placeholder": "referral id or Kela reference",
        "search": "Search",
        "logout": "Log out",
        "login_title": "Log in to the dashboard",
        "login_hint": "Enter the administrator token.",
        "token": "Token",
        "login": "Log in",
        "areas": "Areas",
        "area": "Area",
        "area_name": "Organiser",
        "open": "Open",
        "unanswered": "Unanswered",
        "overdue": "Overdue",
        "oldest_unanswered": "Oldest unanswered (working days)",
        "p50": "First reply p50 (h)",
        "p90": "First reply p90 (h)",
        "replied_30d": "Replied (30 d)",
        "dead_letters": "Dead letters",
        "dead_count": "Dead letters",
        "total": "Total",
        "overdue_cases": "Overdue cases",
        "overdue_limit": "at most {n}, latest deadline first",
        "deadline": "Deadline",
        "due_at": "Due at",
        "referral_id": "Referral id",
        "kela_reference": "Kela reference",
        "state": "State",
        "kind": "Kind",
        "urgency": "Urgency",
        "received_at": "Received",
        "delivered_at": "Delivered",
        "first_reply_at": "First reply",
        "closed_at": "Closed",
        "deadlines": "Deadlines",
        "met_at": "Met at",
        "status": "Status",
        "timeline": "Timeline",
        "event_type": "Event",
        "time": "Time",
        "actor": "Actor",
        "detail": "Detail",
        "reply_status": "reply status",
        "replay": "Replay",
        "reason": "Reason",
        "attempts": "Attempts",
        "created_at": "Created",
        "none": "None.",
        "not_found": "No case found.",
        "matches": "Several matches: pick a case.",
        "hetu_refused": "Searching by identity code is not possible. Use the referral id or Kela reference.",
        "forbidden": "This page is for administrators only.",
        "unauthorized": "The token is not valid.",
        "csrf_failed": "The form's check value is missing or wrong. Reload the page.",
        "flash_replayed": "The message was replayed.",
        "flash_already": "The message had already been replayed.",
        "flash_missing": "No such message.",
        "times_note": "Times in Finnish time.",
        "refresh_note": "This page refreshes every {n} seconds.",
        "generated_at": "Updated",
        "overdue_marker": "overdue",
        "met": "met",
        "pending": "pending",
        "not_applicable": "n/a",
        "acknowledge": "acknowledgement",
        "assessment": "assessment started",
        "decision": "decision",
        "language": "Language",
        "statistics": "Statistics",
        "stats_title": "Monthly statistics",
        "stats_intro": "Pseudonymous aggregates by month of receipt (Finnish time); no case-level data.",
        "from_month": "From (month)",
        "to_month": "To (month)",
        "all_areas": "All areas combined",
        "show": "Show",
        "month": "Month",
        "referrals": "Referrals",
        "chart_first_reply": "Time to first reply (hours)",
        "median_h": "Median (h)",
        "p90_h": "90th percentile (h)",
        "chart_overdue_share": "Overdue share of referrals",
        "overdue_share": "Overdue / referrals",
        "chart_outcomes": "Outcomes",
        "chart_findings": "Structural findings",
        "chart_quality": "Referral quality (intake's view)",
        "hidden_note": "= fewer than 5 cases: hidden (or no cases).",
        "combined_note": "A combined figure is hidden when any area's part of it is hidden.",
        "chart_desc": "{title}, {area}, {span}: one bar per month, its value above the bar. The same "
                      "numbers are in the table below the chart. {dash} = fewer than 5 cases: hidden.",
        "bad_parameter": "Invalid parameter",
        "err_month_format": "give the month as YYYY-MM",
        "err_range": "the start month is after the end month",
        "err_range_too_long": "at most 36 months at once",
        "err_unknown_area": "unknown area code",
        "o_services_arranged": "Services arranged",
        "o_client_declined": "Client declined",
        "o_no_need": "No need",
        "o_unreachable": "Unreachable",
        "o_moved": "Moved",
        "o_other": "Other",
        "f_housing_shortage": "Housing shortage",
        "f_benefit_gap": "Benefit gap",
        "f_service_gap": "Service gap",
        "f_long_waiting_time": "Long waiting time",
        "f_language_barrier": "Language barrier",
        "f_digital_barrier": "Digital barrier",
        "f_cooperation_gap": "Cooperation gap",
        "f_other": "Other",
        "q_sufficient": "Sufficient",
        "q_insufficient_information": "Insufficient information",
        "q_not_needed": "Not needed",
    },
}

_FLASHES = {"replayed": "flash_replayed", "already": "flash_already", "missing": "flash_missing"}


# --- sessions and CSRF ---------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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

    def _mac(self, purpose: str, data: str) -> bytes:
        return hmac.new(self.key, f"{purpose}|{data}".encode(), hashlib.sha256).digest()

    def issue(self, party_id: str, token_digest: str, now: float) -> tuple[str, Session]:
        session = Session(secrets.token_urlsafe(18), party_id, int(now) + self.ttl_s, token_digest)
        payload = f"{session.sid}:{session.expires}:{party_id}:{token_digest}"
        return f"{_b64(payload.encode())}.{_b64(self._mac('session', payload))}", session

    def verify(self, value: str, now: float) -> Session | None:
        head, _, sig = value.partition(".")
        try:
            payload = _unb64(head).decode()
            given = _unb64(sig)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(given, self._mac("session", payload)):
            return None
        sid, _, rest = payload.partition(":")
        expires, _, rest = rest.partition(":")
        party_id, _, digest = rest.partition(":")
        if not (sid and expires.isdigit() and party_id and digest) or int(expires) <= now:
            return None
        return Session(sid, party_id, int(expires), digest)

    def csrf_token(self, binding: str) -> str:
        return _b64(self._mac("csrf", binding))

    def csrf_ok(self, binding: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(binding))


DASHBOARD: web.AppKey[DashboardKeys] = web.AppKey("dashboard", DashboardKeys)


@dataclass(frozen=True)
class Viewer:
    party_id: str
    binding: str  # what the CSRF token is bound to: the session id, or the bearer party
    session: Session | None = None


def _actor(request: web.Request, viewer: Viewer) -> Actor:
    return Actor(viewer.party_id, "admin", request.get(REQUEST_ID))


class _Respond(Exception):
    """Control flow, not an error: stop the handler and answer with this response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("respond")
        self.response = response


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _html_handler(handler: Handler) -> Handler:
    @wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except _Respond as stop:
            return stop.response
    return wrapped


def _is_https(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


async def _viewer(request: web.Request) -> Viewer:
    """The admin looking at the page, or a response (login redirect, 401, 403) raised as `_Respond`."""
    svc = request.app[SERVICES]
    lang = _lang(request)
    if "Authorization" in request.headers:
        try:
            principal = await svc.tokens.authenticate(request.headers["Authorization"])
        except Unauthorized:
            raise _Respond(_message_page(lang, "unauthorized", 401)) from None
        request[PRINCIPAL] = principal
        if principal.role != "admin":
            raise _Respond(_message_page(lang, "forbidden", 403))
        return Viewer(principal.party_id, f"bearer:{principal.party_id}")
    keys = request.app[DASHBOARD]
    raw = request.cookies.get(SESSION_COOKIE)
    session = keys.verify(raw, utcnow().timestamp()) if raw else None
    if session is not None and await svc.ledger.is_logged_out(session.sid):
        session = None
    owner: Principal | None = None
    if session is not None:
        # The token behind the session must still be valid (a revoke or expiry ends the session)
        # and still an admin's; ledger tokens log in as well as the config's.
        with contextlib.suppress(Unauthorized):
            owner = await svc.tokens.authenticate_digest(session.token_digest)
    if session is None or owner is None or owner.role != "admin" or owner.party_id != session.party_id:
        response = _redirect(_url("/dashboard/login", lang))
        if raw:
            response.del_cookie(SESSION_COOKIE, path="/dashboard")
        raise _Respond(response)
    request[PRINCIPAL] = Principal(session.party_id, "admin", None)
    return Viewer(session.party_id, f"session:{session.sid}", session)


def _check_csrf(request: web.Request, viewer: Viewer, form: Mapping[str, Any]) -> None:
    token = form.get("csrf")
    if not request.app[DASHBOARD].csrf_ok(viewer.binding, token if isinstance(token, str) else None):
        raise _Respond(_message_page(_lang(request), "csrf_failed", 403))


# --- queries -------------------------------------------------------------------------------------


@dataclass
class AreaRow:
    code: str
    name: str
    open: int = 0
    unanswered: int = 0
    overdue: int = 0
    oldest_unanswered_working_days: int | None = None
    first_reply_p50_h: float | None = None
    first_reply_p90_h: float | None = None
    replied_30d: int = 0
    dead_letters: int = 0


@dataclass(frozen=True)
class OverdueItem:
    referral_id: str
    area: str | None
    deadline: str
    due_at: dt.datetime


@dataclass(frozen=True)
class DeadLetterItem:
    id: int
    referral_id: str | None
    area: str | None
    reason: str
    attempts: int
    created_at: dt.datetime


@dataclass
class Overview:
    now: dt.datetime
    areas: list[AreaRow]
    overdue: list[OverdueItem]
    dead_letters: list[DeadLetterItem]
    dead_letters_total: int


def _is_open() -> sa.ColumnElement[bool]:
    """`state IN ('routed', ...)` with the values written into the SQL, as in the partial indexes'
    predicates: neither SQLite nor a generic PostgreSQL plan can prove a partial index usable
    from a bound parameter."""
    return cases.c.state.in_(sa.bindparam("open_states", list(OPEN_STATES), expanding=True,
                                          literal_execute=True, unique=True))


def _waiting_past(due: sa.ColumnElement[Any], met: sa.ColumnElement[Any], now: dt.datetime,
                  ) -> tuple[sa.ColumnElement[bool], ...]:
    """Open, past `due`, not met: the predicate of the partial index ix_cases_open_<deadline>
    (same state list, in the same order, as top-level terms, so both planners can use it)."""
    return _is_open(), met.is_(None), due < now


def _overdue_cases(now: dt.datetime, is_postgres: bool) -> sa.Subquery:
    """(pk, area) of every overdue case, once however many of its deadlines passed.

    Each deadline's terms are the predicate of its partial index. PostgreSQL combines the three
    indexes in one BitmapOr; SQLite cannot use a partial index for a term inside an OR, so there
    it is a UNION of one range scan per index."""
    terms = [_waiting_past(due, met, now) for due, met in DEADLINE_COLUMNS.values()]
    if is_postgres:
        return (sa.select(cases.c.pk, cases.c.area)
                .where(sa.or_(*[sa.and_(*t) for t in terms])).subquery("overdue"))
    return sa.union(*[sa.select(cases.c.pk, cases.c.area).where(*t) for t in terms]).subquery("overdue")


def _area_name(classification: Classification, code: str, lang: str) -> str:
    area = classification.areas.get(code)
    if area is None:
        return ""
    return area.name_sv if lang == "sv" else area.name_fi


async def _areas_with_cases(conn: AsyncConnection, codes: Sequence[str]) -> set[str]:
    """One round trip, one index probe (ix_cases_area_state) per area of the classification."""
    if not codes:
        return set()
    probes = [sa.exists().where(cases.c.area == code).label(f"a{i}") for i, code in enumerate(codes)]
    row = (await conn.execute(sa.select(*probes))).one()
    return {code for code, present in zip(codes, row, strict=True) if present}


async def _first_reply_percentiles(conn: AsyncConnection, is_postgres: bool, since: dt.datetime,
                                   ) -> dict[str, tuple[int, float | None, float | None]]:
    """area -> (n, p50 hours, p90 hours) over cases received since `since` that have a reply.

    PostgreSQL: `percentile_cont` per area. SQLite has no ordered-set aggregates, so a window query
    numbers each area's latencies and returns only the (at most four) order statistics that the
    same linear interpolation needs. Either way the range scan is on `ix_cases_received` and only
    the area and two timestamps of each row are read.
    """
    # The upper bound is always true; it is there because SQLite, without statistics on values,
    # guesses a two-sided range to be small and a one-sided one to be a quarter of the table.
    where = (cases.c.received_at >= since, cases.c.received_at < since + 2 * LATENCY_WINDOW,
             cases.c.first_reply_at.is_not(None))
    out: dict[str, tuple[int, float | None, float | None]] = {}
    if is_postgres:
        hours = sa.cast(sa.extract("epoch", cases.c.first_reply_at - cases.c.received_at),
                        sa.Float) / 3600.0
        rows = await conn.execute(
            sa.select(cases.c.area, sa.func.count(),
                      sa.func.percentile_cont(0.5).within_group(hours),
                      sa.func.percentile_cont(0.9).within_group(hours))
            .where(*where).group_by(cases.c.area))
        for area, n, p50, p90 in rows:
            if area is not None:
                out[area] = (int(n), _float(p50), _float(p90))
        return out
    hours = (sa.func.julianday(cases.c.first_reply_at) - sa.func.julianday(cases.c.received_at)) * 24.0
    # `area || ''` rather than `area`: partitioning by the bare column tempts SQLite into walking
    # all of ix_cases_area_state (a million entries) to skip a sort of one month's rows. Both
    # windows share one definition, so the month's latencies are sorted once.
    recent = (sa.select(cases.c.area.concat("").label("area"), hours.label("h"))
              .where(*where).subquery("recent"))
    window: dict[str, Any] = {"partition_by": recent.c.area, "order_by": recent.c.h}
    ranked = sa.select(
        recent.c.area, recent.c.h,
        sa.func.row_number().over(**window).label("rn"),
        sa.func.count().over(**window, rows=(None, None)).label("n"),
    ).subquery("ranked")
    wanted = []
    for p in (0.5, 0.9):
        low = sa.cast((ranked.c.n - 1) * p, sa.Integer) + 1  # 1-based rank of floor(p * (n - 1))
        wanted += [ranked.c.rn == low, ranked.c.rn == low + 1]
    rows = await conn.execute(sa.select(ranked.c.area, ranked.c.n, ranked.c.rn, ranked.c.h)
                              .where(sa.or_(*wanted)))
    ranks: dict[str, tuple[int, dict[int, float]]] = {}
    for area, n, rn, h in rows:
        if area is not None:
            ranks.setdefault(area, (int(n), {}))[1][int(rn)] = float(h)
    for area, (n, values) in ranks.items():
        out[area] = (n, _interpolate(values, n, 0.5), _interpolate(values, n, 0.9))
    return out


def _interpolate(values: Mapping[int, float], n: int, p: float) -> float | None:
    """percentile_cont: linear interpolation between the 1-based ranks around 1 + p * (n - 1)."""
    pos = (n - 1) * p
    low = math.floor(pos)
    a = values.get(low + 1)
    if a is None:
        return None
    b = values.get(low + 2, a)
    return a + (pos - low) * (b - a)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def load_overview(ledger: Ledger, settings: Settings, classification: Classification,
                        lang: str = "fi", now: dt.datetime | None = None) -> Overview:
    """Every figure of the overview, by grouped aggregate queries (see each for its index)."""
    now = now or utcnow()
    codes = list(classification.areas)
    async with ledger.engine.connect() as conn:
        present = await _areas_with_cases(conn, codes)
        routed = {r.area for r in settings.routes if r.area in classification.areas}
        rows = {c: AreaRow(c, _area_name(classification, c, lang)) for c in codes
                if c in present or c in routed}

        # Open cases by area: index-only on ix_cases_area_state, one seek per (area, state) pair.
        for area, n in await conn.execute(
                sa.select(cases.c.area, sa.func.count())
                .where(cases.c.area.in_(list(rows)), _is_open()).group_by(cases.c.area)):
            if area in rows:
                rows[area].open = int(n)

        # Unanswered (delivered, no first reply) and the oldest of them: the partial index
        # ix_cases_unanswered, whose predicate this is (the state written into the SQL, as there).
        for area, n, oldest in await conn.execute(
                sa.select(cases.c.area, sa.func.count(), sa.func.min(cases.c.delivered_at))
                .where(cases.c.state == sa.literal("delivered", literal_execute=True),
                       cases.c.first_reply_at.is_(None))
                .group_by(cases.c.area)):
            if area in rows:
                rows[area].unanswered = int(n)
                if oldest is not None:
                    rows[area].oldest_unanswered_working_days = working_days_between(oldest, now)

        # Overdue: each case once, whatever deadlines it missed (partial indexes, see above).
        overdue_cases = _overdue_cases(now, ledger.is_postgres)
        for area, n in await conn.execute(
                sa.select(overdue_cases.c.area, sa.func.count()).group_by(overdue_cases.c.area)):
            if area in rows:
                rows[area].overdue = int(n)

        for area, (n, p50, p90) in (await _first_reply_percentiles(
                conn, ledger.is_postgres, now - LATENCY_WINDOW)).items():
            if area in rows:
                row = rows[area]
                row.replied_30d, row.first_reply_p50_h, row.first_reply_p90_h = n, p50, p90

        dead_total = 0
        for area, n in await conn.execute(
                sa.select(dead_letters.c.area, sa.func.count())
                .where(dead_letters.c.replayed_at.is_(None)).group_by(dead_letters.c.area)):
            dead_total += int(n)
            if area in rows:
                rows[area].dead_letters = int(n)

        overdue = await _overdue_list(conn, now)
        dead = await _dead_letter_list(conn)
    return Overview(now, list(rows.values()), overdue, dead, dead_total)


async def _overdue_list(conn: AsyncConnection, now: dt.datetime) -> list[OverdueItem]:
    """Latest-due first, per deadline: the top keys come from the partial index alone (it holds
    the due time and, on SQLite, the row id), and only those rows are then read for their ids."""
    items: list[OverdueItem] = []
    for name, (due, met) in DEADLINE_COLUMNS.items():
        top = (sa.select(cases.c.pk).where(*_waiting_past(due, met, now))
               .order_by(due.desc()).limit(OVERDUE_LIST_LIMIT))
        rows = await conn.execute(sa.select(cases.c.referral_id, cases.c.area, due)
                                  .where(cases.c.pk.in_(top.scalar_subquery())))
        items += [OverdueItem(rid, area, name, at) for rid, area, at in rows]
    items.sort(key=lambda i: i.due_at, reverse=True)
    return items[:OVERDUE_LIST_LIMIT]


async def _dead_letter_list(conn: AsyncConnection) -> list[DeadLetterItem]:
    rows = await conn.execute(
        sa.select(dead_letters.c.id, dead_letters.c.referral_id, dead_letters.c.area,
                  dead_letters.c.reason, dead_letters.c.attempts, dead_letters.c.created_at)
        .where(dead_letters.c.replayed_at.is_(None))
        .order_by(dead_letters.c.id).limit(DEAD_LETTER_LIST_LIMIT))
    return [DeadLetterItem(int(i), rid, area, _reason_code(reason), int(attempts), at)
            for i, rid, area, reason, attempts, at in rows]


def _reason_code(reason: str) -> str:
    """A dead letter's reason as a code (`http_503`, `timeout`), never its free-text details."""
    head = reason.split(":", 1)[0].strip()
    return head if _CODE.fullmatch(head) else "other"


# --- case lookup ---------------------------------------------------------------------------------

_CASE_COLUMNS = (
    cases.c.referral_id, cases.c.kela_reference, cases.c.state, cases.c.area, cases.c.kind,
    cases.c.urgency, cases.c.received_at, cases.c.delivered_at, cases.c.first_reply_at,
    cases.c.closed_at, cases.c.ack_due_at, cases.c.acknowledged_at, cases.c.assessment_due_at,
    cases.c.assessment_started_at, cases.c.decision_due_at, cases.c.decided_at,
)


async def find_cases(ledger: Ledger, settings: Settings, q: str) -> list[dict[str, Any]]:
    """By referral id (unique index), else by Kela reference among the configured Kela senders
    (the unique index on (sender, kela_reference)). Never the referral body."""
    select = sa.select(*_CASE_COLUMNS)
    as_id = q.lower()
    if not is_referral_id(as_id) and _KELA_REFERENCE.fullmatch(q) is None:
        # Neither an id nor a reference could be this (a NUL byte, which PostgreSQL refuses in
        # text, any control character, spaces): nothing to look up.
        return []
    async with ledger.engine.connect() as conn:
        if is_referral_id(as_id):
            row = (await conn.execute(select.where(cases.c.referral_id == as_id))).mappings().first()
            if row is not None:
                return [dict(row)]
        senders = sorted(p.id for p in settings.parties if p.role == "kela")
        if not senders:
            return []
        rows = (await conn.execute(
            select.where(cases.c.sender.in_(senders), cases.c.kela_reference == q)
            .order_by(cases.c.received_at).limit(20))).mappings().all()
    return [dict(r) for r in rows]


# The shape of schemas.models.Key, which every stored Kela reference has.
_KELA_REFERENCE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# Data keys of events that are codes, shown in the timeline; anything else (a reply's message, a
# question, a reason in words, a worker's name) never leaves the ledger through this page.
_EVENT_CODE_KEYS = ("deadline", "via", "from_area", "to_area")


async def case_timeline(ledger: Ledger, referral_id: str) -> list[dict[str, Any]]:
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(events.c.type, events.c.at, events.c.area, events.c.actor, events.c.data)
            .where(events.c.referral_id == referral_id).order_by(events.c.seq))).all()
    timeline = []
    for type_, at, area, actor, raw in rows:
        data = json.loads(raw) if raw else {}
        detail: list[tuple[str, str]] = []
        reply = data.get("reply")
        if isinstance(reply, dict) and isinstance(reply.get("status"), str):
            detail.append(("reply_status", reply["status"]))
        for key in _EVENT_CODE_KEYS:
            value = data.get(key)
            if isinstance(value, str) and _CODE.fullmatch(value):
                detail.append((key, value))
        if type_ == "delivery_failed" and isinstance(data.get("reason"), str):
            detail.append(("reason", _reason_code(data["reason"])))
        if isinstance(data.get("dead_letter_id"), int):
            detail.append(("dead_letter_id", str(data["dead_letter_id"])))
        timeline.append({"type": type_, "at": at, "area": area, "actor": actor, "detail": detail})
    return timeline


# --- rendering -----------------------------------------------------------------------------------

_e = html.escape
_DASH = "\u2013"  # an en dash for "no value"
_OVERDUE = ' class="overdue"'
_CURRENT = ' aria-current="true"'
_NUM = ' class="num"'


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", "fi")
    return lang if lang in LABELS else "fi"


def _url(path: str, lang: str, **params: str) -> str:
    return f"{path}?{urlencode({**params, 'lang': lang})}"


def _time(value: dt.datetime | None) -> str:
    return _DASH if value is None else value.astimezone(HELSINKI).strftime("%Y-%m-%d %H:%M")


def _hours(value: float | None) -> str:
    return _DASH if value is None else f"{value:.1f}"


def _marker(t: Mapping[str, str]) -> str:
    return f'<span class="marker">⚠ {_e(t["overdue_marker"])}</span>'


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _layout(lang: str, title: str, main: str, *, viewer: Viewer | None = None, csrf: str = "",
            refresh: bool = False, path: str = "/dashboard", query: Mapping[str, str] | None = None,
            ) -> str:
    t = LABELS[lang]
    head_refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    links = " ".join(
        f'<a href="{_e(_url(path, code, **(query or {})))}" lang="{code}"'
        f'{_CURRENT if code == lang else ""}>{code.upper()}</a>'
        for code in LANGS)
    nav = ""
    if viewer is not None:
        nav = (
            f'<nav><a href="{_e(_url("/dashboard", lang))}"{_CURRENT if path == "/dashboard" else ""}>'
            f'{_e(t["overview"])}</a>'
            f'<a href="{_e(_url("/dashboard/statistics", lang))}" class="nav-statistics"'
            f'{_CURRENT if path == "/dashboard/statistics" else ""}>{_e(t["statistics"])}</a>'
            f'<form class="lookup" method="get" action="/dashboard/cases">'
            f'<input type="hidden" name="lang" value="{lang}">'
            f'<label>{_e(t["lookup"])} <input type="search" name="q" required maxlength="128" '
            f'placeholder="{_e(t["lookup_placeholder"])}"></label>'
            f'<button type="submit">{_e(t["search"])}</button></form>'
            f'<form class="inline" method="post" action="{_e(_url("/dashboard/logout", lang))}">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            f'<button type="submit" class="secondary">{_e(t["logout"])}</button></form></nav>'
        )
    return (
        f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{head_refresh}'
        f'<title>{_e(title)} · kela-handoff</title>'
        f'<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head><body>'
        f'<header><h1>{_e(t["title"])}</h1>{nav}'
        f'<div class="langs" aria-label="{_e(t["language"])}">{links}</div></header>'
        f'<main>{main}</main></body></html>'
    )


def _message_page(lang: str, key: str, status: int) -> web.Response:
    t = LABELS[lang]
    main = (f'<section class="message"><p>{_e(t[key])}</p>'
            f'<p><a href="{_e(_url("/dashboard/login", lang))}">{_e(t["login"])}</a></p></section>')
    return _html(_layout(lang, t[key], main), status)


def _table(headers: Iterable[tuple[str, bool]], rows: Iterable[str], *, id_: str = "") -> str:
    head = "".join(f'<th scope="col"{_NUM if num else ""}>{_e(h)}</th>' for h, num in headers)
    ident = f' id="{id_}"' if id_ else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _case_link(referral_id: str | None, lang: str) -> str:
    if not referral_id:
        return _DASH
    return f'<a href="{_e(_url("/dashboard/cases", lang, q=referral_id))}"><code>{_e(referral_id)}</code></a>'


def _render_overview(ov: Overview, lang: str, viewer: Viewer, csrf: str, flash: str | None) -> str:
    t = LABELS[lang]
    def num(value: object) -> str:
        return f'<td class="num">{value}</td>'

    area_rows = []
    for r in ov.areas:
        late = r.overdue > 0
        overdue_cell = f"{r.overdue} {_marker(t)}" if late else str(r.overdue)
        area_rows.append(
            f'<tr data-area="{_e(r.code)}"{_OVERDUE if late else ""}>'
            f'<td><code>{_e(r.code)}</code></td><td>{_e(r.name)}</td>'
            f'<td class="num" data-col="open">{r.open}</td>'
            f'<td class="num" data-col="unanswered">{r.unanswered}</td>'
            f'<td class="num" data-col="overdue">{overdue_cell}</td>'
            f'<td class="num" data-col="oldest">'
            f'{_DASH if r.oldest_unanswered_working_days is None else r.oldest_unanswered_working_days}</td>'
            f'<td class="num" data-col="p50">{_hours(r.first_reply_p50_h)}</td>'
            f'<td class="num" data-col="p90">{_hours(r.first_reply_p90_h)}</td>'
            f'<td class="num" data-col="replied">{r.replied_30d}</td>'
            f'<td class="num" data-col="dead">{r.dead_letters}</td></tr>')
    oldest = [r.oldest_unanswered_working_days for r in ov.areas
              if r.oldest_unanswered_working_days is not None]
    area_rows.append(
        f'<tr class="total"><th scope="row" colspan="2">{_e(t["total"])}</th>'
        + num(sum(r.open for r in ov.areas)) + num(sum(r.unanswered for r in ov.areas))
        + num(sum(r.overdue for r in ov.areas)) + num(max(oldest) if oldest else _DASH)
        + num("") + num("") + num(sum(r.replied_30d for r in ov.areas))
        + num(sum(r.dead_letters for r in ov.areas)) + "</tr>")
    areas = _table([(t["area"], False), (t["area_name"], False), (t["open"], True),
                    (t["unanswered"], True), (t["overdue"], True), (t["oldest_unanswered"], True),
                    (t["p50"], True), (t["p90"], True), (t["replied_30d"], True),
                    (t["dead_count"], True)], area_rows, id_="areas")

    if ov.overdue:
        overdue = _table(
            [(t["referral_id"], False), (t["area"], False), (t["deadline"], False), (t["due_at"], False),
             ("", False)],
            (f'<tr class="overdue" data-referral="{_e(i.referral_id)}">'
             f'<td>{_case_link(i.referral_id, lang)}</td>'
             f'<td><code>{_e(i.area or _DASH)}</code></td><td>{_e(t.get(i.deadline, i.deadline))}</td>'
             f'<td>{_time(i.due_at)}</td><td>{_marker(t)}</td></tr>' for i in ov.overdue),
            id_="overdue")
    else:
        overdue = f'<p class="empty">{_e(t["none"])}</p>'

    if ov.dead_letters:
        dead = _table(
            [("id", True), (t["referral_id"], False), (t["area"], False), (t["reason"], False),
             (t["attempts"], True), (t["created_at"], False), ("", False)],
            (f'<tr data-dead-letter="{d.id}"><td class="num">{d.id}</td>'
             f'<td>{_case_link(d.referral_id, lang)}</td><td><code>{_e(d.area or _DASH)}</code></td>'
             f'<td><code>{_e(d.reason)}</code></td><td class="num">{d.attempts}</td>'
             f'<td>{_time(d.created_at)}</td><td>'
             f'<form class="inline" method="post" '
             f'action="{_e(_url(f"/dashboard/dead-letters/{d.id}/replay", lang))}">'
             f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
             f'<button type="submit">{_e(t["replay"])}</button></form></td></tr>'
             for d in ov.dead_letters), id_="dead-letters-table")
    else:
        dead = f'<p class="empty">{_e(t["none"])}</p>'

    flash_html = f'<p class="flash" role="status">{_e(t[flash])}</p>' if flash else ""
    main = (
        f'{flash_html}<p class="meta">{_e(t["generated_at"])} {_time(ov.now)} · {_e(t["times_note"])} '
        f'{_e(t["refresh_note"].format(n=REFRESH_S))}</p>'
        f'<section><h2>{_e(t["areas"])}</h2>{areas}</section>'
        f'<section id="overdue-cases"><h2>{_e(t["overdue_cases"])} '
        f'<small>({_e(t["overdue_limit"].format(n=OVERDUE_LIST_LIMIT))})</small></h2>{overdue}</section>'
        f'<section id="dead-letters"><h2>{_e(t["dead_letters"])} <small>({ov.dead_letters_total})</small>'
        f'</h2>{dead}</section>'
    )
    return _layout(lang, t["overview"], main, viewer=viewer, csrf=csrf, refresh=True)


def _deadline_rows(case: Mapping[str, Any], now: dt.datetime, lang: str) -> tuple[list[str], bool]:
    """The case's stored deadlines as table rows, and whether any of them is overdue now."""
    t = LABELS[lang]
    is_open = case["state"] in OPEN_STATES
    rows, any_late = [], False
    for name, (due_col, met_col) in DEADLINE_COLUMNS.items():
        due, met = case[due_col.name], case[met_col.name]
        if due is None:
            continue
        late = met is None and is_open and due < now
        any_late = any_late or late
        if met is not None:
            status = _e(t["met"])
        elif late:
            status = _marker(t)
        else:
            status = _e(t["pending"])
        rows.append(f'<tr data-deadline="{_e(name)}"{_OVERDUE if late else ""}>'
                    f'<td>{_e(t.get(name, name))}</td><td>{_time(due)}</td><td>{_time(met)}</td>'
                    f'<td>{status}</td></tr>')
    return rows, any_late


def _render_case(case: Mapping[str, Any], timeline: list[dict[str, Any]], now: dt.datetime,
                 lang: str, classification: Classification) -> str:
    t = LABELS[lang]
    deadlines, late = _deadline_rows(case, now, lang)
    area = case["area"]
    area_text = f'<code>{_e(area)}</code> {_e(_area_name(classification, area, lang))}' if area else _DASH
    facts = [
        ("referral_id", f'<code>{_e(case["referral_id"])}</code>'),
        ("kela_reference", f'<code>{_e(case["kela_reference"])}</code>'),
        ("state", f'<code>{_e(case["state"])}</code>' + (f" {_marker(t)}" if late else "")),
        ("area", area_text),
        ("kind", f'<code>{_e(case["kind"])}</code>'),
        ("urgency", f'<code>{_e(case["urgency"])}</code>'),
        ("received_at", _time(case["received_at"])),
        ("delivered_at", _time(case["delivered_at"])),
        ("first_reply_at", _time(case["first_reply_at"])),
        ("closed_at", _time(case["closed_at"])),
    ]
    dl = "".join(f'<dt>{_e(t[k])}</dt><dd data-field="{k}">{v}</dd>' for k, v in facts)
    deadline_table = (_table([(t["deadline"], False), (t["due_at"], False), (t["met_at"], False),
                              (t["status"], False)], deadlines, id_="deadlines")
                      if deadlines else f'<p class="empty">{_e(t["not_applicable"])}</p>')
    events_rows = []
    for ev in timeline:
        detail = ", ".join(f"{_e(t.get(k, k))}: <code>{_e(v)}</code>" for k, v in ev["detail"])
        events_rows.append(
            f'<tr data-event="{_e(ev["type"])}"><td>{_time(ev["at"])}</td>'
            f'<td><code>{_e(ev["type"])}</code></td>'
            f'<td><code>{_e(ev["area"] or _DASH)}</code></td><td><code>{_e(ev["actor"] or _DASH)}</code></td>'
            f'<td>{detail}</td></tr>')
    events_table = _table([(t["time"], False), (t["event_type"], False), (t["area"], False),
                           (t["actor"], False), (t["detail"], False)], events_rows, id_="timeline")
    return (
        f'<section id="case"{_OVERDUE if late else ""}><h2>{_e(t["case"])}</h2>'
        f'<dl class="facts">{dl}</dl></section>'
        f'<section><h2>{_e(t["deadlines"])}</h2>{deadline_table}</section>'
        f'<section><h2>{_e(t["timeline"])}</h2>{events_table}'
        f'<p class="meta">{_e(t["times_note"])}</p></section>'
    )


# --- handlers ------------------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


@_html_handler
async def overview(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    lang = _lang(request)
    svc = _services(request)
    ov = await load_overview(svc.ledger, svc.settings, svc.classification, lang)
    # The overview names cases (overdue ones, dead letters): who saw which is recorded before the
    # page is sent, as for every other read of case data.
    actor = _actor(request, viewer)
    await svc.cases.record_reads(actor, "case_listed", [i.referral_id for i in ov.overdue])
    await svc.cases.record_reads(actor, "dead_letter_read", [d.referral_id for d in ov.dead_letters])
    flash = _FLASHES.get(request.query.get("done", ""))
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    return _html(_render_overview(ov, lang, viewer, csrf, flash))


@_html_handler
async def case_lookup(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    lang = _lang(request)
    t = LABELS[lang]
    svc = _services(request)
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    q = request.query.get("q", "").strip()[:128]
    hetu_like = not _is_uuid(q) and contains_identity_code(q)

    def page(main: str, status: int = 200, *, matched: bool = False) -> web.Response:
        # The language links repeat the search only when it named a case (an id or a Kela
        # reference): a search for anything else (a name typed by mistake) must not travel on
        # in a URL.
        query = {"q": q} if matched else {}
        return _html(_layout(lang, t["lookup"], main, viewer=viewer, csrf=csrf,
                             path="/dashboard/cases", query=query), status)

    if hetu_like:
        return page(f'<section class="message"><p>{_e(t["hetu_refused"])}</p></section>', 400)
    found = await find_cases(svc.ledger, svc.settings, q) if q else []
    # DESIGN § 1: every read of case data is audited, as GET /v1/referrals/{id} does; the record
    # commits before the page is sent.
    await svc.cases.record_reads(_actor(request, viewer), "case_read",
                                 [c["referral_id"] for c in found])
    if not found:
        return page(f'<section class="message"><p>{_e(t["not_found"])}</p></section>', 404)
    if len(found) > 1:
        items = "".join(f'<li>{_case_link(c["referral_id"], lang)} <code>{_e(c["state"])}</code> '
                        f'{_time(c["received_at"])}</li>' for c in found)
        return page(f'<section><p>{_e(t["matches"])}</p><ul>{items}</ul></section>', matched=True)
    case = found[0]
    timeline = await case_timeline(svc.ledger, case["referral_id"])
    return page(_render_case(case, timeline, utcnow(), lang, svc.classification), matched=True)


@_html_handler
async def replay(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    lang = _lang(request)
    _check_csrf(request, viewer, await request.post())
    dl_id = parse_position(request.match_info["dl_id"])
    outcome = "missing"
    if dl_id is not None:
        try:
            await _services(request).cases.replay_dead_letter(dl_id, actor=_actor(request, viewer))
            outcome = "replayed"
        except NotFound:
            outcome = "missing"
        except Conflict:
            outcome = "already"
    return _redirect(_url("/dashboard", lang, done=outcome) + "#dead-letters")


@_html_handler
async def login_form(request: web.Request) -> web.Response:
    lang = _lang(request)
    return _login_page(request, lang)


def _login_page(request: web.Request, lang: str, error: str | None = None,
                status: int = 200) -> web.Response:
    t = LABELS[lang]
    nonce = secrets.token_urlsafe(24)
    error_html = f'<p class="error" role="alert">{_e(t[error])}</p>' if error else ""
    main = (
        f'<section class="login"><h2>{_e(t["login_title"])}</h2>{error_html}'
        f'<p>{_e(t["login_hint"])}</p>'
        f'<form method="post" action="{_e(_url("/dashboard/login", lang))}">'
        f'<input type="hidden" name="csrf" value="{nonce}">'
        f'<label>{_e(t["token"])} <input type="password" name="token" required autocomplete="off" '
        f'autofocus></label> <button type="submit">{_e(t["login"])}</button></form></section>'
    )
    response = _html(_layout(lang, t["login_title"], main, path="/dashboard/login"), status)
    response.set_cookie(LOGIN_COOKIE, nonce, path="/dashboard/login", httponly=True,
                        samesite="Strict", secure=_is_https(request), max_age=3600)
    return response


@_html_handler
async def login(request: web.Request) -> web.Response:
    lang = _lang(request)
    svc = _services(request)
    form = await request.post()
    nonce, token = form.get("csrf"), form.get("token")
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not (isinstance(nonce, str) and cookie and hmac.compare_digest(nonce, cookie)):
        return _message_page(lang, "csrf_failed", 403)
    try:
        principal = await svc.tokens.authenticate(f"Bearer {token}" if isinstance(token, str) else None)
    except Unauthorized:
        return _login_page(request, lang, "unauthorized", 401)
    request[PRINCIPAL] = principal
    if principal.role != "admin":
        return _message_page(lang, "forbidden", 403)
    assert isinstance(token, str)
    value, _session = request.app[DASHBOARD].issue(principal.party_id, hash_token(token.strip()),
                                                   utcnow().timestamp())
    response = _redirect(_url("/dashboard", lang))
    response.set_cookie(SESSION_COOKIE, value, path="/dashboard", httponly=True, samesite="Strict",
                        secure=_is_https(request), max_age=request.app[DASHBOARD].ttl_s)
    response.del_cookie(LOGIN_COOKIE, path="/dashboard/login")
    return response


@_html_handler
async def logout(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    lang = _lang(request)
    _check_csrf(request, viewer, await request.post())
    if viewer.session is not None:
        await _services(request).ledger.record_logout(
            viewer.session.sid, dt.datetime.fromtimestamp(viewer.session.expires, dt.UTC))
    response = _redirect(_url("/dashboard/login", lang))
    response.del_cookie(SESSION_COOKIE, path="/dashboard")
    return response


# --- statistics page (DESIGN § 11) ----------------------------------------------------------------

STATS_DEFAULT_MONTHS = 12
_MONTH_TEXT = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
# Okabe-Ito colours (distinguishable with colour-vision deficiencies); every series also has its
# own text label, and every other series a hatch pattern, so no reading depends on colour.
_PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#6b6b00", "#4d4d4d")
_BAR_H = 44
_ROW_H = 86


def _month_shift(month: str, delta: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _combine(values: Iterable[int | None]) -> int | None:
    """The sum of per-area published counts, or None when any of them is hidden: a combined total
    next to the published areas would otherwise give a hidden area's count away by subtraction."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


async def _monthly_first_reply(ledger: Ledger, query: StatsQuery,
                               ) -> dict[str, dict[str, float | None]]:
    """month -> {median, p90} hours to first reply over all the query's areas together, by the
    same percentile_cont as § 11 (index ix_cases_month_area_reply); null under five cases."""
    hours = (cases.c.first_reply_s / 3600.0).label("h")
    where = (cases.c.received_month.in_(query.months), cases.c.area.in_(query.areas),
             cases.c.first_reply_s.is_not(None))
    found: dict[str, tuple[int, float | None, float | None]] = {}
    async with ledger.engine.connect() as conn:
        if ledger.is_postgres:
            for month, n, p50, p90 in await conn.execute(
                    sa.select(cases.c.received_month, sa.func.count(),
                              sa.func.percentile_cont(0.5).within_group(hours),
                              sa.func.percentile_cont(0.9).within_group(hours))
                    .where(*where).group_by(cases.c.received_month)):
                found[month] = (int(n), _float(p50), _float(p90))
        else:
            window: dict[str, Any] = {"partition_by": cases.c.received_month, "order_by": hours}
            ranked = sa.select(
                cases.c.received_month.label("m"), hours,
                sa.func.row_number().over(**window).label("rn"),
                sa.func.count().over(**window, rows=(None, None)).label("n"),
            ).where(*where).subquery("ranked")
            wanted = []
            for p in (0.5, 0.9):
                low = sa.cast((ranked.c.n - 1) * p, sa.Integer) + 1
                wanted += [ranked.c.rn == low, ranked.c.rn == low + 1]
            ranks: dict[str, tuple[int, dict[int, float]]] = {}
            for month, n, rn, h in await conn.execute(
                    sa.select(ranked.c.m, ranked.c.n, ranked.c.rn, ranked.c.h).where(sa.or_(*wanted))):
                ranks.setdefault(month, (int(n), {}))[1][int(rn)] = float(h)
            for month, (n, values) in ranks.items():
                found[month] = (n, _interpolate(values, n, 0.5), _interpolate(values, n, 0.9))
    out: dict[str, dict[str, float | None]] = {}
    for month, (n, p50, p90) in found.items():
        shown = n >= STATS_SMALL
        out[month] = {"median": round(p50, 1) if shown and p50 is not None else None,
                      "p90": round(p90, 1) if shown and p90 is not None else None}
    return out


async def load_statistics(ledger: Ledger, classification: Classification, query: StatsQuery, *,
                          combined: bool, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per month: `compute_statistics`'s row itself for a single area, or, for all areas
    combined, the sums of its published counts (see `_combine`) and the percentiles over all."""
    rows = await compute_statistics(ledger, classification, query, now=now)
    if not combined:
        return rows
    by_month: dict[str, list[dict[str, Any]]] = {m: [] for m in query.months}
    for row in rows:
        by_month[row["month"]].append(row)
    latency = await _monthly_first_reply(ledger, query) if query.areas else {}
    out = []
    for month, group in by_month.items():
        out.append({
            "month": month, "area": None,
            "referrals": _combine(r["referrals"] for r in group),
            "overdue": _combine(r["overdue"] for r in group),
            "first_reply_hours": latency.get(month, {"median": None, "p90": None}),
            **{name: {key: _combine(r[name][key] for r in group) for key in keys}
               for name, keys in _BREAKDOWNS},
        })
    return out


_BREAKDOWNS: tuple[tuple[str, list[str]], ...] = (
    ("outcomes", [o.value for o in Outcome]),
    ("findings", [f.value for f in Finding]),
    ("referral_quality", [q.value for q in ReferralQuality]),
)


def overdue_share(row: Mapping[str, Any]) -> float | None:
    """Overdue / referrals in per cent, or None when either is hidden or there were no referrals."""
    referrals, overdue = row["referrals"], row["overdue"]
    if referrals is None or overdue is None or referrals == 0:
        return None
    return 100.0 * int(overdue) / int(referrals)


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    values: list[float | None]
    unit: str = "count"  # count | hours | percent


def _value_text(value: float | None, unit: str) -> str:
    if value is None:
        return _DASH
    if unit == "hours":
        return f"{value:.1f}"
    if unit == "percent":
        return f"{value:.1f} %"
    return str(int(value))


def _svg_chart(cid: str, title: str, desc: str, months: Sequence[str], series: Sequence[Series]) -> str:
    """Small multiples: one labelled row of bars per series, a column per month, each bar with its
    value written above it. A hidden value (null) draws no bar, only an en dash, so it can never be
    read as zero; a zero draws no bar and the text 0."""
    n = max(len(months), 1)
    col = max(56, 900 // n)
    left = 8
    width = 2 * left + n * col
    height = 6 + len(series) * _ROW_H + 24
    top_value = max((v for s in series for v in s.values if v is not None), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" id="chart-{cid}" role="img" aria-labelledby="chart-{cid}-title '
        f'chart-{cid}-desc" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-{cid}-title">{_e(title)}</title><desc id="chart-{cid}-desc">{_e(desc)}</desc>'
        f'<defs><pattern id="hatch-{cid}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="2.5" height="6" fill="#ffffff" fill-opacity="0.7"/>'
        f'</pattern></defs>'
    ]
    for i, s in enumerate(series):
        y0 = 6 + i * _ROW_H
        base = y0 + _ROW_H - 8
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<g class="series" data-series="{_e(s.key)}">'
                     f'<text class="series-label" x="{left}" y="{y0 + 13}">{_e(s.label)}</text>'
                     f'<line x1="{left}" y1="{base}" x2="{width - left}" y2="{base}" stroke="#8c959f" '
                     f'stroke-width="1"/>')
        for j, (month, value) in enumerate(zip(months, s.values, strict=True)):
            cx = left + j * col + col / 2
            bar_w = col * 0.56
            text = _value_text(value, s.unit)
            parts.append(f'<g data-month="{month}"><title>{_e(s.label)}, {month}: {_e(text)}</title>')
            if value is None:
                parts.append(f'<text class="na" x="{cx:.1f}" y="{base - 4}" text-anchor="middle">'
                             f'{_DASH}</text>')
            else:
                h = round(_BAR_H * value / top_value, 1) if value > 0 else 0.0
                if h > 0:
                    h = max(h, 1.0)
                    rect = f'x="{cx - bar_w / 2:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h}"'
                    parts.append(f'<rect class="bar" {rect} fill="{colour}"/>')
                    if i % 2:
                        parts.append(f'<rect {rect} fill="url(#hatch-{cid})"/>')
                parts.append(f'<text class="value" x="{cx:.1f}" y="{base - h - 4:.1f}" '
                             f'text-anchor="middle">{_e(text)}</text>')
            parts.append("</g>")
        parts.append("</g>")
    for j, month in enumerate(months):
        parts.append(f'<text class="axis" x="{left + j * col + col / 2:.1f}" y="{height - 8}" '
                     f'text-anchor="middle">{month}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _stats_table(cid: str, t: Mapping[str, str], months: Sequence[str], series: Sequence[Series]) -> str:
    rows = []
    for j, month in enumerate(months):
        cells = "".join(f'<td class="num" data-series="{_e(s.key)}">{_e(_value_text(s.values[j], s.unit))}'
                        f'</td>' for s in series)
        rows.append(f'<tr data-month="{month}"><th scope="row">{month}</th>{cells}</tr>')
    return _table([(t["month"], False), *((s.label, True) for s in series)], rows, id_=f"table-{cid}")


def _stats_charts(rows: Sequence[Mapping[str, Any]], lang: str, area_text: str) -> str:
    t = LABELS[lang]
    months = [r["month"] for r in rows]

    def counts(group: str, prefix: str) -> list[Series]:
        keys = next(keys for name, keys in _BREAKDOWNS if name == group)
        return [Series(k, t[f"{prefix}_{k}"], [r[group][k] for r in rows]) for k in keys]

    first_reply = [Series("median", t["median_h"], [r["first_reply_hours"]["median"] for r in rows], "hours"),
                   Series("p90", t["p90_h"], [r["first_reply_hours"]["p90"] for r in rows], "hours")]
    share = [Series("overdue_share", t["overdue_share"], [overdue_share(r) for r in rows], "percent")]
    share_table = [Series("referrals", t["referrals"], [r["referrals"] for r in rows]),
                   Series("overdue", t["overdue"], [r["overdue"] for r in rows]), *share]
    charts = [
        ("first-reply", t["chart_first_reply"], first_reply, first_reply),
        ("overdue-share", t["chart_overdue_share"], share, share_table),
        ("outcomes", t["chart_outcomes"], counts("outcomes", "o"), counts("outcomes", "o")),
        ("findings", t["chart_findings"], counts("findings", "f"), counts("findings", "f")),
        ("quality", t["chart_quality"], counts("referral_quality", "q"), counts("referral_quality", "q")),
    ]
    span = f"{months[0]}{_DASH}{months[-1]}" if months else ""
    note = f'<p class="meta note">{_DASH} {_e(t["hidden_note"])}</p>'
    out = []
    for cid, title, drawn, tabled in charts:
        desc = t["chart_desc"].format(title=title, area=area_text, span=span, dash=_DASH)
        out.append(f'<section class="stats-chart" id="stats-{cid}"><h2>{_e(title)}</h2>'
                   f'<div class="chart-wrap">{_svg_chart(cid, title, desc, months, drawn)}</div>'
                   f'{_stats_table(cid, t, months, tabled)}{note}</section>')
    return "".join(out)


def _stats_form(lang: str, classification: Classification, start: str, end: str, area: str) -> str:
    t = LABELS[lang]
    options = [f'<option value=""{" selected" if not area else ""}>{_e(t["all_areas"])}</option>']
    options += [f'<option value="{_e(code)}"{" selected" if code == area else ""}>{_e(code)} '
                f'{_e(_area_name(classification, code, lang))}</option>' for code in classification.areas]
    return (
        f'<form class="stats-filter" method="get" action="/dashboard/statistics">'
        f'<input type="hidden" name="lang" value="{lang}">'
        f'<label>{_e(t["from_month"])} <input type="month" name="from" value="{_e(start)}" required '
        f'pattern="[0-9]{{4}}-[0-9]{{2}}" placeholder="YYYY-MM"></label>'
        f'<label>{_e(t["to_month"])} <input type="month" name="to" value="{_e(end)}" required '
        f'pattern="[0-9]{{4}}-[0-9]{{2}}" placeholder="YYYY-MM"></label>'
        f'<label>{_e(t["area"])} <select name="area">{"".join(options)}</select></label>'
        f'<button type="submit">{_e(t["show"])}</button></form>'
    )


@_html_handler
async def statistics_page(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    lang = _lang(request)
    t = LABELS[lang]
    svc = _services(request)
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    current = utcnow().astimezone(HELSINKI).strftime("%Y-%m")
    raw_to = request.query.get("to", "").strip()
    raw_from = request.query.get("from", "").strip()
    raw_area = request.query.get("area", "").strip()
    end = raw_to or current
    start = raw_from or _month_shift(end if _MONTH_TEXT.fullmatch(end) else current,
                                     1 - STATS_DEFAULT_MONTHS)
    params = {"from": start, "to": end, **({"area": raw_area} if raw_area else {})}
    # Only well-formed values are echoed back into the form and the language links.
    shown = {k: v for k, v in params.items()
             if (_MONTH_TEXT.fullmatch(v) if k != "area" else v in svc.classification.areas)}

    def page(main: str, status: int = 200) -> web.Response:
        form = _stats_form(lang, svc.classification, shown.get("from", ""), shown.get("to", ""),
                           shown.get("area", ""))
        head = (f'<section class="stats-head"><h2>{_e(t["stats_title"])}</h2>'
                f'<p class="meta">{_e(t["stats_intro"])} {_e(t["times_note"])}</p>{form}</section>')
        return _html(_layout(lang, t["statistics"], head + main, viewer=viewer, csrf=csrf,
                             path="/dashboard/statistics", query=shown), status)

    try:
        query = parse_stats_query(params, svc.classification, own_area=None)
    except InvalidInput as error:
        items = []
        for item in error.errors:
            loc = item.get("loc") or []
            param = str(loc[-1]) if loc else "?"
            reason = t.get(f"err_{item.get('type', '')}", str(item.get("msg", "")))
            items.append(f'<li data-param="{_e(param)}">{_e(t["bad_parameter"])} <code>{_e(param)}</code>: '
                         f'{_e(reason)}</li>')
        return page(f'<section class="message error-list" role="alert"><ul class="error">{"".join(items)}'
                    f'</ul></section>', 422)
    area = query.areas[0] if raw_area else None
    rows = await load_statistics(svc.ledger, svc.classification, query, combined=area is None)
    if area is None:
        area_text = t["all_areas"]
        note = f'<p class="meta">{_e(t["combined_note"])}</p>'
    else:
        area_text = f"{area} {_area_name(svc.classification, area, lang)}"
        note = ""
    main = (f'<p class="meta stats-scope" data-area="{_e(area or "")}"><strong>{_e(area_text)}</strong> · '
            f'{query.months[0]}{_DASH}{query.months[-1]}</p>{note}{_stats_charts(rows, lang, area_text)}')
    return page(main)


CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; --brand: #003580;
        --warn: #9a3412; --warn-bg: #ffedd5; --ok: #0a5c36; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 "DejaVu Sans", "Liberation Sans", system-ui, sans-serif;
       color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem 1.5rem;
         padding: .7rem 1.5rem; background: var(--brand); color: #fff; }
header h1 { margin: 0; font-size: 1.15rem; }
header a { color: #fff; }
nav { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem 1.25rem; flex: 1; }
.langs { display: flex; gap: .5rem; }
.langs a[aria-current] { font-weight: 700; text-decoration: none; }
main { padding: 1rem 1.5rem 2rem; max-width: 1280px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
          padding: .75rem 1rem 1rem; margin: 0 0 1rem; }
h2 { font-size: 1.05rem; margin: .2rem 0 .6rem; }
h2 small { color: var(--muted); font-weight: 400; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: middle; }
thead th { background: #eef2f6; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total th, tr.total td { font-weight: 700; border-top: 2px solid var(--fg); }
tr.overdue td { background: var(--warn-bg); }
tr.overdue td:first-child { box-shadow: inset 4px 0 0 var(--warn); }
section.overdue { border-left: 4px solid var(--warn); }
.marker { color: var(--warn); font-weight: 700; white-space: nowrap; }
code { font: .85rem/1.2 "DejaVu Sans Mono", monospace; }
.meta, .empty { color: var(--muted); font-size: .85rem; margin: .2rem 0 .8rem; }
.flash { background: #dcfce7; color: var(--ok); padding: .5rem .8rem; border-radius: 4px; }
.error { background: var(--warn-bg); color: var(--warn); padding: .5rem .8rem; border-radius: 4px; }
form.inline { display: inline; margin: 0; }
form.lookup { display: flex; gap: .4rem; align-items: center; }
input[type=search], input[type=password] { padding: .3rem .5rem; border: 1px solid var(--line);
         border-radius: 4px; min-width: 18rem; font: inherit; }
button { padding: .3rem .8rem; border: 1px solid var(--brand); border-radius: 4px; font: inherit;
         background: var(--brand); color: #fff; cursor: pointer; }
header button { background: #fff; color: var(--brand); border-color: #fff; }
header button.secondary { background: transparent; color: #fff; }
td[data-col="overdue"] { white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
section.login { max-width: 40rem; }
nav a[aria-current] { font-weight: 700; text-decoration: none; }
form.stats-filter { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
form.stats-filter input, form.stats-filter select { padding: .3rem .5rem; border: 1px solid var(--line);
         border-radius: 4px; font: inherit; }
.chart-wrap { overflow-x: auto; margin: 0 0 .6rem; }
svg.chart { display: block; max-width: none; }
svg.chart text { font: 11px "DejaVu Sans", "Liberation Sans", sans-serif; fill: var(--fg); }
svg.chart text.series-label { font-size: 12px; font-weight: 700; }
svg.chart text.value { font-weight: 600; }
svg.chart text.na { font-size: 14px; font-weight: 700; fill: var(--muted); }
svg.chart text.axis { fill: var(--muted); }
section.stats-chart table { width: auto; min-width: 24rem; }
.note { margin-top: .4rem; }
ul.error { margin: 0; padding: .5rem .8rem .5rem 2rem; }
"""


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(text=CSS, content_type="text/css", charset="utf-8")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/dashboard" or request.path.startswith("/dashboard/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value


async def load_dashboard_keys(app: web.Application, ledger: Ledger) -> None:
    """Called by the composition root once the ledger is migrated."""
    app[DASHBOARD] = DashboardKeys(await ledger.shared_key("dashboard"))


def setup_dashboard(app: web.Application) -> None:
    """Register the dashboard's routes and its response headers (keys: `load_dashboard_keys`)."""
    app.on_response_prepare.append(_security_headers)
    # A session cookie is a credential: the rate limits charge its party, not its address.
    app[CREDENTIAL_COOKIES] = app.get(CREDENTIAL_COOKIES, frozenset()) | {SESSION_COOKIE}
    app.router.add_get("/dashboard", overview, name="dashboard")
    app.router.add_get("/dashboard/cases", case_lookup, name="dashboard_cases")
    app.router.add_get("/dashboard/statistics", statistics_page, name="dashboard_statistics")
    app.router.add_post("/dashboard/dead-letters/{dl_id}/replay", replay, name="dashboard_replay")
    app.router.add_get("/dashboard/login", login_form, name="dashboard_login_form")
    app.router.add_post("/dashboard/login", login, name="dashboard_login")
    app.router.add_post("/dashboard/logout", logout, name="dashboard_logout")
    app.router.add_get("/dashboard/static/dashboard.css", stylesheet, name="dashboard_css")
