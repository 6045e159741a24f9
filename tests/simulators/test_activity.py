"""The block's activity: plausible, decodable, deterministic, and incidents on time."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from gateway.clock import VirtualClock
from gateway.models import Family, Kind
from gateway.site.config import SiteConfig, parse_config
from gateway.site.registry import Registry
from simulators.activity import BlockActivity, Emission, Incident, play
from simulators.block import demo_site
from simulators.runner import default_demo_incidents
from tests.simulators.helpers import T0, assert_decodes


@pytest.fixture(scope="module")
def demo() -> SiteConfig:
    return parse_config(demo_site())


def _activity(site: SiteConfig, seed: int = 1, speed: float = 60.0, **kw: object) -> BlockActivity:
    return BlockActivity(site, random.Random(seed), start_time=T0, speed=speed, **kw)  # type: ignore[arg-type]


def _day(site: SiteConfig, seed: int = 1) -> list[Emission]:
    return list(_activity(site, seed, start_hour=0.0).emissions(until=24 * 60.0))  # a day at speed 60


def test_a_day_decodes_and_looks_like_a_day(demo: SiteConfig) -> None:
    emissions = _day(demo)
    registry = Registry(demo)
    assert [e.when for e in emissions] == sorted(e.when for e in emissions)
    for e in emissions:
        assert_decodes(e.message, demo, registry, T0 + e.when)
    kinds = Counter(k for e in emissions for k in e.message.kinds)
    for kind in (
        Kind.DOOR_OPENED,
        Kind.DOOR_CLOSED,
        Kind.ACCESS_GRANTED,
        Kind.PRESENCE,
        Kind.BATTERY,
        Kind.HEARTBEAT,
        Kind.ONLINE,
    ):
        assert kinds[kind] > 0, kind
    assert {e.message.family for e in emissions} == {Family.DOOR, Family.SMOKE, Family.FALL, Family.SOS}
    # no alarms without an incident: the routine is a quiet day
    assert not kinds[Kind.SOS_PRESSED] and not kinds[Kind.SMOKE_ALARM] and not kinds[Kind.FALL_DETECTED]

    # residents go out and come back: flat doors open in pairs, more by day than by night
    flat_doors = [e for e in emissions if e.message.device_id.endswith("-door")]
    opened = [e for e in flat_doors if Kind.DOOR_OPENED in e.message.kinds]
    closed_after = [e for e in flat_doors if Kind.DOOR_CLOSED in e.message.kinds]
    assert 40 <= len(opened) <= 600
    assert len(closed_after) >= len(opened)  # each opening is closed (and check-ins repeat "closed")
    by_hour = Counter(int(e.when * 60 // 3600) for e in opened)
    night = sum(by_hour[h] for h in (0, 1, 2, 3, 4))
    day = sum(by_hour[h] for h in (7, 8, 9, 16, 17))
    assert day > 5 * max(night, 1)
    # every battery device checks in about hourly
    check_ins = Counter(e.message.device_id for e in emissions if Kind.BATTERY in e.message.kinds)
    battery_devices = [
        d.id
        for d in demo.devices
        if d.household and d.family != Family.FALL and d.mqtt is not None and d.mqtt.format == "zigbee2mqtt"
    ]
    assert all(check_ins[d] >= 18 for d in battery_devices)


def test_same_seed_same_messages(demo: SiteConfig) -> None:
    def key(emissions: list[Emission]) -> list[tuple[float, str, bytes]]:
        return [(e.when, e.topic, e.payload) for e in emissions]

    first = _day(demo, seed=5)
    assert key(first) == key(_day(demo, seed=5))
    assert key(first) != key(_day(demo, seed=6))


async def _play(
    site: SiteConfig, incidents: list[Incident], duration: float, speed: float = 60.0, seed: int = 1
) -> list[tuple[float, Emission]]:
    """Play on a VirtualClock; record each emission with the clock's time when it was published."""
    clock = VirtualClock()
    activity = BlockActivity(site, random.Random(seed), start_time=clock.now(), speed=speed, incidents=incidents)
    got: list[tuple[float, Emission]] = []

    async def publish(e: Emission) -> None:
        got.append((clock.monotonic(), e))

    task = asyncio.create_task(play(activity, clock, publish, duration=duration))
    await asyncio.sleep(0)  # let it take the clock's time as its start
    while not task.done():
        await clock.advance(0.25)
    assert await task == pytest.approx(duration)
    return got


async def test_playback_on_a_virtual_clock_is_deterministic_and_on_time(demo: SiteConfig) -> None:
    a = await _play(demo, [], duration=120)
    b = await _play(demo, [], duration=120)
    assert [(t, e.topic, e.payload) for t, e in a] == [(t, e.topic, e.payload) for t, e in b]
    assert len(a) > 100
    # published when due: the clock moves in 0.25 s steps, nothing early, nothing late
    assert all(e.when - 1e-6 <= t < e.when + 0.25 + 1e-6 for t, e in a)  # epoch floats: µs precision


async def test_demo_incidents_happen_at_their_time(demo: SiteConfig) -> None:
    incidents = default_demo_incidents(demo)
    assert [i.kind for i in incidents] == ["sos", "smoke", "fall_no_recovery"]
    assert all(i.at <= 45 for i in incidents)
    alone = {r.household for r in demo.residents if r.lives_alone}
    assert incidents[0].household in alone and incidents[2].household in alone
    assert incidents[0].household != incidents[2].household

    got = await _play(demo, incidents, duration=300)
    timeline = [(t, e.cause, e.message.device_id, e.message.kinds[0]) for t, e in got if e.cause != "routine"]
    sos, smoke, fall = (i.household for i in incidents)
    assert timeline == [
        (8.0, "incident:sos", f"{sos}-sos", Kind.SOS_PRESSED),
        (18.0, "incident:smoke", f"{smoke}-smoke", Kind.SMOKE_ALARM),
        (28.0, "incident:fall_no_recovery", f"{fall}-fall", Kind.FALL_DETECTED),
        (58.0, "incident:smoke", f"{smoke}-smoke", Kind.SMOKE_CLEAR),
    ]
    # no recovery: the radar never reports the fall cleared, and keeps repeating it (Z2M state)
    radar = [e for t, e in got if e.message.device_id == f"{fall}-fall" and t > 28]
    assert radar and all(Kind.FALL_CLEARED not in e.message.kinds for e in radar)
    assert any(Kind.FALL_DETECTED in e.message.kinds for e in radar if e.cause == "routine")
    # and the fallen elder does not go out any more
    door = [e for t, e in got if e.message.device_id == f"{fall}-door" and t > 28]
    assert all(Kind.DOOR_OPENED not in e.message.kinds for e in door)


async def test_incident_times_do_not_depend_on_speed(demo: SiteConfig) -> None:
    incidents = [Incident(5, "1-1-102", "fall", duration=12), Incident(7, "1-2-101", "sos")]
    for speed in (1.0, 600.0):
        got = await _play(demo, incidents, duration=30, speed=speed)
        timeline = [(t, e.message.kinds[0]) for t, e in got if e.cause != "routine"]
        assert timeline == [(5.0, Kind.FALL_DETECTED), (7.0, Kind.SOS_PRESSED), (17.0, Kind.FALL_CLEARED)]


def test_every_incident_kind(demo: SiteConfig) -> None:
    incidents = [
        Incident(10, "1-1-102", "smoke_test"),
        Incident(20, "1", "door_forced"),
        Incident(30, "1-1-201", "door_held_open", duration=100),
        Incident(40, "2-1-101", "access_denied"),
        Incident(50, "1-2-101", "offline", duration=200),
        Incident(60, "1-2-102", "low_battery"),
        Incident(70, "1-1-101", "sos", device="1-1-101-pendant"),
        Incident(80, "1-2-201", "inactive", duration=3600),
        Incident(90, "1-2-202", "tamper", device="1-gate"),
    ]
    activity = _activity(demo, speed=1.0, start_hour=10.0, incidents=incidents)
    registry = Registry(demo)
    emissions = list(activity.emissions(until=400))
    for e in emissions:
        assert_decodes(e.message, demo, registry, T0 + e.when)
    by_cause: dict[str, list[tuple[float, str, tuple[Kind, ...]]]] = {}
    for e in emissions:
        by_cause.setdefault(e.cause, []).append((e.when, e.message.device_id, e.message.kinds))
    smoke_test = by_cause["incident:smoke_test"]
    # held: the IAS test bit (never an alarm); released: idle again
    assert [k[0] for _, _, k in smoke_test] == [Kind.SMOKE_TEST, Kind.SMOKE_CLEAR]
    assert by_cause["incident:door_forced"][0][:2] == (20.0, "1-access")
    held = by_cause["incident:door_held_open"]
    assert [(t, k[0]) for t, _, k in held] == [(30.0, Kind.DOOR_OPENED), (130.0, Kind.DOOR_CLOSED)]
    denied = by_cause["incident:access_denied"]
    assert [(t, d, k) for t, d, k in denied] == [(t, "2-access", (Kind.ACCESS_DENIED,)) for t in (40.0, 48.0, 56.0)]
    offline = by_cause["incident:offline"]
    assert [(t, k[0]) for t, _, k in offline][:2] == [(50.0, Kind.OFFLINE), (250.0, Kind.ONLINE)]
    # an offline device is silent in between
    assert not [e for e in emissions if e.message.device_id == "1-2-101-fall" and 50 < e.when < 250]
    assert Kind.BATTERY_LOW in by_cause["incident:low_battery"][0][2]
    assert by_cause["incident:sos"] == [(70.0, "1-1-101-pendant", (Kind.SOS_PRESSED,))]
    assert [(t, k) for t, _, k in by_cause["incident:tamper"]] == [(90.0, (Kind.TAMPER,))]  # Kerui: no "clear"
    inactive = [e for e in emissions if e.message.device_id == "1-2-201-door" and e.when > 80]
    assert all(Kind.DOOR_OPENED not in e.message.kinds for e in inactive)


@pytest.mark.parametrize(
    ("incident", "match"),
    [
        (Incident(1, "9-9-999", "sos"), "no household or building"),
        (Incident(1, "1-1-101", "earthquake"), "unknown incident kind"),  # type: ignore[arg-type]
        (Incident(1, "1-1-101", "sos", device="1-1-101-door"), "is a door device"),
        (Incident(1, "", "sos", device="nope"), "no device"),
        (Incident(1, "1", "sos"), "name a household"),
    ],
)
def test_bad_incidents_are_refused_up_front(demo: SiteConfig, incident: Incident, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _activity(demo, incidents=[incident])


async def test_stop_ends_playback(demo: SiteConfig) -> None:
    clock = VirtualClock()
    stop = asyncio.Event()
    activity = BlockActivity(demo, random.Random(1), start_time=clock.now(), speed=60)
    seen: list[float] = []

    async def publish(e: Emission) -> None:
        seen.append(clock.monotonic())

    task = asyncio.create_task(play(activity, clock, publish, stop=stop))
    await asyncio.sleep(0)
    await clock.advance(10)
    stop.set()
    played = await asyncio.wait_for(task, 1)
    assert played == pytest.approx(10) and seen and max(seen) <= 10


def test_start_hour_follows_the_clock_at_real_speed(demo: SiteConfig) -> None:
    at_3am = T0 + (3 - 8) % 24 * 3600  # 03:00 Beijing time
    real = BlockActivity(demo, random.Random(1), start_time=at_3am, speed=1.0)
    fast = BlockActivity(demo, random.Random(1), start_time=at_3am, speed=60.0)
    assert real.start_tod == 3 * 3600 and fast.start_tod == 7 * 3600
