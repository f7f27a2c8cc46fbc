"""The dashboard's routes, templates, stylesheet and response headers, set up on the service's app.

Every route is named; pages build their links from these names (`templating.url`). The stylesheet is
a package file (`static/dashboard.css`) served under the named static route `dashboard_static`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from broker.dashboard import views
from broker.dashboard.sessions import SESSION_COOKIE
from broker.dashboard.templating import setup_templates
from broker.security.headers import BASE_HEADERS, HTML_HEADERS
from broker.security.rate_limits import CREDENTIAL_COOKIES

__all__ = ["setup_dashboard"]

PREFIX = "/dashboard"


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The service's one header policy on everything under /dashboard: pages, redirects, the stylesheet."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        for name, value in {**BASE_HEADERS, **HTML_HEADERS}.items():
            response.headers[name] = value


def setup_dashboard(app: web.Application) -> None:
    """Register the dashboard's routes, templates and response headers (keys: `load_dashboard_keys`)."""
    setup_templates(app)
    app.on_response_prepare.append(_security_headers)
    # A session cookie is a credential: the rate limits charge its party, not its address.
    app[CREDENTIAL_COOKIES] = app.get(CREDENTIAL_COOKIES, frozenset()) | {SESSION_COOKIE}
    router = app.router
    router.add_get(PREFIX, views.overview, name="dashboard")
    router.add_get(f"{PREFIX}/cases", views.case_lookup, name="dashboard_cases")
    router.add_get(f"{PREFIX}/statistics", views.statistics_page, name="dashboard_statistics")
    router.add_post(PREFIX + "/dead-letters/{dl_id}/replay", views.replay, name="dashboard_replay")
    router.add_get(f"{PREFIX}/login", views.login_form, name="dashboard_login_form")
    router.add_post(f"{PREFIX}/login", views.login, name="dashboard_login")
    router.add_post(f"{PREFIX}/logout", views.logout, name="dashboard_logout")
    # The package is installed as files (setuptools package-data): the directory is a real path.
    router.add_static(f"{PREFIX}/static", Path(__file__).parent / "static", name="dashboard_static")
