"""Scale-out on the production pair: three `handoff run` processes share one PostgreSQL database and
one RabbitMQ vhost, one of them is SIGKILLed mid-stream, and the other two carry on.

What this proves, from outside the processes, as an operator would see it:
- the promise of a 202 holds across processes: every accepted referral is `delivered` exactly once in
  the ledger, reached the webhook, and nothing is pending or dead;
- the work is shared: before the kill all three processes deliver; after it, each survivor accepts
  referrals and delivers a substantial share of the deliveries (its own `/metrics` counters, which
  count only what that process did).

Why the share must be substantial: each survivor holds one consumer on each intake queue with the same
prefetch (`[transport] prefetch`, 32), and a quorum queue hands messages round-robin to the consumers
that have credit left. A consumer only stops getting its turn while its prefetch window is full, which
at this rate (a few hundred referrals, fast local webhook) is rare and short, and then the other one
takes the overflow; so the split is near half and half. The victim's unacked messages go back to the
queues when its connection dies and are shared the same way. 15 % per survivor is therefore far from
the expected ~50 % (the test does not hinge on scheduling luck), yet it fails the case the claim rules
out: one consumer taking (nearly) everything while the other idles.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.devtools.harness import wait_for
from tests.helpers.processes import (
    LedgerAudit,
    ServiceProcess,
    assert_delivered_once,
    delivered_count,
    metric_total,
    production_pair,
    send,
    send_until_all_accepted,
    service_process,
    vhost_of,
    wait_quiet,
)
from tests.helpers.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]


PROCESSES = 3
REFERRALS = 450
KILL_AT = 150  # SIGKILL the victim once this many referrals have been accepted
MIN_SURVIVOR_SHARE = 0.15  # of the deliveries made after the kill; see the module docstring


async def _counts(process: ServiceProcess) -> tuple[float, float]:
    """(delivered, accepted) as counted by this one process."""
    return (await delivered_count(process.base),
            await metric_total(process.base, "handoff_referrals_received_total"))


@production_pair
async def test_three_processes_one_killed_mid_stream(tmp_path: Path, store_url: str,
                                                     transport_url: str) -> None:
    vhost = vhost_of(transport_url)
    receiver = await Receiver().start()
    processes = [service_process(tmp_path, f"svc-{i}", store_url=store_url, transport_url=transport_url,
                                 hook_url=receiver.url) for i in range(PROCESSES)]
    victim, survivors = processes[1], [processes[0], processes[2]]
    ledger = LedgerAudit(store_url)
    refs = [f"SCALE-{i}" for i in range(REFERRALS)]
    try:
        for process in processes:  # one after the other: each migrates the same database at start
            await process.start()
        # The load balancer's list: `send` reads it for every request, so dropping the victim from it
        # sends the rest of the stream round-robin over the survivors.
        bases = [p.base for p in processes]
        trigger = asyncio.Event()
        accepted_so_far = 0

        def on_accepted(n: int) -> None:
            nonlocal accepted_so_far
            accepted_so_far = n
            if n >= KILL_AT:
                trigger.set()

        async def all_have_delivered() -> bool:
            return all(c > 0 for c in await asyncio.gather(*(delivered_count(p.base) for p in processes)))

        async def kill_victim() -> tuple[int, list[tuple[float, float]]]:
            await trigger.wait()
            # Before the kill all three took part (the stream keeps going meanwhile).
            await wait_for(all_have_delivered, 15, "each of the three processes has delivered")
            at_kill = [await _counts(s) for s in survivors]
            killed_at = accepted_so_far
            victim.kill()
            bases.remove(victim.base)  # no await in between: nothing new goes to the victim
            return killed_at, at_kill

        (killed_at, at_kill), first = await asyncio.gather(
            kill_victim(), send(bases, refs, on_accepted=on_accepted))
        assert KILL_AT <= killed_at < REFERRALS - 100, f"the kill was not mid-stream ({killed_at})"
        assert victim.proc is not None and victim.proc.returncode is not None
        assert bases == [s.base for s in survivors]

        # POSTs cut off by the kill got no answer: resending is safe (same reference and body -> 200
        # with the id the victim committed, or a 202 if it had not).
        accepted = await send_until_all_accepted(bases, refs, first)
        await wait_quiet(receiver, ledger, vhost, set(accepted.values()))
        await assert_delivered_once(receiver, ledger, survivors[0].base, accepted)

        # The load after the kill, from each survivor's own counters (scraped before they stop).
        at_end = [await _counts(s) for s in survivors]
        delivered_after = [end[0] - kill[0] for end, kill in zip(at_end, at_kill, strict=True)]
        accepted_after = [end[1] - kill[1] for end, kill in zip(at_end, at_kill, strict=True)]
        total_after = sum(delivered_after)
        # Most of the stream came after the kill: at least the referrals not yet accepted then.
        assert total_after >= REFERRALS - killed_at - 10, (delivered_after, killed_at)
        for name, n in zip(("first", "second"), delivered_after, strict=True):
            assert n >= MIN_SURVIVOR_SHARE * total_after, (
                f"the {name} survivor delivered {n:g} of {total_after:g} after the kill: "
                f"not spread ({delivered_after})")
        assert all(n > 0 for n in accepted_after), f"a survivor accepted nothing: {accepted_after}"
        # Each successful webhook POST is counted once, by the process that made it.
        assert sum(e[0] for e in at_end) <= len(accepted)

        for survivor in survivors:
            assert survivor.terminate() == 0
    finally:
        for process in processes:
            process.kill()
        await receiver.stop()
