"""Small builders for events and configs used across the gateway tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.models import Event, Family, Kind, Location


def event(
    kind: Kind = Kind.DOOR_OPENED,
    family: Family = Family.DOOR,
    device: str = "d1",
    t: float = 1_767_225_600.0,
    **values: Any,
) -> Event:
    return Event(
        device_id=device,
        family=family,
        kind=kind,
        event_time=t,
        received_at=t,
        model="test",
        location=Location(building="1", unit="1", household="101", room="门口"),
        values=values,
        source="test",
        raw="{}",
    )


def minimal_site(**overrides: Any) -> dict[str, Any]:
    """A small valid site: one building, two households, one resident living alone."""
    site: dict[str, Any] = {
        "gateway": {"id": "gw-test", "site": "测试小区"},
        "buildings": [{"id": "1", "name": "1号楼", "units": ["1"]}],
        "households": [
            {"id": "1-1-101", "building": "1", "unit": "1", "number": "101"},
            {"id": "1-1-102", "building": "1", "unit": "1", "number": "102"},
        ],
        "residents": [
            {"id": "r1", "name": "王秀英", "household": "1-1-101", "lives_alone": True, "risk_tier": "high"},
        ],
        "devices": [
            {
                "id": "101-door",
                "family": "door",
                "model": "MCCGQ11LM",
                "household": "1-1-101",
                "room": "入户门",
                "mqtt": {"format": "zigbee2mqtt", "friendly_name": "1号楼/101/门磁"},
            },
            {
                "id": "101-smoke",
                "family": "smoke",
                "model": "HS1SA",
                "household": "1-1-101",
                "room": "厨房",
                "mqtt": {"format": "zigbee2mqtt", "friendly_name": "1号楼/101/烟感"},
            },
            {
                "id": "101-sos",
                "family": "sos",
                "model": "TS0215A_sos",
                "household": "1-1-101",
                "room": "卧室",
                "mqtt": {"format": "zigbee2mqtt", "friendly_name": "1号楼/101/SOS"},
            },
            {
                "id": "101-fall",
                "family": "fall",
                "model": "HS2FD-EF1-3.0",
                "household": "1-1-101",
                "room": "卫生间",
                "mqtt": {"format": "zigbee2mqtt", "friendly_name": "1号楼/101/跌倒"},
            },
            {
                "id": "main-door",
                "family": "door",
                "model": "Kerui-Security",
                "building": "1",
                "room": "单元门",
                "mqtt": {"format": "rtl_433", "id": "123456"},
            },
            {
                "id": "gate-1",
                "family": "door",
                "model": "access-controller",
                "building": "1",
                "room": "小区大门",
                "mqtt": {"format": "native"},
            },
        ],
    }
    site.update(overrides)
    return site


class Killed(Exception):
    """The gateway stopped dead there (a kill between two steps of a test)."""


def killed_at(n: int | None) -> Callable[[], None]:
    """A callable that raises ``Killed`` the ``n``th time it is called (None: never)."""
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise Killed

    return call
