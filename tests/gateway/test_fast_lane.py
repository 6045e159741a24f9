"""The alarm fast lane (docs/performance.md): an alarm closes its group-commit batch at once, and
the alert path's messages reach the broker from the save that commits them, before its commit
and without being read back, yet never ahead of older rows another writer queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from gateway.alerts.path import AlertPath
from gateway.alerts.publisher import OutboxPublisher, Saved
from gateway.clock import SystemClock, VirtualClock
from gateway.ingest.mqtt import MqttIngest, _Message
from gateway.models import Event, Kind
from gateway.site.config import SiteConfig, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Subscriber, eventually, site_config
from tests.servers import Mosquitto

CONFIG = parse_config(minimal_site(), environ={})
DOOR = "zigbee2mqtt/1号楼/101/门磁"
SMOKE = "zigbee2mqtt/1号楼/101/烟感"


async def _nothing(events: list[Event]) -> None:
    pass


def _ingest(tmp_path: Path) -> MqttIngest:
    return MqttIngest(CONFIG, Registry(CONFIG), Store(tmp_path / "store.sqlite3"), VirtualClock(), {}, _nothing)


def _message(mid: int, topic: str, payload: bytes) -> _Message:
    return _Message(0, mid, 1, False, False, topic, payload)


async def test_an_alarm_closes_its_batch_without_waiting_out_the_window(tmp_path: Path) -> None:
    mqtt = _ingest(tmp_path)
    door1 = _message(1, DOOR, b'{"contact": false}')
    door2 = _message(2, DOOR, b'{"contact": true}')
    smoke = _message(3, SMOKE, b'{"smoke": true, "battery": 90}')
    door3 = _message(4, DOOR, b'{"contact": false}')
    mqtt._inbox.extend([door1, door2, smoke, door3])
    # A 30 s window: only the alarm can end this batch within the test's patience.
    batch = await asyncio.wait_for(mqtt._gather(500, 30.0), 5)
    assert batch == [door1, door2, smoke]
    assert list(mqtt._inbox) == [door3]  # the next batch's
    stored, held = await mqtt._commit(batch)
    assert held == [] and Kind.SMOKE_ALARM in {e.kind for e in stored}


async def test_telemetry_waits_out_the_window_together(tmp_path: Path) -> None:
    mqtt = _ingest(tmp_path)
    doors = [_message(n, DOOR, b'{"contact": %s}' % (b"true" if n % 2 else b"false")) for n in range(1, 5)]
    mqtt._inbox.extend(doors)
    assert await mqtt._gather(500, 0.05) == doors


@pytest.fixture
def config(mosquitto: Mosquitto, tmp_path: Path) -> SiteConfig:
    return site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)


@pytest.fixture
def store(config: SiteConfig) -> Iterator[Store]:
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(config.store_path)
    yield store
    store.close()


@pytest.fixture
async def publisher(config: SiteConfig, store: Store) -> AsyncIterator[OutboxPublisher]:
    publisher = OutboxPublisher(config, store, SystemClock())
    task = asyncio.create_task(publisher.run())
    try:
        await eventually(lambda: publisher.connected, within=10, what="the publisher to connect")
        yield publisher
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _topic(tmp_path: Path, name: str) -> str:
    return f"fastlane/{tmp_path.name}/{name}"


async def test_offered_messages_go_out_at_once_and_leave_the_outbox_once_acknowledged(
    mosquitto: Mosquitto, store: Store, publisher: OutboxPublisher, tmp_path: Path
) -> None:
    topic = _topic(tmp_path, "events")
    with Subscriber(mosquitto.host, mosquitto.port, topic) as sub:
        queued = store.save_alerts([], [("mqtt", topic, f"t{n}", False) for n in range(5)], now=1.0)
        assert [m.payload for m in queued] == [f"t{n}" for n in range(5)]
        publisher.offer(queued)
        await eventually(lambda: len(sub.messages) == 5, within=10, what="five messages")
        assert [p for _, p, _ in sub.messages] == [f"t{n}".encode() for n in range(5)]
        await eventually(lambda: not store.outbox_batch("mqtt", 10), within=10, what="an empty outbox")


async def test_an_offer_or_an_early_send_never_overtakes_a_row_another_writer_queued_first(
    mosquitto: Mosquitto, store: Store, publisher: OutboxPublisher, tmp_path: Path
) -> None:
    topic = _topic(tmp_path, "events")
    with Subscriber(mosquitto.host, mosquitto.port, topic) as sub:
        # A page on the MQTT channel, then an alert transition: in that order on the wire, though
        # the transition is handed over in memory and the page must be read from the store.
        store.save_notify(messages=[("mqtt", topic, "page", False)], now=1.0)
        publisher.wake.set()
        raised = [("mqtt", topic, "raised", False)]
        assert publisher.early(raised) is None  # not before its save, then: the save offers its rows
        publisher.offer(store.save_alerts([], raised, now=1.0))
        await eventually(lambda: len(sub.messages) == 2, within=10, what="both messages")
        assert [p for _, p, _ in sub.messages] == [b"page", b"raised"]
        await eventually(lambda: not store.outbox_batch("mqtt", 10), within=10, what="an empty outbox")


async def test_what_was_queued_while_the_broker_was_away_goes_out_after_it_returns(
    mosquitto: Mosquitto, store: Store, publisher: OutboxPublisher, tmp_path: Path
) -> None:
    # Retained, so that a subscriber that connects after the publisher has reconnected sees them.
    away, back = _topic(tmp_path, "away"), _topic(tmp_path, "back")
    mosquitto.stop()
    try:
        await eventually(lambda: not publisher.connected, within=10, what="the publisher to notice")
        publisher.offer(store.save_alerts([], [("mqtt", away, "queued while away", True)], now=1.0))
    finally:
        mosquitto.start()
    publisher.offer(store.save_alerts([], [("mqtt", back, "queued after", True)], now=2.0))
    await eventually(lambda: publisher.connected, within=60, what="the publisher to reconnect")
    await eventually(lambda: not store.outbox_batch("mqtt", 10), within=10, what="an empty outbox")
    with Subscriber(mosquitto.host, mosquitto.port, _topic(tmp_path, "#")) as sub:
        await eventually(lambda: len(sub.messages) == 2, within=10, what="both retained messages")
        assert sorted(p for _, p, _ in sub.messages) == [b"queued after", b"queued while away"]


async def test_a_row_nobody_announced_goes_out_within_the_safety_net(
    mosquitto: Mosquitto, store: Store, publisher: OutboxPublisher, tmp_path: Path
) -> None:
    topic = _topic(tmp_path, "events")
    with Subscriber(mosquitto.host, mosquitto.port, topic) as sub:
        store.save_notify(messages=[("mqtt", topic, "unannounced", False)], now=1.0)  # no wake, no offer
        await eventually(lambda: sub.messages, within=12, what="the outbox read after 5 s of quiet")
        assert [p for _, p, _ in sub.messages] == [b"unannounced"]


async def test_a_rules_alert_goes_out_before_its_save_commits_and_leaves_the_outbox_once_acknowledged(
    mosquitto: Mosquitto, config: SiteConfig, store: Store, publisher: OutboxPublisher
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{config.topic_prefix}/alerts/events")
    outbox_when_sent: list[int] = []

    def send_early(messages: Sequence[tuple[str, str, str, bool]]) -> Saved | None:
        outbox_when_sent.append(len(store.outbox_batch("mqtt", 10)))
        return publisher.early(messages)

    registry = Registry(config)
    alerts = AlertPath(
        registry,
        store,
        SystemClock(),
        config.topic_prefix,
        site_rules(config),
        on_outbox=publisher.offer,
        send_early=send_early,
    )
    with sub:
        stored = store.append(registry.decode(SMOKE, b'{"smoke": true, "battery": 90}', time.time()), {})
        (raised,) = [t for t in alerts.process(stored) if t.kind == "raised"]
        assert outbox_when_sent == [0]  # handed to the publisher before the save's rows existed
        await eventually(lambda: sub.messages, within=10, what="the alert on MQTT")
        assert [(m["transition"], m["alert"]["id"]) for m in sub.json()] == [("raised", raised.alert.id)]
        await eventually(lambda: not store.outbox_batch("mqtt", 10), within=10, what="an empty outbox")


async def test_messages_sent_early_are_deleted_as_the_rows_their_save_queued(
    mosquitto: Mosquitto, store: Store, publisher: OutboxPublisher, tmp_path: Path
) -> None:
    topic = _topic(tmp_path, "events")
    sub = Subscriber(mosquitto.host, mosquitto.port, topic)
    committing = threading.Event()
    release = threading.Event()

    def group_commit() -> None:  # holds the store, as a commit under way in another thread does
        with store._lock:
            committing.set()
            release.wait(10)

    holder = threading.Thread(target=group_commit)
    holder.start()
    try:
        committing.wait(5)
        messages = [("mqtt", topic, f"t{n}", False) for n in range(3)]
        saved = publisher.early(messages)
        assert saved is not None
        await eventually(lambda: len(sub.messages) == 3, within=10, what="three messages while the store is busy")
        release.set()
        holder.join()
        # Acknowledged before the rows exist: nothing is deleted until the save names them.
        await asyncio.sleep(0.2)
        saved(store.save_alerts([], messages, now=1.0))
        await eventually(lambda: not store.outbox_batch("mqtt", 10), within=10, what="an empty outbox")
        assert [p for _, p, _ in sub.messages] == [b"t0", b"t1", b"t2"]
    finally:
        release.set()
        holder.join()
        sub.close()
