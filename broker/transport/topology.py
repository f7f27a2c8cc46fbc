"""The RabbitMQ topology as data: one description that the transport declares at start and
that `topology_definitions` exports for `rabbitmqctl import_definitions`
(deploy/rabbitmq/definitions.json).

Keeping both paths on the same specs is what stops a deployed definitions file and the declaring
code from drifting apart: RabbitMQ refuses to redeclare a queue with other arguments
(PRECONDITION_FAILED), so a drift would stop the broker at start.

Delayed retries. A Retry copy is published to the topic exchange `handoff.delay` with routing key
`<tier>.<source queue>` (e.g. `5s.handoff.intake.08`); the tier queue `handoff.delay.<tier>`
(bound with `<tier>.#`) holds it for its TTL and then dead-letters it, with the routing key
unchanged, to the topic exchange `handoff.retry.return`, where every consumable queue `Q` is bound
with `*.Q`. So the copy comes back to exactly the queue it left, after the tier's delay.

That dead-lettering hop is at-least-once (`x-dead-letter-strategy = at-least-once`, which quorum
queues honour only with `x-overflow = reject-publish`): the tier queue keeps an expired message
until the queue it returns to has confirmed it. With RabbitMQ's default (at-most-once) a node
restart dropped every message that expired before the intake queues had elected their leaders
("leader not known. Command is dropped"): 364 of 600 waiting referrals in one fault run. The tiers
were named `handoff.retry` / `handoff.retry.<tier>` before this change; RabbitMQ refuses to
redeclare a queue with other arguments, so the new ones have new names, and the old ones (still
bound to `handoff.retry.return`) drain on their own and can then be deleted.
A headers exchange matching `x-handoff-source-queue` would be simpler to read but does not work:
RabbitMQ's headers exchange ignores binding arguments whose names start with `x-`, so every
bound queue would match every returned message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from broker.transport.protocol import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    KELA_UPDATES_QUEUE,
    REFERRALS_EXCHANGE,
    REPLIES_EXCHANGE,
    UNROUTED_EXCHANGE,
    UNROUTED_QUEUE,
    intake_queue,
)

__all__ = [
    "DEAD_LETTER_POLICY",
    "RETRY_EXCHANGE",
    "RETRY_RETURN_EXCHANGE",
    "BindingSpec",
    "ExchangeSpec",
    "PolicySpec",
    "QueueSpec",
    "Topology",
    "build_topology",
    "pick_retry_tier",
    "retry_routing_key",
    "retry_tier_label",
    "retry_tier_queue",
    "topology_definitions",
]

RETRY_EXCHANGE = "handoff.delay"
RETRY_RETURN_EXCHANGE = "handoff.retry.return"

# Party areas that own no intake queue (Kela reads its updates from handoff.kela.updates).
_NOT_INTAKE_AREAS = frozenset({"kela"})
# An area becomes one word of a topic routing key, so dots and wildcards would change the routing.
_AREA_RE = re.compile(r"[A-Za-z0-9_-]+")

ExchangeType = Literal["topic", "fanout", "direct", "headers"]
ArgumentValue = str | int


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    arguments: Mapping[str, ArgumentValue] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, ArgumentValue] = field(default_factory=dict)
    consumable: bool = True
    """False for retry tier queues: nobody consumes them, their messages leave by expiring."""


@dataclass(frozen=True)
class BindingSpec:
    exchange: str
    queue: str
    routing_key: str = ""
    arguments: Mapping[str, ArgumentValue] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySpec:
    """A policy for the deployment (definitions file, k8s `Policy`): AMQP cannot declare policies,
    and the broker does not need one to be correct; it hardens what arguments cannot change on a
    queue that already exists."""

    name: str
    pattern: str
    definition: Mapping[str, ArgumentValue]
    apply_to: Literal["queues", "exchanges", "all"] = "queues"
    priority: int = 0


# The worked queues dead-letter to `handoff.dlx` at their delivery limit. Their arguments predate
# at-least-once dead-lettering and RabbitMQ refuses to redeclare a queue with other arguments, so
# the deployment adds it by policy (a queue's own arguments win over a policy's, and these queues
# set neither key).
DEAD_LETTER_POLICY = PolicySpec(
    name="handoff-dead-letter-at-least-once",
    pattern=r"^handoff\.(intake\.[A-Za-z0-9_-]+|kela\.updates)$",
    definition={"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"},
)


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]
    retry_tiers_s: tuple[float, ...]
    policies: tuple[PolicySpec, ...] = (DEAD_LETTER_POLICY,)

    def queue(self, name: str) -> QueueSpec | None:
        return next((q for q in self.queues if q.name == name), None)

    def exchange(self, name: str) -> ExchangeSpec | None:
        return next((e for e in self.exchanges if e.name == name), None)

    @property
    def consumable_queues(self) -> frozenset[str]:
        return frozenset(q.name for q in self.queues if q.consumable)

    def definitions(self, *, vhost: str = "/") -> dict[str, Any]:
        """The document format of `rabbitmqctl export_definitions`, restricted to our objects."""
        return {
            "exchanges": [
                {
                    "name": e.name,
                    "vhost": vhost,
                    "type": e.type,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": dict(e.arguments),
                }
                for e in self.exchanges
            ],
            "queues": [
                {
                    "name": q.name,
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": dict(q.arguments),
                }
                for q in self.queues
            ],
            "bindings": [
                {
                    "source": b.exchange,
                    "vhost": vhost,
                    "destination": b.queue,
                    "destination_type": "queue",
                    "routing_key": b.routing_key,
                    "arguments": dict(b.arguments),
                }
                for b in self.bindings
            ],
            "policies": [
                {
                    "name": p.name,
                    "vhost": vhost,
                    "pattern": p.pattern,
                    "apply-to": p.apply_to,
                    "definition": dict(p.definition),
                    "priority": p.priority,
                }
                for p in self.policies
            ],
        }


def retry_tier_label(delay_s: float) -> str:
    """`1s`, `300s`, `200ms`: the delay is part of the queue name because a tier queue's TTL is
    fixed at declaration, so two configurations must never share a name with different TTLs."""
    ms = round(delay_s * 1000)
    if ms < 1:
        raise ValueError(f"retry tier must be at least 1 ms, got {delay_s!r}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def retry_tier_queue(delay_s: float) -> str:
    return f"{RETRY_EXCHANGE}.{retry_tier_label(delay_s)}"


def retry_routing_key(delay_s: float, source_queue: str) -> str:
    return f"{retry_tier_label(delay_s)}.{source_queue}"


def pick_retry_tier(tiers_s: Sequence[float], delay_s: float) -> float:
    """The smallest tier that waits at least `delay_s`, else the longest: a retry never comes back
    sooner than asked unless the ask exceeds every tier."""
    if not tiers_s:
        raise ValueError("no retry tiers configured")
    ordered = sorted(tiers_s)
    return next((t for t in ordered if t >= delay_s), ordered[-1])


def _intake_areas(areas: Iterable[str]) -> list[str]:
    result: set[str] = set()
    for area in areas:
        if area in _NOT_INTAKE_AREAS:
            continue
        if not _AREA_RE.fullmatch(area):
            raise ValueError(f"area code {area!r} is not usable in AMQP names")
        result.add(area)
    return sorted(result)


def build_topology(
    areas: Iterable[str], *, delivery_limit: int, retry_tiers_s: Sequence[float]
) -> Topology:
    """Everything the broker needs for these intake areas; `retry_tiers_s` may be empty for a
    transport that delays retries itself (the embedded one)."""
    if delivery_limit < 1:
        raise ValueError(f"delivery_limit must be at least 1, got {delivery_limit}")
    tiers = tuple(sorted({float(t) for t in retry_tiers_s}))
    labels = [retry_tier_label(t) for t in tiers]
    if len(set(labels)) != len(labels):
        raise ValueError(f"retry tiers {retry_tiers_s!r} collide at millisecond resolution")

    to_unrouted: dict[str, ArgumentValue] = {"alternate-exchange": UNROUTED_EXCHANGE}
    quorum: dict[str, ArgumentValue] = {"x-queue-type": "quorum"}
    worked: dict[str, ArgumentValue] = {
        **quorum,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }

    exchanges = [
        ExchangeSpec(UNROUTED_EXCHANGE, "fanout"),
        ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout"),
        ExchangeSpec(REFERRALS_EXCHANGE, "topic", to_unrouted),
        ExchangeSpec(REPLIES_EXCHANGE, "topic", to_unrouted),
    ]
    queues = [
        QueueSpec(UNROUTED_QUEUE, quorum),
        QueueSpec(DEAD_LETTER_QUEUE, quorum),
        QueueSpec(KELA_UPDATES_QUEUE, worked),
    ]
    bindings = [
        BindingSpec(UNROUTED_EXCHANGE, UNROUTED_QUEUE),
        BindingSpec(DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE),
        BindingSpec(REPLIES_EXCHANGE, KELA_UPDATES_QUEUE, "update.#"),
    ]
    for area in _intake_areas(areas):
        queues.append(QueueSpec(intake_queue(area), worked))
        bindings.append(BindingSpec(REFERRALS_EXCHANGE, intake_queue(area), f"referral.{area}.#"))

    if tiers:
        # A retry whose tier or source queue has gone lands in handoff.unrouted, not nowhere.
        exchanges += [
            ExchangeSpec(RETRY_EXCHANGE, "topic", to_unrouted),
            ExchangeSpec(RETRY_RETURN_EXCHANGE, "topic", to_unrouted),
        ]
        consumable = [q.name for q in queues]
        for tier, label in zip(tiers, labels, strict=True):
            queues.append(
                QueueSpec(
                    retry_tier_queue(tier),
                    {
                        **quorum,
                        "x-message-ttl": round(tier * 1000),
                        "x-dead-letter-exchange": RETRY_RETURN_EXCHANGE,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                    consumable=False,
                )
            )
            bindings.append(BindingSpec(RETRY_EXCHANGE, retry_tier_queue(tier), f"{label}.#"))
        bindings += [BindingSpec(RETRY_RETURN_EXCHANGE, q, f"*.{q}") for q in consumable]

    return Topology(tuple(exchanges), tuple(queues), tuple(bindings), tiers)


def topology_definitions(
    areas: Iterable[str],
    *,
    delivery_limit: int,
    retry_tiers_s: Sequence[float],
    vhost: str = "/",
) -> dict[str, Any]:
    """A definitions document for `rabbitmqctl import_definitions`, identical to what
    `RabbitMQTransport.start` declares with the same arguments."""
    topology = build_topology(areas, delivery_limit=delivery_limit, retry_tiers_s=retry_tiers_s)
    return topology.definitions(vhost=vhost)
