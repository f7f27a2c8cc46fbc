"""Settings with routes and parties configured load without reading the classification CSV."""

from __future__ import annotations

import pytest

from broker.config.settings import load_settings
from broker.domain.routing import Classification


def test_configured_settings_do_not_read_the_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Classification:
        raise AssertionError("the classification CSV was read")

    monkeypatch.setattr(Classification, "load", staticmethod(refuse))
    settings = load_settings(env={"HANDOFF_ROUTES": "[]", "HANDOFF_PARTIES": "[]"})
    assert not settings.routes and not settings.parties
