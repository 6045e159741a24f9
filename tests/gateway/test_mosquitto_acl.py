"""The shipped Mosquitto config (config/mosquitto/) on a real Mosquitto, users made with
mosquitto_passwd as docs/installer.md says: nobody anonymous; a device may publish its own topic
only — a command it publishes never reaches the gateway, even one signed with a valid key, and
it reads no command; an integration publishes commands and reads their answers but not the
commands; and the gateway still gets everything it needs (issue 13, item 1)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.alerts.commands import sign_command
from gateway.ingest.health import failures
from gateway.models import AlertState, Kind
from gateway.runtime import Gateway
from tests.gateway.factories import minimal_site
from tests.gateway.harness import eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
USERS = {
    "sensegate": "gateway-password",
    "zigbee2mqtt": "z2m-password",
    "home-assistant": "ha-password",
    "gate-1": "device-password",  # the site's native access controller: user name = device id
}
SOS_TOPIC = "zigbee2mqtt/1号楼/101/SOS"


class ShippedMosquitto(Mosquitto):
    """Mosquitto run from config/mosquitto/mosquitto.conf as shipped, but for what a test must
    change: the listener (a free loopback port), the password file, the persistence and log
    paths (the temp dir), and the user it runs as. The ACL is the shipped file itself."""

    def __init__(self, password_file: Path) -> None:
        super().__init__()
        self.password_file = password_file

    def prepare(self) -> None:
        replaced = {
            "listener": f"listener {self.port} {self.host}",
            "password_file": f"password_file {self.password_file}",
            "acl_file": f"acl_file {SHIPPED / 'acl'}",
            "persistence_location": f"persistence_location {self.dir}/",
            "pid_file": None,
            "log_dest": "log_dest stdout",
        }
        lines = []
        for line in (SHIPPED / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
            directive = line.split(" ", 1)[0]
            if directive in replaced:
                line = replaced.pop(directive) or ""
            lines.append(line)
        assert not replaced, f"the shipped mosquitto.conf lacks {sorted(replaced)}"
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        self.conf_path.write_text("\n".join(lines) + "\n")


class Client:
    """A paho client logged in as a user: connect result, SUBACK codes, messages received."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.refused: str | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{id(self)}")
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.refused = str(rc) if rc.is_failure else None
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        self.granted = [c.value for c in codes]
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def subscribe(self, *topics: str) -> list[int]:
        self._subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self._subscribed.wait(5)
        return self.granted

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received(self, topic: str = "") -> list[tuple[str, bytes]]:
        with self._lock:
            return [m for m in self.messages if m[0].startswith(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedMosquitto]:
    # The steps of docs/installer.md, with -b (password on the command line) for a test.
    password_file = tmp_path_factory.mktemp("mosquitto") / "sensegate.passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(password_file), user, password], check=True)
    with ShippedMosquitto(password_file) as server:
        yield server


def test_the_shipped_config_has_what_the_installer_guide_promises() -> None:
    conf = (SHIPPED / "mosquitto.conf").read_text(encoding="utf-8")
    for directive in (
        "allow_anonymous false",
        "password_file ",
        "acl_file ",
        "persistence true",
        "max_inflight_messages 1000",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
    ):
        assert re.search(rf"^{re.escape(directive)}", conf, re.M), directive
    acl = (SHIPPED / "acl").read_text(encoding="utf-8")
    # Only the gateway's user may read the commands: no other block reads sensegate/# or …/alerts/#.
    blocks = re.split(r"^user ", acl, flags=re.M)
    reads_commands = re.compile(r"^topic (read|readwrite) sensegate/(#|\+/#|\+/alerts/#|\+/alerts/commands)$", re.M)
    readers = [b.split()[0] for b in blocks[1:] if reads_commands.search(b)]
    assert readers == ["sensegate"]


def test_nobody_connects_without_a_user_and_password(broker: ShippedMosquitto) -> None:
    for user, password in ((None, None), ("gate-1", "wrong")):
        client = Client(broker, user, password)
        try:
            assert client.refused == "Not authorized", (user, client.refused)
        finally:
            client.close()


async def test_a_device_cannot_command_or_read_commands_and_the_gateway_still_works(
    broker: ShippedMosquitto, tmp_path: Path
) -> None:
    user = "sensegate"
    config = site_config(minimal_site(), tmp_path, broker.host, broker.port, username=user, password=USERS[user])
    prefix = config.topic_prefix
    commands = f"{prefix}/alerts/commands"
    async with running(config) as gateway:
        # Logged in (a refused login is an ingest failure). That the ACL lets the gateway read
        # what it needs shows below — Mosquitto 2.0 grants any subscription and filters delivery:
        # a zigbee2mqtt alarm, a native device's event and an integration's command all arrive.
        await asyncio.sleep(0.2)
        assert failures(gateway.store) == []
        key = "sgk_home-assistant-test-key-0123456789abcdef"
        gateway.store.add_mqtt_key("home-assistant", key, "duty", gateway.clock.now())

        z2m = Client(broker, "zigbee2mqtt", USERS["zigbee2mqtt"])
        device = Client(broker, "gate-1", USERS["gate-1"])
        ha = Client(broker, "home-assistant", USERS["home-assistant"])
        try:
            z2m.publish(SOS_TOPIC, '{"action":"emergency"}')
            (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the SOS alert")

            # The device subscribes to everything and to the commands: it is given nothing.
            device.subscribe("#", commands, f"{commands}/result")
            ha.subscribe(f"{commands}/result", commands)

            # A command from the device never reaches the gateway — even signed with a valid
            # key (the ACL is the second layer: a stolen key alone does not do it from a device).
            forged = sign_command({"action": "resolve", "alert": alert.id, "request_id": "device"},
                                  "home-assistant", key, int(time.time()))  # fmt: skip
            device.publish(commands, json.dumps(forged))
            device.publish("sensegate/in/gate-2", '{"kind": "door_opened"}')  # not its topic
            granted = {"kind": "access_granted", "values": {"credential": "card:123-4567", "method": "card"}}
            device.publish("sensegate/in/gate-1", json.dumps(granted))
            await eventually(
                lambda: [e for e in gateway.store.events_after(0) if e.device_id == "gate-1"],
                what="the device's own event",
            )

            # The integration's signed command goes through; its answer comes back to it.
            signed = sign_command({"action": "ack", "alert": alert.id, "request_id": "ha"},
                                  "home-assistant", key, int(time.time()))  # fmt: skip
            ha.publish(commands, json.dumps(signed))
            answers = await eventually(lambda: ha.received(f"{commands}/result"), what="the answer")
            assert [json.loads(p)["request_id"] for _, p in answers] == ["ha"]
            assert json.loads(answers[0][1])["ok"] is True

            acked = gateway.store.alert(alert.id)
            assert acked is not None and acked.state is AlertState.ACKNOWLEDGED
            assert acked.acked_by == "token:home-assistant"
            assert [c.body.get("request_id") for c in gateway.store.commands(pending_only=False)] == ["ha"]
            assert "commands.unauthenticated" not in gateway.store.counters()
            # Had it reached the gateway, gate-2 (no such device) would be a kept unknown_device.
            assert gateway.store.rejected_payloads() == []
            assert [e.kind for e in gateway.store.events_after(0) if e.device_id == "gate-1"] == [Kind.ACCESS_GRANTED]
            # Neither the device nor the integration read a command; the device reads nothing.
            assert [t for t, _ in ha.received()] == [f"{commands}/result"]
            assert device.received() == []
        finally:
            for client in (z2m, device, ha):
                client.close()


async def test_a_gateway_the_broker_refuses_says_so_in_status(broker: ShippedMosquitto, tmp_path: Path) -> None:
    config = site_config(minimal_site(), tmp_path, broker.host, broker.port, username="sensegate", password="wrong")
    gateway = Gateway(config)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        (failure,) = await eventually(lambda: failures(gateway.store), what="the ingest failure")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert failure.part == "mqtt" and failure.error == "the broker refused the connection: Not authorized"
