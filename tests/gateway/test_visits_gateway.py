"""Visits through a running gateway and a real broker: MQTT check-in, a card swipe, a CLI check-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.care.checkin import checkin_event
from gateway.store import Store
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


async def test_checkin_topic_card_swipe_and_cli_record_visits(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "id": "gw-visits"}
    site["visitors"] = [
        {
            "id": "v1",
            "name": "张网格",
            "role": "grid_worker",
            "credentials": ["card:123-4567"],
            "households": ["1-1-101"],
        }
    ]
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    topic = f"{config.topic_prefix}/visits/checkin"
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(topic, json.dumps({"household": "1-1-101", "visitor": "v1", "note": "量血压"}))
            pub.publish(topic, "{not json")
            pub.publish(
                "sensegate/in/gate-1",
                json.dumps({"v": 1, "kind": "access_granted", "values": {"credential": "card:123-4567"}}),
            )
        visits = await eventually(lambda: len(gateway.store.visits()) >= 2 and gateway.store.visits(), what="2 visits")
        assert sorted(v.method for v in visits) == ["access", "mqtt"]
        assert {v.household for v in visits} == {"1-1-101"}
        assert await eventually(lambda: gateway.store.counters().get("malformed.bad_json"), what="the bad check-in")

        # `sensegate visits checkin` from another process while the gateway runs: the same store.
        other = Store(config.store_path)
        now = gateway.clock.now()
        other.append_visit(*checkin_event(config, "1-1-101", "v1", now, now, "", "cli"))
        last = other.last_seq()
        other.close()
        assert [v.method for v in gateway.store.visits()].count("cli") == 1
        # The running gateway's alert path takes the CLI's event in within seconds, without
        # waiting for the next MQTT batch or timer.
        await eventually(lambda: gateway.alerts.cursor >= last, within=5, what="the alert path to see the check-in")
