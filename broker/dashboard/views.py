"""The dashboard's request handlers: read the request, ask `queries` (`broker.store.overview`), render a
template.

Server-rendered HTML with no JavaScript, for administrators only (`sessions.viewer_of`). No page shows
an identity code, a name or any free text: only ids, codes, states and times. Every read of case
data is recorded in the audit before the page is sent, as the API does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any

from aiohttp import web

from broker.dashboard.charts import DASH, stats_charts
from broker.dashboard.i18n import area_name, catalog, lang_of
from broker.dashboard.sessions import (
    DASHBOARD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginRequired,
    Refused,
    check_csrf,
    check_login_nonce,
    is_https,
    new_login_nonce,
    session_expiry,
    viewer_of,
)
from broker.dashboard.templating import REFRESH_S, page_of, render, url
from broker.domain.deadlines import DEADLINES
from broker.domain.errors import Conflict, InvalidInput, NotFound, Unauthorized
from broker.domain.months import MONTH, shift_month
from broker.domain.workdays import HELSINKI
from broker.runtime.services import SERVICES
from broker.security.auth import PRINCIPAL, hash_token
from broker.store import overview as queries
from broker.store.ledger import utcnow
from broker.store.statistics import parse_stats_query
from broker.web.cursors import parse_position
from schemas.hetu import contains_identity_code

__all__ = ["case_lookup", "login", "login_form", "logout", "overview", "replay", "statistics_page"]

STATS_DEFAULT_MONTHS = 12
_FLASHES = {"replayed": "flash_replayed", "already": "flash_already", "missing": "flash_missing"}

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _message(request: web.Request, key: str, status: int) -> web.Response:
    return render("message.html", page_of(request, key), status, key=key)


def _page(handler: Handler) -> Handler:
    """A dashboard page: a refusal becomes its message page, a missing session the login form."""
    @wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Refused as refused:
            return _message(request, refused.key, refused.status)
        except LoginRequired as missing:
            response = _redirect(url(request, "dashboard_login_form"))
            if missing.clear_cookie:
                response.del_cookie(SESSION_COOKIE, path="/dashboard")
            return response
    return wrapped


@_page
async def overview(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    svc = request.app[SERVICES]
    lang = lang_of(request)
    ov = await queries.load_overview(svc.ledger, svc.settings, svc.classification,
                                     partial(area_name, svc.classification, lang=lang))
    # The overview names cases (overdue ones, dead letters): who saw which is recorded before the
    # page is sent, as for every other read of case data.
    actor = viewer.actor(request)
    await svc.cases.record_reads(actor, "case_listed", [i.referral_id for i in ov.overdue])
    await svc.cases.record_reads(actor, "dead_letter_read", [d.referral_id for d in ov.dead_letters])
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    page = page_of(request, "overview", viewer, csrf, refresh_s=REFRESH_S)
    oldest = [r.oldest_unanswered_working_days for r in ov.areas
              if r.oldest_unanswered_working_days is not None]
    totals = [sum(r.open for r in ov.areas), sum(r.unanswered for r in ov.areas),
              sum(r.overdue for r in ov.areas), max(oldest) if oldest else DASH,
              "", "", sum(r.replied_30d for r in ov.areas), sum(r.dead_letters for r in ov.areas)]
    return render("overview.html", page, ov=ov, totals=totals, overdue_limit=queries.OVERDUE_LIST_LIMIT,
                  flash=_FLASHES.get(request.query.get("done", "")))


@dataclass(frozen=True)
class _Deadline:
    name: str
    due: dt.datetime
    met: dt.datetime | None
    late: bool


def _deadlines(case: Mapping[str, Any], now: dt.datetime) -> list[_Deadline]:
    """The case's stored deadlines, each marked late when it passed unmet while the case is open."""
    is_open = case["state"] in queries.OPEN_STATES
    out = []
    for rule in DEADLINES:
        due, met = case[rule.due_column], case[rule.met_column]
        if due is not None:
            out.append(_Deadline(rule.name, due, met, met is None and is_open and due < now))
    return out


@_page
async def case_lookup(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    svc = request.app[SERVICES]
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    q = request.query.get("q", "").strip()[:128]

    def page(outcome: str, status: int = 200, **context: Any) -> web.Response:
        # The language links repeat the search only when it named a case (an id or a Kela
        # reference): a search for anything else (a name typed by mistake) must not travel on
        # in a URL.
        query = {"q": q} if outcome in ("matches", "case") else {}
        p = page_of(request, "lookup", viewer, csrf, route="dashboard_cases", query=query)
        return render("lookup.html", p, status, outcome=outcome, **context)

    # An identity code typed into the lookup box is not searched for, echoed, or kept in a URL.
    if not queries.is_uuid(q) and contains_identity_code(q):
        return page("refused", 400)
    found = await queries.find_cases(svc.ledger, svc.settings, q) if q else []
    # Every read of case data is audited, as GET /v1/referrals/{id} does; the record commits before
    # the page is sent.
    await svc.cases.record_reads(viewer.actor(request), "case_read", [c["referral_id"] for c in found])
    if not found:
        return page("not_found", 404)
    if len(found) > 1:
        return page("matches", found=found)
    case = found[0]
    deadlines = _deadlines(case, utcnow())
    name = area_name(svc.classification, case["area"], lang_of(request)) if case["area"] else ""
    return page("case", case=case, deadlines=deadlines, late=any(d.late for d in deadlines), area_name=name,
                timeline=await queries.case_timeline(svc.ledger, case["referral_id"]))


@_page
async def replay(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    check_csrf(request, viewer, await request.post())
    dl_id = parse_position(request.match_info["dl_id"])
    outcome = "missing"
    if dl_id is not None:
        try:
            await request.app[SERVICES].cases.replay_dead_letter(dl_id, actor=viewer.actor(request))
            outcome = "replayed"
        except NotFound:
            outcome = "missing"
        except Conflict:
            outcome = "already"
    return _redirect(url(request, "dashboard", done=outcome, fragment="dead-letters"))


def _login_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    nonce = new_login_nonce()
    page = page_of(request, "login_title", route="dashboard_login_form")
    response = render("login.html", page, status, nonce=nonce, error=error)
    response.set_cookie(LOGIN_COOKIE, nonce, path="/dashboard/login", httponly=True,
                        samesite="Strict", secure=is_https(request), max_age=3600)
    return response


@_page
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


@_page
async def login(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    form = await request.post()
    check_login_nonce(request, form)
    token = form.get("token")
    try:
        principal = await svc.tokens.authenticate(f"Bearer {token}" if isinstance(token, str) else None)
    except Unauthorized:
        return _login_page(request, "unauthorized", 401)
    request[PRINCIPAL] = principal
    if principal.role != "admin":
        raise Refused("forbidden", 403)
    assert isinstance(token, str)
    keys = request.app[DASHBOARD]
    value, _session = keys.issue(principal.party_id, hash_token(token.strip()))
    response = _redirect(url(request, "dashboard"))
    response.set_cookie(SESSION_COOKIE, value, path="/dashboard", httponly=True, samesite="Strict",
                        secure=is_https(request), max_age=keys.ttl_s)
    response.del_cookie(LOGIN_COOKIE, path="/dashboard/login")
    return response


@_page
async def logout(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    check_csrf(request, viewer, await request.post())
    if viewer.session is not None:
        await request.app[SERVICES].ledger.record_logout(viewer.session.sid, session_expiry(viewer.session))
    response = _redirect(url(request, "dashboard_login_form"))
    response.del_cookie(SESSION_COOKIE, path="/dashboard")
    return response


@_page
async def statistics_page(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    svc = request.app[SERVICES]
    lang = lang_of(request)
    t = catalog(lang)
    csrf = request.app[DASHBOARD].csrf_token(viewer.binding)
    current = utcnow().astimezone(HELSINKI).strftime("%Y-%m")
    raw_to = request.query.get("to", "").strip()
    raw_from = request.query.get("from", "").strip()
    raw_area = request.query.get("area", "").strip()
    end = raw_to or current
    start = raw_from or shift_month(end if MONTH.fullmatch(end) else current,
                                     1 - STATS_DEFAULT_MONTHS)
    params = {"from": start, "to": end, **({"area": raw_area} if raw_area else {})}
    # Only well-formed values are echoed back into the form and the language links.
    shown = {k: v for k, v in params.items()
             if (MONTH.fullmatch(v) if k != "area" else v in svc.classification.areas)}
    page = page_of(request, "statistics", viewer, csrf, route="dashboard_statistics", query=shown)
    areas = [(code, area_name(svc.classification, code, lang)) for code in svc.classification.areas]
    try:
        query = parse_stats_query(params, svc.classification, own_area=None)
    except InvalidInput as error:
        errors = []
        for item in error.errors:
            loc = item.get("loc") or []
            reason = t.get(f"err_{item.get('type', '')}", str(item.get("msg", "")))
            errors.append((str(loc[-1]) if loc else "?", reason))
        return render("statistics.html", page, 422, shown=shown, areas=areas, errors=errors)
    area = query.areas[0] if raw_area else None
    rows = await queries.load_statistics(svc.ledger, svc.classification, query, combined=area is None)
    area_text = t["all_areas"] if area is None else f"{area} {area_name(svc.classification, area, lang)}"
    return render("statistics.html", page, shown=shown, areas=areas, errors=[], area=area,
                  area_text=area_text, months=query.months, charts=stats_charts(rows, t, area_text))
