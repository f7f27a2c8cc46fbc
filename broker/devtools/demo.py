"""`handoff demo`: the service on the embedded default plus simulated Kela handlers and intake teams.

Everything the simulators send goes through the public HTTP API and the signed webhooks, so the demo
shows the real paths (pull inbox, webhook push, file drop, replies, returns, information requests,
Kela's feed). People are invented and identity codes are test codes (individual number 900-999).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from broker.config.settings import DEMO_TOKENS, Settings, demo_intake_token, load_settings
from broker.delivery.filedrop import write_atomically
from broker.devtools.demo_data import make_referral
from broker.devtools.harness import ConditionTimeout, WebhookReceiver, wait_for
from broker.domain.routing import Classification
from broker.observability.logs import configure_logging
from broker.runtime.serve import serve

__all__ = ["demo_settings", "run_demo"]

log = structlog.get_logger("demo")

DEMO_SECRET = "demo-webhook-secret"  # noqa: S105 - a published demo value, like the demo tokens
WEBHOOK_AREAS = ("90", "08")
FILE_AREAS = ("19",)
KINDS = ["support_need"] * 5 + ["support_need_without_consent", "application_transfer",
                                 "basic_amount_reduction", "urgent_assistance"]


def demo_settings(config: Path | None, port: int) -> Settings:
    base = load_settings(config)
    if config is not None:
        return base
    areas = Classification.load().area_codes
    hook = f"http://127.0.0.1:{port + 1}"
    routes: list[dict[str, Any]] = []
    for a in areas:
        if a in WEBHOOK_AREAS:
            routes.append({"area": a, "delivery": "webhook", "url": f"{hook}/intake/{a}",
                           "secret_env": "HANDOFF_DEMO_SECRET", "secret": DEMO_SECRET})
        elif a in FILE_AREAS:
            routes.append({"area": a, "delivery": "files", "directory": f"var/demo-files/{a}"})
        elif a != "91":
            routes.append({"area": a, "delivery": "pull"})
    routes.append({"area": "kela", "delivery": "webhook", "url": f"{hook}/kela",
                   "secret_env": "HANDOFF_DEMO_SECRET", "secret": DEMO_SECRET})
    data = base.model_dump(exclude={"routes"})
    data["store"]["url"] = "sqlite+aiosqlite:///./var/demo.db"
    data["server"]["port"] = port
    data["routes"] = routes
    return Settings.model_validate(data)


class Simulation:
    def __init__(self, settings: Settings, rate: float) -> None:
        self.settings = settings
        self.base = f"http://127.0.0.1:{settings.server.port}"
        self.rate = rate
        self.rng = random.Random()
        self.classification = Classification.load()
        self.municipalities = list(self.classification.municipalities)
        self.webhook_inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.seq = itertools.count(1)
        self.sent = 0
        self.started = time.monotonic()

    def _h(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def kela_handlers(self, http: aiohttp.ClientSession) -> None:
        run = int(time.time())
        while True:
            n = next(self.seq)
            municipality = self.rng.choice(self.municipalities)
            kind = self.rng.choice(KINDS)
            body = make_referral(self.rng, kela_reference=f"DEMO-{run}-{n}",
                                 municipality_code=municipality, kind=kind,
                                 urgency="urgent" if self.rng.random() < 0.15 else "normal")
            if n % 25 == 0:
                body["client"]["personal_id"] = "010190-9990"  # wrong check character: a 422
            async with http.post(f"{self.base}/v1/referrals", json=body,
                                 headers=self._h(DEMO_TOKENS["kela-demo"])) as r:
                out = await r.json()
                if r.status in (200, 202):
                    self.sent += 1
                    log.info("kela_sent_referral", kela_reference=body["kela_reference"], kind=kind,
                             area=out["area"], state=out["state"], status=r.status)
                else:
                    log.info("kela_referral_rejected", status=r.status,
                             fields=[".".join(map(str, e["loc"])) for e in out.get("errors", [])])
            await asyncio.sleep(1 / self.rate)

    async def kela_feed_reader(self, http: aiohttp.ClientSession) -> None:
        # The same party as `kela_handlers`: a Kela party reads the updates of the cases it sent
        # (and answers them), so kela-demo needs no central-reader mark.
        cursor = ""
        while True:
            async with http.get(f"{self.base}/v1/updates", params={"after": cursor, "limit": "200"},
                                headers=self._h(DEMO_TOKENS["kela-demo"])) as r:
                page = await r.json()
            cursor = page["next"]
            for item in page["items"]:
                if item["type"] == "reply" and item["reply"]["status"] == "info_requested":
                    answer = {"answer_id": f"A-{item['cursor']}", "sent_at": _now(),
                              "message": "Asiakkaan tilanne: keksitty lisätieto demoa varten."}
                    async with http.post(f"{self.base}/v1/referrals/{item['referral_id']}/answers",
                                         json=answer, headers=self._h(DEMO_TOKENS["kela-demo"])) as r:
                        log.info("kela_answered_question", referral_id=item["referral_id"],
                                 status=r.status)
            await asyncio.sleep(2)

    async def pull_intakes(self, http: aiohttp.ClientSession) -> None:
        pull_areas = [r.area for r in self.settings.routes if r.delivery == "pull"]
        while True:
            for area in pull_areas:
                async with http.get(f"{self.base}/v1/inbox", params={"limit": "50"},
                                    headers=self._h(demo_intake_token(area))) as r:
                    page = await r.json()
                for item in page.get("items", []):
                    await self.work_case(http, area, item["referral_id"], item["kind"])
            await asyncio.sleep(1.5)

    async def file_intakes(self) -> None:
        """A case-management system that only exchanges files: it imports referral files and answers
        by writing reply files (temp name, then rename) into `<directory>/replies/`."""
        routes = [r for r in self.settings.routes if r.delivery == "files" and r.directory]
        seen: set[str] = set()
        while True:
            for route in routes:
                assert route.directory is not None
                for path in sorted(route.directory.glob("referral-*.json")):
                    if path.name in seen:
                        continue
                    seen.add(path.name)
                    env = json.loads(path.read_text("utf-8"))
                    status = "received" if self.rng.random() < 0.85 else "returned"
                    reply: dict[str, Any] = {"referral_id": env["referral_id"], "status": status,
                                             "reply_id": f"file-{env['event_id'][:8]}", "sent_at": _now()}
                    if status == "returned":
                        reply.update(reason="Asiakas asuu toisella alueella (demo).",
                                     suggested_municipality_code=self.rng.choice(self.municipalities))
                    replies = route.directory / "replies"
                    replies.mkdir(exist_ok=True)
                    write_atomically(replies, f"{path.stem}.json", json.dumps(reply).encode())
                    log.info("file_intake_replied", area=route.area, referral_id=env["referral_id"],
                             reply_status=status)
            await asyncio.sleep(2)

    async def webhook_intakes(self, http: aiohttp.ClientSession) -> None:
        while True:
            area, referral_id = await self.webhook_inbox.get()
            kind = await self._kind(http, area, referral_id)
            await self.work_case(http, area, referral_id, kind)

    async def _kind(self, http: aiohttp.ClientSession, area: str, referral_id: str) -> str:
        async with http.get(f"{self.base}/v1/referrals/{referral_id}",
                            headers=self._h(demo_intake_token(area))) as r:
            return str((await r.json()).get("kind", "support_need")) if r.status == 200 else "support_need"

    async def work_case(self, http: aiohttp.ClientSession, area: str, referral_id: str, kind: str) -> None:
        """An intake team's day: most cases move on, some wait, some are returned or need info."""
        roll = self.rng.random()
        if roll < 0.12:
            log.info("intake_left_unanswered", area=area, referral_id=referral_id)
            return
        steps: list[dict[str, Any]] = [{"status": "received", "referral_quality": "sufficient"},
                                       {"status": "assigned", "worker": {"name": "Demo Työntekijä",
                                                                        "title": "sosiaalityöntekijä"}}]
        if roll < 0.2:
            other = self.rng.choice(self.municipalities)
            steps = [{"status": "returned", "reason": "Asiakas on muuttanut (demo).",
                      "suggested_municipality_code": other}]
        elif roll < 0.3:
            steps.append({"status": "info_requested", "question": "Onko asiakkaalla vuokrarästejä?"})
        elif kind == "application_transfer":
            steps += [{"status": "decision_made", "decision": self.rng.choice(
                ["granted", "partly_granted", "denied"])}]
        else:
            steps += [{"status": "assessment_started"},
                      {"status": "closed", "outcome": "services_arranged", "findings": ["service_gap"],
                       "client_feedback": {"rating": self.rng.randint(3, 5), "heard": True}}]
        for step in steps:
            reply = {"reply_id": f"{area}-{referral_id[:8]}-{step['status']}", "sent_at": _now(), **step}
            async with http.post(f"{self.base}/v1/referrals/{referral_id}/replies", json=reply,
                                 headers=self._h(demo_intake_token(area))) as r:
                out = await r.json()
                log.info("intake_replied", area=area, referral_id=referral_id,
                         reply_status=step["status"], http_status=r.status,
                         state=out.get("state", out.get("error", {}).get("code")))
            await asyncio.sleep(0.2)

    def receiver(self, port: int) -> WebhookReceiver:
        """The intake teams' and Kela's webhooks (/intake/<area>, /kela): a referral goes to the
        simulated team's inbox."""

        async def accepted(request: web.Request, env: dict[str, Any]) -> None:
            if request.path == "/kela":
                log.info("kela_webhook_received", type=env["type"], referral_id=env["referral_id"])
                return
            area = request.path.rsplit("/", 1)[-1]
            if env["type"] == "referral":
                await self.webhook_inbox.put((area, env["referral_id"]))
            log.info("intake_webhook_received", area=area, type=env["type"], referral_id=env["referral_id"])

        return WebhookReceiver(DEMO_SECRET.encode(), on_accepted=accepted, port=port)

    async def report(self) -> None:
        while True:
            await asyncio.sleep(10)
            elapsed = time.monotonic() - self.started
            log.info("demo_progress", referrals_sent=self.sent,
                     referrals_per_s=round(self.sent / elapsed, 2))


HISTORY_SENDER = "demo-backdated"


async def seed_history(settings: Settings, count: int = 4000) -> None:
    """Twelve months of back-dated cases, in the demo database only, marked with their own sender
    (`demo-backdated`, kela_reference DEMO-BACKDATED-n): statistics have trends and the dashboard
    has overdue cases on the first run. No referral bodies, so no personal data at all."""
    from broker.devtools.bench_metrics import seed_cases
    from broker.store.ledger import Ledger

    ledger = Ledger.from_url(settings.store.url)
    try:
        async with ledger.engine.connect() as conn:
            import sqlalchemy as sa

            from broker.store.tables import cases

            done = (await conn.execute(sa.select(sa.func.count()).select_from(cases)
                                       .where(cases.c.sender == HISTORY_SENDER))).scalar_one()
            total = (await conn.execute(sa.select(sa.func.count()).select_from(cases))).scalar_one()
        if done:
            return
        added = await seed_cases(ledger, total + count, sender=HISTORY_SENDER, history_days=365,
                                 batch=2000)
        log.info("demo_history_seeded", cases=added, note="back-dated demo data, sender demo-backdated")
    finally:
        await ledger.dispose()


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


async def _wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    async def ready() -> bool:
        try:
            async with http.get(f"{base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_for(ready, 10, "the service to become ready", interval=0.05)
    except ConditionTimeout:
        raise RuntimeError("service did not become ready") from None


async def run_demo(config: Path | None, *, rate: float, duration: float, port: int) -> None:
    settings = demo_settings(config, port)
    configure_logging(settings.log.level, settings.log.format)
    sim = Simulation(settings, rate)
    log.info("demo_starting", url=f"http://127.0.0.1:{port}", admin_token=DEMO_TOKENS["admin-demo"],
             kela_token=DEMO_TOKENS["kela-demo"], note="demo data only: invented people, test identity codes")

    async def simulate() -> None:
        receiver = await sim.receiver(port + 1).start()
        try:
            async with aiohttp.ClientSession() as http:
                await _wait_ready(http, sim.base)
                await seed_history(settings)
                async with asyncio.TaskGroup() as group:
                    jobs = [group.create_task(j) for j in (
                        sim.kela_handlers(http), sim.kela_feed_reader(http), sim.pull_intakes(http),
                        sim.webhook_intakes(http), sim.file_intakes(), sim.report())]
                    if duration > 0:
                        await asyncio.sleep(duration)
                        for job in jobs:
                            job.cancel()
        finally:
            await receiver.stop()
            elapsed = time.monotonic() - sim.started
            log.info("demo_finished", referrals_sent=sim.sent, seconds=round(elapsed, 1),
                     referrals_per_s=round(sim.sent / max(elapsed, 1e-9), 2))

    await serve(settings, until=simulate)
