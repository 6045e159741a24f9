"""The simulated OSDP reader and the gateway's OSDP link, CP to PD through a real pty (libosdp
on both sides): cards, inputs, tamper, commands, a vanished port, a silent reader, a key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.osdp_door import CardRead, Inputs, Local, Signal, parse_event
from drivers.osdp_link import LinkItem, OsdpLink, PdDown, PdEvent, PdUp
from gateway.clock import SystemClock
from simulators.osdp_reader import PtyOsdpReader
from tests.gateway.harness import eventually

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


@contextlib.asynccontextmanager
async def linked(
    tmp_path: Path, scbk: bytes | None = None, online_timeout: float = 3.0
) -> AsyncIterator[tuple[PtyOsdpReader, OsdpLink, list[LinkItem]]]:
    reader = PtyOsdpReader(tmp_path / "ttyOSDP", address=0, scbk=scbk)
    reader.open()
    link = OsdpLink(
        str(reader.link),
        [0],
        SystemClock(),
        scbk=scbk,
        backoff_initial=0.05,
        backoff_max=0.3,
        online_timeout=online_timeout,
    )
    items: list[LinkItem] = []

    async def handle(item: LinkItem) -> None:
        items.append(item)

    task = asyncio.create_task(link.run(handle))
    try:
        yield reader, link, items
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reader.close()


def readings(items: list[LinkItem], kind: type) -> list[object]:
    return [r for i in items if isinstance(i, PdEvent) and isinstance(r := parse_event(i.event), kind)]


def count(items: list[LinkItem], kind: type) -> Callable[[], int]:
    return lambda: sum(isinstance(i, kind) for i in items)


@pytest.mark.parametrize("scbk", [None, KEY], ids=["plain", "secure"])
async def test_cards_inputs_tamper_and_commands(tmp_path: Path, scbk: bytes | None) -> None:
    async with linked(tmp_path, scbk) as (reader, link, items):
        await eventually(count(items, PdUp), within=10, what="the reader online")
        await eventually(lambda: readings(items, Local), within=5, what="the state it came up in")
        reader.present_card(123, 4567)
        reader.present_card(1000, 20001, bits=34)
        reader.present_raw(37, bytes.fromhex("0a1b2c3d48"))
        reader.door(True)
        reader.tamper(True)
        cards = await eventually(lambda: len(readings(items, CardRead)) == 3 and readings(items, CardRead))
        assert [c.credential for c in cards] == ["card:123-4567", "card:1000-20001", "card:raw37-0a1b2c3d48"]
        await eventually(lambda: Inputs((True, False)) in readings(items, Inputs), what="door open")
        await eventually(lambda: Local(True, False) in readings(items, Local), what="tamper")

        assert link.signal(0, Signal("grant"))
        assert link.signal(0, Signal("deny"))
        sent = await eventually(lambda: len(reader.commands) == 5 and reader.commands, what="the commands")
        led, beep, strike, red, long_beep = sent
        assert (led["command"], led["on_color"], led["temporary"]) == (2, 2, True)  # LED, green
        assert (beep["command"], beep["on_count"]) == (3, 2)  # buzzer, 200 ms
        assert (strike["command"], strike["output_no"], strike["timer_count"]) == (1, 0, 50)  # strike 5 s
        assert (red["on_color"], long_beep["on_count"]) == (1, 10)  # red, 1 s
        totals = link.counters.totals()
        assert totals["card_reads"] == 3 and totals["0.card_reads"] == 3 and totals["commands"] == 5
        assert totals["bytes_in"] > 0 and totals["bytes_out"] > 0
        assert "KEY" not in repr(link) and KEY.hex() not in repr(link)


async def test_port_vanishes_and_comes_back(tmp_path: Path) -> None:
    async with linked(tmp_path) as (reader, link, items):
        await eventually(count(items, PdUp), within=10, what="online")
        reader.present_card(123, 4567)
        await eventually(lambda: readings(items, CardRead), what="the card before")
        reader.vanish()
        down = await eventually(lambda: [i for i in items if isinstance(i, PdDown)], what="offline")
        assert down[0].reason in ("read_error", "open_failed")
        reader.door(True)  # while unplugged: the reader keeps it and reports it when polled again
        await asyncio.sleep(0.3)
        reader.reappear()
        await eventually(lambda: count(items, PdUp)() == 2, within=10, what="online again")
        reader.present_card(90, 324)
        cards = await eventually(lambda: len(readings(items, CardRead)) == 2 and readings(items, CardRead))
        assert [c.credential for c in cards] == ["card:123-4567", "card:90-324"]
        await eventually(lambda: Inputs((True, False)) in readings(items, Inputs), what="the door opened meanwhile")
        assert count(items, PdDown)() == 1  # reported once, however many reopen attempts
        assert link.counters.totals()["reopens"] >= 1


async def test_a_silent_reader_goes_offline_and_is_reprobed(tmp_path: Path) -> None:
    async with linked(tmp_path, online_timeout=60) as (reader, link, items):
        await eventually(count(items, PdUp), within=10, what="online")
        reader.mute = True  # the cable cut: libosdp gives up after its own retries (~8 s)
        down = await eventually(lambda: [i for i in items if isinstance(i, PdDown)], within=15, what="offline")
        assert down[0].reason == "silent"
        reader.mute = False
        await eventually(lambda: count(items, PdUp)() == 2, within=10, what="online again without a reopen")
        assert "reopens" not in link.counters.totals()
        assert link.counters.totals()["reprobes"] >= 1


async def test_a_port_that_is_missing_then_mute_then_answers(tmp_path: Path) -> None:
    reader = PtyOsdpReader(tmp_path / "ttyOSDP")  # not open yet: the port does not exist
    link = OsdpLink(str(reader.link), [0], SystemClock(), backoff_initial=0.05, backoff_max=0.2, online_timeout=0.5)
    items: list[LinkItem] = []

    async def handle(item: LinkItem) -> None:
        items.append(item)

    task = asyncio.create_task(link.run(handle))
    try:
        down = await eventually(lambda: [i for i in items if isinstance(i, PdDown)], what="open_failed")
        assert down[0].reason == "open_failed" and link.opens == 0
        reader.mute = True  # the port appears, but nothing on the bus answers
        reader.open()
        await eventually(lambda: link.counters.totals().get("reopens", 0) >= 2, what="reopened, no answer")
        assert count(items, PdDown)() == 1  # still the one report
        reader.mute = False
        await eventually(count(items, PdUp), within=10, what="online at last")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reader.close()
