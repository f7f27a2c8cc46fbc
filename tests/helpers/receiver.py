"""The tests' webhook receiver: the shared harness receiver with the tests' webhook secret."""

from __future__ import annotations

from typing import Any

from broker.devtools.harness import WebhookReceiver

__all__ = ["SECRET", "SECRET_ENV", "Receiver", "webhook_routes"]

SECRET = "test-webhook-secret"
SECRET_ENV = "HANDOFF_TEST_WEBHOOK_SECRET"


class Receiver(WebhookReceiver):
    """`Receiver(behaviour=lambda n: 503 if n <= 3 else 204)`: see `WebhookReceiver`."""

    def __init__(self, secret: bytes = SECRET.encode(), **options: Any) -> None:
        super().__init__(secret, **options)


def webhook_routes(url: str) -> list[dict[str, Any]]:
    """Routes for an in-process app: area 08 by webhook to `url` (the tests' secret), 90 by pull."""
    return [{"area": "08", "delivery": "webhook", "url": url, "secret_env": SECRET_ENV, "secret": SECRET},
            {"area": "90", "delivery": "pull"}]
