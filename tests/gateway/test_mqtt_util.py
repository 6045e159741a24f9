"""The gateway's paho clients against a real Mosquitto: receiving leaves no garbage cycles
behind, per-topic callbacks still work when a client registers one, the socket is read a
chunk at a time without a message left waiting in the chunk, and a batch's PUBACKs go out in
one write and acknowledge exactly those messages."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.mqtt_util import READ_CHUNK, _ChunkedSocket, ack_all, paho_client
from gateway.site.config import MqttSettings
from tests.servers import Mosquitto

N = 2_000


def _connected(client: mqtt.Client, broker: Mosquitto) -> None:
    ready = threading.Event()
    client.on_connect = lambda *_: ready.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10), "no CONNACK"


@pytest.fixture
def settings(mosquitto: Mosquitto) -> MqttSettings:
    return MqttSettings(host=mosquitto.host, port=mosquitto.port)


@pytest.fixture
def publisher(mosquitto: Mosquitto, settings: MqttSettings) -> Iterator[mqtt.Client]:
    client = paho_client(settings, "test-mqtt-util-pub", clean_session=True)
    _connected(client, mosquitto)
    yield client
    client.loop_stop()
    client.disconnect()


def _subscribe(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *_: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(10), "no SUBACK"


def _subscriber(
    settings: MqttSettings, broker: Mosquitto, client_id: str, topic: str, on_message: mqtt.CallbackOnMessage
) -> mqtt.Client:
    """A gateway-made client, connected and subscribed (QoS 1) to ``topic``."""
    client = paho_client(settings, client_id, clean_session=True)
    client.on_message = on_message
    _connected(client, broker)
    _subscribe(client, topic)
    return client


def test_receiving_leaves_no_reference_cycles(
    mosquitto: Mosquitto, settings: MqttSettings, publisher: mqtt.Client
) -> None:
    """paho's per-topic callback lookup made a reference cycle per message; a full collection
    to free them stalled every thread of the gateway (docs/performance.md)."""
    got: list[bytes] = []
    all_in = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        if len(got) == N:
            all_in.set()

    sub = _subscriber(settings, mosquitto, "test-mqtt-util-sub", "test/mqtt-util/cycles/#", on_message)
    gc.collect()
    gc.disable()
    try:
        for i in range(N):
            publisher.publish(f"test/mqtt-util/cycles/{i % 50}", b'{"smoke":false}', qos=1)
        assert all_in.wait(30), f"received {len(got)} of {N}"
        unreachable = gc.collect()
    finally:
        gc.enable()
        sub.loop_stop()
        sub.disconnect()
    assert len(got) == N
    # paho's own lookup left 6 objects per message (N × 6 = 12,000).
    assert unreachable < N // 10, f"{unreachable} objects in cycles after {N} messages"


def test_per_topic_callbacks_still_dispatch(
    mosquitto: Mosquitto, settings: MqttSettings, publisher: mqtt.Client
) -> None:
    doors: list[str] = []
    others: list[str] = []
    both = threading.Event()

    def note(into: list[str]) -> mqtt.CallbackOnMessage:
        def on(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            into.append(msg.topic)
            if doors and others:
                both.set()

        return on

    sub = paho_client(settings, "test-mqtt-util-filters", clean_session=True)
    sub.on_message = note(others)
    sub.message_callback_add("test/mqtt-util/door/+", note(doors))
    _connected(sub, mosquitto)
    _subscribe(sub, "test/mqtt-util/#")
    try:
        publisher.publish("test/mqtt-util/door/1", b"open", qos=1)
        publisher.publish("test/mqtt-util/smoke/1", b"ok", qos=1)
        assert both.wait(10), f"doors {doors}, others {others}"
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert doors == ["test/mqtt-util/door/1"]
    assert others == ["test/mqtt-util/smoke/1"]


def test_a_burst_is_read_in_chunks_and_none_of_it_waits(
    mosquitto: Mosquitto, settings: MqttSettings, publisher: mqtt.Client
) -> None:
    """paho read each packet with a system call per byte of its header and one for the rest;
    the socket is read a chunk at a time now. What a chunk holds beyond one turn of paho's loop
    must not wait for the socket's next data: after this burst no more comes (keepalive 60 s)."""
    got: list[bytes] = []
    all_in = threading.Event()
    first = threading.Event()
    go_on = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        first.set()
        go_on.wait(10)  # the burst piles up in the socket meanwhile
        if len(got) == N + 1:
            all_in.set()

    sub = _subscriber(settings, mosquitto, "test-mqtt-util-burst", "test/mqtt-util/burst/#", on_message)
    try:
        publisher.publish("test/mqtt-util/burst/first", b"-1", qos=0)
        assert first.wait(10)
        sent = [publisher.publish(f"test/mqtt-util/burst/{i % 50}", b"%d" % i, qos=0) for i in range(N)]
        for info in sent:
            info.wait_for_publish(10)
        go_on.set()
        assert all_in.wait(10), f"received {len(got)} of {N + 1}: the rest waited in the chunk"
        sock = sub._sock
        assert isinstance(sock, _ChunkedSocket)
        reads = sock.reads
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got == [b"-1"] + [b"%d" % i for i in range(N)]
    assert reads < N // 20, f"{reads} reads of the socket for {N} messages"


def test_a_packet_longer_than_a_chunk_arrives_whole(
    mosquitto: Mosquitto, settings: MqttSettings, publisher: mqtt.Client
) -> None:
    payload = bytes(range(256)) * (3 * READ_CHUNK // 256 + 7)
    got: list[bytes] = []
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        if len(got) == 3:
            done.set()

    sub = _subscriber(settings, mosquitto, "test-mqtt-util-long", "test/mqtt-util/long", on_message)
    try:
        for body in (b"before", payload, b"after"):
            publisher.publish("test/mqtt-util/long", body, qos=1)
        assert done.wait(10), f"received {len(got)} of 3"
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got == [b"before", payload, b"after"]


class _CountingSocket:
    """The socket under a ``_ChunkedSocket``, counting its writes."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.sends = 0

    def send(self, buffer: bytes) -> int:
        self.sends += 1
        return int(self._sock.send(buffer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _manual(settings: MqttSettings, broker: Mosquitto, got: list[tuple[int, bytes, bool]]) -> mqtt.Client:
    """The ingest's kind of client: a persistent session, manual acknowledgement."""
    client = paho_client(settings, "test-mqtt-util-acks", clean_session=False, manual_ack=True)
    client.on_message = lambda _c, _u, msg: got.append((msg.mid, msg.payload, bool(msg.dup)))
    _connected(client, broker)
    return client


def test_a_batch_of_pubacks_is_one_write_and_acknowledges_exactly_those(
    mosquitto: Mosquitto, settings: MqttSettings, publisher: mqtt.Client
) -> None:
    got: list[tuple[int, bytes, bool]] = []
    sub = _manual(settings, mosquitto, got)
    try:
        _subscribe(sub, "test/mqtt-util/acks")
        for i in range(20):
            publisher.publish("test/mqtt-util/acks", b"%d" % i, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [p for _, p, _ in got] == [b"%d" % i for i in range(20)]
        chunked = sub._sock
        assert isinstance(chunked, _ChunkedSocket)
        counting = chunked._sock = _CountingSocket(chunked._sock)
        ack_all(sub, [mid for mid, _, _ in got[:10]])  # the first ten; the rest stay unacknowledged
        while sub._out_packet and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not sub._out_packet
        assert counting.sends == 1, f"{counting.sends} writes for 10 PUBACKs"
    finally:
        sub.disconnect()
        sub.loop_stop()
    again: list[tuple[int, bytes, bool]] = []
    sub = _manual(settings, mosquitto, again)  # the same session: the broker sends what is unacknowledged
    try:
        deadline = time.monotonic() + 10
        while len(again) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # and nothing more
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [(p, dup) for _, p, dup in again] == [(b"%d" % i, True) for i in range(10, 20)]
