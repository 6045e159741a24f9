"""The alarm lane (``[mqtt] alarm_lane``, gateway/ingest/lane.py): alarm devices' messages on a
connection of their own, so an alarm does not queue at the broker behind telemetry; main's copies
of them dropped only once the lane's fence is committed. Real Mosquitto, the gateway as deployed
(``sensegate run`` in a child process)."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.store import Store
from tests.faults.site import FaultSite, alarm_device, heartbeat, sos, telemetry_device
from tests.gateway.harness import GatewayProcess, open_store
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

BACKLOG = 20_000


def wait(check: Any, within: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(every)
    return result


def publish_all(broker: Mosquitto, messages: list[tuple[str, str]]) -> None:
    """Publish at QoS 1 as fast as the broker acknowledges, up to 1,000 in flight."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


def uids(store: Store) -> Counter[str]:
    """Every stored event's message id (``values.uid``), counted."""
    found: Counter[str] = Counter()
    seq = 0
    while batch := store.events_after(seq, limit=5000):
        found.update(str(e.values.get("uid", "")) for e in batch)
        seq = batch[-1].seq
    return found


def fence_committed(store_path: Path, site_config: dict[str, Any]) -> bool:
    topic = f"sensegate/{site_config['gateway']['id']}/lane/fence"
    with open_store(store_path) as store:
        return bool(store.last_payloads([topic]))


def newest_seq(store_path: Path) -> int:
    if not store_path.exists():
        return 0
    with open_store(store_path) as store:
        seq = 0
        while batch := store.events_after(seq, limit=5000):
            seq = batch[-1].seq
        return seq


def ready(site: FaultSite, broker: Mosquitto, store_path: Path, config: dict[str, Any]) -> None:
    """Until the gateway has subscribed (the broker keeps nothing for it before: a probe stored
    from now on says so) and, with the lane, committed its fence."""
    after = newest_seq(store_path)

    def subscribed() -> bool:
        publish_all(broker, [(site.topic(telemetry_device(0)), heartbeat(f"probe-{uuid.uuid4().hex[:8]}"))])
        if not store_path.exists():
            return False
        with open_store(store_path) as store:
            return bool(store.events_after(after, limit=1))

    wait(subscribed, 30, "the gateway to subscribe", every=0.2)
    if config["mqtt"].get("alarm_lane"):
        wait(lambda: fence_committed(store_path, config), 30, "the lane's fence")


def first_run(
    site: FaultSite, broker: Mosquitto, tmp_path: Path, lane: bool
) -> tuple[dict[str, Any], Path, GatewayProcess]:
    """Start the gateway once, until it has subscribed (and fenced), and stop it: from then on
    the broker keeps its sessions' messages while it is down."""
    config = site.config(tmp_path / "data", broker.host, broker.port)
    config["mqtt"]["alarm_lane"] = lane
    store_path = tmp_path / "data" / "store.sqlite3"
    gateway = GatewayProcess(config, tmp_path)
    gateway.start()
    try:
        ready(site, broker, store_path, config)
    finally:
        gateway.stop()
    return config, store_path, gateway


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "no-lane"])
def test_an_alarm_overtakes_a_backlog_of_telemetry_on_the_lane(tmp_path: Path, lane: bool) -> None:
    """20,000 telemetry messages wait at the broker for the gateway; an SOS pressed as it starts
    raises its alert before most of them are stored — and without the lane only after all."""
    site = FaultSite(alarms=2)
    with Mosquitto() as broker:
        _, store_path, gateway = first_run(site, broker, tmp_path, lane)
        with open_store(store_path) as store:
            before = store.event_count()
        publish_all(broker, [(site.topic(telemetry_device(i % 4)), heartbeat(f"backlog-{i}")) for i in range(BACKLOG)])
        gateway.start()
        try:
            log = gateway.log_path
            wait(lambda: log.read_text(errors="replace").count("connected to broker") >= 2, 30, "a connection")
            publish_all(broker, [(site.topic(alarm_device(0)), sos("the-alarm"))])

            def alerted() -> int | None:
                with open_store(store_path) as store:
                    if any(a.rule == "sos_household" for a in store.alerts(limit=10)):
                        return store.event_count() - before
                return None

            stored_then = wait(alerted, 60, "the SOS alert", every=0.02) or 0

            def drained() -> bool:
                with open_store(store_path) as store:
                    return store.event_count() - before >= BACKLOG + 1

            wait(drained, 120, "the backlog", every=0.5)
            with open_store(store_path) as store:
                found = uids(store)
                counters = store.counters()
        finally:
            gateway.stop()
    print(f"\nlane={lane}: the alert came with {stored_then} of {BACKLOG} telemetry events stored; {counters}")
    assert found["the-alarm"] == 1, "the alarm was stored more than once"
    assert all(found[f"backlog-{i}"] == 1 for i in range(BACKLOG)), "a telemetry message stored twice or never"
    if lane:
        assert stored_then < BACKLOG // 2, f"the alert came after {stored_then} of {BACKLOG} telemetry events"
        assert counters.get("lane_copies", 0) >= 1, counters  # main's copy of the SOS, dropped
    else:
        # The contrast that shows the test can fail: one connection, the alarm behind them all.
        assert stored_then >= BACKLOG, f"without the lane the alert came after only {stored_then}"


def uids_in(store_path: Path) -> Counter[str]:
    with open_store(store_path) as store:
        return uids(store)


def test_messages_queued_for_main_before_the_lane_existed_are_stored_once_each(tmp_path: Path) -> None:
    """A gateway that turns the lane on finds alarm devices' messages waiting in main's session:
    the lane had no subscription when they were sent, so main stores them; what comes after the
    fence the lane stores, and main drops its copies. Each message once."""
    site = FaultSite(alarms=2)
    with Mosquitto() as broker:
        config, store_path, _ = first_run(site, broker, tmp_path, lane=False)
        queued = [(site.topic(alarm_device(0)), sos(f"queued-{i}")) for i in range(50)]
        queued += [(site.topic(telemetry_device(i % 4)), heartbeat(f"door-{i}")) for i in range(500)]
        publish_all(broker, queued)
        config["mqtt"]["alarm_lane"] = True
        gateway = GatewayProcess(config, tmp_path)
        gateway.start()
        try:
            wait(lambda: fence_committed(store_path, config), 30, "the lane's fence")
            later = [(site.topic(alarm_device(1)), sos(f"later-{i}")) for i in range(50)]
            publish_all(broker, later)
            wanted = {json.loads(p)["values"]["uid"] for _, p in queued + later}
            wait(lambda: wanted <= set(uids_in(store_path)), 30, "every message", every=0.2)
            time.sleep(1.0)  # a second copy, if any, would be stored by now
            with open_store(store_path) as store:
                found = uids(store)
                counters = store.counters()
        finally:
            gateway.stop()
    twice = {u: n for u, n in found.items() if u in wanted and n != 1}
    assert not twice, f"stored other than once: {twice}"
    assert counters.get("lane_copies", 0) >= 50, counters  # main dropped its copies of the later ones


def test_a_broker_that_lost_its_sessions_loses_no_alarm_to_the_lane(tmp_path: Path) -> None:
    """Mosquitto restarted without its persistence file: both sessions are new. Main must not
    drop its copies on the old epoch's word (the lane's subscriptions are gone too) but store
    them until the lane's new fence; what comes after that the lane stores alone. Which of the
    two connections comes back first is the broker's and paho's timing: when main does, the
    alarms sent in between test the rule (with main dropping on the old epoch's word, about
    every other run loses some); when the lane does, there are none to send."""
    site = FaultSite(alarms=2)
    with Mosquitto() as broker:
        config = site.config(tmp_path / "data", broker.host, broker.port)
        config["mqtt"]["alarm_lane"] = True
        store_path = tmp_path / "data" / "store.sqlite3"
        fence = f"sensegate/{config['gateway']['id']}/lane/fence"
        gateway = GatewayProcess(config, tmp_path)
        gateway.start()
        try:
            ready(site, broker, store_path, config)
            with open_store(store_path) as store:
                old = store.last_payloads([fence])[fence]
            broker.stop()
            (broker.dir / "mosquitto.db").unlink()
            broker.start()
            ready(site, broker, store_path, {"mqtt": {}})  # main subscribed again: a fresh session

            def new_fence() -> bool:
                with open_store(store_path) as store:
                    return store.last_payloads([fence]).get(fence) not in (None, old)

            # Alarms all the while the lane reconnects and subscribes again, until its new fence.
            between: list[tuple[str, str]] = []
            deadline = time.monotonic() + 30
            while not new_fence():
                assert time.monotonic() < deadline, "no new epoch's fence"
                batch = [(site.topic(alarm_device(i % 2)), sos(f"between-{len(between) + i}")) for i in range(5)]
                publish_all(broker, batch)
                between += batch
                time.sleep(0.02)
            after = [(site.topic(alarm_device(i % 2)), sos(f"after-{i}")) for i in range(50)]
            publish_all(broker, after)
            wanted = {json.loads(p)["values"]["uid"] for _, p in after}  # behind the others on both connections
            wait(lambda: wanted <= set(uids_in(store_path)), 30, "the alarms after the fence", every=0.2)
            time.sleep(1.0)
            found = uids_in(store_path)
        finally:
            gateway.stop()
    assert all(found[f"after-{i}"] == 1 for i in range(50)), {u: n for u, n in found.items() if u.startswith("after")}
    # Those sent while the lane subscribed again may be stored twice (by main and the lane), never not at all.
    sent = [json.loads(p)["values"]["uid"] for _, p in between]
    assert all(found[u] >= 1 for u in sent), f"lost: {[u for u in sent if not found[u]][:10]} of {len(sent)}"
    twice = sum(found[u] > 1 for u in sent)
    print(f"\nbetween the broker's restart and the new fence: {twice} of {len(sent)} stored twice")


def test_status_shows_the_lane_failing_until_its_fence_is_committed(tmp_path: Path) -> None:
    """A broker that refuses the lane's subscriptions (say, its ACL) leaves the lane inert: main
    stores every message. ``sensegate status`` says so (ingest part ``lane``) until a fence is
    committed again. The lane's paho callbacks, driven directly: no broker refuses on demand."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from gateway.clock import VirtualClock
    from gateway.ingest.health import IngestHealth, failures
    from gateway.ingest.lane import AlarmLane
    from gateway.site.config import parse_config

    site = FaultSite(alarms=1)
    config = parse_config({**site.config(tmp_path / "data", "127.0.0.1", 1883), "outputs": []}, environ={})
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(config.store_path)
    try:
        lane = AlarmLane(config, frozenset({site.topic(alarm_device(0))}), "digest", store, VirtualClock(),
                         IngestHealth(store, VirtualClock()))  # fmt: skip
        refused = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
        lane._on_subscribe(mqtt.Client(CallbackAPIVersion.VERSION2), None, 1, [refused], None)
        (failure,) = failures(store)
        assert failure.part == "lane" and "refused 1 alarm-lane subscriptions" in failure.error
        assert not lane.fenced  # main keeps its copies
        lane.epoch = "e1"
        lane.fence_committed("e1")
        assert lane.fenced and failures(store) == []
    finally:
        store.close()
