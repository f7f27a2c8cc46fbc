"""What `CaseService` answers: the results of an input, and what the metrics layer learns from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AcceptResult", "Observations", "ReplyResult"]


@dataclass(frozen=True)
class AcceptResult:
    referral_id: str
    state: str
    area: str | None
    created: bool
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"referral_id": self.referral_id, "state": self.state, "area": self.area}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class ReplyResult:
    created: bool
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observations:
    """What the metrics layer learns from a committed change (filled in, then reported after commit)."""

    delivered_latency_s: float | None = None
    first_reply_latency_s: float | None = None
    area: str | None = None
