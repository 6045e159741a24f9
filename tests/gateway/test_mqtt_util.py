"""The gateway's paho clients against a real Mosquitto: receiving leaves no garbage cycles
behind, and per-topic callbacks still work when a client registers one."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gateway.mqtt_util import paho_client
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

    sub = paho_client(settings, "test-mqtt-util-sub", clean_session=True)
    sub.on_message = on_message
    _connected(sub, mosquitto)
    _subscribe(sub, "test/mqtt-util/cycles/#")
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
