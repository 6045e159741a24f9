"""The demo's local broker: the gateway works over embedded amqtt as over Mosquitto."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.broker import LocalBroker
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, Subscriber, eventually, running, site_config


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
async def test_gateway_ingests_and_alerts_over_the_local_broker(kind: str, tmp_path: Path) -> None:
    async with LocalBroker(kind) as broker:
        assert broker.kind.startswith(kind)
        config = site_config(minimal_site(), tmp_path, broker.host, broker.port)
        async with running(config) as gateway:
            sub = await asyncio.to_thread(Subscriber, broker.host, broker.port, f"{config.topic_prefix}/alerts/events")
            pub = await asyncio.to_thread(Publisher, broker.host, broker.port)
            try:
                for n in range(100):
                    payload = json.dumps({"kind": "heartbeat", "values": {"n": n}})
                    await asyncio.to_thread(pub.publish, "sensegate/in/gate-1", payload)
                await asyncio.to_thread(pub.publish, "zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency"}')
                await eventually(lambda: gateway.store.event_count() == 101, what="101 events")
                got = await eventually(lambda: sub.json(), what="the SOS alert on MQTT")
            finally:
                pub.close()
                sub.close()
    assert got[0]["transition"] == "raised" and got[0]["alert"]["rule"] == "sos"
    assert "王秀英" in got[0]["alert"]["message_zh"]
