"""MQTT over TLS with a username and password, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runtime import Gateway
from gateway.site.config import parse_config
from tests.gateway.factories import minimal_site
from tests.gateway.harness import eventually, running
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, Path]]:
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=SenseGate test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        cwd=d,
    )
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "gw", "s3cret"], check=True)
    for f in d.iterdir():
        f.chmod(0o644)  # mosquitto reads them as the test's user
    broker = Mosquitto(
        extra_config=[
            f"cafile {d / 'ca.pem'}",
            f"certfile {d / 'server.pem'}",
            f"keyfile {d / 'server.key'}",
            "allow_anonymous false",
            f"password_file {d / 'passwd'}",
        ]
    )
    broker.start()
    try:
        yield broker, d / "ca.pem"
    finally:
        broker.cleanup()


def _client(broker: Mosquitto, ca: Path, name: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    client.username_pw_set("gw", "s3cret")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _site(tmp_path: Path, broker: Mosquitto, ca: Path, password: str) -> dict:
    site = minimal_site()
    site["gateway"]["data_dir"] = str(tmp_path / "data")
    site["alerts"] = {"console": False}
    site["mqtt"] = {
        "host": broker.host,
        "port": broker.port,
        "username": "gw",
        "password": "env:SENSEGATE_TEST_MQTT_PASSWORD",
        "tls": {"ca_file": str(ca)},
    }
    return site


async def test_ingest_and_alerts_over_tls_with_password(tls_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    broker, ca = tls_broker
    config = parse_config(_site(tmp_path, broker, ca, "s3cret"), environ={"SENSEGATE_TEST_MQTT_PASSWORD": "s3cret"})
    got: list[dict] = []
    sub = _client(broker, ca, "tls-sub")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.subscribe(f"{config.topic_prefix}/alerts/events", qos=1)
    pub = _client(broker, ca, "tls-pub")
    try:
        async with running(config) as gateway:
            pub.publish("zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency"}', qos=1).wait_for_publish(5)
            await eventually(lambda: gateway.store.event_count() == 1, what="the SOS event over TLS")
            await eventually(lambda: got, what="the alert published over TLS")
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
    assert got[0]["alert"]["rule"] == "sos"


async def test_wrong_password_is_reported_once_and_does_not_crash(
    tls_broker: tuple[Mosquitto, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, ca = tls_broker
    config = parse_config(_site(tmp_path, broker, ca, "nope"), environ={"SENSEGATE_TEST_MQTT_PASSWORD": "nope"})
    gateway = Gateway(config)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="sensegate"):
        task = asyncio.create_task(gateway.run(stop))
        await eventually(
            lambda: [r for r in caplog.records if "refused" in r.getMessage()], what="the refusal to be logged"
        )
        await asyncio.sleep(2.5)  # paho retries meanwhile
        assert not task.done()
        assert not gateway.ready.is_set()
        stop.set()
        await asyncio.wait_for(task, 20)
    refusals = [r for r in caplog.records if "broker refused connection" in r.getMessage()]
    assert len(refusals) == 1 and "Not authorized" in refusals[0].getMessage()
    assert "nope" not in caplog.text  # the secret is never logged
