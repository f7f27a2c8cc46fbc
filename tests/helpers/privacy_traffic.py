"""Bounded, realistic traffic against a running service, remembering every identity it sent.

Kela sends every kind of referral as JSON and as an XML batch, with repeats, conflicts and invalid
input; intakes answer by webhook-fed API calls (area 08), by pulling their inbox (90) and by reply
files (19) with every reply status, returns that re-route, information requests that Kela answers
from its feed; operators use the dashboard, statistics, dead letters and manual routing. Every
identity code, name and free-text marker sent is recorded in `Sent`, so the privacy scan can look
for exactly those afterwards.

The people are invented: identity codes are test codes (individual number 900-999), and the names
are made-up words that occur nowhere else in the service's vocabulary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp

from broker.delivery.filedrop import write_atomically
from broker.devtools.demo_data import make_referral, make_test_hetu
from broker.devtools.harness import wait_for
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, intake_token
from tests.helpers.receiver import Receiver

FIRST_NAMES = ["Aurelija", "Velmiina", "Tuomelias", "Karoliska", "Jermuli", "Hennariina",
               "Oskarius", "Vilmetta", "Sulevias", "Pirjetta", "Onnirami", "Lumikerttu"]
LAST_NAMES = ["Kuusenkolo", "Ruskeavuori", "Hallavaara", "Pajukorpi", "Sammalniemi", "Tervasalo",
              "Kivimutka", "Ketunpelto", "Routasuo", "Jäkälämaa", "Vaskiranta", "Haapakumpu"]
WORKER = "Ilmatar Pellervoinen"
# In every free text the test sends: a message body that reached a log would carry it.
MARKER = "Kuvitelmakannel"

KINDS = ["support_need", "support_need_without_consent", "application_transfer",
         "basic_amount_reduction", "urgent_assistance"]
XML_KIND = {"support_need": "sosiaalihuollon_tarve",
            "support_need_without_consent": "sosiaalihuollon_tarve_ilman_suostumusta",
            "application_transfer": "hakemuksen_siirto", "basic_amount_reduction": "perusosan_alentaminen",
            "urgent_assistance": "kiireellinen_apu"}
# Municipality -> area: Tampere (08, webhook), Helsinki (90, pull), Oulu (19, files), Mariehamn (91,
# no route: unroutable until an operator routes it).
MUNICIPALITY_AREA = {"837": "08", "091": "90", "564": "19", "478": "91"}
RETURN_TO = {"08": "091", "90": "837", "19": "837"}
REPLY_STATUSES = {"received", "assigned", "client_contacted", "assessment_started", "info_requested",
                  "returned", "decision_made", "closed"}
# The case states a reply leads to (a return re-routes at once: `routed`, soon `delivered`, elsewhere).
STATE_AFTER = {"received": {"acknowledged"}, "assigned": {"in_progress"},
               "client_contacted": {"in_progress"}, "assessment_started": {"in_progress"},
               "info_requested": {"info_requested"}, "decision_made": {"in_progress"},
               "closed": {"closed"}, "returned": {"routed", "delivered"}}
_HREF_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Sent:
    codes: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=lambda: {MARKER, *WORKER.split()})
    kinds: Counter[str] = field(default_factory=Counter)  # accepted, by kind
    channels: Counter[str] = field(default_factory=Counter)  # accepted, json / xml
    replies: Counter[str] = field(default_factory=Counter)  # applied (202), by status
    file_replies: Counter[str] = field(default_factory=Counter)  # applied from files, by status
    http: Counter[int] = field(default_factory=Counter)  # every answer's status
    requests: int = 0
    area_of: dict[str, str] = field(default_factory=dict)  # referral id -> area at acceptance
    kind_of: dict[str, str] = field(default_factory=dict)
    answers: int = 0
    info_cases: set[str] = field(default_factory=set)
    error_bodies: list[str] = field(default_factory=list)  # every 4xx body of the API, to scan too
    error_pages: list[str] = field(default_factory=list)  # every 4xx page of the dashboard
    storm_statuses: Counter[int] = field(default_factory=Counter)  # answers while backends were killed
    oversize: list[int] = field(default_factory=list)  # statuses of the oversize request line, header


class Traffic:
    def __init__(self, base: str, http: aiohttp.ClientSession, files_dir: Path,
                 receiver: Receiver, *, referrals: int = 60, seed: int = 8) -> None:
        self.base, self.http, self.files_dir, self.receiver = base, http, files_dir, receiver
        self.n = referrals
        self.rng = random.Random(seed)
        self.sent = Sent()
        self.bodies: dict[str, dict[str, Any]] = {}  # kela_reference -> body sent
        self.ids: dict[str, str] = {}  # kela_reference -> referral id
        self.limit = asyncio.Semaphore(8)

    # --- plumbing ---------------------------------------------------------------------------------

    async def call(self, method: str, path: str, token: str | None = None, *,
                   expect: set[int] | None = None, **kwargs: Any) -> tuple[int, str]:
        headers = {**kwargs.pop("headers", {}), **(_h(token) if token else {})}
        async with self.limit, self.http.request(method, f"{self.base}{path}", headers=headers,
                                                 allow_redirects=False, **kwargs) as r:
            text = await r.text()
            html = r.content_type == "text/html"
        self.sent.requests += 1
        self.sent.http[r.status] += 1
        if r.status >= 400:
            (self.sent.error_pages if html else self.sent.error_bodies).append(text)
        if expect is not None:
            assert r.status in expect, f"{method} {path}: {r.status} {text[:300]}"
        return r.status, text

    async def json(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        _status, text = await self.call(method, path, token, **kw)
        return json.loads(text)

    async def case(self, rid: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.json("GET", f"/v1/referrals/{rid}", ADMIN_TOKEN, expect={200})
        return body

    async def wait_for(self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
        await wait_for(check, timeout, what, interval=0.1)

    async def wait_state(self, rid: str, states: set[str], area: str | None = None) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        async def reached() -> bool:
            seen.update(await self.case(rid))
            return seen["state"] in states and (area is None or seen["area"] == area)

        await self.wait_for(f"{rid} in {states}", reached)
        return seen

    # --- Kela ---------------------------------------------------------------------------------------

    def referral(self, i: int, prefix: str = "PRIV") -> dict[str, Any]:
        municipality = "478" if i % 15 == 7 else ["837", "091", "564"][i % 3]
        kind = KINDS[i % len(KINDS)]
        body = make_referral(self.rng, kela_reference=f"{prefix}-{i:03d}", municipality_code=municipality,
                             kind=kind, urgency="urgent" if i % 4 == 0 else "normal")
        body["client"]["first_names"] = f"{FIRST_NAMES[i % 12]} {FIRST_NAMES[(i * 5 + 3) % 12]}"
        body["client"]["last_name"] = LAST_NAMES[(i * 7) % 12]
        body["client"]["email"] = f"{LAST_NAMES[(i * 7) % 12].lower()}@example.invalid"
        body["description"] = f"{MARKER}: keksitty tilanne {i}."
        self.record(body)
        self.bodies[body["kela_reference"]] = body
        return body

    def record(self, body: dict[str, Any]) -> None:
        client = body["client"]
        self.sent.codes.add(client["personal_id"])
        self.sent.words.update(client["first_names"].split())
        self.sent.words.add(client["last_name"])

    async def send_json_referrals(self) -> None:
        async def one(i: int) -> None:
            body = self.referral(i)
            out = await self.json("POST", "/v1/referrals", KELA_TOKEN, json=body, expect={202})
            self.accepted(body["kela_reference"], body["kind"], out, "json")

        await asyncio.gather(*(one(i) for i in range(self.n)))

    def accepted(self, ref: str, kind: str, out: dict[str, Any], channel: str) -> None:
        self.ids[ref] = out["referral_id"]
        self.sent.area_of[out["referral_id"]] = out["area"]
        self.sent.kind_of[out["referral_id"]] = kind
        self.sent.kinds[kind] += 1
        self.sent.channels[channel] += 1

    async def send_repeats_and_conflicts(self) -> None:
        refs = sorted(self.ids)[:5]
        for ref in refs:  # an identical resend: 200 and the first referral id
            body = self.bodies[ref]
            out = await self.json("POST", "/v1/referrals", KELA_TOKEN, json=body, expect={200})
            assert out["referral_id"] == self.ids[ref]
        for ref in refs[:3]:  # same key, another body: 409, nothing changes
            body = {**self.bodies[ref], "description": f"{MARKER}: toinen versio."}
            await self.call("POST", "/v1/referrals", KELA_TOKEN, json=body, expect={409})

    async def send_invalid(self) -> None:
        """422s whose input holds identity codes and names: the answer must not echo them."""
        rng = random.Random(99)
        good = make_test_hetu(rng)
        wrong_check = good[:-1] + ("X" if good[-1] != "X" else "Y")
        impossible = "310299-9" + "42" + "T"  # 31 February
        cases: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
            ("check", lambda b: b["client"].__setitem__("personal_id", wrong_check)),
            ("date", lambda b: b["client"].__setitem__("personal_id", impossible)),
            ("kind", lambda b: b.__setitem__("kind", good)),
            ("language", lambda b: b["client"].__setitem__("language", LAST_NAMES[0])),
            ("municipality", lambda b: b["client"].__setitem__("municipality_code", "999")),
            ("consent", lambda b: b.pop("consent", None)),
            ("handler", lambda b: b["kela"].__setitem__("handler_id", {"id": good})),
        ]
        self.sent.codes.update({good, wrong_check, impossible})
        for n, (name, spoil) in enumerate(cases):
            body = self.referral(1000 + n * len(KINDS), prefix=f"BAD-{name}")  # support_need
            spoil(body)
            _status, text = await self.call("POST", "/v1/referrals", KELA_TOKEN, json=body, expect={422})
            assert "errors" in json.loads(text)
        raw = f'{{"kela_reference": "BAD-json", "client": {{"personal_id": "{good}"'
        await self.call("POST", "/v1/referrals", KELA_TOKEN, data=raw.encode(),
                        headers={"Content-Type": "application/json"}, expect={400})

    def notice_xml(self, i: int) -> tuple[str, str]:
        body = self.referral(i, prefix="XML")
        c = body["client"]
        consent = ""
        if body["kind"] == "support_need":
            consent = "<Suostumus><Annettu>true</Annettu><Tapa>suullinen</Tapa></Suostumus>"
        elif body["kind"] == "support_need_without_consent":
            consent = (f"<Suostumus><Annettu>0</Annettu></Suostumus>"
                       f"<Perustelu>{MARKER}: turvallisuus vaarassa.</Perustelu>")
        xml = (f"<Ilmoitus><KelanViite>{body['kela_reference']}</KelanViite>"
               f"<Laji>{XML_KIND[body['kind']]}</Laji>"
               f"<Kiireellisyys>normaali</Kiireellisyys><Asiakas>"
               f"<Henkilotunnus>{c['personal_id']}</Henkilotunnus>"
               f"<Etunimet>{escape(c['first_names'])}</Etunimet><Sukunimi>{escape(c['last_name'])}</Sukunimi>"
               f"<Kieli>fi</Kieli><Kotikuntakoodi>{c['municipality_code']}</Kotikuntakoodi></Asiakas>"
               f"{consent}<Tarpeet><Tarve>asuminen</Tarve></Tarpeet>"
               f"<Kuvaus>{MARKER}: keksitty ilmoitus.</Kuvaus><Lahetetty>{_now()}</Lahetetty></Ilmoitus>")
        return body["kela_reference"], xml

    async def send_xml_batch(self) -> None:
        notices = [self.notice_xml(i) for i in range(5)]
        bad_ref, bad = self.notice_xml(5)
        code = re.search(r"<Henkilotunnus>([^<]+)<", bad)
        assert code is not None
        wrong = code[1][:-1] + ("X" if code[1][-1] != "X" else "Y")
        self.sent.codes.add(wrong)
        notices.append((bad_ref, bad.replace(code[1], wrong)))
        batch = ('<?xml version="1.0" encoding="UTF-8"?><Ilmoitusera xmlns="urn:kela:handoff:ilmoitus:1" '
                 f'versio="1">{"".join(x for _, x in notices)}</Ilmoitusera>').encode()
        headers = {"Content-Type": "application/xml"}
        for attempt in (1, 2):  # the second time, every valid notice is an idempotent repeat
            out = await self.json("POST", "/v1/kela/notices", KELA_TOKEN, data=batch, headers=headers,
                                  expect={207})
            statuses = [r["status"] for r in out["results"]]
            assert statuses == [202] * 5 + [422] if attempt == 1 else [200] * 5 + [422], statuses
            if attempt == 1:
                for i, result in enumerate(out["results"][:5]):
                    self.accepted(result["kela_reference"], KINDS[i % len(KINDS)], result, "xml")

    # --- intakes ------------------------------------------------------------------------------------

    async def pull_inbox(self, area: str) -> set[str]:
        """The pull intake reads its whole inbox, a page at a time."""
        ids: set[str] = set()
        after = ""
        while True:
            page = await self.json("GET", f"/v1/inbox?state=delivered&limit=7&after={after}",
                                   intake_token(area), expect={200})
            ids.update(item["referral_id"] for item in page["items"])
            if page["next"] is None:
                return ids
            after = page["next"]

    async def reply(self, rid: str, area: str, status: str, n: int) -> None:
        """One reply of `area`'s intake: through the API, or as a reply file for the files area."""
        reply: dict[str, Any] = {"reply_id": f"{status}-{n}", "status": status, "sent_at": _now(),
                                 "message": f"{MARKER}: viesti."}
        if status == "assigned":
            reply["worker"] = {"name": WORKER, "title": "sosiaalityöntekijä"}
        elif status == "info_requested":
            reply["question"] = f"{MARKER}: onko vuokrarästejä?"
        elif status == "returned":
            reply.update(reason=f"{MARKER}: asiakas muutti.", suggested_municipality_code=RETURN_TO[area])
        elif status == "decision_made":
            reply["decision"] = ["granted", "partly_granted", "denied"][n % 3]
        elif status == "closed":
            reply.update(outcome=["services_arranged", "no_need", "client_declined"][n % 3],
                         findings=["service_gap"], client_feedback={"rating": 4, "heard": True})
        if area == "19":
            content = json.dumps({"referral_id": rid, **reply}).encode()
            await asyncio.to_thread(write_atomically, self.files_dir / "replies", f"reply-{rid}-{n}.json",
                                    content)
            await self.wait_state(rid, STATE_AFTER[status])
            self.sent.file_replies[status] += 1
        else:
            await self.call("POST", f"/v1/referrals/{rid}/replies", intake_token(area), json=reply,
                            expect={202})
        self.sent.replies[status] += 1

    async def work(self, rid: str, area: str, j: int) -> None:
        """An intake's handling of one case, chosen by its position `j` in the area's list."""
        kind = self.sent.kind_of[rid]
        script = j % 6
        if kind == "application_transfer" and script in (0, 4):
            steps = ["received", "decision_made", "closed"]
        elif script == 0:
            steps = ["received", "assigned", "client_contacted", "assessment_started", "closed"]
        elif script == 1:
            steps = ["received", "assigned"]
        elif script == 2:
            steps = ["received", "info_requested"]
            self.sent.info_cases.add(rid)
        elif script == 3:
            steps = ["returned"]
        elif script == 4:
            steps = ["received", "client_contacted", "closed"]
        else:
            steps = []  # left unanswered
        for n, status in enumerate(steps):
            await self.reply(rid, area, status, n)
        if steps == ["returned"]:
            new_area = MUNICIPALITY_AREA[RETURN_TO[area]]
            await self.wait_state(rid, {"delivered"}, new_area)
            await self.reply(rid, new_area, "received", 10)
            await self.reply(rid, new_area, "closed", 11)

    async def intakes(self) -> None:
        routable = {rid: a for rid, a in self.sent.area_of.items() if a in ("08", "90", "19")}
        await asyncio.gather(*(self.wait_state(rid, {"delivered"}) for rid in routable))
        webhook = set(self.receiver.referral_ids())
        assert {rid for rid, a in routable.items() if a == "08"} <= webhook
        assert {rid for rid, a in routable.items() if a == "90"} <= await self.pull_inbox("90")
        files = {p.name.split("-", 1)[1][:36] for p in self.files_dir.glob("referral-*.json")}
        assert {rid for rid, a in routable.items() if a == "19"} <= files
        jobs = []
        for area in ("08", "90", "19"):
            # Application transfers first: position 0 of every area is one, so a `decision_made`
            # is sent in every run (referral ids are random, their order is not).
            mine = sorted((r for r, a in routable.items() if a == area),
                          key=lambda r: (self.sent.kind_of[r] != "application_transfer", r))
            for j, rid in enumerate(mine):
                jobs.append(self.work(rid, area, j))
        await asyncio.gather(*jobs)

    async def repeats_and_misfits(self) -> None:
        """A repeated reply is 200; another body under a used reply_id, or a misfit status, is 409."""
        rid = ""
        for candidate, area in sorted(self.sent.area_of.items()):
            if area == "90" and (await self.case(candidate))["state"] == "in_progress":
                rid = candidate
                break
        assert rid, "no case of area 90 in progress"
        await self.call("POST", f"/v1/referrals/{rid}/replies", intake_token("90"),
                        json={"reply_id": "received-0", "status": "received", "sent_at": _now(),
                              "message": f"{MARKER}: eri sisältö."}, expect={409})
        await self.call("POST", f"/v1/referrals/{rid}/replies", intake_token("90"),
                        json={"reply_id": "late-ack", "status": "received", "sent_at": _now()},
                        expect={409})
        await self.call("POST", f"/v1/referrals/{rid}/replies", intake_token("08"),
                        json={"reply_id": "other-area", "status": "closed", "outcome": "other",
                              "sent_at": _now()}, expect={404})

    # --- Kela's feed and answers --------------------------------------------------------------------

    async def read_feed(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = ""
        for _ in range(200):
            page = await self.json("GET", f"/v1/updates?after={after}&limit=7", KELA_TOKEN, expect={200})
            items += page["items"]
            if not page["items"]:
                return items
            after = page["next"]
        raise AssertionError("the feed never ended")

    async def answer_questions(self) -> None:
        items = await self.read_feed()
        asked = {i["referral_id"] for i in items
                 if i["type"] == "reply" and i["reply"]["status"] == "info_requested"}
        assert asked == self.sent.info_cases
        for rid in sorted(asked):
            answer = {"answer_id": f"A-{rid[:8]}", "message": f"{MARKER}: lisätieto.", "sent_at": _now()}
            await self.call("POST", f"/v1/referrals/{rid}/answers", KELA_TOKEN, json=answer, expect={202})
            await self.call("POST", f"/v1/referrals/{rid}/answers", KELA_TOKEN, json=answer, expect={200})
            self.sent.answers += 1
            area = (await self.case(rid))["area"]
            await self.reply(rid, area, "closed", 20)
        closed = next(r for r, a in sorted(self.sent.area_of.items()) if r not in asked and a == "08")
        await self.call("POST", f"/v1/referrals/{closed}/answers", KELA_TOKEN, expect={409},
                        json={"answer_id": "A-misfit", "message": "x", "sent_at": _now()})

    # --- operators and reads ------------------------------------------------------------------------

    async def operators(self) -> None:
        for rid, area in sorted(self.sent.area_of.items()):
            if area == "91":
                out = await self.json("POST", f"/v1/admin/referrals/{rid}/route", ADMIN_TOKEN,
                                      json={"area": "90"}, expect={202})
                assert out["area"] == "90", out
        await self.call("GET", "/v1/admin/dead-letters?limit=5", ADMIN_TOKEN, expect={200})
        month = dt.date.today().strftime("%Y-%m")
        await self.call("GET", f"/v1/statistics?from={month}&to={month}", ADMIN_TOKEN, expect={200})
        await self.call("GET", f"/v1/statistics?from={month}&to={month}&area=08&format=csv",
                        KELA_TOKEN, expect={200})
        await self.call("GET", f"/v1/statistics?from={month}&to={month}", intake_token("90"), expect={200})

    async def reads(self) -> None:
        code = sorted(self.sent.codes)[0]
        name = LAST_NAMES[1]
        some = sorted(self.sent.area_of.items())[:6]
        for rid, _ in some:
            await self.call("GET", f"/v1/referrals/{rid}", KELA_TOKEN, expect={200})
            area = (await self.case(rid))["area"]  # now: returns and operators move cases
            if area in ("08", "90", "19"):
                await self.call("GET", f"/v1/referrals/{rid}", intake_token(area), expect={200})
                await self.call("GET", f"/v1/referrals/{rid}", intake_token("08" if area != "08" else "90"),
                                expect={404})
        # Identity data typed into URLs: the access log must not keep it.
        for path in (f"/v1/referrals/{code}", f"/v1/referrals/x{code}", f"/v1/referrals/{name}",
                     f"/v1/updates?after={code}", f"/v1/inbox?state={name.lower()}",
                     f"/v1/{name}/{code}"):
            token = intake_token("90") if path.startswith("/v1/inbox") else KELA_TOKEN
            status, _ = await self.call("GET", path, token)
            assert status in (404, 422), (path, status)

    async def dashboard(self) -> None:
        _status, page = await self.call("GET", "/dashboard/login", expect={200})
        csrf = _HREF_CSRF.search(page)
        assert csrf is not None
        await self.call("POST", "/dashboard/login", data={"csrf": csrf[1], "token": ADMIN_TOKEN},
                        expect={303})
        rid, ref = next(iter(self.ids.values())), next(iter(self.ids))
        code, name = sorted(self.sent.codes)[1], FIRST_NAMES[2]
        for path, expect in (("/dashboard", 200), ("/dashboard?lang=sv", 200),
                             (f"/dashboard/cases?q={rid}", 200), (f"/dashboard/cases?q={ref}", 200),
                             (f"/dashboard/cases?q={code}", 400), (f"/dashboard/cases?q={name}", 404),
                             ("/dashboard/statistics", 200)):
            await self.call("GET", path, expect={expect})

    # --- faults -------------------------------------------------------------------------------------

    async def under_storm(self, round_: int) -> None:
        """One round while the store's backends are being terminated (tests.helpers.processes.backend_storm):
        new referrals, and replies naming a worker, with any answer (a 500 is expected)."""
        async def one(i: int) -> None:
            body = self.referral(2000 + round_ * 6 + i, prefix="STORM")
            status, _ = await self.call("POST", "/v1/referrals", KELA_TOKEN, json=body)
            self.sent.storm_statuses[status] += 1

        async def reply(rid: str, area: str) -> None:
            body = {"reply_id": f"storm-{round_}", "status": "assigned", "sent_at": _now(),
                    "message": f"{MARKER}: myrsky.", "worker": {"name": WORKER, "title": "ohjaaja"}}
            status, _ = await self.call("POST", f"/v1/referrals/{rid}/replies", intake_token(area),
                                        json=body)
            self.sent.storm_statuses[status] += 1

        cases = [(rid, a) for rid, a in sorted(self.sent.area_of.items()) if a in ("08", "90")][:3]
        await asyncio.gather(*(one(i) for i in range(6)), *(reply(rid, a) for rid, a in cases))

    async def oversize(self) -> None:
        """A request line and a header over aiohttp's 8,190-byte limit, each holding an identity code
        with letters glued to it: aiohttp's parser refuses them and logs the error with the raw bytes."""
        rng = random.Random(15)
        in_line, in_header = make_test_hetu(rng), make_test_hetu(rng)
        self.sent.codes.update({in_line, in_header})
        url = urlsplit(self.base)
        for raw in (f"GET /v1/referrals/{in_line}xyz{'q' * 8200} HTTP/1.1\r\nHost: x\r\n\r\n",
                    f"GET /v1/referrals HTTP/1.1\r\nHost: x\r\n"
                    f"X-Note: abc{in_header.lower()}xyz{'h' * 8200}\r\n\r\n"):
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            try:
                writer.write(raw.encode())
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after a 400
            finally:
                writer.close()
            self.sent.oversize.append(int(answer.split(b" ", 2)[1]))

    async def run(self) -> None:
        await self.send_json_referrals()
        await self.send_repeats_and_conflicts()
        await self.send_invalid()
        await self.send_xml_batch()
        await self.intakes()
        await self.repeats_and_misfits()
        await self.answer_questions()
        await self.operators()
        await self.reads()
        await self.dashboard()
