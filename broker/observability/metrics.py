"""Prometheus metrics (DESIGN § 8): one class on an injected registry, units in the names.

Counters and histograms move where events happen. The gauges are read from the ledger at scrape
time (`broker.store.gauges`: indexed aggregate queries), so several processes never double count
and a restart loses nothing. Labels carry areas, kinds and reasons: never personal data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.store.gauges import GaugeSnapshot, read_gauges
from broker.store.ledger import Ledger
from schemas.enums import Kind

__all__ = ["LATENCY_BUCKETS", "LedgerGauges", "Metrics"]

# Seconds to 30 days: hand-offs are measured in hours and working days, not milliseconds.
LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400,
                   3 * 86400, 5 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)



class LedgerGauges(Collector):
    """Yields the last snapshot; `refresh()` (async, before each scrape) fills it from the ledger."""

    def __init__(self) -> None:
        self.snapshot = GaugeSnapshot()

    async def refresh(self, ledger: Ledger, now: dt.datetime | None = None) -> None:
        self.snapshot = await read_gauges(ledger, now)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        s = self.snapshot
        g = GaugeMetricFamily("handoff_unanswered_cases", "Delivered cases with no reply yet.",
                              labels=["area", "urgency"])
        for (area, urgency), n in sorted(s.unanswered.items()):
            g.add_metric([area, urgency], n)
        yield g
        g = GaugeMetricFamily("handoff_overdue_cases", "Open cases past a deadline not yet met.",
                              labels=["area", "deadline"])
        for (area, deadline), n in sorted(s.overdue.items()):
            g.add_metric([area, deadline], n)
        yield g
        g = GaugeMetricFamily("handoff_oldest_unanswered_age_seconds",
                              "Age of the oldest delivered, unanswered case.", labels=["area"])
        for area, age in sorted(s.oldest_unanswered.items()):
            g.add_metric([area], age)
        yield g
        yield GaugeMetricFamily("handoff_outbox_pending", "Outbox rows not yet published.",
                                value=s.outbox_pending)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.referrals_received = Counter("handoff_referrals_received_total",
                                          "Referrals accepted.", ["kind", "channel"], registry=r)
        self.validation_rejections = Counter("handoff_validation_rejections_total",
                                             "Inputs rejected with 422.", ["channel"], registry=r)
        self.deliveries = Counter("handoff_deliveries_total", "Delivery attempts by outcome.",
                                  ["area", "outcome"], registry=r)
        self.delivery_latency = Histogram("handoff_delivery_latency_seconds",
                                          "Received -> delivered.", buckets=LATENCY_BUCKETS, registry=r)
        self.first_reply_latency = Histogram("handoff_first_reply_latency_seconds",
                                             "Received -> first reply.", buckets=LATENCY_BUCKETS,
                                             registry=r)
        self.dead_letters = Counter("handoff_dead_letters_total", "Messages dead-lettered.",
                                    ["reason"], registry=r)
        self.reconcile_sweeps = Counter("handoff_reconcile_sweeps_total",
                                        "Reconciliation sweeps run.", registry=r)
        self.reconcile_found = Counter(
            "handoff_reconcile_found_total",
            "Outbox events the sweep found: settled (retired) or republished (lost in transit).",
            ["result"], registry=r)
        for result in ("settled", "republished"):
            self.reconcile_found.labels(result=result)
        self.transport_connected = Gauge(
            "handoff_transport_connected",
            "1 when this process's transport can publish; 0 while it is degraded (the outbox holds "
            "accepted work until it is back).", registry=r)
        self.gauges = LedgerGauges()
        r.register(self.gauges)
        # Known label sets start at 0, so rate() and increase() see the first event of a process.
        for kind in Kind:
            for channel in ("api", "xml"):
                self.referrals_received.labels(kind=kind.value, channel=channel)
        for channel in ("api", "xml"):
            self.validation_rejections.labels(channel=channel)
