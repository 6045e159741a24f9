"""Issue 14's acceptance harness: SenseGate against Node-RED 4 and a bare paho subscriber, on the
same paced zigbee2mqtt traffic, at rising rates.

    .venv/bin/python bench/compare.py                                # 1k,3k,6k,10k,15k msg/s, 20 s each
    .venv/bin/python bench/compare.py --rates 1000,3000 --seconds 15 --plot /tmp/compare.png
    .venv/bin/python bench/compare.py --quick                        # SenseGate at 1k and 3k: ~2 minutes

For each offered rate, and for each system in turn, from scratch (loopback only, temp dirs):

1. a real Mosquitto (``tests.servers.Mosquitto``: the shipped ``max_inflight_messages 1000``,
   ``set_tcp_nodelay true`` and ``max_queued_messages 100000``, so a subscriber that falls far
   enough behind loses messages at the broker, as it would on site) and a fresh database in one real InfluxDB 1.x;
2. the system under test, in its own process:
   - **SenseGate**: ``python -m gateway.cli run -c …`` on a ``simulators.block.demo_site`` of
     ``--households`` households (four zigbee2mqtt devices each), both rule packs, store
     ``synchronous = "full"``, an ``influxdb_v1`` output; **sensegate-split** the same with
     ``[mqtt] ingest_process = true`` (gateway/ingest/process.py), **sensegate-lane** with
     ``[mqtt] alarm_lane = true`` (gateway/ingest/lane.py);
   - **Node-RED** 4 (installed with npm into ``--node-red-dir``, ``bench/nodered-flow.json``):
     mqtt in (QoS 1) → JSON → a function making one point per message → node-red-contrib-influxdb
     (one write per message); JSON → switch on ``smoke`` → mqtt out (an alert);
   - **paho**: ``bench/paho_subscriber.py``, QoS 1, ``json.loads`` and a counter;
3. a publisher process sends the same pre-generated messages to all three: zigbee2mqtt state
   messages from the simulators (door contacts, radars, check-ins), one in ``SMOKE_EVERY`` a
   smoke alarm on a detector not used before in that run (followed by its all-clear), paced in
   10 ms ticks at QoS 1 for ``--seconds``, with at most ``MAX_UNACKED`` messages the broker has
   not acknowledged (a broker that cannot keep up shows as a lower published rate). Its PUBLISH
   packets are encoded before the clock starts and written to a plain socket, a tick's worth at
   a time (``--publisher paho-mqtt``: the first publisher, through paho, for comparison);
4. this process samples what the system has delivered (SenseGate: events in its store, then
   points in InfluxDB; Node-RED: points in InfluxDB, every second; paho: messages counted) every
   0.25 s until everything is there or ``--drain`` seconds after the last publish, listens for the
   alerts, and reads CPU time, memory and bytes written of the system's processes from /proc;
   ``perf record`` on the fsync and fdatasync tracepoints counts their syncs (when perf can).

It prints a table at 1,000 msg/s (smoke → alert p50/p99, CPU seconds per 1,000 messages, RSS
idle/peak, fsyncs a second, storage writes per 1,000 messages and a day) and one per offered
rate (published, % delivered, how far behind it fell, the same figures), and draws
them with matplotlib (``pip install -e '.[bench]'``) to ``--plot``. Every wait has a deadline;
each rate's broker, system and temp dir are removed at the end. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import multiprocessing
import os
import pickle
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench.bench_ingest import Publisher, percentile, start_gateway, stop_process  # noqa: E402
from gateway.site.config import SiteConfig, parse_config  # noqa: E402
from gateway.store import Store  # noqa: E402
from simulators.block import demo_site, render_toml  # noqa: E402
from simulators.devices import (  # noqa: E402
    Message,
    Z2MDoorContact,
    Z2MFallRadar,
    Z2MSmokeDetector,
    Zigbee2MqttDevice,
    simulators_for,
)
from tests.gateway.harness import descendants  # noqa: E402
from tests.servers import InfluxDB1, Mosquitto, ServerError, free_port  # noqa: E402

NODE_RED = "node-red@4.1.8"  # the issue compares with Node-RED 4; npm's latest is 5.x
INFLUX_NODE = "node-red-contrib-influxdb@0.7.0"
NPM_PACKAGES = (NODE_RED, INFLUX_NODE)
NODE_RED_DIR = Path.home() / ".cache" / "sensegate-bench" / "node-red"
FLOW = Path(__file__).with_name("nodered-flow.json")
PAHO_SUBSCRIBER = Path(__file__).with_name("paho_subscriber.py")

SMOKE_EVERY = 1000  # one message in this many is a smoke alarm
# Right after each smoke alarm the publisher sends this topic a stamp that only the listener
# reads: publisher → broker → listener, the harness's own share of an alert's latency.
ECHO_TOPIC = "bench/echo"
TICK = 0.01  # publisher pacing, seconds
# Messages the publisher may have sent and the broker not yet acknowledged. Beyond paho's
# in-flight window (1,000) they wait inside paho, and past 65,535 a packet id comes round again
# and paho refuses the publish; a broker that cannot keep up must show as a lower published
# rate, not as messages this process holds.
MAX_UNACKED = 2000
SAMPLE = 0.25  # delivered-count sampling, seconds
START_WITHIN = 120.0  # a system not delivering its first probe message by then has failed to start
HOUSEHOLDS_PER_BUILDING = 100
# Z2M adds its OTA state to every device that can be updated (all of these models can); the
# gateway's codec ignores it, Node-RED's flow skips it (not a scalar). It brings the messages to
# the size the issue measured (~210 bytes with the topic).
Z2M_UPDATE = {"installed_version": 16777241, "latest_version": 16777241, "state": "idle"}
SYSTEMS = ("sensegate", "sensegate-split", "sensegate-lane", "nodered", "paho")
# ``--quick``: SenseGate alone at its ordinary load and 3× that, for a before/after comparison
# of one change in about two minutes.
QUICK = ("--systems", "sensegate", "--rates", "1000,3000", "--seconds", "15", "--drain", "10")
LABEL = {
    "sensegate": "SenseGate",
    "sensegate-split": "SenseGate, ingest process",
    "sensegate-lane": "SenseGate, alarm lane",
    "nodered": "Node-RED",
    "paho": "paho",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the site and its traffic


def bench_site(households: int, data_dir: Path) -> dict[str, Any]:
    """``demo_site`` at ``households`` (100 a building), its MQTT devices only: the demo's wired
    radar and RS-485 bus would have the gateway retry serial ports this machine does not have."""
    buildings = max(1, round(households / HOUSEHOLDS_PER_BUILDING))
    site = demo_site(buildings, max(1, households // buildings), gateway_id="bench", data_dir=str(data_dir))
    site.pop("modbus_buses", None)
    site["devices"] = [d for d in site["devices"] if "mqtt" in d]
    site["alerts"] = {"console": False}
    site["store"] = {"synchronous": "full"}
    site["rules"] = {"packs": ["elderly_care", "smart_community"]}
    return site


@dataclass
class Plan:
    """One rate's messages, the same for every system."""

    topics: list[str]
    payloads: list[bytes]
    events: list[int]  # cumulative: events[i] = events the first i messages decode to
    smoke: dict[int, str]  # message index → the alarmed detector's device id

    def __len__(self) -> int:
        return len(self.topics)


class Z2MTraffic:
    """zigbee2mqtt state messages from the simulators (which speak through the gateway's codec):
    doors opening and closing, radars seeing people come and go, check-ins of every device; one
    in ``SMOKE_EVERY`` a smoke alarm on a detector not used before in the plan, then its clear."""

    def __init__(self, config: SiteConfig, seed: int) -> None:
        self.rng = random.Random(seed)
        sims = simulators_for(config.devices, config.mqtt, seed=seed)
        self.z2m = [s for s in sims.values() if isinstance(s, Zigbee2MqttDevice)]
        self.doors = [s for s in self.z2m if isinstance(s, Z2MDoorContact)]
        self.radars = [s for s in self.z2m if isinstance(s, Z2MFallRadar)]
        self.detectors = [s for s in self.z2m if isinstance(s, Z2MSmokeDetector)]
        self.topic_device = {s.topic: s.id for s in self.z2m}

    def routine(self) -> list[Message]:
        pick = self.rng.random()
        if pick < 0.35:
            door = self.rng.choice(self.doors)
            return door.close() if door.is_open else door.open()
        if pick < 0.55:
            radar = self.rng.choice(self.radars)
            return radar.presence(not radar.present)
        return self.rng.choice(self.z2m).check_in()

    def plan(self, count: int) -> Plan:
        detectors = self.rng.sample(self.detectors, len(self.detectors))
        topics: list[str] = []
        payloads: list[bytes] = []
        events = [0]
        smoke: dict[int, str] = {}

        def add(messages: list[Message]) -> None:
            for m in messages:
                body = json.loads(m.payload)
                body["update"] = Z2M_UPDATE
                topics.append(m.topic)
                payloads.append(json.dumps(body, separators=(",", ":")).encode())
                events.append(events[-1] + len(m.kinds))

        while len(topics) < count:
            if len(topics) % SMOKE_EVERY == SMOKE_EVERY // 2 and detectors:
                detector = detectors.pop()
                smoke[len(topics)] = detector.id
                add(detector.alarm())
                add(detector.clear())
            else:
                add(self.routine())
        return Plan(topics[:count], payloads[:count], events[: count + 1], smoke)


# ---------------------------------------------------------------------- the publisher process

# Bench tooling, not the gateway's MQTT: the four MQTT 3.1.1 packets the publisher needs,
# framed here from the OASIS standard (§2.2.3 remaining length, §3.1 CONNECT, §3.2 CONNACK,
# §3.3 PUBLISH, §3.4 PUBACK, §3.14 DISCONNECT). With paho every publish cost this process a
# Python call chain, a lock and a wake-up of paho's network thread, and the publisher (not the
# system) was the limit from about 3,000–6,000 msg/s on two shared cores; encoded once before the
# clock starts, a tick's messages leave in one ``send``.
PUBLISH_QOS1 = 0x32  # type 3, DUP 0, QoS 1, RETAIN 0
PUBACK = 4
# Packet ids: plan messages cycle through 1..PLAN_IDS, echoes through the rest, so neither has to
# know how many of the other went before. A packet id may be used again once acknowledged; with
# at most MAX_UNACKED in flight and Mosquitto acknowledging one connection in order, an id
# PLAN_IDS messages back was acknowledged long before.
PLAN_IDS = 60000
ECHO_IDS = 65535 - PLAN_IDS


def remaining_length(n: int) -> bytes:
    """§2.2.3: seven bits a byte, least significant first, the top bit set when more follow."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """A QoS 1 PUBLISH: fixed header, topic, packet id, payload (§3.3)."""
    body = mqtt_string(topic) + packet_id.to_bytes(2, "big") + payload
    return bytes([PUBLISH_QOS1]) + remaining_length(len(body)) + body


class RawPublisher:
    """One MQTT 3.1.1 connection on a plain socket: ``send`` writes pre-encoded PUBLISH packets, a
    reader thread counts the PUBACKs (plan messages and echoes apart, by packet id)."""

    def __init__(self, host: str, port: int, client_id: bytes = b"bench-pub") -> None:
        self.sent = 0  # packets written, echoes included
        self.acked = 0  # PUBACKs read, echoes included
        self.plan_acked = 0
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Clean session, keep alive 0 (§3.1.2.10: off; the connection lives for one run).
        body = mqtt_string(b"MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + mqtt_string(client_id)
        self.sock.sendall(b"\x10" + remaining_length(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise SystemExit("bench publisher: the broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise SystemExit(f"bench publisher: CONNACK {connack.hex()}: refused")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, packets: bytes, count: int) -> None:
        self.sock.sendall(packets)
        self.sent += count

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            i, end = 0, len(buf)
            while i + 2 <= end:
                # Remaining length: up to four bytes after the first (§2.2.3).
                n, shift, j = 0, 0, i + 1
                while j < end and j < i + 5:
                    n |= (buf[j] & 0x7F) << shift
                    shift += 7
                    j += 1
                    if not buf[j - 1] & 0x80:
                        break
                else:
                    break  # the length is not all here yet
                if j + n > end:
                    break
                if buf[i] >> 4 == PUBACK and n >= 2:
                    self.acked += 1
                    if int.from_bytes(buf[j : j + 2], "big") <= PLAN_IDS:
                        self.plan_acked += 1
                i = j + n
            buf = buf[i:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT: no will, a clean goodbye
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


PUBLISHERS = ("raw", "paho-mqtt")


def publish_worker(
    plan_path: str,
    host: str,
    port: int,
    rate: float,
    seconds: float,
    out_path: str,
    ready: Any,
    go: Any,
    publisher: str = "raw",
) -> None:
    """Runs in its own process (so the pacing does not share a GIL with the sampling): publishes
    the plan at ``rate`` for ``seconds`` and writes what it did to ``out_path`` as JSON, once as
    the last message goes out and again when the broker has acknowledged them all (or 30 s on).

    ``publisher``: ``raw`` (pre-encoded packets on a socket) or ``paho-mqtt`` (the harness's
    first publisher, kept to measure the two against each other)."""
    with open(plan_path, "rb") as f:
        topics, payloads = pickle.load(f)
    smoke_at: list[int] = sorted(json.loads(Path(plan_path + ".smoke").read_text()))
    raw: RawPublisher | None = None
    pub: Publisher | None = None
    conn: RawPublisher | Publisher
    if publisher == "raw":
        pairs = enumerate(zip(topics, payloads, strict=True))
        packets = [publish_packet(t.encode(), p, i % PLAN_IDS + 1) for i, (t, p) in pairs]
        conn = raw = RawPublisher(host, port)
    else:
        conn = pub = Publisher(host, port)
    progress: list[tuple[float, int]] = []
    smoke_sent: dict[int, float] = {}
    ready.set()
    if not go.wait(60):
        conn.close()
        return
    start = time.monotonic()
    cpu0 = time.process_time()
    sent = 0
    echoes = 0
    limit = min(len(topics), int(rate * seconds))
    while (now := time.monotonic()) < start + seconds and sent < limit:
        due = min(limit, int((now - start) * rate) + 1)
        while sent < due and (room := MAX_UNACKED - (conn.sent - conn.acked)) > 0:
            upto = min(due, sent + room)
            k = bisect.bisect_left(smoke_at, sent)
            smoke = smoke_at[k] if k < len(smoke_at) and smoke_at[k] < upto else None
            plain = upto if smoke is None else smoke  # the messages before the next smoke alarm
            if plain > sent:
                if raw is not None:
                    raw.send(b"".join(packets[sent:plain]), plain - sent)
                elif pub is not None:
                    for i in range(sent, plain):
                        pub.publish(topics[i], payloads[i])
                sent = plain
            if smoke is None:
                continue
            smoke_sent[smoke] = time.monotonic()  # the clock starts as the payload goes out
            stamp = repr(time.monotonic()).encode()
            if raw is not None:
                raw.send(
                    packets[smoke] + publish_packet(ECHO_TOPIC.encode(), stamp, PLAN_IDS + 1 + echoes % ECHO_IDS), 2
                )
            elif pub is not None:
                pub.publish(topics[smoke], payloads[smoke])
                pub.publish(ECHO_TOPIC, stamp)
            echoes += 1
            sent = smoke + 1
        progress.append((time.monotonic(), sent))
        time.sleep(max(0.0, TICK - (time.monotonic() - now)))
    end = time.monotonic()
    cpu = time.process_time() - cpu0  # every thread of this process: paho's or the PUBACK reader too

    def plan_acked() -> int:
        # paho's callback cannot tell an echo's PUBACK from a message's; the broker acknowledges
        # in order, so the echoes (one in SMOKE_EVERY) are taken off the count once they are in.
        return raw.plan_acked if raw is not None else max(0, min(sent, conn.acked - echoes))

    def write(acked: int) -> None:
        smoke = {str(k): v for k, v in smoke_sent.items()}
        d = {"start": start, "end": end, "sent": sent, "acked": acked, "progress": progress, "smoke": smoke, "cpu": cpu}
        Path(out_path + ".part").write_text(json.dumps(d))
        os.replace(out_path + ".part", out_path)

    write(plan_acked())
    deadline = end + 30
    while conn.acked < conn.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    write(plan_acked())
    conn.close()


@dataclass
class Published:
    start: float
    end: float
    sent: int
    acked: int
    progress: list[tuple[float, int]]
    smoke: dict[int, float]  # message index → time.monotonic() as it went out
    cpu: float  # the publisher's own CPU seconds, first publish → last

    @classmethod
    def read(cls, path: Path) -> Published:
        d = json.loads(path.read_text())
        return cls(
            d["start"],
            d["end"],
            d["sent"],
            d["acked"],
            [(t, n) for t, n in d["progress"]],
            {int(k): v for k, v in d["smoke"].items()},
            d["cpu"],
        )


# ---------------------------------------------------------------------- /proc


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (Linux)."""
    return [root, *descendants(root)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the processes, their reaped children included."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def memory_mib(pids: Sequence[int], key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) summed over the processes, MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def pss_mib(pids: Sequence[int]) -> float:
    """Proportional set size summed over the processes, MiB: a page shared by n of them counts
    1/n in each, so forked processes that share their parent's memory are not counted twice
    (RSS would). ``/proc/<pid>/smaps_rollup``, Linux 4.14+."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total / 1024


def storage_written(pids: Iterable[int]) -> dict[int, int]:
    """Bytes the processes have sent towards storage (``/proc/<pid>/io``: ``write_bytes`` less
    ``cancelled_write_bytes``, pages dirtied and then truncated before they reached the disk),
    every thread of each process counted. It is what the kernel charges to the process as it
    dirties page-cache pages (once per page between two writebacks, so a 4 KiB page per fsync'd
    commit at least) and direct I/O; the filesystem's own journal writes are not in it. By
    process, so that one that ends or starts during the run is not counted against the others."""
    out = {}
    for pid in pids:
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except (OSError, ValueError):
            continue
        out[pid] = int(fields.get("write_bytes", 0)) - int(fields.get("cancelled_write_bytes", 0))
    return out


class SyncCounter:
    """fsync and fdatasync calls of the system's processes, their threads and children, timed:
    ``perf record`` on the syscalls' kernel tracepoints. The kernel writes a small record per call
    into a buffer perf drains: no ptrace stop (``strace -p`` would stop the process at every
    system call, and slow a gateway that makes hundreds a second), and threads started after it
    attached are followed too (``perf stat`` adds theirs only when they exit). Clock
    CLOCK_MONOTONIC, the same as ``time.monotonic()``, so the calls line up with the publisher's
    progress."""

    EVENTS = ("syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync")

    @staticmethod
    def unavailable() -> str | None:
        """Why fsyncs cannot be counted here, or None when they can."""
        perf = shutil.which("perf")
        if perf is None:
            return "perf is not installed (Debian: apt-get install linux-perf)"
        try:
            done = subprocess.run(
                [perf, "stat", "-x,", "-e", ",".join(SyncCounter.EVENTS), "true"],
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"perf failed: {exc}"
        if done.returncode != 0 or b"not supported" in done.stderr or b"<not" in done.stderr:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return f"perf cannot count syscall tracepoints here (root, or kernel.perf_event_paranoid = -1): {last}"
        return None

    def __init__(self, pids: Sequence[int], data: Path) -> None:
        self.data = data
        self.log_path = data.with_suffix(".log")
        # Started with its events off (-D -1); "enable" on the control pipe turns them on and perf
        # answers "ack" once they are: the count starts at a known moment, after the attach.
        ctl_r, self._ctl = os.pipe()
        self._ack, ack_w = os.pipe()
        command = [
            *("perf", "record", "-q", "-D", "-1", "--control", f"fd:{ctl_r},{ack_w}", "-k", "CLOCK_MONOTONIC"),
            *("-e", ",".join(self.EVENTS), "-p", ",".join(map(str, pids)), "-o", str(data)),
        ]
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    command, pass_fds=(ctl_r, ack_w), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
        finally:
            os.close(ctl_r)
            os.close(ack_w)

    def log_tail(self) -> str:
        try:
            return " ".join(self.log_path.read_text(errors="replace").split()[-30:])
        except OSError:
            return ""

    def enable(self, within: float = 20.0) -> bool:
        """Counting from now on; False when perf did not say it started in time."""
        try:
            os.write(self._ctl, b"enable\n")
            ready, _, _ = select.select([self._ack], [], [], within)
            return bool(ready) and os.read(self._ack, 64).startswith(b"ack")
        except OSError:  # perf has already exited: its log says why
            return False

    def stop(self, read: bool = True) -> list[float] | None:
        """The calls' times (time.monotonic()), sorted; None when perf left nothing readable (or
        not ``read``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._ctl, self._ack):
            with contextlib.suppress(OSError):
                os.close(fd)
        if not read:
            return None
        done = subprocess.run(
            ["perf", "script", "-i", str(self.data), "-F", "time"], capture_output=True, timeout=120, check=False
        )
        if done.returncode != 0:
            return None
        times = []
        for line in done.stdout.decode().splitlines():
            with contextlib.suppress(ValueError):
                times.append(float(line.strip().rstrip(":")))
        return sorted(times)


def influx_count(influx: InfluxDB1, db: str, field_key: str, measurement: str = "/.*/") -> int:
    rows = influx.query(db, f'SELECT COUNT("{field_key}") FROM {measurement}')
    return sum(int(r.get("count", 0)) for r in rows)


# ---------------------------------------------------------------------- the systems


class System:
    """One system under test, started fresh for one rate."""

    name = ""
    unit = "messages"  # what ``delivered`` counts
    alert_topic: str | None = None
    sample_every = SAMPLE  # seconds between two ``delivered`` reads

    def __init__(
        self, tmp: Path, broker: Mosquitto, influx: InfluxDB1, db: str, site: dict[str, Any], traffic: Z2MTraffic
    ) -> None:
        self.tmp, self.broker, self.influx, self.db = tmp, broker, influx, db
        self.site = site  # as the config file says it
        self.config = parse_config(site, str(tmp / "bench-site.toml"), tmp)
        self.topic_device = traffic.topic_device
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / f"{self.name}.log"

    def start(self) -> None:
        raise NotImplementedError

    def delivered(self) -> int:
        """Units delivered so far, warm-up included (cheap: sampled 4 times a second)."""
        raise NotImplementedError

    def final(self) -> int:
        """Units delivered, exactly (may be slower)."""
        return self.delivered()

    def influx_points(self) -> int | None:
        """Points in InfluxDB, when that is not what ``delivered`` already counts."""
        return None

    def alert_device(self, payload: bytes) -> str | None:
        """The device an alert message is for, or None when it is not an alert we time."""
        return None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_errors(self) -> int:
        """Error lines in the system's log (Node-RED logs a failed InfluxDB write there)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if "[error]" in line or " ERROR " in line or "Traceback" in line)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc)


class SenseGate(System):
    name = "sensegate"
    unit = "events"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._db_conn: sqlite3.Connection | None = None
        self.alert_topic = f"{self.config.topic_prefix}/alerts/events"

    def start(self) -> None:
        site = dict(self.site)
        site["mqtt"] = {**site["mqtt"], "host": self.broker.host, "port": self.broker.port}
        output = {"type": "influxdb_v1", "name": "influx", "url": self.influx.url, "database": self.db}
        site["outputs"] = [{**output, "create_database": True}]
        path = self.tmp / "bench-site.toml"
        path.write_text(render_toml(site), encoding="utf-8")
        path.chmod(0o600)
        self.proc = start_gateway(path, self.log_path)

    def _conn(self) -> sqlite3.Connection | None:
        if self._db_conn is None and self.config.store_path.exists():
            self._db_conn = sqlite3.connect(self.config.store_path, timeout=5.0, check_same_thread=False)
        return self._db_conn

    def delivered(self) -> int:
        conn = self._conn()
        if conn is None:
            return 0
        try:
            row = conn.execute("SELECT MAX(seq) FROM events").fetchone()
        except sqlite3.OperationalError:  # the gateway has not made its tables yet
            return 0
        return int(row[0] or 0)

    def final(self) -> int:
        store = Store(self.config.store_path)
        try:
            return store.event_count()
        finally:
            store.close()

    def influx_points(self) -> int | None:
        try:
            return influx_count(self.influx, self.db, "seq")
        except ServerError:  # the gateway makes the database with its first write
            return 0

    def alert_device(self, payload: bytes) -> str | None:
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        # The alarm's own rule transition: not its resolution, nor what people did about it.
        if body.get("transition") == "resolved" or not str(body.get("actor", "")).startswith("rule:"):
            return None
        device = body.get("alert", {}).get("device_id")
        return str(device) if device else None

    def stop(self) -> None:
        if self._db_conn is not None:
            self._db_conn.close()
            self._db_conn = None
        super().stop()


class NodeRed(System):
    name = "nodered"
    alert_topic = "nodered/alerts"
    sample_every = 1.0  # a COUNT over every point so far: not 4 times a second

    def start(self) -> None:
        red = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
        self.port = free_port()
        flow = json.loads(FLOW.read_text(encoding="utf-8"))
        for node in flow:
            if node["type"] == "mqtt-broker":
                node.update(broker=self.broker.host, port=str(self.broker.port))
            elif node["type"] == "influxdb":
                node.update(hostname=self.influx.host, port=str(self.influx.port), database=self.db)
        user_dir = self.tmp / "node-red"
        user_dir.mkdir()
        (user_dir / "flows.json").write_text(json.dumps(flow), encoding="utf-8")
        settings = user_dir / "settings.js"
        settings.write_text(
            "module.exports = "
            + json.dumps(
                {
                    "uiHost": "127.0.0.1",  # loopback only: the editor needs no login here
                    "uiPort": self.port,
                    "flowFile": "flows.json",
                    "credentialSecret": False,
                    "logging": {"console": {"level": "warn", "metrics": False, "audit": False}},
                    "telemetry": {"enabled": False},
                    "diagnostics": {"enabled": False},
                    "editorTheme": {"projects": {"enabled": False}, "tours": False},
                    "externalModules": {"autoInstall": False, "palette": {"allowInstall": False}},
                },
                indent=2,
            )
            + ";\n"
        )
        self.influx.create_database(self.db)
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["node", str(red), "--settings", str(settings), "--userDir", str(user_dir)],
            cwd=user_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def delivered(self) -> int:
        return influx_count(self.influx, self.db, "linkquality", '"zigbee2mqtt"')

    def alert_device(self, payload: bytes) -> str | None:
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        return self.topic_device.get(str(body.get("topic", "")))


class Paho(System):
    name = "paho"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._count = 0
        self._reader: threading.Thread | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(PAHO_SUBSCRIBER),
                "--host",
                self.broker.host,
                "--port",
                str(self.broker.port),
                "--max-seconds",
                "900",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[bytes]) -> None:
        for line in out:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == b"count":
                self._count = int(parts[1])

    def delivered(self) -> int:
        return self._count

    def stop(self) -> None:
        super().stop()
        if self._log is not None:
            self._log.close()


class SenseGateSplit(SenseGate):
    """SenseGate with ``[mqtt] ingest_process = true``: receiving, decoding and committing in a
    process of its own (gateway/ingest/process.py)."""

    name = "sensegate-split"

    def start(self) -> None:
        self.site = {**self.site, "mqtt": {**self.site["mqtt"], "ingest_process": True}}
        super().start()


class SenseGateLane(SenseGate):
    """SenseGate with ``[mqtt] alarm_lane = true``: the smoke detectors', radars' and SOS
    buttons' messages on a connection of their own (gateway/ingest/lane.py)."""

    name = "sensegate-lane"

    def start(self) -> None:
        self.site = {**self.site, "mqtt": {**self.site["mqtt"], "alarm_lane": True}}
        super().start()


SYSTEM_CLASSES: dict[str, type[System]] = {
    "sensegate": SenseGate,
    "sensegate-split": SenseGateSplit,
    "sensegate-lane": SenseGateLane,
    "nodered": NodeRed,
    "paho": Paho,
}


# ---------------------------------------------------------------------- one system at one rate


@dataclass
class Run:
    system: str
    rate: float
    seconds: float
    messages: int = 0  # published (PUBACKed by the broker)
    published_rate: float = math.nan
    unit: str = "messages"
    expected: int = 0  # units the published messages should become
    delivered: int = 0  # units there when the wait ended
    influx: int | None = None  # SenseGate: points in InfluxDB then
    behind: float = math.nan  # the oldest undelivered message's age, at its worst (s)
    caught_up: float | None = None  # s after the last publish when everything was there
    cpu: float = math.nan  # CPU seconds of the system's processes, publish start → wait end
    rss_idle: float = math.nan
    rss_peak: float = math.nan
    pss_idle: float = math.nan  # PSS, summed: what the processes hold between them
    pss_peak: float = math.nan  # the most sampled (once a second), publish start → wait end
    latencies: list[float] = field(default_factory=list)  # smoke → alert, ms
    echoes: list[float] = field(default_factory=list)  # publisher → broker → listener, ms
    alarms: int = 0
    broker_dropped: int | None = None
    log_errors: int = 0
    error: str = ""
    publisher: str = "paho-mqtt"  # what published; results saved before the raw publisher were paho's
    written: float = math.nan  # bytes the system's processes sent towards storage, as ``cpu``
    fsyncs: int | None = None  # fsync + fdatasync calls of the system's processes, as ``cpu``
    fsync_rate: float = math.nan  # of them, a second, while the publisher was publishing
    fsync_peak: float = math.nan  # the most in one second, publish start → wait end
    fsync_note: str = ""  # why they were not counted
    publisher_cpu: float = math.nan  # the publisher process's CPU seconds while publishing

    @property
    def publisher_cpu_per_1k(self) -> float:
        return 1000 * self.publisher_cpu / self.messages if self.messages else math.nan

    @property
    def delivered_pct(self) -> float:
        return 100.0 * self.delivered / self.expected if self.expected else math.nan

    @property
    def influx_pct(self) -> float:
        return 100.0 * self.influx / self.expected if self.influx is not None and self.expected else math.nan

    @property
    def handled(self) -> float:
        """Messages the system dealt with: what was published, less what it had not by the end."""
        return self.messages * min(1.0, self.delivered / self.expected) if self.expected else 0.0

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu / self.handled if self.handled else math.nan

    @property
    def written_mb_per_1k(self) -> float:
        return 1000 * self.written / self.handled / 1e6 if self.handled else math.nan

    @property
    def written_gb_per_day(self) -> float:
        """At the offered rate, all day: what an SD card would be asked to take."""
        return self.written / self.handled * self.rate * 86400 / 1e9 if self.handled else math.nan


class AlertListener:
    """Subscribes to a system's alert topic (and the broker's dropped-message counter)."""

    DROPPED = "$SYS/broker/publish/messages/dropped"

    def __init__(self, broker: Mosquitto, topic: str | None) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.echoes: list[float] = []  # ms from the publisher's stamp to here
        self.dropped: int | None = None
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-listener", protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        topics = [(self.DROPPED, 0), (ECHO_TOPIC, 1)] + ([(topic, 1)] if topic else [])
        self.client.on_connect = lambda c, *a: c.subscribe(topics)
        self.client.connect(broker.host, broker.port, keepalive=600)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit("bench: the alert listener could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.DROPPED:
            with contextlib.suppress(ValueError):
                self.dropped = int(msg.payload)
            return
        if msg.topic == ECHO_TOPIC:
            with contextlib.suppress(ValueError):
                self.echoes.append((time.monotonic() - float(msg.payload)) * 1000)
            return
        self.received.append((time.monotonic(), bytes(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def lag(published: Published, units: list[int], samples: list[tuple[float, int]]) -> float:
    """The largest age of the oldest undelivered unit over the samples, seconds.

    ``units[i]`` is how many units the first i messages make; ``published.progress`` says when
    each message went out; a sample (t, d) with d units delivered means unit d+1 was still
    missing at t."""
    times = [published.start] + [t for t, _ in published.progress]
    counts = [0] + [units[n] for _, n in published.progress]
    worst = 0.0
    for t, d in samples:
        if d >= counts[-1] or t < published.start:
            continue
        i = bisect.bisect_right(counts, d)  # the first progress mark past d: unit d+1 was out by then
        worst = max(worst, t - times[i])
    return worst


def run_one(
    system_name: str,
    rate: float,
    plan: Plan,
    plan_path: Path,
    site: dict[str, Any],
    args: argparse.Namespace,
    publisher: str = "raw",
) -> Run:
    run = Run(system_name, rate, args.seconds, publisher=publisher)
    tmp = Path(tempfile.mkdtemp(prefix=f"sensegate-compare-{system_name}-"))
    broker = Mosquitto(extra_config=["sys_interval 1"])
    influx: InfluxDB1 = args.influx
    db = f"bench_{system_name}_{int(rate)}"
    with contextlib.suppress(Exception):
        influx.drop_database(db)
    system: System | None = None
    listener: AlertListener | None = None
    worker: multiprocessing.process.BaseProcess | None = None
    probe: Publisher | None = None
    sync: SyncCounter | None = None
    try:
        broker.start()
        data_dir = tmp / "data"
        the_site = {**site, "gateway": {**site["gateway"], "data_dir": str(data_dir)}}
        system = SYSTEM_CLASSES[system_name](tmp, broker, influx, db, the_site, args.traffic)
        run.unit = system.unit
        listener = AlertListener(broker, system.alert_topic)
        system.start()

        # Warm up: a door's check-in until the system has it (so it has subscribed), then rest.
        probe = Publisher(broker.host, broker.port)
        door = plan.topics[0], plan.payloads[0]
        deadline = time.monotonic() + START_WITHIN
        while system.delivered() == 0:
            if not system.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{LABEL[system_name]} did not start:\n{system.log_tail()}")
            probe.publish(*door)
            time.sleep(0.5)
        probe.close()
        probe = None
        time.sleep(2.0)
        baseline = system.final()
        base_sample = system.delivered()
        influx_baseline = baseline  # SenseGate forwards every stored event, the warm-up's too
        pids = system.pids()
        run.rss_idle = memory_mib(pids, "VmRSS")
        run.pss_idle = run.pss_peak = pss_mib(pids)
        pss_at = time.monotonic()

        ctx = multiprocessing.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        out_path = tmp / "published.json"
        worker = ctx.Process(
            target=publish_worker,
            args=(str(plan_path), broker.host, broker.port, rate, args.seconds, str(out_path), ready, go, publisher),
            daemon=True,
        )
        worker.start()
        if not ready.wait(60):
            raise RuntimeError("the publisher process did not connect")
        if args.sync_unavailable is not None:
            run.fsync_note = args.sync_unavailable
        else:
            sync = SyncCounter(pids, tmp / "fsync.perf")
            if not sync.enable():
                run.fsync_note = f"perf did not start: {sync.log_tail() or 'no answer in 20 s'}"
                sync.stop(read=False)
                sync = None
        written0 = storage_written(pids)
        cpu0 = cpu_seconds(pids)
        go.set()
        samples: list[tuple[float, int]] = []
        hard_stop = time.monotonic() + args.seconds * 2 + args.drain + 90
        published: Published | None = None
        while time.monotonic() < hard_stop:
            now = time.monotonic()
            samples.append((now, system.delivered() - base_sample))
            if now - pss_at >= 1.0:
                pss_at = now
                run.pss_peak = max(run.pss_peak, pss_mib(pids))
            if published is None and out_path.exists():
                published = Published.read(out_path)
            elif published is None and not worker.is_alive():
                raise RuntimeError("the publisher process failed")
            if published is not None:
                units = plan.events if system.unit == "events" else list(range(len(plan) + 1))
                expected = units[published.sent]
                got = samples[-1][1]
                if got >= expected and run.caught_up is None:
                    run.caught_up = max(0.0, now - published.end)
                done = got >= expected
                if isinstance(system, SenseGate) and done:
                    points = system.influx_points()
                    done = points is not None and points - influx_baseline >= expected
                alerts_in = len(smoke_alerts(system, listener, plan, published)) >= len(published.smoke)
                if (done and alerts_in) or now > published.end + args.drain:
                    break
            time.sleep(max(0.0, system.sample_every - (time.monotonic() - now)))
        if published is None:
            raise RuntimeError("the publisher did not finish in time")
        run.cpu = cpu_seconds(pids) - cpu0
        written1 = storage_written({*pids, *system.pids()})
        run.written = sum(written1.get(pid, 0) - written0.get(pid, 0) for pid in written1)
        wait_end = time.monotonic()
        run.rss_peak = memory_mib(pids, "VmHWM")
        worker.join(35)  # it waits up to 30 s for the broker's last acknowledgements
        published = Published.read(out_path)
        run.messages = published.acked
        run.publisher_cpu = published.cpu
        run.published_rate = published.sent / max(1e-9, published.end - published.start)
        units = plan.events if system.unit == "events" else list(range(len(plan) + 1))
        run.expected = units[published.sent]
        run.delivered = system.final() - baseline
        if isinstance(system, SenseGate):
            points = system.influx_points()
            run.influx = None if points is None else points - influx_baseline
        run.behind = lag(published, units, samples)
        matched = smoke_alerts(system, listener, plan, published)
        run.alarms = len(published.smoke) if system.alert_topic else 0
        run.latencies = sorted(matched.values())
        run.echoes = sorted(listener.echoes)
        run.broker_dropped = listener.dropped
        run.log_errors = system.log_errors()
        if sync is not None:
            calls = sync.stop()
            if calls is None:
                run.fsync_note = f"perf recorded nothing readable: {sync.log_tail() or '(no log)'}"
            else:
                count_syncs(run, calls, published, wait_end)
            sync = None
        if published.acked < published.sent:
            run.error = f"{published.sent - published.acked} publishes never acknowledged by the broker"
        return run
    except (RuntimeError, ServerError, OSError, SystemExit) as exc:  # one failed run does not end the others
        run.error = str(exc) or type(exc).__name__
        return run
    finally:
        if sync is not None:
            sync.stop(read=False)
        if worker is not None and worker.is_alive():
            worker.terminate()
            worker.join(5)
        if probe is not None:
            probe.close()
        if listener is not None:
            listener.close()
        if system is not None:
            system.stop()
        broker.cleanup()
        with contextlib.suppress(Exception):
            influx.drop_database(db)
        if args.keep:
            print(f"    kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def count_syncs(run: Run, calls: list[float], published: Published, wait_end: float) -> None:
    """fsyncs a second while publishing, and the most in any one second up to the end of the wait."""
    window = [t for t in calls if published.start <= t <= wait_end]
    run.fsyncs = len(window)
    publishing = sum(1 for t in window if t <= published.end)
    run.fsync_rate = publishing / max(1e-9, published.end - published.start)
    per_second: dict[int, int] = {}
    for t in window:
        second = int(t - published.start)
        per_second[second] = per_second.get(second, 0) + 1
    run.fsync_peak = max(per_second.values(), default=0)


def smoke_alerts(system: System, listener: AlertListener, plan: Plan, published: Published) -> dict[str, float]:
    """Each smoke alarm's first alert after it went out: device → latency in ms."""
    sent = {plan.smoke[i]: t for i, t in published.smoke.items()}
    out: dict[str, float] = {}
    for at, payload in list(listener.received):
        device = system.alert_device(payload)
        if device in sent and device not in out and at >= sent[device]:
            out[device] = (at - sent[device]) * 1000
    return out


# ---------------------------------------------------------------------- output


def fmt(value: float | None, spec: str = ".1f", none: str = "—") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def entries(runs: list[Run], systems: Sequence[str]) -> list[tuple[str, str, str]]:
    """(system, publisher, label) in the order to print them; the publisher is in the label only
    when the runs had more than one."""
    publishers = list(dict.fromkeys(r.publisher for r in runs))
    return [
        (name, pub, LABEL[name] + (f" ← {pub}" if len(publishers) > 1 else ""))
        for name in systems
        for pub in publishers
        if any(r.system == name and r.publisher == pub for r in runs)
    ]


def find(runs: list[Run], name: str, publisher: str, rate: float) -> Run | None:
    return next((r for r in runs if r.system == name and r.publisher == publisher and r.rate == rate), None)


def headline(runs: list[Run], systems: Sequence[str]) -> str:
    """The table at 1,000 msg/s (or the offered rate nearest it)."""
    rates = sorted({r.rate for r in runs})
    at = min(rates, key=lambda r: abs(r - 1000))
    rows = entries(runs, systems)
    w = max([10] + [len(label) for *_, label in rows])
    lines = [
        f"at {at:,.0f} msg/s offered",
        f"{'system':<{w}} {'smoke → alert p50':>18} {'p99':>9} {'n':>4}   {'CPU s / 1,000 msgs':>18}   "
        f"{'RSS idle':>9} {'peak':>8}   {'PSS idle':>9} {'peak':>8}   "
        f"{'fsync/s':>7} {'peak':>5}   {'written MB/1k':>13} {'GB/day':>7}",
    ]
    notes = set()
    for name, pub, label in rows:
        run = find(runs, name, pub, at)
        if run is None:
            continue
        if run.error and math.isnan(run.cpu):
            lines.append(f"{label:<{w}} failed: {run.error.splitlines()[0]}")
            continue
        lat = run.latencies
        alarms = f"{len(lat)}" + (f"/{run.alarms}" if run.alarms != len(lat) else "")
        lines.append(
            f"{label:<{w}} {fmt(percentile(lat, 0.5)) + ' ms' if lat else '—':>18} "
            f"{fmt(percentile(lat, 0.99)) + ' ms' if lat else '—':>9} {alarms if run.alarms else '—':>4}   "
            f"{fmt(run.cpu_per_1k, '.3f'):>18}   {fmt(run.rss_idle, '.0f'):>5} MiB {fmt(run.rss_peak, '.0f'):>4} MiB"
            f"   {fmt(run.pss_idle, '.0f'):>5} MiB {fmt(run.pss_peak, '.0f'):>4} MiB"
            f"   {fmt(run.fsync_rate, '.0f'):>7} {fmt(run.fsync_peak, '.0f'):>5}   "
            f"{fmt(run.written_mb_per_1k, '.2f'):>13} {fmt(run.written_gb_per_day, '.1f'):>7}"
        )
        if run.fsync_note:
            notes.add(run.fsync_note)
    echoes = sorted(e for r in runs if r.rate == at for e in r.echoes)
    if echoes:
        lines.append(
            f"(the harness's own share, publisher → broker → listener at the same moments: p50 "
            f"{percentile(echoes, 0.5):.1f} ms, p99 {percentile(echoes, 0.99):.1f} ms, n={len(echoes)})"
        )
    lines += [
        "(RSS: summed over the system's processes, VmRSS idle and VmHWM peak; PSS: the same with each shared page",
        " counted once between them, idle and the most sampled once a second — the honest sum for forked processes.)",
        "(fsync/s: fsync + fdatasync calls of the system's processes a second while publishing, and the most in one",
        " second. written: the bytes they sent towards storage (/proc/<pid>/io write_bytes), per 1,000 messages and",
        " for a day at this rate; not in it: the filesystem's journal, the broker's files, and InfluxDB's (a separate",
        " server: its writes are the same for every system that stores the same points).)",
    ]
    lines += [f"(fsyncs not counted: {note})" for note in sorted(notes)]
    return "\n".join(lines)


def per_rate(runs: list[Run], systems: Sequence[str]) -> str:
    rows = entries(runs, systems)
    w = max([10] + [len(label) for *_, label in rows])
    lines = [
        f"{'offered':>8} {'system':<{w}} {'published':>10} {'delivered':>10} {'InfluxDB':>9} {'behind':>8} "
        f"{'caught up':>10} {'alert p99':>10} {'harness':>8} {'CPU s/1k':>9} {'RSS peak':>9} "
        f"{'fsync/s':>7} {'peak':>5} {'MB/1k':>6} {'GB/day':>7} {'pub s/1k':>8}  notes"
    ]
    for rate in sorted({r.rate for r in runs}):
        for name, pub, label in rows:
            run = find(runs, name, pub, rate)
            if run is None:
                continue
            if run.error and not run.messages:
                lines.append(f"{rate:>8,.0f} {label:<{w}} failed: {run.error.splitlines()[0]}")
                continue
            notes = []
            if run.delivered < run.expected:
                notes.append(f"{run.expected - run.delivered:,} {run.unit} not in by the end of the wait")
            if run.broker_dropped:
                notes.append(f"the broker dropped {run.broker_dropped:,} messages (queue full): lost")
            elif run.delivered < run.expected and run.broker_dropped == 0:
                notes.append("the broker dropped none")
            if run.log_errors:
                notes.append(f"{run.log_errors} error lines in its log")
            if run.alarms and len(run.latencies) < run.alarms:
                notes.append(f"{run.alarms - len(run.latencies)} of {run.alarms} alarms without an alert")
            if run.error:
                notes.append(run.error)
            caught = f"+{run.caught_up:.1f} s" if run.caught_up is not None else "no"
            lines.append(
                f"{rate:>8,.0f} {label:<{w}} {run.published_rate:>10,.0f} "
                f"{fmt(run.delivered_pct, '.2f') + ' %':>10} "
                f"{fmt(run.influx_pct, '.1f') + ' %' if run.influx is not None else '':>9} {fmt(run.behind) + ' s':>8} "
                f"{caught:>10} {fmt(percentile(run.latencies, 0.99), '.0f') + ' ms' if run.latencies else '—':>10} "
                f"{fmt(percentile(run.echoes, 0.5), '.0f') + ' ms' if run.echoes else '—':>8} "
                f"{fmt(run.cpu_per_1k, '.3f'):>9} {fmt(run.rss_peak, '.0f') + ' MiB':>9} "
                f"{fmt(run.fsync_rate, '.0f'):>7} {fmt(run.fsync_peak, '.0f'):>5} "
                f"{fmt(run.written_mb_per_1k, '.2f'):>6} {fmt(run.written_gb_per_day, '.1f'):>7} "
                f"{fmt(run.publisher_cpu_per_1k, '.3f'):>8}  {'; '.join(notes)}"
            )
    return "\n".join(lines)


def ceilings(runs: list[Run], systems: Sequence[str]) -> str:
    """The zero-loss ceiling: the highest offered rate up to which every rate was delivered in
    full by the end of the wait, with nothing dropped by the broker."""
    parts = []
    for name, pub, label in entries(runs, systems):
        mine = sorted((r for r in runs if r.system == name and r.publisher == pub), key=lambda r: r.rate)
        ceiling: float | None = None
        for r in mine:
            if r.error or not r.expected or r.delivered < r.expected or r.broker_dropped:
                break
            # The full flow: SenseGate's events in InfluxDB too, and an alert for every alarm.
            if (r.influx is not None and r.influx < r.expected) or len(r.latencies) < r.alarms:
                break
            ceiling = r.rate
        if ceiling is None:
            parts.append(f"{label} below {mine[0].rate:,.0f}" if mine else f"{label} —")
            continue
        top = next(r for r in mine if r.rate == ceiling)
        # When the publisher fell short of the offered rate, the rate it did reach is what was shown.
        reached = f" (published {top.published_rate:,.0f})" if top.published_rate < 0.95 * top.rate else ""
        highest = " — the highest tried" if ceiling == mine[-1].rate else ""
        parts.append(f"{label} {'≥ ' if highest else ''}{ceiling:,.0f}{reached}{highest}")
    return (
        "zero-loss ceiling (every message delivered — SenseGate: stored and in InfluxDB — and every alarm alerted, "
        "by the end of the wait), msg/s offered: " + "; ".join(parts)
    )


def plot(runs: list[Run], systems: Sequence[str], path: Path, title: str) -> None:
    try:
        # Only with the ``bench`` extra; mypy checks it where that is installed.
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print(f"no plot: matplotlib is not installed (pip install -e '.[bench]'); wanted {path}", file=sys.stderr)
        return
    colours = {
        "sensegate": "tab:blue",
        "sensegate-split": "tab:purple",
        "sensegate-lane": "tab:green",
        "nodered": "tab:red",
        "paho": "tab:grey",
    }
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4), dpi=90)
    first_publisher = runs[0].publisher if runs else ""
    for name, pub, label in entries(runs, systems):
        mine = sorted((r for r in runs if r.system == name and r.publisher == pub and r.messages), key=lambda r: r.rate)
        if not mine:
            continue
        x = [r.rate for r in mine]
        c = colours[name]
        ls = "-" if pub == first_publisher else ":"
        ax1.plot(x, [r.delivered_pct for r in mine], "o" + ls, color=c, label=label)
        if name.startswith("sensegate"):
            ax1.plot(x, [r.influx_pct for r in mine], "o--", color=c, alpha=0.6, label=f"{label} → InfluxDB")
        with_alerts = [r for r in mine if r.latencies]
        if with_alerts:
            x2 = [r.rate for r in with_alerts]
            ax2.plot(x2, [percentile(r.latencies, 0.99) for r in with_alerts], ls, color=c, label=label)
            for r in with_alerts:  # hollow: some alarms had no alert by the end of the wait
                full = len(r.latencies) >= r.alarms
                ax2.plot(r.rate, percentile(r.latencies, 0.99), "o", color=c, mfc=c if full else "none")
        # PSS: a forked process shares its parent's pages; RSS for results saved before PSS was.
        memory = [r.rss_peak if math.isnan(r.pss_peak) else r.pss_peak for r in mine]
        ax3.plot(x, memory, "o" + ls, color=c, label=label)
    ax1.set(title="delivered by the end of the wait", xlabel="offered msg/s", ylabel="%", ylim=(0, 105))
    ax2.set(
        title="smoke → alert on MQTT, p99 (hollow: alerts missing)", xlabel="offered msg/s", ylabel="ms", yscale="log"
    )
    ax2.axhline(20, color="green", lw=0.8, ls=":", label="target 20 ms")
    ax3.set(title="peak memory (PSS summed over processes)", xlabel="offered msg/s", ylabel="MiB", ylim=(0, None))
    ax3.axhline(100, color="green", lw=0.8, ls=":", label="target 100 MB")
    rates = sorted({r.rate for r in runs})
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(rates, [f"{r / 1000:g}k" for r in rates])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: {path} ({path.stat().st_size // 1024} KiB)")


# ---------------------------------------------------------------------- main


def ensure_node_red() -> bool:
    """Node-RED and the InfluxDB node in the cache folder, installed with npm if missing."""
    if (NODE_RED_DIR / "node_modules" / "node-red" / "red.js").exists() and (
        NODE_RED_DIR / "node_modules" / "node-red-contrib-influxdb"
    ).exists():
        return True
    if shutil.which("npm") is None:
        print("Node-RED skipped: npm is not installed", file=sys.stderr)
        return False
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing {NODE_RED} and {INFLUX_NODE} into {NODE_RED_DIR} …", flush=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--prefix", str(NODE_RED_DIR), "--no-audit", "--no-fund", "--omit=dev", *NPM_PACKAGES],
            capture_output=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        print("Node-RED skipped: npm install took over 10 minutes", file=sys.stderr)
        return False
    if done.returncode != 0:
        print(f"Node-RED skipped: npm install failed:\n{done.stderr.decode(errors='replace')[-2000:]}", file=sys.stderr)
        return False
    return True


def node_red_version() -> str:
    try:
        return str(json.loads((NODE_RED_DIR / "node_modules" / "node-red" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    global NODE_RED_DIR
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rates", default="1000,3000,6000,10000,15000", help="offered msg/s, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="publishing time per rate (default 20)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds to wait after the last publish (default 10)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"any of {','.join(SYSTEMS)}")
    p.add_argument("--households", type=int, default=5000, help="site size: 4 zigbee2mqtt devices each (default 5000)")
    p.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    p.add_argument("--write-docs", action="store_true", help="plot to docs/img/performance.png (unless --plot)")
    p.add_argument("--node-red-dir", type=Path, default=NODE_RED_DIR, help=f"npm prefix (default {NODE_RED_DIR})")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--keep", action="store_true", help="keep each run's temp dir (config, store, logs)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--from-json", type=Path, default=None, help="print and plot results saved with --json; run nothing")
    p.add_argument(
        "--publisher",
        default="raw",
        help=f"any of {','.join(PUBLISHERS)}: raw (pre-encoded packets on a socket, the default) or the first "
        "publisher, paho-mqtt; with both, each system runs once with each, alternately",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"before/after check in about 2 minutes: defaults {' '.join(QUICK)} (options given still win)",
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**{k.lstrip("-"): v for k, v in zip(QUICK[::2], QUICK[1::2], strict=True)})
    args = p.parse_args(argv)
    NODE_RED_DIR = args.node_red_dir
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    publishers = [s.strip() for s in args.publisher.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown or not systems or not rates or not publishers or set(publishers) - set(PUBLISHERS):
        p.error(f"--systems takes {','.join(SYSTEMS)}; --publisher {','.join(PUBLISHERS)}; --rates a list of numbers")
    if args.plot is None and args.write_docs:
        args.plot = ROOT / "docs" / "img" / "performance.png"
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        loaded = [Run(**r) for r in saved["runs"]]
        report(loaded, [s for s in SYSTEMS if any(r.system == s for r in loaded)], args.plot, saved["title"])
        return 0
    if "nodered" in systems and not ensure_node_red():
        systems.remove("nodered")

    load_before = os.getloadavg()
    started = time.monotonic()
    site = bench_site(args.households, Path("data"))
    config = parse_config(site, "bench-site.toml", Path(tempfile.gettempdir()))
    traffic = Z2MTraffic(config, args.seed)
    args.traffic = traffic
    zdevices = len(traffic.z2m)
    print(
        f"site: {len(config.households)} households, {len(config.devices)} devices ({zdevices} on zigbee2mqtt); "
        f"both rule packs; store synchronous=full"
    )
    print(
        f"machine: {os.cpu_count()} cores, load average {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f} "
        f"at start; Node-RED {node_red_version() if 'nodered' in systems else '—'}, paho-mqtt {mqtt_version()}, "
        f"Python {sys.version.split()[0]}",
        flush=True,
    )
    args.sync_unavailable = SyncCounter.unavailable()
    fsyncs = f"NOT counted: {args.sync_unavailable}" if args.sync_unavailable else "counted by perf (tracepoints)"
    print(f"storage: bytes written from /proc/<pid>/io; fsyncs {fsyncs}; publisher {' and '.join(publishers)}")
    args.influx = InfluxDB1()
    args.influx.start()
    runs: list[Run] = []
    shape_printed = False
    try:
        for rate in rates:
            plan = traffic.plan(int(rate * args.seconds))
            if not shape_printed:
                n = len(plan)
                print(
                    f"traffic: zigbee2mqtt at QoS 1, payload {sum(map(len, plan.payloads)) / n:.0f} B + topic "
                    f"{sum(len(t.encode()) for t in plan.topics) / n:.0f} B a message, "
                    f"{plan.events[-1] / n:.2f} events a message (as SenseGate decodes them), "
                    f"1 in {SMOKE_EVERY} a smoke alarm; {args.seconds:g} s a rate, drain up to {args.drain:g} s\n",
                    flush=True,
                )
                shape_printed = True
            with tempfile.NamedTemporaryFile(prefix="sensegate-compare-plan-", suffix=".pickle", delete=False) as f:
                pickle.dump((plan.topics, plan.payloads), f)
                plan_path = Path(f.name)
            Path(str(plan_path) + ".smoke").write_text(json.dumps(sorted(plan.smoke)))
            try:
                for name, publisher in [(n, pub) for n in systems for pub in publishers]:
                    by = f" ← {publisher}" if len(publishers) > 1 else ""
                    print(f"  {rate:,.0f} msg/s  {LABEL[name]}{by} …", end="", flush=True)
                    t0 = time.monotonic()
                    run = run_one(name, rate, plan, plan_path, site, args, publisher)
                    runs.append(run)
                    summary = (
                        f" {run.published_rate:,.0f} msg/s published, {fmt(run.delivered_pct, '.2f')} % delivered"
                        if run.messages
                        else f" failed: {run.error.splitlines()[0] if run.error else '?'}"
                    )
                    print(f"{summary} ({time.monotonic() - t0:.0f} s)", flush=True)
            finally:
                plan_path.unlink(missing_ok=True)
                Path(str(plan_path) + ".smoke").unlink(missing_ok=True)
    finally:
        args.influx.cleanup()
    load_after = os.getloadavg()
    print(
        f"\nload average {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} at the end; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    title = (
        f"{datetime.now():%Y-%m-%d}: {len(config.households)} households, {zdevices} zigbee2mqtt devices, "
        f"{args.seconds:g} s a rate; {os.cpu_count()} shared cores, load average {load_before[0]:.1f} → "
        f"{load_after[0]:.1f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"title": title, "runs": [asdict(r) for r in runs]}, indent=1))
    report(runs, systems, args.plot, title)
    return 0 if all(not r.error for r in runs) else 1


def report(runs: list[Run], systems: Sequence[str], plot_path: Path | None, title: str) -> None:
    print()
    print(headline(runs, systems))
    print()
    print(per_rate(runs, systems))
    print()
    print(ceilings(runs, systems))
    if plot_path is not None:
        plot(runs, systems, plot_path, title)


def mqtt_version() -> str:
    from importlib.metadata import version

    return version("paho-mqtt")


if __name__ == "__main__":
    sys.exit(main())
