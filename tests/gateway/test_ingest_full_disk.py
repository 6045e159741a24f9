"""The ingest while the store's disk is full (docs/store.md, "A full disk"), without a broker: a
message whose events are all telemetry is held unacknowledged, one with an alarm is committed;
at most ``HOLD_MAX`` are held, the oldest beyond is acknowledged unstored and counted."""

from __future__ import annotations

from pathlib import Path

from gateway.clock import VirtualClock
from gateway.ingest.mqtt import HOLD_MAX, MqttIngest, _Message
from gateway.models import Event, Kind
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

CONFIG = parse_config(minimal_site(), environ={})
DOOR = "zigbee2mqtt/1号楼/101/门磁"
SMOKE = "zigbee2mqtt/1号楼/101/烟感"
SOS = "zigbee2mqtt/1号楼/101/SOS"


class Client:
    """What the ingest asks of paho's client here: acknowledgements."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


async def _nothing(events: list[Event]) -> None:
    pass


def ingest(tmp_path: Path) -> MqttIngest:
    store = Store(tmp_path / "store.sqlite3")
    return MqttIngest(CONFIG, Registry(CONFIG), store, VirtualClock(), {}, _nothing)


def message(mid: int, topic: str, payload: bytes) -> _Message:
    return _Message(0, mid, 1, False, False, topic, payload)


async def test_telemetry_only_messages_are_held_and_alarms_committed(tmp_path: Path) -> None:
    mqtt = ingest(tmp_path)
    mqtt.store.refusing_telemetry = True
    door = message(1, DOOR, b'{"contact": false, "battery": 90}')  # door_opened, battery: telemetry
    sos = message(2, SOS, b'{"action": "emergency", "battery": 80}')
    smoke = message(3, SMOKE, b'{"smoke": true, "battery": 90}')  # an alarm, its battery with it
    stored, held = await mqtt._commit([door, sos, smoke])
    assert held == [door]
    kinds = {e.kind for e in stored}
    assert {Kind.SOS_PRESSED, Kind.SMOKE_ALARM} <= kinds and Kind.DOOR_OPENED not in kinds
    mqtt.store.refusing_telemetry = False
    stored, held = await mqtt._commit([door])  # taken again once the store has room
    assert held == [] and {e.kind for e in stored} >= {Kind.DOOR_OPENED}


async def test_at_most_hold_max_are_held_the_oldest_beyond_is_acknowledged_and_counted(tmp_path: Path) -> None:
    mqtt = ingest(tmp_path)
    client = Client()
    held = [message(mid, DOOR, b"{}") for mid in range(1, HOLD_MAX + 3)]
    mqtt._hold(client, held)  # type: ignore[arg-type]
    assert client.acked == [1, 2]
    assert [m.mid for m in mqtt._held] == list(range(3, HOLD_MAX + 3))
    await mqtt._commit([])  # the counts go in with the next commit
    counters = mqtt.store.counters()
    assert counters["refused"] == HOLD_MAX + 2 and counters["refused_dropped"] == 2
