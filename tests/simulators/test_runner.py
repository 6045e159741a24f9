"""run_simulation against a real Mosquitto: what it says it published is what a subscriber gets."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import aiomqtt
import pytest

from gateway.clock import SystemClock, VirtualClock
from gateway.site.config import SiteConfig, parse_config
from simulators.activity import Incident
from simulators.block import demo_site
from simulators.runner import SimStats, default_demo_incidents, run_simulation
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


def _site(buildings: int = 1, households: int = 6) -> SiteConfig:
    """The demo block on topics of its own, so tests sharing the broker do not see each other."""
    site: dict[str, Any] = demo_site(buildings, households)
    tag = uuid.uuid4().hex[:8]
    site["mqtt"] = {
        "zigbee2mqtt_base": f"z2m-{tag}",
        "rtl_433_topic": f"rtl-{tag}/+/events",
        "native_base": f"native-{tag}",
    }
    return parse_config(site)


class _Tally:
    """A list that can be awaited until it holds ``n`` items."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def add(self, item: Any) -> None:
        self.items.append(item)
        for n, event in self._waiters:
            if len(self.items) >= n:
                event.set()

    async def reach(self, n: int) -> None:
        if len(self.items) < n:
            event = asyncio.Event()
            self._waiters.append((n, event))
            await event.wait()


class _Subscriber:
    def __init__(self, broker: Mosquitto, site: SiteConfig) -> None:
        self.broker = broker
        m = site.mqtt
        self.filters = [f"{m.zigbee2mqtt_base}/#", m.rtl_433_topic, f"{m.native_base}/+"]
        self.received = _Tally()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> _Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def _run(self) -> None:
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=f"sub-{uuid.uuid4().hex[:8]}", clean_session=False
        ) as client:
            for f in self.filters:
                await client.subscribe(f, qos=1)
            self._ready.set()
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                self.received.add((msg.topic.value, msg.payload))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def test_published_messages_reach_a_subscriber(mosquitto: Mosquitto) -> None:
    site = _site()
    sent: list[tuple[str, bytes]] = []
    incidents = [Incident(0.5, "1-1-101", "sos"), Incident(1.0, "1-1-102", "smoke", duration=0.5)]
    async with _Subscriber(mosquitto, site) as sub:
        stats = await run_simulation(
            site,
            mosquitto.host,
            mosquitto.port,
            clock=SystemClock(),
            speed=3600,
            duration=2.0,
            incidents=incidents,
            on_publish=lambda t, p: sent.append((t, p)),
        )
        async with asyncio.timeout(10):
            await sub.received.reach(stats.messages)
    assert stats.messages == len(sent) > 50
    assert Counter(sub.received.items) == Counter(sent)
    assert stats.by_cause["incident:sos"] == 1 and stats.by_cause["incident:smoke"] == 2
    assert stats.events == sum(stats.by_kind.values()) >= stats.messages
    assert set(stats.by_family) == {"door", "smoke", "fall", "sos"}
    assert stats.seconds == pytest.approx(2.0, abs=0.5)
    assert "published" in str(stats)


async def test_a_virtual_duration(mosquitto: Mosquitto) -> None:
    """On a VirtualClock a minute of the demo passes as fast as the broker takes the messages."""
    site = _site(2, 4)
    clock = VirtualClock()
    incidents = default_demo_incidents(site)
    task = asyncio.create_task(
        run_simulation(site, mosquitto.host, mosquitto.port, clock=clock, speed=60, duration=60, incidents=incidents)
    )
    await asyncio.sleep(0)
    while not task.done():
        await clock.advance(1.0)
        await asyncio.sleep(0.001)  # real time for the broker's PUBACKs
    stats: SimStats = await task
    assert {c for c in stats.by_cause if c != "routine"} == {
        "incident:sos",
        "incident:smoke",
        "incident:fall_no_recovery",
    }
    assert stats.by_cause["incident:smoke"] == 2  # alarm at 18 s, clear at 58 s
    assert stats.seconds >= 60  # the test moves the clock while PUBACKs are on their way


async def test_survives_a_broker_restart(mosquitto: Mosquitto) -> None:
    site = _site()
    stop = asyncio.Event()
    sent = _Tally()
    task = asyncio.create_task(
        run_simulation(
            site,
            mosquitto.host,
            mosquitto.port,
            clock=SystemClock(),
            speed=3600,
            stop=stop,
            on_publish=lambda t, p: sent.add(t),
        )
    )
    try:
        async with asyncio.timeout(10):
            await sent.reach(20)
        await asyncio.to_thread(mosquitto.restart)
        async with asyncio.timeout(20):
            await sent.reach(len(sent.items) + 20)
    finally:
        stop.set()
        if not mosquitto.running:
            mosquitto.start()
    stats = await asyncio.wait_for(task, 10)
    assert stats.reconnects >= 1
    assert stats.messages == len(sent.items)


async def test_stop_while_the_broker_is_unreachable() -> None:
    site = _site()
    stop = asyncio.Event()
    from tests.servers import free_port

    task = asyncio.create_task(run_simulation(site, "127.0.0.1", free_port(), clock=SystemClock(), stop=stop))
    await asyncio.sleep(0.3)
    assert not task.done()  # retrying with back-off
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert stats.messages == 0


def test_default_demo_incidents_without_a_site() -> None:
    incidents = default_demo_incidents()
    assert [(i.at, i.kind) for i in incidents] == [(8.0, "sos"), (18.0, "smoke"), (28.0, "fall_no_recovery")]
    config = parse_config(demo_site())
    alone = {r.household for r in config.residents if r.lives_alone}
    assert incidents[0].household in alone and incidents[2].household in alone
    assert incidents[1].household not in alone
    # the tiniest demo still has a flat for every incident
    tiny = default_demo_incidents(parse_config(demo_site(1, 1)))
    assert {i.household for i in tiny} == {"1-1-101"}


def test_demo_incidents_go_to_flats_that_have_the_device_and_an_impossible_one_is_named() -> None:
    from simulators.runner import check_simulation

    site = demo_site(1, 2)
    # A family's flat without its MQTT devices but a door contact: its smoke alarm goes to the elder's flat.
    site["devices"] = [
        d for d in site["devices"] if d.get("household") != "1-2-101" or d["family"] == "door" or "mqtt" not in d
    ]
    config = parse_config(site)
    incidents = default_demo_incidents(config)
    smoke = next(i for i in incidents if i.kind == "smoke")
    assert smoke.household == "1-1-101"  # not the family's flat: it has no detector
    check_simulation(config, incidents)
    with pytest.raises(ValueError, match=r"^incident smoke: household '1-2-101' has no device for it$"):
        check_simulation(config, [Incident(18.0, "1-2-101", "smoke")])
    no_flat = parse_config(
        {**site, "devices": [d for d in site["devices"] if d["family"] != "smoke" or "mqtt" not in d]}
    )
    assert "smoke" not in {i.kind for i in default_demo_incidents(no_flat)}  # left out, not failing
