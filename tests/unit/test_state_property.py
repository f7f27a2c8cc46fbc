"""Property: any sequence of replies (and Kela answers) leaves a case where DESIGN § 10 says it must.

A pure model of the § 10 table (with the routed -> delivered proof rule and the outcomes of
`returned`: re-routed, or unroutable with or without the ping-pong escalation) predicts the HTTP
status and the state of every step. The service is checked against it through the HTTP API, and
its history must only ever grow: a 202 adds exactly one `reply` (or `answer`) event, a 409 or 422
adds none, and no earlier event is lost, changed or reordered.

One app per test function (SQLite, embedded transport); each example is a new case in it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.store.tables import events as events_table
from tests.helpers.app import KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.support import SENT_AT, get_case, new_case, reply

DELIVERED_LIKE = {"routed", "delivered"}
WORKING = {"delivered", "acknowledged", "in_progress"}

# § 10: where each status is allowed, and what the case becomes.
ALLOWED: dict[str, set[str]] = {
    "received": {"delivered"},
    "assigned": WORKING,
    "client_contacted": WORKING,
    "assessment_started": WORKING,
    "info_requested": WORKING,
    "decision_made": {"acknowledged", "in_progress"},
    "returned": WORKING | {"info_requested"},
    "closed": WORKING | {"info_requested"},
}
TARGET = {
    "received": "acknowledged", "assigned": "in_progress", "client_contacted": "in_progress",
    "assessment_started": "in_progress", "info_requested": "info_requested",
    "decision_made": "in_progress", "closed": "closed",
}
STATUSES = list(ALLOWED)

ROUTED_AREAS = {"08", "90", "19", "03"}  # the pull routes of base_settings
AREA_OF = {"837": "08", "091": "90", "564": "19", "049": "03", "478": "91"}
MAX_RETURNS = 2  # routing.max_returns default

# Events the service may add by itself at any time (delivery, inbox fetches).
BACKGROUND = {"delivered", "answer_delivered", "fetched"}


@dataclass
class Model:
    kind: str
    state: str = "delivered"
    area: str = "08"
    tried: list[str] = field(default_factory=lambda: ["08"])
    returns: int = 0

    def reply(self, status: str, suggestion: str | None) -> int:
        if status == "decision_made" and self.kind != "application_transfer":
            return 422  # the kind rule is checked before the state rule
        effective = "delivered" if self.state == "routed" else self.state
        if effective not in ALLOWED[status]:
            return 409
        if status != "returned":
            self.state = TARGET[status]
            return 202
        self.returns += 1
        target = AREA_OF.get(suggestion) if suggestion else None
        if target is None or target in self.tried or self.returns > MAX_RETURNS \
                or target not in ROUTED_AREAS:
            self.state = "unroutable"
        else:
            self.state, self.area = "routed", target
            self.tried.append(target)
        return 202

    def answer(self) -> int:
        if self.state != "info_requested":
            return 409
        self.state = "in_progress"
        return 202

    def matches(self, actual: str) -> bool:
        return actual in DELIVERED_LIKE if self.state == "routed" else actual == self.state


reply_action = st.tuples(st.just("reply"), st.sampled_from(STATUSES),
                         st.sampled_from([None, "091", "837", "564", "049", "478"]))
answer_action = st.tuples(st.just("answer"), st.just(""), st.none())
actions = st.lists(st.one_of(reply_action, reply_action, reply_action, answer_action), max_size=10)


async def _stored_events(client: Any, rid: str) -> list[tuple[int, str, str]]:
    """(seq, type, at) of the case's events as stored, in insertion order."""
    async with services_of(client).ledger.engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(events_table.c.seq, events_table.c.type, events_table.c.at)
            .where(events_table.c.referral_id == rid).order_by(events_table.c.seq))).all()
    return [(int(s), t, a.isoformat()) for s, t, a in rows]


@pytest.fixture
async def prop_client(make_client: Any, tmp_path: Path) -> Any:
    """One app for the whole test function: hypothesis runs every example against it."""
    return await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 'property.db'}"))


_COUNTER = itertools.count()


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["support_need", "application_transfer"]), steps=actions)
async def test_any_reply_sequence_follows_the_state_machine(
        prop_client: Any, kind: str, steps: list[tuple[str, str, str | None]]) -> None:
    client = prop_client
    n = next(_COUNTER)
    rid = await new_case(client, f"PROP-{n}", kind=kind)
    model = Model(kind)
    history = (await get_case(client, rid))["events"]
    for i, (action, status, suggestion) in enumerate(steps):
        where = f"step {i} {action} {status} {suggestion} (model {model.state})"
        if action == "reply":
            extra = {"suggested_municipality_code": suggestion} if status == "returned" else {}
            area = model.area  # the case's current area answers; the model may move it
            expected = model.reply(status, suggestion if status == "returned" else None)
            code, out = await reply(client, rid, status, area=area, reply_id=f"P-{n}-{i}",
                                    **extra)
            counted = "reply"
        else:
            expected = model.answer()
            r = await client.post(f"/v1/referrals/{rid}/answers", headers=auth(KELA_TOKEN),
                                  json={"answer_id": f"A-{n}-{i}", "sent_at": SENT_AT,
                                        "message": "Vastaus (keksitty)."})
            code, out = r.status, await r.json()
            counted = "answer"
        assert code == expected, f"{where}: got {code} {out}"
        if code == 202:
            assert model.matches(out["state"]), f"{where}: answered {out['state']}"
        case = await get_case(client, rid)
        assert model.matches(case["state"]), f"{where}: case is {case['state']}"
        assert case["area"] == model.area, f"{where}: area {case['area']}"
        after = case["events"]
        assert after[:len(history)] == history, f"{where}: an earlier event was lost or changed"
        new = [e["type"] for e in after[len(history):]]
        assert new.count(counted) == (1 if code == 202 else 0), f"{where}: new events {new}"
        other = {"reply", "answer"} - {counted}
        assert not other & set(new), f"{where}: new events {new}"
        if code != 202:
            assert set(new) <= BACKGROUND, f"{where}: a {code} added {new}"
        history = after
    stored = await _stored_events(client, rid)
    seqs = [s for s, _, _ in stored]
    assert seqs == sorted(set(seqs)), "event seq not strictly increasing"
    # The API lists the history in seq order, and every event it showed is still stored.
    assert [(t, a) for _, t, a in stored][:len(history)] == [(e["type"], e["at"]) for e in history]

