"""What every part of `CaseService` shares: the ledger, settings, classification and callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from broker.cases.results import Observations
from broker.config.settings import Settings
from broker.domain.errors import HandoffError
from broker.domain.routing import Classification
from broker.security import audit
from broker.security.audit import Actor, AuditEntry
from broker.store.ledger import Ledger, utcnow

__all__ = ["CaseContext"]


@dataclass(frozen=True)
class CaseContext:
    ledger: Ledger
    settings: Settings
    classification: Classification
    on_outbox: Callable[[], None]
    """Called after a commit that wrote outbox rows (wakes the relay)."""
    observed: Callable[[str, Observations], None]
    """Called after a commit with what the metrics layer learns from it."""
    track_done: bool
    """Mark outbox rows `done` when their message is consumed (see `CaseService`)."""
    kela_push: bool
    """Kela has a webhook route: its feed entries are pushed as well."""

    @asynccontextmanager
    async def refusal_audited(self, actor: Actor, action: str, referral_id: str | None,
                              ) -> AsyncIterator[None]:
        """A refused request rolled its transaction back, audit record included: record the refusal
        in a transaction of its own, so the trail shows attempts as well as effects."""
        try:
            yield
        except HandoffError as exc:
            await audit.append_alone(self.ledger, actor,
                                     [AuditEntry(action, referral_id, audit.outcome_of(exc))], utcnow())
            raise
