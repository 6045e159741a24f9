"""A full disk (issue 13): the store's filesystem — a tmpfs of a few MiB mounted by the test —
fills up while InfluxDB is away. Every alarm must still be committed and raise its alert; old
telemetry gives way, then telemetry is refused (not acknowledged: the broker keeps it); a
``gateway_disk_full`` alert says so; nothing is corrupt; once space is freed the store takes
everything again and the alert resolves. Root only (the mount): skipped with the reason otherwise.

The first half uses only what the gateway had before issue 13, so the same test shows the old
failure: there, every commit failed with "database or disk is full", the ingest restarted with
back-off, and no alarm raised an alert until a person freed space."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from gateway.site.config import parse_config
from tests.faults.site import FaultSite, alarm_device, heartbeat, household, sos, telemetry_device
from tests.faults.smallfs import fill, tmpfs
from tests.gateway.harness import GatewayProcess, Publisher, eventually, running
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ALARMS = 80  # the 78 smoke alarms, and two


def integrity(path: Path) -> str:
    # Closed at once: a connection left to the garbage collector checkpoints whenever it goes.
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


async def test_alarms_alert_on_a_full_disk_telemetry_waits_and_all_comes_back(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = FaultSite(alarms=ALARMS)
    down = {  # InfluxDB away: nothing is delivered, so nothing is "history" to prune
        "type": "influxdb_v1",
        "name": "influx",
        "url": f"http://127.0.0.1:{free_port()}",
        "database": "sensegate",
        "backoff_initial": 0.5,
        "backoff_max": 2.0,
        "timeout": 1.0,
    }
    started = time.monotonic()
    with tmpfs(tmp_path / "disk", 6 * MIB) as disk:
        # 16 MiB bound, more than the filesystem: the filesystem fills first. The default reserve
        # is then 1 MiB (no key the gateway before issue 13 would refuse).
        config = parse_config(
            site.config(disk / "data", mosquitto.host, mosquitto.port, outputs=[down], store={"max_bytes": "16MiB"}),
            file="<faults>",
        )
        store_path = disk / "data" / "store.sqlite3"
        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:
                for n in range(300):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"before-{n}"))
                await eventually(lambda: gateway.store.event_count() >= 300, what="300 events before")
                filler = fill(disk)
                full_at = time.monotonic()

                # The disk is full. Alarms, each with a few telemetry messages around it.
                for i in range(ALARMS):
                    pub.publish(site.topic(alarm_device(i)), sos(f"alarm-{i}"))
                    for k in range(5):
                        pub.publish(site.topic(telemetry_device(k % 4)), heartbeat(f"full-{i}-{k}"))

                def alerted() -> set[str]:
                    keys = {a.dedup_key for a in gateway.store.alerts(limit=10_000)}
                    return {household(i) for i in range(ALARMS) if f"sos:{household(i)}" in keys}

                await eventually(lambda: len(alerted()) == ALARMS, within=30, what=f"{ALARMS} alerts on a full disk")
                alarm_latency = time.monotonic() - full_at
                assert integrity(store_path) == "ok"

                # What issue 13 added: the disk alert, telemetry refused, then everything back.
                from gateway.alerts.system import disk_key

                gateway_id = config.gateway.id
                disk_alert = await eventually(
                    lambda: gateway.store.open_alert(disk_key(gateway_id)), what="the gateway_disk_full alert"
                )
                assert gateway.store.disk_state().full
                for n in range(40):  # telemetry now: refused once nothing is left to evict
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"refused-{n}"))
                await eventually(lambda: gateway.store.refusing_telemetry, what="telemetry refused")
                for n in range(40, 80):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"refused-{n}"))
                counters = await eventually(
                    lambda: (c := gateway.store.counters()).get("refused", 0) > 0 and c, what="refusals counted"
                )
                alarms_stored = [
                    e for e in gateway.store.events_after(0, limit=100_000) if e.device_id.startswith("sos")
                ]
                assert len(alarms_stored) == ALARMS  # each once; none evicted
                assert integrity(store_path) == "ok"
                refused_at = gateway.store.disk_state()

                filler.unlink()  # a person frees space
                await eventually(lambda: not gateway.store.disk_state().full, within=15, what="the room back")
                resolved = await eventually(
                    lambda: (a := gateway.store.alert(disk_alert.id)) is not None and not a.is_open and a,
                    what="the disk alert resolved",
                )
                one = [a for a in gateway.store.alerts(limit=10_000) if a.dedup_key == disk_key(gateway_id)]
                assert [a.id for a in one] == [disk_alert.id], "one disk alert, reworded, not one a change"
                for n in range(20):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"after-{n}"))

                def uids() -> set[object]:
                    return {e.values.get("uid") for e in gateway.store.events_after(0, limit=100_000)}

                # The held telemetry (the newest refused) is committed once the store takes it again.
                await eventually(lambda: {"refused-79", "after-19"} <= uids(), what="held and new telemetry stored")
                assert integrity(store_path) == "ok"
                final = gateway.store.counters()
                state = gateway.store.disk_state()
        assert integrity(store_path) == "ok"
    print(
        f"\ndisk full: {ALARMS} alarms (and {ALARMS * 5} telemetry messages) published and alerted within "
        f"{alarm_latency:.1f} s of the 6 MiB tmpfs filling up; "
        f"telemetry dropped {final.get('dropped', 0)}, refused {final.get('refused', 0)} times, "
        f"{final.get('refused_dropped', 0)} acknowledged unstored beyond the hold; at refusal: store "
        f"{refused_at.store_bytes} bytes, {refused_at.free_bytes} free, reserve {refused_at.reserve_bytes}; "
        f"after: reserve {state.reserve_bytes}; disk alert {resolved.state.value}; "
        f"counters then {counters.get('refused')}; {time.monotonic() - started:.0f} s in all"
    )
    await asyncio.sleep(0)


def _read(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


async def test_with_the_ingest_process_alarms_alert_on_a_full_disk_and_all_comes_back(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The same promise with ``[mqtt] ingest_process`` (gateway/ingest/process.py): the worker
    writes the events and keeps the disk, the gateway raises and resolves the disk alert from
    what the worker tells it. Checked from outside, by reading the store."""
    from gateway.alerts.system import DISK_META, disk_key

    site = FaultSite(alarms=ALARMS)
    down = {"type": "influxdb_v1", "name": "influx", "url": f"http://127.0.0.1:{free_port()}", "database": "x"}
    with tmpfs(tmp_path / "disk", 6 * MIB) as disk:
        config = site.config(
            disk / "data", mosquitto.host, mosquitto.port, outputs=[down], store={"max_bytes": "16MiB"}
        )
        config["mqtt"]["ingest_process"] = True
        gateway = GatewayProcess(config, tmp_path)
        store_path = disk / "data" / "store.sqlite3"
        disk_alert = disk_key(config["gateway"]["id"])

        def count(sql: str, *args: object) -> int:
            try:
                return int(_read(store_path, sql, *args)[0][0])
            except sqlite3.OperationalError:  # the gateway has not made its tables yet
                return 0

        def disk_state() -> dict[str, Any]:
            rows = _read(store_path, "SELECT value FROM meta WHERE key = ?", DISK_META)
            return json.loads(rows[0][0]) if rows else {}

        def uids() -> set[str]:
            return {json.loads(b)["values"].get("uid") for (b,) in _read(store_path, "SELECT body FROM events")}

        gateway.start()
        try:
            with Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:

                def subscribed() -> bool:  # until then the broker keeps nothing for the gateway
                    pub.publish(site.topic(telemetry_device(0)), heartbeat("probe"))
                    return store_path.exists() and count("SELECT COUNT(*) FROM events") > 0

                await eventually(subscribed, what="the ingest process to subscribe")
                for n in range(300):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"before-{n}"))
                await eventually(lambda: "before-299" in uids(), what="300 events")
                filler = fill(disk)
                for i in range(ALARMS):
                    pub.publish(site.topic(alarm_device(i)), sos(f"alarm-{i}"))
                    for k in range(5):
                        pub.publish(site.topic(telemetry_device(k % 4)), heartbeat(f"full-{i}-{k}"))
                sos_alerts = "SELECT COUNT(DISTINCT dedup_key) FROM alerts WHERE dedup_key LIKE 'sos:%'"
                await eventually(lambda: count(sos_alerts) == ALARMS, within=30, what=f"{ALARMS} alerts")
                await eventually(lambda: disk_state().get("full"), what="the disk full, in meta")
                await eventually(
                    lambda: count(
                        "SELECT COUNT(*) FROM alerts WHERE dedup_key = ? AND state != 'resolved'", disk_alert
                    ),
                    what="the gateway_disk_full alert",
                )
                for n in range(80):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"refused-{n}"))
                await eventually(
                    lambda: count("SELECT COUNT(*) FROM counters WHERE name = 'refused' AND value > 0"),
                    what="telemetry refused",
                )
                assert count("SELECT COUNT(*) FROM events WHERE device_id LIKE 'sos%'") == ALARMS
                assert integrity(store_path) == "ok"

                filler.unlink()
                await eventually(lambda: disk_state().get("full") is False, within=15, what="the room back")
                await eventually(
                    lambda: count("SELECT COUNT(*) FROM alerts WHERE dedup_key = ? AND state = 'resolved'", disk_alert),
                    what="the disk alert resolved",
                )
                assert count("SELECT COUNT(*) FROM alerts WHERE dedup_key = ?", disk_alert) == 1
                for n in range(20):
                    pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"after-{n}"))
                await eventually(lambda: {"refused-79", "after-19"} <= uids(), what="held and new telemetry stored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- the gateway's log:\n{gateway.log()}") from None
        finally:
            gateway.stop()
        assert integrity(store_path) == "ok"
