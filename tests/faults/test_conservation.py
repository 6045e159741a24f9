"""Conservation under faults: a QoS 1 publisher with unique ids, the gateway SIGKILLed again and
again under load (``python -m gateway.cli run``), the broker stopped and started, InfluxDB
stopped and started. At the end every id the broker acknowledged to the publisher is in
InfluxDB exactly once (a replayed point overwrites itself), and every alarm raised exactly one
alert. CI: at least 6 kills in well under two minutes; ``--faults-long``: 5 min, 40 kills."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import Mode
from tests.faults.load import Load
from tests.faults.site import FaultSite, alarm_device, heartbeat, household, influx_output, telemetry_device
from tests.gateway.harness import GatewayProcess, Publisher, children, descendants, open_store
from tests.servers import InfluxDB1, Mosquitto, Server

pytestmark = pytest.mark.integration

RATE = 100.0  # telemetry messages a second


def ingest_worker(gateway: GatewayProcess) -> int | None:
    """The ingest worker under the gateway (its grandchild), if one runs now."""
    assert gateway.proc is not None
    workers = [p for p in descendants(gateway.proc.pid) if p not in children(gateway.proc.pid)]
    return workers[0] if len(workers) == 1 else None


def wait(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.timeout(1200)  # the long mode's five minutes of load and the drain after them
# With the ingest in a process of its own (gateway/ingest/process.py), every other kill is of
# that process instead of the gateway; that run has the alarm lane too (gateway/ingest/lane.py):
# the SOS buttons' messages come on a connection of their own, and main drops its copies.
@pytest.mark.parametrize("split", [False, True], ids=["one-process", "ingest-process-lane"])
def test_every_acknowledged_id_reaches_influxdb_once_and_every_alarm_alerts_once(
    mode: Mode, influxdb_v1: InfluxDB1, tmp_path: Path, ensure_started: list[Server], split: bool
) -> None:
    rng = random.Random(mode.seed)
    alarms = 24 if not mode.long else 200
    database = f"faults_{uuid.uuid4().hex[:8]}"
    influx = influx_output(influxdb_v1.url, database, backoff_initial=0.2, backoff_max=1.0, timeout=2.0)
    started = time.monotonic()
    with Mosquitto() as broker:
        site = FaultSite(alarms=alarms)
        config = site.config(tmp_path / "data", broker.host, broker.port, outputs=[influx])
        config["mqtt"]["ingest_process"] = split
        config["mqtt"]["alarm_lane"] = split
        gateway = GatewayProcess(config, tmp_path)
        gateway.start()
        store_path = tmp_path / "data" / "store.sqlite3"
        try:
            wait(store_path.exists, 20, "the gateway to create its store")
            with Publisher(broker.host, broker.port, client_id=f"probe-{uuid.uuid4().hex[:6]}") as probe:
                # Until the gateway has subscribed once the broker keeps nothing for it: probe.
                def subscribed() -> bool:
                    probe.publish(site.topic(telemetry_device(0)), heartbeat(f"probe-{uuid.uuid4().hex[:8]}"))
                    with open_store(store_path) as store:
                        return store.event_count() > 0

                wait(subscribed, 20, "the gateway to subscribe")

            load = Load(
                site,
                broker.host,
                broker.port,
                rate=RATE,
                telemetry=[telemetry_device(i) for i in range(4)],
                alarms=[alarm_device(i) for i in range(alarms)],
                seconds=mode.seconds,
            )
            # The faults, at random times (seeded): kills spread over the run, one broker restart
            # and one InfluxDB outage in between.
            span = mode.seconds / (mode.kills + 1)
            faults = [(span * (k + 1) + rng.uniform(-span / 3, span / 3), "kill") for k in range(mode.kills)]
            for _ in range(max(1, mode.kills // 10)):
                faults.append((rng.uniform(0.2, 0.8) * mode.seconds, "broker"))
                faults.append((rng.uniform(0.1, 0.7) * mode.seconds, "influx"))
            faults.sort()
            load.start()
            t0 = time.monotonic()
            done: Counter[str] = Counter()
            for at, fault in faults:
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                if fault == "kill" and split and done["kill"] % 2:
                    worker = ingest_worker(gateway)
                    if worker is not None:  # SIGKILL: its keeper starts another after a second
                        os.kill(worker, signal.SIGKILL)
                        done["worker kill"] += 1
                    else:  # between workers: the keeper is waiting to start the next one
                        gateway.kill()
                        gateway.start()
                elif fault == "kill":
                    gateway.kill()  # SIGKILL: nothing flushed, nothing said
                    time.sleep(rng.uniform(0.0, 1.0))
                    gateway.start()
                elif fault == "broker":
                    broker.stop()  # graceful: Mosquitto saves the sessions and their queues
                    time.sleep(rng.uniform(1.0, 3.0))
                    broker.start()
                else:
                    ensure_started.append(influxdb_v1)
                    influxdb_v1.stop()
                    time.sleep(rng.uniform(2.0, 5.0))
                    influxdb_v1.start()
                done[fault] += 1
            load.stop()
            loaded = time.monotonic() - t0

            acked = load.acked(alarm=False)
            acked_alarms = load.acked(alarm=True)
            owed = {s.uid for s in acked} | {s.uid for s in acked_alarms}

            def delivered() -> bool:
                rows = influxdb_v1.query(database, 'SELECT "uid" FROM "door", "sos"')
                return owed <= {r["uid"] for r in rows}

            wait(delivered, 60, "every acknowledged id in InfluxDB")
            rows = influxdb_v1.query(database, 'SELECT "uid" FROM "door", "sos"')
            with open_store(store_path) as store:
                wait(lambda: store.alerts(limit=10_000), 20, "alerts")
                raised = store.alerts(limit=10_000)
                counters = store.counters()
        finally:
            gateway.stop()
    log = gateway.log()
    per_uid = Counter(r["uid"] for r in rows)
    twice = {uid: n for uid, n in per_uid.items() if n > 1}
    assert not twice, f"ids written as more than one point: {list(twice.items())[:10]}"
    per_household = Counter(a.dedup_key for a in raised if a.rule == "sos_household")
    assert all(n == 1 for n in per_household.values()), f"an alarm raised more than one alert: {per_household}"
    alarmed = {household(int(s.device.removeprefix("sos-"))) for s in acked_alarms}
    missing = alarmed - {key.rsplit(":", 1)[-1] for key in per_household}  # dedup "sos:{household}"
    assert not missing, f"acknowledged alarms with no alert: {sorted(missing)}"
    print(
        f"\nconservation ({mode.name}, seed {mode.seed}, {'ingest process, alarm lane' if split else 'one process'}): "
        f"{loaded:.0f} s of load, {done['kill']} SIGKILLs ({done['worker kill']} of the ingest worker), "
        f"{done['broker']} broker restarts, {done['influx']} InfluxDB outages; {len(acked)} telemetry and "
        f"{len(acked_alarms)} alarms acknowledged, all in InfluxDB once ({len(rows)} points); "
        f"{len(per_household)} alerts, one per alarm; duplicates recognised {counters.get('duplicates', 0)}; "
        f"main's copies of lane messages dropped {counters.get('lane_copies', 0)}; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    assert done["kill"] >= mode.kills and done["broker"] >= 1 and done["influx"] >= 1, log
