"""Ingest benchmark: how much mixed sensor traffic one gateway takes, without losing any, and
how fast an alarm becomes an alert.

    .venv/bin/python bench/bench_ingest.py --rate 500 --seconds 20 --alerts-every 1

Starts a real Mosquitto on a free loopback port (``tests.servers.Mosquitto``, in a temp dir),
writes a site config for a simulated block and runs the gateway on it in its own process
(``python -m gateway.cli run -c …``), exactly as it is deployed. This process then publishes
``--rate`` messages per second for ``--seconds``: zigbee2mqtt door contacts, radars, smoke
detectors and SOS buttons, rtl_433 433 MHz sensors, native access controllers, a share of
garbage, and an alarm (SOS, fall or smoke, in turn) every ``--alerts-every`` seconds. Every
payload comes from the simulators, so every one is a payload the gateway's codecs accept — or,
for the garbage, one it must count as malformed and skip.

It prints the offered and achieved publish rates, the sustained rate at which the gateway
stored events, a zero-loss check (events the published messages decode to == events in the
gateway's store; garbage sent == payloads counted malformed), event→alert latency p50 / p99
(publish of the alarm payload → the alert's message on ``<prefix>/alerts/events``) and the
gateway's peak RSS. See bench/README.md for how to read them. Exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from drivers import rtl433  # noqa: E402
from gateway.errors import PayloadError  # noqa: E402
from gateway.models import Kind, Observation  # noqa: E402
from gateway.site.config import SiteConfig, load_config  # noqa: E402
from gateway.site.registry import Registry  # noqa: E402
from gateway.store import Store  # noqa: E402
from simulators.block import demo_site, render_toml  # noqa: E402
from simulators.devices import (  # noqa: E402
    AccessControllerSim,
    DoorSim,
    FallSim,
    Message,
    SimDevice,
    SmokeSim,
    SosSim,
    simulators_for,
)
from tests.servers import Mosquitto  # noqa: E402

# The kinds that raise an alert in the gateway's alert path (one transition each).
ALERTING = frozenset({Kind.SOS_PRESSED, Kind.FALL_DETECTED, Kind.FALL_SUSPECTED, Kind.SMOKE_ALARM, Kind.GAS_ALARM})
TICK = 0.01  # publisher pacing, seconds
MAX_IN_FLIGHT = 1000  # publishes awaiting PUBACK


@dataclass
class Tally:
    messages: int = 0  # valid payloads published (PUBACKed)
    events: int = 0  # events they decode to
    garbage: int = 0  # payloads the gateway must reject
    alarms: int = 0  # alert-raising events published
    first_publish: float = math.nan
    last_publish: float = math.nan
    latencies: list[float] = field(default_factory=list)
    unmatched_alerts: int = 0
    pending: dict[str, deque[float]] = field(default_factory=dict)  # device → alarm publish times


class Traffic:
    """Mixed routine traffic from the simulators, alarms on a timer, and garbage."""

    def __init__(self, config: SiteConfig, rng: random.Random, garbage_share: float) -> None:
        self.rng = rng
        self.garbage_share = garbage_share
        self.sims = simulators_for(config.devices, config.mqtt, seed=rng.randrange(1 << 30), stamp=time.time)
        sims = list(self.sims.values())
        self.doors = [s for s in sims if isinstance(s, DoorSim) and not isinstance(s, AccessControllerSim)]
        self.access = [s for s in self.sims.values() if isinstance(s, AccessControllerSim)]
        self.radars = [s for s in self.sims.values() if isinstance(s, FallSim)]
        self.smoke = [s for s in self.sims.values() if isinstance(s, SmokeSim)]
        self.sos = [s for s in self.sims.values() if isinstance(s, SosSim)]
        self.reporters = list(self.sims.values())
        self._alarm_turn = 0
        self._garbage = self._garbage_samples(config)
        self._after_alarm: list[SimDevice] = []

    def routine(self) -> list[Message]:
        rng = self.rng
        pick = rng.random()
        if pick < 0.35:
            door = rng.choice(self.doors)
            return door.close() if door.is_open else door.open()
        if pick < 0.55:
            radar = rng.choice(self.radars)
            return radar.presence(not radar.present)
        if pick < 0.65 and self.access:
            ac = rng.choice(self.access)
            return ac.grant(f"card:{rng.randrange(1000):03d}-{rng.randrange(10_000):04d}", "住户", "in", "card")
        return rng.choice(self.reporters).check_in()

    def alarm(self) -> list[Message]:
        """The next alarm, in turn SOS / fall / smoke, each time on another device."""
        turn, self._alarm_turn = self._alarm_turn, self._alarm_turn + 1
        kind = turn % 3
        if kind == 0:
            return self.rng.choice(self.sos).press()
        if kind == 1:
            radar = self.rng.choice([r for r in self.radars if r.fall_state != Kind.FALL_DETECTED] or self.radars)
            self._after_alarm.append(radar)
            return radar.fall()
        detector = self.rng.choice([s for s in self.smoke if s.can(Kind.SMOKE_CLEAR)])
        self._after_alarm.append(detector)
        return detector.alarm()

    def recover(self) -> list[Message]:
        """Put last tick's alarmed devices back to normal, so routine reports do not repeat the alarm."""
        out: list[Message] = []
        for sim in self._after_alarm:
            if isinstance(sim, FallSim | SmokeSim):
                out += sim.clear()
        self._after_alarm.clear()
        return out

    def garbage(self) -> tuple[str, bytes]:
        return self.rng.choice(self._garbage)

    def _garbage_samples(self, config: SiteConfig) -> list[tuple[str, bytes]]:
        m = config.mqtt
        door = next(s for s in self.doors if s.device.mqtt is not None and s.device.mqtt.format == "zigbee2mqtt")
        door_topic = door.check_in()[0].topic
        native_topic = self.access[0].check_in()[0].topic if self.access else f"{m.native_base}/nobody"
        rtl_topic = m.rtl_433_topic.replace("+", "bench")
        samples = [
            (door_topic, b'{"contact": tru'),  # cut short
            (door_topic, b'{"contact": "yes", "battery": 90}'),  # wrong type
            (door_topic, bytes(range(0x80, 0xA0))),  # binary junk
            (door_topic, b""),  # empty
            (f"{m.zigbee2mqtt_base}/未登记的门磁", b'{"contact": true}'),  # unknown device (any block size)
            (rtl_topic, rtl433.encode("Kerui-Security", "999999", [Observation(Kind.DOOR_OPENED)])),  # a neighbour's
            (native_topic, b'{"v":1,"kind":"explode"}'),  # unknown kind
            (native_topic, b'{"kind":"access_granted","values":{}}'),  # no credential
        ]
        registry = Registry(config)
        for topic, payload in samples:  # each must be something the gateway refuses
            try:
                registry.decode(topic, payload, time.time())
            except PayloadError:
                continue
            raise AssertionError(f"bench garbage {topic} {payload!r} decodes")
        return samples


# ---------------------------------------------------------------------- the gateway process


def write_config(tmp: Path, broker: Mosquitto, buildings: int, households: int) -> Path:
    site = demo_site(buildings, households, gateway_id="bench", data_dir=str(tmp / "data"))
    site["mqtt"] = {**site["mqtt"], "host": broker.host, "port": broker.port}
    site["alerts"] = {"console": False}
    path = tmp / "bench-site.toml"
    path.write_text(render_toml(site), encoding="utf-8")
    return path


def stop_process(proc: subprocess.Popen[bytes] | None, within: float = 20.0) -> None:
    """SIGTERM, then a kill after ``within`` seconds: a gateway (or any helper process) stopped."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_gateway(config_path: Path, log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m gateway.cli run -c <config>`` in its own process; ``env`` is added to this
    process's environment (secrets the config names as ``env:…``)."""
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "run", "-c", str(config_path)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
    )


async def warm_up(
    gateway: subprocess.Popen[bytes], watch: StoreWatch, pub: Publisher, probe: SimDevice, log: Path, within: float
) -> None:
    """Publish ``probe``'s check-ins until the gateway has stored something (so it has
    subscribed), then a second more; exit with its log's tail if it dies or takes ``within`` s."""
    deadline = time.monotonic() + within
    while watch.count() == 0:
        if gateway.poll() is not None or time.monotonic() > deadline:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)  # noqa: ASYNC240 - on the way out
            raise SystemExit("the gateway did not start")
        for m in probe.check_in():
            pub.publish(m.topic, m.payload)
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class StoreWatch:
    """Samples the gateway's store from a thread: event count over time, and counters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._store: Store | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not create its store at {self.path}")
            time.sleep(0.05)
        self._store = Store(self.path)
        self._thread.start()

    def count(self) -> int:
        assert self._store is not None
        return self._store.event_count()

    def counters(self) -> dict[str, int]:
        assert self._store is not None
        return self._store.counters()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.monotonic(), self.count()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._store is not None:
            self._store.close()


# ---------------------------------------------------------------------- publishing


class Publisher:
    """paho-mqtt on its own network thread: ``publish`` only queues the message, so one Python
    process can offer thousands of messages a second; PUBACKs are counted in paho's callback."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(MAX_IN_FLIGHT)
        self.client.max_queued_messages_set(0)  # unbounded: the publisher never drops
        self.acked = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise SystemExit("bench publisher: cannot connect to the broker")

    def _on_publish(self, client: object, userdata: object, mid: int, *rest: object) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SystemExit(f"bench publisher: publish failed rc={info.rc}")
        self.sent += 1

    async def wait_acked(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while self.acked < self.sent and time.monotonic() < deadline:  # noqa: ASYNC110 - a paho thread counts
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def publish_traffic(
    pub: Publisher, traffic: Traffic, tally: Tally, rate: float, seconds: float, alerts_every: float
) -> None:
    def go(topic: str, payload: bytes, message: Message | None) -> None:
        if message is None:
            tally.garbage += 1
        else:
            tally.messages += 1
            tally.events += len(message.kinds)
            alarms = sum(1 for k in message.kinds if k in ALERTING)
            if alarms:
                tally.alarms += alarms
                queue = tally.pending.setdefault(message.device_id, deque())
                queue.extend([time.monotonic()] * alarms)  # the clock starts as the payload goes out
        pub.publish(topic, payload)

    start = time.monotonic()
    tally.first_publish = start
    offered = 0
    next_alarm = start + alerts_every if alerts_every > 0 else math.inf
    while (now := time.monotonic()) < start + seconds:
        due = min(int((now - start) * rate), int(seconds * rate)) - offered
        for m in traffic.recover():
            go(m.topic, m.payload, m)
            offered += 1
        if now >= next_alarm:
            next_alarm += alerts_every
            for m in traffic.alarm():
                go(m.topic, m.payload, m)
                offered += 1
        while due > 0:
            if traffic.rng.random() < traffic.garbage_share:
                go(*traffic.garbage(), None)
                due -= 1
                offered += 1
                continue
            for m in traffic.routine():
                go(m.topic, m.payload, m)
                due -= 1
                offered += 1
        await asyncio.sleep(max(0.0, TICK - (time.monotonic() - now)))
    for m in traffic.recover():
        go(m.topic, m.payload, m)
    tally.last_publish = time.monotonic()
    await pub.wait_acked()


async def watch_alerts(client: aiomqtt.Client, tally: Tally) -> None:
    async for msg in client.messages:
        now = time.monotonic()
        try:
            body = json.loads(bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b"{}")
        except ValueError:
            continue
        # One alarm, one rule transition: not its resolution, nor what people did about it
        # (notified, acknowledged, a ladder tier: actor "system" or a person).
        if body.get("transition") == "resolved" or not str(body.get("actor", "")).startswith("rule:"):
            continue
        queue = tally.pending.get(body.get("alert", {}).get("device_id", ""))
        if queue:
            tally.latencies.append(now - queue.popleft())
        else:
            tally.unmatched_alerts += 1


# ---------------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))]


async def bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-bench-"))
    # No queue limit for the gateway's session: a slow gateway must show up as latency and a
    # long drain, not as messages the broker dropped.
    broker = Mosquitto(extra_config=["max_queued_messages 0"])
    broker.start()
    gateway: subprocess.Popen[bytes] | None = None
    watch: StoreWatch | None = None
    pub: Publisher | None = None
    try:
        config_path = write_config(tmp, broker, args.buildings, args.households)
        config = load_config(config_path)
        gateway = start_gateway(config_path, tmp / "gateway.log")
        watch = StoreWatch(config.store_path)
        watch.open()
        traffic = Traffic(config, random.Random(args.seed), args.garbage)
        tally = Tally()
        print(
            f"SenseGate ingest bench: {len(config.devices)} devices ({args.buildings} buildings × "
            f"{args.households} households), Mosquitto {broker.host}:{broker.port}, gateway pid {gateway.pid}"
        )
        pub = Publisher(broker.host, broker.port)
        quiet = logging.getLogger("bench.mqtt")
        quiet.setLevel(logging.ERROR)
        # A long keepalive: at high rates this process is saturated publishing, and a missed
        # ping must not drop the one connection the latency is measured on.
        async with aiomqtt.Client(
            broker.host, broker.port, identifier="bench-alerts", logger=quiet, keepalive=600
        ) as alerts:
            await alerts.subscribe(f"{config.topic_prefix}/alerts/events", qos=1)
            watcher = asyncio.create_task(watch_alerts(alerts, tally))
            await warm_up(gateway, watch, pub, traffic.doors[0], tmp / "gateway.log", within=30)
            baseline = watch.count()
            malformed_before = sum(v for k, v in watch.counters().items() if k.startswith("malformed."))

            t0 = time.monotonic()
            await publish_traffic(pub, traffic, tally, args.rate, args.seconds, args.alerts_every)
            published_in = time.monotonic() - t0

            # Drain: wait for every event to be stored and every alarm to become an alert.
            expected = baseline + tally.events
            deadline = time.monotonic() + max(30.0, args.seconds)
            reached: float | None = None  # when the last event was on disk
            while time.monotonic() < deadline and not watcher.done():
                if reached is None and watch.count() >= expected:
                    reached = time.monotonic()
                if reached is not None and not any(tally.pending.values()):
                    break
                await asyncio.sleep(0.01)
            stored = watch.count() - baseline
            rss = peak_rss_mib(gateway.pid)
            watcher_failed = watcher.done() and not watcher.cancelled() and watcher.exception() is not None
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

        counters = watch.counters()
        malformed = sum(v for k, v in counters.items() if k.startswith("malformed.")) - malformed_before
        sustained = stored / (reached - t0) if reached is not None and reached > t0 else math.nan
        stored_in = f"{reached - t0:.1f} s" if reached is not None else "— not all stored before the deadline"
        offered_total = tally.messages + tally.garbage
        lost = tally.events - stored
        missing_alerts = sum(len(q) for q in tally.pending.values())

        every = f" (+ an alarm every {args.alerts_every} s)" if args.alerts_every > 0 else ""
        print(f"offered        {args.rate:10.1f} msg/s for {args.seconds:.0f} s{every}")
        print(
            f"published      {offered_total / published_in:10.1f} msg/s achieved: {tally.messages} valid messages "
            f"→ {tally.events} events, {tally.garbage} garbage, {tally.alarms} alarms"
        )
        print(f"accepted       {sustained:10.1f} events/s sustained ({stored} events stored in {stored_in})")
        print(
            f"zero loss      {'OK' if lost == 0 else 'FAILED'}: events published {tally.events}, stored {stored}"
            + (f", LOST {lost}" if lost > 0 else "")
            + (f", {-lost} more than published" if lost < 0 else "")
        )
        print(
            f"garbage        {'OK' if malformed == tally.garbage else 'MISMATCH'}: sent {tally.garbage}, "
            f"counted malformed {malformed}"
        )
        lat = sorted(x * 1000 for x in tally.latencies)
        print(
            f"alert latency  p50 {percentile(lat, 0.50):7.1f} ms  p99 {percentile(lat, 0.99):7.1f} ms  "
            f"max {max(lat, default=math.nan):7.1f} ms  (n={len(lat)}"
            + (f", {missing_alerts} alarms without an alert" if missing_alerts else "")
            + (f", {tally.unmatched_alerts} unexpected alerts" if tally.unmatched_alerts else "")
            + (", INCOMPLETE: the alert subscriber lost its connection" if watcher_failed else "")
            + ")"
        )
        print(f"gateway RSS    {rss:10.1f} MiB peak (VmHWM)")
        if args.keep:
            print(f"kept: {tmp} (config, store, gateway.log)")
        return 0 if lost == 0 and not missing_alerts and malformed == tally.garbage else 1
    finally:
        if pub is not None:
            pub.close()
        stop_process(gateway)
        if watch is not None:
            watch.close()
        broker.cleanup()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=500.0, help="messages per second to offer (default 500)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to publish (default 20)")
    p.add_argument("--alerts-every", type=float, default=1.0, help="seconds between alarms; 0: none (default 1)")
    p.add_argument("--garbage", type=float, default=0.02, help="share of malformed payloads (default 0.02)")
    p.add_argument("--buildings", type=int, default=2)
    p.add_argument("--households", type=int, default=20, help="households per building")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, store, gateway log)")
    args = p.parse_args(argv)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
