"""Power loss: the gateway's data directory sits on a FUSE layer (tests/faults/powercut_fs.py)
that keeps every write in memory until it is fsynced. At a random moment under load the layer
is killed — what was not fsynced is gone, as after a power cut — and the gateway with it. The
store left on the disk must open, pass ``PRAGMA integrity_check`` and hold every event the
gateway acknowledged: every id the broker acknowledged to the publisher is in the store or still
held by the broker for the gateway's session (acknowledged by the gateway ⇔ no longer held).
The rules' saves are not fsync'd of their own (docs/store.md, "What is fsync'd"): after the
last cut the gateway starts once more, and every acknowledged alarm has its alert, one each.

With ``synchronous = "normal"`` the same cut loses acknowledged events: the layer bites, and the
window docs/store.md states for that setting is real.

Needs root, /dev/fuse and Debian's python3-fuse (scripts/test installs fuse3 and python3-fuse);
skipped with the reason otherwise. LazyFS is not packaged in Debian 12, hence our own layer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.conftest import Mode
from tests.faults.load import Load
from tests.faults.site import FaultSite, alarm_device, heartbeat, household, telemetry_device
from tests.gateway.harness import GatewayProcess, Publisher
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

LAYER = Path(__file__).with_name("powercut_fs.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-fuse; not the project's venv


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "mounting a FUSE filesystem needs root here"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse in this container"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import fuse"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "Debian's python3-fuse is not installed (scripts/test installs fuse3 and python3-fuse)"
    return None


@contextmanager
def powercut_fs(backing: Path, mountpoint: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The layer mounted over ``backing``; kill the process it yields to cut the power."""
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = open(mountpoint.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(LAYER), str(mountpoint), "-f", "-o", f"backing={backing},attr_timeout=0,entry_timeout=0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the FUSE layer did not mount: {mountpoint.with_suffix('.log').read_text()[-500:]}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        log.close()


def stored_uids(store: Path) -> tuple[str, set[str]]:
    """Open the store left on the disk as the next start would; its integrity and event ids."""
    # Closed at once: left to the garbage collector, a connection to the disk under the layer would
    # checkpoint and delete the WAL while the next gateway uses it (their locks do not meet).
    with closing(sqlite3.connect(store)) as db:
        check = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        uids = {json.loads(body)["values"].get("uid", "") for (body,) in db.execute("SELECT body FROM events")}
    return check, uids


def held_by_broker(host: str, port: int, client_id: str, quiet: float = 1.5) -> set[str]:
    """The gateway's session's messages the broker still holds (unacknowledged in flight, and
    queued): connect as the gateway, take them all, acknowledge none (they stay for its restart)."""
    got: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
    last = [time.monotonic()]

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got.add(json.loads(msg.payload)["values"]["uid"])
        last[0] = time.monotonic()

    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    while time.monotonic() - last[0] < quiet:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    assert len(got) < 1000, "the broker's in-flight window (1000) may hide more: publish less"
    return got


def alerts_per_household(store: Path) -> Counter[str]:
    """The SOS alerts in the store left on the disk, by household."""
    with closing(sqlite3.connect(store)) as db:
        bodies = [json.loads(body) for (body,) in db.execute("SELECT body FROM alerts")]
    return Counter(b["dedup_key"].rsplit(":", 1)[-1] for b in bodies if b["rule"] == "sos_household")


def cut_cycles(
    mode: Mode, tmp_path: Path, synchronous: str, cuts: int, seconds: float, recover: set[str] | None = None
) -> list[tuple[int, int, int, set[str]]]:
    """Run the gateway on the layer ``cuts`` times, cutting the power once each time; per cut
    (events on the disk, held by the broker, acknowledged so far, acknowledged ids missing).
    ``recover``: then start it once more, without a cut, until every household whose alarm was
    acknowledged has its alert (or 30 s), stop it, and add those households to the set."""
    rng = random.Random(mode.seed)
    site = FaultSite(alarms=max(4, cuts * 4))
    backing, mountpoint = tmp_path / "disk", tmp_path / "mnt"
    owed: set[str] = set()
    alarmed: set[str] = set()
    results = []
    with Mosquitto() as broker:
        config = site.config(mountpoint / "data", broker.host, broker.port, store={"synchronous": synchronous})
        client_id = f"sensegate-{config['gateway']['id']}"
        gateway = GatewayProcess(config, tmp_path)
        for cut in range(cuts):
            with powercut_fs(backing, mountpoint) as layer:
                gateway.start()
                try:
                    # Cut while it works, not while it starts: wait for this start's connection.
                    deadline = time.monotonic() + 30
                    while gateway.log_path.read_text(errors="replace").count("connected to broker") <= cut:
                        assert time.monotonic() < deadline, gateway.log()
                        time.sleep(0.1)
                    if cut == 0:  # the broker keeps nothing for a session the gateway never made
                        with Publisher(broker.host, broker.port, client_id=f"probe-{uuid.uuid4().hex[:6]}") as probe:
                            deadline = time.monotonic() + 20
                            while not (mountpoint / "data" / "store.sqlite3").exists() or not _has_events(
                                mountpoint / "data" / "store.sqlite3"
                            ):
                                assert time.monotonic() < deadline, gateway.log()
                                probe.publish(site.topic(telemetry_device(0)), heartbeat(f"probe-{uuid.uuid4().hex}"))
                                time.sleep(0.2)
                    load = Load(
                        site,
                        broker.host,
                        broker.port,
                        rate=100.0,
                        telemetry=[telemetry_device(i) for i in range(4)],
                        alarms=[alarm_device(i) for i in range(cut * 4, cut * 4 + 4)],
                        seconds=seconds,
                    )
                    load.start()
                    time.sleep(rng.uniform(0.4, 0.9) * seconds)
                    layer.send_signal(signal.SIGKILL)  # the power cut: unsynced writes are gone …
                    layer.wait(5)
                finally:
                    gateway.kill()  # … and the gateway with them
                load.stop(settle=2.0)
            owed |= {s.uid for s in load.acked(alarm=False) + load.acked(alarm=True)}
            alarmed |= {household(int(s.device.removeprefix("sos-"))) for s in load.acked(alarm=True)}
            check, on_disk = stored_uids(backing / "data" / "store.sqlite3")
            assert check == "ok", f"cut {cut + 1}: {check}"
            held = held_by_broker(broker.host, broker.port, client_id)
            results.append((len(on_disk), len(held), len(owed), owed - on_disk - held))
        if recover is not None:
            with powercut_fs(backing, mountpoint):
                gateway.start()
                try:
                    deadline = time.monotonic() + 30
                    while not alarmed <= set(alerts_per_household(mountpoint / "data" / "store.sqlite3")):
                        if time.monotonic() > deadline:
                            break  # the assertion says what is missing
                        time.sleep(0.2)
                finally:
                    gateway.stop()  # an orderly stop syncs what it saved
            recover |= alarmed
    return results


def _has_events(store: Path) -> bool:
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)) as db:
            return bool(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.Error:
        return False


def test_a_power_cut_loses_no_acknowledged_event_and_leaves_a_sound_store(mode: Mode, tmp_path: Path) -> None:
    if (reason := _needs()) is not None:
        pytest.skip(reason)
    started = time.monotonic()
    alarmed: set[str] = set()
    results = cut_cycles(mode, tmp_path, "full", mode.cuts, seconds=4.0, recover=alarmed)
    for cut, (*_, missing) in enumerate(results, 1):
        assert not missing, f"cut {cut}: {len(missing)} acknowledged events lost: {sorted(missing)[:10]}"
    alerts = alerts_per_household(tmp_path / "disk" / "data" / "store.sqlite3")
    assert alarmed, "no alarm was acknowledged before the cuts"
    assert not alarmed - set(alerts), f"acknowledged alarms with no alert: {sorted(alarmed - set(alerts))}"
    assert all(n == 1 for n in alerts.values()), f"an alarm raised more than one alert: {alerts}"
    print(
        f"\npower loss ({mode.name}): {len(results)} cuts, synchronous=full: "
        + "; ".join(f"{e} events on the disk, {h} held by the broker, 0 of {o} lost" for e, h, o, _ in results)
        + f"; then {len(alerts)} alerts, one per acknowledged alarm; {time.monotonic() - started:.0f} s"
    )


def test_with_synchronous_normal_the_same_cut_loses_acknowledged_events(mode: Mode, tmp_path: Path) -> None:
    """The layer bites: without an fsync per commit, what the broker was told is stored is not.
    SQLite syncs the WAL at each checkpoint (here every second or so): a cut just after one may
    lose nothing, so there are two cuts."""
    if (reason := _needs()) is not None:
        pytest.skip(reason)
    results = cut_cycles(mode, tmp_path, "normal", 2, seconds=4.0)
    lost = results[-1][3]
    assert lost, "synchronous=normal lost nothing in two cuts: is the layer dropping unsynced writes?"
    print(
        f"\npower loss, synchronous=normal: {len(lost)} of {results[-1][2]} acknowledged events lost in "
        f"{len(results)} cuts ({results[-1][0]} on the disk)"
    )
