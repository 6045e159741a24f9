"""OSDP door readers end to end: a simulated reader (libosdp PD) on a real pty, the real gateway
as control panel, the store, the rules and the alert path over Mosquitto.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import VirtualClock
from gateway.errors import ConfigError
from gateway.ingest.serial import access_directory
from gateway.models import Event, Kind
from gateway.runtime import Gateway
from gateway.site.config import parse_config
from simulators.osdp_reader import PtyOsdpReader
from tests.gateway.factories import minimal_site
from tests.gateway.harness import eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

READER = "1-lobby-reader"


def _site(tmp_path: Path, **bus: Any) -> dict[str, Any]:
    site = minimal_site()
    site["buildings"].append({"id": "2", "name": "2号楼", "units": ["1"]})
    site["households"].append({"id": "2-1-201", "building": "2", "unit": "1", "number": "201"})
    site["residents"][0]["credentials"] = ["card:123-4567"]
    site["residents"].append({"id": "r2", "name": "李强", "household": "2-1-201", "credentials": ["card:1000-20001"]})
    site["staff"] = [{"id": "s1", "name": "刘师傅", "role": "security", "credentials": ["card:200-1001"]}]
    site["visitors"] = [
        {"id": "v1", "name": "张网格", "role": "grid_worker", "credentials": ["card:90-324"], "households": ["1-1-101"]}
    ]
    site["osdp_buses"] = [
        {
            "id": "doors",
            "port": str(tmp_path / "ttyOSDP"),
            "online_timeout": 5,
            "backoff_initial": 0.05,
            "backoff_max": 0.3,
            "held_open_after": "20s",
            **bus,
        }
    ]
    site["devices"].append(
        {
            "id": READER,
            "family": "door",
            "model": "OSDP reader",
            "building": "1",
            "room": "1单元大堂门",
            "osdp": {"bus": "doors", "address": 0},
        }
    )
    return site


def events(gateway: Gateway, kind: Kind | None = None) -> list[Event]:
    return [
        e for e in gateway.store.events_after(0, 10_000) if e.device_id == READER and (kind is None or e.kind == kind)
    ]


def test_config_cross_checks(tmp_path: Path) -> None:
    site = _site(tmp_path, scbk="0011")
    site["devices"].append({**site["devices"][-1], "id": "twin", "family": "sos"})
    site["devices"].append({**site["devices"][-1], "id": "both", "mqtt": {"format": "native"}})
    site["osdp_buses"].append({"id": "doors", "port": "/dev/ttyUSB7"})
    with pytest.raises(ConfigError) as info:
        parse_config(site, file="site.toml", environ={})
    found = [str(p) for p in info.value.problems]
    assert "site.toml: osdp_buses[0].scbk: expected 32 hex digits (a 16-byte key), found 4 characters" in found
    assert "site.toml: osdp_buses[1].id: expected a unique id, found 'doors'" in found
    assert "site.toml: devices['twin'].family: expected 'door' for an OSDP reader, found 'sos'" in found
    assert (
        "site.toml: devices['twin'].osdp.address: "
        f"expected an address not used on bus doors by devices[{READER!r}], found 0" in found
    )
    assert any(p.startswith("site.toml: devices['both']: expected exactly one of") for p in found)
    secret = parse_config(_site(tmp_path, scbk="env:OSDP_KEY"), environ={"OSDP_KEY": "ab" * 16})
    assert secret.osdp_buses[0].scbk is not None and "abab" not in repr(secret)


def test_access_directory_from_the_config(tmp_path: Path) -> None:
    config = parse_config(_site(tmp_path), environ={})
    d = access_directory(config)
    assert d.holders["card:123-4567"].buildings == frozenset({"1"})
    assert d.holders["card:123-4567"].households == frozenset({"1-1-101"})
    assert d.holders["card:200-1001"].buildings is None  # no buildings listed: the whole block
    assert d.holders["card:90-324"].kind == "visitor" and d.holders["card:90-324"].buildings == frozenset({"1"})


async def test_card_reads_are_decided_stored_and_signalled(mosquitto: Mosquitto, tmp_path: Path) -> None:
    reader = PtyOsdpReader(tmp_path / "ttyOSDP")
    reader.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await eventually(lambda: events(gateway, Kind.ONLINE), what="the reader online")
            reader.present_card(123, 4567)  # a resident of building 1
            granted = (await eventually(lambda: events(gateway, Kind.ACCESS_GRANTED), what="the grant"))[0]
            assert granted.values == {
                "credential": "card:123-4567",
                "method": "card",
                "reader": 0,
                "person": "r1",
                "person_kind": "resident",
            }
            assert granted.source == "osdp" and granted.family.value == "door" and granted.model == "OSDP reader"
            assert granted.location.building == "1" and granted.location.room == "1单元大堂门"
            assert "data=bd88eb80" in granted.raw and "length=26" in granted.raw
            commands = await eventually(lambda: len(reader.commands) >= 3 and reader.commands, what="LED, beep, strike")
            assert [c["command"] for c in commands[:3]] == [2, 3, 1]  # LED, buzzer, output
            assert commands[0]["on_color"] == 2  # green

            reader.present_card(1000, 20001, bits=34)  # a resident of building 2
            reader.present_card(7, 7)  # nobody's
            denied = await eventually(
                lambda: len(events(gateway, Kind.ACCESS_DENIED)) == 2 and events(gateway, Kind.ACCESS_DENIED)
            )
            assert [(e.values["credential"], e.values["reason"]) for e in denied] == [
                ("card:1000-20001", "wrong_building"),
                ("card:7-7", "unknown_credential"),
            ]
            assert denied[0].values["person"] == "r2" and "person" not in denied[1].values
            await eventually(
                lambda: len([c for c in reader.commands if c["command"] == 2 and c["on_color"] == 1]) == 2,
                what="two red LEDs",
            )

            reader.present_card(90, 324)  # the grid worker who looks after 1-1-101
            visitor = (
                await eventually(
                    lambda: [e for e in events(gateway, Kind.ACCESS_GRANTED) if e.values.get("person") == "v1"]
                )
            )[0]
            assert visitor.values["person_kind"] == "visitor"

            reader.tamper(True)
            await eventually(lambda: events(gateway, Kind.TAMPER), what="tamper")
            await eventually(lambda: [a for a in gateway.store.alerts() if a.rule == "tamper"], what="the tamper alert")
            counters = await eventually(
                lambda: (c := gateway.store.counters()).get("osdp.doors.card_reads", 0) >= 4 and c, what="counters"
            )
            assert counters["osdp.doors.0.card_reads"] >= 4 and counters["osdp.doors.bytes_in"] > 0
    finally:
        reader.close()


async def test_forced_and_held_open_doors_raise_alerts(mosquitto: Mosquitto, tmp_path: Path) -> None:
    clock = VirtualClock()
    reader = PtyOsdpReader(tmp_path / "ttyOSDP")
    reader.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config, clock=clock) as gateway:
            await eventually(lambda: events(gateway, Kind.ONLINE), what="the reader online")
            # Granted, opened at once: a normal opening, then held open past the pack's 5 minutes.
            reader.present_card(123, 4567)
            await eventually(lambda: events(gateway, Kind.ACCESS_GRANTED), what="the grant")
            reader.door(True)
            opened = (await eventually(lambda: events(gateway, Kind.DOOR_OPENED), what="door opened"))[0]
            assert opened.values == {"secured": False}
            await clock.advance(25)  # past held_open_after (20 s): the reader warns
            await eventually(
                lambda: [c for c in reader.commands if c["command"] == 3 and c["rep_count"] == 3],
                what="the door-ajar beeps",
            )
            assert not [a for a in gateway.store.alerts() if a.rule == "door_held_open"]
            await clock.advance(300)
            held = await eventually(
                lambda: [a for a in gateway.store.alerts() if a.rule == "door_held_open"], what="the held-open alert"
            )
            assert held[0].device_id == READER and "开门超时" in held[0].message_zh
            reader.door(False)
            closed = (await eventually(lambda: events(gateway, Kind.DOOR_CLOSED), what="door closed"))[0]
            assert closed.values["held_open"] is True and closed.values["open_for"] >= 325
            await eventually(
                lambda: not [a for a in gateway.store.alerts(open_only=True) if a.rule == "door_held_open"],
                what="the held-open alert resolved by the closing",
            )
            assert not [a for a in gateway.store.alerts() if a.rule == "door_forced"]

            # Opened with no grant: forced. The exit button first: free egress, not forced.
            await clock.advance(60)
            reader.exit_button()
            reader.door(True)
            await eventually(lambda: len(events(gateway, Kind.DOOR_OPENED)) == 2, what="the exit")
            reader.door(False)
            await eventually(lambda: len(events(gateway, Kind.DOOR_CLOSED)) == 2, what="closed after the exit")
            await clock.advance(60)
            reader.door(True)
            forced = await eventually(
                lambda: len(events(gateway, Kind.DOOR_OPENED)) == 3 and events(gateway, Kind.DOOR_OPENED)
            )
            assert [e.values["secured"] for e in forced] == [False, False, True]
            alert = (
                await eventually(lambda: [a for a in gateway.store.alerts() if a.rule == "door_forced"], what="forced")
            )[0]
            assert alert.device_id == READER and alert.severity == 2 and "非法开门" in alert.message_zh
    finally:
        reader.close()


async def test_the_port_is_lost_and_recreated_mid_stream(mosquitto: Mosquitto, tmp_path: Path) -> None:
    reader = PtyOsdpReader(tmp_path / "ttyOSDP")
    reader.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await eventually(lambda: events(gateway, Kind.ONLINE), what="online")
            reader.present_card(123, 4567)
            await eventually(lambda: events(gateway, Kind.ACCESS_GRANTED), what="the card before")
            reader.vanish()  # unplugged: the node disappears, the open port gets EIO
            offline = (await eventually(lambda: events(gateway, Kind.OFFLINE), what="offline"))[0]
            assert offline.values["reason"] in ("read_error", "open_failed")
            assert offline.values["port"] == str(reader.link) and offline.values["address"] == 0
            reader.reappear()  # another /dev/pts/N behind the same symlink
            await eventually(lambda: len(events(gateway, Kind.ONLINE)) == 2, what="online again")
            reader.present_card(90, 324)
            cards = await eventually(
                lambda: len(events(gateway, Kind.ACCESS_GRANTED)) == 2 and events(gateway, Kind.ACCESS_GRANTED)
            )
            assert [e.values["credential"] for e in cards] == ["card:123-4567", "card:90-324"]
            assert len(events(gateway, Kind.OFFLINE)) == 1
            await eventually(
                lambda: gateway.store.counters().get("osdp.doors.reopens", 0) >= 1, what="the reopen counted"
            )
            await eventually(
                lambda: not [a for a in gateway.store.alerts(open_only=True) if a.rule == "device_offline"],
                what="the offline ticket resolved",
            )
    finally:
        reader.close()


async def test_simulate_plays_a_reader_a_card_then_a_forced_door(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``SerialSimulators`` (what ``sensegate simulate`` and the demo start) puts the bus's
    reader on its pty and, with incidents, swipes a card that may open the door and later
    forces the door; a second reader on the same bus is named as not simulated."""
    from simulators.runner import CARD_AT, FORCED_AT, SerialSimulators

    site = _site(tmp_path, unlock_window=0.5)  # the gateway's real time, the script's virtual
    site["devices"].append({**site["devices"][-1], "id": "1-back-reader", "osdp": {"bus": "doors", "address": 1}})
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    clock = VirtualClock()
    sims = SerialSimulators(config, clock=clock)
    assert list(sims.readers) == [READER] and sims.cards[READER] == (90, 324)  # the grid worker's card
    assert sims.skipped == ["OSDP reader 1-back-reader: not simulated (the simulator plays one reader per port)"]
    sims.open()
    stop = asyncio.Event()

    async def advance(seconds: float) -> None:  # in steps, so the script's chained sleeps keep time
        for _ in range(round(seconds)):
            await clock.advance(1)
            await asyncio.sleep(0.01)

    try:
        async with running(config) as gateway:
            play = asyncio.create_task(sims.run(stop, incidents=True))

            def at_reader(*kinds: Kind) -> list[tuple[str, Any]]:
                events = gateway.store.events_after(0, 10_000)
                return [
                    (e.kind.value, e.values.get("secured")) for e in events if e.device_id == READER and e.kind in kinds
                ]

            await eventually(lambda: at_reader(Kind.ONLINE), what="the reader online")
            await advance(CARD_AT + 2)
            await eventually(lambda: at_reader(Kind.ACCESS_GRANTED), what="the card's access event")
            await advance(4)  # the door closes behind the visitor
            await asyncio.sleep(1.0)  # past the unlock window the grant opened
            await advance(FORCED_AT - CARD_AT - 5)
            forced = await eventually(
                lambda: [a for a in gateway.store.alerts() if a.rule == "door_forced"], what="the forced door alert"
            )
            assert forced[0].device_id == READER
            assert at_reader(Kind.DOOR_OPENED) == [("door_opened", False), ("door_opened", True)]
            stop.set()
            await play
    finally:
        stop.set()
        sims.close()
