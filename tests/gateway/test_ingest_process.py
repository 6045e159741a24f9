"""MQTT ingest in a process of its own (``[mqtt] ingest_process = true``,
gateway/ingest/process.py): ``sensegate run`` forks a keeper that forks the worker. Real
Mosquitto and InfluxDB; the processes are found in /proc and killed as a crash would."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store
from gateway.store.lock import StoreLock
from tests.faults.site import FaultSite, alarm_device, heartbeat, household, influx_output, sos, telemetry_device
from tests.gateway.harness import GatewayProcess, Publisher, Subscriber, alive, children, open_store
from tests.servers import InfluxDB1, Mosquitto

pytestmark = pytest.mark.integration


def wait(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.05)
    return result


def split_site(site: FaultSite, tmp_path: Path, broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    config = site.config(tmp_path / "data", broker.host, broker.port, **extra)
    config["mqtt"]["ingest_process"] = True
    return config


def subscribe(site: FaultSite, pub: Publisher, store_path: Path) -> None:
    """Until the gateway has subscribed once the broker keeps nothing for it: probe."""

    def stored() -> bool:
        pub.publish(site.topic(telemetry_device(0)), heartbeat(f"probe-{uuid.uuid4().hex[:8]}"))
        if not store_path.exists():
            return False
        with open_store(store_path) as store:
            return store.event_count() > 0

    wait(stored, 30, "the ingest process to subscribe")


def publisher(broker: Mosquitto) -> Publisher:
    return Publisher(broker.host, broker.port, client_id=f"pub-{uuid.uuid4().hex[:8]}")


def started(tmp_path: Path, broker: Mosquitto) -> tuple[FaultSite, GatewayProcess, Path]:
    """A gateway with its ingest process, started and subscribed (the test stops it)."""
    site = FaultSite(alarms=1)
    gateway = GatewayProcess(split_site(site, tmp_path, broker), tmp_path)
    store_path = tmp_path / "data" / "store.sqlite3"
    gateway.start()
    try:
        with publisher(broker) as pub:
            subscribe(site, pub, store_path)
    except BaseException:
        gateway.stop()
        raise
    return site, gateway, store_path


def tree(gateway: GatewayProcess) -> tuple[int, int]:
    """The keeper and its worker under ``gateway``, once both run."""
    assert gateway.proc is not None
    pid = gateway.proc.pid

    def found() -> tuple[int, int] | None:
        keepers = children(pid)
        workers = children(keepers[0]) if len(keepers) == 1 else []
        return (keepers[0], workers[0]) if len(workers) == 1 else None

    keeper_worker: tuple[int, int] = wait(found, 20, "a keeper and one worker")
    return keeper_worker


def uids(store: Store, prefix: str) -> list[str]:
    return [
        str(e.values["uid"])
        for e in store.events_after(0, limit=1_000_000)
        if str(e.values.get("uid", "")).startswith(prefix)
    ]


def test_events_are_stored_forwarded_and_alarms_alert_through_the_ingest_process(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path
) -> None:
    site = FaultSite(alarms=3)
    database = f"split_{uuid.uuid4().hex[:8]}"
    config = split_site(site, tmp_path, mosquitto, outputs=[influx_output(influxdb_v1.url, database)])
    gateway = GatewayProcess(config, tmp_path)
    store_path = tmp_path / "data" / "store.sqlite3"
    prefix = f"sensegate/{config['gateway']['id']}"
    alerts = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/events")
    status = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/status")
    gateway.start()
    try:
        with Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:
            subscribe(site, pub, store_path)
            keeper, worker = tree(gateway)
            for n in range(300):
                pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"t-{n}"))
            pub.publish(site.topic(alarm_device(1)), sos("alarm-1"))
        raised = wait(lambda: alerts.json(), 20, "the alert on MQTT")
        assert raised[0]["transition"] == "raised"
        assert raised[0]["alert"]["dedup_key"] == f"sos:{household(1)}"
        with open_store(store_path) as store:
            wait(lambda: len(uids(store, "t-")) == 300, 20, "300 events stored")
            assert sorted(uids(store, "t-")) == sorted(f"t-{n}" for n in range(300))
            # Stored by the worker, read back and handled by the gateway: rules, then outputs.
            wait(lambda: store.pending_count("influx") == 0, 30, "InfluxDB to have every event")
            assert [a.dedup_key for a in store.alerts(limit=10)] == [f"sos:{household(1)}"]
        rows = influxdb_v1.query(database, 'SELECT "uid" FROM "door"')
        assert {f"t-{n}" for n in range(300)} <= {r["uid"] for r in rows}
        assert b"online" in [p for _, p, _ in status.messages]
    finally:
        gateway.stop()
        alerts.close()
    # An orderly stop ends all three, and the worker said "offline" as it went.
    wait(lambda: not alive(keeper) and not alive(worker), 10, "keeper and worker to end")
    wait(lambda: status.messages and status.messages[-1][1] == b"offline", 10, "offline on the status topic")
    status.close()


def test_a_killed_worker_is_restarted_and_loses_no_message(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site, gateway, store_path = started(tmp_path, mosquitto)
    total = 2000
    try:
        with publisher(mosquitto) as pub:
            keeper, worker = tree(gateway)
            for n in range(total):
                pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"k-{n}"))
                if n == total // 3:
                    os.kill(worker, signal.SIGKILL)  # mid-stream: committed or not, PUBACKed or not
            pub.publish(site.topic(alarm_device(0)), sos("after-the-kill"))
        with open_store(store_path) as store:
            wait(lambda: len(set(uids(store, "k-"))) == total, 60, f"all {total} events")
            stored = uids(store, "k-")
            wait(lambda: store.alerts(limit=10), 20, "the alarm's alert")
        again = tree(gateway)
    finally:
        gateway.stop()
    assert sorted(stored) == sorted(f"k-{n}" for n in range(total)), "each message stored once"
    assert again[0] == keeper and again[1] != worker, "the keeper forked a new worker"
    assert "ingest process ended (signal SIGKILL); starting another" in gateway.log()


def test_the_ingest_processes_end_with_a_killed_gateway_and_the_next_start_takes_over(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site, gateway, store_path = started(tmp_path, mosquitto)
    try:
        with publisher(mosquitto) as pub:
            keeper, worker = tree(gateway)
            gateway.kill()  # SIGKILL: the kernel tells the keeper, the keeper the worker
            wait(lambda: not alive(keeper) and not alive(worker), 15, "keeper and worker to end")
            for n in range(100):  # kept by the broker for the session meanwhile
                pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"gap-{n}"))
            pub.publish(site.topic(alarm_device(0)), sos("while-down"))
            gateway.start()
            with open_store(store_path) as store:
                wait(lambda: len(uids(store, "gap-")) == 100, 30, "what the broker kept")
                alert = wait(lambda: store.alerts(limit=10), 20, "the alarm's alert")
                stored = uids(store, "gap-")
        assert tree(gateway)[0] != keeper
    finally:
        gateway.stop()
    assert [a.dedup_key for a in alert] == [f"sos:{household(0)}"]
    assert sorted(stored) == sorted(f"gap-{n}" for n in range(100))


def test_a_killed_keeper_stops_the_gateway_for_its_service_to_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    _, gateway, _ = started(tmp_path, mosquitto)
    try:
        keeper, worker = tree(gateway)
        assert gateway.proc is not None
        os.kill(keeper, signal.SIGKILL)  # nothing would start another worker: the gateway ends
        wait(lambda: gateway.proc is not None and gateway.proc.poll() is not None, 20, "the gateway to end")
        wait(lambda: not alive(worker), 10, "the worker to end with its keeper")
    finally:
        gateway.stop()
    assert gateway.proc.returncode != 0, "an error, for systemd's Restart= to act on"
    assert "the ingest process's keeper ended" in gateway.log()


def test_an_ingest_process_waits_for_the_last_one_to_end(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The last worker may still be ending when a new gateway starts (its gateway was SIGKILLed:
    it stops in order). Until it has, the new one receives nothing: a message the last one
    committed but could not acknowledge must be known as stored when it comes again."""
    site = FaultSite(alarms=1)
    config = split_site(site, tmp_path, mosquitto)
    store_path = tmp_path / "data" / "store.sqlite3"
    first = GatewayProcess(config, tmp_path)
    first.start()
    try:
        with Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:
            subscribe(site, pub, store_path)  # the broker keeps the session from now on
    finally:
        first.stop()
    lingering = StoreLock(store_path, "a lingering ingest process", suffix=".ingest")
    lingering.acquire()
    gateway = GatewayProcess(config, tmp_path)
    gateway.start()
    try:
        with Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:
            wait(lambda: "is still ending: waiting for it" in gateway.log(), 20, "the worker to wait")
            for n in range(50):
                pub.publish(site.topic(telemetry_device(n % 4)), heartbeat(f"w-{n}"))
            time.sleep(1.0)
            with open_store(store_path) as store:
                assert uids(store, "w-") == [], "nothing received while the last one runs"
            lingering.release()
            with open_store(store_path) as store:
                wait(lambda: len(uids(store, "w-")) == 50, 30, "what the broker kept")
                assert sorted(uids(store, "w-")) == sorted(f"w-{n}" for n in range(50))
    finally:
        lingering.release()
        gateway.stop()


def test_the_worker_ends_with_its_gateway_even_if_the_keeper_cannot_tell_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The worker sees the gateway's end of the link close: it does not depend on the keeper
    passing the kernel's parent-death signal on (a stopped keeper here)."""
    _, gateway, _ = started(tmp_path, mosquitto)
    try:
        keeper, worker = tree(gateway)
        os.kill(keeper, signal.SIGSTOP)
        gateway.kill()
        wait(lambda: not alive(worker), 15, "the worker to end by itself")
        assert alive(keeper)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper, signal.SIGCONT)  # its parent-death signal is pending: it ends now
        gateway.stop()
    wait(lambda: not alive(keeper), 10, "the keeper to end")


def test_a_worker_that_does_not_stop_is_killed_by_its_keeper(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A worker that ignores SIGTERM (stopped here) does not outlive an orderly stop: its keeper
    kills it STOP_GRACE seconds after telling it to stop, and the gateway waits for that."""
    _, gateway, _ = started(tmp_path, mosquitto)
    keeper, worker = tree(gateway)
    os.kill(worker, signal.SIGSTOP)
    try:
        gateway.stop()  # SIGTERM, as systemd stops it
        assert gateway.proc is not None and gateway.proc.returncode == 0
        assert not alive(worker) and not alive(keeper)
        assert f"ingest process {worker} did not stop within" in gateway.log()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
