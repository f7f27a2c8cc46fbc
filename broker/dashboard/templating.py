"""Jinja2 for the dashboard (through aiohttp-jinja2): the environment, its filters, and the one page
context every template gets.

Autoescape is on for every `.html` template: a value from the ledger is text, never markup. Template
sources are written one element or tag per line for reading; `JoinLines` joins the lines before
compiling (a newline and the indentation after it are dropped), so a page is the same compact HTML the
tests and the browser read, and a space the page needs is written inside a line. URLs come from the
named routes (`request.app.router[name].url_for()`), with the page's language as the last parameter.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from jinja2.ext import Extension

from broker.dashboard.charts import DASH
from broker.dashboard.i18n import LANGS, catalog, lang_of
from broker.dashboard.sessions import Viewer
from broker.domain.workdays import HELSINKI

__all__ = ["REFRESH_S", "JoinLines", "Link", "Page", "page_of", "render", "setup_templates", "url"]

REFRESH_S = 30
_NEWLINE_AND_INDENT = re.compile(r"\n[ \t]*")


class JoinLines(Extension):
    """Join a template's source lines: the page's whitespace is what a line holds, not its layout."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _NEWLINE_AND_INDENT.sub("", source)


def url(request: web.Request, name: str, parts: Mapping[str, str] | None = None, *,
        lang: str | None = None, fragment: str | None = None, **query: str) -> str:
    """The named route's URL with `query` and the language (the request's, by default) last."""
    found = request.app.router[name].url_for(**(parts or {}))
    found = found.with_query({**query, "lang": lang or lang_of(request)})
    return str(found.with_fragment(fragment) if fragment else found)


def helsinki_time(value: dt.datetime | None) -> str:
    return DASH if value is None else value.astimezone(HELSINKI).strftime("%Y-%m-%d %H:%M")


def hours(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def setup_templates(app: web.Application) -> jinja2.Environment:
    filters: dict[str, Callable[..., str]] = {"time": helsinki_time, "hours": hours}
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("broker.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        extensions=[JoinLines],
        filters=filters,
        default_helpers=False,
    )
    env.globals["DASH"] = DASH
    return env


@dataclass(frozen=True)
class Link:
    href: str
    label: str
    current: bool = False
    css: str = ""


@dataclass
class Page:
    """What the layout needs, the same for every page: language and its messages, title, who is logged
    in, the CSRF token of their forms, and links built from named routes."""

    request: web.Request
    lang: str
    title: str
    user: str | None = None
    csrf: str = ""
    route: str = "dashboard"
    query: Mapping[str, str] = field(default_factory=dict)
    refresh_s: int | None = None

    @property
    def t(self) -> Mapping[str, str]:
        return catalog(self.lang)

    def url(self, name: str, parts: Mapping[str, str] | None = None, *, lang: str | None = None,
            fragment: str | None = None, **query: str) -> str:
        return url(self.request, name, parts, lang=lang or self.lang, fragment=fragment, **query)

    @property
    def stylesheet(self) -> str:
        return str(self.request.app.router["dashboard_static"].url_for(filename="dashboard.css"))

    @property
    def langs(self) -> list[Link]:
        """This page in each language (with the page's own shown parameters)."""
        return [Link(self.url(self.route, None, lang=code, **self.query), code.upper(), code == self.lang)
                for code in LANGS]

    @property
    def nav(self) -> list[Link]:
        return [Link(self.url(name), self.t[key], name == self.route, css)
                for name, key, css in (("dashboard", "overview", ""),
                                       ("dashboard_statistics", "statistics", "nav-statistics"))]


def page_of(request: web.Request, title_key: str, viewer: Viewer | None = None, csrf: str = "",
            **kwargs: Any) -> Page:
    lang = lang_of(request)
    return Page(request, lang, catalog(lang)[title_key], viewer.party_id if viewer else None, csrf,
                **kwargs)


def render(template: str, page: Page, status: int = 200, **context: Any) -> web.Response:
    response = aiohttp_jinja2.render_template(template, page.request,
                                              {"page": page, "t": page.t, **context}, status=status)
    response.charset = "utf-8"
    return response
