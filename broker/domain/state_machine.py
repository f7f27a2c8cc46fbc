"""The case state machine of DESIGN § 4 and the reply transition table of § 10.

Pure data and functions, so the HTTP layer, the file adapter and the property tests share one truth.
"""

from __future__ import annotations

from schemas.enums import CaseState, ReplyStatus

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "REPLY_ALLOWED_IN", "reply_target"]

S = CaseState
_WORKING = frozenset({S.DELIVERED, S.ACKNOWLEDGED, S.IN_PROGRESS})
_WORKING_OR_WAITING = _WORKING | {S.INFO_REQUESTED}

REPLY_ALLOWED_IN: dict[ReplyStatus, frozenset[CaseState]] = {
    ReplyStatus.RECEIVED: frozenset({S.DELIVERED}),
    ReplyStatus.ASSIGNED: _WORKING,
    ReplyStatus.CLIENT_CONTACTED: _WORKING,
    ReplyStatus.ASSESSMENT_STARTED: _WORKING,
    ReplyStatus.INFO_REQUESTED: _WORKING,
    ReplyStatus.DECISION_MADE: frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS}),
    ReplyStatus.RETURNED: _WORKING_OR_WAITING,
    ReplyStatus.CLOSED: _WORKING_OR_WAITING,
}

_TARGET: dict[ReplyStatus, CaseState] = {
    ReplyStatus.RECEIVED: S.ACKNOWLEDGED,
    ReplyStatus.ASSIGNED: S.IN_PROGRESS,
    ReplyStatus.CLIENT_CONTACTED: S.IN_PROGRESS,
    ReplyStatus.ASSESSMENT_STARTED: S.IN_PROGRESS,
    ReplyStatus.INFO_REQUESTED: S.INFO_REQUESTED,
    ReplyStatus.DECISION_MADE: S.IN_PROGRESS,
    ReplyStatus.RETURNED: S.RETURNED,
    ReplyStatus.CLOSED: S.CLOSED,
}

FINAL_STATES = frozenset({S.CLOSED})
# Cases someone still has to act on (for dashboards and gauges).
ACTIVE_STATES = frozenset({S.ROUTED, S.DELIVERED, S.ACKNOWLEDGED, S.IN_PROGRESS, S.INFO_REQUESTED})


def reply_target(state: CaseState, status: ReplyStatus) -> CaseState | None:
    """The state a reply moves the case to, or None when the reply does not fit the state (409).

    A case still `routed` is treated as `delivered`: a reply proves delivery (§ 10); the caller
    records that delivery before applying the reply. `returned` yields RETURNED, which the caller
    resolves at once into `routed` (new area) or `unroutable`.
    """
    effective = S.DELIVERED if state is S.ROUTED else state
    if effective not in REPLY_ALLOWED_IN[status]:
        return None
    return _TARGET[status]
