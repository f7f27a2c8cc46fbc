"""The operators' dashboard: server-rendered pages (Jinja2 through aiohttp-jinja2) for administrators.

`routes` sets it up on the app, `views` handles requests, `sessions` says who is looking,
`broker.store.overview` reads the ledger, `charts` measures the statistics charts, `i18n` and
`translations/` hold the languages, `templating` the page context, and `templates/` and `static/` the
markup and the stylesheet.
"""

from broker.dashboard.routes import setup_dashboard
from broker.dashboard.sessions import load_dashboard_keys

__all__ = ["load_dashboard_keys", "setup_dashboard"]
